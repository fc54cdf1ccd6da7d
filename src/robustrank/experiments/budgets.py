"""The fine-tuning budget study: clean accuracy, fooling ratios and weight structure against
the number of fine-tuning epochs (Section 5, Tables 1-2, Figure 5).

The paper does not state how long its fine-tunes last. This study trains every fine-tuning
preset of a model family once, for ``max_epochs`` epochs, from the same natural run, and
reads every shorter budget off that one run: under the presets' constant (or step)
learning-rate schedule, with one seeded data order and one attack seed per epoch and step
(:func:`robustrank.training.derive_seed`), the first ``e`` epochs of a long run are exactly
an ``e``-epoch run (``tests/test_budgets.py`` checks this). It reports, per preset and
epoch, the clean accuracy (``test_acc``), the fooling ratios (``fr_<attack>``) and the
effective rank and sparsity of every layer (Eqs. 2-3), and against the paper's Table 1/2
accuracy the first budget within a tolerance, the best epoch and the closest gap.

Outputs in ``out``: ``runs/<preset>`` (ordinary run directories; an interrupted study
resumes), ``budgets.json``, ``budgets.csv`` (one row per preset and epoch),
``budgets.md`` and ``budgets-<family>.png``. A finished run's config records its
``epochs``, so a study cannot be extended in place: a larger ``max_epochs`` needs a new
``out``.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .._io import atomic_write_text, csv_text
from ..execution import Executor, RunTask, create_executor
from ..ownership import OutputKind, OwnershipError, claim_dir, read_record
from ..sweeps.space import merge_overrides
from ..training import (
    TrainConfig,
    config_from_dict,
    get_schedule,
    list_presets,
    load_preset,
    read_history,
)
from ..training.rundir import CONFIG_FILE, DONE_FILE, RUN_DIR
from ..yamlio import load_yaml, load_yaml_file

__all__ = [
    "BudgetError",
    "PresetBudget",
    "BudgetStudy",
    "budget_study",
    "list_families",
    "family_presets",
    "budgets_markdown",
    "parse_overrides",
]

STUDY_FILE = "study.json"

#: What a budget study directory holds; ``--overwrite`` deletes these and nothing else.
BUDGETS_DIR = OutputKind(
    "budgets",
    files=(STUDY_FILE, "budgets.json", "budgets.csv", "budgets.md", "budgets-*.png"),
    children={"runs/*": RUN_DIR},
)
#: budgets the markdown summary shows when the run reaches them (plus the preset's own)
SUMMARY_BUDGETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
_METRIC_PREFIXES = ("fr_", "eff_rank_", "eff_sparsity_")


class BudgetError(ValueError):
    """The study cannot run as asked; the message names the problem and the fix."""


# --------------------------------------------------------------------------- results


@dataclass
class PresetBudget:
    """One preset's fine-tune, measured every ``every`` epochs up to ``max_epochs``.

    ``rows`` are ``{"epoch": e, "test_acc": ..., "fr_<attack>": ..., "eff_rank_<layer>":
    ..., "eff_sparsity_<layer>": ...}``, epoch 0 being the natural model it starts from.
    Budgets are positive: epoch 0 never counts as a fine-tuning budget.
    """

    preset: str
    paper_accuracy: float | None
    preset_epochs: int
    rows: list[dict[str, Any]]
    run_dir: str = ""
    seconds_per_epoch: float | None = None

    def _budgets(self) -> list[tuple[int, float]]:
        return [
            (int(r["epoch"]), float(r["test_acc"]))
            for r in self.rows
            if r["epoch"] > 0 and _finite(r.get("test_acc"))
        ]

    def accuracy_at(self, epoch: int) -> float | None:
        """Clean accuracy after ``epoch`` epochs, or None if no row was recorded there."""
        for r in self.rows:
            if r["epoch"] == epoch and _finite(r.get("test_acc")):
                return float(r["test_acc"])
        return None

    def first_within(self, tol: float = 0.01) -> int | None:
        """The first budget (epoch >= 1) whose clean accuracy is within ``tol`` of the
        paper's (``|ours - paper| <= tol``), or None (also when the paper gives none)."""
        if self.paper_accuracy is None:
            return None
        for epoch, acc in self._budgets():
            if abs(acc - self.paper_accuracy) <= tol + 1e-12:
                return epoch
        return None

    def best_epoch(self) -> int | None:
        """The budget with the highest clean accuracy (the first of ties)."""
        budgets = self._budgets()
        return max(budgets, key=lambda b: b[1])[0] if budgets else None

    def best_gap(self) -> float | None:
        """Ours minus the paper's accuracy at :meth:`best_epoch`."""
        best = self.best_epoch()
        if best is None or self.paper_accuracy is None:
            return None
        return self.accuracy_at(best) - self.paper_accuracy  # type: ignore[operator]

    def closest(self) -> tuple[int, float] | None:
        """``(epoch, ours - paper)`` at the budget closest to the paper's accuracy."""
        if self.paper_accuracy is None or not self._budgets():
            return None
        epoch, acc = min(self._budgets(), key=lambda b: abs(b[1] - self.paper_accuracy))
        return epoch, acc - self.paper_accuracy

    def to_dict(self, tol: float = 0.01) -> dict[str, Any]:
        """Plain JSON-able data, with the derived budgets at ``tol``."""
        closest = self.closest()
        return {
            "preset": self.preset,
            "paper_accuracy": self.paper_accuracy,
            "preset_epochs": self.preset_epochs,
            "run_dir": self.run_dir,
            "seconds_per_epoch": self.seconds_per_epoch,
            "first_within": self.first_within(tol),
            "best_epoch": self.best_epoch(),
            "best_gap": self.best_gap(),
            "closest_epoch": None if closest is None else closest[0],
            "closest_gap": None if closest is None else closest[1],
            "rows": self.rows,
        }


