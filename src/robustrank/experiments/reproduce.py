"""Reproduce the paper end to end (Section 5, Appendix A): train every model, then render
Tables 1 and 2, the equivalents of Figures 1-10, the Section 3 figure, the claims, and an
offline HTML report.

Runs are ordinary training runs (``robustrank.training.train``) under ``OUT/runs/<preset>``;
a finished run is reused and an interrupted one resumed, so calling :func:`reproduce` again
continues where it stopped. Everything derived (figures, tables, report) is rebuilt from
the runs each time.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .._io import atomic_write_text as write_text_atomic
from ..report import Figure, Paragraph, Report, Section, Table, render_html, render_markdown
from ..training import TrainConfig, config_from_dict, load_preset, train

__all__ = [
    "ProfileName",
    "Profile",
    "load_profile",
    "profile_configs",
    "reproduce",
    "ReproduceResult",
    "ReproduceError",
]

PROFILE_FILE = "profile.json"


class ReproduceError(RuntimeError):
    """The output directory or the profile cannot be used as asked."""


class ProfileName(StrEnum):
    tiny = "tiny"
    quick = "quick"
    paper = "paper"


@dataclass
class Profile:
    name: str
    description: str
    families: dict[str, dict[str, Any]]
    theory: dict[str, Any]
    sanity: dict[str, Any]


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
        sanity=p.get("sanity", {}),
    )


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
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


# --------------------------------------------------------------------------- results


@dataclass
class RunSummary:
    """Final numbers of one run (the last history row) plus what defines the run."""

    preset: str
    family: str
    method: str
    paper_row: str | None
    paper_accuracy: float | None
    test_acc: float | None
    fooling: dict[str, float]
    eff_rank: dict[str, float]
    eff_sparsity: dict[str, float]
    epochs: int
    wall_time: float | None
    sanity_fooling: float | None = None


@dataclass
class Claim:
    claim: str
    verdict: str  # "supported" | "partly supported" | "not supported"
    evidence: list[str] = field(default_factory=list)


@dataclass
class ReproduceResult:
    profile: str
    out_dir: Path
    runs: dict[str, RunSummary]
    histories: dict[str, list[dict[str, Any]]]
    tables: dict[str, list[dict[str, Any]]]
    claims: list[Claim]
    theory: dict[str, Any] | None
    figures: list[Path]
    report_html: Path
    report_md: Path
    wall_time: float


def _family(config: TrainConfig) -> str:
    return config.model.name


def _method(config: TrainConfig) -> str:
    """The paper's row label, or one in the same notation built from the config."""
    if config.paper is not None:
        return config.paper.row
    reg = config.regularizers
    parts = [f"lambda_joint = {reg.joint:g}"] if reg.joint else []
    parts += [f"lambda_{{1,{i}}} = {lam:g}" for i, lam in sorted(reg.l1.items())]
    parts += [f"lambda_{{*,{i}}} = {lam:g}" for i, lam in sorted(reg.nuclear.items())]
    if config.adversarial.attack != "none":
        parts.insert(0, f"{config.adversarial.attack.upper()} adv. train.")
    return ", ".join(parts) or config.name


def _summarise(config: TrainConfig, history: list[dict[str, Any]]) -> RunSummary:
    last = history[-1] if history else {}
    return RunSummary(
        preset=config.name,
        family=_family(config),
        method=_method(config),
        paper_row=config.paper.row if config.paper else None,
        paper_accuracy=config.paper.accuracy if config.paper else None,
        test_acc=last.get("test_acc"),
        fooling={a: last[f"fr_{a}"] for a in ("fgsm", "pgd", "gnm") if f"fr_{a}" in last},
        eff_rank={k[len("eff_rank_") :]: v for k, v in last.items() if k.startswith("eff_rank_")},
        eff_sparsity={
            k[len("eff_sparsity_") :]: v for k, v in last.items() if k.startswith("eff_sparsity_")
        },
        epochs=int(last.get("epoch", 0)),
        wall_time=last.get("wall_time"),
    )


