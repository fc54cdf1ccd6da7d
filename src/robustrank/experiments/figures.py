"""The equivalents of the paper's Figures 1-10 (Section 5) from the runs' histories and
final weights, and one forest plot per claim. Which runs a weight figure shows (natural vs
adversarial training, natural vs the regularisers) is read from their configs
(:func:`run_kind`). With several seeds, the curves and weights are those of seed 0."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..training import TrainConfig
from .claims import Claim, comparison_scale
from .summary import RunKind, model_family, run_kind

__all__ = ["Captioned", "paper_figures", "forest_figures"]

Captioned = tuple[str, Path]  # (caption, png path)
Models = dict[str, nn.Module]  # run name -> final model

# The paper's figure numbers per model family (Section 5) and the dataset it names.
_PAPER_FIGURES: dict[str, dict[str, Any]] = {
    "fcnn": {"fooling": 3, "structure": 2, "adv": 1, "reg": 8, "dataset": "MNIST", "mi": True},
    "cnn": {
        "fooling": 4,
        "structure": 5,
        "adv": (6, 7),
        "reg": (9, 10),
        "dataset": "F-MNIST",
        "mi": False,
    },
}

# History keys ``mi_<layer>_<quantity>``; layer names may hold "_" and "." (module paths).
_MI_QUANTITIES = ("ixt_lower", "ixt_upper", "iyt_lower", "iyt_upper")


def _mi_record(row: dict[str, Any]) -> dict[str, Any]:
    """A flat history row as an information-plane record (Figure 2):
    ``{"epoch", "step", "mi": [{"layer": name, "ixt_lower": ..., ...}, ...]}``."""
    layers: dict[str, dict[str, Any]] = {}
    for key, value in row.items():
        if not key.startswith("mi_"):
            continue
        q = next((q for q in _MI_QUANTITIES if key.endswith(f"_{q}")), None)
        layer = key[len("mi_") : -len(f"_{q}")] if q is not None else ""
        if layer:
            layers.setdefault(layer, {"layer": layer})[q] = value
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


def _paper_figures(family: str) -> dict[str, Any]:
    if family not in _PAPER_FIGURES:
        raise ValueError(
            f"the paper has no figures for model family {family!r}; reproduce draws them for "
            f"{', '.join(_PAPER_FIGURES)}"
        )
    return _PAPER_FIGURES[family]


def _curve_figures(
    fam: str, ref: dict[str, Any], series: dict[str, list[dict[str, Any]]], fig_dir: Path
) -> list[Captioned]:
    """Fooling ratios (Figures 3/4) and weight structure (Figures 2/5) over training."""
    from .. import plots

    fooling = plots.plot_fooling_curves(series, fig_dir / f"{fam}_fooling.png")
    structure = plots.plot_structure_curves(series, fig_dir / f"{fam}_structure.png")
    return [
        (
            f"Figure {ref['fooling']} equivalent: fooling ratios of the {fam.upper()} at "
            f"eps = 0.05 over training, one panel per attack ({ref['dataset']}). Fine-tuning "
            "runs branch off the natural run at its last epoch.",
            fooling,
        ),
        (
            f"Figure {ref['structure']} equivalent: effective rank (Eq. 3) and effective "
            f"sparsity (Eq. 2) of every layer of the {fam.upper()} over training.",
            structure,
        ),
    ]


def _mi_figures(
    fam: str,
    configs: list[TrainConfig],
    series: dict[str, list[dict[str, Any]]],
    histories: dict[str, list[dict[str, Any]]],
    fig_dir: Path,
) -> list[Captioned]:
    """Figure 2's MI panels, and the information plane of the natural run."""
    from .. import plots

    path = plots.plot_mi_curves(series, fig_dir / f"{fam}_mi.png")
    figures = [
        (
            "Figure 2 equivalent (MI panels): KDE bounds on I(T;X) per hidden layer "
            f"of the {fam.upper()} over training (sigma^2 = 0.1), upper bound solid, lower "
            "bound dashed.",
            path,
        )
    ]
    natural = [c.name for c in configs if run_kind(c) == RunKind.natural]
    nat = next((histories[n] for n in natural if histories.get(n)), [])
    if nat:
        path = plots.plot_information_plane(
            [_mi_record(r) for r in nat], fig_dir / f"{fam}_information_plane.png"
        )
        figures.append(
            (
                f"Information plane of natural {fam.upper()} training: I(T;X) vs I(T;Y) per "
                "layer (upper bounds), coloured by epoch.",
                path,
            )
        )
    return figures


def _final_models(configs: list[TrainConfig], run_dirs: dict[str, Path]) -> Models:
    """The finished runs' final models (``run_dirs``: run directory by name), in config
    order."""
    from ..models import load_checkpoint

    models = {}
    for c in configs:
        final = run_dirs[c.name] / "final.safetensors"
        if final.exists():
            models[c.name], _ = load_checkpoint(final)
    return models


def _weight_groups(configs: list[TrainConfig], models: Models) -> tuple[Models, Models]:
    """The models of the two weight figures: natural and adversarial training, and
    natural training and the regularisers."""
    kinds = {c.name: run_kind(c) for c in configs}
    adv = {n: m for n, m in models.items() if kinds[n] in (RunKind.natural, RunKind.adversarial)}
    shaped = (RunKind.natural, RunKind.regularised, RunKind.structured)
    reg = {n: m for n, m in models.items() if kinds[n] in shaped}
    return adv, reg


