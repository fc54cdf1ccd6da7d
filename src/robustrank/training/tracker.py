"""Structure tracking for your own training loop (no run directory, no config file).

::

    tracker = StructureTracker(model, "logs/run1", x=x_test, y=y_test, attacks=["pgd"])
    for epoch in range(1, 11):
        ...                                   # your training step(s)
        tracker.log(epoch=epoch, step=step)   # one row in structure.csv / structure.jsonl

Each row holds the effective rank (Eq. 3) and effective sparsity (Eq. 2) of every weight
layer, and optionally the clean accuracy, fooling ratios (Section 5) of registered attacks
and the KDE mutual-information bounds per layer, measured exactly as training's history
does (:class:`~robustrank.training.measurements.Measurer`).
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from torch import Tensor, nn

from ..models import input_shape_of, set_input_shape
from .config import HistoryConfig
from .measurements import Measurer
from .rundir import append_line, csv_line, json_value

__all__ = ["StructureTracker"]


class StructureTracker:
    """Append per-layer structure (and optionally robustness and MI) rows to CSV and JSONL.

    Args:
        model: any ``nn.Module`` (its layers are named by module path, in forward order).
        out_dir: where ``structure.csv`` and ``structure.jsonl`` go.
        x, y: test inputs ``(N, C, H, W)`` in [0, 1] and labels, needed for accuracy,
            fooling ratios and MI (fixed, seeded subsets of them are used).
        attacks: registered attack names whose fooling ratios at ``eps`` to record.
        eps: the l_inf budget of the attacks (paper: 0.05).
        eval_n, mi_n: sizes of the fooling-ratio and MI subsets.
        track_mi: record KDE I(T;X), I(T;Y) bounds per layer (``mi_layers`` chooses them).
        attack_options: ``{attack: {option: value}}`` on top of the registry defaults.
        resume: append to existing files (their columns must match) instead of refusing.
    """

    CSV, JSONL = "structure.csv", "structure.jsonl"

    def __init__(
        self,
        model: nn.Module,
        out_dir: str | Path,
        *,
        x: Tensor | None = None,
        y: Tensor | None = None,
        attacks: Sequence[str] = (),
        eps: float = 0.05,
        eval_n: int = 1000,
        track_mi: bool = False,
        mi_n: int = 1000,
        mi_layers: Sequence[str] | None = None,
        attack_options: dict[str, dict[str, Any]] | None = None,
        eval_seed: int = 0,
        eval_batch_size: int = 500,
        resume: bool = False,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if (x is None) != (y is None):
            raise ValueError("pass both x and y (test inputs and labels), or neither")
        if x is None and (attacks or track_mi):
            raise ValueError("fooling ratios and MI need test data: pass x=..., y=...")
        self.settings = _history(
            x is not None,
            attacks,
            eps,
            eval_n,
            track_mi,
            mi_n,
            mi_layers,
            attack_options,
            eval_seed,
            eval_batch_size,
        )
        self.model = model
        if x is not None and input_shape_of(model) is None:
            set_input_shape(model, tuple(x.shape[1:]))
        self.measurer = Measurer(self.settings, x, y)
        self.out_dir = Path(out_dir)
        self.csv_path, self.jsonl_path = self.out_dir / self.CSV, self.out_dir / self.JSONL
        self.columns = self._open(resume)
        self.t0 = time.perf_counter()

    def _open(self, resume: bool) -> list[str] | None:
        existing = [p for p in (self.csv_path, self.jsonl_path) if p.exists()]
        if existing and not resume:
            raise FileExistsError(
                f"{existing[0]} exists; pass resume=True to append to it, or choose another "
                "out_dir (nothing is overwritten)"
            )
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if not self.csv_path.exists():
            return None
        with open(self.csv_path, encoding="utf-8", newline="") as f:
            header = next(csv.reader(f), None)
        return header

    def log(self, *, step: int | None = None, epoch: int | None = None, **extra: Any) -> dict:
        """Measure the model now and append one row; returns the row.

        ``extra`` values (e.g. ``loss=...``) are stored as columns. The columns are fixed
        by the first row (or the existing file); a row with other columns is an error.
        """
        row: dict[str, Any] = {"step": step, "epoch": epoch, **extra}
        row.update(self.measurer.measure(self.model))
        row["time"] = time.perf_counter() - self.t0
        if self.columns is None:
            self.columns = list(row)
            append_line(self.csv_path, csv_line(self.columns))
        if list(row) != self.columns:
            raise ValueError(
                f"this row's columns differ from the file's: {sorted(set(row) ^ set(self.columns))}"
                "; log the same extra values every time (or start another out_dir)"
            )
        clean = {k: json_value(v.item() if isinstance(v, Tensor) else v) for k, v in row.items()}
        append_line(self.jsonl_path, json.dumps(clean) + "\n")
        append_line(self.csv_path, csv_line(list(clean.values())))
        return clean

    def rows(self) -> list[dict[str, Any]]:
        """Every row logged so far (also by earlier sessions with ``resume=True``)."""
        if not self.jsonl_path.exists():
            return []
        lines = self.jsonl_path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]


def _history(
    evaluate: bool, attacks, eps, eval_n, track_mi, mi_n, mi_layers, options, seed, batch_size
) -> HistoryConfig:
    try:
        return HistoryConfig(
            evaluate=evaluate,
            attacks=list(attacks),
            attack_options=dict(options or {}),
            eps=eps,
            eval_n=eval_n,
            track_mi=track_mi,
            mi_n=mi_n,
            mi_layers=list(mi_layers) if mi_layers is not None else None,
            eval_seed=seed,
            eval_batch_size=batch_size,
        )
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {str(e['msg']).removeprefix('Value error, ')}"
            for e in err.errors()
        )
        raise ValueError(f"StructureTracker: {problems}") from None
