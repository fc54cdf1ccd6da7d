"""The ``robustrank`` command line: a thin Typer layer over the Python API.

Choices (models, datasets, attacks, executors, optimizers, schedules) come from the
registries, so a name registered in Python, or a model named by import path (with
``--trust-code``), works here too.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .attacks import list_attacks
from .data import list_datasets
from .execution import ExecutorName, list_executors
from .experiments.profiles import ProfileName
from .sweeps.spec import DEFAULT_MAX_TRIALS

if TYPE_CHECKING:
    from .experiments.reproduce import ReproduceResult

app = typer.Typer(
    help="robustrank: low-rank and sparse weights vs. adversarial robustness.",
    no_args_is_help=True,
    add_completion=False,
)
data_app = typer.Typer(help="Fetch, verify and list datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

_ATTACKS = " | ".join(list_attacks())
_DATASETS = " | ".join(list_datasets())
TRUST_HELP = "allow a model named by import path (package.module:factory): imports its code"

# options shared by the commands that attack a checkpoint on a test subset
CheckpointArg = Annotated[Path, typer.Argument(help="checkpoint written by robustrank")]
SubsetOpt = Annotated[int, typer.Option("--n", help="size of the fixed seeded test subset")]
DatasetOpt = Annotated[str | None, typer.Option(help=f"{_DATASETS} (default: checkpoint metadata)")]
DataPathOpt = Annotated[
    Path | None, typer.Option(help="file or directory of a dataset that needs one")
]
BatchOpt = Annotated[int, typer.Option(help="inputs per batch")]
DeviceOpt = Annotated[str | None, typer.Option(help="cpu | cuda (default: cpu)")]
DataDirOpt = Annotated[Path | None, typer.Option(help="data cache directory")]
ProgressOpt = Annotated[bool, typer.Option(help="show progress bars")]
TrustOpt = Annotated[bool, typer.Option("--trust-code", help=TRUST_HELP)]

# options of the commands that run many runs (reproduce, sweep): see robustrank.execution
ExecutorOpt = Annotated[
    ExecutorName,
    typer.Option(
        help="where runs go: " + "; ".join(f"{k}: {v}" for k, v in list_executors().items())
    ),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(min=1, help="ray: CPUs of the local Ray instance (default: all cores)"),
]
AddressOpt = Annotated[
    str | None,
    typer.Option(
        help="ray: join this cluster (HOST:PORT) instead of starting one (default: "
        "$RAY_ADDRESS); --out must be on a filesystem every node mounts at the same path"
    ),
]
ThreadsOpt = Annotated[
    int,
    typer.Option(
        min=1,
        help="CPU threads of every run (a Ray task reserves as many CPUs); fixed per run, so "
        "results do not depend on --executor or --workers",
    ),
]


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _load_model_or_checkpoint(target: str, trust_code: bool = False, device: str = "cpu"):
    """A registered model name or import path (fresh weights), or a checkpoint path."""
    from .models import CheckpointError, create_model, is_import_path, list_models, load_checkpoint

    try:
        if target in list_models() or (is_import_path(target) and not Path(target).exists()):
            return create_model(target, trust_code=trust_code).to(device), {}
        if not Path(target).exists():
            _fail(
                f"{target!r} does not exist and is neither a model name "
                f"({', '.join(list_models())}) nor an import path (package.module:factory)"
            )
        return load_checkpoint(target, map_location=device, trust_code=trust_code)
    except (CheckpointError, ValueError, TypeError) as err:
        _fail(str(err))


def _dataset_ref(model, meta: dict, dataset: str | None, data_path: Path | None):
    """The dataset to evaluate on: ``--dataset``/``--data-path``, else the checkpoint's
    metadata, else the model's registered default (the paper pairs FCNN/MNIST, CNN/F-MNIST)."""
    from .data import DatasetRef
    from .models import get_model, is_import_path

    chosen = dataset if dataset is not None else meta.get("dataset")
    if chosen is None:
        arch = getattr(model, "robustrank_spec", {}).get("name")
        if arch is not None and not is_import_path(arch):
            chosen = get_model(arch).dataset
    if chosen is None:
        _fail(
            f"the checkpoint does not say which dataset it was trained on: pass --dataset "
            f"({_DATASETS})"
        )
    raw = dict(chosen) if isinstance(chosen, dict) else {"name": chosen}
    if data_path is not None:
        raw["path"] = str(data_path)
    try:
        return DatasetRef.parse(raw)
    except ValueError as err:
        _fail(str(err))


def _check_device(device: str | None) -> str:
    from ._modes import resolve_device

    try:
        resolve_device(device or "cpu")
    except ValueError as err:
        _fail(f"--device {device}: {err}")
    return device or "cpu"


def _test_subset(ref, n: int, seed: int, data_dir: Path | None):
    from .data import DataError, eval_subset, load_dataset

    try:
        x, y = load_dataset(ref, "test", data_dir)
        return eval_subset(x, y, min(n, len(x)), seed=seed)
    except (ValueError, DataError) as err:
        _fail(str(err))


