"""Evaluation results as text, JSON and CSV: :func:`format_results`, :func:`format_breakdown`
(the tables ``robustrank evaluate`` prints), :func:`result_paths` and :func:`save_results`
(the files it writes)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..models import atomic_write_bytes
from ..ownership import check_files, record_files
from .core import EvalResult

__all__ = ["format_results", "format_breakdown", "result_paths", "save_results"]

_COLUMNS = [
    "attack",
    "eps",
    "early_stop",
    "n",
    "n_correct",
    "n_fooled",
    "n_robust",
    "clean_accuracy",
    "fooling_ratio",
    "robust_accuracy",
    "seconds",
]


def format_results(results: Sequence[EvalResult]) -> str:
    """A plain-text table of evaluation results."""
    head = ["attack", "eps", "n", "clean acc", "fooling ratio", "robust acc", "fooled", "time"]
    rows = [
        [
            r.attack + (" (es)" if r.early_stop else ""),
            f"{r.eps:g}",
            str(r.n),
            f"{r.clean_accuracy:.4f}",
            f"{r.fooling_ratio:.4f}",
            f"{r.robust_accuracy:.4f}",
            f"{r.n_fooled}/{r.n_correct}",
            f"{r.seconds:.1f}s",
        ]
        for r in results
    ]
    widths = [max(len(c) for c in col) for col in zip(head, *rows, strict=True)]
    lines = [
        "  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in [head, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_breakdown(results: Sequence[EvalResult]) -> str:
    """Per-component tables of ensemble attacks (AutoAttack): who broke what, at what cost.

    One table per result whose ``details`` hold ``components``, separated by blank lines;
    ``""`` when no result comes from an ensemble.
    """
    blocks = []
    for r in results:
        parts = r.details.get("components")
        if not parts:
            continue
        lines = [
            f"{r.attack} eps={r.eps:g}: {r.n_correct} attacked, {r.n_fooled} broken",
            f"  {'component':<10} {'attacked':>8} {'broken':>7} {'time':>8} {'fwd':>9} {'bwd':>9}",
        ]
        lines += [
            f"  {c['name']:<10} {c['n_attacked']:>8} {c['n_broken']:>7} "
            f"{c['seconds']:>7.1f}s {c['forward']:>9} {c['backward']:>9}"
            for c in parts
        ]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def result_paths(
    out: str | Path | None,
    attack: str,
    json_path: str | Path | None = None,
    csv_path: str | Path | None = None,
) -> tuple[Path | None, Path | None]:
    """The JSON and CSV files of ``attack``'s results: the given paths, else (when ``out``
    is a directory) ``out/eval-<attack>.json`` and ``out/eval-<attack>.csv``."""
    json_path = None if json_path is None else Path(json_path)
    csv_path = None if csv_path is None else Path(csv_path)
    if out is not None:
        json_path = json_path or Path(out) / f"eval-{attack.lower()}.json"
        csv_path = csv_path or Path(out) / f"eval-{attack.lower()}.csv"
    return json_path, csv_path


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def save_results(
    results: Sequence[EvalResult],
    *,
    json_path: str | Path | None = None,
    csv_path: str | Path | None = None,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write results as JSON (``{"metadata", "results"}``) and/or CSV, atomically.

    Existing files are never replaced unless ``overwrite``, and then only files robustrank
    wrote (:func:`robustrank.ownership.check_files`); the check happens for every target
    before anything is written. ``nan`` ratios are written as JSON ``null`` and as ``nan``
    in the CSV.
    """
    check_files([json_path, csv_path], overwrite=overwrite)
    written = []
    if json_path is not None:
        doc = {
            "metadata": _json_safe(metadata or {}),
            "results": [_json_safe(r.to_dict()) for r in results],
        }
        data = json.dumps(doc, indent=2, allow_nan=False, default=str) + "\n"
        atomic_write_bytes(json_path, data.encode())
        written.append(Path(json_path))
    if csv_path is not None:
        buf = io.StringIO()
        extra = sorted({k for r in results for k in r.params} - set(_COLUMNS))
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(_COLUMNS + extra)
        for r in results:
            d = r.to_dict()
            writer.writerow([d[c] for c in _COLUMNS] + [r.params.get(k, "") for k in extra])
        atomic_write_bytes(csv_path, buf.getvalue().encode())
        written.append(Path(csv_path))
    record_files(written)
    return written
