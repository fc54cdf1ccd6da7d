"""Reproduce profiles (Section 5, Appendix A): which presets a reproduction trains and how
each preset's config is overridden (``experiments/profiles.yaml``)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from typing import Any

import yaml
from pydantic import ValidationError

from ..training import TrainConfig, config_from_dict, load_preset
from .robust_eval import EvaluationSpec

__all__ = ["ProfileName", "Profile", "load_profile", "profile_configs"]


class ProfileName(StrEnum):
    """The bundled profiles."""

    tiny = "tiny"
    quick = "quick"
    paper = "paper"


@dataclass
class Profile:
    """One entry of ``profiles.yaml``: the presets per model family and their overrides,
    the Section 3 experiment's settings and the strong evaluation's settings
    (AutoAttack, curves, diagnostics; None skips it)."""

    name: str
    description: str
    families: dict[str, dict[str, Any]]
    theory: dict[str, Any]
    evaluation: EvaluationSpec | None


def _profiles() -> dict[str, Any]:
    text = (resources.files("robustrank") / "experiments" / "profiles.yaml").read_text("utf-8")
    return yaml.safe_load(text)


def load_profile(name: str | ProfileName) -> Profile:
    """A bundled reproduce profile: ``tiny`` (tests), ``quick`` (about a minute), ``paper``."""
    name = name.value if isinstance(name, ProfileName) else str(name)
    table = _profiles()
    if name not in table:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(table)}")
    p = table[name]
    return Profile(
        name=name,
        description=" ".join(p.get("description", "").split()),
        families=p["families"],
        theory=p.get("theory", {}),
        evaluation=_evaluation_spec(name, p.get("evaluation")),
    )


def _evaluation_spec(profile: str, raw: dict[str, Any] | None) -> EvaluationSpec | None:
    if raw is None:
        return None
    try:
        return EvaluationSpec.model_validate(raw)
    except ValidationError as err:
        raise ValueError(f"profile {profile!r}, evaluation: {err}") from err


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``extra``, nested mappings merged key by key (inputs unchanged)."""
    out = copy.deepcopy(base)
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
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
            data = _deep_merge(base, spec.get("all", {}))
            data = _deep_merge(data, spec.get(kind, {}))
            data["device"] = device
            if seed is not None:
                data["seed"] = seed
            configs.append(config_from_dict(data, source=f"profile {profile.name}: {preset}"))
    configs.sort(key=lambda c: c.init.from_preset is not None)
    return configs
