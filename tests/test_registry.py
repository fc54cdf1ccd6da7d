"""One registry pattern for every axis: the generic :class:`Registry` contract, and each axis
(models, datasets, attacks, executors, sweep strategies, optimizers, schedules) listing its
built-ins, suggesting close names, and registering where its entries are defined."""

from __future__ import annotations

import ast
import inspect
from enum import StrEnum
from pathlib import Path

import pytest
from typer.testing import CliRunner

import robustrank
from robustrank.attacks import get_attack, list_attacks
from robustrank.cli import app
from robustrank.data import get_dataset, list_datasets
from robustrank.execution import ExecutorName, get_executor, list_executors
from robustrank.models import get_model, get_model_entry, list_models
from robustrank.registry import (
    NameTakenError,
    Registry,
    UnknownNameError,
    check_keyword_options,
    format_options,
    keyword_options,
    summary_line,
)
from robustrank.sweeps import StrategyName, get_strategy, list_strategies
from robustrank.training import get_optimizer, get_schedule, list_optimizers, list_schedules

SRC = Path(robustrank.__file__).parent

# --------------------------------------------------------------------------- the contract


def test_register_get_and_list_keep_registration_order():
    reg: Registry[int] = Registry("colour")
    assert reg.register("red", 1) == 1
    reg.register("blue", 2)
    assert reg.get("red") == 1 and reg.get("blue") == 2
    assert reg.names() == reg.list() == list(reg) == ["red", "blue"]
    assert reg.items() == [("red", 1), ("blue", 2)]
    assert "red" in reg and "green" not in reg and 3 not in reg and len(reg) == 2


def test_decorator_form_registers_and_returns_the_object_unchanged():
    reg: Registry[object] = Registry("hook")

    @reg.register("shout")
    def shout(text: str) -> str:
        return text.upper()

    assert reg.get("shout") is shout and shout("a") == "A"


def test_build_turns_the_registered_object_into_the_stored_entry():
    reg: Registry[tuple] = Registry("thing")

    @reg.register("pair", build=lambda f: ("entry", f))
    def pair() -> None: ...

    assert reg.get("pair") == ("entry", pair) and callable(pair)
    assert reg.register("other", 5, build=lambda v: v * 2) == 5 and reg.get("other") == 10


def test_no_silent_overwrite():
    reg: Registry[int] = Registry("colour")
    reg.register("red", 1)
    reg.register("blue", 2)
    with pytest.raises(NameTakenError, match="colour 'red' is already registered.*overwrite=True"):
        reg.register("red", 3)
    assert reg.get("red") == 1
    reg.register("red", 3, overwrite=True)
    assert reg.get("red") == 3 and reg.names() == ["red", "blue"]  # replaced in place
    assert issubclass(NameTakenError, ValueError)


def test_unknown_name_suggests_the_closest_and_lists_the_choices():
    reg: Registry[int] = Registry("colour", hint="add one with register_colour")
    for i, name in enumerate(["red", "green", "blue"]):
        reg.register(name, i)
    with pytest.raises(UnknownNameError) as err:
        reg.get("gren")
    assert str(err.value) == (
        "unknown colour 'gren'; did you mean 'green'? choose one of: red, green, blue; "
        "add one with register_colour"
    )
    assert err.value.suggestion == "green" and err.value.choices == ["red", "green", "blue"]
    assert isinstance(err.value, ValueError)
    with pytest.raises(UnknownNameError, match="^unknown colour 'xyz'; choose one of: red, "):
        reg.get("xyz")
    with pytest.raises(UnknownNameError, match=r"unknown colour \['red'\]"):
        reg.get(["red"])  # unhashable: still just unknown


def test_normalise_hook_applies_to_register_get_and_contains():
    reg: Registry[int] = Registry("attack", normalise=lambda n: n.strip().lower())
    reg.register("  PGD ", 1)
    assert reg.names() == ["pgd"] and reg.get("Pgd") == 1 and " pgd" in reg
    with pytest.raises(NameTakenError):
        reg.register("pgd", 2)
    with pytest.raises(AttributeError):  # a normaliser may refuse non-strings
        reg.get(3)


def test_names_are_required_and_non_empty():
    reg: Registry[int] = Registry("model")
    with pytest.raises(TypeError, match="needs a name first"):
        reg.register(lambda: None)  # a bare @register
    with pytest.raises(ValueError, match="must not be empty"):
        reg.register("  ", 1)


def test_remove_copy_temporary_and_choices():
    reg: Registry[int] = Registry("executor")
    reg.register("local", 1)
    copy = reg.copy()
    copy.register("ray", 2)
    assert reg.names() == ["local"] and copy.names() == ["local", "ray"]
    with reg.temporary():
        reg.register("dask", 3)
        assert "dask" in reg
    assert reg.names() == ["local"]
    assert copy.remove("ray") == 2 and copy.names() == ["local"]
    with pytest.raises(UnknownNameError):
        copy.remove("ray")
    enum = copy.choices("ExecutorName")
    assert issubclass(enum, StrEnum) and [e.value for e in enum] == ["local"]
    assert enum("local") == "local"


