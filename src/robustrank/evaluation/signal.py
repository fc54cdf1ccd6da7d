"""The cheap robustness signal of a multi-fidelity sweep (:class:`SignalSpec`,
:func:`measure_signal`, :func:`stored_signal`, :func:`save_signal`).

A multi-fidelity sweep (:mod:`robustrank.sweeps.fidelity`) pauses every trial at its rungs
(epochs) and judges it by a signal far cheaper than the final evaluation: the clean
accuracy on the test set (or ``clean_n`` seeded inputs) and the robust accuracy under one
attack (APGD-CE by default, Croce & Hein, 2020) on ``n`` seeded test inputs at ``eps``.
The inputs are a prefix of the same seeded permutation the final evaluation draws from
(:func:`robustrank.data.eval_subset`), so with equal seeds they are among its inputs.

Each rung's signal is cached in the run directory (``signal-epoch-<k>.json``) under its
settings, so a resumed sweep re-judges a trial from the stored signal even after the run
has trained past that epoch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from torch import nn

from .._io import atomic_write_text
from .._types import Budget, PositiveInt
from ..attacks import create_attack
from ..data import eval_subset, load_dataset
from .robustness import accuracy, evaluate
from .spec import AttackChoice

__all__ = ["SignalSpec", "measure_signal", "stored_signal", "save_signal", "SIGNAL_FILE"]

#: A rung's cached signal in the run directory (``.format(epoch=k)``).
SIGNAL_FILE = "signal-epoch-{epoch}.json"


class SignalSpec(AttackChoice):
    """What a rung measures: clean accuracy and the robust accuracy of ``attack`` at
    ``eps`` on ``n`` seeded test inputs (``options`` go to the attack)."""

    attack: str = Field("apgd-ce", description="a registered attack (robustrank attacks)")
    eps: Budget = 0.05
    n: PositiveInt = Field(200, description="test inputs attacked")
    seed: int = Field(1, description="seed of the test subsets")
    clean_n: PositiveInt | None = Field(
        None, description="test inputs for the clean accuracy; None: the whole test set"
    )


def measure_signal(model: nn.Module, dataset: Any, device: str, spec: SignalSpec) -> dict[str, Any]:
    """``{"clean_acc", "robust_acc", "n", "attack", "eps"}`` of ``model`` on ``dataset``'s
    test split: clean accuracy on the whole test set (or ``clean_n`` seeded inputs) and
    robust accuracy under the signal's attack on ``n`` seeded inputs (misclassified inputs
    count as broken, early stop)."""
    x_all, y_all = load_dataset(dataset, "test")
    if spec.clean_n is None:
        xc, yc = x_all, y_all
    else:
        xc, yc = eval_subset(x_all, y_all, min(spec.clean_n, len(x_all)), seed=spec.seed)
    n = min(spec.n, len(x_all))
    x, y = eval_subset(x_all, y_all, n, seed=spec.seed)
    dev = torch.device(device)
    attack = create_attack(spec.attack, model, spec.eps, **spec.options)
    result = evaluate(model, attack, x.to(dev), y.to(dev), early_stop=True, checks=False)
    return {
        "clean_acc": accuracy(model, xc.to(dev), yc.to(dev)),
        "robust_acc": result.robust_accuracy,
        "n": n,
        "attack": spec.attack,
        "eps": spec.eps,
    }


def _signal_key(epoch: int, spec: SignalSpec) -> str:
    return json.dumps({"signal": spec.model_dump(mode="json"), "epoch": epoch}, sort_keys=True)


def stored_signal(run_dir: Path, epoch: int, spec: SignalSpec) -> dict[str, Any] | None:
    """The signal of epoch ``epoch`` that ``run_dir`` holds under ``spec``, else None."""
    cache = run_dir / SIGNAL_FILE.format(epoch=epoch)
    if not cache.exists():
        return None
    saved = json.loads(cache.read_text("utf-8"))
    return saved["result"] if saved.get("key") == _signal_key(epoch, spec) else None


def save_signal(run_dir: Path, epoch: int, spec: SignalSpec, signal: dict[str, Any]) -> None:
    """Store ``signal`` as epoch ``epoch``'s under ``spec`` in ``run_dir``, atomically."""
    cache = run_dir / SIGNAL_FILE.format(epoch=epoch)
    text = json.dumps({"key": _signal_key(epoch, spec), "result": signal}, indent=2) + "\n"
    atomic_write_text(cache, text)
