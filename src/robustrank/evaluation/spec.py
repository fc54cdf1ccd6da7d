"""The run-level evaluation: AutoAttack, robustness curves, diagnostics and the paper's
attacks with per-example outcomes, for one trained run (:class:`EvaluationSpec`,
:func:`evaluate_run`, :func:`cached_evaluation`).

After training, each run's final checkpoint is evaluated at the profile's eps (the paper's
0.05) on fixed seeded test subsets:

* the paper's attacks (the run's ``history.attacks`` with their history options: FGSM,
  PGD-20 with alpha 0.005, GNM-5; Section 5) with early stopping on ``paper_n`` inputs
  (the whole test set in the paper profile), when ``paper_n`` is set;
* the paper's PGD-20 and AutoAttack (Croce & Hein, 2020) on ``n`` inputs, so the
  tables can show both robust accuracies side by side;
* a robustness curve (FAB's minimal perturbations, one run), with PGD-20's and
  AutoAttack's successes at eps folded in (per-example worst case);
* the gradient-masking diagnostics of :mod:`robustrank.evaluation.diagnostics`.

Per-example outcomes (``"outcomes"``: clean-correct and fooled-by-each-attack bit masks,
hex-encoded by :func:`encode_mask`) let the claims compare two models input by input. The
subsets depend on the spec's ``seed`` only, never on the run's seed, and both are prefixes
of one seeded permutation of the test set (:func:`robustrank.data.eval_subset`), so the
``n`` inputs lie inside the ``paper_n`` inputs and every model of a profile, whatever its
seed, is evaluated on the same inputs. Seeded attacks (PGD's random start) take the run's
seed, so the seeds of a preset also differ in attack randomness.

Results are cached per run in its run directory (``OUT/runs/<run>/evaluation.json``, written
by :func:`robustrank.execution.run_task`), keyed by the settings and the checkpoint's
SHA-256, so a repeated reproduce only evaluates what changed. The reproduce profiles
(:mod:`robustrank.experiments.profiles`), the sweeps and the executors' tasks carry an
:class:`EvaluationSpec`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from torch import Tensor, nn

from .._io import atomic_write_text
from .._types import PositiveInt
from ..attacks import create_attack, get_attack
from ..data import eval_subset, load_dataset
from ..data.hashing import file_digest
from ..models import load_checkpoint
from .certification import get_certifier
from .curves import robustness_curve
from .diagnostics import diagnose
from .robustness import evaluate

if TYPE_CHECKING:  # for annotations only: importing robustrank.evaluation loads no training
    from ..training import TrainConfig

__all__ = [
    "AttackChoice",
    "EvaluationSpec",
    "CertificationSpec",
    "evaluate_run",
    "cached_evaluation",
    "cached_result",
    "encode_mask",
    "decode_mask",
    "paper_attacks_spec",
]

Budget = Annotated[float, Field(gt=0.0, le=1.0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AttackChoice(_Strict):
    """A registered attack and its options, both checked against the registry when the
    model is built (the base of a sweep's objective and a multi-fidelity signal)."""

    attack: str
    options: dict[str, Any] = Field(default_factory=dict, description="options of the attack")

    @field_validator("attack")
    @classmethod
    def _registered(cls, name: str) -> str:
        return get_attack(name).name  # raises naming the registered attacks

    @field_validator("options")
    @classmethod
    def _accepted(cls, options: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if "attack" in info.data:
            get_attack(info.data["attack"]).check_options(options)
        return options


class CurveSpec(_Strict):
    """The robustness curve: a minimal-perturbation attack over an eps grid."""

    attack: str = "fab"
    eps: list[Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        default=[0.0, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3], min_length=2
    )
    options: dict[str, Any] = Field(default_factory=dict, description="options of the attack")


class DiagnosticsSpec(_Strict):
    """Settings of :func:`robustrank.evaluation.diagnose` (its ``n`` test inputs)."""

    n: PositiveInt = 200
    steps: PositiveInt = 100
    n_queries: PositiveInt = 1000
    large_eps: Budget = 0.5


class CertificationSpec(_Strict):
    """Certified accuracy of every run (:mod:`robustrank.evaluation.certified_runs`): each
    certifier of ``methods`` at each eps of ``eps``, on ``n`` of the strong subset's inputs
    (a seeded subset of them; all of them when None)."""

    methods: list[str] = Field(default=["ibp", "crown"], min_length=1)
    eps: list[Annotated[float, Field(gt=0.0, le=1.0)]] = Field(
        default=[0.005, 0.01, 0.02, 0.05], min_length=1
    )
    n: PositiveInt | None = Field(None, description="inputs (of the strong subset) to certify")
    options: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="keyword options by method, e.g. crown: {...}"
    )

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, names: list[str]) -> list[str]:
        canonical = [get_certifier(n).name for n in names]  # raises naming the certifiers
        if len(set(canonical)) != len(canonical):
            raise ValueError(f"methods lists a certifier twice: {names}; name each once")
        return canonical

    @field_validator("eps")
    @classmethod
    def _ascending(cls, eps: list[float]) -> list[float]:
        if any(b <= a for a, b in zip(eps, eps[1:])):
            raise ValueError(f"eps must be strictly ascending, got {eps}; sort it, once each")
        return eps

    @field_validator("options")
    @classmethod
    def _known_options(cls, options: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        out = {}
        for name, kw in options.items():
            spec = get_certifier(name)
            spec.check_options(kw)
            out[spec.name] = kw
        return out

    @model_validator(mode="after")
    def _options_of_listed_methods(self) -> CertificationSpec:
        unused = sorted(set(self.options) - set(self.methods))
        if unused:
            raise ValueError(
                f"options are given for {unused}, which methods does not list "
                f"({self.methods}); add them to methods or drop their options"
            )
        return self


class EvaluationSpec(_Strict):
    """The ``evaluation:`` entry of a reproduce profile."""

    eps: Budget = 0.05
    n: PositiveInt = Field(1000, description="test inputs for PGD-20, the attack and the curve")
    paper_n: PositiveInt | None = Field(
        None,
        description="test inputs for the paper's attacks (history.attacks, early stop), "
        "capped at the test set; None skips them",
    )
    seed: int = Field(1, description="seed of the test subsets")
    attack: str = Field("autoattack", description="the strong attack, by registered name")
    options: dict[str, Any] = Field(default_factory=dict, description="options of the attack")
    curve: CurveSpec | None = Field(default_factory=CurveSpec)
    diagnostics: DiagnosticsSpec | None = Field(default_factory=DiagnosticsSpec)
    certification: CertificationSpec | None = Field(
        None, description="certified accuracy of every run (cached apart from the attacks)"
    )

    @field_validator("attack")
    @classmethod
    def _known_attack(cls, name: str) -> str:
        name = get_attack(name).name  # raises naming the registered attacks
        if name == "pgd":
            raise ValueError(
                "the strong attack cannot be 'pgd': PGD-20 is always evaluated beside it "
                "(ra_pgd); choose a stronger one, e.g. 'autoattack' or 'apgd-ce'"
            )
        return name


def encode_mask(mask: Tensor | np.ndarray) -> str:
    """A bool mask as hex: bit ``i`` of the packed bytes (little bit order) is ``mask[i]``.

    10000 inputs take 2500 characters; :func:`decode_mask` inverts it given the length.
    """
    bits = np.asarray(mask.cpu() if isinstance(mask, Tensor) else mask, dtype=bool).ravel()
    return np.packbits(bits, bitorder="little").tobytes().hex()


def decode_mask(text: str, n: int) -> np.ndarray:
    """The ``n``-long bool mask that :func:`encode_mask` wrote as ``text``."""
    raw = np.frombuffer(bytes.fromhex(text), dtype=np.uint8)
    if raw.size != (n + 7) // 8:
        raise ValueError(
            f"a mask of {n} inputs needs {(n + 7) // 8} bytes, got {raw.size}: the evaluation "
            "file is damaged or from another subset size; delete evaluation.json to re-evaluate"
        )
    return np.unpackbits(raw, count=n, bitorder="little").astype(bool)


def paper_attacks_spec(config: TrainConfig, spec: EvaluationSpec) -> dict[str, Any]:
    """What the paper-attack evaluation of ``config`` depends on besides the checkpoint:
    the attacks with their complete history options, eps, the attack seed (the run's
    seed) and the batch size (seeded random starts are drawn batch by batch)."""
    h = config.history
    return {
        "attacks": {name: h.attack_options.get(name, {}) for name in h.attacks},
        "eps": spec.eps,
        "attack_seed": config.seed,
        "batch_size": h.eval_batch_size,
    }


def _cache_key(spec: EvaluationSpec, checkpoint: Path, config: TrainConfig) -> str:
    dump = spec.model_dump()
    if dump["paper_n"] is None:  # keys written before paper_n existed stay valid
        del dump["paper_n"]
    del dump["certification"]  # cached on its own (certified_runs): adding it re-attacks nothing
    key: dict[str, Any] = {"spec": dump, "checkpoint": file_digest(checkpoint)}
    if spec.paper_n is not None:
        key["paper_attacks"] = paper_attacks_spec(config, spec)
    return json.dumps(key)


def _outcomes(n: int, seed: int, results: dict[str, Any]) -> dict[str, Any]:
    """The per-example outcomes of one subset: clean-correct and fooled masks (hex). Every
    evaluation made its own clean pass; their correct masks must agree."""
    correct = next(iter(results.values())).correct
    for name, res in results.items():
        if not torch.equal(res.correct, correct):
            raise RuntimeError(
                f"the clean pass of {name} found {res.n_correct} correctly classified inputs, "
                f"the first attack's {int(correct.sum())} (or other ones): the model is not "
                "deterministic in eval mode"
            )
    return {
        "n": n,
        "seed": seed,
        "correct": encode_mask(correct),
        "fooled": {name: encode_mask(res.fooled) for name, res in results.items()},
    }


def _paper_attacks(
    config: TrainConfig, model: nn.Module, spec: EvaluationSpec, x_all: Tensor, y_all: Tensor
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The paper's attacks as the history measures them (:func:`history_attack`, so the
    same options), at ``spec.eps`` with the run's seed, early stop, on ``paper_n`` inputs.

    Returns ``(results by attack, outcomes)``.
    """
    from ..training.measurements import history_attack

    assert spec.paper_n is not None
    n = min(spec.paper_n, len(x_all))
    x, y = eval_subset(x_all, y_all, n, seed=spec.seed)
    x, y = x.to(config.device), y.to(config.device)
    h = config.history.model_copy(update={"eps": spec.eps, "eval_seed": config.seed})
    bs = h.eval_batch_size
    results = {
        name: evaluate(model, history_attack(h, name, model), x, y, batch_size=bs, early_stop=True)
        for name in h.attacks
    }
    outcomes = _outcomes(n, spec.seed, results)
    return {name: r.to_dict() for name, r in results.items()}, outcomes


def _curve(model: nn.Module, x: Tensor, y: Tensor, spec: EvaluationSpec, folds: dict) -> dict:
    """The FAB robustness curve with PGD-20's and the strong attack's successes folded in."""
    assert spec.curve is not None
    t0 = time.perf_counter()
    curve = robustness_curve(
        model, x, y, spec.curve.eps, spec.curve.attack, checks=False, **spec.curve.options
    )
    curve.seconds = time.perf_counter() - t0
    for name, res in folds.items():
        curve.fold(name, spec.eps, res.fooled)
    return curve.to_dict()


def evaluate_run(
    config: TrainConfig, checkpoint: Path, spec: EvaluationSpec, *, trust_code: bool = False
) -> dict[str, Any]:
    """The paper's attacks, PGD-20 and the strong attack at eps, the curve and the
    diagnostics of one checkpoint (``trust_code``: rebuild a model named by import path).

    Keys: ``"pgd"`` and ``spec.attack`` (each an ``EvalResult.to_dict()``);
    ``"outcomes"``: ``{"strong": ..., "paper": ...}``, each ``{"n", "seed", "correct",
    "fooled": {attack: mask}}`` (hex masks, :func:`decode_mask`); ``"paper_attacks"``
    (``EvalResult.to_dict()`` by attack) when ``spec.paper_n`` is set; ``"curve"`` and
    ``"diagnostics"`` when the spec asks for them.
    """
    model, _ = load_checkpoint(checkpoint, config.device, trust_code=trust_code)
    x_all, y_all = load_dataset(config.dataset, "test")
    out: dict[str, Any] = {"outcomes": {}}
    if spec.paper_n is not None:
        out["paper_attacks"], out["outcomes"]["paper"] = _paper_attacks(
            config, model, spec, x_all, y_all
        )
    x, y = eval_subset(x_all, y_all, spec.n, seed=spec.seed)
    x, y = x.to(config.device), y.to(config.device)
    pgd = evaluate(model, create_attack("pgd", model, spec.eps, seed=0), x, y, early_stop=True)
    strong = create_attack(spec.attack, model, spec.eps, **spec.options)
    auto = evaluate(model, strong, x, y, early_stop=True, checks=False)
    out["pgd"], out[spec.attack] = pgd.to_dict(), auto.to_dict()
    folds = {"pgd": pgd, spec.attack: auto}
    out["outcomes"]["strong"] = _outcomes(spec.n, spec.seed, folds)
    if spec.curve is not None:
        out["curve"] = _curve(model, x, y, spec, folds)
    if spec.diagnostics is not None:
        d = spec.diagnostics
        xd, yd = x[: d.n], y[: d.n]
        # certifier=None: the certified check is not part of the cached, keyed settings
        report = diagnose(
            model,
            xd,
            yd,
            spec.eps,
            steps=d.steps,
            n_queries=d.n_queries,
            large_eps=d.large_eps,
            certifier=None,
        )
        out["diagnostics"] = report.to_dict()
    return out


def cached_evaluation(
    config: TrainConfig,
    checkpoint: Path,
    spec: EvaluationSpec,
    cache: Path,
    *,
    trust_code: bool = False,
) -> dict[str, Any]:
    """:func:`evaluate_run`, cached in ``cache`` under the spec, the paper attacks' settings
    and the checkpoint's SHA-256 (written atomically, with its time in ``"seconds"``);
    ``trust_code`` as in :func:`evaluate_run`."""
    key = _cache_key(spec, checkpoint, config)
    return cached_result(
        cache, key, lambda: evaluate_run(config, checkpoint, spec, trust_code=trust_code)
    )


def cached_result(cache: Path, key: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The result saved in ``cache`` under ``key``, else ``compute()`` with its time in
    ``"seconds"``, saved atomically as ``{"key", "result"}`` (evaluation and certification
    caches of a run directory)."""
    if cache.exists():
        saved = json.loads(cache.read_text("utf-8"))
        if saved.get("key") == key:
            return saved["result"]
    t0 = time.perf_counter()
    result = compute()
    result["seconds"] = time.perf_counter() - t0
    atomic_write_text(cache, json.dumps({"key": key, "result": result}, indent=2) + "\n")
    return result
