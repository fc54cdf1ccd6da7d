"""Certifying a model at several budgets with several methods: :func:`certify_sweep` and
:class:`CertificationSweep` (its table, JSON and CSV files).

Every (eps, method) pair runs :func:`~robustrank.evaluation.certification.api.certify`
batch by batch (a progress bar over eps x method x batch); the per-example certified masks
are kept and written hex-encoded like the attack results (``encode_mask``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn
from tqdm.auto import tqdm

from ..._io import atomic_write_text, csv_text
from ...ownership import check_files, record_files
from .api import CertResult, batch_slices, certify, check_certify_inputs
from .registry import get_certifier

__all__ = ["CertificationSweep", "certify_sweep", "sweep_paths"]

#: the file stem :func:`sweep_paths` uses inside an output directory
SWEEP_STEM = "certify"


@dataclass(frozen=True)
class CertificationSweep:
    """The results of :func:`certify_sweep`, one :class:`CertResult` per (eps, method),
    eps-major in the order given."""

    results: tuple[CertResult, ...]

    @property
    def eps(self) -> list[float]:
        """The budgets, in order, each once."""
        return list(dict.fromkeys(r.eps for r in self.results))

    @property
    def methods(self) -> list[str]:
        """The certifier names, in order, each once."""
        return list(dict.fromkeys(r.method for r in self.results))

    def get(self, eps: float, method: str) -> CertResult:
        """The result of ``method`` at ``eps`` (``KeyError`` when it was not run)."""
        for r in self.results:
            if r.eps == eps and r.method == get_certifier(method).name:
                return r
        raise KeyError(f"no result for method {method!r} at eps={eps:g}")

    def rows(self) -> list[dict[str, Any]]:
        """One plain dict per result: method, eps, n, counts, accuracies, seconds."""
        return [
            {
                "method": r.method,
                "eps": r.eps,
                "n": r.n,
                "n_correct": int(r.correct.sum()),
                "n_certified": int(r.certified.sum()),
                "clean_accuracy": int(r.correct.sum()) / r.n,
                "certified_accuracy": int(r.certified.sum()) / r.n,
                "seconds": round(r.seconds, 4),
            }
            for r in self.results
        ]

    def format(self) -> str:
        """A plain-text table: one row per eps, one certified-accuracy column per method,
        then the clean accuracy and the time of every method together."""
        head = ["eps", *self.methods, "clean acc", "time"]
        lines = []
        for e in self.eps:
            rs = [self.get(e, m) for m in self.methods]
            cells = [f"{r.certified_accuracy:.4f}" for r in rs]
            seconds = sum(r.seconds for r in rs)
            lines.append([f"{e:g}", *cells, f"{rs[0].clean_accuracy:.4f}", f"{seconds:.1f}s"])
        widths = [max(len(c) for c in col) for col in zip(head, *lines, strict=True)]
        text = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in lines]
        header = "  ".join(c.rjust(w) for c, w in zip(head, widths, strict=True))
        rule = "  ".join("-" * w for w in widths)
        return "\n".join(["certified accuracy", header, rule, *text])

    def to_dict(self) -> dict[str, Any]:
        """The rows with each input's certified mask (hex, ``encode_mask``) and the
        clean-correct mask."""
        from ..spec import encode_mask

        rows = self.rows()
        for row, r in zip(rows, self.results, strict=True):
            row["certified"] = encode_mask(r.certified)
        correct = encode_mask(self.results[0].correct) if self.results else ""
        return {"eps": self.eps, "methods": self.methods, "correct": correct, "results": rows}

    def save(
        self,
        *,
        json_path: str | Path | None = None,
        csv_path: str | Path | None = None,
        metadata: dict[str, Any] | None = None,
        overwrite: bool = False,
    ) -> list[Path]:
        """Write JSON (``{"metadata", ...to_dict()}``) and/or CSV (:meth:`rows`) atomically;
        existing files are replaced only with ``overwrite`` and only when robustrank wrote
        them (:func:`robustrank.ownership.check_files`, checked before anything is written)."""
        check_files([json_path, csv_path], overwrite=overwrite)
        written = []
        if json_path is not None:
            doc = {"metadata": metadata or {}, **self.to_dict()}
            Path(json_path).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(json_path, json.dumps(doc, indent=2, default=str) + "\n")
            written.append(Path(json_path))
        if csv_path is not None:
            Path(csv_path).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(csv_path, csv_text(self.rows()))
            written.append(Path(csv_path))
        record_files(written)
        return written


def sweep_paths(out: str | Path | None) -> tuple[Path | None, Path | None]:
    """The JSON and CSV files for ``out``: a ``.json`` or ``.csv`` file is that file alone;
    anything else is a directory holding ``certify.json`` and ``certify.csv``."""
    if out is None:
        return None, None
    out = Path(out)
    if out.suffix.lower() == ".json":
        return out, None
    if out.suffix.lower() == ".csv":
        return None, out
    return out / f"{SWEEP_STEM}.json", out / f"{SWEEP_STEM}.csv"


def certify_sweep(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps_list: Sequence[float],
    methods: Sequence[str],
    *,
    batch_size: int | None = None,
    progress: bool = False,
    options: dict[str, dict[str, Any]] | None = None,
) -> CertificationSweep:
    """Certify ``model`` on ``(x, y)`` at every eps of ``eps_list`` with every certifier of
    ``methods`` (IBP: Gowal et al. 2018; CROWN: Zhang et al. 2018; CROWN-IBP: Zhang et al.
    2020; alpha-CROWN: Xu et al. 2021). ``options`` maps a method to its keyword options.

    Everything is checked before any work: the eps (finite, >= 0), the inputs, the method
    names (``UnknownNameError`` with a did-you-mean) and their options.
    """
    eps_list = [check_certify_inputs(x, y, e) for e in eps_list]
    specs = [get_certifier(m) for m in methods]
    if not eps_list or not specs:
        raise ValueError("certify_sweep needs at least one eps and one method")
    options = {get_certifier(k).name: v for k, v in (options or {}).items()}
    for spec in specs:
        spec.check_options(options.get(spec.name, {}))
    n_batches = len(batch_slices(len(x), batch_size))
    bar = tqdm(
        total=len(eps_list) * len(specs) * n_batches,
        desc="certify",
        unit="batch",
        disable=not progress,
    )
    results = []
    with bar:
        for eps in eps_list:
            for spec in specs:
                bar.set_postfix_str(f"eps={eps:g} {spec.name}")
                kw = options.get(spec.name, {})
                results.append(
                    certify(
                        model,
                        x,
                        y,
                        eps,
                        spec.name,
                        batch_size=batch_size,
                        on_batch=bar.update,
                        **kw,
                    )
                )
    return CertificationSweep(tuple(results))