# --------------------------------------------------------------------------- claims


def _adv(summary: RunSummary) -> bool:
    return summary.preset.endswith(("-fgsm", "-pgd"))


def _natural(summary: RunSummary) -> bool:
    return summary.preset.endswith("-natural")


def _regularised(summary: RunSummary) -> bool:
    return not _adv(summary) and not _natural(summary)


# Layers the paper points at (Section 5): FCNN W1; CNN W1 and W2.
_FOCUS = {"fcnn": ["W1"], "cnn": ["W1", "W2"]}


def _pct(new: float, old: float) -> str:
    return f"{new:.3f} vs {old:.3f} ({100 * (new - old) / old:+.1f}%)"


def assess_claims(runs: dict[str, RunSummary]) -> list[Claim]:
    """Verdicts on Claim 1 and Claim 2 (Section 5) from the final measurements.

    Claim 1 compares the adversarially fine-tuned models' effective rank and sparsity of
    the layers the paper highlights with those of the natural model they started from.
    Claim 2 compares every regularised model's fooling ratios (all attacks) with the
    natural model's, and checks that its focus layers did become lower-rank or sparser.
    A claim is "supported" when every comparison agrees, "partly supported" when at least
    half do, and "not supported" otherwise.
    """
    claims: list[Claim] = []
    # ---- Claim 1
    evidence, hits, total = [], 0, 0
    for fam, layers in _FOCUS.items():
        nat = runs.get(f"{fam}-natural")
        if nat is None:
            continue
        for s in runs.values():
            if s.family != fam or not _adv(s):
                continue
            for layer in layers:
                for metric, new, old in (
                    ("effective rank", s.eff_rank.get(layer), nat.eff_rank.get(layer)),
                    ("effective sparsity", s.eff_sparsity.get(layer), nat.eff_sparsity.get(layer)),
                ):
                    if new is None or old is None or math.isnan(new) or math.isnan(old):
                        continue
                    total += 1
                    ok = new < old
                    hits += ok
                    evidence.append(
                        f"{s.preset} {layer} {metric}: {_pct(new, old)} vs {nat.preset} "
                        f"[{'lower' if ok else 'not lower'}]"
                    )
    claims.append(
        Claim(
            "Claim 1: adversarial training leads to low-rank and sparse weights",
            _verdict(hits, total),
            [f"{hits} of {total} comparisons show lower values after adversarial training"]
            + evidence,
        )
    )
    # ---- Claim 2
    evidence, hits, total = [], 0, 0
    s_hits, s_total = 0, 0
    for fam, layers in _FOCUS.items():
        nat = runs.get(f"{fam}-natural")
        if nat is None:
            continue
        for s in runs.values():
            if s.family != fam or not _regularised(s):
                continue
            for attack, fr in s.fooling.items():
                old = nat.fooling.get(attack)
                if old is None or fr is None or math.isnan(fr):
                    continue
                total += 1
                ok = fr < old
                hits += ok
                evidence.append(
                    f"{s.preset} {attack.upper()} fooling ratio {fr:.3f} vs {old:.3f} natural "
                    f"[{'lower' if ok else 'not lower'}]"
                )
            for layer in layers:
                r, r0 = s.eff_rank.get(layer), nat.eff_rank.get(layer)
                sp, sp0 = s.eff_sparsity.get(layer), nat.eff_sparsity.get(layer)
                if None in (r, r0, sp, sp0):
                    continue
                s_total += 1
                ok = r < r0 or sp < sp0
                s_hits += ok
                evidence.append(
                    f"{s.preset} {layer}: effective rank {_pct(r, r0)}, effective sparsity "
                    f"{_pct(sp, sp0)} [{'lower-rank or sparser' if ok else 'neither'}]"
                )
    verdict = _verdict(hits, total)
    if verdict == "supported" and s_total and s_hits < s_total:
        verdict = "partly supported"
    claims.append(
        Claim(
            "Claim 2: low-rank and sparse weights promote robustness",
            verdict,
            [
                f"{hits} of {total} (model, attack) pairs: regularised models have lower "
                f"fooling ratios than natural training",
                f"{s_hits} of {s_total} (model, layer) pairs: the regularised layer is "
                "lower-rank or sparser than after natural training",
            ]
            + evidence,
        )
    )
    # ---- the paper's nuclear-norm observation on the CNN (Figure 5)
    base = runs.get("cnn-l1-1e-2-nuc2-0")
    nucs = sorted(
        (s for s in runs.values() if s.preset.startswith("cnn-nuc2-")),
        key=lambda s: float(s.preset.rsplit("-", 1)[-1]),
    )
    if base is not None and nucs and "W2" in base.eff_rank:
        lines = [
            f"{s.preset} W2 effective rank {_pct(s.eff_rank['W2'], base.eff_rank['W2'])} "
            f"vs {base.preset} (same l1, no nuclear norm)"
            for s in nucs
        ]
        hits = sum(s.eff_rank["W2"] < base.eff_rank["W2"] for s in nucs)
        claims.append(
            Claim(
                "Nuclear-norm regularisation lowers the effective rank of the CNN's W2",
                _verdict(hits, len(nucs)),
                [f"{hits} of {len(nucs)} nuclear-norm settings lower it"] + lines,
            )
        )
    return claims


