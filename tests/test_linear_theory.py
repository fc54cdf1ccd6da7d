"""Section 3 / Theorem 1: data in a subspace, projection Qw, worst-case l_inf attacks.

The errors are recomputed here with numpy, by attacking explicitly; Theorem 1 is checked
on random instances in the form that the algebra supports (see linear_theory's docstring):
s(Qw) <= s(w)  =>  ||Qw||_1 <= ||w||_1  =>  p_eps(Qw) <= p_eps(w) for every eps.
"""

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from robustrank.linear_theory import (
    compare_projection,
    coordinate_subspace,
    effective_sparsity_vector,
    error_rates,
    format_theory_summary,
    random_subspace,
    run_theory_experiment,
    sample_subspace_data,
    train_linear_classifier,
    worst_case_perturbation,
    write_theory_outputs,
)


def np_errors(w: np.ndarray, x: np.ndarray, y: np.ndarray, eps_grid) -> list[float]:
    """Attack every point with eta = -y eps sign(w) and count y w^T (x + eta) < 0."""
    out = []
    for eps in eps_grid:
        adv = x - eps * y[:, None] * np.sign(w)[None, :]
        out.append(float(np.mean(y * (adv @ w) < 0)))
    return out


def test_subspaces_are_orthonormal():
    for make in (random_subspace, coordinate_subspace):
        v = make(50, 7, seed=3)
        assert v.shape == (50, 7)
        torch.testing.assert_close(v.T @ v, torch.eye(7, dtype=v.dtype))
    assert torch.equal(random_subspace(30, 4, seed=1), random_subspace(30, 4, seed=1))
    with pytest.raises(ValueError, match="1 <= k < n"):
        random_subspace(5, 5)


def test_data_lie_in_the_subspace():
    v = random_subspace(100, 6, seed=0)
    x, y = sample_subspace_data(v, 4000, seed=1, separation=1.5, pixel_rms=0.3)
    off = x - (x @ v) @ v.T
    assert float(off.abs().max()) < 1e-12 * float(x.abs().max()) * 100
    assert set(torch.unique(y).tolist()) == {-1.0, 1.0}
    assert float(x.pow(2).mean().sqrt()) == pytest.approx(0.3, rel=0.05)
    # the classes overlap as designed: the Bayes rule sign(z_1) errs Phi(-1.5) of the time
    z1 = (x @ v[:, 0]).numpy()
    bayes = np.mean(np.sign(z1) != y.numpy())
    assert bayes == pytest.approx(0.5 * math.erfc(1.5 / math.sqrt(2)), abs=0.015)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.001, 0.5))
