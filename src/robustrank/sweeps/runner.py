"""Running a sweep: trial directories, parents of fine-tunes, resume, the results.

Layout of ``OUT``::

    sweep.json            the resolved spec (a different spec in OUT is refused)
    trials/<id>/          one ordinary run directory per trial (id: t007-3fa2c1d0)
    parents/<preset>-seed-<k>/   the natural run a fine-tune base starts from, per seed
    trials.json, trials.csv      one row per trial, rewritten as each trial finishes
    combinations.csv, summary.json, pareto.png, rank_vs_sparsity.png, report.html
    optuna.db             the Optuna study (strategy optuna)

A trial's id is its index plus a hash of its values, so it names the same directory on
every run: re-running an interrupted sweep reuses finished trials and resumes the others
(:func:`robustrank.execution.run_task`). Trials whose values give the same training config
(e.g. every ``structure.budget.method`` at ``fraction: 1``, which leaves the model dense)
share the first one's run: their rows say ``same_as`` and carry its numbers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import atomic_write_text, exclusive_lock
from ..execution import RunOutcome, RunTask, create_executor
from ..ownership import (
    OutputKind,
    OwnershipError,
    check_dir,
    claim_dir,
    read_marker,
    read_record,
)
from ..training.rundir import RUN_DIR
from .fidelity import judge_rung
from .outputs import BUDGET_KEY, COMPRESSION_PNG, PARETO_PNG, REPORT_HTML, SCATTER_PNG
from .registry import get_strategy, planned_trials
from .space import apply_values, merge_overrides
from .spec import SpecError, SweepSpec, check_trial_count, load_spec
from .strategies import OPTUNA_DB
from .table import (
    against_reference,
    combination_label,
    combinations,
    combinations_csv,
    compare_best,
    finished_rows,
    json_safe,
    outcome_row,
    pareto_front,
    rows_csv,
    structure_layers,
)

__all__ = [
    "SweepError",
    "Trial",
    "SweepResult",
    "run_sweep",
    "plan_trials",
    "trial_id",
    "saved_identity",
    "SWEEP_FILE",
    "TRIALS_JSON",
    "TRIALS_CSV",
]

SWEEP_FILE = "sweep.json"
TRIALS_JSON = "trials.json"
TRIALS_CSV = "trials.csv"
LOCK_FILE = ".sweep.lock"
SUMMARY_FILE = "summary.json"
COMBINATIONS_CSV = "combinations.csv"

#: What a sweep directory holds; ``--overwrite`` deletes these and nothing else.
SWEEP_DIR = OutputKind(
    "sweep",
    files=(
        SWEEP_FILE,
        TRIALS_JSON,
        TRIALS_CSV,
        SUMMARY_FILE,
        COMBINATIONS_CSV,
        PARETO_PNG,
        SCATTER_PNG,
        COMPRESSION_PNG,
        REPORT_HTML,
        OPTUNA_DB,
        f"{OPTUNA_DB}-journal",
        f"{OPTUNA_DB}-wal",
        f"{OPTUNA_DB}-shm",
        LOCK_FILE,
    ),
    children={"trials/*": RUN_DIR, "parents/*": RUN_DIR},
    lock=LOCK_FILE,
)


class SweepError(RuntimeError):
    """A sweep cannot run in its output directory (or a trial cannot be built)."""


@dataclass(frozen=True)
class Trial:
    """One point of the space: its id, values, validated config and run directory."""

    id: str
    index: int
    values: dict[str, Any]
    config: dict[str, Any]
    run_dir: Path
    parent: Path | None = None
    same_as: str | None = None


@dataclass
class SweepResult:
    """What :func:`run_sweep` produced (see the module docstring for the files)."""

    spec: SweepSpec
    out_dir: Path
    rows: list[dict[str, Any]]
    front: list[str]
    combinations: list[Any]
    comparison: Any
    figures: list[Path]
    report_html: Path
    wall_time: float
    against_reference: list[Any] = field(default_factory=list)

    def format(self) -> str:
        """What ``robustrank sweep run`` prints: the trial count and the Pareto front, the
        first ten combinations (clean and robust accuracy over seeds), the best-vs-runner-up
        comparison and the report's path, separated by blank lines."""
        front = ", ".join(self.front) or "-"
        lines = [
            f"{len(self.rows)} trials in {self.out_dir}; Pareto front: {front}",
            f"{'combination':<60} {'seeds':>5} {'clean acc.':>15} {'robust acc.':>15}",
        ]
        for c in self.combinations[:10]:
            lines.append(
                f"{c.label()[:60]:<60} {c.clean.n_seeds:>5} {c.clean.format(4):>15} "
                f"{c.robust.format(4):>15}"
            )
        if self.comparison is not None:
            lines += ["", self.comparison.text]
        if self.against_reference:
            lines += ["", "robust accuracy against the reference, paired by seed:"]
            lines += [
                f"  {c.label}: {c.format(4)} ({c.verdict})" for _, c in self.against_reference
            ]
        lines += ["", f"report: {self.report_html}  ({self.wall_time / 60:.1f} min)"]
        return "\n".join(lines)


