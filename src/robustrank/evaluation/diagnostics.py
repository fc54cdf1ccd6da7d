"""Gradient-masking diagnostics: is an evaluation's robustness number trustworthy?

:func:`diagnose` runs the checks of Carlini et al. 2019 ("On Evaluating Adversarial
Robustness", Sec. 5 and its checklist) and of AutoAttack's ``checks.py`` (Croce & Hein,
2020) on one model, and returns a :class:`DiagnosticReport`. Each check gives its numbers,
``pass`` / ``warn`` (``skip`` when it does not apply) and the remedy. ``report.warnings``
lists the failed checks and is empty when all pass.

The checks, at the evaluation budget ``eps`` unless said otherwise:

* ``single-step``: iterative attacks (PGD-20, APGD-CE) no weaker than FGSM;
* ``eps-monotone``: robust accuracy (APGD-CE) does not rise with eps;
* ``large-eps``: at a large eps (default 0.5) almost every input breaks;
* ``black-box``: the gradient-free Square breaks no input that the white-box attacks
  (APGD-CE, APGD-DLR) leave robust, per example;
* ``transfer``: a transfer attack from ``surrogate`` (APGD-CE) breaks no input that the
  white-box attacks leave robust, per example;
* ``convergence``: doubling APGD-CE's iterations and restarts changes robust accuracy by
  at most the tolerance;
* ``zero-gradient``: the input gradient of the margin is not exactly zero;
* ``randomness``: repeated forward passes give the same logits;
* ``logits``: outputs are logits, not probabilities;
* ``certified``: no input a certifier proves robust (default ``crown-ibp``; Zhang et al.,
  2020) is broken by any attack run at ``eps`` above (a certified input an attack breaks
  means a bug in the attack's projection, the certifier or the model's determinism).

How the tolerances were chosen (:class:`Tolerances`; fractions of the attacked inputs).
Measured on a normally trained MLP (MNIST, 200 test inputs, eps 0.05; the test suite's
model): every per-example difference was 0 (no input broken only by FGSM, Square or the
transfer attack; doubling APGD's effort changed nothing), robust accuracy fell
monotonically with eps, the large-eps success rate was 1 and no gradient was zero. The
same MLP behind ``round(4 x) / 4`` has zero gradients for 100% of the inputs, breaks only
12% at eps 0.5, and Square (resp. the transfer attack) breaks 4.4% (2.8%) of the inputs
the white-box attacks leave robust. A tolerance of 1% keeps a margin of two inputs in
200 above the first model's noise and sits below every signal of the second; the
large-eps floor of 0.99 is Carlini et al.'s "reaches 100%" less one percent. The quick
profile's diagnostics of the paper's FCNN and CNN (in the reproduce report) stay quiet
under the same tolerances.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn
from tqdm.auto import tqdm

from .._io import atomic_write_text
from .._modes import eval_mode
from ..attacks import Attack, create_attack
from ..attacks.losses import margin
from ..ownership import check_files, record_files
from .core import check_batch_size, check_data, evaluation_device, fooled_mask, predictions

__all__ = ["diagnose", "DiagnosticReport", "CheckResult", "Tolerances"]

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Status = Literal["pass", "warn", "skip"]


class Tolerances(BaseModel):
    """Tolerances of the checks, as fractions of the inputs concerned (see module doc)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    single_step: Fraction = Field(0.01, description="iterative RA may exceed FGSM's by this")
    monotone: Fraction = Field(0.01, description="RA may rise by this from one eps to the next")
    large_eps_success: Fraction = Field(0.99, description="minimum success rate at large eps")
    black_box: Fraction = Field(0.01, description="inputs only Square breaks, at most")
    transfer: Fraction = Field(0.01, description="inputs only the transfer attack breaks")
    convergence: Fraction = Field(0.01, description="|RA change| when doubling the effort")
    zero_gradient: Fraction = Field(0.01, description="inputs with a zero input gradient")
    randomness: float = Field(1e-5, ge=0, description="relative logit change over passes")


@dataclass
class CheckResult:
    """One check: its verdict, the numbers it rests on, and what to do when it warns."""

    name: str
    title: str
    status: Status
    values: dict[str, Any]
    criterion: str
    remedy: str

    @property
    def passed(self) -> bool:
        return self.status != "warn"


