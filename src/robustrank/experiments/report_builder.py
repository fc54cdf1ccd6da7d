"""What a reproduction returns, and the files it writes: Tables 1 and 2 as CSV (means,
t-intervals over seeds and Wilson intervals), the long history, ``results.json`` and the
offline report (HTML and Markdown) of Section 5's tables, claims (every comparison and a
forest plot per claim) and figures and Section 3's experiment."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import atomic_write_text as write_text_atomic
from .._io import csv_text
from ..attacks import get_attack
from ..report import Figure, Paragraph, Report, Section, Table, render_html, render_markdown
from .claims import Claim
from .profiles import Profile, SeededRun
from .summary import PresetSummary, certified_metrics, strong_attack_of, table_metrics

__all__ = ["write_reproduce_outputs", "ReproduceResult"]

Block = Paragraph | Table | Figure

# The paper's tables: key, title, dataset (Section 5).
# table key, model family, title, dataset
_TABLES = (
    ("table1", "fcnn", "Table 1: FCNN", "MNIST"),
    ("table2", "cnn", "Table 2: CNN", "F-MNIST"),
)


@dataclass
class ReproduceResult:
    """Everything one :func:`~robustrank.experiments.reproduce.reproduce` call produced.

    ``runs``: every preset over its seeds; ``histories`` and ``evaluations`` (the final
    evaluation, :mod:`robustrank.evaluation.spec`): by preset, one entry per seed index.
    ``attacks`` are the attacks of the tables' fooling-ratio columns ``fr_<attack>``;
    ``claim_figures`` the forest plots of each claim (``(caption, path)``, claim by claim).
    """

    profile: str
    out_dir: Path
    runs: dict[str, PresetSummary]
    histories: dict[str, list[list[dict[str, Any]]]]
    tables: dict[str, list[dict[str, Any]]]
    claims: list[Claim]
    theory: dict[str, Any] | None
    figures: list[Path]
    report_html: Path
    report_md: Path
    wall_time: float
    attacks: list[str] = field(default_factory=list)
    evaluations: dict[str, list[dict[str, Any] | None]] = field(default_factory=dict)
    seeds: int = 1
    claim_figures: list[list[tuple[str, Path]]] = field(default_factory=list)

    def format(self) -> str:
        """What ``robustrank reproduce`` prints: Tables 1-2 (mean ± t half-width over seeds,
        [± Wilson]), the claim verdicts and the report's path, separated by blank lines."""
        lines: list[str] = []
        for key, title in (
            ("table1", "Table 1 (FCNN, MNIST)"),
            ("table2", "Table 2 (CNN, F-MNIST)"),
        ):
            if self.tables[key]:
                lines += ["", *self._table_lines(self.tables[key], title)]
        if self.tables.get("certified"):
            lines += ["", *self._certified_lines(self.tables["certified"])]
        lines.append("")
        lines += [f"{c.claim}: {c.verdict.upper()} ({c.evidence[0]})" for c in self.claims]
        lines += ["", f"report: {self.report_html}  ({self.wall_time / 60:.1f} min)"]
        return "\n".join(lines[1:])

    def _table_lines(self, rows: list[dict[str, Any]], title: str) -> list[str]:
        """One table as text: its title, the header and a line per preset."""
        strong = strong_attack_of(self.runs.values())
        ra = [] if strong is None else [f"ra_{strong}"]
        metrics = ["test_acc"] + [f"fr_{a}" for a in self.attacks] + ra
        metrics = [m for m in metrics if m in rows[0]]
        heads = {"test_acc": "acc."}
        if strong is not None:
            heads[f"ra_{strong}"] = "RA-" + get_attack(strong).title
        heads = {m: heads.get(m, "FR-" + m[3:].upper()) for m in metrics}
        width = {m: max(len(heads[m]), *(len(str(r.get(m) or "-")) for r in rows)) for m in metrics}
        lines = [
            f"{title}, {self.seeds} seed(s): mean ± 95% t [± Wilson sampling]",
            f"{'preset':<26} {'paper':>6}" + "".join(f"  {heads[m]:>{width[m]}}" for m in metrics),
        ]
        for r in rows:
            paper = f"{r['paper']:.4f}" if isinstance(r["paper"], float) else "-"
            cells = "".join(f"  {r.get(m) or '-':>{width[m]}}" for m in metrics)
            lines.append(f"{r['preset']:<26} {paper:>6}{cells}")
        return lines

    def _certified_lines(self, rows: list[dict[str, Any]]) -> list[str]:
        """The certified table as text: one column per eps of the tightest certificate
        (``best``, or the only certifier)."""
        keys = [k for k, _ in certified_metrics(self.runs[rows[0]["preset"]])]
        best = [k for k in keys if k.startswith("ca_best@")] or keys
        heads = {k: "CA eps " + k.split("@")[1] for k in best}
        width = {k: max(len(heads[k]), *(len(str(r.get(k) or "-")) for r in rows)) for k in best}
        method = best[0][len("ca_") :].split("@")[0]
        lines = [
            f"Certified accuracy ({method}), {self.seeds} seed(s): mean ± 95% t [± Wilson]",
            f"{'preset':<26}" + "".join(f"  {heads[k]:>{width[k]}}" for k in best),
        ]
        for r in rows:
            lines.append(
                f"{r['preset']:<26}" + "".join(f"  {r.get(k) or '-':>{width[k]}}" for k in best)
            )
        return lines