def _verdict(hits: int, total: int) -> str:
    if total == 0:
        return "not measured"
    if hits == total:
        return "supported"
    if 2 * hits >= total:
        return "partly supported"
    return "not supported"


# --------------------------------------------------------------------------- pipeline


def _check_out_dir(out: Path, profile: Profile, configs: list[TrainConfig], overwrite: bool):
    marker = out / PROFILE_FILE
    if overwrite and marker.exists():
        shutil.rmtree(out / "runs", ignore_errors=True)
        marker.unlink()
    if marker.exists():
        saved = json.loads(marker.read_text("utf-8"))
        if saved.get("profile") != profile.name:
            raise ReproduceError(
                f"{out} holds results of profile {saved.get('profile')!r}, not "
                f"{profile.name!r}; choose another --out, or pass --overwrite to discard them"
            )
    elif out.exists() and any(out.iterdir()) and not _only_preset_runs(out, configs):
        raise ReproduceError(
            f"{out} is not empty and was not written by `robustrank reproduce`; choose another "
            "--out (nothing was changed)"
        )
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(
        marker,
        json.dumps({"profile": profile.name, "runs": [c.name for c in configs]}, indent=2),
    )


def _only_preset_runs(out: Path, configs: list[TrainConfig]) -> bool:
    """``out`` holds nothing but ``runs/<preset>`` directories of this profile's presets.

    Such a directory is adopted: runs trained separately with ``robustrank train --preset
    NAME --out OUT/runs/NAME`` (e.g. on several machines) are reused if their configs
    equal the profile's, and refused by :func:`train` with the differing keys otherwise.
    """
    names = {c.name for c in configs}
    entries = list(out.iterdir())
    if [e.name for e in entries] != ["runs"] or not entries[0].is_dir():
        return False
    return all(run.is_dir() and run.name in names for run in entries[0].iterdir())


def _run_all(
    configs: list[TrainConfig], runs_dir: Path, progress: bool
) -> dict[str, list[dict[str, Any]]]:
    from tqdm.auto import tqdm

    histories: dict[str, list[dict[str, Any]]] = {}
    bar = tqdm(total=len(configs), desc="reproduce", unit="run", disable=not progress)
    try:
        for i, config in enumerate(configs, 1):
            run_dir = runs_dir / config.name
            bar.set_postfix_str(f"{i}/{len(configs)} {config.name}")
            started = run_dir.is_dir() and any(run_dir.iterdir())
            try:
                result = train(config, run_dir, resume=started, progress=progress)
            except ValueError as err:
                raise ReproduceError(
                    f"run {config.name} in {run_dir}: {err}. Use another --out or --overwrite"
                ) from err
            histories[config.name] = result.history
            bar.update(1)
    finally:
        bar.close()
    return histories