@dataclass
class DiagnosticReport:
    """All checks of one model at one eps (see the module docstring)."""

    eps: float
    n: int
    n_correct: int
    checks: list[CheckResult] = field(default_factory=list)
    tolerances: Tolerances = field(default_factory=Tolerances)

    @property
    def warnings(self) -> list[CheckResult]:
        """The checks that failed (empty when everything passed)."""
        return [c for c in self.checks if c.status == "warn"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "eps": self.eps,
            "n": self.n,
            "n_correct": self.n_correct,
            "warnings": [c.name for c in self.warnings],
            "tolerances": self.tolerances.model_dump(),
            "checks": [vars(c) for c in self.checks],
        }

    def save_json(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write :meth:`to_dict` atomically as JSON and list the file in its directory's
        ownership marker. An existing file is replaced only with ``overwrite``, and only
        when robustrank wrote it (:func:`robustrank.ownership.check_files`)."""
        check_files([path], overwrite=overwrite)
        text = json.dumps(self.to_dict(), indent=2, default=_json_default) + "\n"
        written = atomic_write_text(path, text)
        record_files([written])
        return written

    def format(self) -> str:
        """A plain-text table: status, check, numbers, criterion; remedies for warnings."""
        rows = [(c.status.upper(), c.name, _fmt_values(c.values), c.criterion) for c in self.checks]
        head = ("status", "check", "measured", "criterion")
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]
        lines = [
            "  ".join(v.ljust(w) for v, w in zip(r[:3], widths)) + "  " + r[3]
            for r in [head, *rows]
        ]
        lines.insert(1, "-" * (sum(widths) + 6 + len(head[3])))
        for c in self.warnings:
            lines.append(f"\n{c.name}: {c.title}\n  remedy: {c.remedy}")
        if not self.warnings:
            lines.append("\nall checks passed")
        return "\n".join(lines)


def _at_most(fraction: float, tolerance: float) -> bool:
    """``fraction <= tolerance`` for fractions of inputs, up to float rounding (one input
    in 100 is 0.010000000000000009 after a subtraction of two fractions)."""
    return fraction <= tolerance + 1e-9


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def _fmt_values(values: dict[str, Any]) -> str:
    parts = []
    for k, v in values.items():
        parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    return ", ".join(parts)


@dataclass
class _Context:
    """What the checks share: the model, the data, the correct mask and cached attacks."""

    model: nn.Module
    x: Tensor
    y: Tensor
    eps: float
    correct: Tensor
    device: torch.device
    batch_size: int
    seed: int
    steps: int
    n_queries: int
    tol: Tolerances
    progress: bool
    _masks: dict[str, Tensor] = field(default_factory=dict)
    _budgets: dict[str, float] = field(default_factory=dict)

    def fooled(self, key: str, make: Callable[[], Attack]) -> Tensor:
        """Per-input fooled mask (CPU) of the attack ``make()`` judged on the model (a
        transfer attack when it was built on another one), cached under ``key``."""
        if key not in self._masks:
            atk = make()
            self._budgets[key] = float(atk.eps)
            self._masks[key] = fooled_mask(
                self.model,
                atk,
                self.x,
                self.y,
                self.correct,
                batch_size=self.batch_size,
                early_stop=atk.model is self.model,
                device=self.device,
                progress=self.progress,
                desc=f"diagnose: {key}",
            )
        return self._masks[key]

    def attack(self, name: str, eps: float | None = None, **options: Any) -> Callable[[], Attack]:
        def make() -> Attack:
            return create_attack(name, self.model, self.eps if eps is None else eps, **options)

        return make

    def apgd(self, eps: float | None = None, **options: Any) -> Tensor:
        opts = {"steps": self.steps, "seed": self.seed, **options}
        key = f"apgd-ce eps={self.eps if eps is None else eps:g} {sorted(opts.items())}"
        return self.fooled(key, self.attack("apgd-ce", eps, **opts))

    def robust_accuracy(self, fooled: Tensor) -> float:
        return float((self.correct & ~fooled).double().mean())

    def white_box(self) -> Tensor:
        """Inputs broken by APGD-CE or APGD-DLR (the gradient-based reference)."""
        dlr = self.fooled(
            "apgd-dlr",
            self.attack("apgd-dlr", steps=self.steps, seed=self.seed),
        )
        return self.apgd() | dlr

    def masks_at_eps(self) -> dict[str, Tensor]:
        """The fooled masks of every attack run so far at the diagnosed ``eps``."""
        return {k: m for k, m in self._masks.items() if self._budgets[k] == self.eps}

    def frac(self, mask: Tensor) -> float:
        """``mask`` as a fraction of the correctly classified (attacked) inputs."""
        return int(mask.sum()) / max(int(self.correct.sum()), 1)


def _result(
    name: str, title: str, ok: bool | None, values: dict[str, Any], criterion: str, remedy: str
) -> CheckResult:
    status: Status = "skip" if ok is None else ("pass" if ok else "warn")
    return CheckResult(name, title, status, values, criterion, remedy)


# --------------------------------------------------------------------------- the checks


def _check_single_step(ctx: _Context) -> CheckResult:
    fgsm = ctx.fooled("fgsm", ctx.attack("fgsm"))
    pgd = ctx.fooled("pgd-20", ctx.attack("pgd", seed=ctx.seed))
    apgd = ctx.apgd()
    ra = {"fgsm": ctx.robust_accuracy(fgsm), "pgd20": ctx.robust_accuracy(pgd)}
    ra["apgd_ce"] = ctx.robust_accuracy(apgd)
    gap = max(ra["pgd20"], ra["apgd_ce"]) - ra["fgsm"]
    values = {f"ra_{k}": v for k, v in ra.items()}
    values["fgsm_only"] = ctx.frac(fgsm & ~pgd & ~apgd)
    return _result(
        "single-step",
        "a single-step attack (FGSM) is stronger than iterative ones",
        _at_most(gap, ctx.tol.single_step),
        values,
        f"max(ra_pgd20, ra_apgd_ce) - ra_fgsm <= {ctx.tol.single_step:g}",
        "iterative attacks stuck where one large step succeeds point to a masked or noisy "
        "gradient: use more random restarts, the DLR loss (apgd-dlr) and Square",
    )


def _eps_grid(eps: float, large_eps: float) -> list[float]:
    grid = {eps * f for f in (0.25, 0.5, 1.0, 2.0, 4.0)}
    return sorted(e for e in grid if 0 < e <= large_eps)


def _check_eps_monotone(ctx: _Context, large_eps: float) -> CheckResult:
    grid = _eps_grid(ctx.eps, large_eps)
    ra = [ctx.robust_accuracy(ctx.apgd(e)) for e in grid]
    rise = max((b - a for a, b in zip(ra, ra[1:])), default=0.0)
    values = {f"ra@{e:g}": r for e, r in zip(grid, ra)}
    values["max_rise"] = rise
    return _result(
        "eps-monotone",
        "robust accuracy rises with eps",
        _at_most(rise, ctx.tol.monotone),
        values,
        f"robust accuracy never rises by more than {ctx.tol.monotone:g} as eps grows",
        "a larger budget can only help a working attack: the attack is not converging "
        "(gradient masking, a bad step size); check with apgd-dlr, restarts and Square",
    )


def _check_large_eps(ctx: _Context, large_eps: float) -> CheckResult:
    success = ctx.frac(ctx.apgd(large_eps))
    return _result(
        "large-eps",
        f"the attack does not break almost every input at eps {large_eps:g}",
        _at_most(ctx.tol.large_eps_success, success),
        {"eps": large_eps, "success_rate": success},
        f"success_rate >= {ctx.tol.large_eps_success:g}",
        "with a budget that covers most of the input box every input should break; if not, "
        "the gradients do not lead anywhere (masking, saturation, quantisation): use "
        "Square or a transfer attack and report their numbers",
    )


def _check_black_box(ctx: _Context) -> CheckResult:
    square = ctx.fooled("square", ctx.attack("square", n_queries=ctx.n_queries, seed=ctx.seed))
    white = ctx.white_box()
    only = ctx.frac(square & ~white)
    return _result(
        "black-box",
        "the gradient-free Square breaks inputs the white-box attacks cannot",
        _at_most(only, ctx.tol.black_box),
        {
            "ra_white_box": ctx.robust_accuracy(white),
            "ra_square": ctx.robust_accuracy(square),
            "square_only": only,
        },
        f"square_only <= {ctx.tol.black_box:g} (per example)",
        "gradients are misleading (gradient masking): report the per-example worst case "
        "over white-box and Square (robustrank evaluate --attack autoattack)",
    )


def _check_transfer(ctx: _Context, surrogate: nn.Module | None) -> CheckResult:
    name, title = "transfer", "a transfer attack from the surrogate beats white-box"
    criterion = f"transfer_only <= {ctx.tol.transfer:g} (per example)"
    remedy = (
        "adversarial examples of another model work where the model's own gradients do "
        "not: its gradients are masked; report the worst case including transfer attacks"
    )
    if surrogate is None:
        return _result(name, title, None, {"surrogate": "none"}, criterion, "pass --surrogate")
    surrogate = surrogate.to(ctx.device)

    def make() -> Attack:
        return create_attack("apgd-ce", surrogate, ctx.eps, steps=ctx.steps, seed=ctx.seed)

    transfer = ctx.fooled("transfer", make)
    only = ctx.frac(transfer & ~ctx.white_box())
    values = {"ra_transfer": ctx.robust_accuracy(transfer), "transfer_only": only}
    values["ra_white_box"] = ctx.robust_accuracy(ctx.white_box())
    return _result(name, title, _at_most(only, ctx.tol.transfer), values, criterion, remedy)


def _check_convergence(ctx: _Context) -> CheckResult:
    base = ctx.apgd()
    more = ctx.apgd(steps=2 * ctx.steps, n_restarts=2)
    change = abs(ctx.robust_accuracy(more) - ctx.robust_accuracy(base))
    return _result(
        "convergence",
        "doubling the iterations and restarts still changes robust accuracy",
        _at_most(change, ctx.tol.convergence),
        {
            f"ra_{ctx.steps}x1": ctx.robust_accuracy(base),
            f"ra_{2 * ctx.steps}x2": ctx.robust_accuracy(more),
            "change": change,
        },
        f"|change| <= {ctx.tol.convergence:g}",
        "the attack has not converged: raise steps and restarts until robust accuracy "
        "stops moving, and report that setting",
    )


def _zero_gradient_fractions(ctx: _Context) -> tuple[float, float]:
    """Fractions of the correct inputs whose margin / cross-entropy input gradient is 0."""
    idx = torch.nonzero(ctx.correct, as_tuple=True)[0]
    zero_margin = zero_ce = 0
    with eval_mode(ctx.model), torch.inference_mode(False), torch.enable_grad():
        for s in range(0, len(idx), ctx.batch_size):
            rows = idx[s : s + ctx.batch_size]
            xb = ctx.x[rows].to(ctx.device).requires_grad_(True)
            yb = ctx.y[rows].to(ctx.device)
            logits = ctx.model(xb)
            (g_m,) = torch.autograd.grad(margin(logits, yb).sum(), xb, retain_graph=True)
            ce = torch.nn.functional.cross_entropy(logits, yb, reduction="sum")
            (g_ce,) = torch.autograd.grad(ce, xb)
            zero_margin += int((g_m.flatten(1).abs().amax(1) == 0).sum())
            zero_ce += int((g_ce.flatten(1).abs().amax(1) == 0).sum())
    n = max(len(idx), 1)
    return zero_margin / n, zero_ce / n


def _check_zero_gradient(ctx: _Context) -> CheckResult:
    zero, zero_ce = _zero_gradient_fractions(ctx)
    return _result(
        "zero-gradient",
        "the input gradient is exactly zero for many inputs",
        _at_most(zero, ctx.tol.zero_gradient),
        {"zero_margin_grad": zero, "zero_ce_grad": zero_ce},
        f"zero_margin_grad <= {ctx.tol.zero_gradient:g}",
        "gradient attacks cannot move these inputs (quantisation, saturated units, a "
        "non-differentiable step): evaluate with Square and transfer attacks, or BPDA "
        "(replace the step by the identity on the backward pass)",
    )


def _first_batch_logits(ctx: _Context, repeats: int) -> list[Tensor]:
    xb = ctx.x[: min(len(ctx.x), ctx.batch_size)].to(ctx.device)
    with eval_mode(ctx.model), torch.no_grad():
        return [ctx.model(xb).float() for _ in range(repeats)]


def _check_randomness(ctx: _Context) -> CheckResult:
    outs = _first_batch_logits(ctx, 5)
    scale = float(outs[0].abs().max()) + 1.0
    change = max(float((o - outs[0]).abs().max()) for o in outs[1:]) / scale
    flips = max(int((o.argmax(1) != outs[0].argmax(1)).sum()) for o in outs[1:])
    return _result(
        "randomness",
        "repeated forward passes disagree (a randomised model)",
        change <= ctx.tol.randomness,
        {"relative_change": change, "prediction_flips": flips},
        f"relative_change <= {ctx.tol.randomness:g} over 5 passes",
        "a randomised defence needs Expectation over Transformation: average the gradient "
        "over many passes, and report robust accuracy over repeated evaluations",
    )


def _check_logits(ctx: _Context) -> CheckResult:
    out = _first_batch_logits(ctx, 1)[0]
    in_unit = bool(((out >= 0) & (out <= 1)).all())
    sums_one = bool(torch.allclose(out.sum(1), torch.ones(len(out), device=out.device), atol=1e-4))
    return _result(
        "logits",
        "the model outputs probabilities, not logits",
        not (in_unit and sums_one),
        {"rows_in_unit_interval": in_unit, "rows_sum_to_one": sums_one},
        "outputs are not rows of probabilities",
        "remove the final softmax: cross-entropy on probabilities flattens the loss and "
        "masks the gradient",
    )


def _check_certified(ctx: _Context, certifier: str) -> CheckResult:
    """Certified (sound bound, e.g. CROWN-IBP) and fooled (an attack) must be disjoint."""
    from .certification import UnsupportedModelError, certify

    name, title = "certified", "an attack breaks an input the certifier proves robust"
    criterion = "certified_and_fooled == 0 (certified <= true <= attacked robust accuracy)"
    remedy = (
        "a sound certificate and a successful attack contradict each other: check that the "
        "attack projects onto the eps-ball and [0, 1], that the model is deterministic in "
        "eval mode, and the certifier (report it)"
    )
    try:
        cert = certify(ctx.model, ctx.x, ctx.y, ctx.eps, certifier, batch_size=ctx.batch_size)
    except UnsupportedModelError as err:
        values = {"certifier": certifier, "skipped": "model not supported by the certifier"}
        return _result(name, title, None, values, criterion, str(err).splitlines()[0])
    certified = cert.certified.cpu()
    fooled = torch.zeros_like(certified)
    attacks = ctx.masks_at_eps()
    for mask in attacks.values():
        fooled |= mask
    broken = int((certified & fooled).sum())
    values = {
        "certifier": cert.method,
        "certified": int(certified.sum()),
        "certified_and_fooled": broken,
        "attacks": len(attacks),
    }
    return _result(name, title, broken == 0, values, criterion, remedy)


def diagnose(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    surrogate: nn.Module | None = None,
    *,
    steps: int = 100,
    n_queries: int = 1000,
    large_eps: float = 0.5,
    tolerances: Tolerances | None = None,
    batch_size: int = 500,
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: bool = False,
    certifier: str | None = "crown-ibp",
) -> DiagnosticReport:
    """Run every gradient-masking check (module docstring) on ``model`` at budget ``eps``.

    Args:
        model: the evaluated model (logits; inputs in [0, 1]).
        x, y: evaluation inputs and labels (a few hundred are enough).
        eps: the l_inf budget of the evaluation under scrutiny.
        surrogate: another model for the transfer check (skipped without one).
        steps: APGD iterations (the convergence check doubles them).
        n_queries: Square's query budget for the black-box check.
        large_eps: the budget at which almost every input must break.
        tolerances: the thresholds (defaults: :class:`Tolerances`).
        certifier: the certifier of the ``certified`` check (run last, against every
            attack run at ``eps``); None skips the check.

    Returns:
        a :class:`DiagnosticReport`; ``report.warnings`` lists the failed checks.

    Example::

        >>> report = diagnose(model, x, y, eps=0.05)
        >>> print(report.format()); assert not report.warnings
    """
    check_data(x, y)
    if not (isinstance(eps, int | float) and 0 < eps <= large_eps):
        raise ValueError(f"eps must lie in (0, large_eps={large_eps:g}], got {eps!r}")
    if certifier is not None:
        from .certification import get_certifier

        certifier = get_certifier(certifier).name  # an unknown name fails before any work
    dev = evaluation_device(model, device)
    tol = Tolerances() if tolerances is None else tolerances
    bs = check_batch_size(batch_size)
    correct = (predictions(model, x, bs, dev) == y.to(dev)).cpu()
    ctx = _Context(model, x, y, float(eps), correct, dev, bs, seed, steps, n_queries, tol, progress)
    checks: list[Callable[[], CheckResult]] = [
        lambda: _check_logits(ctx),
        lambda: _check_randomness(ctx),
        lambda: _check_zero_gradient(ctx),
        lambda: _check_single_step(ctx),
        lambda: _check_eps_monotone(ctx, large_eps),
        lambda: _check_large_eps(ctx, large_eps),
        lambda: _check_convergence(ctx),
        lambda: _check_black_box(ctx),
        lambda: _check_transfer(ctx, surrogate),
    ]
    if certifier is not None:
        checks.append(lambda: _check_certified(ctx, certifier))
    report = DiagnosticReport(float(eps), len(x), int(correct.sum()), tolerances=tol)
    for check in tqdm(checks, desc="diagnose", unit="check", disable=not progress):
        report.checks.append(check())
    return report
