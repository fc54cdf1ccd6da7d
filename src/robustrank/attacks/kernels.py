"""Compiled CPU kernels (numba) for the attacks' per-row inner loops.

Loaded lazily through :func:`.compiled.kernels_for` (numba is only needed on CPU): each
kernel handles one row at a time, so a row's coordinates stay in the CPU's cache across its
passes instead of the whole batch streaming through memory once per tensor operation. Sums
are accumulated in float64. The tensor versions (:mod:`.projection` for FAB,
:meth:`.Square._propose_tensors`) are the specification; the tests hold the kernels to them
and to independent solvers.

* :func:`project_rows`, :func:`fab_step_rows`: FAB's box-constrained l_inf projection and
  its whole step (Croce & Hein 2020b);
* :func:`square_propose`, :func:`square_settle`: Square's window proposal and acceptance
  (Andriushchenko et al. 2020, Alg. 2).
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["fab_step_rows", "project_rows", "square_propose", "square_settle"]

#: the kernels take NumPy views of CPU tensors (numba ignores the annotations)
Array = np.ndarray

#: reassociation lets the row sums and minima run in SIMD lanes; no flag assumes away
#: infinities (the projection uses them)
_jit = numba.njit(
    cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "nsz", "contract"}
)


#: Newton stops once its step is below this fraction of lam (float64 round-off level)
_STEP_TOL = 1e-12


@_jit
def _solve_lam(room: Array, w_abs: Array, need: float, slope0: float, newton_steps: int) -> float:
    """The smallest ``lam`` with ``g(lam) = sum_i w_abs_i min(lam, room_i) = need``, given
    ``g(max room) >= need`` and ``slope0 = g'(0+)``.

    Newton from 0: the tangent of the concave ``g`` lies above it, so the iterates approach
    the root from below, and once one is on the root's linear piece the next step is 0 up
    to round-off; a pass computes ``g`` and ``g'`` together (sums only, which vectorise).
    Rows not settled in ``newton_steps`` passes take the sorted breakpoints (exact)."""
    dim = room.shape[0]
    cur = need / slope0 if slope0 > 0.0 else 0.0  # the step from 0, whose slope is known
    for _ in range(newton_steps):
        slope = 0.0
        reached = 0.0  # g(cur)
        for i in range(dim):  # arithmetic on the comparison, not a branch: it vectorises
            a = w_abs[i]
            ri = room[i]
            reached += a * min(ri, cur)
            slope += a * (ri > cur)
        if slope == 0.0:  # every coordinate at its face: g(cur) = g(max room) >= need
            return cur
        step = max(need - reached, 0.0) / slope
        cur += step
        if step <= _STEP_TOL * cur:
            return cur
    order = np.argsort(room)  # g(room_(k)) grows with k: the first piece reaching need
    saturated = 0.0  # sum of w_abs * room over the coordinates already at their face
    free = 0.0
    for i in range(dim):
        free += w_abs[i]
    for k in range(dim):
        j = order[k]
        if saturated + room[j] * free >= need:
            return max(need - saturated, 0.0) / free if free > 0.0 else 0.0
        saturated += w_abs[j] * room[j]
        free -= w_abs[j]
    return np.inf


@_jit
def _project_row(
    t: Array,
    w: Array,
    b: float,
    room: Array,
    w_abs: Array,
    sign: Array,
    out: Array,
    newton_steps: int,
) -> float:
    """The box-constrained l_inf projection of ``t`` onto ``<w, .> = b`` into ``out``
    (1-D rows; ``room``, ``w_abs`` and ``sign`` are float64 scratch). Returns
    ``||out||_inf``."""
    dim = t.shape[0]
    gap = -b
    for i in range(dim):
        gap += float(w[i]) * float(t[i])
    sgn = -1.0 if gap > 0 else 1.0  # the direction <w, .> must move in
    need = abs(gap)
    total = 0.0
    slope0 = 0.0
    for i in range(dim):  # comparisons as 0/1 factors (exact), so that it vectorises
        wi = float(w[i]) * sgn  # > 0: coordinate i moves up
        ti = float(t[i])
        up = wi > 0.0
        ri = max(up * (1.0 - ti) + (1 - up) * ti, 0.0)
        a = abs(wi)
        room[i] = ri
        w_abs[i] = a
        sign[i] = np.sign(wi)
        total += a * ri
        slope0 += a * (ri > 0.0)
    lam = np.inf if total < need else _solve_lam(room, w_abs, need, slope0, newton_steps)
    norm = 0.0
    for i in range(dim):
        step = min(room[i], lam) * sign[i]
        out[i] = step
        norm = max(norm, abs(step))
    return norm


@_jit
def project_rows(t: Array, w: Array, b: Array, out: Array, newton_steps: int) -> None:
    """Row ``r``: the projection of ``t[r]`` onto ``<w[r], .> = b[r]`` into ``out[r]``."""
    n, dim = t.shape
    room = np.empty(dim, np.float64)
    w_abs = np.empty(dim, np.float64)
    sign = np.empty(dim, np.float64)
    for r in range(n):
        _project_row(t[r], w[r], b[r], room, w_abs, sign, out[r], newton_steps)


@_jit
def fab_step_rows(
    xa: Array,
    xo: Array,
    w: Array,
    b: Array,
    eta: float,
    alpha_max: float,
    min_step: float,
    out: Array,
    newton_steps: int,
) -> None:
    """FAB's update per row: project ``xa[r]`` and ``xo[r]`` onto ``<w[r], .> = b[r]`` (d_k,
    d_o), ``alpha = min(|d_k| / (|d_k| + |d_o|), alpha_max)`` (norms at least
    ``min_step``), ``out[r] = clip((1 - alpha)(xa + eta d_k) + alpha (xo + eta d_o))``."""
    n, dim = xa.shape
    room = np.empty(dim, np.float64)
    w_abs = np.empty(dim, np.float64)
    sign = np.empty(dim, np.float64)
    d_k = np.empty(dim, np.float64)
    d_o = np.empty(dim, np.float64)
    for r in range(n):
        xa_r, xo_r, w_r, out_r = xa[r], xo[r], w[r], out[r]
        n_k = max(_project_row(xa_r, w_r, b[r], room, w_abs, sign, d_k, newton_steps), min_step)
        n_o = max(_project_row(xo_r, w_r, b[r], room, w_abs, sign, d_o, newton_steps), min_step)
        alpha = min(max(n_k / (n_k + n_o), 0.0), alpha_max)
        for i in range(dim):
            v = (xa_r[i] + eta * d_k[i]) * (1.0 - alpha) + (xo_r[i] + eta * d_o[i]) * alpha
            out_r[i] = min(max(v, 0.0), 1.0)


@_jit
def square_propose(
    x_try: Array,
    lo: Array,
    hi: Array,
    side: int,
    seed: int,
    max_redraws: int,
    top: Array,
    left: Array,
) -> None:
    """Square's proposal, in place: per row ``r`` a ``side x side`` window at a uniform
    corner ``(top[r], left[r])`` (written out) is set, per channel, to ``hi`` (sign True)
    or ``lo``, one fair coin per channel; the signs are redrawn while the window would
    leave the row unchanged, at most ``max_redraws`` times. ``x_try`` ``(k, c, H, W)``
    holds the current points on entry. numba's generator is seeded with ``seed``."""
    np.random.seed(seed)
    k, c, h, w = x_try.shape
    signs = np.empty(c, np.bool_)
    for r in range(k):
        t0 = np.random.randint(0, h - side + 1)
        l0 = np.random.randint(0, w - side + 1)
        top[r], left[r] = t0, l0
        changed = False
        for _ in range(max_redraws + 1):
            for ch in range(c):
                signs[ch] = np.random.random() < 0.5
            for ch in range(c):
                bound = hi if signs[ch] else lo
                for u in range(t0, t0 + side):
                    for v in range(l0, l0 + side):
                        changed |= bound[r, ch, u, v] != x_try[r, ch, u, v]
            if changed:
                break
        if changed:
            for ch in range(c):
                bound = hi if signs[ch] else lo
                for u in range(t0, t0 + side):
                    for v in range(l0, l0 + side):
                        x_try[r, ch, u, v] = bound[r, ch, u, v]


@_jit
def square_settle(
    x_try: Array, x_best: Array, top: Array, left: Array, side: int, accept: Array
) -> None:
    """After a query: row ``r``'s window goes from ``x_try`` into ``x_best`` if
    ``accept[r]``, else back from ``x_best`` into ``x_try`` (both equal afterwards)."""
    k, c = x_try.shape[0], x_try.shape[1]
    for r in range(k):
        t0, l0 = top[r], left[r]
        for ch in range(c):
            for u in range(t0, t0 + side):
                for v in range(l0, l0 + side):
                    if accept[r]:
                        x_best[r, ch, u, v] = x_try[r, ch, u, v]
                    else:
                        x_try[r, ch, u, v] = x_best[r, ch, u, v]