def _sanity(configs, runs_dir: Path, spec: dict[str, Any], progress: bool) -> dict[str, float]:
    """Gradient-masking check (peers' advice): PGD at a large eps should fool nearly all."""
    if not spec:
        return {}
    from ..attacks import PGD
    from ..data import eval_subset, load_dataset
    from ..evaluation import fooling_ratio
    from ..models import load_checkpoint

    cache = runs_dir.parent / "sanity.json"
    key = json.dumps(spec, sort_keys=True)
    saved = json.loads(cache.read_text("utf-8")) if cache.exists() else {}
    if saved.get("spec") != key:
        saved = {"spec": key, "fooling": {}}
    eps, n, steps = float(spec["eps"]), int(spec["n"]), int(spec["steps"])
    for config in configs:
        if config.name in saved["fooling"]:
            continue
        model, _ = load_checkpoint(runs_dir / config.name / "final.safetensors", config.device)
        x, y = load_dataset(config.dataset, "test")
        x, y = eval_subset(x, y, n, seed=1)
        attack = PGD(model, eps, alpha=eps / 4, steps=steps, random_start=True, seed=0)
        saved["fooling"][config.name] = fooling_ratio(
            model, attack, x.to(config.device), y.to(config.device), early_stop=True
        )
        write_text_atomic(cache, json.dumps(saved, indent=2))
    return saved["fooling"]


