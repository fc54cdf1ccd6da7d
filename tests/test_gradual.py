"""Gradual magnitude pruning (Zhu & Gupta, 2017): ``structure.prune.gradual`` follows the
cubic schedule exactly (counted against an independent reference), masks are nested, a
run killed mid-schedule resumes to the same weights and masks, bad requests are refused,
and configs without it serialise as before."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustrank.models import StructureError, create_model, layer_structure
from robustrank.structure import StructureConfig, prune
from robustrank.training import ConfigError, load_config, load_preset, read_history, train
from robustrank.training.seeds import STRUCTURE, derive_seed
from runs import interrupt_then_resume, same_weights, sigkill_train, tiny_fcnn

W1, W2, W3 = "hidden.0", "hidden.1", "hidden.2"


def _reference_density(final: float, epoch: int, start: int, end: int, every: int) -> float:
    """The cubic schedule (Zhu & Gupta, 2017) in force during ``epoch``, written out anew:
    d_t at the last pruning epoch t <= epoch, 1 before ``start``, ``final`` from ``end``."""
    if epoch < start:
        return 1.0
    t = end if epoch >= end else start + (epoch - start) // every * every
    return final + (1 - final) * (1 - (t - start) / (end - start)) ** 3


def _count(density: float, numel: int) -> int:
    return round(density * numel)


def _config(structure: dict, **overrides):
    data = {"name": "tiny-gradual", "epochs": 6, "history": {"evaluate": False}}
    return tiny_fcnn(**{**data, **overrides, "structure": structure})


def _masks(model: nn.Module, *paths: str) -> list[torch.Tensor]:
    modules = dict(model.named_modules())
    return [layer_structure(modules[p]).mask.clone() for p in paths]


def _train_recording(cfg, out, paths):
    """Train; the masks of ``paths`` at every epoch row, by epoch."""
    masks: dict[int, list[torch.Tensor]] = {}

    def record(row, model):
        if row["kind"] in ("init", "epoch"):
            masks[row["epoch"]] = _masks(model, *paths)

    return train(cfg, out, progress=False, callback=record), masks


# --------------------------------------------------------------------------- the schedule


@pytest.mark.parametrize(
    ("method", "start", "end", "every"),
    [("magnitude", 2, 5, 1), ("random", 1, 6, 2)],
)
def test_density_follows_the_cubic_schedule_with_nested_masks(tmp_path, method, start, end, every):
    targets = {"W1": 0.05, "W2": 0.3}
    gradual = {"start_epoch": start, "end_epoch": end, "every": every}
    cfg = _config({"prune": {"density": targets, "method": method, "gradual": gradual}})
    result, masks = _train_recording(cfg, tmp_path / "run", (W1, W2))
    rows = [r for r in result.history if r["kind"] in ("init", "epoch")]
    assert [r["epoch"] for r in rows] == list(range(7))
    for row in rows:
        t = row["epoch"]
        for key, numel, mask in zip(("W1", "W2"), (15680, 400), masks[t], strict=True):
            want = _count(_reference_density(targets[key], t, start, end, every), numel)
            assert row[f"density_{key}"] == want / numel, (key, t)
            assert int(mask.sum()) == want
    # boundaries: dense before start_epoch, exactly the target at end_epoch and after
    for t in range(0, start):
        assert rows[t]["density_W1"] == 1.0 and bool(masks[t][0].all())
    for t in range(end, 7):
        assert rows[t]["density_W1"] == _count(0.05, 15680) / 15680
    # nested: once pruned, an entry stays pruned
    for t in range(1, 7):
        for before, now in zip(masks[t - 1], masks[t], strict=True):
            assert not bool((now & ~before).any()), (method, t)


def test_random_gradual_pruning_draws_from_the_structure_stream(tmp_path):
    """The mask of pruning epoch t keeps the k largest of ``torch.rand`` seeded by
    ``derive_seed(seed, STRUCTURE, t)`` among the entries kept before (nested)."""
    cfg = _config(
        {"prune": {"density": {"W2": 0.2}, "method": "random", "gradual": {"end_epoch": 3}}},
        epochs=3,
        seed=7,
    )
    _, masks = _train_recording(cfg, tmp_path / "run", (W2,))
    for t in (1, 2, 3):
        gen = torch.Generator().manual_seed(derive_seed(7, STRUCTURE, t))
        u = torch.rand(20, 20, generator=gen).masked_fill(~masks[t - 1][0], float("-inf"))
        k = _count(_reference_density(0.2, t, 1, 3, 1), 400)
        want = torch.zeros(400, dtype=torch.bool)
        want[u.flatten().argsort(descending=True)[:k]] = True
        assert torch.equal(masks[t][0], want.reshape(20, 20)), t


def test_global_gradual_pruning_keeps_the_exact_total(tmp_path):
    cfg = _config(
        {
            "prune": {
                "density": 0.2,
                "layers": ["W1", "W2", "W3"],
                "scope": "global",
                "gradual": {"start_epoch": 1, "end_epoch": 3},
            }
        },
        epochs=4,
    )
    result, masks = _train_recording(cfg, tmp_path / "run", (W1, W2, W3))
    total = 15680 + 400 + 400
    for t in range(5):
        want = _count(_reference_density(0.2, t, 1, 3, 1), total)
        assert sum(int(m.sum()) for m in masks[t]) == want, t
        if t:
            assert all(not bool((a & ~b).any()) for a, b in zip(masks[t], masks[t - 1]))
    last = result.history[-1]
    assert len({last["density_W1"], last["density_W2"], last["density_W3"]}) > 1


# --------------------------------------------------------------------------- resume


def _resume_config(**overrides):
    structure = {"prune": {"density": {"W1": 0.05}, "gradual": {"end_epoch": 4}}}
    data = {"epochs": 4, "history": {"evaluate": False, "every_steps": 5}}
    return _config(structure, **{**data, **overrides})


def test_interrupted_gradual_run_resumes_to_the_same_weights_and_masks(tmp_path):
    cfg = _resume_config()
    full = train(cfg, tmp_path / "full", progress=False)
    stops = {
        "mid-epoch": lambda r: r["kind"] == "steps" and r["epoch"] == 2,
        "before a pruning epoch": lambda r: r["kind"] == "epoch" and r["epoch"] == 2,
    }
    for name, stop in stops.items():
        resumed = interrupt_then_resume(cfg, tmp_path / name.replace(" ", "-"), stop)
        assert resumed.resumed and same_weights(resumed.model, full.model), name
        assert [r["density_W1"] for r in resumed.history] == [r["density_W1"] for r in full.history]


@pytest.mark.slow
def test_sigkilled_gradual_run_resumes_to_the_same_weights_and_masks(tmp_path):
    cfg = _resume_config(
        name="gradual-kill", train_subset=1200, history={"evaluate": False, "every_steps": 8}
    )
    full = train(cfg, tmp_path / "full", progress=False)
    path, run = tmp_path / "gradual.yaml", tmp_path / "run"
    path.write_text(cfg.to_yaml())
    sigkill_train(path, run, rows=5)  # 3 rows per epoch: killed in epoch 2
    killed_at = read_history(run)[-1]["epoch"]
    resumed = train(cfg, run, resume=True, progress=False)
    assert killed_at < 4, "killed after the schedule ended"
    assert resumed.resumed and same_weights(resumed.model, full.model)
    assert torch.equal(_masks(resumed.model, W1)[0], _masks(full.model, W1)[0])
    assert [(r["step"], r["density_W1"]) for r in read_history(run)] == [
        (r["step"], r["density_W1"]) for r in full.history
    ]


# --------------------------------------------------------------------------- nested masks


def test_pruning_a_pruned_layer_keeps_a_subset_of_its_mask():
    """``prune`` ranks the effective weights among the kept entries only: a pruned entry
    whose stored value is now the largest of all still stays pruned."""
    for method in ("magnitude", "random"):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(30, 20))
        prune(model, {"0": 0.5}, method=method, seed=1)
        (before,) = _masks(model, "0")
        with torch.no_grad():
            model[0].parametrizations.weight.original[~before] = 1e3  # stale stored values
        prune(model, {"0": 0.2}, method=method, seed=2)
        (now,) = _masks(model, "0")
        assert int(now.sum()) == 120 and not bool((now & ~before).any()), method
        with pytest.raises(StructureError, match="keeps 120 entries already.*lower density"):
            prune(model, {"0": 0.5}, method=method)


def test_a_mask_off_the_schedule_is_detected():
    cfg = _config({"prune": {"density": {"W2": 0.3}, "gradual": {"end_epoch": 3}}})
    torch.manual_seed(0)
    model = create_model("fcnn")
    cfg.structure.apply(model, seed=0)
    cfg.structure.check_gradual(model, epoch=1)  # t_0: still dense
    with pytest.raises(StructureError, match="keeps 400 entries.*keeps 120"):
        cfg.structure.check_gradual(model, epoch=3)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("structure", "match"),
    [
        (
            {"prune": {"density": {"W1": 0.1}, "gradual": {"end_epoch": 8}}},
            r"gradual.end_epoch \(8\) exceeds epochs \(6\).*end_epoch <= 6, or epochs >= 8",
        ),
        (
            {"prune": {"density": {"W1": 0.1}, "gradual": {"start_epoch": 3, "end_epoch": 2}}},
            r"end_epoch \(2\) comes before start_epoch \(3\); set end_epoch >= start_epoch",
        ),
        (
            {"prune": {"density": {"W1": 0.1}, "gradual": {"end_epoch": 2, "every": 0}}},
            r"gradual.every: .*greater than or equal to 1",
        ),
        (
            {"prune": {"density": {"W1": 0.1}, "gradual": {"start_epoch": 0, "end_epoch": 2}}},
            r"gradual.start_epoch: .*greater than or equal to 1",
        ),
        (
            {
                "prune": {
                    "density": {"W1": 0.1},
                    "method": "scores",
                    "score_epochs": 2,
                    "gradual": {"end_epoch": 4},
                }
            },
            r"structure.prune: gradual .* method scores trains its own mask: drop gradual, or "
            r"use a method of magnitude, random",
        ),
        (
            {
                "prune": {"density": {"W1": 0.1}, "gradual": {"end_epoch": 4}},
                "factorize": {"rank": {"W1": 3}},
            },
            r"structure.prune.gradual: W1 is pruned and factorised .*without factorize, or "
            r"drop gradual",
        ),
        (
            {
                "prune": {"density": {"W1": 0.1}, "gradual": {"end_epoch": 4}},
                "budget": {"fraction": 0.1, "method": "prune"},
            },
            r"prune.gradual does not combine with budget.*drop budget",
        ),
    ],
)
def test_bad_gradual_configs_name_the_problem_and_the_fix(structure, match):
    with pytest.raises(ConfigError, match=match):
        _config(structure)


def test_gradual_pruning_refuses_starting_weights_pruned_already():
    model = create_model("fcnn")
    prune(model, {"W1": 0.5})
    structure = StructureConfig.model_validate(
        {"prune": {"density": {"W1": 0.1}, "gradual": {"end_epoch": 2}}}
    )
    with pytest.raises(StructureError, match="'W1' of the starting weights is structured"):
        structure.apply(model, seed=0)


# --------------------------------------------------------------------------- serialisation


def test_configs_without_gradual_serialise_as_before(tmp_path):
    plain = _config({"prune": {"density": {"W1": 0.1}}}).plain()
    assert plain["structure"] == {
        "prune": {"density": {"W1": 0.1}, "method": "magnitude", "scope": "layer"}
    }
    preset = load_preset("fcnn-exact-l1-1e-2")
    assert preset.plain()["structure"] == {
        "prune": {"density": {"W1": 0.1}, "method": "magnitude", "scope": "layer"}
    }
    assert "gradual" not in preset.to_yaml()
    assert "structure" not in tiny_fcnn().plain()
    # with gradual: written out in full and read back to an equal config
    cfg = _config({"prune": {"density": {"W1": 0.1}, "gradual": {"end_epoch": 4}}})
    written = cfg.plain()["structure"]["prune"]["gradual"]
    assert written == {"start_epoch": 1, "end_epoch": 4, "every": 1}
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg
