"""Figures: the information plane (Section 5, Fig. 2) and the Section 3 experiment.

Everything renders off-screen with matplotlib's Agg canvas through the object-oriented
API (``matplotlib.figure.Figure``), so importing this module never changes the global
pyplot backend. Every figure is written atomically: saved to a temporary file in the
target directory, then renamed over the destination with ``os.replace``.

Sections: shared helpers, information plane, Section 3 (theory). Add new figures as new
sections, each a ``plot_*(data, path, ...) -> Path`` function built on
:func:`save_figure`.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from ._io import atomic_write_bytes

__all__ = [
    "save_figure",
    "plot_information_plane",
    "plot_theory",
    "plot_fooling_curves",
    "plot_structure_curves",
    "plot_mi_curves",
    "plot_fcnn_w1",
    "plot_cnn_kernels",
    "plot_robustness_curves",
    "plot_forest",
    "plot_budget_curves",
]


# --------------------------------------------------------------------------- helpers


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 150) -> Path:
    """Save ``fig`` atomically (temp file + os.replace); the format follows the suffix."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if not fmt:
        raise ValueError(f"{path}: give the figure file a suffix such as .png or .pdf")
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


def _as_dict(obj: Any) -> dict[str, Any]:
    if is_dataclass(obj) and not isinstance(obj, type):
        return asdict(obj)
    if isinstance(obj, Mapping):
        return dict(obj)
    raise TypeError(f"expected a dict or a dataclass record, got {type(obj).__name__}")


# --------------------------------------------------------------------------- information plane

_FLAT_MI = re.compile(r"^mi_(?P<layer>.+)_(?P<q>(?:ixt|iyt)_(?:lower|upper))$")


