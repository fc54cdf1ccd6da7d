"""Exact structure: pruning, factorisation, HYDRA scores and proximal steps, against closed
forms and second implementations; densities and ranks that stay exact through training,
resume and checkpoints; clear errors for bad requests."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import minimize
from torch import nn

from robustrank.metrics import density, numerical_rank, structure_report
from robustrank.models import (
    LowRank,
    LowRankSparse,
    Masked,
    StructureError,
    apply_structure,
    create_model,
    layer_structure,
    load_checkpoint,
    remove_structure,
    save_checkpoint,
    structure_of,
    weight_matrices,
)
from robustrank.structure import (
    energy_rank,
    factorize,
    fix_masks,
    list_pruning_methods,
    prune,
    score_phase,
    singular_value_threshold,
    soft_threshold,
)
from robustrank.training import ConfigError, read_history, train
from runs import interrupt_then_resume, same_weights, sigkill_train, tiny_fcnn


def _seeded(name: str = "fcnn", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_model(name)


# --------------------------------------------------------------------------- proximal operators


def test_soft_threshold_is_the_elementwise_l1_prox():
    w = torch.tensor([-2.0, -0.3, 0.0, 0.1, 0.5, 3.0])
    t = 0.4
    # closed form per entry: w - t if w > t, w + t if w < -t, else 0
    expected = [x - t if x > t else x + t if x < -t else 0.0 for x in w.tolist()]
    assert soft_threshold(w, t).tolist() == pytest.approx(expected)
    # and it minimises 0.5 (x - w)^2 + t |x| entrywise, checked on a fine grid
    grid = torch.linspace(-4, 4, 80001)
    for wi, xi in zip(w.tolist(), soft_threshold(w, t).tolist(), strict=True):
        f = 0.5 * (grid - wi) ** 2 + t * grid.abs()
        assert abs(grid[f.argmin()].item() - xi) < 2e-4


def test_svt_shrinks_the_singular_values():
    torch.manual_seed(1)
    w = torch.randn(6, 4, dtype=torch.float64)
    t = 0.9
    x = singular_value_threshold(w, t)
    s_w = torch.linalg.svdvals(w)
    s_x = torch.linalg.svdvals(x)
    assert torch.allclose(s_x, torch.clamp(s_w - t, min=0), atol=1e-12)
    assert numerical_rank(x) == int((s_w > t).sum())
    # a conv kernel is thresholded as its (out, in*kh*kw) matrix (Appendix B)
    k = torch.randn(3, 2, 2, 2, dtype=torch.float64)
    assert torch.allclose(
        singular_value_threshold(k, t).reshape(3, -1), singular_value_threshold(k.reshape(3, -1), t)
    )


def _nuclear_objective(w: np.ndarray, t: float):
    def f(flat: np.ndarray) -> float:
        x = flat.reshape(w.shape)
        return 0.5 * float(((x - w) ** 2).sum()) + t * float(
            np.linalg.svd(x, compute_uv=False).sum()
        )

    return f


def test_svt_minimises_the_nuclear_prox_objective():
    """SVT is argmin 0.5 ||X - W||_F^2 + t ||X||_*: an independent numerical solve from
    several starts never beats it, and it satisfies the optimality condition
    W - X = t (U_r V_r^T + Z) with U_r^T Z = 0, Z V_r = 0, ||Z||_2 <= 1."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 3))
    t = 0.8
    x = singular_value_threshold(torch.from_numpy(w), t).numpy()
    f = _nuclear_objective(w, t)
    for start in (w, np.zeros_like(w), rng.normal(size=w.shape)):
        res = minimize(f, start.ravel(), method="Powell", options={"xtol": 1e-9, "ftol": 1e-12})
        assert f(x.ravel()) <= res.fun + 1e-7
    u, s, vt = np.linalg.svd(x)
    r = int((s > 1e-9).sum())
    z = (w - x) / t - u[:, :r] @ vt[:r]
    assert np.abs(u[:, :r].T @ z).max() < 1e-9 and np.abs(z @ vt[:r].T).max() < 1e-9
    assert np.linalg.norm(z, 2) <= 1 + 1e-9


