"""Reproduce the paper end to end (Section 5, Appendix A): train every model with N
independent seeds, then render Tables 1 and 2 with intervals, the equivalents of Figures
1-10, the Section 3 figure, the claims as comparisons with verdicts, and an offline HTML
report.

Runs are ordinary training runs (``robustrank.training.train``) under
``OUT/runs/<preset>/seed-<k>``, each one a :class:`~robustrank.execution.RunTask` (train,
then the final evaluation of its model, cached in the run directory) handed to an executor:
``local`` (this process, one run after another) or ``ray`` (in parallel, on this machine or
a cluster). Seed ``k`` of a preset has ``seed = base seed + k``; a fine-tune starts from
seed ``k`` of its natural parent. A finished run is reused and an interrupted one resumed,
so calling :func:`reproduce` again continues where it stopped, and raising ``seeds`` trains
only the new seeds. Every run's ``threads`` is set to the same value, so its numbers do not
depend on the executor or the number of workers. Everything derived (figures, tables,
report) is rebuilt from the runs each time.

The steps live in sibling modules: :mod:`.profiles` (what runs), :mod:`.summary` (run
summaries, metrics over seeds and Tables 1-2), :mod:`.claims` (comparisons and verdicts),
:mod:`.figures` and :mod:`.report_builder` (the written outputs); the final evaluation of
every model (the paper's attacks with per-example outcomes, AutoAttack, robustness curves
and diagnostics) is :mod:`robustrank.evaluation.spec`. Their public names are re-exported
here.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .._io import atomic_write_text as write_text_atomic
from .._modes import resolve_device
from ..evaluation import EvaluationSpec
from ..execution import (
    Executor,
    ExecutorName,
    LocalExecutor,
    OnDone,
    RunOutcome,
    RunTask,
    create_executor,
)
from ..ownership import OutputKind, OwnershipError, claim_dir, read_record
from ..training import TrainConfig, config_from_dict
from ..training.rundir import CONFIG_FILE, RUN_DIR, read_history
from .claims import Claim, assess_claims
from .figures import forest_figures, paper_figures
from .profiles import (
    Profile,
    ProfileName,
    SeededRun,
    check_seeds,
    is_seed_dir_name,
    load_profile,
    profile_configs,
    seeded_runs,
)
from .report_builder import ReproduceResult, write_reproduce_outputs
from .summary import PresetSummary, RunSummary, build_tables, summarise_run, table_attacks

__all__ = [
    "ProfileName",
    "Profile",
    "load_profile",
    "profile_configs",
    "seeded_runs",
    "reproduce",
    "ReproduceResult",
    "ReproduceError",
    "RunSummary",
    "PresetSummary",
    "Claim",
    "assess_claims",
    "EvaluationSpec",
]

PROFILE_FILE = "profile.json"

#: What a reproduce output holds; ``--overwrite`` deletes these and nothing else.
REPRODUCE_DIR = OutputKind(
    "reproduce",
    files=(
        PROFILE_FILE,
        "results.json",
        "history.csv",
        "report.html",
        "report.md",
        "tables/*.csv",
        "figures/*.png",
        "figures/claims/*.png",
        "theory/theory.json",
        "theory/theory.png",
    ),
    children={"runs/*/seed-*": RUN_DIR},
)


class ReproduceError(RuntimeError):
    """The output directory or the profile cannot be used as asked."""


# --------------------------------------------------------------------------- pipeline


def _check_out_dir(
    out: Path, profile: Profile, configs: list[TrainConfig], seeds: int, overwrite: bool
) -> None:
    """Refuse an ``out`` of another profile (unless ``overwrite``), of an earlier run layout
    or not written by reproduce; with ``overwrite`` delete what reproduce wrote there
    (:mod:`robustrank.ownership`); then mark it. The same profile with fewer (or more)
    seeds is accepted."""
    adopt = functools.partial(_earlier_output, configs=configs)
    _refuse_old_layout(out)

    def conflict() -> str | None:
        saved = _saved_profile(out)
        if saved is None or saved == profile.name:
            return None
        return (
            f"{out} holds results of profile {saved!r}, not {profile.name!r}; choose another "
            "--out, or pass --overwrite to delete them"
        )

    try:
        claim_dir(out, REPRODUCE_DIR, overwrite=overwrite, adopt=adopt, conflict=conflict)
    except OwnershipError as err:
        raise ReproduceError(str(err)) from None
    marker_data = {
        "profile": profile.name,
        "seeds": seeds,
        "layout": "runs/<preset>/seed-<k>",
        "runs": [c.name for c in configs],
    }
    write_text_atomic(out / PROFILE_FILE, json.dumps(marker_data, indent=2))


def _saved_profile(out: Path) -> str | None:
    """The profile named by ``out/profile.json``; None without one."""

    def valid(d: Any) -> bool:
        return isinstance(d, dict) and isinstance(d.get("profile"), str)

    saved = read_record(out / PROFILE_FILE, valid, "a reproduce record naming a 'profile'")
    return None if saved is None else saved["profile"]


def _earlier_output(out: Path, configs: list[TrainConfig]) -> bool:
    """An unmarked output of an earlier reproduce (its record and its layout only), or
    separately trained runs of this profile's presets (:func:`_only_preset_runs`)."""
    if _only_preset_runs(out, configs):
        return True
    try:
        recognised = _saved_profile(out) is not None
    except OwnershipError:
        return False
    return recognised and all(p.name in REPRODUCE_DIR.top_level() for p in out.iterdir())


