"""Reproduce profiles (Section 5, Appendix A): which presets a reproduction trains, how
each preset's config is overridden (``experiments/profiles.yaml``), and how many
independent seeds of each preset it trains (:func:`seeded_runs`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from .._mappings import deep_merge
from .._types import PositiveInt
from ..evaluation import EvaluationSpec
from ..training import TrainConfig, config_from_dict, load_preset
from ..yamlio import load_yaml

__all__ = [
    "ProfileName",
    "Profile",
    "load_profile",
    "profile_configs",
    "SeededRun",
    "seeded_runs",
    "seed_dir_name",
    "is_seed_dir_name",
    "check_seeds",
]


class ProfileName(StrEnum):
    """The bundled profiles."""

    tiny = "tiny"
    quick = "quick"
    paper = "paper"
    paper_long = "paper-long"
    structure = "structure"
    certified = "certified"


@dataclass
class Profile:
    """One entry of ``profiles.yaml``: the presets per model family and their overrides,
    the Section 3 experiment's settings, the strong evaluation's settings (the paper's
    attacks, AutoAttack, curves, diagnostics; None skips it) and the number of independent
    seeds per preset (``seeds``, default 1), and the exact-structure twins it compares
    (``twins``: twin preset -> the regularised preset whose effective rank or sparsity it
    matches).

    A family may override the evaluation's settings (its ``evaluation:`` entry, merged into
    the profile's; e.g. the CNNs' AutoAttack searching in bfloat16), except the budget,
    the strong attack and the subsets' seed, which every row of a table shares:
    :meth:`evaluation_of` is a preset's evaluation."""

    name: str
    description: str
    families: dict[str, dict[str, Any]]
    theory: dict[str, Any]
    evaluation: EvaluationSpec | None
    seeds: int = 1
    twins: dict[str, str] = field(default_factory=dict)
    family_evaluations: dict[str, EvaluationSpec] = field(default_factory=dict)

    def evaluation_of(self, preset: str) -> EvaluationSpec | None:
        """The evaluation of ``preset``'s runs: its family's, else the profile's."""
        for family, spec in self.families.items():
            if preset in spec.get("presets", []):
                return self.family_evaluations.get(family, self.evaluation)
        return self.evaluation


def _profiles() -> dict[str, Any]:
    text = (resources.files("robustrank") / "experiments" / "profiles.yaml").read_text("utf-8")
    return load_yaml(text, "robustrank/experiments/profiles.yaml")


def load_profile(name: str | ProfileName) -> Profile:
    """A bundled reproduce profile (:class:`ProfileName`): ``tiny`` (tests), ``quick``
    (reduced budgets, the main job), ``paper`` (the paper's settings), ``paper-long``
    (``paper`` with the strong evaluation on twice the inputs)."""
    name = name.value if isinstance(name, ProfileName) else str(name)
    table = _profiles()
    if name not in table:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(table)}")
    p = table[name]
    presets = {n for fam in p["families"].values() for n in fam.get("presets", [])}
    unknown = sorted(n for pair in (p.get("twins") or {}).items() for n in pair if n not in presets)
    if unknown:
        raise ValueError(f"profile {name!r}: twins name {unknown}, which are not among its presets")
    evaluation = _evaluation_spec(f"profile {name!r}", p.get("evaluation"))
    return Profile(
        name=name,
        description=" ".join(p.get("description", "").split()),
        families=p["families"],
        theory=p.get("theory", {}),
        evaluation=evaluation,
        seeds=check_seeds(p.get("seeds", 1), f"profile {name!r}, seeds"),
        twins=dict(p.get("twins") or {}),
        family_evaluations=_family_evaluations(name, p["families"], evaluation),
    )


def check_seeds(value: Any, what: str = "--seeds") -> int:
    """``value`` as a number of seeds (an integer >= 1), or a clear error."""
    try:
        return TypeAdapter(PositiveInt).validate_python(value)
    except ValidationError:
        raise ValueError(
            f"{what} must be an integer >= 1 (independent seeds per preset), got {value!r}"
        ) from None


def _evaluation_spec(where: str, raw: dict[str, Any] | None) -> EvaluationSpec | None:
    if raw is None:
        return None
    try:
        return EvaluationSpec.model_validate(raw)
    except ValidationError as err:
        raise ValueError(f"{where}, evaluation: {err}") from err


