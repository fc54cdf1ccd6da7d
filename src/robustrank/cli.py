"""The ``robustrank`` command line: a thin Typer layer over the Python API."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    help="robustrank: low-rank and sparse weights vs. adversarial robustness.",
    no_args_is_help=True,
    add_completion=False,
)
data_app = typer.Typer(help="Fetch and verify MNIST and Fashion-MNIST.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _load_model_or_checkpoint(target: str):
    """A registered model name (fresh weights) or a checkpoint path."""
    from .models import CheckpointError, create_model, list_models, load_checkpoint

    if target in list_models():
        return create_model(target), {}
    path = Path(target)
    if not path.exists():
        _fail(f"{target!r} is neither a model name ({', '.join(list_models())}) nor a file")
    try:
        return load_checkpoint(path)
    except CheckpointError as err:
        _fail(str(err))


def _checkpoint_dataset(model, meta: dict, dataset: str | None) -> str:
    """The dataset to evaluate on: the argument, else the checkpoint's metadata, else the
    paper's pairing (FCNN -> MNIST, CNN -> Fashion-MNIST)."""
    from .data import DATASETS

    if dataset is None:
        arch = getattr(model, "robustrank_spec", {}).get("name")
        dataset = meta.get("dataset") or ("fashion-mnist" if arch == "cnn" else "mnist")
    if dataset not in DATASETS:
        _fail(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    return dataset


# --------------------------------------------------------------------------- data


@data_app.command("fetch")
def data_fetch(
    names: list[str] = typer.Argument(None, help="mnist, fashion-mnist (default: both)"),
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


# --------------------------------------------------------------------------- models


@app.command("models")
def models_cmd() -> None:
    """List the registered models."""
    from .models import list_models

    for name in list_models():
        typer.echo(name)


@app.command("info")
def info(target: str = typer.Argument(..., help="model name or checkpoint path")) -> None:
    """Print the architecture and the per-layer structure report (Eqs. 2-3)."""
    from .metrics import format_structure_report, structure_report

    model, meta = _load_model_or_checkpoint(target)
    typer.echo(model)
    if meta:
        typer.echo(f"metadata: {meta}")
    typer.echo(format_structure_report(structure_report(model)))


# === attacks / evaluation commands ===


def _parse_eps_grid(text: str) -> list[float]:
    try:
        grid = [float(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        _fail(f"--eps-grid must be comma-separated numbers like 0.01,0.02,0.05, got {text!r}")
    if not grid:
        _fail("--eps-grid is empty; pass numbers like 0.01,0.02,0.05")
    return grid


@app.command("evaluate")
def evaluate_cmd(
    checkpoint: Path = typer.Argument(..., help="checkpoint written by robustrank"),
    attack: str = typer.Option("pgd", help="fgsm | pgd | gnm (l_inf, Section 5)"),
    eps: float = typer.Option(0.05, help="l_inf budget (paper: 0.05)"),
    eps_grid: str = typer.Option(None, help="comma-separated eps values (overrides --eps)"),
    n: int = typer.Option(1000, help="size of the fixed seeded test subset"),
    early_stop: bool = typer.Option(False, help="stop attacking inputs once fooled (faster)"),
    dataset: str = typer.Option(
        None, help="mnist | fashion-mnist (default: checkpoint metadata, else by model)"
    ),
    batch_size: int = typer.Option(500, help="inputs per batch"),
    seed: int = typer.Option(0, help="seed of the test subset and of PGD's random start"),
    steps: int = typer.Option(None, help="iterations (default: PGD 20, GNM 5)"),
    alpha: float = typer.Option(None, help="PGD step size (default 0.005)"),
    device: str = typer.Option(None, help="cpu | cuda (default: cpu)"),
    out: Path = typer.Option(None, help="directory for eval-<attack>.json and .csv"),
    json_path: Path = typer.Option(None, "--json", help="write the results as JSON here"),
    csv_path: Path = typer.Option(None, "--csv", help="write the results as CSV here"),
    overwrite: bool = typer.Option(False, help="replace existing result files"),
    data_dir: Path = typer.Option(None, help="data cache directory"),
    progress: bool = typer.Option(True, help="show progress bars"),
) -> None:
    """Fooling ratio and robust accuracy of a checkpoint under FGSM, PGD or GNM (Section 5)."""
    from .data import eval_subset, load_dataset
    from .evaluation import eps_sweep, format_results, save_results
    from .models import CheckpointError, load_checkpoint

    try:
        model, meta = load_checkpoint(checkpoint)
    except CheckpointError as err:
        _fail(str(err))
    dataset = _checkpoint_dataset(model, meta, dataset)
    arch = getattr(model, "robustrank_spec", {}).get("name")
    grid = _parse_eps_grid(eps_grid) if eps_grid is not None else [eps]
    if out is not None:
        json_path = json_path or out / f"eval-{attack.lower()}.json"
        csv_path = csv_path or out / f"eval-{attack.lower()}.csv"
    for p in (json_path, csv_path):
        if p is not None and p.exists() and not overwrite:
            _fail(f"{p} exists; refusing to overwrite it (pass --overwrite or another path)")
    kw = {"steps": steps, "alpha": alpha, "seed": seed if attack.lower() == "pgd" else None}
    try:
        x, y = load_dataset(dataset, "test", data_dir)
        x, y = eval_subset(x, y, n, seed=seed)
        results = eps_sweep(
            model,
            attack,
            grid,
            x,
            y,
            batch_size=batch_size,
            early_stop=early_stop,
            device=device,
            progress=progress,
            **kw,
        )
    except (ValueError, TypeError, RuntimeError) as err:
        _fail(str(err))
    typer.echo(f"{checkpoint} ({arch}) on {dataset} test, n={len(x)}, subset seed {seed}")
    typer.echo(format_results(results))
    metadata = {
        "checkpoint": str(checkpoint),
        "model": getattr(model, "robustrank_spec", None),
        "dataset": dataset,
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
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar"),
) -> None:
    """Train a model from a YAML config or a preset (natural, adversarial, regularised)."""
    from .data import DataError
    from .training import ConfigError, RunError, config_from_dict, load_config, load_preset, train

    if (config is None) == (preset is None):
        _fail("give exactly one of CONFIG (a YAML file) or --preset NAME")
    try:
        cfg = load_config(config) if config is not None else load_preset(preset)
        overrides = {"epochs": epochs, "seed": seed, "device": device}
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if overrides:
            cfg = config_from_dict({**cfg.plain(), **overrides}, source="command-line overrides")
        out_dir = out if out is not None else Path("runs") / cfg.name
        result = train(cfg, out_dir, resume=resume, overwrite=overwrite, progress=progress)
    except (ConfigError, RunError, DataError) as err:
        _fail(str(err))
    except KeyboardInterrupt:
        typer.secho("interrupted; continue the run with --resume", err=True)
        raise typer.Exit(130) from None
    last = result.history[-1] if result.history else {}
    typer.echo(f"run directory: {result.out_dir}")
    typer.echo(f"final model:   {result.final_checkpoint}")
    if last.get("test_acc") is not None:
        typer.echo(f"test accuracy: {last['test_acc']:.4f}")
    for name in ("fgsm", "pgd", "gnm"):
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
    from .linear_theory import format_theory_summary, run_theory_experiment, write_theory_outputs

    existing = [p for p in (out / "theory.json", out / "theory.png") if p.exists()]
    if existing and not overwrite:
        _fail(f"{existing[0]} exists; refusing to overwrite it (pass --overwrite or another --out)")
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
    dataset: str = typer.Option(
        None, help="mnist | fashion-mnist (default: checkpoint metadata, else by model)"
    ),
    seed: int = typer.Option(0, "--seed", help="seed of the test subset (when n < 10,000)"),
    batch_size: int = typer.Option(1000, "--batch-size", help="inputs per forward pass"),
    device: str = typer.Option(None, "--device", help="cpu | cuda (default: cpu)"),
    out: Path = typer.Option(None, "--out", help="write the report as JSON here"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing --out"),
    data_dir: Path = typer.Option(None, help="data cache directory"),
) -> None:
    """Per-layer effective rank and sparsity (Eqs. 2-3) and KDE I(T;X), I(T;Y) bounds."""
    import json

    import torch

    from .data import DataError, eval_subset, load_dataset
    from .information import format_mi_table, mi_per_layer
    from .metrics import format_structure_report, structure_report
    from .models import CheckpointError, atomic_write_bytes, load_checkpoint

    if out is not None and out.exists() and not overwrite:
        _fail(f"{out} exists; refusing to overwrite it (pass --overwrite or another --out)")
    if device is not None and device.startswith("cuda") and not torch.cuda.is_available():
        _fail(f"--device {device}: CUDA is not available here; use --device cpu")
    try:
        model, meta = load_checkpoint(checkpoint, map_location=device or "cpu")
    except (CheckpointError, RuntimeError) as err:
        _fail(str(err))
    dataset = _checkpoint_dataset(model, meta, dataset)
    arch = getattr(model, "robustrank_spec", {}).get("name")
    try:
        x, y = load_dataset(dataset, "test", data_dir)
        x, y = eval_subset(x, y, n, seed=seed)
        structure = structure_report(model)
        mi = mi_per_layer(model, x, y, noise_var=noise_var, batch_size=batch_size)
    except (ValueError, TypeError, DataError) as err:
        _fail(str(err))
    typer.echo(f"{checkpoint} ({arch}) on {dataset} test, n={len(x)}, noise_var={noise_var}")
    typer.echo(format_structure_report(structure))
    typer.echo("")
    typer.echo(format_mi_table(mi) + "\n(KDE bounds in bits; I(T;X) <= log2 n)")
    if out is not None:
        report = {
            "checkpoint": str(checkpoint),
            "model": getattr(model, "robustrank_spec", None),
            "dataset": dataset,
            "split": "test",
            "n": len(x),
            "subset_seed": seed,
            "noise_var": noise_var,
            "structure": [r.as_dict() for r in structure],
            "mi": [r.as_dict() for r in mi],
            "checkpoint_metadata": meta,
        }
        atomic_write_bytes(out, json.dumps(report, indent=2).encode())
        typer.echo(f"wrote {out}")


# === reproduce commands ===


@app.command("reproduce")
def reproduce_cmd(
    profile: str = typer.Option(
        "quick",
        help="quick (about 1 min on 2 cores), paper (the paper's settings, about 30 min), tiny",
    ),
    out: Path = typer.Option(None, help="output directory (default: results/<profile>)"),
    only: str = typer.Option(None, help="run one architecture: fcnn or cnn"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    seed: int = typer.Option(None, help="override every run's seed"),
    overwrite: bool = typer.Option(False, help="discard earlier runs in the output directory"),
    progress: bool = typer.Option(True, help="show progress bars"),
) -> None:
    """Train every model of Section 5 and write the tables, figures, claims and report."""
    from .experiments.reproduce import ReproduceError, reproduce

    try:
        result = reproduce(
            profile,
            out,
            only=only,
            device=device,
            seed=seed,
            overwrite=overwrite,
            progress=progress,
        )
    except (ReproduceError, ValueError) as err:
        _fail(str(err))
    for key, title in (("table1", "Table 1 (FCNN, MNIST)"), ("table2", "Table 2 (CNN, F-MNIST)")):
        rows = result.tables[key]
        if not rows:
            continue
        typer.echo(f"\n{title}")
        typer.echo(
            f"{'preset':<28} {'paper':>7} {'ours':>7} {'diff':>7} {'FR-FGSM':>8} "
            f"{'FR-PGD':>7} {'FR-GNM':>7}"
        )
        for r in rows:
            cells = [r["paper"], r["ours"], r["difference"], r["fr_fgsm"], r["fr_pgd"], r["fr_gnm"]]
            typer.echo(
                f"{r['preset']:<28} "
                + " ".join(f"{v:>7.4f}" if isinstance(v, float) else f"{'-':>7}" for v in cells)
            )
    typer.echo("")
    for claim in result.claims:
        typer.echo(f"{claim.claim}: {claim.verdict.upper()} ({claim.evidence[0]})")
    typer.echo(f"\nreport: {result.report_html}  ({result.wall_time / 60:.1f} min)")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