@dataclass
class BudgetStudy:
    """What :func:`budget_study` returns (and writes to ``budgets.json``)."""

    family: str
    max_epochs: int
    every: int
    tolerance: float
    natural: dict[str, Any]
    presets: dict[str, PresetBudget]
    layers: list[str]
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    wall_time: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data."""
        return {
            "family": self.family,
            "max_epochs": self.max_epochs,
            "every": self.every,
            "tolerance": self.tolerance,
            "natural": self.natural,
            "layers": self.layers,
            "presets": {k: v.to_dict(self.tolerance) for k, v in self.presets.items()},
            "wall_time": self.wall_time,
        }


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


# --------------------------------------------------------------------------- presets


def _fine_tunes() -> dict[str, TrainConfig]:
    """Every bundled preset that fine-tunes (``init.from_preset`` set), by name."""
    configs = {name: load_preset(name) for name in list_presets()}
    return {n: c for n, c in configs.items() if c.init.from_preset is not None}


def list_families() -> list[str]:
    """Model families with fine-tuning presets (the presets' ``model.name``)."""
    return sorted({c.model.name for c in _fine_tunes().values()})


def family_presets(family: str) -> list[str]:
    """The bundled presets of ``family`` that fine-tune a natural run."""
    families = list_families()
    if family not in families:
        raise BudgetError(
            f"unknown model family {family!r}; choose one of {', '.join(families)} (the "
            "model names of the presets that fine-tune, see `robustrank presets`)"
        )
    return sorted(n for n, c in _fine_tunes().items() if c.model.name == family)


def _check_preset(name: str, family: str) -> TrainConfig:
    config = load_preset(name)  # unknown names raise with the available presets
    if config.init.from_preset is None:
        raise BudgetError(
            f"preset {name} does not fine-tune (it has no init.from_preset), so it has no "
            f"fine-tuning budget; pick presets that fine-tune: {', '.join(family_presets(family))}"
        )
    if config.model.name != family:
        raise BudgetError(
            f"preset {name} trains a {config.model.name}, not a {family}; pick presets of "
            f"family {family}: {', '.join(family_presets(family))}"
        )
    return config


def _natural_preset(configs: list[TrainConfig], natural_run: Path | None) -> str:
    """The one natural preset the fine-tunes start from."""
    parents = sorted({c.init.from_preset for c in configs if c.init.from_preset})
    if len(parents) != 1:
        raise BudgetError(
            f"the presets fine-tune different natural runs ({', '.join(parents)}); a study "
            "compares budgets from one starting point: pick presets with one init.from_preset"
        )
    parent = parents[0]
    if natural_run is not None:
        _check_natural_run(natural_run, parent)
    return parent


def _run_config(run_dir: Path) -> dict[str, Any]:
    """The config a run directory records, as plain data."""
    saved = load_yaml_file(run_dir / CONFIG_FILE) or {}
    if not isinstance(saved, dict):
        raise BudgetError(f"{run_dir / CONFIG_FILE} is not a run config (a mapping)")
    return saved


def _check_natural_run(run_dir: Path, preset: str) -> None:
    if not (run_dir / DONE_FILE).exists():
        raise BudgetError(
            f"--natural-run {run_dir} is not a finished run (no {DONE_FILE}); wait for it to "
            "finish, or omit --natural-run to let the study train the natural run itself"
        )
    saved = _run_config(run_dir)
    if saved.get("name") != preset:
        raise BudgetError(
            f"--natural-run {run_dir} holds run {saved.get('name')!r}, but the fine-tunes start "
            f"from preset {preset}; pass a run of {preset}"
        )


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["history.track_mi=false", "lr=0.01"]`` -> ``{"history": {"track_mi": False},
    "lr": 0.01}``: dotted keys as in sweeps (:func:`robustrank.sweeps.space.parse_path`:
    ``regularizers.l1.1`` is layer 1), values parsed as YAML (the ``--set`` options)."""
    from ..sweeps.space import SpaceError, apply_values

    values: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise BudgetError(
                f"--set {item!r}: write KEY=VALUE with a dotted key, e.g. history.track_mi=false"
            )
        try:
            values[key.strip()] = load_yaml(text, f"--set {key.strip()}")
        except yaml.YAMLError as err:
            raise BudgetError(f"--set {item!r}: the value is not valid YAML ({err})") from None
    try:
        return apply_values({}, values)
    except SpaceError as err:
        raise BudgetError(f"--set: {err}") from None


# --------------------------------------------------------------------------- tasks


def _fine_tune_config(
    name: str, max_epochs: int, every: int, threads: int, overrides: dict, preset_run: Path
) -> TrainConfig:
    """The preset with ``overrides``, run for ``max_epochs`` with history every ``every``."""
    data = merge_overrides(load_preset(name).plain(), overrides)
    data["epochs"], data["threads"] = max_epochs, threads
    data["history"]["every_epochs"] = every
    data["init"]["preset_run"] = str(preset_run)
    config = config_from_dict(data, source=f"budget study: {name}")
    schedule = get_schedule(config.schedule.name)
    if schedule.depends_on_epochs(config.lr, max_epochs, config.schedule_options()):
        raise BudgetError(
            f"{name}: schedule {schedule.name} depends on the total epochs, so a long run's "
            "first epochs are not a short run; use schedule constant or step in the overrides"
        )
    return config


def _tasks(
    names: list[str],
    natural: str,
    out: Path,
    natural_run: Path | None,
    settings: dict[str, Any],
) -> list[RunTask]:
    """The natural run (when the study trains it) and one long fine-tune per preset."""
    runs = out / "runs"
    tasks: list[RunTask] = []
    after: tuple[str, ...] = ()
    if natural_run is None:
        data = merge_overrides(load_preset(natural).plain(), settings["overrides"])
        data["threads"] = settings["threads"]
        config = config_from_dict(data, source=f"budget study: {natural}")
        natural_dir = os.path.normpath(runs / natural)
        tasks.append(RunTask(config.plain(), natural_dir))
        after, preset_run = (natural_dir,), Path("..") / natural
    else:
        preset_run = natural_run.resolve()
    for name in names:
        config = _fine_tune_config(
            name,
            settings["max_epochs"],
            settings["every"],
            settings["threads"],
            settings["overrides"],
            preset_run,
        )
        tasks.append(RunTask(config.plain(), os.path.normpath(runs / name), after))
    return tasks


def _earlier_study(out: Path) -> bool:
    """An unmarked study of an earlier robustrank: its record and its layout only."""
    names = BUDGETS_DIR.top_level()
    return (out / STUDY_FILE).is_file() and all(p.name in names for p in out.iterdir())


def _settings_conflict(out: Path, current: dict[str, Any]) -> str | None:
    """What differs between the study in ``out`` and ``current`` settings (None: nothing)."""
    saved = read_record(out / STUDY_FILE, lambda d: isinstance(d, dict), "a budget study record")
    diff = sorted(k for k in current if saved is not None and saved.get(k) != current[k])
    if not diff:
        return None
    shown = "; ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in diff)
    return (
        f"{out} holds a study with other settings ({shown}). A finished run cannot be "
        "extended or changed in place (its config records epochs); choose a new --out, or "
        "pass --overwrite to delete that study"
    )


def _check_out(out: Path, settings: dict[str, Any], overwrite: bool = False) -> None:
    """Refuse an ``out`` holding another study (unless ``overwrite``, which deletes what the
    study wrote there) or anything robustrank did not write; then mark it."""
    text = json.dumps(settings, indent=2, sort_keys=True) + "\n"
    try:
        claim_dir(
            out,
            BUDGETS_DIR,
            overwrite=overwrite,
            adopt=_earlier_study,
            conflict=lambda: _settings_conflict(out, json.loads(text)),
        )
    except OwnershipError as err:
        raise BudgetError(str(err)) from None
    atomic_write_text(out / STUDY_FILE, text)


# --------------------------------------------------------------------------- results


def _budget_rows(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per recorded epoch: clean accuracy, fooling ratios, effective rank and sparsity."""
    rows = []
    for r in history:
        if r.get("kind") not in ("init", "epoch"):
            continue
        row: dict[str, Any] = {"epoch": int(r["epoch"]), "test_acc": r.get("test_acc")}
        row.update({k: v for k, v in r.items() if k.startswith(_METRIC_PREFIXES)})
        rows.append(row)
    return rows


def _seconds_per_epoch(history: list[dict[str, Any]]) -> float | None:
    last = history[-1] if history else {}
    if not last.get("epoch") or not _finite(last.get("time_train")):
        return None
    return float(last["time_train"]) / int(last["epoch"])


def _preset_budget(task: RunTask) -> PresetBudget:
    history = read_history(task.run_dir)
    paper = (task.config.get("paper") or {}).get("accuracy")
    return PresetBudget(
        preset=task.name,
        paper_accuracy=paper,
        preset_epochs=load_preset(task.name).epochs,
        rows=_budget_rows(history),
        run_dir=task.run_dir,
        seconds_per_epoch=_seconds_per_epoch(history),
    )


def _natural_summary(run_dir: Path) -> dict[str, Any]:
    history = read_history(run_dir)
    rows = _budget_rows(history)
    final = rows[-1] if rows else {}
    saved = _run_config(run_dir)
    return {
        "preset": saved.get("name"),
        "run_dir": str(run_dir),
        "epochs": saved.get("epochs"),
        "paper_accuracy": (saved.get("paper") or {}).get("accuracy"),
        "final": final,
    }


def _plot_layers(configs: list[TrainConfig], rows: list[dict[str, Any]]) -> list[str]:
    """The layers the presets regularise (l1 or nuclear), in forward order; else the first."""
    from ..models import LayerOrderUnknown, create_model
    from ..regularizers import resolve_lambdas

    found: dict[str, int] = {}
    for config in configs:
        model = create_model(config.model.name, **config.model.options)
        for what in ("l1", "nuclear"):
            try:
                chosen = resolve_lambdas(model, getattr(config.regularizers, what), what)
            except LayerOrderUnknown:
                continue
            found.update({layer.key: layer.index for layer, _ in chosen})
    first = rows[0] if rows else {}
    present = [k[len("eff_rank_") :] for k in first if k.startswith("eff_rank_")]
    layers = [k for k in sorted(found, key=found.get) if k in present]
    return layers or present[:1]


# --------------------------------------------------------------------------- outputs


def _summary_budgets(study: BudgetStudy) -> list[int]:
    marks = [b for b in SUMMARY_BUDGETS if b < study.max_epochs and b % study.every == 0]
    return [*marks, study.max_epochs]


def _fmt(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if _finite(value) else "-"


def _gap(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.2f} pt"


def _accuracy_table(study: BudgetStudy) -> list[str]:
    budgets = _summary_budgets(study)
    tol_pt = f"{100 * study.tolerance:g} pt"
    head = ["preset", "paper", "preset budget", *(f"{b} ep" for b in budgets)]
    head += [f"first within {tol_pt}", "best epoch", "gap at best", "closest (gap)", "s/epoch"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in study.presets.values():
        first = p.first_within(study.tolerance)
        closest = p.closest()
        cells = [
            p.preset,
            _fmt(p.paper_accuracy),
            f"{_fmt(p.accuracy_at(p.preset_epochs))} ({p.preset_epochs} ep)",
            *(_fmt(p.accuracy_at(b)) for b in budgets),
            "no paper value"
            if p.paper_accuracy is None
            else (str(first) if first is not None else f"none up to {study.max_epochs}"),
            str(p.best_epoch()),
            _gap(p.best_gap()),
            "-" if closest is None else f"{closest[0]} ({_gap(closest[1])})",
            _fmt(p.seconds_per_epoch, 2),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _structure_table(study: BudgetStudy) -> list[str]:
    attacks = [k for k in next(iter(study.presets.values())).rows[0] if k.startswith("fr_")]
    metrics = [*attacks]
    for layer in study.layers:
        metrics += [f"eff_rank_{layer}", f"eff_sparsity_{layer}"]
    head = ["preset", "epoch", "clean acc.", *metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in study.presets.values():
        epochs = sorted({0, p.preset_epochs, *_summary_budgets(study)})
        for row in (r for r in p.rows if r["epoch"] in epochs):
            digits = [3 if m.startswith("fr_") else 2 for m in metrics]
            cells = [p.preset, str(row["epoch"]), _fmt(row.get("test_acc"))]
            cells += [_fmt(row.get(m), d) for m, d in zip(metrics, digits)]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def budgets_markdown(study: BudgetStudy) -> str:
    """The summary: per preset the paper's accuracy, ours at the preset's budget and at a
    few budgets, the first budget within the tolerance, the gap at the best epoch; then
    fooling ratios and the structure of the regularised layers at those budgets."""
    nat = study.natural
    final = nat.get("final") or {}
    lines = [
        f"# Fine-tuning budgets: {study.family}",
        "",
        f"Every fine-tune starts from {nat.get('preset')} ({nat.get('run_dir')}, "
        f"{nat.get('epochs')} epochs, clean accuracy {_fmt(final.get('test_acc'))}, paper "
        f"{_fmt(nat.get('paper_accuracy'))}) and runs {study.max_epochs} epochs, measured "
        f"every {study.every}; a budget of e epochs is the state after e epochs (constant "
        "learning rate). Accuracies are clean test accuracies; gaps are ours minus the "
        "paper's; s/epoch is training time per epoch without the history evaluations.",
        "",
        *_accuracy_table(study),
        "",
        "## Fooling ratios and structure",
        "",
        *_structure_table(study),
        "",
    ]
    return "\n".join(lines)


def _budgets_csv(study: BudgetStudy) -> str:
    """One line per preset and recorded epoch (missing and non-finite values empty)."""
    rows = [
        {
            "preset": p.preset,
            "paper_accuracy": p.paper_accuracy,
            **{k: v if _present(v) else None for k, v in row.items()},
        }
        for p in study.presets.values()
        for row in p.rows
    ]
    return csv_text(rows)


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and not math.isfinite(value))


def _write_outputs(study: BudgetStudy) -> None:
    """``budgets.json``, ``budgets.csv``, ``budgets.md`` and the figure, each atomically."""
    from ..plots import plot_budget_curves

    out = study.out_dir
    study.files = {
        "json": out / "budgets.json",
        "csv": out / "budgets.csv",
        "md": out / "budgets.md",
        "figure": out / f"budgets-{study.family}.png",
    }
    plot_budget_curves(
        {name: p.rows for name, p in study.presets.items()},
        study.files["figure"],
        paper={name: p.paper_accuracy for name, p in study.presets.items()},
        natural=study.natural.get("final"),
        layers=study.layers,
        title=f"{study.family}: fine-tuning budgets (from {study.natural.get('preset')})",
    )
    atomic_write_text(study.files["csv"], _budgets_csv(study))
    atomic_write_text(study.files["md"], budgets_markdown(study))
    data = json.dumps(study.to_dict(), indent=2, allow_nan=False, default=str)
    atomic_write_text(study.files["json"], data + "\n")


# --------------------------------------------------------------------------- entry point


def budget_study(
    family: str,
    out: Path,
    *,
    max_epochs: int,
    presets: list[str] | None = None,
    natural_run: Path | None = None,
    every: int = 1,
    overrides: dict | None = None,
    executor: str = "local",
    workers: int | None = None,
    address: str | None = None,
    threads: int = 1,
    progress: bool = True,
    overwrite: bool = False,
) -> BudgetStudy:
    """Fine-tune every preset of ``family`` for ``max_epochs`` epochs from one natural run
    and measure each budget (Section 5, Tables 1-2; the paper does not state its budgets).

    Args:
        family: a model family with fine-tuning presets (:func:`list_families`).
        out: study directory; ``out/runs/<preset>`` are ordinary run directories, so an
            interrupted study resumes and a finished one is only re-read.
        max_epochs: epochs of every fine-tune; every budget up to it is read off that run.
        presets: fine-tuning presets of ``family`` (default: all, :func:`family_presets`).
        natural_run: a finished run of the natural preset they fine-tune; default: the
            study trains it into ``out/runs/<natural preset>`` first.
        every: epochs between history rows (``history.every_epochs``).
        overrides: deep-merged into every config the study builds (natural run included);
            the fine-tunes' ``epochs`` and ``history.every_epochs`` are then set from
            ``max_epochs`` and ``every``, so ``epochs`` here sets the natural run's only.
        executor, workers, address: see :func:`robustrank.execution.create_executor`.
        threads: CPU threads of every run (its ``threads`` config key).
        progress: show a progress bar over the runs.
        overwrite: delete a study of other settings in ``out`` first (only the files and
            runs robustrank wrote there; see :mod:`robustrank.ownership`).
    """
    t0 = time.perf_counter()
    if max_epochs < 1 or every < 1 or threads < 1:
        raise BudgetError(
            f"max_epochs, every and threads must be at least 1, got {max_epochs}, {every}, "
            f"{threads}"
        )
    names = list(presets) if presets is not None else family_presets(family)
    if not names:
        raise BudgetError(f"no presets given; pick from {', '.join(family_presets(family))}")
    natural_run = Path(natural_run) if natural_run is not None else None
    natural = _natural_preset([_check_preset(n, family) for n in names], natural_run)
    out = Path(out)
    settings = {
        "family": family,
        "presets": names,
        "max_epochs": max_epochs,
        "every": every,
        "threads": threads,
        "overrides": overrides or {},
        "natural_run": None if natural_run is None else str(natural_run.resolve()),
    }
    tasks = _tasks(names, natural, out, natural_run, settings)
    with create_executor(executor, workers=workers, address=address) as runner:
        _check_out(out, settings, overwrite)  # after the executor's arguments are checked
        _run(tasks, out, runner, progress)
    study = _collect(tasks, settings, out, natural_run, natural)
    study.wall_time = time.perf_counter() - t0
    _write_outputs(study)
    return study


def _run(tasks: list[RunTask], out: Path, runner: Executor, progress: bool) -> None:
    (out / "runs").mkdir(parents=True, exist_ok=True)
    try:
        runner.map(tasks, progress=progress)
    except ValueError as err:  # RunError is a ValueError; the message names the run
        raise BudgetError(f"{err}. Choose a new --out for other settings") from err


def _collect(
    tasks: list[RunTask],
    settings: dict[str, Any],
    out: Path,
    natural_run: Path | None,
    natural: str,
) -> BudgetStudy:
    fine = [t for t in tasks if t.name != natural]
    budgets = {t.name: _preset_budget(t) for t in fine}
    natural_dir = Path(natural_run) if natural_run is not None else out / "runs" / natural
    configs = [config_from_dict(t.config, source=t.name) for t in fine]
    first_rows = next(iter(budgets.values())).rows
    return BudgetStudy(
        family=settings["family"],
        max_epochs=settings["max_epochs"],
        every=settings["every"],
        tolerance=0.01,
        natural=_natural_summary(natural_dir),
        presets=budgets,
        layers=_plot_layers(configs, first_rows),
        out_dir=out,
    )