def _weight_figures(
    fam: str, ref: dict[str, Any], groups: tuple[Models, Models], fig_dir: Path
) -> list[Captioned]:
    """The weights themselves: the FCNN's W1 (Figures 1 and 8), the CNN's W1 and W2
    kernels (Figures 6, 7, 9 and 10)."""
    from .. import plots

    figures: list[Captioned] = []
    adv, reg = groups
    for models, nos, what in (
        (adv, ref["adv"], "natural vs adversarial training"),
        (reg, ref["reg"], "the regularisers"),
    ):
        if fam == "fcnn":
            path = plots.plot_fcnn_w1(models, fig_dir / f"fcnn_w1_{nos}.png")
            caption = (
                f"Figure {nos} equivalent: the FCNN's W1 (20 x 784), each row as a 28 x 28 "
                f"tile, after {what}."
            )
            figures.append((caption, path))
            continue
        for layer, no in zip(("W1", "W2"), nos):
            path = plots.plot_cnn_kernels(models, layer, fig_dir / f"cnn_{layer}_{no}.png")
            shape = "32 x 1 x 3 x 3" if layer == "W1" else "32 x 32 x 3 x 3"
            caption = (
                f"Figure {no} equivalent: the CNN's {layer} kernels ({shape}) after "
                f"{what}; rows are output filters, columns input channels."
            )
            figures.append((caption, path))
    return figures


def _robustness_figure(
    fam: str, ref: dict[str, Any], configs: list[TrainConfig], evaluations: dict, fig_dir: Path
) -> list[Captioned]:
    """Robust accuracy and fooling ratio against eps of every final model of a family."""
    from .. import plots
    from ..attacks import get_attack

    curves = {c.name: evaluations[c.name]["curve"] for c in configs if c.name in evaluations}
    curves = {name: curve for name, curve in curves.items() if curve is not None}
    if not curves:
        return []
    first = next(iter(curves.values()))
    path = plots.plot_robustness_curves(curves, fig_dir / f"{fam}_robustness_curves.png")
    folded = dict.fromkeys(get_attack(c["attack"]).title for c in first["confirmations"])
    return [
        (
            f"Robustness curves of the final {fam.upper()} models ({ref['dataset']}, "
            f"{first['n']} test inputs): each input's smallest breaking l_inf budget from one "
            f"{first['attack'].upper()} minimal-perturbation run, with the successes of "
            f"{' and '.join(folded)} at eps = 0.05 folded in per example (diamonds: the "
            "resulting robust accuracy there).",
            path,
        )
    ]


def paper_figures(
    out: Path,
    configs: list[TrainConfig],
    histories: dict[str, list[dict[str, Any]]],
    run_dirs: dict[str, Path],
    evaluations: dict[str, dict[str, Any]] | None = None,
) -> list[Captioned]:
    """Every figure of the report, ``(caption, png path)``, family by family, from one
    seed's runs (``run_dirs``: run directory by name)."""
    fig_dir = out / "figures"
    has_mi = any(k.startswith("mi_") for h in histories.values() for k in (h[-1] if h else {}))
    by_family: dict[str, list[TrainConfig]] = {}
    for c in configs:
        by_family.setdefault(model_family(c), []).append(c)
    figures: list[Captioned] = []
    for fam, fam_configs in by_family.items():
        ref = _paper_figures(fam)
        series = _series(fam_configs, histories)
        figures += _curve_figures(fam, ref, series, fig_dir)
        figures += _robustness_figure(fam, ref, fam_configs, evaluations or {}, fig_dir)
        if has_mi and ref["mi"]:
            figures += _mi_figures(fam, fam_configs, series, histories, fig_dir)
        groups = _weight_groups(fam_configs, _final_models(fam_configs, run_dirs))
        figures += _weight_figures(fam, ref, groups, fig_dir)
    return figures


_SCALE_TITLES = {
    "ratio": "fooling ratio / robust accuracy",
    "effective rank": "effective rank (Eq. 3)",
    "effective sparsity": "effective sparsity (Eq. 2)",
}


def forest_figures(out: Path, claims: list[Claim]) -> list[list[Captioned]]:
    """One forest plot per claim and metric scale (fooling ratios and robust accuracies,
    effective ranks and effective sparsities are not on one axis), claim by claim."""
    from ..plots import plot_forest

    fig_dir = out / "figures" / "claims"
    figures: list[list[Captioned]] = []
    for i, claim in enumerate(claims, start=1):
        scales: dict[str, list] = {}
        for c in claim.comparisons:
            scales.setdefault(comparison_scale(c), []).append(c)
        own: list[Captioned] = []
        for scale, comps in scales.items():
            slug, what = scale.replace(" ", "_"), _SCALE_TITLES.get(scale, scale)
            title = f"{claim.claim.split(':')[0]}: {what}"
            path = plot_forest(comps, fig_dir / f"claim{i}_{slug}.png", title)
            caption = (
                f"{claim.claim}: {what}, difference a - b of each comparison with its 95% "
                "interval, coloured by verdict (the line marks 0)."
            )
            own.append((caption, path))
        figures.append(own)
    return figures