def _refuse_old_layout(out: Path) -> None:
    """Runs of the layout before seeds (``runs/<preset>/config.yaml``) are not reused."""
    runs = out / "runs"
    old = sorted(p.parent.name for p in runs.glob(f"*/{CONFIG_FILE}")) if runs.is_dir() else []
    if old:
        raise ReproduceError(
            f"{runs} holds runs of an earlier layout ({', '.join(old)} directly under "
            "runs/<preset>); reproduce now keeps seed k of every preset in "
            "runs/<preset>/seed-<k>. Choose another --out, or delete them yourself (--overwrite "
            "deletes only what this robustrank wrote)"
        )


def _only_preset_runs(out: Path, configs: list[TrainConfig]) -> bool:
    """``out`` holds nothing but ``runs/<preset>/seed-<k>`` directories of this profile's
    presets.

    Such a directory is adopted: runs trained separately with ``robustrank train --preset
    NAME --out OUT/runs/NAME/seed-0`` (e.g. on several machines) are reused if their configs
    equal the profile's, and refused by :func:`train` with the differing keys otherwise.
    """
    names = {c.name for c in configs}
    entries = list(out.iterdir()) if out.is_dir() else []
    if [e.name for e in entries] != ["runs"] or not entries[0].is_dir():
        return False
    for run in entries[0].iterdir():
        if not (run.is_dir() and run.name in names):
            return False
        if not all(s.is_dir() and is_seed_dir_name(s.name) for s in run.iterdir()):
            return False
    return True


def _with_threads(configs: list[TrainConfig], threads: int) -> list[TrainConfig]:
    """Every config with ``threads`` CPU threads (validated like any config key)."""
    return [
        config_from_dict({**c.plain(), "threads": threads}, source=f"--threads for {c.name}")
        for c in configs
    ]


def _tasks(runs: list[SeededRun], runs_dir: Path, prof: Profile) -> list[RunTask]:
    """One task per seeded run: train into ``runs_dir/<preset>/seed-<k>`` after the run it
    fine-tunes (seed ``k`` of its parent), then evaluate the final model with its
    family's evaluation (:meth:`Profile.evaluation_of`)."""
    tasks = []
    for run in runs:
        spec = prof.evaluation_of(run.preset)
        evaluation = spec.model_dump() if spec is not None else None
        config = run.config
        run_dir = runs_dir / run.rel_dir
        after: tuple[str, ...] = ()
        if config.init.from_preset is not None:  # train() resolves the parent the same way
            parent = runs_dir / config.init.from_preset
            if config.init.preset_run is not None:
                parent = run_dir / config.init.preset_run
            after = (os.path.normpath(parent),)
        tasks.append(RunTask(config.plain(), os.path.normpath(run_dir), after, evaluation))
    return tasks