def trial_id(index: int, values: dict[str, Any]) -> str:
    """``t<index>-<first 8 hex of SHA-256 of the values>``: the same on every run."""
    text = json.dumps(values, sort_keys=True, default=str)
    return f"t{index:03d}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def _normalised(data: Any) -> Any:
    return json.loads(json.dumps(json_safe(data), sort_keys=True, default=str))


# --------------------------------------------------------------------------- directory


def _check_parents_from(path: Path, out: Path) -> Path:
    """The sweep directory ``parents_from`` names, resolved; refused unless it is another
    sweep directory that robustrank wrote and holds a ``parents/`` folder."""
    src = path.resolve()
    if src == out:
        raise SweepError(f"parents_from is the sweep directory itself ({src}); name another")
    try:
        marker = read_marker(src) if src.is_dir() else None
    except OwnershipError as err:
        raise SweepError(f"parents_from: {err}") from None
    if not (src / "parents").is_dir() or marker is None or marker.kind != SWEEP_DIR.name:
        raise SweepError(
            f"parents_from: {src} is not a sweep directory with parent runs (no parents/ "
            "folder, or no robustrank marker); name the --out of a sweep whose trials were "
            "fine-tuned from the same preset"
        )
    return src


def _driver_lock(out: Path) -> contextlib.AbstractContextManager[None]:
    """One driver per sweep directory (released by the OS if it dies)."""
    return exclusive_lock(
        out / LOCK_FILE,
        f"{socket.gethostname()} {os.getpid()}",
        lambda who: SweepError(
            f"another robustrank sweep ({who}) is running in {out}; wait for it or stop "
            "it, or choose another --out"
        ),
    )


def _identity_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _identity_diff(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]


def saved_identity(out: Path) -> Any:
    """The identity recorded in ``out/sweep.json``; None without one."""

    def valid(d: Any) -> bool:
        return isinstance(d, dict) and "identity" in d

    try:
        record = read_record(out / SWEEP_FILE, valid, "a robustrank sweep record")
    except OwnershipError as err:
        raise SweepError(str(err)) from None
    return None if record is None else record["identity"]


