"""FAB: the Fast Adaptive Boundary attack in l_inf (Croce & Hein, ICML 2020b).

FAB looks for the *smallest* l_inf perturbation that changes the prediction. It linearises
the classifier at the current iterate, projects onto the linearised decision boundary
(intersected with the image box [0, 1]) from both the iterate and the original point, and
mixes the two projections; once an iterate is adversarial it steps back towards the
original point. One run therefore gives each input's smallest breaking budget, which is
what robustness curves need (:meth:`FAB.minimal_perturbation`); AutoAttack runs it at a
fixed budget (:meth:`FAB.perturb`), as FAB-T with 9 target classes.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import Tensor, nn

from .base import Attack, check_int, check_seed, check_steps, check_unit, seeded_generator
from .losses import target_classes
from .projection import fab_step
from .registry import register_attack

__all__ = ["FAB", "MAX_BATCH_ROWS"]

#: added to the l_1 norms of the logit-difference gradients (the reference's constant)
_TINY = 1e-12
#: lower bound on the projection norms in the adaptive alpha (the reference's constant)
_MIN_STEP = 1e-8


#: FAB-T's working batch holds at most this many (input, target) rows: the targets of a
#: few inputs go together (fewer Python steps), those of many inputs in groups (tensors
#: that stay in the CPU caches)
MAX_BATCH_ROWS = 1024


def _linf(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise ``||a - b||_inf``."""
    return (a - b).flatten(1).abs().amax(1)


def _rows(v: Tensor, x: Tensor) -> Tensor:
    """A per-row vector ``(B,)`` shaped to broadcast against ``x`` ``(B, ...)``."""
    return v.view(-1, *([1] * (x.dim() - 1)))