# Histories and evaluations by preset, one entry per seed index.
PerSeed = dict[str, list[Any]]


def _run_all(
    runs: list[SeededRun],
    runs_dir: Path,
    prof: Profile,
    executor: Executor,
    progress: bool,
    on_done: OnDone | None = None,
) -> tuple[PerSeed, PerSeed]:
    """Train (or reuse, or resume) and evaluate every seeded run on ``executor``; the
    histories and the final evaluations by preset, as lists by seed index."""
    tasks = _tasks(runs, runs_dir, prof)
    for name in {run.preset for run in runs}:  # where every worker must see the runs
        (runs_dir / name).mkdir(parents=True, exist_ok=True)
    try:
        outcomes = executor.map(tasks, progress=progress, on_done=on_done)
    except ValueError as err:  # RunError is a ValueError; the message names the run
        raise ReproduceError(f"{err}. Use another --out or --overwrite") from err
    histories: PerSeed = {}
    evaluations: PerSeed = {}
    for run, task, outcome in zip(runs, tasks, outcomes):
        histories.setdefault(run.preset, []).append(read_history(task.run_dir))
        evaluations.setdefault(run.preset, []).append(outcome.evaluation)
    return histories, evaluations


def _presets(
    runs: list[SeededRun], histories: PerSeed, evaluations: PerSeed, spec: EvaluationSpec | None
) -> dict[str, PresetSummary]:
    """Every preset's :class:`PresetSummary` over its seeds, in config order."""
    by_preset: dict[str, list[RunSummary]] = {}
    strong_attack = spec.attack if spec is not None else None
    for run in runs:
        h, ev = histories[run.preset][run.index], evaluations[run.preset][run.index]
        summary = summarise_run(
            run.config, h, ev, seed_index=run.index, strong_attack=strong_attack
        )
        by_preset.setdefault(run.preset, []).append(summary)
    return {name: PresetSummary.from_runs(seeds) for name, seeds in by_preset.items()}


