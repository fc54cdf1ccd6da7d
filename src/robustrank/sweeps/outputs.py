"""The figures and the offline report of a sweep.

* ``pareto.png``: clean against robust accuracy of every trial, the Pareto front marked.
* ``rank_vs_sparsity.png``: effective rank against effective sparsity (Eqs. 2-3) of the
  swept layer, coloured by robust accuracy: the picture of the paper's open question
  (Section 6: is there an optimal combination of sparsity and low rank?).
* ``report.html``: self-contained (figures inlined as base64, no external resources), in
  the style of ``robustrank reproduce``'s report (:mod:`robustrank.report`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from matplotlib.figure import Figure

from ..plots import save_figure
from ..report import Figure as ReportFigure
from ..report import Paragraph, Report, Section, Table, render_html
from ..stats import SeedStat, seed_summary
from .table import SEED_KEY, Combination, Comparison, finished_rows

__all__ = [
    "COMPRESSION_PNG",
    "BUDGET_KEY",
    "plot_compression",
    "compression_curve",
    "PARETO_PNG",
    "SCATTER_PNG",
    "REPORT_HTML",
    "plot_pareto",
    "plot_rank_sparsity",
    "write_report",
]

PARETO_PNG = "pareto.png"
SCATTER_PNG = "rank_vs_sparsity.png"
REPORT_HTML = "report.html"
COMPRESSION_PNG = "compression.png"
#: The space key of a parameter budget (structure.budget): the x-axis of an ATMC-style curve.
BUDGET_KEY = "structure.budget.fraction"


def _finite(*values: Any) -> bool:
    return all(isinstance(v, int | float) and math.isfinite(v) for v in values)


def plot_pareto(rows: Sequence[Mapping[str, Any]], front: Sequence[str], path: Path) -> Path:
    """Clean (x) against robust (y) accuracy of every finished trial, the front joined."""
    fig = Figure(figsize=(6.0, 4.5))
    ax = fig.add_subplot()
    pts = [
        (r["clean_acc"], r["robust_acc"])
        for r in rows
        if _finite(r.get("clean_acc"), r.get("robust_acc"))
    ]
    if pts:
        ax.scatter(*zip(*pts), s=18, color="0.6", label="trial")
    by_id = {r["trial"]: r for r in rows}
    fpts = sorted((by_id[t]["clean_acc"], by_id[t]["robust_acc"]) for t in front)
    if fpts:
        ax.plot(*zip(*fpts), "o-", color="C3", ms=6, drawstyle="steps-post", label="Pareto front")
    ax.set_xlabel("clean accuracy (final test_acc)")
    ax.set_ylabel("robust accuracy (objective attack)")
    ax.set_title("Pareto front: clean vs robust accuracy")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return save_figure(fig, path)


def plot_rank_sparsity(rows: Sequence[Mapping[str, Any]], layer: str | None, path: Path) -> Path:
    """Effective rank (x) against effective sparsity (y) of ``layer``, coloured by robust
    accuracy; one point per finished trial."""
    fig = Figure(figsize=(6.0, 4.5))
    ax = fig.add_subplot()
    keys = (f"eff_rank_{layer}", f"eff_sparsity_{layer}", "robust_acc")
    pts = [tuple(r.get(k) for k in keys) for r in rows]
    pts = [p for p in pts if _finite(*p)]
    if pts:
        x, y, c = zip(*pts)
        art = ax.scatter(x, y, c=c, cmap="viridis", s=36, edgecolors="k", linewidths=0.3)
        fig.colorbar(art, ax=ax, label="robust accuracy")
    else:
        ax.text(0.5, 0.5, "no trial with structure metrics", ha="center", transform=ax.transAxes)
    ax.set_xlabel(f"effective rank of {layer} (Eq. 3)")
    ax.set_ylabel(f"effective sparsity of {layer} (Eq. 2)")
    ax.set_title("Low rank and sparsity vs robustness")
    ax.tick_params(axis="x", labelrotation=30)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def compression_curve(
    rows: Sequence[Mapping[str, Any]],
) -> dict[str, list[tuple[float, SeedStat]]]:
    """Per series (the values but the seed and the budget): ``[(mean compression, robust
    accuracy over seeds)]``, one point per budget, from the finished trials."""
    groups: dict[str, dict[Any, list[Mapping[str, Any]]]] = {}
    for r in finished_rows(rows):
        values = r.get("values") or {}
        if BUDGET_KEY not in values or not _finite(r.get("compression")):
            continue
        series = ", ".join(
            f"{k.rsplit('.', 1)[-1]}={v}"
            for k, v in values.items()
            if k not in (BUDGET_KEY, SEED_KEY)
        )
        groups.setdefault(series or "all", {}).setdefault(values[BUDGET_KEY], []).append(r)
    return {
        series: sorted(
            (
                sum(t["compression"] for t in trials) / len(trials),
                seed_summary([t["robust_acc"] for t in trials]),
            )
            for trials in by_budget.values()
        )
        for series, by_budget in groups.items()
    }


def plot_compression(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Robust accuracy (mean and 95% t-interval over seeds) against the compression each
    combination reaches (the history's ``compression``, log scale), one line per series of
    a parameter-budget sweep (pruning, low rank, both): ATMC's curve (Gui et al., 2019)."""
    fig = Figure(figsize=(6.0, 4.5))
    ax = fig.add_subplot()
    for i, (series, points) in enumerate(compression_curve(rows).items()):
        x = [c for c, _ in points]
        y = [st.mean for _, st in points]
        err = [0.0 if st.ci95 is None else st.ci95.hi - st.mean for _, st in points]
        ax.errorbar(x, y, yerr=err, fmt="o-", color=f"C{i}", capsize=3, label=series)
    ax.set_xscale("log")
    ax.set_xlabel("compression (dense / stored weight parameters)")
    ax.set_ylabel("robust accuracy (objective attack)")
    ax.set_title("Robustness against compression")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8)
    return save_figure(fig, path)


