"""Reproduce the paper end to end (Section 5, Appendix A): train every model, then render
Tables 1 and 2, the equivalents of Figures 1-10, the Section 3 figure, the claims, and an
offline HTML report.

Runs are ordinary training runs (``robustrank.training.train``) under ``OUT/runs/<preset>``;
a finished run is reused and an interrupted one resumed, so calling :func:`reproduce` again
continues where it stopped. Everything derived (figures, tables, report) is rebuilt from
the runs each time.

The steps live in sibling modules: :mod:`.profiles` (what runs), :mod:`.robust_eval`
(AutoAttack, robustness curves and diagnostics of every final model), :mod:`.summary` (run
summaries and Tables 1-2), :mod:`.claims` (the verdicts), :mod:`.figures` and
:mod:`.report_builder` (the written outputs). Their public names are re-exported here.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from .._io import atomic_write_text as write_text_atomic
from ..training import TrainConfig, train
from .claims import Claim, assess_claims
from .figures import _figures
from .profiles import Profile, ProfileName, load_profile, profile_configs
from .report_builder import ReproduceResult, _write_outputs
from .robust_eval import EvaluationSpec, evaluate_runs
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


def _run_all(
    configs: list[TrainConfig], runs_dir: Path, progress: bool
) -> dict[str, list[dict[str, Any]]]:
    """Train (or reuse, or resume) every run in order; their histories by run name."""
    from tqdm.auto import tqdm

    histories: dict[str, list[dict[str, Any]]] = {}
    bar = tqdm(total=len(configs), desc="reproduce", unit="run", disable=not progress)
    try:
        for i, config in enumerate(configs, 1):
            run_dir = runs_dir / config.name
            bar.set_postfix_str(f"{i}/{len(configs)} {config.name}")
            started = run_dir.is_dir() and any(run_dir.iterdir())
            try:
                result = train(config, run_dir, resume=started, progress=progress)
            except ValueError as err:
                raise ReproduceError(
                    f"run {config.name} in {run_dir}: {err}. Use another --out or --overwrite"
                ) from err
            histories[config.name] = result.history
            bar.update(1)
    finally:
        bar.close()
    return histories


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
    """
    t0 = time.perf_counter()
    prof = load_profile(profile)
    out = Path(out) if out is not None else Path("results") / prof.name
    configs = profile_configs(prof, only=only, device=device, seed=seed)
    _check_out_dir(out, prof, configs, overwrite)
    runs_dir = out / "runs"
    histories = _run_all(configs, runs_dir, progress)
    evaluations = evaluate_runs(configs, runs_dir, prof.evaluation, progress)
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