# results.json layout version: 2 = metrics over seeds and comparisons with intervals.
RESULTS_SCHEMA = 2


def _without_outcomes(evaluation: dict[str, Any] | None) -> dict[str, Any] | None:
    """An evaluation without its per-example masks (they stay in the run's evaluation.json)."""
    if evaluation is None:
        return None
    return {k: v for k, v in evaluation.items() if k != "outcomes"}


def _results_payload(
    result: ReproduceResult, prof: Profile, runs: list[SeededRun]
) -> dict[str, Any]:
    """``results.json``: the README's "results.json" section documents every key."""
    out = result.out_dir
    configs: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        configs.setdefault(run.preset, []).append(run.config.plain())
    return {
        "schema": RESULTS_SCHEMA,
        "profile": prof.name,
        "description": prof.description,
        "seeds": result.seeds,
        "wall_time_seconds": result.wall_time,
        "runs": {k: v.to_dict() for k, v in result.runs.items()},
        "tables": result.tables,
        "claims": [c.to_dict() for c in result.claims],
        "theory": result.theory,
        "configs": configs,
        "figures": [str(p.relative_to(out)) for p in result.figures],
        "evaluations": {
            name: [_without_outcomes(ev) for ev in evs] for name, evs in result.evaluations.items()
        },
    }


def write_reproduce_outputs(
    result: ReproduceResult,
    prof: Profile,
    runs: list[SeededRun],
    figures: list[tuple[str, Path]],
) -> None:
    """Write the tables, history, ``results.json`` and both renderings of the report."""
    out = result.out_dir
    write_text_atomic(out / "tables" / "table1.csv", csv_text(result.tables["table1"]))
    write_text_atomic(out / "tables" / "table2.csv", csv_text(result.tables["table2"]))
    if result.tables.get("certified"):
        write_text_atomic(out / "tables" / "certified.csv", csv_text(result.tables["certified"]))
    long_rows = [
        {"preset": name, "seed_index": k, **row}
        for name, per_seed in result.histories.items()
        for k, h in enumerate(per_seed)
        for row in h
    ]
    write_text_atomic(out / "history.csv", csv_text(long_rows))
    payload = _results_payload(result, prof, runs)
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
                f"{len(result.runs)} presets x {result.seeds} seed(s); this invocation took "
                f"{result.wall_time / 60:.1f} min (finished runs are reused, so a repeated "
                "call is fast). Fooling ratio: the fraction of correctly classified test inputs "
                "whose prediction the attack changes (Section 5), on a fixed evaluation "
                "subset, eps = 0.05. Every number is a mean over seeds; '± h' is the "
                "half-width of its 95% t-interval over seeds (two seeds or more), '[±h]' the "
                "half-width of the Wilson 95% sampling interval over the evaluation inputs "
                "(counts pooled over seeds). A verdict follows only from a difference whose "
                "95% interval excludes 0.",
                "note",
            ),
        ],
    )


_VERDICT_KIND = {"supported": "good", "contradicted": "bad"}


def _comparison_table(claim: Claim) -> Table:
    """Every comparison of a claim: difference, 95% interval, verdict (with its caveat,
    in a column beside it, when one has any), method."""
    caveats = any(c.caveat for c in claim.comparisons)
    rows = []
    for c in claim.comparisons:
        ci = "-" if c.ci95 is None else f"[{c.ci95.lo:+.4f}, {c.ci95.hi:+.4f}]"
        sign = "< 0" if c.direction == "less" else "> 0"
        n = f"{c.n_seeds}" + ("" if c.n_examples is None else f" x {c.n_examples}")
        row = [c.label, f"{c.difference:+.4f}", ci, sign, str(c.verdict)]
        row += [c.caveat or "-"] if caveats else []
        rows.append(row + [n, c.method])
    columns = ["comparison (a vs b)", "a - b", "95% interval", "claimed", "verdict"]
    columns += ["caveat"] if caveats else []
    columns += ["seeds x inputs", "method"]
    caption = (
        "Each comparison: a - b with its 95% interval; supported when the interval excludes 0 "
        "in the claimed direction, contradicted when it excludes 0 in the other, else "
        "inconclusive."
    )
    return Table(columns, rows, caption=caption)