# what every family's evaluation shares: the tables' budget and attack, the same inputs
_SHARED_EVALUATION = ("eps", "attack", "seed")


def _family_evaluations(
    profile: str, families: dict[str, dict[str, Any]], base: EvaluationSpec | None
) -> dict[str, EvaluationSpec]:
    """The evaluation of each family with an ``evaluation:`` entry: the profile's
    (``base``) with the entry merged in."""
    out: dict[str, EvaluationSpec] = {}
    for family, spec in families.items():
        override = spec.get("evaluation")
        if override is None:
            continue
        where = f"profile {profile!r}, family {family!r}"
        if base is None:
            raise ValueError(
                f"{where}: an evaluation override, but the profile evaluates nothing "
                "(no evaluation: entry); add the profile's evaluation or drop the override"
            )
        merged = _evaluation_spec(where, deep_merge(base.model_dump(), override))
        assert merged is not None
        changed = [k for k in _SHARED_EVALUATION if getattr(merged, k) != getattr(base, k)]
        if changed:
            raise ValueError(
                f"{where}: the evaluation override changes {changed}, which every "
                "family shares (one budget, one strong attack, the same inputs in every "
                "table); set them in the profile's evaluation instead"
            )
        out[family] = merged
    return out


def profile_configs(
    profile: Profile, only: str | None = None, device: str = "cpu", seed: int | None = None
) -> list[TrainConfig]:
    """The validated training configs of a profile, natural runs first (they are the
    starting points of every fine-tuning run)."""
    if only is not None and only not in profile.families:
        raise ValueError(f"--only must be one of {', '.join(profile.families)}, got {only!r}")
    configs: list[TrainConfig] = []
    for family, spec in profile.families.items():
        if only is not None and family != only:
            continue
        for preset in spec["presets"]:
            base = load_preset(preset).plain()
            kind = "finetune" if base.get("init", {}).get("from_preset") else "natural"
            data = deep_merge(base, spec.get("all", {}))
            data = deep_merge(data, spec.get(kind, {}))
            data["device"] = device
            if seed is not None:
                data["seed"] = seed
            configs.append(config_from_dict(data, source=f"profile {profile.name}: {preset}"))
    configs.sort(key=lambda c: c.init.from_preset is not None)
    return configs


_SEED_PREFIX = "seed-"


def seed_dir_name(index: int) -> str:
    """The directory of seed ``index`` under ``runs/<preset>``: ``seed-<index>``."""
    return f"{_SEED_PREFIX}{index}"


def is_seed_dir_name(name: str) -> bool:
    """Whether ``name`` is a :func:`seed_dir_name` (``seed-`` and ASCII digits)."""
    index = name.removeprefix(_SEED_PREFIX)
    return name.startswith(_SEED_PREFIX) and index.isascii() and index.isdigit()


@dataclass(frozen=True)
class SeededRun:
    """Seed ``index`` of a preset: its config (``seed = base seed + index``) and where it
    lives relative to the runs directory (``<preset>/seed-<index>``)."""

    index: int
    config: TrainConfig

    @property
    def preset(self) -> str:
        """The preset (run) name."""
        return self.config.name

    @property
    def rel_dir(self) -> Path:
        """``<preset>/seed-<index>``, relative to ``OUT/runs``."""
        return Path(self.preset) / seed_dir_name(self.index)


def seeded_runs(configs: list[TrainConfig], seeds: int) -> list[SeededRun]:
    """``seeds`` independent runs of every config: seed ``k`` gets ``seed = config.seed +
    k`` (initialisation, data order, training-attack and evaluation-attack randomness all
    derive from it), and a fine-tune starts from seed ``k`` of its parent
    (``init.preset_run = ../../<parent>/seed-<k>``). Seed by seed, in ``configs`` order."""
    seeds = check_seeds(seeds)
    out: list[SeededRun] = []
    for k in range(seeds):
        for config in configs:
            data = config.plain()
            data["seed"] = config.seed + k
            parent = config.init.from_preset
            if parent is not None:
                data["init"]["preset_run"] = f"../../{parent}/{seed_dir_name(k)}"
            source = f"{config.name}, seed {k}"
            out.append(SeededRun(k, config_from_dict(data, source=source)))
    return out
