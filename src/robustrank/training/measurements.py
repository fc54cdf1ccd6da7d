"""What a history row measures (Section 5): clean accuracy, fooling ratios of any registered
attack, effective rank and sparsity of every weight layer (Eqs. 2-3), and optionally the
KDE mutual-information bounds per layer. Used by training and by
:class:`~robustrank.training.tracker.StructureTracker`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .._modes import eval_mode
from .config import HistoryConfig

__all__ = ["Measurer", "history_attack"]


def history_attack(h: HistoryConfig, name: str, model: nn.Module):
    """The attack ``name`` as a history row measures it: its complete options from
    ``h.attack_options`` and, if it takes a seed, ``h.eval_seed``."""
    from ..attacks import create_attack, get_attack

    options = dict(h.attack_options.get(name, {}))
    if get_attack(name).takes_seed:
        options["seed"] = h.eval_seed
    return create_attack(name, model, h.eps, **options)


class Measurer:
    """Computes one history row's measurements on fixed, seeded test subsets.

    ``x_test, y_test`` may be None when ``h.evaluate`` and ``h.track_mi`` are off (only the
    weight structure is then measured).
    """

    def __init__(self, h: HistoryConfig, x_test: Tensor | None, y_test: Tensor | None) -> None:
        from ..data import eval_subset

        self.h = h
        self.x_acc = self.y_acc = self.x_ev = self.y_ev = self.x_mi = self.y_mi = None
        if x_test is None or y_test is None:
            if h.evaluate or h.track_mi:
                raise ValueError("accuracy, fooling ratios and MI need test data (x, y)")
            return
        n_test = len(x_test)
        self.x_acc, self.y_acc = x_test, y_test
        if h.test_accuracy_n is not None and h.test_accuracy_n < n_test:
            self.x_acc, self.y_acc = eval_subset(x_test, y_test, h.test_accuracy_n, h.eval_seed)
        self.x_ev, self.y_ev = eval_subset(x_test, y_test, min(h.eval_n, n_test), h.eval_seed)
        if h.track_mi:
            self.x_mi, self.y_mi = eval_subset(x_test, y_test, min(h.mi_n, n_test), h.eval_seed)

    def measure(self, model: nn.Module) -> dict[str, Any]:
        """One row: ``test_acc``, ``fr_<attack>``, ``eff_rank_<layer>``,
        ``eff_sparsity_<layer>``, ``num_rank_<layer>``, ``density_<layer>``,
        ``weight_params``, ``compression`` and ``mi_<layer>_<bound>``, in that order."""
        row: dict[str, Any] = {}
        with eval_mode(model):
            if self.h.evaluate:
                row.update(self.robustness(model))
            row.update(self.structure(model))
            if self.h.track_mi:
                row.update(self.information(model))
        return row

    def robustness(self, model: nn.Module) -> dict[str, float]:
        """Clean accuracy and the fooling ratio of every history attack (Section 5)."""
        from ..evaluation.robustness import accuracy, fooling_ratio

        bs = self.h.eval_batch_size
        row = {"test_acc": accuracy(model, self.x_acc, self.y_acc, batch_size=bs)}
        for name in self.h.attacks:
            attack = history_attack(self.h, name, model)
            row[f"fr_{name}"] = fooling_ratio(model, attack, self.x_ev, self.y_ev, batch_size=bs)
        return row

    @staticmethod
    def structure(model: nn.Module) -> dict[str, float]:
        """Effective rank (Eq. 3), then effective sparsity (Eq. 2), then numerical rank and
        density, of every weight layer (keyed by the paper's alias or the module path; nan
        where undefined), then the stored weight parameters and the compression ratio."""
        from ..metrics import density, effective_rank, effective_sparsity, numerical_rank
        from ..models import named_weight_layers, stored_params

        layers = named_weight_layers(model)
        row: dict[str, float] = {}
        with torch.no_grad():
            weights = [layer.weight for layer in layers]
            for prefix, metric in (
                ("eff_rank", effective_rank),
                ("eff_sparsity", effective_sparsity),
                ("num_rank", numerical_rank),
                ("density", density),
            ):
                for layer, w in zip(layers, weights, strict=True):
                    try:
                        row[f"{prefix}_{layer.key}"] = metric(w)
                    except ValueError:
                        row[f"{prefix}_{layer.key}"] = float("nan")
        stored = sum(stored_params(layer.module) for layer in layers)
        row["weight_params"] = stored
        row["compression"] = sum(w.numel() for w in weights) / stored if stored else float("nan")
        return row

    def information(self, model: nn.Module) -> dict[str, float]:
        """KDE bounds on I(T;X) and I(T;Y) per layer (bits, Section 5)."""
        from ..information import mi_per_layer

        row: dict[str, float] = {}
        rows = mi_per_layer(
            model, self.x_mi, self.y_mi, noise_var=self.h.mi_noise_var, layers=self.h.mi_layers
        )
        for layer in rows:
            for q in ("ixt_lower", "ixt_upper", "iyt_lower", "iyt_upper"):
                row[f"mi_{layer.layer}_{q}"] = getattr(layer, q)
        return row


class Accumulator:
    """Running sums of the per-batch losses of the current epoch (JSON-serialisable)."""

    KEYS = ("ce", "l1", "nuclear", "joint", "total")

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        self.sums = {k: 0.0 for k in self.KEYS}
        self.correct = 0
        self.seen = 0
        self.batches = 0
        if data:
            self.sums = dict(data["sums"])
            self.correct, self.seen, self.batches = data["correct"], data["seen"], data["batches"]

    def means(self) -> dict[str, Any]:
        n = self.batches
        out: dict[str, Any] = {f"train_{k}": (self.sums[k] / n if n else None) for k in self.KEYS}
        out["train_acc"] = self.correct / self.seen if self.seen else None
        return out

    def state(self) -> dict[str, Any]:
        return {
            "sums": self.sums,
            "correct": self.correct,
            "seen": self.seen,
            "batches": self.batches,
        }