def _claims_section(claims: list[Claim], claim_figures: list[list[tuple[str, Path]]]) -> Section:
    """Each claim's verdict with its count, the table of its comparisons and its forest
    plots."""
    blocks: list[Block] = []
    for i, c in enumerate(claims):
        kind = _VERDICT_KIND.get(c.verdict, "note")
        caveat = "" if c.caveat is None else f" Caveat: {c.caveat}."
        blocks.append(Paragraph(f"{c.claim}: {c.verdict.upper()}. {c.evidence[0]}.{caveat}", kind))
        if c.comparisons:
            blocks.append(_comparison_table(c))
        own = claim_figures[i] if i < len(claim_figures) else []
        blocks += [Figure(path, caption) for caption, path in own]
    return Section("Claims", blocks)


def _table_sections(
    tables: dict[str, list[dict[str, Any]]],
    attacks: list[str],
    seeds: int,
    strong_attack: str | None,
) -> list[Section]:
    """Tables 1 and 2: accuracy, paper vs ours, one fooling-ratio column per attack, the
    strong evaluation's robust accuracies (RA) when it ran, and the focus layers'
    structure; every cell ``mean ± half-width`` over seeds."""
    sections = []
    for key, family, title, ds in _TABLES:
        rows = tables[key]
        if not rows:
            continue
        metrics = table_metrics(family, attacks, strong_attack)
        metrics = [(k, label) for k, label in metrics if k in rows[0]]
        columns = ["method", "preset", "seeds", "paper acc."] + [lab for _, lab in metrics]
        columns.append("difference")
        keys = ["method", "preset", "n_seeds", "paper"] + [k for k, _ in metrics]
        keys.append("difference")
        caption = (
            f"Clean test accuracy, paper vs ours; fooling ratios (FR) at eps 0.05 ({ds}); mean "
            f"over {seeds} seed(s) ± half-width of the 95% t-interval over seeds (two seeds or "
            "more); [±h]: Wilson 95% sampling interval over the evaluation inputs. "
            "difference: our mean accuracy minus the paper's."
        )
        if strong_attack is not None and any(k.startswith("ra_") for k, _ in metrics):
            caption += (
                f" RA: robust accuracy at eps 0.05 of PGD-20 and {get_attack(strong_attack).title}"
                " on the same test inputs (all inputs; misclassified ones count as broken)."
            )
        table = Table(columns, [[r.get(k) for k in keys] for r in rows], caption=caption)
        sections.append(Section(f"{title} (dataset: {ds})", [table]))
    return sections


def _certified_section(result: ReproduceResult) -> Section | None:
    """Certified accuracy (lower bounds) beside the strong attack's robust accuracy (an
    upper bound) for every certified preset; None when nothing was certified."""
    rows = result.tables.get("certified") or []
    if not rows:
        return None
    first = result.runs[rows[0]["preset"]]
    strong = first.strong_attack
    metrics = [(f"ra_{strong}", f"RA {get_attack(strong).title}")] if strong else []
    metrics += certified_metrics(first)
    table = Table(
        ["preset", "seeds"] + [label for _, label in metrics],
        [[r["preset"], r["n_seeds"]] + [r.get(k) for k, _ in metrics] for r in rows],
        caption="Certified accuracy (CA): the fraction of the evaluation inputs that a sound "
        "certifier proves robust in the l_inf ball of radius eps (within [0, 1]), a lower "
        "bound on the true robust accuracy; best: certified by any of the certifiers. RA: "
        "the strong attack's robust accuracy at the evaluation's eps on the same inputs, an "
        "upper bound. Mean over seeds ± 95% t half-width [± pooled Wilson half-width].",
    )
    blocks: list[Block] = [table]
    conflicts = [w for p in result.runs.values() for r in p.runs for w in (
        r.diagnostic_warnings or []) if w.startswith("certified-but-broken")]  # fmt: skip
    if conflicts:
        blocks += [Paragraph(w, "bad") for w in conflicts]
    else:
        blocks.append(
            Paragraph(
                "Sound: no certified input was broken by PGD-20, the strong attack or the "
                "robustness curve of the same run.",
                "good",
            )
        )
    return Section("Certified robustness (lower bounds beside the attacks)", blocks)


def _diagnostics_sections(evaluations: dict[str, list[dict[str, Any] | None]]) -> list[Section]:
    """One section per model (its seed 0): every gradient-masking check, its numbers and
    verdict."""
    sections = []
    for name, per_seed in evaluations.items():
        ev = per_seed[0] if per_seed else None
        diag = (ev or {}).get("diagnostics")
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
    """The report: overview, claims, Tables 1-2, certified accuracy (when measured), the
    figures, the diagnostics of every model and Section 3's experiment, in that order."""
    sections = [
        _overview_section(result, prof),
        _claims_section(result.claims, result.claim_figures),
    ]
    strong = strong_attack_of(result.runs.values())
    sections += _table_sections(result.tables, result.attacks, result.seeds, strong)
    certified = _certified_section(result)
    if certified is not None:
        sections.append(certified)
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
