"""Optimizers and learning-rate schedules chosen in the training config, and exact resume
with every optimizer (an Adam run SIGKILLed mid-run resumes to identical weights)."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

from robustrank.training import (
    ConfigError,
    config_from_dict,
    create_optimizer,
    list_optimizers,
    load_config,
    load_preset,
    lr_at_epoch,
    read_history,
    register_schedule,
    train,
)
from robustrank.training import schedules as schedule_module
from runs import interrupt_then_resume, same_weights, sigkill_train, tiny_fcnn


def config(**overrides):
    """A tiny FCNN run on 600 MNIST images (12 batches per epoch), no evaluation."""
    return tiny_fcnn(**{"name": "tiny-opt", **overrides})


# --------------------------------------------------------------------------- schedules


def test_schedules_follow_their_closed_forms():
    lr, n = 0.1, 9
    forms = {
        "constant": ({}, lambda e: lr),
        "cosine": ({}, lambda e: lr * (1 + math.cos(math.pi * (e - 1) / n)) / 2),
        "step": ({"lr_step_epochs": 3, "lr_gamma": 0.5}, lambda e: lr * 0.5 ** ((e - 1) // 3)),
        "linear-warmup": (
            {"schedule": {"name": "linear-warmup", "warmup_epochs": 2}},
            lambda e: lr * e / 3 if e <= 2 else lr,
        ),
    }
    for name, (extra, form) in forms.items():
        cfg = config(lr=lr, epochs=n, **{"schedule": name, **extra})
        assert [lr_at_epoch(cfg, e) for e in range(1, n + 1)] == pytest.approx(
            [form(e) for e in range(1, n + 1)], rel=1e-12
        ), name
    warm = config(
        lr=lr, epochs=n, schedule={"name": "linear-warmup", "warmup_epochs": 3, "decay": "cosine"}
    )
    rates = [lr_at_epoch(warm, e) for e in range(1, n + 1)]
    expected = [lr * e / 4 for e in (1, 2, 3)]
    expected += [lr * (1 + math.cos(math.pi * k / 6)) / 2 for k in range(6)]
    assert rates == pytest.approx(expected, rel=1e-12)


def test_schedules_that_depend_on_the_run_length_are_recognised():
    get = schedule_module.get_schedule
    step = {"lr_step_epochs": 2, "lr_gamma": 0.5}
    assert get("cosine").depends_on_epochs(0.1, 2, {})
    assert not any(
        get(n).depends_on_epochs(0.1, 5, o) for n, o in [("constant", {}), ("step", step)]
    )
    assert not get("linear-warmup").depends_on_epochs(0.1, 5, {"warmup_epochs": 2})
    assert get("linear-warmup").depends_on_epochs(0.1, 5, {"decay": "cosine"})


def test_schedule_config_keeps_the_string_form_and_round_trips():
    plain = config(schedule="cosine").plain()
    assert plain["schedule"] == "cosine" and "optimizer" not in plain
    assert config(schedule={"name": "cosine"}).plain()["schedule"] == "cosine"
    warm = config(schedule={"name": "linear-warmup", "warmup_epochs": 2})
    assert warm.plain()["schedule"] == {"name": "linear-warmup", "warmup_epochs": 2}
    assert config_from_dict(warm.plain()).plain() == warm.plain()
    assert warm.schedule.name == "linear-warmup" and warm.schedule.options == {"warmup_epochs": 2}


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("cosin", r"schedule.name: unknown schedule 'cosin'; did you mean 'cosine'"),
        ({"name": "linear-warmup", "warmup": 2}, r"takes no option 'warmup'.*warmup_epochs, decay"),
        ({"name": "linear-warmup", "warmup_epochs": 0}, r"warmup_epochs must be an integer >= 1"),
        ({"name": "linear-warmup", "decay": "exp"}, r"decay must be 'constant' or 'cosine'"),
        ({"name": "step", "lr_gamma": 0.5}, r"set lr_gamma at the top level"),
    ],
)
def test_bad_schedules_are_refused_naming_the_fix(schedule, message):
    with pytest.raises(ConfigError, match=message):
        config(schedule=schedule)


def test_a_registered_schedule_is_usable_in_configs():
    with schedule_module.REGISTRY.temporary():

        @register_schedule("halving")
        def halving(lr: float, epoch: int, epochs: int, *, factor: float = 0.5) -> float:
            """Times ``factor`` every epoch."""
            return lr * factor ** (epoch - 1)

        cfg = config(epochs=3, schedule={"name": "halving", "factor": 0.25})
        assert [lr_at_epoch(cfg, e) for e in (1, 2, 3)] == pytest.approx([0.01, 0.0025, 0.000625])
        assert (
            schedule_module.get_schedule("halving").description == "Times ``factor`` every epoch."
        )
    with pytest.raises(ConfigError, match="unknown schedule 'halving'"):
        config(schedule="halving")


# --------------------------------------------------------------------------- optimizers

TORCH = {
    "sgd": (torch.optim.SGD, {"momentum": 0.9}, {"momentum": 0.9, "weight_decay": 0.0}),
    "adam": (
        torch.optim.Adam,
        {"optimizer": {"name": "adam", "betas": [0.8, 0.99]}, "weight_decay": 0.01},
        {"betas": (0.8, 0.99), "weight_decay": 0.01},
    ),
    "adamw": (
        torch.optim.AdamW,
        {"optimizer": {"name": "adamw", "amsgrad": True, "weight_decay": 0.05}},
        {"amsgrad": True, "weight_decay": 0.05},
    ),
    "rmsprop": (
        torch.optim.RMSprop,
        {"optimizer": {"name": "rmsprop", "centered": True}, "momentum": 0.5},
        {"centered": True, "momentum": 0.5, "weight_decay": 0.0},
    ),
}


@pytest.mark.parametrize("name", list(TORCH))
def test_each_optimizer_steps_exactly_like_torch_optim(name):
    cls, overrides, torch_options = TORCH[name]
    overrides = {"optimizer": name, **overrides}
    cfg = config(**overrides)
    assert cfg.optimizer.name == name
    g = torch.Generator().manual_seed(0)
    target = torch.randn(5, generator=g)
    weights = [torch.randn(5, generator=g, requires_grad=True) for _ in range(2)]
    ours = create_optimizer(cfg.optimizer.name, [weights[0]], cfg.lr, **cfg.optimizer_options())
    theirs = cls([weights[1]], lr=cfg.lr, **torch_options)
    assert type(ours) is cls
    with torch.no_grad():
        weights[1].copy_(weights[0])
    for _ in range(7):
        for w, opt in zip(weights, (ours, theirs)):
            opt.zero_grad()
            ((w - target) ** 4).sum().backward()
            opt.step()
    assert torch.equal(weights[0], weights[1])


def test_the_default_is_todays_plain_sgd_and_stays_out_of_configs():
    preset = load_preset("fcnn-natural")
    assert preset.optimizer.name == "sgd" and preset.optimizer.is_default
    assert preset.optimizer_options() == {"momentum": 0.0, "weight_decay": 0.0}
    assert "optimizer" not in preset.plain() and "optimizer" not in preset.to_yaml()
    assert "optimizer" not in preset.model_dump()
    explicit = config_from_dict({**preset.plain(), "optimizer": {"name": "sgd"}})
    assert explicit.plain() == preset.plain()


def test_optimizer_config_round_trips_through_yaml(tmp_path):
    cfg = config(optimizer={"name": "Adam", "betas": [0.9, 0.99], "amsgrad": True})
    plain = cfg.plain()
    assert plain["optimizer"] == {"name": "adam", "betas": [0.9, 0.99], "amsgrad": True}
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path).plain() == plain
    assert yaml.safe_load(path.read_text())["optimizer"]["name"] == "adam"
    assert config(optimizer="rmsprop").optimizer.options == {}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"optimizer": "adan"}, r"optimizer.name: unknown optimizer 'adan'; did you mean 'adam'"),
        (
            {"optimizer": {"name": "adam", "beta": [0.9, 0.99]}},
            r"takes no option 'beta' \(did you mean 'betas'\?\); accepted options: betas, eps",
        ),
        ({"optimizer": {"name": "adam", "lr": 0.1}}, r"set lr beside optimizer"),
        ({"optimizer": "adam", "momentum": 0.9}, r"adam takes no momentum.*\(sgd, rmsprop\)"),
        (
            {"optimizer": {"name": "sgd", "weight_decay": 0.1}, "weight_decay": 0.2},
            r"weight_decay is set twice",
        ),
        ({"optimizer": {"name": "adam", "betas": [1.5, 0.9]}}, r"optimizer: Invalid beta"),
    ],
)
def test_bad_optimizers_are_refused_naming_the_valid_choices(overrides, message):
    with pytest.raises(ConfigError, match=message):
        config(**overrides)


# --------------------------------------------------------------------------- resume


RESUME_OPTIONS = {
    "sgd": {"momentum": 0.9},
    "adam": {"optimizer": {"name": "adam", "amsgrad": True}, "weight_decay": 1e-3},
    "adamw": {"optimizer": "adamw"},
    "rmsprop": {"optimizer": {"name": "rmsprop", "centered": True}, "momentum": 0.5},
}


@pytest.mark.parametrize("name", list(RESUME_OPTIONS))
def test_every_optimizer_resumes_to_identical_weights(tmp_path, name):
    history = {"evaluate": False, "every_steps": 4}
    cfg = config(train_subset=300, history=history, **RESUME_OPTIONS[name])  # 6 batches/epoch
    full = train(cfg, tmp_path / "full", progress=False)
    resumed = interrupt_then_resume(
        cfg, tmp_path / "run", lambda r: r["kind"] == "steps" and r["step"] == 8
    )  # mid-epoch 2
    assert resumed.resumed and same_weights(resumed.model, full.model)


def test_list_optimizers_has_the_builtins_first():
    assert list_optimizers()[:4] == ["sgd", "adam", "adamw", "rmsprop"]


@pytest.mark.slow
def test_sigkilled_adam_run_resumes_to_identical_weights(tmp_path):
    cfg = config(
        name="adam-kill",
        train_subset=3000,
        epochs=3,
        optimizer={"name": "adam", "betas": [0.9, 0.99]},
        lr=0.001,
        history={"evaluate": False, "every_steps": 10},
    )
    full = train(cfg, tmp_path / "full", progress=False)
    path, run = tmp_path / "adam.yaml", tmp_path / "run"
    path.write_text(cfg.to_yaml())
    sigkill_train(path, run, rows=3)
    resumed = train(cfg, run, resume=True, progress=False)
    assert resumed.resumed and same_weights(resumed.model, full.model)
    assert [r["step"] for r in read_history(run)] == [r["step"] for r in full.history]