def _flat_mi_entries(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``{"mi_t1_ixt_upper": v, ...}`` (training history rows) -> ``[{"layer": "t1", ...}]``."""
    entries: dict[str, dict[str, Any]] = {}
    for key, value in row.items():
        m = _FLAT_MI.match(str(key))
        if m and value is not None:
            entries.setdefault(m["layer"], {"layer": m["layer"]})[m["q"]] = value
    return list(entries.values())


def plot_information_plane(
    history: Sequence[Mapping[str, Any]],
    path: str | Path,
    bound: str = "upper",
    *,
    include_output: bool = False,
    title: str | None = None,
) -> Path:
    """I(T;X) vs I(T;Y) per layer over training (Section 5, Fig. 2), saved to ``path``.

    ``history`` is a list of evaluation records, one per evaluation step, either nested::

        {"epoch": 3, "step": 1400,
         "mi": [{"layer": "t1", "ixt_lower": ..., "ixt_upper": ...,
                 "iyt_lower": ..., "iyt_upper": ...}, ...]}

    where each ``mi`` entry may also be an :class:`~robustrank.information.LayerMI` (or
    its ``asdict``), or flat training-history rows with keys ``mi_<layer>_<quantity>``
    (``{"epoch": 3, "step": 1400, "mi_t1_ixt_upper": ..., ...}``); rows without MI keys
    are skipped. ``step`` is optional (records are ordered by ``(epoch, step)``).
    ``bound`` picks the ``"upper"`` or ``"lower"`` KDE bound. Each layer's points are
    connected in training order, coloured by epoch, one marker per layer; the logits
    (``"output"``) are left out unless ``include_output``.
    """
    if bound not in ("upper", "lower"):
        raise ValueError(f"bound must be 'upper' or 'lower', got {bound!r}")
    if isinstance(history, Mapping) or not isinstance(history, Sequence) or not history:
        raise ValueError(
            "history must be a non-empty list of records "
            '{"epoch": e, "step": s, "mi": [{"layer": "t1", ...}, ...]}'
        )
    records = []
    for i, rec in enumerate(history):
        rec = _as_dict(rec)
        if "epoch" not in rec:
            raise ValueError(
                f"history record {i} needs 'epoch' and 'mi' (or 'mi_<layer>_<quantity>') "
                f"keys, got {sorted(rec)}"
            )
        if "mi" not in rec:
            rec["mi"] = _flat_mi_entries(rec)
        records.append(rec)
    records.sort(key=lambda r: (float(r["epoch"]), float(r.get("step") or 0)))

    kx, ky = f"ixt_{bound}", f"iyt_{bound}"
    tracks: dict[str, list[tuple[float, float, float]]] = {}
    for rec in records:
        for entry in rec["mi"]:
            e = _as_dict(entry)
            name = str(e.get("layer", e.get("name")))
            if name == "output" and not include_output:
                continue
            if kx not in e or ky not in e:
                raise ValueError(f"MI entry for layer {name!r} lacks {kx!r} or {ky!r}")
            tracks.setdefault(name, []).append((float(e[kx]), float(e[ky]), float(rec["epoch"])))
    if not tracks:
        raise ValueError("history contains no layer MI entries to plot")

    epochs = [p[2] for pts in tracks.values() for p in pts]
    fig = Figure(figsize=(6.4, 4.8))
    ax = fig.add_subplot()
    scatter = None
    markers = "os^Dvp*hX<>"
    for i, (name, pts) in enumerate(tracks.items()):
        xs, ys, es = zip(*pts, strict=True)
        marker = markers[i % len(markers)]
        ax.plot(xs, ys, color="0.6", linewidth=0.8, zorder=1)
        scatter = ax.scatter(
            xs,
            ys,
            c=es,
            cmap="viridis",
            vmin=min(epochs),
            vmax=max(epochs),
            s=22,
            marker=marker,
            zorder=2,
        )
        # grey proxy so the legend shows the layer's marker, not an epoch colour
        ax.scatter([], [], marker=marker, color="0.4", label=name)
    assert scatter is not None
    fig.colorbar(scatter, ax=ax, label="epoch")
    ax.legend(title="layer", fontsize=8)
    ax.set_xlabel(f"I(T;X) [bits], KDE {bound} bound")
    ax.set_ylabel(f"I(T;Y) [bits], KDE {bound} bound")
    ax.set_title(title or "Information plane")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


# --------------------------------------------------------------------------- Section 3


def plot_theory(result: Any, path: str | Path) -> Path:
    """The Section 3 figure for :func:`~robustrank.linear_theory.run_theory_experiment`.

    Left: p_eps(w) and p_eps(Qw) of the trained classifier over eps (p_0 at eps = 0).
    Right: for every random instance, s(Qw)/s(w) against ||Qw||_1/||w||_1, marked by
    whether p_eps(Qw) <= p_eps(w) held at every eps. Points left of x = 1 (Theorem 1's
    condition) must lie below y = 1; since ||Qw||_2 <= ||w||_2 every point lies on or
    below the diagonal y = x. Accepts a ``TheoryResult`` or its ``to_dict()``.
    """
    data = _as_dict(result)
    for key in ("eps_grid", "trained", "instances"):
        if key not in data:
            raise ValueError(f"theory result lacks {key!r}; pass run_theory_experiment's result")
    eps, t = data["eps_grid"], data["trained"]

    fig = Figure(figsize=(11, 4.5))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(eps, t["p_eps_w"], "-o", markersize=3, label="w")
    ax1.plot(eps, t["p_eps_qw"], "-s", markersize=3, label="Qw (projected)")
    ax1.set_xlabel("eps (l_inf)")
    ax1.set_ylabel("adversarial error p_eps")
    ax1.set_title(
        f"Trained linear classifier: s(w)={t['s_w']:.1f}, s(Qw)={t['s_qw']:.1f}\n"
        f"||w||_1={t['l1_w']:.2f}, ||Qw||_1={t['l1_qw']:.2f}"
    )
    ax1.set_ylim(-0.02, 1.02)
    ax1.grid(alpha=0.3)
    ax1.legend()

    rows = data["instances"]
    if rows:
        good = [r for r in rows if r["robust_not_worse"]]
        bad = [r for r in rows if not r["robust_not_worse"]]
        for sel, colour, label in (
            (good, "tab:green", "p_eps(Qw) <= p_eps(w) for all eps"),
            (bad, "tab:red", "p_eps(Qw) > p_eps(w) for some eps"),
        ):
            if sel:
                ax2.scatter(
                    [r["sparsity_ratio"] for r in sel],
                    [r["l1_ratio"] for r in sel],
                    s=12,
                    c=colour,
                    label=f"{label} ({len(sel)})",
                )
        xs = [r["sparsity_ratio"] for r in rows]
        lo, hi = min(xs + [1.0]) * 0.9, max(xs + [1.0]) * 1.1
        ax2.plot([lo, hi], [lo, hi], ":", color="0.5", label="y = x (bound, ||Qw||_2<=||w||_2)")
        ax2.axvline(1.0, color="k", linewidth=0.8)
        ax2.axhline(1.0, color="k", linewidth=0.8)
        ax2.set_xscale("log")
        ax2.set_yscale("log")
        ax2.legend(fontsize=8)
    ax2.set_xlabel("s(Qw) / s(w)")
    ax2.set_ylabel("||Qw||_1 / ||w||_1")
    ax2.set_title(f"{len(rows)} random instances")
    ax2.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return save_figure(fig, path)


# --------------------------------------------------------------------------- training curves
# ``series`` maps a run name to its history rows; each row has an ``x`` (epoch on a common
# axis, fine-tuning runs starting where their natural parent ended) and the history keys.


def _subplots(nrows: int, ncols: int, figsize: tuple[float, float], squeeze: bool = False):
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze)


_REG_COLOURS = (
    "tab:blue",
    "tab:orange",
    "tab:green",
    "tab:brown",
    "tab:pink",
    "tab:olive",
    "tab:cyan",
    "tab:gray",
)


def _line_style(name: str, names: Sequence[str] = ()) -> dict:
    """Natural black, FGSM red, PGD purple (solid); regularised runs dashed, own colours."""
    if name.endswith("-natural"):
        return {"color": "black", "linewidth": 2.2}
    if name.endswith("-fgsm"):
        return {"color": "tab:red", "linewidth": 1.8}
    if name.endswith("-pgd"):
        return {"color": "tab:purple", "linewidth": 1.8}
    others = [n for n in names if not n.endswith(("-natural", "-fgsm", "-pgd"))]
    i = others.index(name) if name in others else 0
    return {"color": _REG_COLOURS[i % len(_REG_COLOURS)], "linewidth": 1.3, "linestyle": "--"}


def _curve(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in rows:
        v = r.get(key)
        if v is not None and v == v:
            xs.append(float(r["x"]))
            ys.append(float(v))
    return xs, ys


def _legend_below(fig, axes) -> None:
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(
            handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False
        )


def plot_fooling_curves(series: dict[str, list[dict]], path: str | Path) -> Path:
    """Fooling ratios at eps over training, one panel per attack (Figures 3 and 4).

    The attacks are the ``fr_<attack>`` columns of the histories, in first-seen order.
    """
    attacks: list[str] = []
    for rows in series.values():
        for r in rows:
            attacks += [k[3:] for k in r if k.startswith("fr_") and k[3:] not in attacks]
    fig, axes = _subplots(
        1, max(1, len(attacks)), figsize=(4.2 * max(1, len(attacks)), 3.6), squeeze=False
    )
    for ax, attack in zip(axes.flat, attacks):
        for name, rows in series.items():
            xs, ys = _curve(rows, f"fr_{attack}")
            if xs:
                ax.plot(
                    xs,
                    ys,
                    marker="o",
                    markersize=2.5,
                    label=name,
                    **_line_style(name, list(series)),
                )
        ax.set_title(attack.upper())
        ax.set_xlabel("epoch")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes.flat[0].set_ylabel("fooling ratio")
    fig.subplots_adjust(bottom=0.3)
    _legend_below(fig, axes)
    return save_figure(fig, path, dpi=110)


def plot_structure_curves(series: dict[str, list[dict]], path: str | Path) -> Path:
    """Effective rank and effective sparsity of every layer over training (Figures 2, 5)."""
    layers: list[str] = []
    for rows in series.values():
        for r in rows:
            for k in r:
                if k.startswith("eff_rank_") and k[9:] not in layers:
                    layers.append(k[9:])
    fig, axes = _subplots(2, len(layers), figsize=(2.9 * len(layers), 5.4), squeeze=False)
    for j, layer in enumerate(layers):
        for i, (metric, label) in enumerate(
            (("eff_rank", "effective rank"), ("eff_sparsity", "effective sparsity"))
        ):
            ax = axes[i, j]
            for name, rows in series.items():
                xs, ys = _curve(rows, f"{metric}_{layer}")
                if xs:
                    ax.plot(xs, ys, label=name, **_line_style(name, list(series)))
            ax.set_title(f"{layer}: {label}", fontsize=9)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
            ax.ticklabel_format(axis="y", useOffset=False)
            if i == 1:
                ax.set_xlabel("epoch", fontsize=8)
    fig.subplots_adjust(bottom=0.18, hspace=0.35)
    _legend_below(fig, axes)
    return save_figure(fig, path, dpi=110)


def plot_mi_curves(series: dict[str, list[dict]], path: str | Path) -> Path:
    """KDE bounds on I(T;X) per hidden layer over training (Figure 2's MI panels)."""
    layers: list[str] = []
    for rows in series.values():
        for r in rows:
            for k in r:
                if k.startswith("mi_") and k.endswith("_ixt_upper"):
                    layer = k[3 : -len("_ixt_upper")]
                    if layer not in layers:
                        layers.append(layer)
    fig, axes = _subplots(
        1, max(1, len(layers)), figsize=(2.9 * max(1, len(layers)), 3.2), squeeze=False
    )
    for ax, layer in zip(axes.flat, layers):
        for name, rows in series.items():
            style = _line_style(name, list(series))
            xs, ys = _curve(rows, f"mi_{layer}_ixt_upper")
            if xs:
                (line,) = ax.plot(xs, ys, label=name, **style)
                xl, yl = _curve(rows, f"mi_{layer}_ixt_lower")
                ax.plot(
                    xl,
                    yl,
                    linestyle="--",
                    color=line.get_color(),
                    linewidth=style.get("linewidth", 1.3) * 0.7,
                )
        ax.set_title(f"I({layer};X) [bits]", fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    fig.subplots_adjust(bottom=0.32)
    _legend_below(fig, axes)
    return save_figure(fig, path, dpi=110)


# --------------------------------------------------------------------------- weight images


def plot_fcnn_w1(models: dict[str, torch.nn.Module], path: str | Path) -> Path:
    """The FCNN's W1, each of its rows as a 28 x 28 tile, one panel per model (Figs. 1, 8).

    Each panel uses a symmetric colour scale around 0 at its own maximum |w|.
    """
    names = list(models)
    fig, axes = _subplots(
        1, max(1, len(names)), figsize=(3.3 * max(1, len(names)), 3.0), squeeze=False
    )
    for ax, name in zip(axes.flat, names):
        w = models[name].weight_layers()[0].weight.detach().cpu().numpy()
        rows = w.shape[0]
        cols = 5
        grid_rows = -(-rows // cols)
        canvas = np.full((grid_rows * 29 - 1, cols * 29 - 1), np.nan)
        for i in range(rows):
            r, c = divmod(i, cols)
            canvas[r * 29 : r * 29 + 28, c * 29 : c * 29 + 28] = w[i].reshape(28, 28)
        vmax = float(np.nanmax(np.abs(canvas))) or 1.0
        ax.imshow(canvas, cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    return save_figure(fig, path, dpi=110)


def plot_cnn_kernels(models: dict[str, torch.nn.Module], layer: str, path: str | Path) -> Path:
    """A CNN's conv kernels (``"W1"`` or ``"W2"``) as a grid of 3 x 3 tiles: rows are output
    filters, columns input channels (Figures 6, 7, 9, 10)."""
    index = {"W1": 0, "W2": 1}[layer]
    names = list(models)
    fig, axes = _subplots(
        1, max(1, len(names)), figsize=(5.0 * max(1, len(names)), 5.2), squeeze=False
    )
    for ax, name in zip(axes.flat, names):
        k = models[name].weight_layers()[index].weight.detach().cpu().numpy()
        out_c, in_c, kh, kw = k.shape
        if in_c == 1:  # W1: lay the 32 filters out as a 4 x 8 grid
            cols = 8
            grid_rows = -(-out_c // cols)
            canvas = np.full((grid_rows * (kh + 1) - 1, cols * (kw + 1) - 1), np.nan)
            for o in range(out_c):
                r, c = divmod(o, cols)
                canvas[r * (kh + 1) : r * (kh + 1) + kh, c * (kw + 1) : c * (kw + 1) + kw] = k[o, 0]
        else:
            canvas = np.full((out_c * (kh + 1) - 1, in_c * (kw + 1) - 1), np.nan)
            for o in range(out_c):
                for i in range(in_c):
                    canvas[o * (kh + 1) : o * (kh + 1) + kh, i * (kw + 1) : i * (kw + 1) + kw] = k[
                        o, i
                    ]
        vmax = float(np.nanmax(np.abs(canvas))) or 1.0
        ax.imshow(canvas, cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    return save_figure(fig, path, dpi=110)


# --------------------------------------------------------------------------- robustness curves


def _curve_record(curve: Any) -> dict[str, Any]:
    return curve.to_dict() if hasattr(curve, "to_dict") else _as_dict(curve)


def plot_robustness_curves(curves: Mapping[str, Any], path: str | Path) -> Path:
    """Robust accuracy and fooling ratio against eps, one line per model (Carlini et al.,
    2019, Sec. 5). ``curves`` maps a label to a :class:`robustrank.evaluation.RobustnessCurve`
    (or its ``to_dict()``); confirmed budgets are marked with the confirming attack's
    robust accuracy."""
    fig, axes = _subplots(1, 2, figsize=(9.0, 3.8))
    ax_ra, ax_fr = axes.flat
    names = list(curves)
    for name in names:
        rec = _curve_record(curves[name])
        style = _line_style(name, names)
        eps = rec["eps"]
        ax_ra.plot(eps, rec["robust_accuracy"], label=name, **style)
        fr = [np.nan if v is None else v for v in rec["fooling_ratio"]]
        ax_fr.plot(eps, fr, label=name, **style)
        for c in rec.get("confirmations", []):
            ax_ra.plot([c["eps"]], [c["robust_accuracy"]], marker="D", color=style["color"], ms=5)
    methods = sorted({_curve_record(c)["attack"] for c in curves.values()})
    ax_ra.set_title(f"robust accuracy ({', '.join(methods)}; \u25c6 ensemble-confirmed)")
    ax_fr.set_title("fooling ratio")
    for ax in (ax_ra, ax_fr):
        ax.set_xlabel("eps (l_inf)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    fig.subplots_adjust(bottom=0.3)
    _legend_below(fig, axes)
    return save_figure(fig, path, dpi=110)


# --------------------------------------------------------------------------- forest plot

_VERDICT_COLOURS = {
    "supported": "tab:green",
    "contradicted": "tab:red",
    "inconclusive": "tab:gray",
}


def _comparison_record(comparison: Any) -> dict[str, Any]:
    return comparison.to_dict() if hasattr(comparison, "to_dict") else _as_dict(comparison)


def plot_forest(comparisons: Sequence[Any], path: str | Path, title: str) -> Path:
    """Forest plot of one claim (Lewis & Clarke, 2001): one row per comparison, the
    difference and its 95% interval as a horizontal bar, a line at 0, coloured by verdict.

    ``comparisons``: :class:`robustrank.stats.Comparison` objects (or their ``to_dict()``);
    each row's label notes the claimed sign of the difference.
    """
    records = [_comparison_record(c) for c in comparisons]
    if not records:
        raise ValueError("plot_forest needs at least one comparison; pass the claim's rows")
    fig = Figure(figsize=(7.5, 1.2 + 0.45 * len(records)))
    ax = fig.subplots()
    ys = np.arange(len(records))[::-1]
    for y, rec in zip(ys, records):
        colour = _VERDICT_COLOURS.get(str(rec["verdict"]), "tab:gray")
        ci = rec.get("ci95")
        if ci is not None:
            ax.plot(ci, [y, y], color=colour, linewidth=3, solid_capstyle="butt")
        ax.plot([rec["difference"]], [y], marker="o" if ci else "x", color="black", ms=5)
    ax.axvline(0.0, color="black", linewidth=0.8)
    sign = {"greater": ">", "less": "<"}
    ax.set_yticks(ys)
    labels = [r["label"] or f"#{i}" for i, r in enumerate(records)]
    ax.set_yticklabels(
        [f"{lab}  (claim {sign[r['direction']]} 0)" for lab, r in zip(labels, records)], fontsize=8
    )
    ax.set_ylim(-0.7, len(records) - 0.3)
    ax.set_xlabel("difference a - b (95% interval)")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    for verdict, colour in _VERDICT_COLOURS.items():
        ax.plot([], [], color=colour, linewidth=3, label=verdict)
    if any(r.get("ci95") is None for r in records):
        ax.plot([], [], "x", color="black", label="no interval (one seed)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return save_figure(fig, path, dpi=110)


# --------------------------------------------------------------------------- fine-tuning budgets

_FR_STYLES = {"pgd": {"linewidth": 1.6}, "fgsm": {"linewidth": 0.8, "linestyle": ":"}}


def _budget_panel(ax, series: dict[str, list[dict]], key: str, **extra: Any) -> None:
    names = list(series)
    for name, rows in series.items():
        xs, ys = [], []
        for r in rows:
            v = r.get(key)
            if v is not None and v == v:
                xs.append(float(r["epoch"]))
                ys.append(float(v))
        if xs:
            style = {**_line_style(name, names), "linestyle": "-", **extra}
            ax.plot(xs, ys, marker="o", markersize=2, label=name, **style)


def _natural_marker(ax, natural: Mapping[str, Any] | None, key: str) -> None:
    v = None if natural is None else natural.get(key)
    if v is not None and v == v:
        ax.plot([0.0], [float(v)], marker="*", ms=11, color="black", ls="none", label="natural")


def plot_budget_curves(
    series: dict[str, list[dict]],
    path: str | Path,
    *,
    paper: Mapping[str, float | None],
    natural: Mapping[str, Any] | None = None,
    layers: Sequence[str] = ("W1",),
    title: str = "",
) -> Path:
    """Clean accuracy, fooling ratios, effective rank and sparsity against fine-tuning
    epochs, one line per run (the paper's Tables 1-2 and Figure 5 against the budget).

    ``series`` maps a run to rows with ``epoch``, ``test_acc``, ``fr_<attack>``,
    ``eff_rank_<layer>`` and ``eff_sparsity_<layer>``. ``paper`` gives each run's Table
    accuracy (a dashed line in the run's colour); ``natural`` the natural run's final row
    (a star at epoch 0). Fooling ratios: PGD thick, FGSM dotted, others dash-dotted thin.
    One row of (rank, sparsity) panels per layer in ``layers``.
    """
    fig, axes = _subplots(1 + len(layers), 2, figsize=(10.0, 3.4 * (1 + len(layers))))
    ax_acc, ax_fr = axes[0]
    names = list(series)
    _budget_panel(ax_acc, series, "test_acc")
    for name in names:
        if paper.get(name) is not None:
            colour = _line_style(name, names)["color"]
            ax_acc.axhline(paper[name], color=colour, linestyle="--", linewidth=0.9, alpha=0.8)
    _natural_marker(ax_acc, natural, "test_acc")
    ax_acc.set_title("clean accuracy (dashed: the paper's)")
    attacks = sorted(
        {k[3:] for rows in series.values() for r in rows for k in r if k.startswith("fr_")},
        key=lambda a: (a != "pgd", a),
    )
    keys = []
    for attack in attacks:
        style = _FR_STYLES.get(attack, {"linewidth": 0.8, "linestyle": "-."})
        _budget_panel(ax_fr, series, f"fr_{attack}", **style)
        _natural_marker(ax_fr, natural, f"fr_{attack}")
        keys += ax_fr.plot([], [], color="gray", label=attack.upper(), **style)
    if keys:
        ax_fr.legend(handles=keys, fontsize=7)
    ax_fr.set_title("fooling ratio at eps (" + ", ".join(a.upper() for a in attacks) + ")")
    for i, layer in enumerate(layers, start=1):
        for ax, metric, label in (
            (axes[i, 0], "eff_rank", "effective rank"),
            (axes[i, 1], "eff_sparsity", "effective sparsity"),
        ):
            _budget_panel(ax, series, f"{metric}_{layer}")
            _natural_marker(ax, natural, f"{metric}_{layer}")
            ax.set_title(f"{layer}: {label}")
            ax.ticklabel_format(axis="y", useOffset=False)
    for ax in axes.flat:
        ax.set_xlabel("fine-tuning epochs")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    legend_rows = -(-(len(names) + 1) // 4)  # four entries per row, plus the natural star
    height = fig.get_size_inches()[1]
    fig.subplots_adjust(bottom=(0.75 + 0.22 * legend_rows) / height, hspace=0.45)
    _legend_below(fig, axes)
    return save_figure(fig, path, dpi=110)
