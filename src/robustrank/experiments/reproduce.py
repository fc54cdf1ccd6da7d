"""Reproduce the paper end to end (Section 5, Appendix A): train every model, then render
Tables 1 and 2, the equivalents of Figures 1-10, the Section 3 figure, the claims, and an
offline HTML report.

Runs are ordinary training runs (``robustrank.training.train``) under ``OUT/runs/<preset>``,
each one a :class:`~robustrank.execution.RunTask` (train, then the strong evaluation of its
final model, cached in the run directory) handed to an executor: ``local`` (this process,
one run after another) or ``ray`` (in parallel, on this machine or a cluster). A finished
run is reused and an interrupted one resumed, so calling :func:`reproduce` again continues
where it stopped. Every run's ``threads`` is set to the same value, so its numbers do not
depend on the executor or the number of workers. Everything derived (figures, tables,
report) is rebuilt from the runs each time.

The steps live in sibling modules: :mod:`.profiles` (what runs), :mod:`.robust_eval`
(AutoAttack, robustness curves and diagnostics of every final model), :mod:`.summary` (run
summaries and Tables 1-2), :mod:`.claims` (the verdicts), :mod:`.figures` and
:mod:`.report_builder` (the written outputs). Their public names are re-exported here.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from .._io import atomic_write_text as write_text_atomic
from ..execution import Executor, ExecutorName, LocalExecutor, RunTask, create_executor
from ..training import TrainConfig, config_from_dict
from ..training.rundir import read_history
from .claims import Claim, assess_claims
from .figures import _figures
from .profiles import Profile, ProfileName, load_profile, profile_configs
from .report_builder import ReproduceResult, _write_outputs
from .robust_eval import EvaluationSpec
from .summary import RunSummary, _summarise, _tables, table_attacks
from .summary import _method as _method  # re-exported: tests and callers import it from here

__all__ = [
    "ProfileName",
    "Profile",
    "load_profile",
    "profile_configs",
    "reproduce",
    "ReproduceResult",
    "ReproduceError",
    "RunSummary",
    "Claim",
    "assess_claims",
    "EvaluationSpec",
]

PROFILE_FILE = "profile.json"


class ReproduceError(RuntimeError):
    """The output directory or the profile cannot be used as asked."""


# --------------------------------------------------------------------------- pipeline


def _check_out_dir(
    out: Path, profile: Profile, configs: list[TrainConfig], overwrite: bool
) -> None:
    """Refuse an ``out`` of another profile or not written by reproduce; then mark it."""
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


def _with_threads(configs: list[TrainConfig], threads: int) -> list[TrainConfig]:
    """Every config with ``threads`` CPU threads (validated like any config key)."""
    return [
        config_from_dict({**c.plain(), "threads": threads}, source=f"--threads for {c.name}")
        for c in configs
    ]


def _tasks(
    configs: list[TrainConfig], runs_dir: Path, spec: EvaluationSpec | None
) -> list[RunTask]:
    """One task per run: train into ``runs_dir/<name>`` after the run it fine-tunes, then
    evaluate the final model with ``spec``."""
    evaluation = spec.model_dump() if spec is not None else None
    tasks = []
    for config in configs:
        run_dir = runs_dir / config.name
        after: tuple[str, ...] = ()
        if config.init.from_preset is not None:  # train() resolves the parent the same way
            parent = runs_dir / config.init.from_preset
            if config.init.preset_run is not None:
                parent = run_dir / config.init.preset_run
            after = (os.path.normpath(parent),)
        tasks.append(RunTask(config.plain(), os.path.normpath(run_dir), after, evaluation))
    return tasks


def _run_all(
    configs: list[TrainConfig],
    runs_dir: Path,
    spec: EvaluationSpec | None,
    executor: Executor,
    progress: bool,
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, dict[str, Any]]]:
    """Train (or reuse, or resume) and evaluate every run on ``executor``; the histories
    and the strong evaluations by run name."""
    tasks = _tasks(configs, runs_dir, spec)
    runs_dir.mkdir(parents=True, exist_ok=True)  # where every worker must see the runs
    try:
        outcomes = executor.map(tasks, progress=progress)
    except ValueError as err:  # RunError is a ValueError; the message names the run
        raise ReproduceError(f"{err}. Use another --out or --overwrite") from err
    histories = {t.name: read_history(t.run_dir) for t in tasks}
    evaluations = {o.name: o.evaluation for o in outcomes if o.evaluation is not None}
    return histories, evaluations


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


def reproduce(
    profile: str | ProfileName = "quick",
    out: str | Path | None = None,
    *,
    only: str | None = None,
    device: str = "cpu",
    seed: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    executor: str | ExecutorName = ExecutorName.local,
    workers: int | None = None,
    address: str | None = None,
    threads: int = 1,
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
    out = Path(out) if out is not None else Path("results") / prof.name
    configs = _with_threads(profile_configs(prof, only=only, device=device, seed=seed), threads)
    with create_executor(executor, workers=workers, address=address) as runner:
        if isinstance(runner, LocalExecutor):
            runner.progress_per_run = True  # each run's epoch bar, as `train` shows it
        _check_out_dir(out, prof, configs, overwrite)
        runs_dir = out / "runs"
        histories, evaluations = _run_all(configs, runs_dir, prof.evaluation, runner, progress)
    runs = {c.name: _summarise(c, histories[c.name], evaluations.get(c.name)) for c in configs}
    theory, theory_png = _theory(out, prof.theory) if prof.theory else (None, None)
    figures = _figures(out, configs, histories, runs_dir, evaluations)
    if theory_png is not None:
        figures.append(("Section 3: linear classifiers with and without projection", theory_png))
    claims = assess_claims(runs)
    attacks = table_attacks(configs)
    result = ReproduceResult(
        profile=prof.name,
        out_dir=out,
        runs=runs,
        histories=histories,
        tables=_tables(runs, attacks),
        claims=claims,
        theory=theory,
        figures=[p for _, p in figures],
        report_html=out / "report.html",
        report_md=out / "report.md",
        wall_time=time.perf_counter() - t0,
        attacks=attacks,
        evaluations=evaluations,
    )
    _write_outputs(result, prof, configs, figures)
    return result
