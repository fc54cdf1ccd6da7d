"""The box-constrained l_inf projection onto a hyperplane, FAB's inner problem (Croce & Hein,
ICML 2020b, Sec. 3.1 and their ``projection_linf``).

Per row, ``min ||d||_inf  s.t.  <w, t + d> = b,  0 <= t + d <= 1``. Moving every coordinate
by at most ``lam`` towards the face that changes ``<w, .>`` in the needed direction changes
it by ``g(lam) = sum_i |w_i| min(lam, room_i)`` (``room_i``: distance to that face), a
concave piecewise-linear function; the answer is the smallest ``lam`` with
``g(lam) = |<w, t> - b|``, found exactly (on the root's linear piece, not to a tolerance).

Two implementations of the same algorithm:

* :func:`project_linf_box_torch`: whole-batch tensor operations on any device. Newton's
  method from ``lam = 0`` (the tangent of a concave function lies above it, so iterates
  approach the root from below and one that does not pass the next breakpoint is on the
  root's piece); rows it has not settled take the sorted breakpoints.
* :func:`project_linf_box_rows`: the same per row in compiled code (numba,
  :mod:`.kernels`), one row at a time so that a row's coordinates stay in the CPU's cache
  across Newton's steps instead of streaming the batch through memory once per step and
  operation. Sums in float64.

:func:`project_linf_box` picks the compiled one for CPU tensors when numba is importable;
:func:`fab_step` is FAB's whole update on top of it (both projections and the mix).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .compiled import kernels_for

__all__ = [
    "fab_step",
    "project_linf_box",
    "project_linf_box_rows",
    "project_linf_box_torch",
]

#: Newton steps of the tensor projection before the rows left over fall back to the sort
NEWTON_STEPS = 8
#: Newton steps of the compiled per-row projection (a row is in cache, so steps are cheap)
ROW_NEWTON_STEPS = 64


def project_linf_box(t: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """Smallest l_inf step onto ``<w, .> = b`` inside the box [0, 1] (FAB, Croce & Hein 2020b).

    If the box cannot reach the hyperplane, the row goes to the box corner that gets
    closest to it. Coordinates with ``w_i = 0`` never move. CPU tensors go to the compiled
    :func:`project_linf_box_rows` when numba is installed, others to
    :func:`project_linf_box_torch`; both solve the problem exactly.

    Args:
        t: ``(B, D)`` points in [0, 1].
        w: ``(B, D)`` hyperplane normals.
        b: ``(B,)`` offsets.

    Returns:
        ``d`` of shape ``(B, D)``, dtype and device of ``t``.
    """
    if kernels_for(t) is not None:
        return project_linf_box_rows(t, w, b)
    return project_linf_box_torch(t, w, b)


# --------------------------------------------------------------------------- tensors


def project_linf_box_torch(t: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """:func:`project_linf_box` with whole-batch tensor operations (any device).

    Newton's method from ``lam = 0`` (:func:`_newton_lam`) ends on the root's linear piece
    in two or three steps on image data; rows it has not settled within
    :data:`NEWTON_STEPS` take the sorted breakpoints ``room_(k)`` (:func:`_sorted_lam`).
    """
    gap = (w * t).sum(1) - b
    direction = torch.sign(w) * torch.where(gap > 0, -1.0, 1.0).to(w.dtype)[:, None]
    room = torch.where(direction > 0, 1.0 - t, t).clamp_min(0.0)
    need = gap.abs()
    w_abs = w.abs()
    feasible = (w_abs * room).sum(1) >= need  # g(max room) reaches it; else: the corner
    lam, settled = _newton_lam(room, w_abs, need, ~feasible)
    rest = torch.nonzero(~settled)[:, 0]
    if rest.numel():
        lam[rest] = _sorted_lam(room[rest], w_abs[rest], need[rest])
    lam = torch.where(feasible, lam, math.inf)
    return direction * torch.minimum(room, lam[:, None])


def _newton_lam(room: Tensor, w_abs: Tensor, need: Tensor, skip: Tensor) -> tuple[Tensor, Tensor]:
    """Newton's method on the concave ``g(lam) = sum_i w_i min(lam, room_i)`` from 0.

    Rows in ``skip`` count as settled at once. Returns ``(lam, settled)``; unsettled rows
    are not final. Most rows settle in two or three steps, so the rows still open are
    gathered into smaller tensors once they are at most half of the working set (each
    row's arithmetic is its own, so nothing changes).
    """
    lam = torch.zeros_like(need)
    settled = skip.clone()
    tiny = torch.finfo(room.dtype).tiny
    idx = torch.nonzero(~skip)[:, 0]
    if idx.numel() < len(need):
        room, w_abs, need = room[idx], w_abs[idx], need[idx]
    cur = torch.zeros_like(need)
    done = torch.zeros_like(need, dtype=torch.bool)
    for _ in range(NEWTON_STEPS):
        moving = room > cur[:, None]
        slope = (w_abs * moving).sum(1)
        reached = (w_abs * torch.minimum(room, cur[:, None])).sum(1)
        nxt = cur + (need - reached).clamp_min(0.0) / slope.clamp_min(tiny)
        next_break = torch.where(moving, room, math.inf).amin(1)
        cur = torch.where(done, cur, nxt)
        done |= nxt <= next_break
        still = ~done
        n_open = int(still.sum())
        if n_open == 0:
            break
        if 2 * n_open <= len(done):  # write the settled rows back, keep the open ones
            lam[idx[done]], settled[idx[done]] = cur[done], True
            idx, room, w_abs = idx[still], room[still], w_abs[still]
            need, cur = need[still], cur[still]
            done = torch.zeros_like(need, dtype=torch.bool)
    lam[idx], settled[idx] = cur, done
    return lam, settled


def _sorted_lam(room: Tensor, w_abs: Tensor, need: Tensor) -> Tensor:
    """The root of ``g(lam) = need`` from the sorted breakpoints ``room_(k)`` (exact)."""
    room_s, order = room.sort(1)
    w_s = w_abs.gather(1, order)
    saturated = torch.cumsum(w_s * room_s, 1)  # progress of coordinates 0..k at their face
    w_cum = torch.cumsum(w_s, 1)
    total = w_cum[:, -1]
    progress = saturated + room_s * (total[:, None] - w_cum)  # g(room_(k))
    k = (progress < need[:, None]).sum(1)  # breakpoints that fall short
    prev = (k - 1).clamp_min(0)[:, None]
    has_prev = k > 0
    done = torch.where(has_prev, saturated.gather(1, prev).squeeze(1), 0.0)
    free = total - torch.where(has_prev, w_cum.gather(1, prev).squeeze(1), 0.0)
    return (need - done).clamp_min(0.0) / free.clamp_min(torch.finfo(w_abs.dtype).tiny)


# --------------------------------------------------------------------------- FAB's step


def fab_step(
    xa: Tensor, xo: Tensor, w: Tensor, b: Tensor, eta: float, alpha_max: float, min_step: float
) -> Tensor:
    """FAB's update (Croce & Hein 2020b, Eq. (9) and the adaptive alpha, Sec. 3.2).

    ``d_k``, ``d_o`` = :func:`project_linf_box` onto ``<w, .> = b`` from the iterate ``xa``
    and the original point ``xo``; ``alpha = min(|d_k| / (|d_k| + |d_o|), alpha_max)`` with
    both norms at least ``min_step``; returns
    ``clip((1 - alpha)(xa + eta d_k) + alpha (xo + eta d_o), 0, 1)``. Rows ``(B, D)``;
    compiled per row on CPU when numba is installed (no ``(2B, D)`` temporaries).
    """
    kernels = kernels_for(xa)
    if kernels is not None:
        xa_np = _numpy(xa, xa.dtype)
        out = np.empty_like(xa_np)
        kernels.fab_step_rows(
            xa_np,
            _numpy(xo, xa.dtype),
            _numpy(w, xa.dtype),
            _numpy(b, torch.float64),
            float(eta),
            float(alpha_max),
            float(min_step),
            out,
            ROW_NEWTON_STEPS,
        )
        return torch.from_numpy(out)
    n = len(xa)
    d = project_linf_box_torch(torch.cat((xa, xo)), w.repeat(2, 1), b.repeat(2))
    norm = d.abs().amax(1).clamp_min(min_step)
    alpha = (norm[:n] / (norm[:n] + norm[n:])).clamp(0.0, alpha_max)[:, None]
    mixed = (xa + eta * d[:n]) * (1 - alpha) + (xo + eta * d[n:]) * alpha
    return mixed.clamp(0.0, 1.0)


# --------------------------------------------------------------------------- compiled rows


def project_linf_box_rows(t: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """:func:`project_linf_box` row by row in compiled code (CPU, numba;
    :func:`robustrank.attacks.kernels.project_rows`).

    Per row: the gap and the rooms in one pass, then Newton's steps over the row (in
    cache) until one lands on the root's linear piece, at most :data:`ROW_NEWTON_STEPS`,
    else the sorted breakpoints; then ``d``. Sums are accumulated in float64.

    Raises:
        RuntimeError: numba is not installed, or ``t`` is not a float CPU tensor.
    """
    kernels = kernels_for(t)
    if kernels is None:
        raise RuntimeError(
            "the compiled projection needs numba (pip install numba) and float32 or float64 "
            f"CPU tensors (got {t.dtype} on {t.device}); project_linf_box_torch works anywhere"
        )
    t_np = _numpy(t, t.dtype)
    out = np.empty_like(t_np)
    kernels.project_rows(
        t_np,
        _numpy(w, t.dtype),
        _numpy(b, torch.float64),
        out,
        ROW_NEWTON_STEPS,
    )
    return torch.from_numpy(out)


def _numpy(x: Tensor, dtype: torch.dtype) -> np.ndarray:
    """A C-contiguous NumPy view (or copy) of the CPU tensor ``x`` in ``dtype``."""
    return x.detach().to(dtype).contiguous().numpy()