def _theory(out: Path, spec: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    """Section 3's linear-classifier experiment (Theorem 1), cached by its settings."""
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


T = TypeVar("T")


def _beside(fn: Callable[..., T], *args: Any) -> Future[T]:
    """``fn(*args)`` in a spawned process, beside this process's work (and the runs' worker
    processes). It computes what this process would: the same default thread count."""
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    try:
        return pool.submit(fn, *args)
    finally:
        pool.shutdown(wait=False)


@dataclass
class _AfterFirstRun:
    """An executor's ``on_done`` that starts ``fn(*args)`` :func:`_beside` the runs when the
    first run has finished. By then the trainings that other runs wait for have gone
    first (the executors train before they evaluate), so it shares the cores with
    evaluations only and does not delay the fine-tunes."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    future: Future[Any] | None = None

    def __call__(self, outcome: RunOutcome) -> None:
        if self.future is None:
            self.future = _beside(self.fn, *self.args)

    def wait(self) -> None:
        """Wait for it; a failure is not raised here (the caller computes again)."""
        if self.future is not None:
            self.future.exception()


def _figures(
    out: Path,
    runs: list[SeededRun],
    histories: PerSeed,
    evaluations: PerSeed,
    claims: list[Claim],
    beside: bool,
) -> tuple[list[tuple[str, Path]], list[list[tuple[str, Path]]]]:
    """The paper's figures of seed 0 and the claims' forest plots (the latter in a
    process :func:`_beside` this one when ``beside``)."""
    forests = _beside(forest_figures, out, claims) if beside else None
    first = [r for r in runs if r.index == 0]
    figures = paper_figures(
        out,
        [r.config for r in first],
        {name: h[0] for name, h in histories.items()},
        {r.preset: out / "runs" / r.rel_dir for r in first},
        {name: ev[0] for name, ev in evaluations.items() if ev[0] is not None},
    )
    return figures, forests.result() if forests is not None else forest_figures(out, claims)


def reproduce(
    profile: str | ProfileName = "quick",
    out: str | Path | None = None,
    *,
    only: str | None = None,
    device: str = "cpu",
    seed: int | None = None,
    seeds: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    executor: str | ExecutorName = ExecutorName.local,
    workers: int | None = None,
    address: str | None = None,
    threads: int = 1,
) -> ReproduceResult:
    """Train every model of Section 5 with ``seeds`` seeds and render the paper's tables
    (mean ± 95% interval), figures and claims (comparisons with verdicts).

    Args:
        profile: a bundled profile (:class:`ProfileName`): ``"quick"`` (a few minutes on
            two cores), ``"paper"`` (the paper's settings), ``"paper-long"`` (``paper`` with
            the strong evaluation on 1000 inputs) or ``"tiny"`` (smoke test).
        out: output directory (default ``results/<profile>``). Finished runs there are
            reused, interrupted ones resumed.
        only: ``"fcnn"`` or ``"cnn"`` to run one architecture.
        device: ``"cpu"`` or ``"cuda"``.
        seed: base seed of every run (default: each preset's own); seed ``k`` gets
            ``seed + k``.
        seeds: independent seeds per preset (default: the profile's ``seeds``); runs live
            in ``out/runs/<preset>/seed-<k>``.
        overwrite: discard previous runs in ``out``.
        progress: show progress bars.
        executor: ``"local"`` (this process, one run after another) or ``"ray"`` (Ray
            tasks; see :class:`~robustrank.execution.ray_executor.RayExecutor`).
        workers: ray: CPUs of the local Ray instance (default: all cores).
        address: ray: join this cluster (``HOST:PORT``) instead; default ``RAY_ADDRESS``.
            ``OUT`` must then be on a filesystem every node mounts at the same path.
        threads: CPU threads of every run (its ``threads`` config key; a Ray task reserves
            as many CPUs). Fixed per run, so the numbers do not depend on the executor or
            on ``workers``; runs reused from ``out`` must have been trained with the same.
    """
    t0 = time.perf_counter()
    prof = load_profile(profile)
    n_seeds = check_seeds(prof.seeds if seeds is None else seeds)
    try:
        resolve_device(device)  # before anything is written
    except ValueError as err:
        raise ReproduceError(str(err)) from None
    out = Path(out) if out is not None else Path("results") / prof.name
    configs = _with_threads(profile_configs(prof, only=only, device=device, seed=seed), threads)
    runs = seeded_runs(configs, n_seeds)
    with create_executor(executor, workers=workers, address=address) as runner:
        if isinstance(runner, LocalExecutor):
            runner.progress_per_run = True  # each run's epoch bar, as `train` shows it
        _check_out_dir(out, prof, configs, n_seeds, overwrite)
        runs_dir = out / "runs"
        # runs in worker processes leave this one free for work beside them
        beside = not isinstance(runner, LocalExecutor)
        theory_job = _AfterFirstRun(_theory, (out, prof.theory))
        on_done = theory_job if beside and prof.theory else None
        histories, evaluations = _run_all(runs, runs_dir, prof, runner, progress, on_done)
    presets = _presets(runs, histories, evaluations, prof.evaluation)
    claims = assess_claims(presets, prof.twins)
    figures, claim_figures = _figures(out, runs, histories, evaluations, claims, beside)
    theory_job.wait()  # its files are cached: _theory reads them (or computes, on a failure)
    theory, theory_png = _theory(out, prof.theory) if prof.theory else (None, None)
    if theory_png is not None:
        figures.append(("Section 3: linear classifiers with and without projection", theory_png))
    attacks = table_attacks(configs)
    result = ReproduceResult(
        profile=prof.name,
        out_dir=out,
        runs=presets,
        histories=histories,
        tables=build_tables(presets, attacks),
        claims=claims,
        theory=theory,
        figures=[p for _, p in figures] + [p for own in claim_figures for _, p in own],
        report_html=out / "report.html",
        report_md=out / "report.md",
        wall_time=time.perf_counter() - t0,
        attacks=attacks,
        evaluations=evaluations,
        seeds=n_seeds,
        claim_figures=claim_figures,
    )
    write_reproduce_outputs(result, prof, runs, figures)
    return result