# --------------------------------------------------------------------------- pruning


def test_layer_pruning_keeps_exactly_the_largest_entries():
    model = _seeded()
    w1 = model.hidden[0].weight.detach().clone()
    kept = prune(model, {"W1": 0.1, 2: 0.35})
    n = w1.numel()
    mask = layer_structure(model.hidden[0]).mask
    assert int(mask.sum()) == round(0.1 * n) and kept["hidden.0"] == round(0.1 * n) / n
    # the kept entries are the largest |W| (independent: sort)
    threshold = w1.abs().flatten().sort(descending=True).values[round(0.1 * n) - 1]
    assert bool((w1.abs()[mask] >= threshold).all()) and bool((w1.abs()[~mask] <= threshold).all())
    assert torch.equal(model.hidden[0].weight, w1 * mask)
    assert density(model.hidden[1].weight) == pytest.approx(round(0.35 * 400) / 400)
    assert layer_structure(model.hidden[2]) is None  # untouched


def test_global_pruning_ranks_all_chosen_layers_together():
    model = _seeded()
    chosen = [model.hidden[0], model.hidden[1], model.hidden[2]]
    weights = torch.cat([m.weight.detach().abs().flatten() for m in chosen])
    kept = prune(model, 0.2, layers=["W1", "W2", "W3"], scope="global")
    counts = [int(layer_structure(m).mask.sum()) for m in chosen]
    assert sum(counts) == round(0.2 * weights.numel())
    # one threshold for all: the smallest kept beats the largest dropped, across layers
    kept_vals = torch.cat([m.weight.detach().abs()[layer_structure(m).mask] for m in chosen])
    dropped = torch.cat(
        [
            m.parametrizations.weight.original.detach().abs()[~layer_structure(m).mask]
            for m in chosen
        ]
    )
    assert kept_vals.min() >= dropped.max()
    assert len(set(kept.values())) > 1  # per-layer densities follow the weights


def test_random_pruning_is_seeded_and_exact():
    a, b, c = _seeded(), _seeded(), _seeded()
    prune(a, 0.3, layers=["W1"], method="random", seed=5)
    prune(b, 0.3, layers=["W1"], method="random", seed=5)
    prune(c, 0.3, layers=["W1"], method="random", seed=6)
    ma, mb, mc = (layer_structure(m.hidden[0]).mask for m in (a, b, c))
    assert torch.equal(ma, mb) and not torch.equal(ma, mc)
    assert int(ma.sum()) == round(0.3 * ma.numel())
    assert list_pruning_methods()[:3] == ["magnitude", "random", "scores"]


def test_repruning_replaces_the_mask_in_place():
    model = _seeded()
    prune(model, {"W1": 0.5})
    keys = set(model.state_dict())
    prune(model, {"W1": 0.1})
    assert set(model.state_dict()) == keys
    assert density(model.hidden[0].weight) == pytest.approx(round(0.1 * 15680) / 15680)


# --------------------------------------------------------------------------- factorisation


def test_full_rank_factorisation_is_the_same_function():
    torch.manual_seed(0)
    linear, conv = nn.Linear(7, 5), nn.Conv2d(3, 4, 3, padding=1)
    x_lin, x_conv = torch.randn(6, 7), torch.randn(2, 3, 8, 8)
    before = linear(x_lin), conv(x_conv)
    for module in (linear, conv):
        factorize(module, min(module.weight.shape[0], module.weight[0].numel()))
    assert torch.allclose(linear(x_lin), before[0], atol=1e-5)
    assert torch.allclose(conv(x_conv), before[1], atol=1e-5)