def _model_and_subset(
    checkpoint: Path,
    *,
    trust_code: bool,
    device: str | None,
    dataset: str | None,
    data_path: Path | None,
    n: int,
    seed: int,
    data_dir: Path | None,
):
    """The checkpoint's model and metadata, its dataset and the fixed seeded test subset."""
    model, meta = _load_model_or_checkpoint(str(checkpoint), trust_code, _check_device(device))
    ref = _dataset_ref(model, meta, dataset, data_path)
    x, y = _test_subset(ref, n, seed, data_dir)
    return model, meta, ref, x, y


# --------------------------------------------------------------------------- data


@data_app.command("fetch")
def data_fetch(
    names: list[str] = typer.Argument(None, help="datasets to fetch (default: all fetchable)"),
    data_dir: Path = typer.Option(
        None, help="cache directory (default: $ROBUSTRANK_DATA or ~/.cache/robustrank)"
    ),
) -> None:
    """Fetch, verify (SHA-256) and cache datasets."""
    from . import data

    try:
        data.fetch(names or None, data_dir=data_dir)
    except (ValueError, RuntimeError) as err:
        _fail(str(err))
    typer.echo(data.format_verify_table(data.verify(data_dir=data_dir)))


@data_app.command("verify")
def data_verify(data_dir: Path = typer.Option(None, help="cache directory")) -> None:
    """Check every cached array against its SHA-256 (offline; fetches nothing)."""
    from . import data

    results = data.verify(data_dir=data_dir)
    typer.echo(data.format_verify_table(results))
    if any(r.status != "ok" for r in results):
        raise typer.Exit(1)


@data_app.command("list")
def data_list() -> None:
    """List the registered datasets."""
    from .data import get_dataset

    for name in list_datasets():
        spec = get_dataset(name)
        shape = "x".join(map(str, spec.input_shape)) if spec.input_shape else "from file"
        path = ", needs a path" if spec.needs_path else ""
        typer.echo(f"{name}  ({shape}, {spec.num_classes or '?'} classes{path})")
        if spec.description:
            typer.echo(f"    {spec.description}")


# --------------------------------------------------------------------------- models


@app.command("models")
def models_cmd() -> None:
    """List the registered models (import paths package.module:factory also work)."""
    from .models import get_model, list_models

    for name in list_models():
        entry = get_model(name)
        shape = "x".join(map(str, entry.input_shape)) if entry.input_shape else "any"
        typer.echo(f"{name}  (input {shape})  {entry.description}")


@app.command("attacks")
def attacks_cmd() -> None:
    """List the registered attacks and their default settings."""
    from .attacks import get_attack

    for name in list_attacks():
        spec = get_attack(name)
        defaults = ", ".join(f"{k}={v}" for k, v in spec.defaults.items()) or "-"
        typer.echo(f"{name}  ({defaults})  {spec.description}")


@app.command("optimizers")
def optimizers_cmd() -> None:
    """List the registered optimizers (config key `optimizer`) and their options."""
    from .registry import format_options
    from .training import get_optimizer, list_optimizers

    for name in list_optimizers():
        entry = get_optimizer(name)
        typer.echo(f"{name}  {entry.description}\n    options: {format_options(entry.options)}")


@app.command("schedules")
def schedules_cmd() -> None:
    """List the registered learning-rate schedules (config key `schedule`) and their options."""
    from .registry import format_options
    from .training import get_schedule, list_schedules

    for name in list_schedules():
        entry = get_schedule(name)
        typer.echo(f"{name}  ({format_options(entry.options) or '-'})  {entry.description}")


@app.command("info")
def info(
    target: str = typer.Argument(..., help="model name, import path or checkpoint path"),
    trust_code: bool = typer.Option(False, "--trust-code", help=TRUST_HELP),
) -> None:
    """Print the architecture and the per-layer structure report (Eqs. 2-3)."""
    from .metrics import format_structure_report, structure_report

    model, meta = _load_model_or_checkpoint(target, trust_code)
    typer.echo(model)
    if meta:
        typer.echo(f"metadata: {meta}")
    typer.echo(format_structure_report(structure_report(model)))


# === attacks / evaluation commands ===


