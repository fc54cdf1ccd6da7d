"""Section 3: projecting a linear classifier onto the data subspace (Theorem 1), numerically.

Setting (Section 3). Binary data x in R^n lie in a k-dimensional subspace V with
orthonormal basis V (n x k); Q = V V^T is the orthogonal projection onto it. A linear
classifier w (no bias) predicts sign(w^T x). Errors, for labels y in {-1, +1}:

    p_0(w)   = P(y w^T x < 0)
    p_eps(w) = P(y w^T (x + eta) < 0),  eta = -y eps sign(w)   (the exact worst case)

and, since y w^T(x + eta) = y w^T x - eps ||w||_1, p_eps(w) = P(y w^T x < eps ||w||_1).
The projected classifier w^T Q x is the classifier Qw (Q is symmetric); its worst case is
eta = -y eps sign(Qw). As x in V, (Qw)^T x = w^T x, so p_0(Qw) = p_0(w) exactly and
p_eps(Qw) = P(y w^T x < eps ||Qw||_1): the projection is never worse, at any eps, if
||Qw||_1 <= ||w||_1 (and, for continuous data, worse at some eps otherwise).

Which effective-sparsity condition gives that? With s(v) = ||v||_1 / ||v||_2 (Eq. 2),

    ||Qw||_1 / ||w||_1 = [s(Qw) / s(w)] * [||Qw||_2 / ||w||_2],   ||Qw||_2 <= ||w||_2,

so s(Qw) <= s(w) (the condition in the *statement* of Theorem 1) is sufficient. The proof
body writes "given s(Qw) >= s(w)" but then uses ||Qw||_1 <= [s(Qw)/s(w)] ||w||_1 <= ||w||_1,
which needs s(Qw) <= s(w): the ">=" in the proof is the typo. The exact criterion is
s(Qw)/s(w) <= ||w||_2/||Qw||_2. :func:`run_theory_experiment` checks all three conditions
on random instances and reports the verdicts from the numbers.

Data model (our choice; the paper gives none). Latent z in R^k:
z = y * separation * e_1 + N(0, I_k) (overlapping classes, Bayes error
Phi(-separation)), x = c V z with c chosen so that the root-mean-square entry of x is
``pixel_rms`` (0.3, about MNIST's), so eps is on the pixel scale of the paper's attacks.
No box constraint is imposed on x + eta (the theory is about linear classifiers on R^n).

The trained classifier: logistic regression without bias by full-batch gradient descent
from a random initialisation as ``nn.Linear`` draws it. Gradient descent only adds
combinations of the samples, which lie in V, so w keeps its initial off-subspace part
(I - Q) w_0 exactly: the noisy component a real classifier carries and the projection
removes. (From a zero initialisation w would stay in V and Qw = w trivially.)
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "DEFAULT_EPS_GRID",
    "FAMILIES",
    "TheoryResult",
    "random_subspace",
    "coordinate_subspace",
    "sample_subspace_data",
    "train_linear_classifier",
    "worst_case_perturbation",
    "error_rates",
    "effective_sparsity_vector",
    "compare_projection",
    "run_theory_experiment",
    "theory_paths",
    "format_theory_summary",
    "write_theory_outputs",
]

DEFAULT_EPS_GRID: tuple[float, ...] = tuple(round(0.005 * i, 3) for i in range(41))  # 0..0.2
FAMILIES: tuple[str, ...] = (
    "dense-V/dense-noise",
    "dense-V/sparse-noise",
    "coord-V/dense-noise",
    "coord-V/sparse-noise",
    "dense-V/trained",
)
_DT = torch.float64


# --------------------------------------------------------------------------- building blocks


def _gen(seed: int | torch.Generator) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int or a torch.Generator, got {type(seed).__name__}")
    return torch.Generator().manual_seed(seed)


def _check_dims(n: int, k: int) -> None:
    for name, v in (("n", n), ("k", k)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an integer, got {type(v).__name__}")
    if not 1 <= k < n:
        raise ValueError(f"need 1 <= k < n (a proper subspace), got n={n}, k={k}")


def random_subspace(n: int, k: int, seed: int | torch.Generator = 0) -> Tensor:
    """A random orthonormal basis V (n x k, float64): QR of a seeded Gaussian (Section 3)."""
    _check_dims(n, k)
    g = torch.randn(n, k, generator=_gen(seed), dtype=_DT)
    q, r = torch.linalg.qr(g)
    return q * torch.sign(torch.diagonal(r))  # unique (Haar-distributed) basis


def coordinate_subspace(n: int, k: int, seed: int | torch.Generator = 0) -> Tensor:
    """V = span of k random coordinate axes (the paper's remark after Theorem 1)."""
    _check_dims(n, k)
    idx = torch.randperm(n, generator=_gen(seed))[:k]
    v = torch.zeros(n, k, dtype=_DT)
    v[idx, torch.arange(k)] = 1.0
    return v


def sample_subspace_data(
    basis: Tensor,
    samples: int,
    seed: int | torch.Generator = 0,
    *,
    separation: float = 1.5,
    pixel_rms: float = 0.3,
) -> tuple[Tensor, Tensor]:
    """Binary data in span(basis): z = y*separation*e_1 + N(0, I_k), x = c V z (Section 3).

    ``c`` makes the root-mean-square entry of x equal ``pixel_rms``. Returns
    ``(x: samples x n float64, y: samples float64 in {-1, +1})``, balanced in expectation.
    """
    if basis.dim() != 2 or basis.shape[1] >= basis.shape[0]:
        raise ValueError(f"basis must be n x k with k < n, got {tuple(basis.shape)}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
        raise ValueError(f"samples must be an integer >= 2, got {samples!r}")
    if not (math.isfinite(separation) and separation >= 0):
        raise ValueError(f"separation must be finite and >= 0, got {separation!r}")
    if not (math.isfinite(pixel_rms) and pixel_rms > 0):
        raise ValueError(f"pixel_rms must be finite and > 0, got {pixel_rms!r}")
    g = _gen(seed)
    n, k = basis.shape
    y = torch.randint(0, 2, (samples,), generator=g).to(_DT) * 2 - 1
    z = torch.randn(samples, k, generator=g, dtype=_DT)
    z[:, 0] += y * separation
    scale = pixel_rms * math.sqrt(n / (separation**2 + k))
    return scale * z @ basis.to(_DT).T, y


def train_linear_classifier(
    x: Tensor,
    y: Tensor,
    steps: int = 300,
    seed: int | torch.Generator = 0,
    *,
    init_scale: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Logistic regression without bias by full-batch gradient descent (Section 3).

    Initialised like ``nn.Linear`` (uniform in +-init_scale/sqrt(n)); step size 1/(1.1 L)
    with L = lambda_max(X^T X) / (4N), the smoothness constant of the mean logistic loss
    (lambda_max by power iteration, which approaches it from below; any step < 2/L
    converges). Returns ``(w, w0)``: the trained and initial weights.
    """
    if x.dim() != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"need x (N x n) and y (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    g = _gen(seed)
    x, y = x.to(_DT), y.to(_DT)
    n_samples, n = x.shape
    bound = init_scale / math.sqrt(n)
    w0 = (torch.rand(n, generator=g, dtype=_DT) * 2 - 1) * bound
    lip = _top_eigenvalue_gram(x) / (4 * n_samples)
    lr = 1.0 / (1.1 * max(lip, 1e-12))
    w = w0.clone()
    for _ in range(steps):
        margin = y * (x @ w)
        grad = -(x.T @ (y * torch.sigmoid(-margin))) / n_samples
        w -= lr * grad
    return w, w0


def _top_eigenvalue_gram(x: Tensor, iters: int = 100) -> float:
    """lambda_max(X^T X) by power iteration (a full SVD is 10-100x slower here)."""
    v = x.abs().sum(dim=0)
    lam = 0.0
    for _ in range(iters):
        if float(v.norm()) == 0.0:
            return 0.0
        v = v / v.norm()
        u = x.T @ (x @ v)
        lam = float(v @ u)
        v = u
    return lam


def worst_case_perturbation(w: Tensor, y: Tensor, eps: float) -> Tensor:
    """eta = -y eps sign(w): the exact worst l_inf perturbation for sign(w^T x) (Section 3)."""
    return -eps * y[:, None].to(_DT) * torch.sign(w.to(_DT))[None, :]


def error_rates(
    w: Tensor, x: Tensor, y: Tensor, eps_grid: tuple[float, ...] | list[float], *, explicit: bool
) -> list[float]:
    """p_eps(w) for every eps: the fraction with y w^T (x + eta) < 0 (eps = 0 gives p_0).

    ``explicit=True`` builds x + eta and classifies it (an actual attack); ``False`` uses
    the equivalent y w^T x - eps w^T sign(w), which is linear algebra, not a shortcut.
    """
    w, x, y = w.to(_DT), x.to(_DT), y.to(_DT)
    margin = y * (x @ w)
    dual = float(w @ torch.sign(w))  # = ||w||_1
    out = []
    for eps in eps_grid:
        if explicit:
            adv = x + worst_case_perturbation(w, y, eps)
            out.append(float((y * (adv @ w) < 0).to(_DT).mean()))
        else:
            out.append(float((margin - eps * dual < 0).to(_DT).mean()))
    return out


def effective_sparsity_vector(v: Tensor) -> float:
    """s(v) = ||v||_1 / ||v||_2 (Eq. 2 for vectors)."""
    v = v.to(_DT)
    norm = float(torch.linalg.vector_norm(v))
    if norm == 0.0:
        raise ValueError("effective sparsity is undefined for the zero vector")
    return float(v.abs().sum()) / norm


def compare_projection(
    w: Tensor,
    basis: Tensor,
    x: Tensor,
    y: Tensor,
    eps_grid: tuple[float, ...] | list[float],
    *,
    explicit: bool = False,
) -> dict[str, Any]:
    """Theorem 1 for one classifier: w vs Qw (Q = V V^T) on data (x, y) lying in span(V).

    Returns the effective sparsities and norms, p_0 and p_eps over ``eps_grid`` for both,
    the number of samples whose p_0 decision differs (float ties), and which of the
    conditions hold.
    """
    w, basis = w.to(_DT), basis.to(_DT)
    qw = basis @ (basis.T @ w)
    if float(qw.norm()) <= 1e-12 * float(w.norm()):
        raise ValueError(
            "w is orthogonal to the data subspace (Qw = 0): the projected classifier is "
            "constant and s(Qw) is undefined; pick a w with a component in span(basis)"
        )
    s_w, s_qw = effective_sparsity_vector(w), effective_sparsity_vector(qw)
    l1_w, l1_qw = float(w.abs().sum()), float(qw.abs().sum())
    l2_w, l2_qw = float(torch.linalg.vector_norm(w)), float(torch.linalg.vector_norm(qw))
    p_w = error_rates(w, x, y, eps_grid, explicit=explicit)
    p_qw = error_rates(qw, x, y, eps_grid, explicit=explicit)
    wrong_w, wrong_qw = y * (x @ w) < 0, y * (x @ qw) < 0
    diff = [a - b for a, b in zip(p_qw, p_w, strict=True)]
    return {
        "s_w": s_w,
        "s_qw": s_qw,
        "l1_w": l1_w,
        "l1_qw": l1_qw,
        "l2_w": l2_w,
        "l2_qw": l2_qw,
        "sparsity_ratio": s_qw / s_w,
        "l1_ratio": l1_qw / l1_w,
        "l2_ratio": l2_qw / l2_w,
        "p0_w": float(wrong_w.to(_DT).mean()),
        "p0_qw": float(wrong_qw.to(_DT).mean()),
        "p0_mismatches": int((wrong_w != wrong_qw).sum()),
        "p_eps_w": p_w,
        "p_eps_qw": p_qw,
        "statement_condition": s_qw <= s_w,  # s(Qw) <= s(w), Theorem 1 as stated
        "proof_condition": s_qw >= s_w,  # s(Qw) >= s(w), as written in the proof / issue
        "exact_condition": l1_qw <= l1_w,  # <=> s(Qw)/s(w) <= ||w||_2/||Qw||_2
        "robust_not_worse": all(d <= 0 for d in diff),
        "max_increase": max(diff),  # worst p_eps(Qw) - p_eps(w) over the grid
        "mean_decrease": -sum(diff) / len(diff),  # mean p_eps(w) - p_eps(Qw) over the grid
    }


# --------------------------------------------------------------------------- experiment


@dataclass
class TheoryResult:
    """Everything :func:`run_theory_experiment` measured (Section 3, Theorem 1)."""

    config: dict[str, Any]
    eps_grid: list[float]
    trained: dict[str, Any]
    instances: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _instance(
    family: str, n: int, k: int, samples: int, eps_grid: list[float], g: torch.Generator
) -> dict[str, Any]:
    dense_v = family.startswith("dense-V")
    basis = random_subspace(n, k, g) if dense_v else coordinate_subspace(n, k, g)
    x, y = sample_subspace_data(basis, samples, g)
    extra: dict[str, Any] = {}
    if family.endswith("trained"):
        init_scale = 10 ** float(torch.empty(1, dtype=_DT).uniform_(-2, 1, generator=g))
        x_tr, y_tr = sample_subspace_data(basis, samples, g)
        w, _ = train_linear_classifier(x_tr, y_tr, steps=100, seed=g, init_scale=init_scale)
        extra["init_scale"] = init_scale
    else:
        # w = rho * (Bayes direction V e_1) + (unit noise direction), rho log-uniform
        if family.endswith("sparse-noise"):
            nnz = int(torch.randint(1, min(50, n) + 1, (1,), generator=g))  # <= n nonzeros
            noise = torch.zeros(n, dtype=_DT)
            noise[torch.randperm(n, generator=g)[:nnz]] = torch.randn(nnz, generator=g, dtype=_DT)
            extra["noise_nnz"] = nnz
        else:
            noise = torch.randn(n, generator=g, dtype=_DT)
        rho = 10 ** float(torch.empty(1, dtype=_DT).uniform_(-3, 1, generator=g))
        w = rho * basis[:, 0] + noise / noise.norm()
        extra["signal_to_noise"] = rho
    row = compare_projection(w, basis, x, y, eps_grid)
    row.update(family=family, **extra)
    return row


def _condition_stats(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    sel = [r for r in rows if r[key]]
    holds = [r for r in sel if r["robust_not_worse"]]
    l1 = [r for r in sel if r["exact_condition"]]
    return {
        "instances": len(sel),
        "l1_not_larger": len(l1),
        "robust_not_worse": len(holds),
        "sufficient": len(sel) > 0 and len(holds) == len(sel),
        "counterexamples": [i for i, r in enumerate(rows) if r[key] and not r["robust_not_worse"]],
    }


def _summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    if not rows:
        return {}
    summary: dict[str, Any] = {
        "instances": len(rows),
        "p0_equal": sum(r["p0_mismatches"] == 0 for r in rows),
        "p0_mismatched_samples": sum(r["p0_mismatches"] for r in rows),
        "robust_not_worse": sum(r["robust_not_worse"] for r in rows),
        "statement_condition": _condition_stats(rows, "statement_condition"),
        "proof_condition": _condition_stats(rows, "proof_condition"),
        "exact_condition": _condition_stats(rows, "exact_condition"),
        # robust_not_worse <=> ||Qw||_1 <= ||w||_1 (up to the eps grid's resolution)
        "exact_condition_agrees": sum(r["exact_condition"] == r["robust_not_worse"] for r in rows),
    }
    fails = [r for r in rows if not r["statement_condition"]]
    improved = [r for r in fails if r["robust_not_worse"]]
    summary["statement_condition_fails"] = {
        "instances": len(fails),
        "still_robust_not_worse": len(improved),
        "median_l1_ratio": _median([r["l1_ratio"] for r in fails]),
        "mean_decrease_of_p_eps": _mean([r["mean_decrease"] for r in fails]),
        "worse": len(fails) - len(improved),
        "mean_max_increase_when_worse": _mean(
            [r["max_increase"] for r in fails if not r["robust_not_worse"]]
        ),
    }
    summary["by_family"] = {
        fam: {
            "instances": len(sel),
            "statement_condition": sum(r["statement_condition"] for r in sel),
            "robust_not_worse": sum(r["robust_not_worse"] for r in sel),
            "median_l1_ratio": _median([r["l1_ratio"] for r in sel]),
        }
        for fam in FAMILIES
        if (sel := [r for r in rows if r["family"] == fam])
    }
    return summary


def _mean(v: list[float]) -> float | None:
    return sum(v) / len(v) if v else None


def _median(v: list[float]) -> float | None:
    if not v:
        return None
    s = sorted(v)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else 0.5 * (s[mid - 1] + s[mid])


def run_theory_experiment(
    n: int = 784,
    k: int = 20,
    samples: int = 5000,
    seed: int = 0,
    eps_grid: tuple[float, ...] | list[float] | None = None,
    instances: int = 200,
    *,
    instance_samples: int = 1000,
    train_steps: int = 300,
    separation: float = 1.5,
    pixel_rms: float = 0.3,
) -> TheoryResult:
    """The Section 3 experiment: Theorem 1 on a trained classifier and on random instances.

    1. A dense random subspace V (n x k), ``samples`` training and ``samples`` test points,
       a logistic-regression w trained from a random init; p_0 and p_eps over ``eps_grid``
       for w and Qw by explicitly attacking the test set.
    2. ``instances`` random (V, w) pairs drawn from :data:`FAMILIES` (dense/coordinate
       subspaces; w = rho * signal + unit dense or sparse noise with rho log-uniform in
       [1e-3, 10], or trained from a random init of log-uniform scale), each
       evaluated on ``instance_samples`` fresh points, with the statement's, the proof's
       and the exact conditions tallied against "p_eps(Qw) <= p_eps(w) at every eps".
    """
    _check_dims(n, k)
    if isinstance(instances, bool) or not isinstance(instances, int) or instances < 0:
        raise ValueError(f"instances must be an integer >= 0, got {instances!r}")
    grid = [float(e) for e in (DEFAULT_EPS_GRID if eps_grid is None else eps_grid)]
    if not grid or any(not math.isfinite(e) or e < 0 for e in grid):
        raise ValueError(f"eps_grid must be a non-empty list of finite eps >= 0, got {grid}")
    g = _gen(seed)
    basis = random_subspace(n, k, g)
    x_tr, y_tr = sample_subspace_data(basis, samples, g, separation=separation, pixel_rms=pixel_rms)
    x_te, y_te = sample_subspace_data(basis, samples, g, separation=separation, pixel_rms=pixel_rms)
    w, w0 = train_linear_classifier(x_tr, y_tr, steps=train_steps, seed=g)
    trained = compare_projection(w, basis, x_te, y_te, grid, explicit=True)
    off = w - basis @ (basis.T @ w)
    off0 = w0 - basis @ (basis.T @ w0)
    trained.update(
        train_error=error_rates(w, x_tr, y_tr, [0.0], explicit=False)[0],
        off_subspace_fraction=float(off.norm() / w.norm()),
        # gradient descent never touches the off-subspace part: should be ~1e-16
        off_subspace_change=float((off - off0).norm() / max(float(off0.norm()), 1e-300)),
        bayes_error=0.5 * math.erfc(separation / math.sqrt(2)),
    )
    rows = []
    for i in range(instances):
        family = FAMILIES[i % len(FAMILIES)]
        rows.append(_instance(family, n, k, instance_samples, grid, g))
    config = {
        "n": n,
        "k": k,
        "samples": samples,
        "seed": seed,
        "instances": instances,
        "instance_samples": instance_samples,
        "train_steps": train_steps,
        "separation": separation,
        "pixel_rms": pixel_rms,
    }
    return TheoryResult(
        config=config, eps_grid=grid, trained=trained, instances=rows, summary=_summarise(rows)
    )


# --------------------------------------------------------------------------- reporting


def _verdict(stats: dict[str, Any]) -> str:
    if stats["instances"] == 0:
        return "no instances"
    if stats["sufficient"]:
        return "sufficient (no counterexample)"
    return f"NOT sufficient ({len(stats['counterexamples'])} counterexamples)"


def format_theory_summary(result: TheoryResult) -> str:
    """A plain-text report: the trained classifier and the per-condition tallies."""
    t, c = result.trained, result.config
    lines = [
        f"Section 3 / Theorem 1: n={c['n']}, k={c['k']}, samples={c['samples']}, seed={c['seed']}",
        "",
        "trained logistic regression (random init), test set:",
        f"  p_0(w) = {t['p0_w']:.4f}   p_0(Qw) = {t['p0_qw']:.4f}   "
        f"(decisions differing: {t['p0_mismatches']}; Bayes error {t['bayes_error']:.4f})",
        f"  s(w) = {t['s_w']:.2f}   s(Qw) = {t['s_qw']:.2f}   "
        f"||w||_1 = {t['l1_w']:.3f}   ||Qw||_1 = {t['l1_qw']:.3f}   "
        f"off-subspace part of w: {t['off_subspace_fraction']:.3f} of ||w||_2",
        f"  {'eps':>6} {'p_eps(w)':>9} {'p_eps(Qw)':>10}",
    ]
    grid = result.eps_grid
    step = max(1, len(grid) // 10)
    for i in range(0, len(grid), step):
        lines.append(f"  {grid[i]:>6.3f} {t['p_eps_w'][i]:>9.4f} {t['p_eps_qw'][i]:>10.4f}")
    s = result.summary
    if s:
        lines += [
            "",
            f"{s['instances']} random instances: p_0(Qw) = p_0(w) in {s['p0_equal']} "
            f"({s['p0_mismatched_samples']} samples differ in total); "
            f"p_eps(Qw) <= p_eps(w) at every eps in {s['robust_not_worse']}",
            f"  {'condition':<38} {'holds in':>8} {'l1 not larger':>14} {'robust':>7}  verdict",
        ]
        names = {
            "statement_condition": "s(Qw) <= s(w)  (Theorem 1 statement)",
            "proof_condition": "s(Qw) >= s(w)  (proof / issue)",
            "exact_condition": "||Qw||_1 <= ||w||_1  (exact)",
        }
        for key, label in names.items():
            st = s[key]
            lines.append(
                f"  {label:<38} {st['instances']:>8} {st['l1_not_larger']:>14} "
                f"{st['robust_not_worse']:>7}  {_verdict(st)}"
            )
        f = s["statement_condition_fails"]
        lines += [
            f"  when s(Qw) > s(w) ({f['instances']} instances): robustness still not worse "
            f"in {f['still_robust_not_worse']}, median ||Qw||_1/||w||_1 = "
            f"{_fmt(f['median_l1_ratio'])}, mean p_eps decrease over the grid = "
            f"{_fmt(f['mean_decrease_of_p_eps'])}; worse in {f['worse']} "
            f"(mean max increase {_fmt(f['mean_max_increase_when_worse'])})",
            "",
            f"  {'family':<22} {'n':>4} {'s(Qw)<=s(w)':>12} {'robust':>7} {'med l1 ratio':>13}",
        ]
        for fam, st in s["by_family"].items():
            lines.append(
                f"  {fam:<22} {st['instances']:>4} {st['statement_condition']:>12} "
                f"{st['robust_not_worse']:>7} {_fmt(st['median_l1_ratio']):>13}"
            )
    return "\n".join(lines)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def write_theory_outputs(
    result: TheoryResult, out_dir: str | Path, *, overwrite: bool = False
) -> tuple[Path, Path]:
    """Write ``theory.json`` and ``theory.png`` into ``out_dir`` atomically.

    Refuses to replace existing outputs unless ``overwrite``, and then replaces only files
    robustrank wrote (:func:`robustrank.ownership.check_files`).
    """
    from .models import atomic_write_bytes
    from .ownership import check_files, record_files
    from .plots import plot_theory

    json_path, png_path = theory_paths(out_dir)
    check_files([json_path, png_path], overwrite=overwrite)
    data = json.dumps(result.to_dict(), indent=2, allow_nan=False).encode()
    atomic_write_bytes(json_path, data)
    plot_theory(result, png_path)
    record_files([json_path, png_path])
    return json_path, png_path


def theory_paths(out_dir: str | Path) -> tuple[Path, Path]:
    """``theory.json`` and ``theory.png`` in ``out_dir``: what the experiment writes."""
    out = Path(out_dir)
    return out / "theory.json", out / "theory.png"
