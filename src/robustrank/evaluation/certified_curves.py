"""Certified accuracy beside attacked robust accuracy over eps: :func:`certified_curve`,
:class:`CertifiedCurve` and its figure (:func:`plot_certified_curve`).

At every eps the truth is sandwiched: certified accuracy (a sound lower bound, e.g. CROWN,
Zhang et al. 2018) <= true robust accuracy <= attacked robust accuracy (an upper bound, e.g.
APGD, Croce & Hein 2020). Neither curve alone shows how far apart the bounds are; the gap
between them is how much the true robustness is still unknown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ..ownership import check_files, record_files
from .certification import CertificationSweep, certify_sweep, get_certifier
from .robustness import eps_sweep

__all__ = ["CertifiedCurve", "certified_curve", "plot_certified_curve"]


@dataclass(frozen=True)
class CertifiedCurve:
    """Attacked robust accuracy and certified accuracy (per method) at each eps.

    Attributes:
        eps: the budgets.
        attack: the attack's registered name.
        robust_accuracy: attacked robust accuracy at each eps (an upper bound on the truth).
        certified: method -> certified accuracy at each eps (lower bounds on the truth).
        clean_accuracy: accuracy on the clean inputs.
        n: the number of inputs.
    """

    eps: list[float]
    attack: str
    robust_accuracy: list[float]
    certified: dict[str, list[float]] = field(default_factory=dict)
    clean_accuracy: float = float("nan")
    n: int = 0

    def format(self) -> str:
        """A table: eps, attacked robust accuracy, certified accuracy of each method."""
        head = ["eps", f"attacked ({self.attack})", *(f"certified ({m})" for m in self.certified)]
        rows = [
            [f"{e:g}", f"{ra:.4f}", *(f"{v[i]:.4f}" for v in self.certified.values())]
            for i, (e, ra) in enumerate(zip(self.eps, self.robust_accuracy, strict=True))
        ]
        widths = [max(len(c) for c in col) for col in zip(head, *rows, strict=True)]
        lines = [
            "  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in [head, *rows]
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers (JSON-ready)."""
        return {
            "eps": self.eps,
            "attack": self.attack,
            "robust_accuracy": self.robust_accuracy,
            "certified": self.certified,
            "clean_accuracy": self.clean_accuracy,
            "n": self.n,
        }


def certified_curve(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps_grid: Sequence[float],
    methods: Sequence[str],
    *,
    attack: str = "apgd-ce",
    sweep: CertificationSweep | None = None,
    batch_size: int = 500,
    progress: bool = False,
    **attack_kwargs: Any,
) -> CertifiedCurve:
    """Certified accuracy of each of ``methods`` and robust accuracy under ``attack`` at
    every eps of ``eps_grid`` (certification: :func:`certify_sweep`; attack:
    :func:`~robustrank.evaluation.eps_sweep`, APGD by default, Croce & Hein 2020).

    ``sweep`` reuses certification results already computed for the same inputs (it must
    cover every (eps, method)).
    """
    grid = [float(e) for e in eps_grid]
    if sweep is None:
        sweep = certify_sweep(model, x, y, grid, methods, progress=progress)
    attacked = eps_sweep(
        model, attack, grid, x, y, batch_size=batch_size, progress=progress, **attack_kwargs
    )
    names = list(dict.fromkeys(get_certifier(m).name for m in methods))
    certified = {m: [sweep.get(e, m).certified_accuracy for e in grid] for m in names}
    return CertifiedCurve(
        eps=grid,
        attack=attacked[0].attack,
        robust_accuracy=[r.robust_accuracy for r in attacked],
        certified=certified,
        clean_accuracy=attacked[0].clean_accuracy,
        n=len(x),
    )


def plot_certified_curve(
    curve: CertifiedCurve, path: str | Path, *, overwrite: bool = False
) -> Path:
    """One figure: attacked robust accuracy (upper bound) and each method's certified
    accuracy (lower bounds) against eps, the gap between them shaded. Written atomically;
    an existing file is replaced only with ``overwrite`` (robustrank.ownership)."""
    from matplotlib.figure import Figure

    from ..plots import save_figure

    check_files([path], overwrite=overwrite)
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.subplots()
    ax.plot(
        curve.eps, curve.robust_accuracy, "o-", color="black", label=f"attacked ({curve.attack})"
    )
    for method, values in curve.certified.items():
        ax.plot(curve.eps, values, "s--", label=f"certified ({method})")
    if curve.certified:
        best = [max(v[i] for v in curve.certified.values()) for i in range(len(curve.eps))]
        ax.fill_between(curve.eps, best, curve.robust_accuracy, color="gray", alpha=0.15,
                        label="unknown (true robust accuracy lies here)")  # fmt: skip
    ax.set_xlabel("eps (l_inf)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(f"certified <= true <= attacked (n={curve.n})")
    ax.legend(fontsize=8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    written = save_figure(fig, path, dpi=110)
    record_files([written])
    return written