def _parse_eps_grid(text: str, option: str = "--eps-grid") -> list[float]:
    """Comma-separated l_inf budgets, each in [0, 1] and listed once."""
    from ._types import check_budget

    try:
        grid = [float(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        _fail(f"{option} must be comma-separated numbers like 0.01,0.02,0.05, got {text!r}")
    if not grid:
        _fail(f"{option} is empty; pass numbers like 0.01,0.02,0.05")
    twice = sorted({e for e in grid if grid.count(e) > 1})
    if twice:
        _fail(f"{option} lists {', '.join(f'{e:g}' for e in twice)} twice; list each eps once")
    try:
        return [check_budget(e, option) for e in grid]
    except ValueError as err:
        _fail(str(err))


def _check_outputs(paths, overwrite: bool) -> None:
    """Refuse output files in the way before any work (robustrank.ownership.check_files)."""
    from .ownership import OwnershipError, check_files

    try:
        check_files(paths, overwrite=overwrite)
    except OwnershipError as err:
        _fail(str(err))


def _result_paths(out, json_path, csv_path, attack: str, overwrite: bool):
    if out is not None:
        json_path = json_path or out / f"eval-{attack.lower()}.json"
        csv_path = csv_path or out / f"eval-{attack.lower()}.csv"
    _check_outputs([json_path, csv_path], overwrite)
    return json_path, csv_path


def _parse_options(items: list[str] | None, spec) -> dict:
    """``--option KEY=VALUE`` pairs, values parsed as YAML (``5``, ``dlr``, ``[a, b]``)."""
    from .yamlio import YAMLInputError, load_yaml

    options = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            _fail(f"--option {item!r}: write KEY=VALUE, e.g. --option n_restarts=5")
        try:
            options[key.strip()] = load_yaml(value, f"--option {key.strip()}")
        except YAMLInputError as err:
            _fail(str(err))
    try:
        spec.check_options(options)
    except ValueError as err:
        _fail(str(err))
    return options


def _echo_breakdown(results) -> None:
    """Per-component table of ensemble attacks (AutoAttack): who broke what, at what cost."""
    for r in results:
        parts = r.details.get("components")
        if not parts:
            continue
        typer.echo(f"\n{r.attack} eps={r.eps:g}: {r.n_correct} attacked, {r.n_fooled} broken")
        head = (
            f"  {'component':<10} {'attacked':>8} {'broken':>7} {'time':>8} {'fwd':>9} {'bwd':>9}"
        )
        typer.echo(head)
        for c in parts:
            typer.echo(
                f"  {c['name']:<10} {c['n_attacked']:>8} {c['n_broken']:>7} "
                f"{c['seconds']:>7.1f}s {c['forward']:>9} {c['backward']:>9}"
            )


@app.command("evaluate")
def evaluate_cmd(
    checkpoint: CheckpointArg,
    attack: str = typer.Option("pgd", help=f"{_ATTACKS} (l_inf; `robustrank attacks`)"),
    eps: float = typer.Option(0.05, help="l_inf budget (paper: 0.05)"),
    eps_grid: str = typer.Option(None, help="comma-separated eps values (overrides --eps)"),
    n: SubsetOpt = 1000,
    early_stop: bool = typer.Option(False, help="stop attacking inputs once fooled (faster)"),
    dataset: DatasetOpt = None,
    data_path: DataPathOpt = None,
    batch_size: BatchOpt = 500,
    seed: int = typer.Option(0, help="seed of the test subset and of seeded attacks"),
    steps: int = typer.Option(None, help="iterations (default: the attack's, e.g. PGD 20)"),
    alpha: float = typer.Option(None, help="step size, for attacks that take one"),
    option: list[str] = typer.Option(
        None, "--option", "-o", help="attack option KEY=VALUE (YAML value), repeatable"
    ),
    device: DeviceOpt = None,
    out: Path = typer.Option(None, help="directory for eval-<attack>.json and .csv"),
    json_path: Path = typer.Option(None, "--json", help="write the results as JSON here"),
    csv_path: Path = typer.Option(None, "--csv", help="write the results as CSV here"),
    overwrite: bool = typer.Option(False, help="replace existing result files"),
    data_dir: DataDirOpt = None,
    progress: ProgressOpt = True,
    trust_code: TrustOpt = False,
) -> None:
    """Fooling ratio and robust accuracy of a checkpoint under any registered attack."""
    from .attacks import get_attack, supported_options
    from .evaluation import eps_sweep, format_results, save_results

    try:
        spec = get_attack(attack)
    except ValueError as err:
        _fail(str(err))
    grid = _parse_eps_grid(eps_grid) if eps_grid is not None else _parse_eps_grid(str(eps), "--eps")
    json_path, csv_path = _result_paths(out, json_path, csv_path, spec.name, overwrite)
    model, meta, ref, x, y = _model_and_subset(
        checkpoint,
        trust_code=trust_code,
        device=device,
        dataset=dataset,
        data_path=data_path,
        n=n,
        seed=seed,
        data_dir=data_dir,
    )
    asked = {"steps": steps, "alpha": alpha}
    unsupported = [k for k, v in asked.items() if v is not None and not spec.accepts(k)]
    if unsupported:
        _fail(f"attack {spec.name!r} takes no {', '.join('--' + k for k in unsupported)}")
    kw = supported_options(spec.name, {**asked, "seed": seed if spec.takes_seed else None})
    kw.update(_parse_options(option, spec))
    try:
        results = eps_sweep(
            model,
            spec.name,
            grid,
            x,
            y,
            batch_size=batch_size,
            early_stop=early_stop,
            progress=progress,
            **kw,
        )
    except (ValueError, TypeError, RuntimeError) as err:
        _fail(str(err))
    arch = getattr(model, "robustrank_spec", {}).get("name")
    typer.echo(f"{checkpoint} ({arch}) on {ref.name} test, n={len(x)}, subset seed {seed}")
    typer.echo(format_results(results))
    _echo_breakdown(results)
    metadata = {
        "checkpoint": str(checkpoint),
        "model": getattr(model, "robustrank_spec", None),
        "dataset": ref.plain(),
        "split": "test",
        "subset_seed": seed,
        "checkpoint_metadata": meta,
    }
    try:
        written = save_results(
            results, json_path=json_path, csv_path=csv_path, metadata=metadata, overwrite=overwrite
        )
    except (FileExistsError, OSError, ValueError) as err:
        _fail(str(err))
    for p in written:
        typer.echo(f"wrote {p}")


@app.command("diagnose")
def diagnose_cmd(
    checkpoint: CheckpointArg,
    n: SubsetOpt = 500,
    eps: float = typer.Option(0.05, help="the l_inf budget under scrutiny (paper: 0.05)"),
    surrogate: Path = typer.Option(None, help="another checkpoint for the transfer check"),
    out: Path = typer.Option(None, help="directory for diagnostics.json"),
    steps: int = typer.Option(100, help="APGD iterations (the convergence check doubles them)"),
    n_queries: int = typer.Option(1000, help="Square's query budget"),
    large_eps: float = typer.Option(0.5, help="budget at which almost every input must break"),
    dataset: DatasetOpt = None,
    data_path: DataPathOpt = None,
    batch_size: BatchOpt = 500,
    seed: int = typer.Option(0, help="seed of the test subset and of the attacks"),
    device: DeviceOpt = None,
    overwrite: bool = typer.Option(False, help="replace an existing diagnostics.json"),
    data_dir: DataDirOpt = None,
    progress: ProgressOpt = True,
    trust_code: TrustOpt = False,
) -> None:
    """Gradient-masking checks (Carlini et al. 2019; AutoAttack): can its robustness be trusted?

    Exits with 0 when every check passes and 1 when any warns.
    """
    from .evaluation import diagnose
    from .ownership import record_files

    target = None if out is None else out / "diagnostics.json"
    _check_outputs([target], overwrite)
    model, meta, ref, x, y = _model_and_subset(
        checkpoint,
        trust_code=trust_code,
        device=device,
        dataset=dataset,
        data_path=data_path,
        n=n,
        seed=seed,
        data_dir=data_dir,
    )
    other = None
    if surrogate is not None:
        other, _ = _load_model_or_checkpoint(str(surrogate), trust_code, _check_device(device))
    try:
        report = diagnose(
            model,
            x,
            y,
            eps,
            other,
            steps=steps,
            n_queries=n_queries,
            large_eps=large_eps,
            batch_size=batch_size,
            seed=seed,
            progress=progress,
        )
    except (ValueError, TypeError, RuntimeError) as err:
        _fail(str(err))
    typer.echo(f"{checkpoint} on {ref.name} test, n={len(x)}, eps={eps:g}\n")
    typer.echo(report.format())
    if target is not None:
        typer.echo(f"wrote {report.save_json(target)}")
        record_files([target])
    raise typer.Exit(1 if report.warnings else 0)


@app.command("curve")
def curve_cmd(
    checkpoint: CheckpointArg,
    out: Path = typer.Option(..., help="directory for curve.json and curve.png"),
    eps_grid: str = typer.Option(
        "0,0.01,0.02,0.03,0.05,0.075,0.1,0.15,0.2,0.3", help="comma-separated eps values"
    ),
    attack: str = typer.Option("fab", help=f"{_ATTACKS}; fab: one minimal-perturbation run"),
    confirm: str = typer.Option(None, help="fixed-eps attack confirming points, e.g. autoattack"),
    confirm_eps: str = typer.Option(None, help="comma-separated eps to confirm (default: grid)"),
    n: SubsetOpt = 1000,
    dataset: DatasetOpt = None,
    data_path: DataPathOpt = None,
    batch_size: BatchOpt = 500,
    seed: int = typer.Option(0, help="seed of the test subset and of seeded attacks"),
    device: DeviceOpt = None,
    overwrite: bool = typer.Option(False, help="replace existing curve files"),
    data_dir: DataDirOpt = None,
    progress: ProgressOpt = True,
    trust_code: TrustOpt = False,
) -> None:
    """Robust accuracy and fooling ratio against eps (a robustness curve) with its figure."""
    import json

    from ._io import atomic_write_text
    from .attacks import supported_options
    from .evaluation import robustness_curve
    from .ownership import record_files
    from .plots import plot_robustness_curves

    targets = [out / "curve.json", out / "curve.png"]
    _check_outputs(targets, overwrite)
    grid = _parse_eps_grid(eps_grid)
    conf = None if confirm_eps is None else _parse_eps_grid(confirm_eps, "--confirm-eps")
    model, _, ref, x, y = _model_and_subset(
        checkpoint,
        trust_code=trust_code,
        device=device,
        dataset=dataset,
        data_path=data_path,
        n=n,
        seed=seed,
        data_dir=data_dir,
    )
    try:
        curve = robustness_curve(
            model,
            x,
            y,
            grid,
            attack,
            confirm=confirm,
            confirm_eps=conf,
            batch_size=batch_size,
            progress=progress,
            **supported_options(attack, {"seed": seed}),
        )
    except (ValueError, TypeError, RuntimeError) as err:
        _fail(str(err))
    out.mkdir(parents=True, exist_ok=True)
    record = {"checkpoint": str(checkpoint), "dataset": ref.plain(), **curve.to_dict()}
    atomic_write_text(targets[0], json.dumps(record, indent=2) + "\n")
    plot_robustness_curves({checkpoint.stem: curve}, targets[1])
    record_files(targets)
    typer.echo(f"{'eps':>7} {'robust acc':>10} {'fooling':>8}")
    for e, ra, fr in zip(curve.eps, curve.robust_accuracy, curve.fooling_ratio):
        typer.echo(f"{e:>7g} {ra:>10.4f} {fr:>8.4f}")
    for c in curve.confirmations:
        typer.echo(
            f"confirmed at eps {c['eps']:g} by {c['attack']}: {c['broken']} more broken, "
            f"robust accuracy {c['robust_accuracy_before']:.4f} -> {c['robust_accuracy']:.4f}"
        )
    for p in targets:
        typer.echo(f"wrote {p}")


# === training commands ===


@app.command("train")
def train_cmd(
    config: Path = typer.Argument(None, help="YAML training config (or use --preset)"),
    preset: str = typer.Option(None, "--preset", help="bundled preset (see `robustrank presets`)"),
    epochs: int = typer.Option(None, "--epochs", help="override the number of epochs"),
    out: Path = typer.Option(None, "--out", help="run directory (default: runs/<name>)"),
    seed: int = typer.Option(None, "--seed", help="override the seed"),
    resume: bool = typer.Option(False, "--resume", help="continue an interrupted run in --out"),
    overwrite: bool = typer.Option(False, "--overwrite", help="delete the run in --out first"),
    device: str = typer.Option(None, "--device", help="cpu or cuda (overrides the config)"),
    threads: int = typer.Option(
        None, "--threads", min=1, help="CPU threads of the run (overrides the config)"
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar"),
    trust_code: bool = typer.Option(False, "--trust-code", help=TRUST_HELP),
) -> None:
    """Train a model from a YAML config or a preset (natural, adversarial, regularised)."""
    from .data import DataError
    from .models import CheckpointError
    from .training import ConfigError, RunError, config_from_dict, load_config, load_preset, train

    if (config is None) == (preset is None):
        _fail("give exactly one of CONFIG (a YAML file) or --preset NAME")
    try:
        if config is not None:
            cfg = load_config(config, trust_code=trust_code)
        else:
            cfg = load_preset(preset)
        overrides = {"epochs": epochs, "seed": seed, "device": device, "threads": threads}
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if overrides:
            cfg = config_from_dict(
                {**cfg.plain(), **overrides}, "command-line overrides", trust_code=trust_code
            )
        out_dir = out if out is not None else Path("runs") / cfg.name
        result = train(
            cfg,
            out_dir,
            resume=resume,
            overwrite=overwrite,
            progress=progress,
            trust_code=trust_code,
        )
    except (ConfigError, RunError, DataError, CheckpointError) as err:
        _fail(str(err))
    except KeyboardInterrupt:
        typer.secho("interrupted; continue the run with --resume", err=True)
        raise typer.Exit(130) from None
    last = result.history[-1] if result.history else {}
    typer.echo(f"run directory: {result.out_dir}")
    typer.echo(f"final model:   {result.final_checkpoint}")
    if last.get("test_acc") is not None:
        typer.echo(f"test accuracy: {last['test_acc']:.4f}")
    for name in cfg.history.attacks:
        if last.get(f"fr_{name}") is not None:
            value = last[f"fr_{name}"]
            typer.echo(f"fooling ratio {name.upper():<4} (eps {cfg.history.eps}): {value:.4f}")


@app.command("presets")
def presets_cmd() -> None:
    """List the bundled training presets with the paper's clean accuracies (Tables 1-2)."""
    from .training import list_presets, load_preset

    for name in list_presets():
        cfg = load_preset(name)
        paper = (
            f"paper Table {cfg.paper.table}: {cfg.paper.accuracy:.4f}"
            if cfg.paper is not None
            else "not in the paper's tables"
        )
        init = f", from {cfg.init.from_preset}" if cfg.init.from_preset else ""
        epochs = f"{cfg.epochs} epoch{'' if cfg.epochs == 1 else 's'}"
        typer.echo(f"{name}  ({paper}; {epochs}{init})")
        typer.echo(f"    {cfg.description}")


# === information / theory commands ===


@app.command("theory")
def theory_cmd(
    n: int = typer.Option(784, "--n", help="ambient dimension (MNIST: 784)"),
    k: int = typer.Option(20, "--k", help="dimension of the data subspace"),
    samples: int = typer.Option(5000, "--samples", help="train and test points"),
    seed: int = typer.Option(0, "--seed", help="seed of everything"),
    instances: int = typer.Option(200, "--instances", help="random (V, w) instances"),
    out: Path = typer.Option(Path("results/theory"), "--out", help="directory for JSON + PNG"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace existing outputs"),
) -> None:
    """Section 3: Theorem 1 (projection onto the data subspace) checked numerically."""
    from .linear_theory import (
        format_theory_summary,
        run_theory_experiment,
        theory_paths,
        write_theory_outputs,
    )

    _check_outputs(theory_paths(out), overwrite)
    try:
        result = run_theory_experiment(n=n, k=k, samples=samples, seed=seed, instances=instances)
    except (ValueError, TypeError) as err:
        _fail(str(err))
    typer.echo(format_theory_summary(result))
    try:
        paths = write_theory_outputs(result, out, overwrite=overwrite)
    except (FileExistsError, OSError) as err:
        _fail(str(err))
    for p in paths:
        typer.echo(f"wrote {p}")


@app.command("analyze")
def analyze_cmd(
    checkpoint: Path = typer.Argument(..., help="checkpoint written by robustrank"),
    n: int = typer.Option(10000, "--n", help="test images for the MI estimate (paper: 10,000)"),
    noise_var: float = typer.Option(0.1, "--noise-var", help="KDE noise variance (paper: 0.1)"),
    dataset: str = typer.Option(None, help=f"{_DATASETS} (default: checkpoint metadata)"),
    data_path: Path = typer.Option(None, help="file or directory of a dataset that needs one"),
    layers: str = typer.Option(
        None,
        help="comma-separated module paths or globs whose outputs to analyse "
        "(default: the paper's t^i, or every weight layer but the last)",
    ),
    seed: int = typer.Option(0, "--seed", help="seed of the test subset (when n < test size)"),
    batch_size: int = typer.Option(1000, "--batch-size", help="inputs per forward pass"),
    device: str = typer.Option(None, "--device", help="cpu | cuda (default: cpu)"),
    out: Path = typer.Option(None, "--out", help="write the report as JSON here"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing --out"),
    data_dir: Path = typer.Option(None, help="data cache directory"),
    trust_code: bool = typer.Option(False, "--trust-code", help=TRUST_HELP),
) -> None:
    """Per-layer effective rank and sparsity (Eqs. 2-3) and KDE I(T;X), I(T;Y) bounds."""
    import json

    from .information import format_mi_table, mi_per_layer
    from .metrics import format_structure_report, structure_report
    from .models import atomic_write_bytes
    from .ownership import record_files

    _check_outputs([out], overwrite)
    model, meta = _load_model_or_checkpoint(str(checkpoint), trust_code, _check_device(device))
    ref = _dataset_ref(model, meta, dataset, data_path)
    x, y = _test_subset(ref, n, seed, data_dir)
    chosen = [t.strip() for t in layers.split(",") if t.strip()] if layers else None
    try:
        structure = structure_report(model)
        mi = mi_per_layer(model, x, y, noise_var=noise_var, batch_size=batch_size, layers=chosen)
    except (ValueError, TypeError) as err:
        _fail(str(err))
    arch = getattr(model, "robustrank_spec", {}).get("name")
    typer.echo(f"{checkpoint} ({arch}) on {ref.name} test, n={len(x)}, noise_var={noise_var}")
    typer.echo(format_structure_report(structure))
    typer.echo("")
    typer.echo(format_mi_table(mi) + "\n(KDE bounds in bits; I(T;X) <= log2 n)")
    if out is not None:
        report = {
            "checkpoint": str(checkpoint),
            "model": getattr(model, "robustrank_spec", None),
            "dataset": ref.plain(),
            "split": "test",
            "n": len(x),
            "subset_seed": seed,
            "noise_var": noise_var,
            "structure": [r.as_dict() for r in structure],
            "mi": [r.as_dict() for r in mi],
            "checkpoint_metadata": meta,
        }
        atomic_write_bytes(out, json.dumps(report, indent=2).encode())
        record_files([out])
        typer.echo(f"wrote {out}")


# === reproduce commands ===


@app.command("reproduce")
def reproduce_cmd(
    profile: str = typer.Option(
        "quick",
        help=f"one of {', '.join(ProfileName)} (their descriptions: README, Profiles)",
    ),
    out: Path = typer.Option(None, help="output directory (default: results/<profile>)"),
    only: str = typer.Option(None, help="run one architecture: fcnn or cnn"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    seed: int = typer.Option(None, help="base seed of every run (seed k gets SEED + k)"),
    seeds: int = typer.Option(
        None,
        min=1,
        help="independent seeds per preset (default: the profile's seeds); raising it later "
        "trains only the new seeds",
    ),
    overwrite: bool = typer.Option(False, help="discard earlier runs in the output directory"),
    progress: bool = typer.Option(True, help="show progress bars"),
    executor: ExecutorOpt = ExecutorName.local,
    workers: WorkersOpt = None,
    address: AddressOpt = None,
    threads: ThreadsOpt = 1,
) -> None:
    """Train every model of Section 5 (N seeds each) and write the tables with intervals,
    figures, claim verdicts and report."""
    from .execution import ExecutionError
    from .experiments.reproduce import ReproduceError, reproduce

    try:
        result = reproduce(
            profile,
            out,
            only=only,
            device=device,
            seed=seed,
            seeds=seeds,
            overwrite=overwrite,
            progress=progress,
            executor=executor,
            workers=workers,
            address=address,
            threads=threads,
        )
    except (ReproduceError, ExecutionError, ValueError) as err:
        _fail(str(err))
    _echo_reproduce(result)


def _echo_reproduce(result: ReproduceResult) -> None:
    """Tables 1-2 (mean ± t half-width over seeds, [±Wilson]) and the claim verdicts."""
    from .attacks import get_attack
    from .experiments.summary import strong_attack_of

    for key, title in (("table1", "Table 1 (FCNN, MNIST)"), ("table2", "Table 2 (CNN, F-MNIST)")):
        rows = result.tables[key]
        if not rows:
            continue
        typer.echo(f"\n{title}, {result.seeds} seed(s): mean ± 95% t [± Wilson sampling]")
        strong = strong_attack_of(result.runs.values())
        ra = [] if strong is None else [f"ra_{strong}"]
        metrics = ["test_acc"] + [f"fr_{a}" for a in result.attacks] + ra
        metrics = [m for m in metrics if m in rows[0]]
        heads = {"test_acc": "acc."}
        if strong is not None:
            heads[f"ra_{strong}"] = "RA-" + get_attack(strong).title
        heads = {m: heads.get(m, "FR-" + m[3:].upper()) for m in metrics}
        width = {m: max(len(heads[m]), *(len(str(r.get(m) or "-")) for r in rows)) for m in metrics}
        typer.echo(
            f"{'preset':<26} {'paper':>6}" + "".join(f"  {heads[m]:>{width[m]}}" for m in metrics)
        )
        for r in rows:
            paper = f"{r['paper']:.4f}" if isinstance(r["paper"], float) else "-"
            cells = "".join(f"  {r.get(m) or '-':>{width[m]}}" for m in metrics)
            typer.echo(f"{r['preset']:<26} {paper:>6}{cells}")
    typer.echo("")
    for claim in result.claims:
        typer.echo(f"{claim.claim}: {claim.verdict.upper()} ({claim.evidence[0]})")
    typer.echo(f"\nreport: {result.report_html}  ({result.wall_time / 60:.1f} min)")


@app.command("budgets")
def budgets_cmd(
    family: str = typer.Option(..., help="model family of the fine-tuning presets (fcnn, cnn)"),
    max_epochs: int = typer.Option(100, min=1, help="epochs of every fine-tune"),
    out: Path = typer.Option(..., help="study directory (runs, budgets.json/csv/md, figure)"),
    natural_run: Path = typer.Option(
        None, help="finished natural run to fine-tune (default: train it into OUT/runs)"
    ),
    preset: list[str] = typer.Option(None, help="fine-tuning preset (repeat; default: all)"),
    every: int = typer.Option(1, min=1, help="epochs between history rows"),
    set_: list[str] = typer.Option(
        None,
        "--set",
        help="config override KEY=VALUE, dotted key, YAML value (repeat), e.g. "
        "history.track_mi=false",
    ),
    executor: ExecutorOpt = ExecutorName.local,
    workers: WorkersOpt = None,
    address: AddressOpt = None,
    threads: ThreadsOpt = 1,
    progress: ProgressOpt = True,
    overwrite: bool = typer.Option(
        False, "--overwrite", help="delete a study of other settings in --out first (its files)"
    ),
) -> None:
    """Clean accuracy, fooling ratios and structure against fine-tuning epochs (one long
    run per preset; every shorter budget is read off it)."""
    from .execution import ExecutionError
    from .experiments.budgets import budget_study, budgets_markdown, parse_overrides

    try:
        study = budget_study(
            family,
            out,
            max_epochs=max_epochs,
            presets=preset or None,
            natural_run=natural_run,
            every=every,
            overrides=parse_overrides(set_ or []),
            executor=executor,
            workers=workers,
            address=address,
            threads=threads,
            progress=progress,
            overwrite=overwrite,
        )
    except (ExecutionError, ValueError) as err:
        _fail(str(err))
    except KeyboardInterrupt:
        typer.secho("interrupted; re-run the same command to resume the study", err=True)
        raise typer.Exit(130) from None
    typer.echo(budgets_markdown(study))
    typer.echo(f"wrote {', '.join(str(p) for p in study.files.values())}")


# === sweep commands ===


def _sweep_list() -> None:
    from .sweeps import list_specs, list_strategies

    for name, description in list_specs().items():
        typer.echo(f"{name}\n    {description}")
    typer.echo("\nstrategies: " + "; ".join(f"{k}: {v}" for k, v in list_strategies().items()))


def _sweep_status(directory: Path | None) -> None:
    from .sweeps import SweepError, sweep_status

    if directory is None:
        _fail("give the sweep directory: robustrank sweep status DIR")
    try:
        typer.echo(sweep_status(directory).format())
    except (SweepError, OSError, ValueError, KeyError) as err:
        _fail(str(err))


def _echo_sweep(result) -> None:
    typer.echo(
        f"\n{len(result.rows)} trials in {result.out_dir}; Pareto front: "
        f"{', '.join(result.front) or '-'}"
    )
    typer.echo(f"{'combination':<60} {'seeds':>5} {'clean acc.':>15} {'robust acc.':>15}")
    for c in result.combinations[:10]:
        typer.echo(
            f"{c.label()[:60]:<60} {c.clean.n_seeds:>5} {c.clean.format(4):>15} "
            f"{c.robust.format(4):>15}"
        )
    if result.comparison is not None:
        typer.echo(f"\n{result.comparison.text}")
    typer.echo(f"\nreport: {result.report_html}  ({result.wall_time / 60:.1f} min)")


@app.command("sweep")
def sweep_cmd(
    target: str = typer.Argument(
        ..., help="a spec file or bundled spec name; `status` (then DIR) or `list`"
    ),
    directory: Path = typer.Argument(None, help="with `status`: the sweep directory"),
    out: Path = typer.Option(None, "--out", help="the sweep directory (trials, tables, report)"),
    executor: ExecutorOpt = ExecutorName.local,
    workers: WorkersOpt = None,
    address: AddressOpt = None,
    overwrite: bool = typer.Option(
        False, "--overwrite", help="delete the sweep in --out first (e.g. another spec's)"
    ),
    progress: ProgressOpt = True,
    trust_code: TrustOpt = False,
    max_trials: int | None = typer.Option(
        None,
        "--max-trials",
        min=1,
        help="refuse a spec of more trials than this (default: the spec's max_trials, else "
        f"{DEFAULT_MAX_TRIALS:,})",
    ),
) -> None:
    """Sweep a search space (lambdas per layer, eps, epochs, seeds): one run per trial.

    robustrank sweep SPEC --out DIR: run a sweep, or resume it in DIR.

    robustrank sweep status DIR: trials done/running/pending and the best so far.

    robustrank sweep list: the bundled specs (usable by name).
    """
    from .execution import ExecutionError
    from .sweeps import SpecError, SweepError, run_sweep
    from .training import ConfigError, RunError

    if target == "list" and directory is None:
        return _sweep_list()
    if target == "status":
        return _sweep_status(directory if directory is not None else out)
    if directory is not None:
        _fail(f"unexpected argument {directory}; write robustrank sweep SPEC --out DIR")
    if out is None:
        _fail("give the sweep directory: robustrank sweep SPEC --out DIR")
    try:
        result = run_sweep(
            target,
            out,
            executor=executor,
            workers=workers,
            address=address,
            progress=progress,
            overwrite=overwrite,
            trust_code=trust_code,
            max_trials=max_trials,
        )
    except (SpecError, SweepError, ExecutionError, ConfigError, RunError, ValueError) as err:
        _fail(str(err))
    except KeyboardInterrupt:
        typer.secho("interrupted; re-run the same command to resume the sweep", err=True)
        raise typer.Exit(130) from None
    _echo_sweep(result)


DEBUG_ENV = "ROBUSTRANK_DEBUG"


@app.callback()
def _root(
    debug: bool = typer.Option(
        False, "--debug", help=f"show the traceback of an error (or set {DEBUG_ENV}=1)"
    ),
) -> None:
    """robustrank: low-rank and sparse weights vs. adversarial robustness."""
    if debug:
        os.environ[DEBUG_ENV] = "1"


def _error_line(err: BaseException) -> str:
    """One line naming an unexpected error and what to do about it."""
    if isinstance(err, OSError):
        where = f" ({err.filename})" if err.filename else ""
        return (
            f"{err.strerror or err}{where}; check the path, its permissions and the free disk "
            "space (interrupted work resumes when the same command is run again)"
        )
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text or 'no message'} (run with --debug for the traceback)"


def main(argv: list[str] | None = None) -> None:
    """The ``robustrank`` entry point: errors as one line with exit code 2, the traceback
    only with ``--debug`` (anywhere on the command line) or ``ROBUSTRANK_DEBUG=1``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in args:
        args = ["--debug", *(a for a in args if a != "--debug")]
    try:
        app(args, standalone_mode=True)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as err:  # noqa: BLE001 - the last line of defence for users
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        typer.secho(f"error: {_error_line(err)}", fg=typer.colors.RED, err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