# decorators apply bottom-up: fab registers first (and names the class)
@register_attack(
    "fab-t",
    defaults={"targeted": True},
    description="FAB, targeted at the 9 most likely other classes",
    title="FAB-T",
)
@register_attack(
    "fab",
    defaults={"targeted": False},
    description="FAB (Croce & Hein, 2020b): minimal-norm boundary attack, untargeted",
    title="FAB",
)
class FAB(Attack):
    """Fast Adaptive Boundary attack, l_inf (Croce & Hein, ICML 2020b), as in AutoAttack.

    Per step, at the iterate ``x_k`` (``x_0 = x``, the original point ``x_o``)::

        h          = closest linearised boundary: untargeted, argmin_j |f_j - f_y| /
                     ||grad(f_j - f_y)||_1 over j != y; targeted, the target's f_t - f_y
        d_k, d_o   = project_linf_box onto h from x_k and from x_o (:mod:`.projection`)
        alpha      = min(||d_k|| / (||d_k|| + ||d_o||), alpha_max)
        x_{k+1}    = clip((1 - alpha)(x_k + eta d_k) + alpha (x_o + eta d_o))
        if x_{k+1} is adversarial: keep it if its norm is the smallest so far, then
                     x_{k+1} = x_o + beta (x_{k+1} - x_o)       (biased step back)

    Restart ``r > 0`` starts at ``clip(x_o + rho/2 * u / ||u||_inf)``, ``u ~ U[-1, 1]``,
    ``rho = min(eps, smallest norm found so far)`` (the reference uses ``eps``; the two
    agree at a fixed budget). Targeted: the targets are the 2nd to ``(n + 1)``-th largest
    clean logits; several of them run in one working batch, one row per (input, target),
    up to :data:`MAX_BATCH_ROWS` rows, and later groups of targets attack only the inputs
    still robust (the reference runs one target after another; from ``x`` a run is
    deterministic per row, so both break the same inputs, and a group of T targets takes
    1/T of the Python steps). Untargeted costs ``K - 1`` backward
    passes per step (``K`` classes; the gradient of each ``f_j - f_y`` directly), targeted
    one; both add one forward pass to check the new iterate.

    Line search (beyond the reference, ``search_steps > 0``): FAB's overshoot ``eta``
    leaves its best point ~0.5% beyond the boundary even for a linear model, so at the end
    the best point is pulled back along the ray from ``x_o``. Fixed budget: rows whose best
    norm exceeds ``eps`` get one check at norm ``eps`` on that ray; minimal mode:
    ``search_steps`` bisection steps on the ray. Forward passes only; every accepted point is
    misclassified by more than float round-off. With it FAB is exact on a linear model
    (one step reaches the boundary's direction); ``search_steps=0`` is the reference.

    Two entry points: :meth:`run` / ``__call__`` (fixed budget, AutoAttack): an input is
    broken iff a point with ``||x_adv - x||_inf <= eps`` was found; it leaves the working
    batch at once, with all its targets, and later restarts only attack the rest; unbroken
    inputs get ``x`` back. :meth:`minimal_perturbation`: no budget, every correctly classified
    input runs every restart and target, and the smallest norm found is returned.

    Args:
        model: logits model, inputs ``(N, C, H, W)`` in [0, 1].
        eps: l_inf budget (also scales the restarts).
        steps: iterations per run (reference: 100).
        targeted: FAB-T (True) or the closest boundary among all classes (False).
        n_target_classes: targets per input (reference: 9); capped at ``K - 1``.
        n_restarts: runs per target (the first from ``x``).
        alpha_max: cap of the bias towards the original point, in [0, 1] (0.1).
        eta: overshoot >= 1 (1.05).
        beta: step back towards the original point, in (0, 1] (0.9).
        seed: seed of the restarts, re-seeded at every call (None: global RNG).
        channels_last: faster CPU layout for conv models (default: auto, see :class:`Attack`).
        search_steps: line-search bisection steps (0: the reference, no search).

    Shape: ``x (N, C, H, W)``, ``y (N,)`` -> ``x_adv (N, C, H, W)``; ``norms (N,)``.

    Example::

        >>> x_adv, fooled = FAB(model, eps=0.05, targeted=True).run(x, y)
        >>> x_min, norms = FAB(model, eps=0.3, targeted=False).minimal_perturbation(x, y)
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float,
        steps: int = 100,
        targeted: bool = True,
        n_target_classes: int = 9,
        n_restarts: int = 1,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        seed: int | None = 0,
        channels_last: bool | None = None,
        search_steps: int = 20,
    ) -> None:
        super().__init__(model, eps, channels_last)
        self.steps = check_steps(steps)
        if not isinstance(targeted, bool):
            raise TypeError(f"targeted must be True or False, got {targeted!r}")
        self.targeted = targeted
        self.n_target_classes = check_int(n_target_classes, "n_target_classes", 1)
        self.n_restarts = check_int(n_restarts, "n_restarts", 1)
        self.alpha_max = check_unit(alpha_max, "alpha_max", open_low=False)
        self.eta = _check_eta(eta)
        self.beta = check_unit(beta, "beta")
        self.seed = check_seed(seed)
        self.search_steps = check_int(search_steps, "search_steps", 0)
        self._minimal = False
        self._norms: Tensor | None = None

    def params(self) -> dict[str, Any]:
        return {
            "eps": self.eps,
            "steps": self.steps,
            "targeted": self.targeted,
            "n_target_classes": self.n_target_classes,
            "n_restarts": self.n_restarts,
            "alpha_max": self.alpha_max,
            "eta": self.eta,
            "beta": self.beta,
            "seed": self.seed,
            "search_steps": self.search_steps,
        }

    # ------------------------------------------------------------------ entry points

    def minimal_perturbation(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Each input's smallest adversarial l_inf perturbation found, without a budget.

        Returns ``(x_adv, norms)``: ``norms[i] = ||x_adv[i] - x[i]||_inf`` of a misclassified
        ``x_adv[i]`` (0 if ``x[i]`` is misclassified already; ``inf`` and ``x_adv[i] = x[i]``
        where none was found). Targeted: the minimum over the targets. Inputs are validated
        and the model handled as in :meth:`run`.
        """
        self._minimal, self._norms = True, None
        try:
            x_adv, _ = self._execute(x, y, early_stop=False, need_fooled=True)
            norms = self._norms
        finally:
            self._minimal, self._norms = False, None
        if norms is None:  # empty batch
            norms = torch.zeros(0, dtype=x_adv.dtype, device=x_adv.device)
        return x_adv, norms

    def perturb(self, x: Tensor, y: Tensor, early_stop: bool = False) -> tuple[Tensor, Tensor]:
        """Fixed budget (or minimal mode, from :meth:`minimal_perturbation`); rows are always
        dropped once broken, so ``early_stop`` changes nothing."""
        del early_stop
        with torch.no_grad():
            logits = self._forward(x)
        norms = torch.where(logits.argmax(1) != y, 0.0, math.inf).to(x.dtype)
        targets = target_classes(logits, self.n_target_classes) if self.targeted else None
        gen = seeded_generator(self.seed, x.device)
        out = x.clone()
        limit = None if self._minimal else self.eps
        width = 1 if targets is None else targets.shape[1]
        for restart in range(self.n_restarts):
            first = 0  # the next target (column of ``targets``) of this restart
            while first < width:
                rows = torch.nonzero(norms > (0.0 if self._minimal else self.eps))[:, 0]
                if rows.numel() == 0:
                    break
                k = width if targets is None else max(1, MAX_BATCH_ROWS // len(rows))
                group = None if targets is None else targets[:, first : first + k]
                self._attack_rows(x, y, group, rows, restart, gen, limit, out, norms)
                first += k
        if self._minimal:
            self._refine_minimal(x, y, out, norms)
            self._norms = norms
            return out, torch.isfinite(norms)
        return out, norms <= self.eps

    # ------------------------------------------------------------------ one run

    def _attack_rows(
        self,
        x: Tensor,
        y: Tensor,
        targets: Tensor | None,
        rows: Tensor,
        restart: int,
        gen: torch.Generator | None,
        limit: float | None,
        out: Tensor,
        norms: Tensor,
    ) -> None:
        """One run on ``rows`` of the ``T`` targets in ``targets`` (``(N, T)``, or None
        untargeted) at once; write each input's improvement into ``out`` / ``norms``.

        The working batch holds one row per (input, target), target-major; an input leaves
        it, all its targets together, as soon as one of them is adversarial within
        ``limit``. A run from ``x`` (``restart == 0``) is deterministic per row, so this
        breaks the inputs that one target after another would, with 1/T of the steps.
        """
        n = len(rows)
        t = 1 if targets is None else targets.shape[1]
        rep = rows.repeat(t)  # row i of target k sits at k * n + i
        x0, y0 = x[rep], y[rep]
        tgt = None if targets is None else targets[rows].T.reshape(-1)
        x1 = x0 if restart == 0 else self._random_start(x0, norms[rep], gen)
        group = torch.arange(n, device=x.device).repeat(t)
        best, best_norm = self._run(x0, y0, tgt, x1, limit, group)
        if limit is not None and self.search_steps > 0:
            best, best_norm = self._pull_to_budget(x0, y0, best, best_norm)
        best, best_norm = _closest_target(best, best_norm, t)
        better = best_norm < norms[rows]
        if limit is not None:  # a fixed budget keeps only points inside the ball
            better &= best_norm <= limit
        sel = rows[better]
        out[sel] = best[better]
        norms[sel] = best_norm[better]

    def _random_start(self, x0: Tensor, best: Tensor, gen: torch.Generator | None) -> Tensor:
        """``clip(x_o + rho/2 * u / ||u||_inf)``, ``u ~ U[-1, 1]``, ``rho = min(eps, best)``."""
        u = torch.rand(x0.shape, generator=gen, dtype=x0.dtype, device=x0.device) * 2 - 1
        scale = best.clamp(max=self.eps) * 0.5 / u.flatten(1).abs().amax(1).clamp_min(_TINY)
        return (x0 + u * _rows(scale, x0)).clamp(0.0, 1.0)

    def _run(
        self,
        x0: Tensor,
        y: Tensor,
        target: Tensor | None,
        x1: Tensor,
        limit: float | None,
        group: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """``steps`` FAB iterations from ``x1``. Returns the smallest-norm adversarial
        iterate per row and its norm (``inf``, ``x0`` where none); with a ``limit`` every
        row of a ``group`` (the input the row attacks) stops as soon as one of them has an
        adversarial iterate within it."""
        best = x0.clone()
        best_norm = torch.full((len(x0),), math.inf, dtype=x0.dtype, device=x0.device)
        act = torch.arange(len(x0), device=x0.device)
        xa, xo = x1, x0
        for _ in range(self.steps):
            df, grad = self._boundary(xa, y, target)
            xa = self._step(xa, xo, df, grad)
            with torch.no_grad():
                adv = _misclassified(self._forward(xa), y)
            if not bool(adv.any()):
                continue
            r = _linf(xa, xo)
            better = adv & (r < best_norm[act])
            best[act[better]] = xa[better]
            best_norm[act[better]] = r[better]
            xa = torch.where(_rows(adv, xa), xo + self.beta * (xa - xo), xa)
            if limit is not None:
                found = torch.zeros(len(x0), dtype=torch.bool, device=x0.device)
                found[group[adv & (r <= limit)]] = True
                keep = ~found[group]
                if not bool(keep.all()):
                    act, xa, xo, y, group = act[keep], xa[keep], xo[keep], y[keep], group[keep]
                    target = None if target is None else target[keep]
                    if act.numel() == 0:
                        break
        return best, best_norm

    # ------------------------------------------------------------------ one step

    def _boundary(self, xa: Tensor, y: Tensor, target: Tensor | None) -> tuple[Tensor, Tensor]:
        """``(f_j - f_y, grad_x (f_j - f_y))`` at ``xa`` for the boundary to aim at: the
        target's, or (untargeted) the closest linearised one among all ``j != y``."""
        xa = xa.detach().requires_grad_(True)
        logits = self._forward(xa)
        rows = torch.arange(len(y), device=y.device)
        if target is not None:
            diff = logits[rows, target] - logits[rows, y]
            return diff.detach(), self._input_grad(diff.sum(), xa)
        f = logits.detach()
        k = f.shape[1]
        best_dist = torch.full_like(f[:, 0], math.inf)
        best_j = torch.full_like(y, k)
        best_df, best_g = torch.zeros_like(best_dist), torch.zeros_like(xa)
        for r in range(1, k):
            j = (y + r) % k
            go = torch.zeros_like(f)
            go[rows, j] = 1.0
            go[rows, y] = -1.0
            self.n_backward += len(y)
            (g,) = torch.autograd.grad(logits, xa, grad_outputs=go, retain_graph=r < k - 1)
            df = f[rows, j] - f[rows, y]
            dist = df.abs() / (g.flatten(1).abs().sum(1) + _TINY)
            better = (dist < best_dist) | ((dist == best_dist) & (j < best_j))
            best_dist = torch.where(better, dist, best_dist)
            best_j = torch.where(better, j, best_j)
            best_df = torch.where(better, df, best_df)
            best_g = torch.where(_rows(better, g), g, best_g)
        return best_df, best_g

    def _step(self, xa: Tensor, xo: Tensor, df: Tensor, grad: Tensor) -> Tensor:
        """Project onto the linearised boundary ``f_j - f_y = 0`` from ``xa`` and ``xo``,
        mix with the adaptive alpha, overshoot by ``eta`` (:func:`.projection.fab_step`)."""
        w = grad.flatten(1)
        xa_f = xa.detach().flatten(1)
        b = (w * xa_f).sum(1) - df  # hyperplane <w, z> = b
        out = fab_step(xa_f, xo.flatten(1), w, b, self.eta, self.alpha_max, _MIN_STEP)
        return out.view_as(xa)

    # ------------------------------------------------------------------ line search

    def _pull_to_budget(
        self, x0: Tensor, y: Tensor, best: Tensor, best_norm: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Rows with a best point beyond ``eps``: check the point at norm ``eps`` on the ray
        from ``x0`` through it; keep it where misclassified."""
        far = torch.nonzero(torch.isfinite(best_norm) & (best_norm > self.eps))[:, 0]
        if far.numel() == 0:
            return best, best_norm
        xo = x0[far]
        scale = _rows(self.eps / best_norm[far], xo)
        z = (xo + scale * (best[far] - xo)).clamp(0.0, 1.0)
        z = _into_ball(torch.minimum(torch.maximum(z, xo - self.eps), xo + self.eps), xo, self.eps)
        with torch.no_grad():
            hit = _misclassified(self._forward(z), y[far])
        best, best_norm = best.clone(), best_norm.clone()
        best[far[hit]] = z[hit]
        best_norm[far[hit]] = _linf(z[hit], xo[hit])
        return best, best_norm

    def _refine_minimal(self, x: Tensor, y: Tensor, out: Tensor, norms: Tensor) -> None:
        """Bisection on the ray from ``x`` to each best point for the first misclassified
        point (``search_steps`` forward passes); updates ``out`` / ``norms`` in place."""
        rows = torch.nonzero(torch.isfinite(norms) & (norms > 0))[:, 0]
        if rows.numel() == 0 or self.search_steps == 0:
            return
        xo, ray, yr = x[rows], out[rows] - x[rows], y[rows]
        lo = torch.zeros(len(rows), dtype=x.dtype, device=x.device)
        hi = torch.ones_like(lo)
        for _ in range(self.search_steps):
            mid = (lo + hi) / 2
            with torch.no_grad():
                adv = _misclassified(self._forward(_on_ray(xo, ray, mid)), yr)
            hi = torch.where(adv, mid, hi)
            lo = torch.where(adv, lo, mid)
        moved = hi < 1
        z = _on_ray(xo[moved], ray[moved], hi[moved])
        out[rows[moved]] = z
        norms[rows[moved]] = _linf(z, xo[moved])


def _closest_target(best: Tensor, norms: Tensor, t: int) -> tuple[Tensor, Tensor]:
    """Per input, the best point of its ``t`` target-major rows: the smallest norm, the
    earliest target on ties."""
    n = len(norms) // t
    k = norms.view(t, n).argmin(0)  # argmin returns the first of equal minima
    pick = k * n + torch.arange(n, device=norms.device)
    return best[pick], norms[pick]


def _into_ball(z: Tensor, xo: Tensor, eps: float) -> Tensor:
    """``z`` with every coordinate whose computed ``|z_i - xo_i|`` exceeds ``eps`` (by
    round-off: ``(xo + eps) - xo`` need not be ``eps`` in floating point) moved towards
    ``xo`` one ulp at a time, so that ``||z - xo||_inf <= eps`` as the budget check
    computes it."""
    for _ in range(8):
        over = (z - xo).abs() > eps
        if not bool(over.any()):
            break
        z = torch.where(over, torch.nextafter(z, xo), z)
    return z


def _on_ray(xo: Tensor, ray: Tensor, s: Tensor) -> Tensor:
    """``clip(xo + s * ray)`` per row."""
    return (xo + _rows(s, xo) * ray).clamp(0.0, 1.0)


def _misclassified(logits: Tensor, y: Tensor) -> Tensor:
    """Misclassified by more than float round-off: ``max_{j != y} f_j - f_y`` above a few
    ulps of the logits' scale, so the verdict cannot flip with the batch composition."""
    f = logits.detach()
    fy = f.gather(1, y[:, None]).squeeze(1)
    other = f.scatter(1, y[:, None], -math.inf).amax(1)
    tol = 8 * torch.finfo(f.dtype).eps * (fy.abs() + other.abs())
    return other - fy > tol


def _check_eta(eta: Any) -> float:
    if isinstance(eta, bool) or not isinstance(eta, numbers.Real):
        raise TypeError(f"eta (overshoot) must be a real number >= 1, got {eta!r}")
    eta = float(eta)
    if not (math.isfinite(eta) and eta >= 1):
        raise ValueError(f"eta (overshoot) must be a finite number >= 1, got {eta}")
    return eta
