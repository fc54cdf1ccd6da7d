"""What a reproduction returns, and the files it writes: Tables 1 and 2 as CSV, the long
history, ``results.json`` and the offline report (HTML and Markdown) of Section 5's
tables, claims and figures and Section 3's experiment."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .._io import atomic_write_text as write_text_atomic
from ..report import Figure, Paragraph, Report, Section, Table, render_html, render_markdown
from ..training import TrainConfig
from .claims import Claim
from .profiles import Profile
from .summary import RunSummary, _csv_text

__all__ = ["ReproduceResult"]

Block = Paragraph | Table | Figure

# The paper's tables: key, title, dataset (Section 5).
_TABLES = (("table1", "Table 1: FCNN", "MNIST"), ("table2", "Table 2: CNN", "F-MNIST"))


@dataclass
class ReproduceResult:
    """Everything one :func:`~robustrank.experiments.reproduce.reproduce` call produced.

    ``attacks`` are the attacks of the tables' fooling-ratio columns ``fr_<attack>``;
    ``evaluations`` the strong evaluation of every run (:mod:`.robust_eval`).
    """

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
    attacks: list[str] = field(default_factory=list)
    evaluations: dict[str, dict[str, Any]] = field(default_factory=dict)


def _write_outputs(
    result: ReproduceResult,
    prof: Profile,
    configs: list[TrainConfig],
    figures: list[tuple[str, Path]],
) -> None:
    """Write the tables, history, ``results.json`` and both renderings of the report."""
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
        "evaluations": result.evaluations,
    }
    write_text_atomic(out / "results.json", json.dumps(payload, indent=2, default=str))
    report = _build_report(result, prof, figures)
    write_text_atomic(result.report_html, render_html(report))
    write_text_atomic(result.report_md, render_markdown(report, relative_to=out))


def _overview_section(result: ReproduceResult, prof: Profile) -> Section:
    return Section(
        "Overview",
        [
            Paragraph(prof.description),
            Paragraph(
                f"{len(result.runs)} runs; this invocation took {result.wall_time / 60:.1f} min "
                "(finished runs are reused, so a repeated call is fast). Fooling ratio: the "
                "fraction of correctly classified test inputs whose prediction the attack "
                "changes (Section 5), on a fixed evaluation subset, eps = 0.05.",
                "note",
            ),
        ],
    )


def _claims_section(claims: list[Claim]) -> Section:
    """Each claim's verdict with its count, then one paragraph per comparison."""
    blocks: list[Block] = []
    for c in claims:
        kind = {"supported": "good", "not supported": "bad"}.get(c.verdict, "note")
        blocks.append(Paragraph(f"{c.claim}: {c.verdict.upper()}. {c.evidence[0]}", kind))
        blocks += [Paragraph(line) for line in c.evidence[1:]]
    return Section("Claims", blocks)


# Columns of the strong evaluation (robust_eval), shown when present: key, label.
_STRONG_COLUMNS = (
    ("ra_pgd", "RA PGD-20"),
    ("ra_autoattack", "RA AutoAttack"),
    ("fr_autoattack", "FR AutoAttack"),
)


def _table_sections(tables: dict[str, list[dict[str, Any]]], attacks: list[str]) -> list[Section]:
    """Tables 1 and 2: accuracy, paper vs ours, one fooling-ratio column per attack, and
    the strong evaluation's robust accuracies (RA) when it ran."""
    sections = []
    for key, title, ds in _TABLES:
        rows = tables[key]
        if not rows:
            continue
        strong = [(k, label) for k, label in _STRONG_COLUMNS if any(k in r for r in rows)]
        columns = ["method", "preset", "paper acc.", "our acc.", "difference"]
        columns += [f"FR {a.upper()}" for a in attacks] + [label for _, label in strong]
        keys = ["method", "preset", "paper", "ours", "difference"] + [f"fr_{a}" for a in attacks]
        keys += [k for k, _ in strong]
        caption = f"Clean test accuracy, paper vs ours; fooling ratios (FR) at eps 0.05 ({ds})."
        if strong:
            caption += (
                " RA: robust accuracy at eps 0.05 of PGD-20 and AutoAttack (standard) on the "
                "same test inputs (all inputs; misclassified ones count as broken)."
            )
        table = Table(columns, [[r.get(k) for k in keys] for r in rows], caption=caption)
        sections.append(Section(f"{title} (dataset: {ds})", [table]))
    return sections


def _diagnostics_sections(evaluations: dict[str, dict[str, Any]]) -> list[Section]:
    """One section per model: every gradient-masking check, its numbers and verdict."""
    sections = []
    for name, ev in evaluations.items():
        diag = ev.get("diagnostics")
        if not diag:
            continue
        rows = [
            [c["status"].upper(), c["name"], _values_text(c["values"]), c["criterion"]]
            for c in diag["checks"]
        ]
        blocks: list[Block] = [
            Table(
                ["status", "check", "measured", "criterion"],
                rows,
                caption=f"{diag['n']} test inputs ({diag['n_correct']} correct), "
                f"eps = {diag['eps']:g}.",
            )
        ]
        warned = [c for c in diag["checks"] if c["status"] == "warn"]
        for c in warned:
            blocks.append(Paragraph(f"{c['name']}: {c['title']}. Remedy: {c['remedy']}", "bad"))
        if not warned:
            blocks.append(Paragraph("No sign of gradient masking: every check passed.", "good"))
        sections.append(Section(f"Diagnostics: {name}", blocks))
    return sections


def _values_text(values: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()
    )


def _build_report(
    result: ReproduceResult, prof: Profile, figures: list[tuple[str, Path]]
) -> Report:
    """The report: overview, claims, Tables 1-2, the figures, the diagnostics of every
    model and Section 3's experiment, in that order."""
    sections = [_overview_section(result, prof), _claims_section(result.claims)]
    sections += _table_sections(result.tables, result.attacks)
    sections.append(Section("Figures", [Figure(path, caption) for caption, path in figures]))
    sections += _diagnostics_sections(result.evaluations)
    if result.theory is not None:
        text = result.theory.get("_summary_text", "")
        sections.append(Section("Section 3: Theorem 1 on synthetic data", [Paragraph(text, "pre")]))
    return Report(
        title="robustrank: reproduction of 'On the Effect of Low-Rank Weights on Adversarial "
        "Robustness of Neural Networks'",
        subtitle=f"profile {prof.name}",
        sections=sections,
    )
