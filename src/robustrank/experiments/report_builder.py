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

    ``attacks`` are the attacks of the tables' fooling-ratio columns ``fr_<attack>``.
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


def _write_outputs(
    result: ReproduceResult,
    prof: Profile,
    configs: list[TrainConfig],
    figures: list[tuple[str, Path]],
    sanity: dict[str, Any],
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
    }
    write_text_atomic(out / "results.json", json.dumps(payload, indent=2, default=str))
    report = _build_report(result, prof, figures, sanity)
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


def _table_sections(tables: dict[str, list[dict[str, Any]]], attacks: list[str]) -> list[Section]:
    """Tables 1 and 2: accuracy, paper vs ours, and one fooling-ratio column per attack."""
    columns = ["method", "preset", "paper acc.", "our acc.", "difference"]
    columns += [f"FR {a.upper()}" for a in attacks]
    keys = ["method", "preset", "paper", "ours", "difference"] + [f"fr_{a}" for a in attacks]
    sections = []
    for key, title, ds in _TABLES:
        rows = tables[key]
        if not rows:
            continue
        table = Table(
            columns,
            [[r[k] for k in keys] for r in rows],
            caption=f"Clean test accuracy, paper vs ours; fooling ratios (FR) at eps 0.05 ({ds}).",
        )
        sections.append(Section(f"{title} (dataset: {ds})", [table]))
    return sections


def _sanity_section(runs: dict[str, RunSummary], sanity: dict[str, Any]) -> Section:
    """The gradient-masking check: PGD at a large eps should fool nearly every model."""
    rows = [[s.preset, s.sanity_fooling] for s in runs.values() if s.sanity_fooling is not None]
    weak = [r[0] for r in rows if r[1] < 0.9]
    blocks: list[Block] = [
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
    return Section("Sanity check: gradient masking", blocks)


def _build_report(
    result: ReproduceResult,
    prof: Profile,
    figures: list[tuple[str, Path]],
    sanity: dict[str, Any],
) -> Report:
    """The report: overview, claims, Tables 1-2, the sanity check, the figures and
    Section 3's experiment, in that order."""
    sections = [_overview_section(result, prof), _claims_section(result.claims)]
    sections += _table_sections(result.tables, result.attacks)
    if sanity:
        sections.append(_sanity_section(result.runs, sanity))
    sections.append(Section("Figures", [Figure(path, caption) for caption, path in figures]))
    if result.theory is not None:
        text = result.theory.get("_summary_text", "")
        sections.append(Section("Section 3: Theorem 1 on synthetic data", [Paragraph(text, "pre")]))
    return Report(
        title="robustrank: reproduction of 'On the Effect of Low-Rank Weights on Adversarial "
        "Robustness of Neural Networks'",
        subtitle=f"profile {prof.name}",
        sections=sections,
    )