def _combination_table(combos: Sequence[Combination]) -> Table:
    rows = [
        [i + 1, c.label(), c.clean.n_seeds, c.clean.format(4), c.robust.format(4)]
        for i, c in enumerate(combos)
    ]
    return Table(
        ["rank", "combination", "seeds", "clean accuracy", "robust accuracy"],
        rows,
        caption="Per combination: mean ± half-width of the 95% t-interval over seeds; most "
        "robust first.",
    )


def _trials_table(rows: Sequence[Mapping[str, Any]], layer: str | None) -> Table:
    keys = list((rows[0].get("values") or {}) if rows else {})
    columns = ["trial", *keys, "status", "clean acc.", "robust acc."]
    if layer:
        columns += [f"eff. rank {layer}", f"eff. sparsity {layer}"]
    rungs = any(r.get("signal_epoch") is not None for r in rows)
    if rungs:
        columns += ["signal epoch", "signal clean", "signal robust", "stopped because"]
    body = []
    for r in rows:
        line = [
            r["trial"],
            *(r["values"].get(k) for k in keys),
            r.get("status"),
            r.get("clean_acc"),
            r.get("robust_acc"),
        ]
        if layer:
            line += [r.get(f"eff_rank_{layer}"), r.get(f"eff_sparsity_{layer}")]
        if rungs:
            line += [r.get(k) for k in ("signal_epoch", "signal_clean", "signal_robust")]
            line.append(r.get("stop_reason"))
        body.append(line)
    caption = "Every trial (run directories under trials/)."
    if rungs:
        caption += (
            " Signal: the trial's last rung (clean accuracy, robust accuracy under the "
            "signal's attack); a stopped trial's run stays paused at that epoch."
        )
    return Table(columns, body, caption=caption)


def _fidelity_section(summary: Mapping[str, Any]) -> list[Section]:
    """What the rungs stopped and what the trials cost (empty without ``fidelity``)."""
    fidelity = summary["spec"].get("fidelity")
    if not fidelity:
        return []
    signal = summary.get("signal") or {}
    text = (
        f"Trials were judged at epochs {fidelity['rungs']} by {signal.get('attack')} at eps "
        f"{signal.get('eps')} on {signal.get('n')} test inputs and the clean accuracy "
        f"(eta {fidelity['eta']:g}, clean tolerance {fidelity['clean_tolerance']:g}, robust "
        f"margin {fidelity['robust_margin']:g}): {summary['stopped']} of {summary['total']} "
        f"trials were stopped, {summary['done']} trained to the end and got the objective. "
        f"The trials took {summary['trial_seconds'] / 60:.1f} CPU-minutes in all (rungs "
        "included, parents not)."
    )
    return [Section("Multi-fidelity", [Paragraph(text)])]


def _verdict_section(comparison: Comparison | None) -> Section:
    if comparison is None:
        return Section("Most robust combination", [Paragraph("No trial finished.", "bad")])
    kind = "good" if comparison.verdict == "conclusive" else "note"
    return Section("Most robust combination", [Paragraph(comparison.text, kind)])


def _reference_sections(against: Sequence[tuple[Combination, Any]]) -> list[Section]:
    """The table of every combination against its reference (empty without a reference)."""
    if not against:
        return []
    head = ["combination", "difference in robust accuracy", "95% t-interval", "verdict"]
    body = []
    for c, cmp in against:
        ci = "-" if cmp.ci95 is None else f"[{cmp.ci95.lo:+.4f}, {cmp.ci95.hi:+.4f}]"
        body.append([c.label(), f"{cmp.difference:+.4f}", ci, cmp.verdict])
    return [Section("Against the reference, paired by seed", [Table(head, body)])]


def write_report(
    path: Path,
    *,
    summary: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    combos: Sequence[Combination],
    comparison: Comparison | None,
    figures: Sequence[tuple[str, Path]],
    layer: str | None,
    against: Sequence[tuple[Combination, Any]] = (),
) -> Path:
    """Write the self-contained HTML report of a sweep atomically."""
    from .._io import atomic_write_text

    spec = summary["spec"]
    objective = spec["objective"]
    overview = (
        f"Sweep {spec['name']} over base {spec['base']} with strategy {spec['strategy']}: "
        f"{summary['done']} of {summary['total']} trials finished"
        + (f" ({summary['stopped']} stopped at a rung)" if summary.get("stopped") else "")
        + "; this invocation took "
        f"{summary['wall_time'] / 60:.1f} min (finished trials are reused). Clean accuracy: "
        f"the final history row's test_acc; robust accuracy: {objective['attack']} at eps "
        f"{objective['eps']:g} on {objective['n']} seeded test inputs (misclassified inputs "
        "count as broken)."
    )
    sections = [
        Section("Overview", [Paragraph(overview)]),
        *_fidelity_section(summary),
        _verdict_section(comparison),
        Section("Per-combination summary over seeds", [_combination_table(combos)]),
        *_reference_sections(against),
        Section("Figures", [ReportFigure(p, caption) for caption, p in figures]),
        Section("Trials", [_trials_table(rows, layer)]),
        Section("Spec", [Paragraph(yaml.safe_dump(spec, sort_keys=False), "pre")]),
    ]
    report = Report(
        title=f"robustrank sweep: {spec['name']}",
        subtitle="Is there an optimal combination of sparsity and low rank for robustness?",
        sections=sections,
    )
    return atomic_write_text(path, render_html(report))