def test_helpers_read_docstrings_and_signatures():
    class Base:
        """Base line."""

    class Child(Base):
        pass

    def fn(lr, epoch, epochs, *, warmup: int = 1, decay, **kw):
        """First line.

        More."""

    assert summary_line(fn) == "First line." and summary_line(Child) == ""
    assert summary_line(Base) == "Base line."
    options = keyword_options(fn, skip=3)
    assert list(options) == ["warmup", "decay"] and options["decay"] is inspect.Parameter.empty
    assert format_options(options) == "warmup=1, decay"
    check_keyword_options("schedule 'x'", {"warmup": 2}, options)
    with pytest.raises(ValueError, match="did you mean 'warmup'.*accepted options: warmup, decay"):
        check_keyword_options("schedule 'x'", {"warmp": 2}, options)


def test_the_generic_registry_imports_nothing_from_robustrank():
    tree = ast.parse((SRC / "registry.py").read_text())
    imported = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert all(n.level == 0 and not (n.module or "").startswith("robustrank") for n in imported)


# --------------------------------------------------------------------------- every axis

BUILTINS = {
    "model": (list_models, get_model, {"fcnn", "cnn"}),
    "dataset": (list_datasets, get_dataset, ["mnist", "fashion-mnist", "cifar10", "npz"]),
    "attack": (
        list_attacks,
        get_attack,
        ["fgsm", "pgd", "gnm", "apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square"]
        + ["autoattack"],
    ),
    "executor": (lambda: list(list_executors()), get_executor, ["local", "processes", "ray"]),
    "strategy": (
        lambda: list(list_strategies()),
        get_strategy,
        ["grid", "random", "halving", "optuna"],
    ),
    "optimizer": (list_optimizers, get_optimizer, ["sgd", "adam", "adamw", "rmsprop"]),
    "schedule": (list_schedules, get_schedule, ["constant", "cosine", "step", "linear-warmup"]),
}

TYPOS = {
    "model": ("fcn", "fcnn"),
    "dataset": ("mnst", "mnist"),
    "attack": ("pgdd", "pgd"),
    "executor": ("locl", "local"),
    "strategy": ("gird", "grid"),
    "optimizer": ("adan", "adam"),
    "schedule": ("cosin", "cosine"),
}


@pytest.mark.parametrize("axis", list(BUILTINS))
def test_every_axis_lists_its_builtins(axis):
    names, get, expected = BUILTINS[axis]
    listed = names()
    if isinstance(expected, set):
        assert expected <= set(listed)
    else:
        assert listed[: len(expected)] == expected
    for name in listed:
        get(name)  # the getter of every axis has the same shape: get_<axis>(name)


@pytest.mark.parametrize("axis", list(TYPOS))
def test_every_axis_suggests_a_close_name(axis):
    typo, meant = TYPOS[axis]
    with pytest.raises(UnknownNameError, match=f"unknown {axis} '{typo}'; did you mean '{meant}'"):
        BUILTINS[axis][1](typo)


def test_old_getter_names_and_enums_still_work():
    assert get_model_entry is get_model
    assert [e.value for e in ExecutorName] == ["local", "processes", "ray"]
    assert [e.value for e in StrategyName] == ["grid", "random", "halving", "optuna"]


AXIS_REGISTRIES = [
    "models/registry.py",
    "data/registry.py",
    "attacks/registry.py",
    "execution/registry.py",
    "sweeps/registry.py",
]


@pytest.mark.parametrize("path", AXIS_REGISTRIES)
def test_axis_registries_are_leaves(path):
    """An axis registry imports no concrete entry (they import it and register)."""
    tree = ast.parse((SRC / path).read_text())
    relative = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level}
    assert relative <= {"registry", "base", "_modes", "spec"}, relative


def test_autoattack_and_the_attack_registry_import_in_one_direction():
    registry = (SRC / "attacks" / "registry.py").read_text()
    assert "autoattack" not in {
        n.module for n in ast.walk(ast.parse(registry)) if isinstance(n, ast.ImportFrom)
    }
    assert get_attack("autoattack").cls.__module__ == "robustrank.attacks.autoattack"
    assert get_attack("pgd").cls.__module__ == "robustrank.attacks.pgd"


# --------------------------------------------------------------------------- listings


@pytest.mark.parametrize(
    ("command", "names"),
    [
        ("optimizers", BUILTINS["optimizer"][2]),
        ("schedules", BUILTINS["schedule"][2]),
        ("models", ["fcnn", "cnn"]),
        ("attacks", BUILTINS["attack"][2]),
    ],
)
def test_listing_commands_show_every_registered_name(command, names):
    result = CliRunner().invoke(app, [command])
    assert result.exit_code == 0, result.output
    lines = [line.split()[0] for line in result.output.splitlines() if not line.startswith(" ")]
    assert set(names) <= set(lines)


def test_executor_help_derives_from_the_registry():
    """Each executor's whole description, verbatim: help is plain text, so that
    "pip install 'robustrank[ray]'" is not eaten as a markup tag."""
    result = CliRunner().invoke(app, ["reproduce", "--help"], terminal_width=200)
    text = " ".join(result.output.replace("\u2502", " ").split())  # the box's side bars
    for name, description in list_executors().items():
        assert f"{name}: {' '.join(description.split())}" in text
    assert "'robustrank[ray]'" in text