def _earlier_sweep(out: Path) -> bool:
    """An unmarked sweep directory of an earlier robustrank (resumed, never deleted)."""
    try:
        record = json.loads((out / SWEEP_FILE).read_text("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(record, dict) and record.get("robustrank_sweep") == 1


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse a file or a directory robustrank did not create as a sweep (changes nothing)."""
    try:
        check_dir(out, SWEEP_DIR, overwrite=overwrite, adopt=_earlier_sweep)
    except OwnershipError as err:
        raise SweepError(str(err)) from None


def _claim(out: Path, spec: SweepSpec, overwrite: bool) -> None:
    """Make ``out`` this spec's directory: refuse another spec's (or a non-sweep directory)
    unless ``overwrite``, which deletes the sweep's own files first; write ``sweep.json``."""
    identity = _normalised(spec.identity())

    def conflict() -> str | None:
        saved = saved_identity(out)
        # a key an earlier robustrank did not write reads as null (e.g. fidelity)
        differing = [] if saved is None else _identity_diff(saved, identity)
        if not differing:
            return None
        diff = ", ".join(differing[:8])
        return (
            f"{out} holds a different sweep (differing: {diff}); choose another --out, or "
            "pass --overwrite (overwrite=True) to delete its trials and start over"
        )

    try:
        claim_dir(out, SWEEP_DIR, overwrite=overwrite, adopt=_earlier_sweep, conflict=conflict)
    except OwnershipError as err:
        raise SweepError(str(err)) from None
    record = {"identity": identity, "robustrank_sweep": 1}
    atomic_write_text(out / SWEEP_FILE, json.dumps(record, indent=2) + "\n")


# --------------------------------------------------------------------------- trials


@dataclass
class _Sweep:
    """The driver's state: the spec, the base config, the rows as trials finish."""

    spec: SweepSpec
    out: Path
    trust_code: bool
    parents_from: Path | None = None
    base: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    layers: list[str] = field(default_factory=list)
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    trials: dict[str, list[Trial]] = field(default_factory=dict)
    by_config: dict[str, Trial] = field(default_factory=dict)
    parents: dict[str, dict[str, Any]] = field(default_factory=dict)
    previous: dict[str, dict[str, Any]] = field(default_factory=dict)
    signal: dict[str, Any] | None = None
    signals: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def setup(self) -> None:
        """Resolve the base, the evaluation, the structure columns and earlier rows."""
        self.base = self.spec.base_config()
        self.evaluation = self.spec.objective.evaluation()
        self.layers = structure_layers(self.base, list(self.spec.space), self.trust_code)
        fidelity, objective = self.spec.fidelity, self.spec.objective
        if fidelity is not None:
            self.signal = fidelity.signal_spec(objective.eps, objective.seed).model_dump(
                mode="json"
            )
        path = self.out / TRIALS_JSON
        if path.exists():
            self.previous = {r["trial"]: r for r in json.loads(path.read_text("utf-8"))["trials"]}

    def make_trial(self, index: int, values: dict[str, Any]) -> Trial:
        """The trial of ``values``: config validated, parent attached (fine-tune bases)."""
        from ..training import ConfigError, config_from_dict

        tid = trial_id(index, values)
        run_dir = self.out / "trials" / tid
        config = apply_values(self.base, values)
        config["name"] = f"{self.spec.name}-{tid}"
        parent = self._parent(config)
        if parent is not None:
            config.setdefault("init", {})["preset_run"] = os.path.relpath(parent, run_dir)
        try:
            valid = config_from_dict(config, source=f"trial {tid}", trust_code=self.trust_code)
        except ConfigError as err:
            raise SpecError(f"the values {values} make an invalid config: {err}") from None
        trial = Trial(tid, index, dict(values), config, run_dir, parent)
        return self._register(trial, valid.equivalence_key())

    def _register(self, trial: Trial, key: str) -> Trial:
        """Index ``trial`` by run directory; a trial whose config trains the same run as an
        earlier trial's (``TrainConfig.equivalence_key``) shares that run (``same_as``)."""
        first = self.by_config.setdefault(key, trial)
        if first.id != trial.id:
            # the first trial's config too: its run is named after it (a later batch of an
            # adaptive strategy may ask for the same values again)
            trial = dataclasses.replace(
                trial, run_dir=first.run_dir, config=first.config, same_as=first.id
            )
        runs = self.trials.setdefault(str(trial.run_dir), [])
        runs[:] = [t for t in runs if t.id != trial.id] + [trial]
        return trial

    def _parent(self, config: dict[str, Any]) -> Path | None:
        """The parent run directory of a fine-tune trial, registered once per config."""
        from ..training import ConfigError, config_from_dict, load_preset

        preset = (config.get("init") or {}).get("from_preset")
        if not preset:
            return None
        seed = config.get("seed", 0)
        data = merge_overrides(load_preset(preset).plain(), self.spec.parent_overrides)
        data.update(seed=seed, threads=config.get("threads"), device=config.get("device", "cpu"))
        try:
            config_from_dict(data, source="parent_overrides", trust_code=self.trust_code)
        except ConfigError as err:
            raise SpecError(str(err)) from None
        parent = self.out / "parents" / f"{preset}-seed-{seed}"
        known = self.parents.setdefault(str(parent), data)
        if _normalised(known) != _normalised(data):
            raise SpecError(
                f"trials with seed {seed} need different {preset} parent runs (their threads "
                "or device differ); do not sweep threads or device with a fine-tune base"
            )
        if known is data and self.parents_from is not None:
            self._adopt_parent(parent, data)
        return parent

    def _adopt_parent(self, parent: Path, data: dict[str, Any]) -> None:
        """Copy the finished parent run of the same name from ``parents_from`` into
        ``parent`` (absent here), after checking that it was trained with this sweep's
        parent config; the copy is renamed into place, so a crash leaves no partial run."""
        from ..training import config_from_dict
        from ..training.rundir import CONFIG_FILE, DONE_FILE, config_diff
        from ..yamlio import load_yaml_file

        assert self.parents_from is not None
        src = self.parents_from / "parents" / parent.name
        if parent.exists() or not (src / DONE_FILE).is_file():
            return
        saved = load_yaml_file(src / CONFIG_FILE)
        have = config_from_dict(saved, source=str(src / CONFIG_FILE), trust_code=self.trust_code)
        need = config_from_dict(data, source="parent_overrides", trust_code=self.trust_code)
        diff = config_diff(have.plain(), need.plain())
        if diff:
            raise SpecError(
                f"parents_from: {src} was trained with another config than this sweep's "
                f"{parent.name} needs; differing keys:\n" + "\n".join(diff) + "\nPoint "
                "parents_from at a sweep with the same base and parent_overrides, or leave "
                "it out to train the parents here"
            )
        tmp = parent.with_name(parent.name + ".partial-copy")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        os.replace(tmp, parent)

    def tasks(self, trials: list[Trial], until_epoch: int | None = None) -> list[RunTask]:
        """The parents these trials need, then the trials (one task per run directory), for
        one ``executor.map``; with ``until_epoch``, the trials' tasks are that rung's
        (train up to it and measure the signal; parents always train to the end)."""
        parents = sorted({str(t.parent) for t in trials if t.parent is not None})
        first: dict[str, Trial] = {}
        for t in trials:
            first.setdefault(str(t.run_dir), t)
        runs = list(first.values())
        for path in [*parents, *(str(t.run_dir) for t in runs)]:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        tasks = [RunTask(self.parents[p], p, trust_code=self.trust_code) for p in parents]
        for t in runs:
            after = (str(t.parent),) if t.parent is not None else ()
            rung = until_epoch is not None
            task = RunTask(
                t.config,
                str(t.run_dir),
                after,
                None if rung else self.evaluation,
                self.trust_code,
                until_epoch=until_epoch,
                signal=self.signal if rung else None,
            )
            tasks.append(task)
        return tasks

    def head(self, trial: Trial) -> dict[str, Any]:
        """The identifying columns of a trial's row (``same_as``: the trial whose run it
        shares)."""
        head = {
            "trial": trial.id,
            "index": trial.index,
            "values": trial.values,
            "run_dir": os.path.relpath(trial.run_dir, self.out),
        }
        return head if trial.same_as is None else {**head, "same_as": trial.same_as}

    def pending(self, trials: list[Trial]) -> None:
        """Add rows for trials about to run (a finished earlier row is kept)."""
        from ..training.rundir import DONE_FILE

        for t in trials:
            old = self.previous.get(t.id)
            done = old is not None and old.get("status") == "done"
            if done and (t.run_dir / DONE_FILE).exists():
                self.rows[t.id] = old
            else:
                self.rows[t.id] = {**self.head(t), "status": "pending"}
        self.write()

    def record(self, outcome: RunOutcome) -> None:
        """``on_done``: a run finished (parents are not rows): the rows of every trial it
        serves; rewrite the tables."""
        for trial in self._serves(outcome):
            self.rows[trial.id] = self._row(trial, outcome)
        self.write()

    def _serves(self, outcome: RunOutcome) -> list[Trial]:
        """The trials whose rows ``outcome`` fills: those sharing its run, except the ones
        stopped at a rung (another trial of the same config may have gone on)."""
        trials = self.trials.get(outcome.run_dir, [])
        return [t for t in trials if self.rows.get(t.id, {}).get("status") != "stopped"]

    def record_signal(self, outcome: RunOutcome) -> None:
        """``on_done`` of a rung: the signal of every trial the run serves (parents have
        none), their rows ``paused`` with it; rewrite the tables."""
        if outcome.signal is None:
            return
        for trial in self._serves(outcome):
            self.signals.setdefault(trial.id, []).append(outcome.signal)
            self.rows[trial.id] = {
                **self.head(trial),
                "status": "paused",
                **self.signal_columns(trial),
            }
        self.write()

    def signal_columns(self, trial: Trial) -> dict[str, Any]:
        """The trial's last rung signal and the time its rungs took (empty without rungs);
        a trial sharing another's run costs no time itself."""
        measured = self.signals.get(trial.id)
        if not measured:
            return {}
        last = measured[-1]
        seconds = 0.0 if trial.same_as is not None else sum(s["seconds"] for s in measured)
        return {
            "signal_epoch": last["epoch"],
            "signal_clean": last["clean_acc"],
            "signal_robust": last["robust_acc"],
            "rung_seconds": seconds,
        }

    def stop(self, trial: Trial, reason: str) -> None:
        """Mark ``trial`` stopped at its last rung for ``reason`` (its run stays paused)."""
        columns = self.signal_columns(trial)
        self.rows[trial.id] = {
            **self.head(trial),
            "status": "stopped",
            **columns,
            "seconds": columns.get("rung_seconds", 0.0),
            "stop_reason": reason,
        }

    def _row(self, trial: Trial, outcome: RunOutcome) -> dict[str, Any]:
        """A finished trial's row; a trial sharing another's run costs no time itself."""
        row = outcome_row(
            self.head(trial),
            outcome.final,
            outcome.evaluation,
            self.spec.objective.attack,
            self.layers,
        )
        old = self.previous.get(trial.id) or {}
        keep = outcome.reused and old.get("status") == "done"
        shared = trial.same_as is not None
        row["seconds"] = old.get("seconds") if keep else (0.0 if shared else outcome.seconds)
        row["worker"] = old.get("worker") if keep else outcome.worker
        row["reused"] = outcome.reused or shared
        columns = self.signal_columns(trial)
        if columns and not keep:  # the rungs' time counts towards the trial's
            row["seconds"] = (row["seconds"] or 0.0) + columns["rung_seconds"]
        return {**row, **columns}

    def sorted_rows(self) -> list[dict[str, Any]]:
        """The rows in trial order."""
        return sorted(self.rows.values(), key=lambda r: r["index"])

    def write(self) -> None:
        """Rewrite ``trials.json`` and ``trials.csv`` atomically."""
        rows = [json_safe(r) for r in self.sorted_rows()]
        payload = {
            "sweep": self.spec.name,
            "strategy": self.spec.strategy,
            "objective": self.spec.objective.model_dump(mode="json"),
            "layers": self.layers,
            "trials": rows,
        }
        atomic_write_text(self.out / TRIALS_JSON, json.dumps(payload, indent=2) + "\n")
        atomic_write_text(self.out / TRIALS_CSV, rows_csv(rows))


def _objectives(outcome: RunOutcome, attack: str) -> tuple[float, float]:
    clean = outcome.final.get("test_acc")
    robust = ((outcome.evaluation or {}).get(attack) or {}).get("robust_accuracy")
    if clean is None or robust is None:
        raise SweepError(f"trial {outcome.name} finished without clean or robust accuracy")
    return float(clean), float(robust)


# --------------------------------------------------------------------------- strategies


def plan_trials(spec: SweepSpec, out: str | Path, trust_code: bool = False) -> list[Trial]:
    """The trials a grid or random sweep into ``out`` would run (validated; nothing runs);
    a spec of more trials than its limit is refused first (:func:`check_trial_count`)."""
    if get_strategy(spec.strategy).adaptive:
        raise ValueError(
            f"strategy {spec.strategy} asks for trials as results come in; nothing to plan"
        )
    check_trial_count(spec)
    state = _Sweep(spec, Path(out).resolve(), trust_code)
    state.setup()
    return [state.make_trial(i, v) for i, v in enumerate(planned_trials(spec) or [])]


def _run_planned(state: _Sweep, executor: Any, progress: bool) -> None:
    """grid / random: every trial (and every parent) in one ``executor.map``."""
    values = planned_trials(state.spec) or []
    trials = [state.make_trial(i, v) for i, v in enumerate(values)]
    state.pending(trials)
    executor.map(state.tasks(trials), progress=progress, on_done=state.record)


def _run_halving(state: _Sweep, executor: Any, progress: bool) -> None:
    """halving: every planned trial up to the first rung, then only the combinations
    :func:`~.fidelity.judge_rung` keeps up to the next, and so on; the survivors train to
    the end and get the objective. Decisions wait for the whole rung, so they do not
    depend on the executor or on completion order."""
    fidelity = state.spec.fidelity
    assert fidelity is not None
    values = planned_trials(state.spec) or []
    alive = [state.make_trial(i, v) for i, v in enumerate(values)]
    state.pending(alive)
    for epoch in fidelity.rungs:
        if progress:
            print(f"rung: epoch {epoch}, {len(alive)} trials", file=sys.stderr)
        executor.map(
            state.tasks(alive, until_epoch=epoch), progress=progress, on_done=state.record_signal
        )
        verdicts = judge_rung(
            _combination_signals(state, alive),
            fidelity.eta,
            fidelity.clean_tolerance,
            fidelity.robust_margin,
        )
        going = []
        for t in alive:
            verdict = verdicts[combination_label(t.values)]
            if verdict.kept:
                going.append(t)
            else:
                state.stop(t, verdict.reason)
        alive = going
        state.write()
    executor.map(state.tasks(alive), progress=progress, on_done=state.record)


def _combination_signals(state: _Sweep, trials: list[Trial]) -> dict[str, tuple[float, float]]:
    """Each combination's mean last signal over its trials (seeds): ``(clean, robust)``."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for t in trials:
        groups.setdefault(combination_label(t.values), []).append(state.signals[t.id][-1])
    return {
        key: (
            sum(s["clean_acc"] for s in group) / len(group),
            sum(s["robust_acc"] for s in group) / len(group),
        )
        for key, group in groups.items()
    }


def _next_batch(driver: Any, n_trials: int, batch: int) -> list[tuple[int, dict]]:
    """Trials a killed driver left RUNNING, else up to ``batch`` new ones, else none."""
    unfinished = driver.unfinished()
    if unfinished:
        return unfinished
    left = n_trials - len(driver.completed()) - len(driver.pruned())
    return driver.ask(min(batch, left)) if left > 0 else []


def _pruned_rungs(state: _Sweep, driver: Any, executor: Any, trials: list[Trial]) -> list[Trial]:
    """optuna with ``fidelity.pruner``: the batch rung by rung; after each rung every
    trial's robust signal goes to the pruner (in trial order, once the rung is complete),
    which stops it or lets it go on. Returns the trials that passed every rung."""
    fidelity = state.spec.fidelity
    assert fidelity is not None
    alive = trials
    for epoch in fidelity.rungs:
        if not alive:
            break
        tasks = state.tasks(alive, until_epoch=epoch)
        executor.map(tasks, progress=False, on_done=state.record_signal)
        going = []
        for t in alive:
            if driver.report(t.index, epoch, state.signals[t.id][-1]["robust_acc"]):
                driver.prune(t.index)
                state.stop(t, _pruned_reason(state, epoch))
            else:
                going.append(t)
        alive = going
    return alive


def _pruned_reason(state: _Sweep, epoch: int | None) -> str:
    """A pruned trial's ``stop_reason``."""
    pruner = state.spec.fidelity.pruner if state.spec.fidelity is not None else None
    return f"pruned by Optuna's {pruner} pruner at epoch {epoch}"


def _load_signals(state: _Sweep, trial: Trial, until: int | None = None) -> None:
    """The signals ``trial``'s run stored at its rungs (up to epoch ``until``)."""
    from ..evaluation import SignalSpec, stored_signal

    if state.signal is None or state.spec.fidelity is None:
        return
    spec = SignalSpec.model_validate(state.signal)
    rungs = [e for e in state.spec.fidelity.rungs if until is None or e <= until]
    found = [stored_signal(trial.run_dir, e, spec) for e in rungs]
    state.signals[trial.id] = [s for s in found if s is not None]


def _restore_pruned(state: _Sweep, driver: Any) -> int:
    """The rows of trials an earlier driver pruned, from their stored signals."""
    assert state.spec.fidelity is not None
    pruned = [state.make_trial(n, v) for n, v in driver.pruned()]
    for t in pruned:
        epoch = driver.pruned_at(t.index)
        _load_signals(state, t, epoch)
        state.stop(t, _pruned_reason(state, epoch))
    return len(pruned)


def _run_adaptive(state: _Sweep, executor: Any, batch: int, progress: bool) -> None:
    """optuna (any adaptive strategy): re-run trials a killed driver left RUNNING (their run
    directories resume) and tell them, then ask ``batch`` trials at a time until
    ``n_trials`` are complete (or pruned, with ``fidelity.pruner``)."""
    from tqdm.auto import tqdm

    driver = get_strategy(state.spec.strategy).driver(state.spec, state.out)
    n_trials = state.spec.n_trials or 0
    attack = state.spec.objective.attack
    pruning = state.spec.fidelity is not None
    # every trial the study knows, registered in trial order: a trial sharing a run with
    # an earlier one (same_as) then names the same run however the driver was interrupted
    known = driver.completed() + driver.unfinished() + (driver.pruned() if pruning else [])
    for n, v in sorted(known, key=lambda item: item[0]):
        state.make_trial(n, v)
    done = [state.make_trial(n, v) for n, v in driver.completed()]
    for t in done:
        _load_signals(state, t)
    state.pending(done)
    missing = [t for t in done if state.rows[t.id].get("status") != "done"]
    if missing:  # finished runs whose rows were lost: reused, not retrained
        executor.map(state.tasks(missing), progress=False, on_done=state.record)
    stopped = _restore_pruned(state, driver) if pruning else 0
    bar = tqdm(
        total=n_trials,
        initial=len(done) + stopped,
        desc="trials",
        unit="trial",
        disable=not progress,
    )
    try:
        while asked := _next_batch(driver, n_trials, batch):
            trials = [state.make_trial(n, v) for n, v in asked]
            state.pending(trials)
            alive = _pruned_rungs(state, driver, executor, trials) if pruning else trials
            outcomes = executor.map(state.tasks(alive), progress=False, on_done=state.record)
            by_dir = {o.run_dir: o for o in outcomes}
            for t in alive:
                driver.tell(t.index, *_objectives(by_dir[str(t.run_dir)], attack))
            state.write()
            bar.update(len(trials))
    finally:
        bar.close()


# --------------------------------------------------------------------------- results


def _finish(state: _Sweep, wall_time: float) -> SweepResult:
    """The Pareto front, the summary over seeds, the figures and the report."""
    from .outputs import plot_compression, plot_pareto, plot_rank_sparsity, write_report

    out, rows = state.out, state.sorted_rows()
    state.write()
    done = finished_rows(rows)
    front = [
        done[i]["trial"] for i in pareto_front([(r["clean_acc"], r["robust_acc"]) for r in done])
    ]
    combos = combinations(rows)
    comparison = compare_best(combos)
    against = against_reference(combos, state.spec.reference) if state.spec.reference else []
    layer = state.layers[0] if state.layers else _first_layer(rows)
    figures = [
        (
            "Clean against robust accuracy; the Pareto front in red.",
            plot_pareto(rows, front, out / PARETO_PNG),
        ),
        (
            f"Effective rank against effective sparsity of {layer}, coloured by robust accuracy.",
            plot_rank_sparsity(rows, layer, out / SCATTER_PNG),
        ),
    ]
    if BUDGET_KEY in state.spec.space:
        caption = "Robust accuracy against compression, per method (mean, 95% t over seeds)."
        figures.append((caption, plot_compression(rows, out / COMPRESSION_PNG)))
    summary = {
        "spec": state.spec.model_dump(mode="json"),
        "total": len(rows),
        "done": len(done),
        "stopped": sum(r.get("status") == "stopped" for r in rows),
        "trial_seconds": sum(r.get("seconds") or 0.0 for r in rows),
        "signal": state.signal,
        "wall_time": wall_time,
        "pareto_front": front,
        "combinations": [c.to_dict() for c in combos],
        "comparison": None if comparison is None else comparison.to_dict(),
        "against_reference": [cmp.to_dict() for _, cmp in against],
    }
    atomic_write_text(out / SUMMARY_FILE, json.dumps(json_safe(summary), indent=2) + "\n")
    atomic_write_text(out / COMBINATIONS_CSV, combinations_csv(combos))
    report = write_report(
        out / REPORT_HTML,
        summary=summary,
        rows=rows,
        combos=combos,
        comparison=comparison,
        figures=figures,
        layer=layer,
        against=against,
    )
    paths = [p for _, p in figures]
    return SweepResult(
        state.spec, out, rows, front, combos, comparison, paths, report, wall_time, against
    )


def _first_layer(rows: list[dict[str, Any]]) -> str | None:
    for row in rows:
        for key in row:
            if key.startswith("eff_rank_"):
                return key[len("eff_rank_") :]
    return None


# --------------------------------------------------------------------------- entry point


def _batch_size(spec: SweepSpec, executor: str, workers: int | None) -> int:
    if spec.batch is not None:
        return spec.batch
    if workers is not None:
        return workers
    return (os.cpu_count() or 1) if str(executor).lower() == "ray" else 1


def run_sweep(
    spec: SweepSpec | str | Path,
    out: str | Path,
    *,
    executor: str = "local",
    workers: int | None = None,
    address: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
    trust_code: bool = False,
    max_trials: int | None = None,
    parents_from: str | Path | None = None,
) -> SweepResult:
    """Run (or resume) a sweep into ``out`` and write its tables, figures and report.

    Args:
        spec: a :class:`SweepSpec`, a spec file or a bundled spec name.
        out: the sweep directory; a directory of another spec is refused unless
            ``overwrite``, which deletes it first.
        executor, workers, address: see :func:`robustrank.execution.create_executor`.
        progress: show progress bars.
        trust_code: allow a model named by import path.
        max_trials: refuse a spec of more trials (default: the spec's ``max_trials``, else
            :data:`~robustrank.sweeps.spec.DEFAULT_MAX_TRIALS`), before anything is written.
        parents_from: another sweep directory whose finished parent runs (fine-tune bases)
            this sweep reuses, copied into ``out/parents`` where the parent config is the
            same (a different one is refused); the others are trained here.
    """
    t0 = time.perf_counter()
    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec, max_trials=max_trials)
    check_trial_count(spec, max_trials)
    out = Path(out).resolve()
    source = None if parents_from is None else _check_parents_from(Path(parents_from), out)
    _check_out(out, overwrite)  # before the lock file, so a refused directory stays as it was
    with _driver_lock(out):
        _claim(out, spec, overwrite)
        state = _Sweep(spec, out, trust_code, parents_from=source)
        state.setup()
        with create_executor(executor, workers=workers, address=address) as ex:
            strategy = get_strategy(spec.strategy)
            if strategy.adaptive:
                _run_adaptive(state, ex, _batch_size(spec, executor, workers), progress)
            elif strategy.multi_fidelity:
                _run_halving(state, ex, progress)
            else:
                _run_planned(state, ex, progress)
        return _finish(state, time.perf_counter() - t0)