def test_factorised_conv_is_an_r_channel_conv_then_a_1x1_conv():
    """Appendix B: W~ = U V; V reshaped is an r-channel conv, U a 1x1 conv (second
    implementation with F.conv2d)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 6, 3, padding=1)
    factorize(conv, 2)
    u, v = conv.parametrizations.weight.original0, conv.parametrizations.weight.original1
    x = torch.randn(2, 3, 9, 9)
    inner = F.conv2d(x, v.reshape(2, 3, 3, 3), padding=1)
    outer = F.conv2d(inner, u.reshape(6, 2, 1, 1), conv.bias)
    assert torch.allclose(conv(x), outer, atol=1e-5)
    assert numerical_rank(conv.weight) == 2


def test_truncated_svd_is_the_best_low_rank_approximation():
    model = _seeded()
    w = model.hidden[0].weight.detach().double().clone()
    factorize(model, {"W1": 3})
    approx = model.hidden[0].weight.detach().double()
    s = torch.linalg.svdvals(w)
    # Eckart-Young: ||W - W_r||_F^2 = sum of the dropped squared singular values
    err = float(((w - approx) ** 2).sum())
    assert err == pytest.approx(float((s[3:] ** 2).sum()), rel=1e-4)
    assert numerical_rank(model.hidden[0].weight) == 3


def test_energy_picks_the_smallest_rank_keeping_that_energy():
    torch.manual_seed(0)
    w = torch.diag(torch.tensor([3.0, 2.0, 1.0, 0.5]))
    total = 9 + 4 + 1 + 0.25
    assert energy_rank(w, 9 / total) == 1
    assert energy_rank(w, 9.1 / total) == 2
    assert energy_rank(w, 1.0) == 4
    model = _seeded()
    ranks = factorize(model, energy=0.9, layers=["W2"])
    s2 = torch.linalg.svdvals(weight_matrices(_seeded())["W2"].double()) ** 2
    r = ranks["hidden.1"]
    assert s2[:r].sum() / s2.sum() >= 0.9 > s2[: r - 1].sum() / s2.sum()


def test_low_rank_plus_sparse_counts_both_parts():
    model = _seeded()
    factorize(model, {"W1": 4}, density={"W1": 0.02})
    p = layer_structure(model.hidden[0])
    assert isinstance(p, LowRankSparse) and int(p.mask.sum()) == round(0.02 * 15680)
    row = structure_report(model)[0]
    assert row.params == 4 * (20 + 784) + round(0.02 * 15680)
    assert row.compression == pytest.approx(15680 / row.params)


# --------------------------------------------------------------------------- HYDRA scores


def test_scores_train_through_a_straight_through_top_k_mask():
    torch.manual_seed(0)
    layer = nn.Linear(6, 4)
    prune(layer, 0.25, method="scores")
    p = layer_structure(layer)
    assert int(p.mask.sum()) == 6  # 0.25 * 24
    x = torch.randn(5, 6)
    layer(x).sum().backward()
    w = layer.parametrizations.weight.original
    # straight through: dL/dS = dL/dW_eff * W, with dL/dW_eff = sum_n 1 x_n^T
    grad_eff = torch.ones(5, 4).T @ x
    assert torch.allclose(p.scores.grad, grad_eff * w.detach(), atol=1e-6)


def test_score_phase_freezes_weights_then_scores():
    model = _seeded()
    prune(model, 0.5, layers=["W2"], method="scores")
    assert score_phase(model, train_scores=True)
    scores = layer_structure(model.hidden[1]).scores
    assert scores.requires_grad
    assert not any(p.requires_grad for p in model.parameters() if p is not scores)
    score_phase(model, train_scores=False)
    assert not scores.requires_grad
    assert all(p.requires_grad for p in model.parameters() if p is not scores)
    x = torch.rand(3, 1, 28, 28)
    before = model(x)
    assert fix_masks(model) == 1 and isinstance(layer_structure(model.hidden[1]), Masked)
    assert torch.equal(model(x), before)


# --------------------------------------------------------------------------- records


def test_structure_survives_a_checkpoint_round_trip(tmp_path):
    model = _seeded("cnn")
    factorize(model, {"W1": 2, "W2": 5}, density={"W2": 0.05})
    prune(model, 0.1, layers=["W3"])
    prune(model, 0.5, layers=["W4"], method="scores")
    save_checkpoint(model, tmp_path / "c.safetensors")
    loaded, _ = load_checkpoint(tmp_path / "c.safetensors")
    assert structure_of(loaded) == structure_of(model)
    x = torch.rand(4, 1, 28, 28)
    model.eval()
    assert torch.equal(loaded(x), model(x))
    assert [r.params for r in structure_report(loaded)] == [
        r.params for r in structure_report(model)
    ]
    dense = remove_structure(loaded)
    assert structure_of(dense) == {} and torch.allclose(dense(x), model(x))


def test_apply_structure_refuses_a_record_that_does_not_fit():
    record = structure_of(factorize(_seeded(), {"W1": 3}) and _seeded())
    assert record == {}
    with pytest.raises(StructureError, match="does not have"):
        apply_structure(_seeded(), {"nope": {"kind": "mask", "shape": [1, 1]}})
    with pytest.raises(StructureError, match="shape"):
        apply_structure(_seeded(), {"hidden.0": {"kind": "mask", "shape": [3, 3]}})
    with pytest.raises(StructureError, match="unknown structure kind"):
        apply_structure(_seeded(), {"hidden.0": {"kind": "zip", "shape": [20, 784]}})


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: prune(m, {"W1": 0.0}), r"'W1'.*\(0, 1\]"),
        (lambda m: prune(m, {"W1": 1.5}), r"'W1'.*\(0, 1\]"),
        (lambda m: prune(m, {"W9": 0.5}), "no weight layer matches 'W9'"),
        (lambda m: prune(m, 0.5, layers=["W1"], scope="global", method="scores"), "scope='layer'"),
        (lambda m: prune(m, {"W1": 0.5, "W2": 0.2}, scope="global"), "one density"),
        (lambda m: factorize(m, {"W1": 21}), r"'W1'.*\[1, 20\]"),
        (lambda m: factorize(m, {"W6": 0}), r"'W6'.*\[1, 10\]"),
        (lambda m: factorize(m, {"hidden.*": 3, "W2": 2}), "selected by both"),
        (lambda m: factorize(m, rank=2, energy=0.9), "exactly one of"),
        (lambda m: factorize(m, {"W1": 2}, density={"W2": 0.1}), "not factorised"),
        (lambda m: prune(factorize(m, {"W1": 2}) and m, {"W1": 0.5}), "low-rank already"),
        (lambda m: factorize(prune(m, {"W1": 0.5}) and m, {"W1": 2}), "structured already"),
    ],
)
def test_bad_requests_name_the_layer_and_the_fix(call, match):
    with pytest.raises(StructureError, match=match):
        call(_seeded())


def _config(**overrides):
    return tiny_fcnn(**{"name": "tiny-structure", "lr": 0.05, "momentum": 0.9, **overrides})


@pytest.mark.parametrize(
    ("structure", "match"),
    [
        ({"prune": {"density": {"W7": 0.1}}}, "W7"),
        ({"prune": {"density": {"W1": 2.0}}}, r"\(0, 1\]"),
        ({"factorize": {"rank": {"W1": 50}}}, r"\[1, 20\]"),
        ({"prune": {"density": 0.1, "method": "scores"}}, "score_epochs"),
        ({"prune": {"density": 0.1, "method": "magnitde"}}, "did you mean 'magnitude'"),
        (
            {
                "prune": {"density": {"W1": 0.1}, "method": "random"},
                "factorize": {"rank": {"W1": 2}},
            },
            "low rank plus sparse",
        ),
        ({"prune": {"density": 0.1, "method": "scores", "score_epochs": 3}}, "exceeds epochs"),
    ],
)
def test_bad_structure_configs_are_refused_with_the_key(structure, match):
    with pytest.raises(ConfigError, match=match):
        _config(structure=structure)


def test_proximal_steps_on_a_factorised_layer_are_refused(tmp_path):
    cfg = _config(
        structure={"factorize": {"rank": {"W1": 3}}},
        regularizers={"mode": "proximal", "nuclear": {"W1": 0.1}},
    )
    with pytest.raises(ConfigError, match="W1.*exact already"):
        train(cfg, tmp_path / "run", progress=False)


# --------------------------------------------------------------------------- training


def _exact(model: nn.Module, layer: str, *, k: int | None = None, rank: int | None = None) -> None:
    w = dict(weight_matrices(model))[layer]
    if k is not None:
        assert (
            int((w != 0).sum()) <= k and int(layer_structure(_module(model, layer)).mask.sum()) == k
        )
    if rank is not None:
        assert numerical_rank(w) == rank


def _module(model: nn.Module, path: str) -> nn.Module:
    return dict(model.named_modules())[path]


def test_structured_training_keeps_density_and_rank_through_resume(tmp_path):
    cfg = _config(
        structure={"prune": {"density": {"W1": 0.1}}, "factorize": {"rank": {"W3": 4}}},
        regularizers={"l1": {"W2": 1e-3}},
    )
    full = train(cfg, tmp_path / "full", progress=False)
    k1 = round(0.1 * 15680)
    _exact(full.model, "hidden.0", k=k1)
    _exact(full.model, "hidden.2", rank=4)
    assert full.history[-1]["density_W1"] == pytest.approx(k1 / 15680)
    assert full.history[-1]["num_rank_W3"] == 4
    resumed = interrupt_then_resume(
        cfg, tmp_path / "run", lambda r: r["kind"] == "steps" and r["step"] == 15
    )  # mid-epoch 2
    assert resumed.resumed and same_weights(resumed.model, full.model)
    loaded, _ = load_checkpoint(resumed.final_checkpoint)
    assert structure_of(loaded) == structure_of(full.model)
    _exact(loaded, "hidden.0", k=k1)


def test_proximal_training_sets_exact_zeros_and_drops_the_rank(tmp_path):
    cfg = _config(regularizers={"mode": "proximal", "l1": {"W1": 0.02}, "nuclear": {"W2": 0.3}})
    assert cfg.plain()["regularizers"]["mode"] == "proximal"
    result = train(cfg, tmp_path / "prox", progress=False)
    w = weight_matrices(result.model)
    assert density(w["W1"]) < 0.9  # soft-thresholding leaves exact zeros
    assert 0 < numerical_rank(w["W2"]) < 20  # SVT drops singular values to exactly zero
    assert numerical_rank(torch.zeros(3, 4)) == 0
    row = result.history[-1]
    assert row["train_l1"] > 0 and row["train_nuclear"] > 0  # logged though not differentiated
    # the subgradient default writes configs as before (no mode key)
    assert "mode" not in _config(regularizers={"l1": {"W1": 0.01}}).plain()["regularizers"]


def test_hydra_scores_change_only_the_mask_then_only_the_weights(tmp_path):
    cfg = _config(
        structure={
            "prune": {
                "density": 0.2,
                "layers": ["W2"],
                "method": "scores",
                "score_epochs": 1,
                "score_lr": 0.5,
            }
        },
        epochs=2,
        history={"evaluate": False},
    )
    masks, weights = [], []

    def record(row, model):
        p = layer_structure(model.hidden[1])
        masks.append(p.mask.clone())
        weights.append(model.hidden[1].parametrizations.weight.original.detach().clone())

    result = train(cfg, tmp_path / "hydra", progress=False, callback=record)
    assert len(masks) == 3  # epochs 0, 1, 2
    assert [r["lr"] for r in result.history] == [0.5, 0.5, 0.05]  # score_lr, then the run's
    assert torch.equal(weights[0], weights[1]) and not torch.equal(masks[0], masks[1])
    assert torch.equal(masks[1], masks[2]) and not torch.equal(weights[1], weights[2])
    assert all(int(m.sum()) == round(0.2 * 400) for m in masks)


@pytest.mark.slow
def test_sigkilled_pruned_run_resumes_to_identical_weights(tmp_path):
    cfg = _config(
        name="prune-kill",
        train_subset=3000,
        epochs=3,
        structure={"prune": {"density": {"W1": 0.05}}, "factorize": {"rank": {"W2": 3}}},
        history={"evaluate": False, "every_steps": 10},
    )
    full = train(cfg, tmp_path / "full", progress=False)
    path, run = tmp_path / "prune.yaml", tmp_path / "run"
    path.write_text(cfg.to_yaml())
    sigkill_train(path, run, rows=3)
    resumed = train(cfg, run, resume=True, progress=False)
    assert resumed.resumed and same_weights(resumed.model, full.model)
    assert [r["step"] for r in read_history(run)] == [r["step"] for r in full.history]
    _exact(resumed.model, "hidden.0", k=round(0.05 * 15680))
    _exact(resumed.model, "hidden.1", rank=3)


def test_structure_config_round_trips_through_yaml(tmp_path):
    cfg = _config(
        structure={"prune": {"density": {1: 0.1}}, "factorize": {"energy": 0.9, "layers": ["W2"]}}
    )
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    from robustrank.training import load_config

    again = load_config(path)
    assert again.plain() == cfg.plain() and again.plain()["structure"]["prune"]["density"] == {
        1: 0.1
    }
    assert "structure" not in _config().plain()


def test_masked_parametrization_density_is_exact():
    mask = torch.zeros(7, 3, dtype=torch.bool)
    mask[:2] = True
    assert Masked(mask).density == 6 / 21
    assert LowRank((5, 4), 2).stored() == 2 * 9
    with pytest.raises(StructureError, match=r"\[1, 4\]"):
        LowRank((5, 4), 5)
    assert math.isclose(Masked(mask).stored(), 6)


def test_density_one_and_rank_null_leave_a_layer_plain():
    """A sweep grid holds "no pruning" and "no factorisation" as values."""
    cfg = _config(
        structure={
            "prune": {"density": {"W1": 1.0, "W3": 0.5}},
            "factorize": {"rank": {"W1": None, "W2": 3}},
        }
    )
    model = _seeded()
    done = cfg.structure.apply(model, seed=0)
    assert done == {"hidden.1": {"rank": 3}, "hidden.2": {"density": 0.5}}
    assert layer_structure(model.hidden[0]) is None
    assert cfg.plain()["structure"]["factorize"]["rank"] == {"W1": None, "W2": 3}


@pytest.mark.parametrize("method", ["prune", "low_rank", "both"])
def test_a_parameter_budget_compresses_every_layer_to_its_fraction(method):
    from robustrank.metrics import model_compression
    from robustrank.structure import StructureConfig

    fraction = 0.1
    model = _seeded("cnn")
    StructureConfig.model_validate({"budget": {"fraction": fraction, "method": method}}).apply(
        model, 0
    )
    rows = structure_report(model)
    for r in rows:
        m, n = r.shape
        if method == "prune":
            assert r.params == round(fraction * m * n)
        else:  # the largest rank within the budget (at least 1): r (m + n) <= share m n
            share = fraction / 2 if method == "both" else fraction
            rank = max(1, min(m, n, int(share * m * n / (m + n))))
            sparse = round(share * m * n) if method == "both" else 0
            assert r.params == rank * (m + n) + sparse
    params, dense, _ = model_compression(rows)
    assert params <= 1.05 * fraction * dense
    untouched = _seeded("cnn")
    StructureConfig.model_validate({"budget": {"fraction": 1.0, "method": method}}).apply(
        untouched, 0
    )
    assert structure_of(untouched) == {}


def test_a_budget_excludes_prune_and_factorize():
    with pytest.raises(ConfigError, match="either budget or prune/factorize"):
        _config(
            structure={"budget": {"fraction": 0.1, "method": "prune"}, "prune": {"density": 0.1}}
        )


def test_sweeps_take_structure_keys_by_layer():
    from robustrank.sweeps import load_spec
    from robustrank.sweeps.space import apply_values, layer_key, parse_path
    from robustrank.sweeps.table import outcome_row, structure_layers

    assert parse_path("structure.prune.density.1") == ["structure", "prune", "density", 1]
    assert layer_key(parse_path("structure.factorize.rank.block.conv1")) == "block.conv1"
    assert layer_key(parse_path("structure.prune.method")) is None
    config = apply_values(
        {}, {"structure.prune.density.W1": 0.1, "structure.factorize.rank.2": None}
    )
    assert config == {
        "structure": {"prune": {"density": {"W1": 0.1}}, "factorize": {"rank": {2: None}}}
    }
    spec = load_spec("open-question-exact-fcnn")
    base = load_preset_plain(spec.base)
    assert structure_layers(base, list(spec.space)) == ["W1"]
    final = {
        "test_acc": 0.9,
        "num_rank_W1": 5,
        "density_W1": 0.1,
        "compression": 3.0,
        "weight_params": 7,
    }
    row = outcome_row({"trial": "t"}, final, None, "autoattack", ["W1"])
    assert (row["num_rank_W1"], row["density_W1"], row["compression"]) == (5, 0.1, 3.0)


def load_preset_plain(name: str) -> dict:
    from robustrank.training import load_preset

    return load_preset(name).plain()


@pytest.mark.slow
def test_structure_and_compress_work_on_the_example_resnet(tmp_path):
    """The example ResNet (an import path, so --trust-code) trains with a structure:
    section and is compressed post hoc, from the shell, as a user would."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    examples = Path(__file__).parents[1] / "examples"
    shutil.copy(examples / "small_resnet.py", tmp_path)
    sys.path.insert(0, str(tmp_path))
    try:
        from small_resnet import make_cifar_like

        make_cifar_like(tmp_path / "cifar_like.npz", n_train=256, n_test=64)
        config = yaml.safe_load((examples / "small_resnet.yaml").read_text())
        config.update(epochs=1, history={"evaluate": False})
        config["structure"] = {
            "prune": {"density": {"layers.*.conv1": 0.2}},
            "factorize": {"rank": {"fc": 3}},
        }
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
        run = [sys.executable, "-m", "robustrank"]
        train_cmd = [*run, "train", "c.yaml", "--trust-code", "--out", "r", "--no-progress"]
        subprocess.run(train_cmd, cwd=tmp_path, check=True, capture_output=True)
        model, _ = load_checkpoint(tmp_path / "r" / "final.safetensors", trust_code=True)
        assert numerical_rank(model.fc.weight) == 3
        for block in model.layers:
            assert int(layer_structure(block.conv1).mask.sum()) == round(
                0.2 * block.conv1.weight.numel()
            )
        compress_cmd = [*run, "compress", "r/final.safetensors", "--out", "c", "--trust-code",
                        "--density", "layers.*.conv2=0.1", "--rank", "stem=2"]  # fmt: skip
        out = subprocess.run(compress_cmd, cwd=tmp_path, check=True, capture_output=True, text=True)
        assert "compression" in out.stdout
        compressed, _ = load_checkpoint(tmp_path / "c" / "compressed.safetensors", trust_code=True)
        assert numerical_rank(compressed.stem.weight) <= 2
        assert structure_of(compressed).keys() > structure_of(model).keys()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("small_resnet", None)