def test_worst_case_perturbation_is_worst(seed, eps):
    rng = np.random.default_rng(seed)
    n = 12
    w = rng.standard_normal(n)
    x = rng.standard_normal((5, n))
    y = rng.choice([-1.0, 1.0], 5)
    eta = worst_case_perturbation(torch.tensor(w), torch.tensor(y), eps).numpy()
    assert np.abs(eta).max() <= eps + 1e-15
    worst = y * ((x + eta) @ w)
    np.testing.assert_allclose(worst, y * (x @ w) - eps * np.abs(w).sum(), rtol=1e-12)
    # no other perturbation in the eps-ball (random signs, random interior) does better
    for _ in range(20):
        other = rng.uniform(-eps, eps, (5, n))
        other[:, : n // 2] = eps * rng.choice([-1, 1], (5, n // 2))
        assert np.all(y * ((x + other) @ w) >= worst - 1e-12)


def test_error_rates_explicit_equals_linear_form_and_numpy():
    v = random_subspace(60, 5, seed=0)
    x, y = sample_subspace_data(v, 800, seed=1)
    w = torch.randn(60, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    grid = [0.0, 0.003, 0.01, 0.03]
    a = error_rates(w, x, y, grid, explicit=True)
    b = error_rates(w, x, y, grid, explicit=False)
    assert a == b
    assert a == np_errors(w.numpy(), x.numpy(), y.numpy(), grid)
    assert all(p <= q for p, q in zip(a, a[1:], strict=False))  # monotone in eps


def _w_family(kind: str, n: int, v: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    if kind == "dense":
        w = rng.standard_normal(n)
    elif kind == "sparse":
        w = np.zeros(n)
        idx = rng.choice(n, rng.integers(1, 6), replace=False)
        w[idx] = rng.standard_normal(len(idx))
    else:  # near the subspace
        w = v.numpy() @ rng.standard_normal(v.shape[1]) + 0.05 * rng.standard_normal(n)
    return torch.tensor(w)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 100_000),
    st.integers(10, 60),
    st.sampled_from(["dense", "sparse", "near"]),
    st.booleans(),
)
def test_theorem1_on_random_instances(seed, n, kind, coordinate):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, n // 2))
    v = (coordinate_subspace if coordinate else random_subspace)(n, k, seed=seed)
    x, y = sample_subspace_data(v, 300, seed=seed + 1)
    w = _w_family(kind, n, v, rng)
    qw = (v @ (v.T @ w)).numpy()
    if np.linalg.norm(qw) < 1e-9 * np.linalg.norm(w.numpy()):
        return  # w orthogonal to V: Qw = 0, s(Qw) undefined
    grid = [0.0, 0.002, 0.01, 0.05, 0.2]
    r = compare_projection(w, v, x, y, grid)
    xn, yn, wn = x.numpy(), y.numpy(), w.numpy()
    p_w, p_qw = np_errors(wn, xn, yn, grid), np_errors(qw, xn, yn, grid)
    assert r["p_eps_w"] == p_w and r["p_eps_qw"] == p_qw
    # accuracy unchanged (data lie in V), up to float ties
    assert r["p0_mismatches"] == 0 and p_w[0] == p_qw[0]
    s_w = np.abs(wn).sum() / np.linalg.norm(wn)
    s_qw = np.abs(qw).sum() / np.linalg.norm(qw)
    assert r["s_w"] == pytest.approx(s_w) and r["s_qw"] == pytest.approx(s_qw)
    assert np.linalg.norm(qw) <= np.linalg.norm(wn) * (1 + 1e-12)
    if s_qw <= s_w:  # Theorem 1 as stated: sufficient
        assert np.abs(qw).sum() <= np.abs(wn).sum() * (1 + 1e-12)
        assert all(a <= b for a, b in zip(p_qw, p_w, strict=True))
    if np.abs(qw).sum() <= np.abs(wn).sum():  # the exact criterion
        assert all(a <= b for a, b in zip(p_qw, p_w, strict=True))


def test_proof_condition_is_not_sufficient():
    """s(Qw) >= s(w) (the proof's / issue's wording) does not imply robustness: a 1-sparse
    w against a dense subspace has s(w) = 1 <= s(Qw) and yet ||Qw||_1 > ||w||_1."""
    n, k = 200, 10
    v = random_subspace(n, k, seed=0)
    w = torch.zeros(n, dtype=torch.float64)
    w[0] = 1.0
    qw = v @ (v.T @ w)
    assert effective_sparsity_vector(w) == 1.0 <= effective_sparsity_vector(qw)
    assert float(qw.abs().sum()) > float(w.abs().sum())
    x, y = sample_subspace_data(v, 2000, seed=1)
    grid = [0.0, 0.001, 0.002, 0.005, 0.01]
    p_w = np_errors(w.numpy(), x.numpy(), y.numpy(), grid)
    p_qw = np_errors(qw.numpy(), x.numpy(), y.numpy(), grid)
    assert p_w[0] == p_qw[0]
    assert any(a > b for a, b in zip(p_qw, p_w, strict=True))
    r = compare_projection(w, v, x, y, grid)
    assert r["proof_condition"] and not r["statement_condition"] and not r["robust_not_worse"]


def test_training_keeps_the_off_subspace_part():
    v = random_subspace(80, 4, seed=0)
    x, y = sample_subspace_data(v, 1500, seed=1, separation=2.0)
    w, w0 = train_linear_classifier(x, y, steps=200, seed=2)

    def off(u):
        return u - v @ (v.T @ u)

    torch.testing.assert_close(off(w), off(w0), rtol=0, atol=1e-12)
    assert float(off(w0).norm()) > 0.1 * float(w0.norm())

    def loss(u):
        return float(torch.nn.functional.softplus(-y * (x @ u)).mean())

    assert loss(w) < loss(w0)
    bayes = 0.5 * math.erfc(2.0 / math.sqrt(2))
    assert error_rates(w, x, y, [0.0], explicit=False)[0] < bayes + 0.03


def test_run_theory_experiment_small(tmp_path):
    res = run_theory_experiment(
        n=60, k=5, samples=400, seed=1, instances=25, instance_samples=200, train_steps=50
    )
    s = res.summary
    assert s["instances"] == 25 and len(res.instances) == 25
    assert s["p0_equal"] == 25
    st_ = s["statement_condition"]
    assert st_["sufficient"] and st_["counterexamples"] == []
    assert s["exact_condition"]["sufficient"]
    for r in res.instances:
        assert r["l1_ratio"] <= r["sparsity_ratio"] * (1 + 1e-12)  # ||Qw||_2 <= ||w||_2
    fails = s["statement_condition_fails"]
    assert fails["instances"] == 25 - st_["instances"]
    assert fails["still_robust_not_worse"] + fails["worse"] == fails["instances"]
    t = res.trained
    assert t["p0_w"] == t["p0_qw"] and t["off_subspace_change"] < 1e-10
    assert len(t["p_eps_w"]) == len(res.eps_grid)
    text = format_theory_summary(res)
    assert "s(Qw) <= s(w)" in text and "sufficient" in text
    json_path, png_path = write_theory_outputs(res, tmp_path)
    assert json.loads(json_path.read_text())["config"]["n"] == 60
    assert png_path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        write_theory_outputs(res, tmp_path)
    write_theory_outputs(res, tmp_path, overwrite=True)


def test_theory_cli(tmp_path):
    from typer.testing import CliRunner

    from robustrank.cli import app

    out = tmp_path / "th"
    args = ["theory", "--n", "40", "--k", "4", "--samples", "200", "--instances", "10"]
    args += ["--out", str(out)]
    runner = CliRunner()
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "Theorem 1" in res.output
    assert (out / "theory.json").exists() and (out / "theory.png").exists()
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "refusing to overwrite" in res.output
    res = runner.invoke(app, ["theory", "--n", "4", "--k", "4", "--out", str(tmp_path / "z")])
    assert res.exit_code == 2 and "k < n" in res.output
