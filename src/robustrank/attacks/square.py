"""Square: a score-based (gradient-free) l_inf attack by random search (Andriushchenko et
al., ECCV 2020), as AutoAttack runs it (fra31/auto-attack ``square.py``)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from .base import Attack, _check_int, _check_seed, _check_unit, seeded_generator
from .losses import margin

__all__ = ["Square", "square_p", "square_side"]


def square_p(p_init: float, it: int, n_queries: int, rescale: bool = False) -> float:
    """The fraction ``p`` of pixels a window covers at iteration ``it`` (Andriushchenko et
    al., 2020, Sec. 3.1): ``p_init`` up to 10, then halved at 50, 200, 500, 1000, 2000,
    4000, 6000 and 8000 (upper bounds inclusive). With ``rescale`` the iteration is first
    mapped onto a 10000-query budget, ``int(it / n_queries * 10000)``.
    """
    if rescale:
        it = int(it / n_queries * 10000)
    for bound, div in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32)):
        if it <= bound:
            return p_init / div
    for bound, div in ((4000, 64), (6000, 128), (8000, 256)):
        if it <= bound:
            return p_init / div
    return p_init / 512


def square_side(p: float, c: int, h: int, w: int) -> int:
    """Side of the square window: ``max(round(sqrt(p * c*h*w / c)), 1)``, at most ``min(h, w)``."""
    s = max(int(round(math.sqrt(p * c * h * w / c))), 1)
    return min(s, min(h, w))


class Square(Attack):
    """Square Attack, l_inf (Andriushchenko et al., ECCV 2020): random search, no gradients.

    Minimises the margin ``z_y - max_{j != y} z_j`` by random search over the vertices of
    the eps-ball::

        x_best = clip(x + eps * s),  s in {-1, 1}^(C x 1 x W)  (vertical stripes)
        for i in 0..n_queries-1, on the inputs not fooled yet:
            p = square_p(p_init, i);  side = square_side(p)
            pick a window (side x side) per input and a sign per channel
            x_new = clip(proj(x_best + 2 eps * sign on the window))   (window -> x +- eps)
            accept per input if margin(x_new) < margin(x_best); fooled when margin < 0

    Each input gets its own random window (the original paper; AutoAttack's copy draws
    one window per batch). Only inputs not fooled are queried; an input leaves the batch
    when fooled. ``last_queries`` holds the queries each input of the last call used.

    Args:
        model: logits model, inputs ``(N, C, H, W)`` in [0, 1].
        eps: l_inf budget.
        n_queries: iterations (one model query each) per restart (reference: 5000).
        p_init: initial fraction of pixels per window (reference: 0.8).
        n_restarts: restarts on the inputs still robust.
        seed: the generator is re-seeded at every call (deterministic).
        rescale_schedule: rescale the p schedule to ``n_queries`` (AutoAttack: False).
        channels_last: faster CPU layout for conv models (default: auto).

    Shape: ``x (N, C, H, W)``, ``y (N,)`` -> ``x_adv (N, C, H, W)``.

    Example::

        >>> x_adv, fooled = Square(model, eps=0.05, n_queries=5000).run(x, y)
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float,
        n_queries: int = 5000,
        p_init: float = 0.8,
        n_restarts: int = 1,
        seed: int | None = 0,
        rescale_schedule: bool = False,
        channels_last: bool | None = None,
    ) -> None:
        super().__init__(model, eps, channels_last)
        self.n_queries = _check_int(n_queries, "n_queries", 1)
        self.p_init = _check_unit(p_init, "p_init")
        self.n_restarts = _check_int(n_restarts, "n_restarts", 1)
        self.seed = _check_seed(seed)
        self.rescale_schedule = bool(rescale_schedule)
        self.last_queries: Tensor | None = None

    def params(self) -> dict[str, Any]:
        return {
            "eps": self.eps,
            "n_queries": self.n_queries,
            "p_init": self.p_init,
            "n_restarts": self.n_restarts,
            "seed": self.seed,
            "rescale_schedule": self.rescale_schedule,
        }

    def _rand(self, shape: tuple[int, ...], g: torch.Generator | None, like: Tensor) -> Tensor:
        return torch.rand(shape, generator=g, device=like.device, dtype=like.dtype)

    def _signs(self, shape: tuple[int, ...], g: torch.Generator | None, like: Tensor) -> Tensor:
        return torch.sign(2 * self._rand(shape, g, like) - 1)

    def _windows(self, n: int, s: int, h: int, w: int, g, like: Tensor) -> Tensor:
        """A ``(n, 1, h, w)`` bool mask: one ``s x s`` window per input at a random place."""
        vh = (self._rand((n,), g, like) * (h - s)).long()
        vw = (self._rand((n,), g, like) * (w - s)).long()
        rows = torch.arange(h, device=like.device)
        cols = torch.arange(w, device=like.device)
        in_rows = (rows >= vh[:, None]) & (rows < vh[:, None] + s)
        in_cols = (cols >= vw[:, None]) & (cols < vw[:, None] + s)
        return (in_rows[:, :, None] & in_cols[:, None, :]).unsqueeze(1)

    def _margin(self, x: Tensor, y: Tensor) -> Tensor:
        return margin(self._forward(x), y)

    def _single_run(self, x: Tensor, y: Tensor, g) -> tuple[Tensor, Tensor, Tensor]:
        """One restart on ``(x, y)``: ``(x_best, fooled, queries)`` per input."""
        n, c, h, w = x.shape
        lo, hi = (x - self.eps).clamp_(min=0.0), (x + self.eps).clamp_(max=1.0)
        x_best = torch.clamp(x + self.eps * self._signs((n, c, 1, w), g, x), 0.0, 1.0)
        m_best = self._margin(x_best, y)
        queries = torch.ones(n, device=x.device)
        active = torch.nonzero(m_best >= 0, as_tuple=True)[0]
        for i in range(self.n_queries):
            if active.numel() == 0:
                break
            s = square_side(
                square_p(self.p_init, i, self.n_queries, self.rescale_schedule), c, h, w
            )
            k = active.numel()
            window = self._windows(k, s, h, w, g, x)
            step = 2 * self.eps * self._signs((k, c, 1, 1), g, x)
            x_cur = x_best[active]
            x_new = torch.where(window, x_cur + step, x_cur)
            x_new = torch.minimum(torch.maximum(x_new, lo[active]), hi[active])
            m_new = self._margin(x_new, y[active])
            better = m_new < m_best[active]
            take = active[better]
            x_best[take] = x_new[better]
            m_best[take] = m_new[better]
            queries[active] += 1
            active = active[m_best[active] >= 0]
        return x_best, m_best < 0, queries

    def perturb(self, x: Tensor, y: Tensor, early_stop: bool = False) -> tuple[Tensor, Tensor]:
        g = seeded_generator(self.seed, x.device)
        x_adv = x.clone()
        fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        queries = torch.zeros(len(x), device=x.device)
        with torch.no_grad():
            todo = torch.arange(len(x), device=x.device)
            for _ in range(self.n_restarts):
                if todo.numel() == 0:
                    break
                xb, fb, qb = self._single_run(x[todo], y[todo], g)
                queries[todo] += qb
                x_adv[todo] = xb  # the fooling point, or this restart's best
                fooled[todo[fb]] = True
                todo = todo[~fb]
        self.last_queries = queries
        return x_adv, fooled