def _theory(out: Path, spec: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    from ..linear_theory import format_theory_summary, run_theory_experiment
    from ..plots import plot_theory

    path_json, path_png = out / "theory" / "theory.json", out / "theory" / "theory.png"
    key = json.dumps(spec, sort_keys=True)
    if path_json.exists() and path_png.exists():
        saved = json.loads(path_json.read_text("utf-8"))
        if saved.get("_spec") == key:
            return saved, path_png
    result = run_theory_experiment(**spec)
    plot_theory(result, path_png)
    data = result.to_dict()
    data["_spec"] = key
    data["_summary_text"] = format_theory_summary(result)
    write_text_atomic(path_json, json.dumps(data, indent=2, default=float))
    return data, path_png


def reproduce(
    profile: str | ProfileName = "quick",
    out: str | Path | None = None,
    *,
    only: str | None = None,
    device: str = "cpu",
    seed: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> ReproduceResult:
    """Train every model of Section 5 and render the paper's tables, figures and claims.

    Args:
        profile: ``"quick"`` (about a minute on two cores), ``"paper"`` (the paper's
            settings) or ``"tiny"`` (smoke test).
        out: output directory (default ``results/<profile>``). Finished runs there are
            reused, interrupted ones resumed.
        only: ``"fcnn"`` or ``"cnn"`` to run one architecture.
        device: ``"cpu"`` or ``"cuda"``.
        seed: override every run's seed.
        overwrite: discard previous runs in ``out``.
        progress: show progress bars.
    """
    t0 = time.perf_counter()
    prof = load_profile(profile)
    out = Path(out) if out is not None else Path("results") / prof.name
    configs = profile_configs(prof, only=only, device=device, seed=seed)
    _check_out_dir(out, prof, configs, overwrite)
    runs_dir = out / "runs"
    histories = _run_all(configs, runs_dir, progress)
    runs = {c.name: _summarise(c, histories[c.name]) for c in configs}
    for name, fr in _sanity(configs, runs_dir, prof.sanity, progress).items():
        if name in runs:
            runs[name].sanity_fooling = fr
    theory, theory_png = _theory(out, prof.theory) if prof.theory else (None, None)
    figures = _figures(out, configs, histories, runs_dir)
    if theory_png is not None:
        figures.append(("Section 3: linear classifiers with and without projection", theory_png))
    claims = assess_claims(runs)
    tables = _tables(runs)
    result = ReproduceResult(
        profile=prof.name,
        out_dir=out,
        runs=runs,
        histories=histories,
        tables=tables,
        claims=claims,
        theory=theory,
        figures=[p for _, p in figures],
        report_html=out / "report.html",
        report_md=out / "report.md",
        wall_time=time.perf_counter() - t0,
    )
    _write_outputs(result, prof, configs, figures, sanity=prof.sanity)
    return result


# --------------------------------------------------------------------------- tables


def _tables(runs: dict[str, RunSummary]) -> dict[str, list[dict[str, Any]]]:
    tables: dict[str, list[dict[str, Any]]] = {"table1": [], "table2": []}
    for s in runs.values():
        key = "table1" if s.family == "fcnn" else "table2"
        tables[key].append(
            {
                "method": s.method,
                "preset": s.preset,
                "paper": s.paper_accuracy,
                "ours": s.test_acc,
                "difference": (
                    s.test_acc - s.paper_accuracy
                    if s.test_acc is not None and s.paper_accuracy is not None
                    else None
                ),
                "fr_fgsm": s.fooling.get("fgsm"),
                "fr_pgd": s.fooling.get("pgd"),
                "fr_gnm": s.fooling.get("gnm"),
            }
        )
    return tables


def _csv_text(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


# --------------------------------------------------------------------------- figures


def _figures(
    out: Path,
    configs: list[TrainConfig],
    histories: dict[str, list[dict[str, Any]]],
    runs_dir: Path,
) -> list[tuple[str, Path]]:
    from .. import plots
    from ..models import load_checkpoint

    fig_dir = out / "figures"
    figures: list[tuple[str, Path]] = []
    by_family: dict[str, list[TrainConfig]] = {}
    for c in configs:
        by_family.setdefault(_family(c), []).append(c)
    paper_no = {
        "fcnn": {"fooling": 3, "structure": 2, "adv": 1, "reg": 8, "dataset": "MNIST"},
        "cnn": {"fooling": 4, "structure": 5, "adv": (6, 7), "reg": (9, 10), "dataset": "F-MNIST"},
    }
    for fam, fam_configs in by_family.items():
        ref = paper_no[fam]
        series = _series(fam_configs, histories)
        path = plots.plot_fooling_curves(series, fig_dir / f"{fam}_fooling.png")
        figures.append(
            (
                f"Figure {ref['fooling']} equivalent: fooling ratios of the {fam.upper()} at "
                f"eps = 0.05 over training, one panel per attack ({ref['dataset']}). Fine-tuning "
                "runs branch off the natural run at its last epoch.",
                path,
            )
        )
        path = plots.plot_structure_curves(series, fig_dir / f"{fam}_structure.png")
        figures.append(
            (
                f"Figure {ref['structure']} equivalent: effective rank (Eq. 3) and effective "
                f"sparsity (Eq. 2) of every layer of the {fam.upper()} over training.",
                path,
            )
        )
        if any(k.startswith("mi_") for h in histories.values() for k in (h[-1] if h else {})):
            if fam == "fcnn":
                path = plots.plot_mi_curves(series, fig_dir / f"{fam}_mi.png")
                figures.append(
                    (
                        "Figure 2 equivalent (MI panels): KDE bounds on I(T;X) per hidden layer "
                        "of the FCNN over training (sigma^2 = 0.1), upper bound solid, lower "
                        "bound dashed.",
                        path,
                    )
                )
                nat = histories.get("fcnn-natural", [])
                if nat:
                    path = plots.plot_information_plane(
                        [_mi_record(r) for r in nat], fig_dir / "fcnn_information_plane.png"
                    )
                    figures.append(
                        (
                            "Information plane of natural FCNN training: I(T;X) vs I(T;Y) per "
                            "layer (upper bounds), coloured by epoch.",
                            path,
                        )
                    )
        # weight images
        models = {}
        for c in fam_configs:
            final = runs_dir / c.name / "final.safetensors"
            if final.exists():
                models[c.name], _ = load_checkpoint(final)
        adv = [n for n in models if n.endswith(("-natural", "-fgsm", "-pgd"))]
        reg = [n for n in models if n not in adv or n.endswith("-natural")]
        if fam == "fcnn":
            for names, no, what in (
                (adv, ref["adv"], "natural vs adversarial training"),
                (reg, ref["reg"], "the regularisers"),
            ):
                path = plots.plot_fcnn_w1(
                    {n: models[n] for n in names}, fig_dir / f"fcnn_w1_{no}.png"
                )
                figures.append(
                    (
                        f"Figure {no} equivalent: the FCNN's W1 (20 x 784), each row as a 28 x 28 "
                        f"tile, after {what}.",
                        path,
                    )
                )
        else:
            for names, nos, what in (
                (adv, ref["adv"], "natural vs adversarial training"),
                (reg, ref["reg"], "the regularisers"),
            ):
                for layer, no in zip(("W1", "W2"), nos):
                    path = plots.plot_cnn_kernels(
                        {n: models[n] for n in names}, layer, fig_dir / f"cnn_{layer}_{no}.png"
                    )
                    shape = "32 x 1 x 3 x 3" if layer == "W1" else "32 x 32 x 3 x 3"
                    figures.append(
                        (
                            f"Figure {no} equivalent: the CNN's {layer} kernels ({shape}) after "
                            f"{what}; rows are output filters, columns input channels.",
                            path,
                        )
                    )
    return figures


def _mi_record(row: dict[str, Any]) -> dict[str, Any]:
    layers: dict[str, dict[str, Any]] = {}
    for k, v in row.items():
        if k.startswith("mi_"):
            _, layer, *q = k.split("_")
            layers.setdefault(layer, {"layer": layer})["_".join(q)] = v
    return {"epoch": row.get("epoch"), "step": row.get("step"), "mi": list(layers.values())}


def _series(
    configs: list[TrainConfig], histories: dict[str, list[dict[str, Any]]]
) -> dict[str, list[dict[str, Any]]]:
    """Per-run histories on a common epoch axis: fine-tuning runs start where their
    natural parent ended."""
    out: dict[str, list[dict[str, Any]]] = {}
    for c in configs:
        offset = 0.0
        parent = c.init.from_preset
        if parent and histories.get(parent):
            offset = float(histories[parent][-1].get("epoch", 0))
        rows = []
        for r in histories.get(c.name, []):
            row = dict(r)
            row["x"] = offset + float(r.get("epoch_progress", r.get("epoch", 0)))
            rows.append(row)
        out[c.name] = rows
    return out


# --------------------------------------------------------------------------- outputs


def _write_outputs(result: ReproduceResult, prof: Profile, configs, figures, sanity) -> None:
    out = result.out_dir
    write_text_atomic(out / "tables" / "table1.csv", _csv_text(result.tables["table1"]))
    write_text_atomic(out / "tables" / "table2.csv", _csv_text(result.tables["table2"]))
    long_rows = [{"preset": name, **row} for name, h in result.histories.items() for row in h]
    write_text_atomic(out / "history.csv", _csv_text(long_rows))
    payload = {
        "profile": prof.name,
        "description": prof.description,
        "wall_time_seconds": result.wall_time,
        "runs": {k: asdict(v) for k, v in result.runs.items()},
        "tables": result.tables,
        "claims": [asdict(c) for c in result.claims],
        "theory": result.theory,
        "configs": {c.name: c.plain() for c in configs},
        "figures": [str(p.relative_to(out)) for p in result.figures],
    }
    write_text_atomic(out / "results.json", json.dumps(payload, indent=2, default=str))
    report = _build_report(result, prof, figures, sanity)
    write_text_atomic(result.report_html, render_html(report))
    write_text_atomic(result.report_md, render_markdown(report, relative_to=out))


def _build_report(result: ReproduceResult, prof: Profile, figures, sanity) -> Report:
    sections: list[Section] = []
    overview = [
        Paragraph(prof.description),
        Paragraph(
            f"{len(result.runs)} runs; this invocation took {result.wall_time / 60:.1f} min "
            "(finished runs are reused, so a repeated call is fast). Fooling ratio: the "
            "fraction of correctly classified test inputs whose prediction the attack changes "
            "(Section 5), on a fixed evaluation subset, eps = 0.05.",
            "note",
        ),
    ]
    sections.append(Section("Overview", overview))
    claim_blocks: list[Paragraph | Table | Figure] = []
    for c in result.claims:
        kind = {"supported": "good", "not supported": "bad"}.get(c.verdict, "note")
        claim_blocks.append(Paragraph(f"{c.claim}: {c.verdict.upper()}. {c.evidence[0]}", kind))
        for line in c.evidence[1:]:
            claim_blocks.append(Paragraph(line))
    sections.append(Section("Claims", claim_blocks))
    for key, title, ds in (
        ("table1", "Table 1: FCNN", "MNIST"),
        ("table2", "Table 2: CNN", "F-MNIST"),
    ):
        rows = result.tables[key]
        if not rows:
            continue
        sections.append(
            Section(
                f"{title} (dataset: {ds})",
                [
                    Table(
                        [
                            "method",
                            "preset",
                            "paper acc.",
                            "our acc.",
                            "difference",
                            "FR FGSM",
                            "FR PGD",
                            "FR GNM",
                        ],
                        [
                            [
                                r["method"],
                                r["preset"],
                                r["paper"],
                                r["ours"],
                                r["difference"],
                                r["fr_fgsm"],
                                r["fr_pgd"],
                                r["fr_gnm"],
                            ]
                            for r in rows
                        ],
                        caption=f"Clean test accuracy, paper vs ours; fooling ratios (FR) at "
                        f"eps 0.05 ({ds}).",
                    )
                ],
            )
        )
    if sanity:
        rows = [
            [s.preset, s.sanity_fooling]
            for s in result.runs.values()
            if s.sanity_fooling is not None
        ]
        weak = [r[0] for r in rows if r[1] < 0.9]
        blocks: list[Paragraph | Table | Figure] = [
            Paragraph(
                f"Gradient-masking check: PGD-{sanity['steps']} at eps = {sanity['eps']} on "
                f"{sanity['n']} test images should fool nearly every model. A model that "
                "resists it may hide its gradients, and its low fooling ratios at eps 0.05 "
                "would then overstate its robustness.",
                "note",
            ),
            Table(["preset", "fooling ratio at large eps"], rows),
        ]
        blocks.append(
            Paragraph("Models below 0.9, to be read with care: " + ", ".join(weak), "bad")
            if weak
            else Paragraph("Every model is fooled at least 90% of the time at large eps.", "good")
        )
        sections.append(Section("Sanity check: gradient masking", blocks))
    fig_blocks = [Figure(path, caption) for caption, path in figures]
    sections.append(Section("Figures", fig_blocks))
    if result.theory is not None:
        text = result.theory.get("_summary_text", "")
        sections.append(Section("Section 3: Theorem 1 on synthetic data", [Paragraph(text, "pre")]))
    return Report(
        title="robustrank: reproduction of 'On the Effect of Low-Rank Weights on Adversarial "
        "Robustness of Neural Networks'",
        subtitle=f"profile {prof.name}",
        sections=sections,
    )
