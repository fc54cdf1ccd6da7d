"""The training loop of Section 5: natural, adversarial (any registered attack) and
regularised (Eq. 8) training of any model into a run directory.

Every source of randomness is derived from ``seed`` (:func:`derive_seed`): the initial
weights, one shuffling generator per epoch, one attack seed per training batch, and a
private global RNG stream (saved in the resume state). A resumed run therefore reaches the
same weights and history (apart from the ``time_*`` columns) as an uninterrupted one on
the same device; runs are deterministic given the seed on CPU.

The loss of a batch is the training objective's (:mod:`robustrank.training.objectives`:
``madry``, ``mix``, ``trades``, ``mart``; natural training without an attack) plus the
regularisers (Eqs. 5-7), giving Eq. (8); with ``regularizers: {mode: proximal}`` the l1 and
nuclear terms act as proximal steps after the optimizer's step instead
(:mod:`robustrank.structure.proximal`). A ``structure:`` section prunes and/or factorises
the starting weights exactly (:mod:`robustrank.structure`); HYDRA's score phase trains only
the scores during its first ``score_epochs`` epochs; gradual pruning (Zhu & Gupta, 2017)
updates the masks at the start of its pruning epochs.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from .._io import atomic_write_bytes, log
from .._modes import resolve_device, torch_threads
from ..models import StructureError, save_checkpoint, structure_of, use_fast_layout
from ..regularizers import Regularizer
from ..structure import proximal_step, score_phase
from .config import ConfigError, TrainConfig
from .measurements import Accumulator, Measurer
from .objectives import Adversary, ObjectiveOutput, Progress, create_objective
from .optimizers import create_optimizer
from .presets import load_preset
from .rundir import (
    CONFIG_FILE,
    DONE_FILE,
    FINAL_FILE,
    HISTORY_CSV,
    HISTORY_JSONL,
    LAST_FILE,
    RESUME_FILE,
    RunError,
    append_line,
    check_run_dir,
    csv_line,
    json_value,
    prepare_run_dir,
    read_history,
    restore_optimizer,
    run_lock,
    save_resume,
    truncate_to,
)
from .seeds import ATTACK, GLOBAL, SHUFFLE, STRUCTURE, derive_seed, lr_at_epoch
from .setup import (
    RunSetup,
    check_labels_before_run,
    needs_parent_run,
    pin_data,
    preset_run_dir,
    private_rng,
    setup_run,
)

__all__ = ["TrainResult", "train"]

Callback = Callable[[dict[str, Any], nn.Module], None]


@dataclass
class TrainResult:
    """What :func:`train` returns. ``paused``: training stopped at ``until_epoch`` (the
    run is resumable; ``model`` is the model at that epoch, ``final_checkpoint`` does not
    exist yet)."""

    model: nn.Module
    history: list[dict[str, Any]]
    out_dir: Path
    final_checkpoint: Path
    history_jsonl: Path
    history_csv: Path
    wall_time: float
    config: TrainConfig
    resumed: bool = False
    already_done: bool = False
    paused: bool = False

    def format(self) -> str:
        """The run directory, final model, test accuracy and the last fooling ratios."""
        last = self.history[-1] if self.history else {}
        lines = [f"run directory: {self.out_dir}", f"final model:   {self.final_checkpoint}"]
        if last.get("test_acc") is not None:
            lines.append(f"test accuracy: {last['test_acc']:.4f}")
        h = self.config.history
        for name in h.attacks:
            if last.get(f"fr_{name}") is not None:
                value = last[f"fr_{name}"]
                lines.append(f"fooling ratio {name.upper():<4} (eps {h.eps}): {value:.4f}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- entry points


def train(
    config: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    callback: Callback | None = None,
    trust_code: bool = False,
    until_epoch: int | None = None,
) -> TrainResult:
    """Train (or fine-tune) a model as described by ``config`` into the run directory ``out_dir``.

    Natural training, fine-tuning (``init``), adversarial training with any registered
    attack at ``adversarial.eps`` (Section 5) and any regulariser of Eq. (8) combine freely,
    on any registered model and dataset.

    Args:
        config: the run.
        out_dir: run directory. A non-empty directory is refused unless ``resume`` (continue
            the interrupted run with the same config and data; a finished run is a no-op)
            or ``overwrite`` (delete the previous run there and start over).
        progress: show a tqdm bar (epoch, loss, accuracy, time left).
        callback: ``callback(row, model)`` after every history row is written and the
            resume state saved; an exception raised there stops training (the run can then
            be resumed from that point).
        trust_code: allow a model named by import path (``model.name: pkg.mod:factory``),
            which imports and runs that code.
        until_epoch: stop once epoch ``until_epoch`` is complete, its state saved, and
            return with ``paused=True``; a later call (``resume=True``) continues exactly
            where it stopped (a rung of a multi-fidelity sweep). ``None`` or an epoch at or
            beyond ``config.epochs``: train to the end.

    Returns:
        :class:`TrainResult` with the final model (on ``config.device``), the history rows
        and the paths of the run's files.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(
            f"config must be a TrainConfig (use load_config(path) or load_preset(name)), "
            f"got {type(config).__name__}"
        )
    if config.needs_trust and not trust_code:
        raise ConfigError(
            f"{config.name}: model.name {config.model.name!r} is an import path; training "
            "imports and runs that code, so nothing was imported. If you trust it, pass "
            "trust_code=True (CLI: --trust-code)"
        )
    return _train(
        config,
        Path(out_dir),
        resume=resume,
        overwrite=overwrite,
        progress=progress,
        callback=callback,
        stack=(),
        trust_code=trust_code,
        until_epoch=until_epoch,
    )


def _train(
    config: TrainConfig,
    out_dir: Path,
    *,
    resume: bool,
    overwrite: bool,
    progress: bool,
    callback: Callback | None,
    stack: tuple[str, ...],
    trust_code: bool,
    until_epoch: int | None = None,
) -> TrainResult:
    try:
        resolve_device(config.device)  # before anything is written
    except ValueError as err:
        raise RunError(str(err)) from None
    check_run_dir(out_dir, resume, overwrite)  # before the lock file: refuse a foreign dir
    config = pin_data(config)
    if overwrite or not (out_dir / CONFIG_FILE).exists():
        check_labels_before_run(config, trust_code)  # before a run is deleted or started
    with run_lock(out_dir), torch_threads(config.threads):
        t_call = time.perf_counter()
        mode = prepare_run_dir(config, out_dir, resume, overwrite)
        if mode == "done":
            if progress:  # executors call without progress, once per finished run
                log(
                    f"[{config.name}] run {out_dir} is already finished ({DONE_FILE}); "
                    "nothing to do"
                )
            return _result_from_finished(config, out_dir, t_call, trust_code)
        if needs_parent_run(config, out_dir, mode):
            _train_parent(config, out_dir, progress, stack, trust_code)
        setup = setup_run(config, out_dir, mode, trust_code)
        with private_rng(setup.device):
            run = _Run(config, out_dir, setup, progress, callback, t_call)
            return run.execute(until_epoch)


def _train_parent(
    config: TrainConfig, out_dir: Path, progress: bool, stack: tuple[str, ...], trust_code: bool
) -> None:
    """Train the run a fine-tune starts from (``init.from_preset``, with this run's seed and
    device) into :func:`preset_run_dir`, resuming it if it was interrupted."""
    name = config.init.from_preset
    assert name is not None
    if name in stack:
        raise ConfigError(f"init.from_preset cycle: {' -> '.join((*stack, name))}")
    parent_dir = preset_run_dir(config, out_dir)
    log(
        f"[{config.name}] init.from_preset {name!r}: no finished run in {parent_dir}; "
        f"training it first (seed {config.seed}, device {config.device})"
    )
    parent = load_preset(name).model_copy(update={"seed": config.seed, "device": config.device})
    try:
        _train(
            parent,
            parent_dir,
            resume=True,
            overwrite=False,
            progress=progress,
            callback=None,
            stack=(*stack, config.name),
            trust_code=trust_code,
        )
    except RunError as err:
        raise RunError(f"while preparing init.from_preset {name!r}: {err}") from err
    log(f"[{config.name}] {name} finished; fine-tuning from {parent_dir / FINAL_FILE}")


def _result_from_finished(
    config: TrainConfig, out_dir: Path, t0: float, trust_code: bool
) -> TrainResult:
    from ..models import load_checkpoint

    model, _ = load_checkpoint(
        out_dir / FINAL_FILE, map_location=config.device, trust_code=trust_code
    )
    return TrainResult(
        model=model,
        history=read_history(out_dir),
        out_dir=out_dir,
        final_checkpoint=out_dir / FINAL_FILE,
        history_jsonl=out_dir / HISTORY_JSONL,
        history_csv=out_dir / HISTORY_CSV,
        wall_time=time.perf_counter() - t0,
        config=config,
        already_done=True,
    )


# --------------------------------------------------------------------------- the loop


class _AdversarialInputs:
    """The adversarial side of training under ``config.adversarial``: the configured attack
    and the training objective (:mod:`robustrank.training.objectives`).

    The attack comes from the registry; ``alpha``, ``steps`` and ``random_start`` go to it
    if it takes them, with ``options`` on top. An attack that takes a seed is rebuilt for
    every batch with a seed derived from the run seed, epoch and step (deterministic
    resume); others are built once. The objective gets the batch's attack, a batch seed
    of its own (``derive_seed(seed, ATTACK, epoch, step, OBJECTIVE_STREAM)``) and the run's
    :class:`~robustrank.training.objectives.Progress` (for schedules).
    """

    #: the objective's seed is a sub-stream of the batch's attack seed, not the same seed
    OBJECTIVE_STREAM = 1

    def __init__(self, config: TrainConfig, model: nn.Module, steps_per_epoch: int) -> None:
        from ..attacks import create_attack, get_attack, supported_options

        adv = config.adversarial
        self.seed, self.model, self.eps = config.seed, model, adv.eps
        self.epochs, self.steps_per_epoch = config.epochs, steps_per_epoch
        self.objective = create_objective(adv.objective_name, **adv.objective_options())
        self.name = None if adv.attack == "none" else adv.attack
        self.fixed = None
        if self.name is None:
            return
        given = {"alpha": adv.alpha, "steps": adv.steps, "random_start": adv.random_start}
        self.options = {**supported_options(adv.attack, given), **adv.options}
        self.create = create_attack
        if not get_attack(adv.attack).takes_seed:
            self.fixed = create_attack(adv.attack, model, adv.eps, **self.options)

    @property
    def active(self) -> bool:
        return self.name is not None

    def __call__(self, xb: Tensor, yb: Tensor, epoch: int, step: int) -> Tensor:
        if self.name is None:
            return xb
        if self.fixed is not None:
            return self.fixed(xb, yb)
        seed = derive_seed(self.seed, ATTACK, epoch, step)
        return self.create(self.name, self.model, self.eps, seed=seed, **self.options)(xb, yb)

    def loss(self, xb: Tensor, yb: Tensor, epoch: int, step: int) -> ObjectiveOutput:
        """The objective's loss and logits of the batch ``step`` (from 1) of ``epoch``."""
        attack = None if self.name is None else functools.partial(self, epoch=epoch, step=step)
        seed = derive_seed(self.seed, ATTACK, epoch, step, self.OBJECTIVE_STREAM)
        progress = Progress(epoch, step - 1, self.epochs, self.steps_per_epoch)
        return self.objective.loss(self.model, xb, yb, Adversary(attack, seed, progress))


class _Run:
    """One training run in progress: the model, optimiser, counters and history files.

    ``execute`` = ``start`` (fresh) or ``restore`` (resume), then ``run_epoch`` until the
    last epoch, then ``finish``. ``commit`` writes a history row, the rolling checkpoint
    and the resume state, in that order, so that an interruption at any point resumes to
    the same result.
    """

    def __init__(
        self,
        config: TrainConfig,
        out_dir: Path,
        setup: RunSetup,
        progress: bool,
        callback: Callable[[dict[str, Any], nn.Module], None] | None,
        t_call: float,
    ) -> None:
        self.config, self.out_dir, self.setup = config, out_dir, setup
        self.progress, self.callback, self.t_call = progress, callback, t_call
        self.jsonl, self.csv_path = out_dir / HISTORY_JSONL, out_dir / HISTORY_CSV
        self.n_batches = setup.batches_per_epoch(config.batch_size)
        self.measurer = Measurer(config.history, setup.x_te, setup.y_te)
        self.model = setup.model
        use_fast_layout(self.model.to(setup.device), setup.device)
        self.model.train()
        self.opt = create_optimizer(
            config.optimizer.name,
            self.model.parameters(),
            config.lr,
            **config.optimizer_options(),
        )
        self.regularizer = (
            Regularizer.from_config(config.regularizers) if config.regularizers.active else None
        )
        self.adversarial = _AdversarialInputs(config, self.model, self.n_batches)
        self.columns: list[str] | None = None
        self.last_test: float | None = None

    # ------------------------------------------------------------------ state

    def start(self) -> None:
        """A fresh run: seed the private global RNG and write the epoch-0 row."""
        torch.manual_seed(derive_seed(self.config.seed, GLOBAL))
        self.epoch, self.step_in_epoch, self.global_step = 0, self.n_batches, 0
        self.acc = Accumulator()
        self.sizes = {"jsonl": 0, "csv": 0}
        self.times = {"train": 0.0, "elapsed": 0.0}
        self.rows: list[dict[str, Any]] = []
        self._clock()
        n = len(self.setup.x_tr)
        log(
            f"[{self.config.name}] {self.setup.origin}; {n} training examples, "
            f"{self.n_batches} batches/epoch"
        )
        self.commit("init")

    def restore(self, state: tuple[dict[str, Tensor], dict[str, Any]]) -> None:
        """Continue from a resume state: weights, optimiser, RNG, counters, history files."""
        tensors, header = state
        prefix = "model/"
        weights = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        self.model.load_state_dict(weights)
        restore_optimizer(self.opt, tensors, header)
        torch.set_rng_state(tensors["rng/torch_cpu"])
        cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng/cuda/")]
        if cuda_states and self.setup.device.type == "cuda":
            torch.cuda.set_rng_state_all(cuda_states)
        self.epoch, self.step_in_epoch = header["epoch"], header["step_in_epoch"]
        self.global_step = header["global_step"]
        self.acc = Accumulator(header["accumulator"])
        self.sizes, self.times = header["history_bytes"], header["times"]
        self.columns = header["columns"]
        truncate_to(self.jsonl, self.sizes["jsonl"])
        truncate_to(self.csv_path, self.sizes["csv"])
        self.rows = read_history(self.out_dir)
        self._clock()
        part = self.step_in_epoch < self.n_batches
        log(
            f"[{self.config.name}] resuming {self.out_dir} at epoch {self.epoch}"
            + (f", step {self.step_in_epoch}/{self.n_batches}" if part else "")
        )

    def _clock(self) -> None:
        self.t_session = time.perf_counter()
        self.elapsed0 = self.times["elapsed"]

    def elapsed(self) -> float:
        return self.elapsed0 + (time.perf_counter() - self.t_session)

    # ------------------------------------------------------------------ history

    def _row(self, kind: str) -> dict[str, Any]:
        t_eval = time.perf_counter()
        epoch = self.epoch
        row: dict[str, Any] = {
            "kind": kind,
            "epoch": epoch,
            "step": self.global_step,
            "epoch_progress": (epoch - 1) + self.step_in_epoch / self.n_batches if epoch else 0.0,
            "lr": self.lr_of(max(epoch, 1)),
        }
        row.update(self.acc.means())
        if kind == "init" and self.setup.init_measures is not None:
            row.update(self.setup.init_measures)
        else:
            row.update(self.measurer.measure(self.model))
        row["time_eval"] = time.perf_counter() - t_eval
        row["time_train"] = self.times["train"]
        row["time_elapsed"] = self.elapsed()
        return row

    def _append(self, row: dict[str, Any]) -> None:
        if self.columns is None:
            self.columns = list(row)
        if len(row) != len(self.columns) or any(c not in row for c in self.columns):
            raise RuntimeError(
                f"history row columns changed: {sorted(set(row) ^ set(self.columns))}"
            )
        if self.sizes["csv"] == 0:
            self.sizes["csv"] = append_line(self.csv_path, csv_line(self.columns))
        clean = {k: json_value(row[k]) for k in self.columns}
        self.sizes["jsonl"] = append_line(self.jsonl, json.dumps(clean) + "\n")
        self.sizes["csv"] = append_line(self.csv_path, csv_line([row[k] for k in self.columns]))
        self.rows.append(clean)

    def _save_state(self, kind: str | None) -> None:
        self.times["elapsed"] = self.elapsed()
        meta = self._checkpoint_meta()
        save_checkpoint(self.model, self.out_dir / LAST_FILE, **meta)
        if self.config.checkpoint_every_epoch and kind != "steps":
            path = self.out_dir / f"checkpoint-epoch-{self.epoch}.safetensors"
            save_checkpoint(self.model, path, **meta)
        resume_meta = {
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "n_batches": self.n_batches,
            "accumulator": self.acc.state(),
            "history_bytes": self.sizes,
            "times": self.times,
            "columns": self.columns,
            "structure": structure_of(self.model),
        }
        save_resume(self.out_dir / RESUME_FILE, self.model, self.opt, resume_meta)

    def _checkpoint_meta(self) -> dict[str, Any]:
        return {
            "dataset": self.config.dataset.plain(),
            "epoch": self.epoch,
            "step": self.global_step,
            "preset": self.config.name,
            "config": self.config.plain(),
        }

    def commit(self, kind: str | None) -> dict[str, Any] | None:
        """Write a history row (if ``kind``), the rolling checkpoint and the resume state."""
        row = self._row(kind) if kind is not None else None
        if row is not None:
            self._append(row)
        self._save_state(kind)
        if row is not None and self.callback is not None:
            self.callback(dict(row), self.model)
        return row

    # ------------------------------------------------------------------ training

    def step(self, xb: Tensor, yb: Tensor) -> None:
        """One optimiser step on Eq. (8): the objective's loss (``madry``: CE on the
        attack's inputs, clean ones without an attack) plus the regularisers."""
        model = self.model
        ce, logits = self.adversarial.loss(xb, yb, self.epoch, self.step_in_epoch)
        self.opt.zero_grad(set_to_none=True)  # after the attacks, as before: drops their grads
        loss, terms = ce, None
        if self.regularizer is not None:
            terms = self.regularizer.terms(model)
            loss = ce + terms["l1"] + terms["nuclear"] + terms["joint"]
        loss.backward()
        self.opt.step()
        self.global_step += 1
        self._accumulate(ce, loss, terms, logits, yb)

    def _accumulate(
        self, ce: Tensor, loss: Tensor, terms: dict[str, Tensor] | None, logits: Tensor, yb: Tensor
    ) -> None:
        s, acc = self.acc.sums, self.acc
        ce_value = ce.item()
        s["ce"] += ce_value
        if terms is not None:
            for key in ("l1", "nuclear", "joint"):
                s[key] += terms[key].item()
            s["total"] += loss.item()
        else:
            s["total"] += ce_value
        acc.batches += 1
        acc.correct += int((logits.argmax(1) == yb).sum())
        acc.seen += len(yb)

    def _show(self, bar: tqdm) -> None:
        if not self.progress:
            return
        if self.global_step % 20 == 0 or self.step_in_epoch == self.n_batches:
            s, acc = self.acc.sums, self.acc
            bar.set_postfix(
                epoch=f"{self.epoch}/{self.config.epochs}",
                loss=f"{s['total'] / acc.batches:.4f}",
                acc=f"{acc.correct / acc.seen:.3f}",
                test_acc="-" if self.last_test is None else f"{self.last_test:.4f}",
                refresh=False,
            )

    def lr_of(self, epoch: int) -> float:
        """The learning rate of ``epoch``: the schedule's, or ``structure.prune.score_lr``
        during HYDRA's score phase."""
        prune = self.config.structure.prune
        if prune is not None and prune.score_lr is not None and prune.score_epochs is not None:
            if epoch <= prune.score_epochs:
                return prune.score_lr
        return lr_at_epoch(self.config, epoch)

    def _structure_phase(self) -> None:
        """HYDRA: the first ``score_epochs`` epochs train the scores, the rest the weights;
        gradual pruning: the masks follow the schedule (:meth:`_gradual`)."""
        score_epochs = self.config.structure.score_epochs
        if score_epochs is not None:
            score_phase(self.model, train_scores=self.epoch <= score_epochs)
        if self.config.structure.gradual is not None:
            self._gradual()

    def _gradual(self) -> None:
        """Gradual pruning (Zhu & Gupta, 2017): at the start of a pruning epoch (not when
        resuming mid-epoch: the resume state holds the epoch's mask) prune to the cubic
        schedule's density, random pruning seeded by ``derive_seed(seed, STRUCTURE,
        epoch)``; then check that every mask keeps exactly the schedule's count."""
        structure, epoch = self.config.structure, self.epoch
        if self.step_in_epoch == 0:
            seed = derive_seed(self.config.seed, STRUCTURE, epoch)
            done = structure.gradual_step(self.model, epoch, seed)
            if done:
                parts = ", ".join(f"{name} {d:.4g}" for name, d in done.items())
                log(f"[{self.config.name}] epoch {epoch}: gradual pruning to density {parts}")
        try:
            structure.check_gradual(self.model, epoch)
        except StructureError as err:
            raise RunError(
                f"{self.out_dir}: epoch {epoch}: {err}; the run's masks do not follow "
                "structure.prune.gradual: start the run over with --overwrite"
            ) from None

    def _proximal(self, lr: float) -> None:
        """``regularizers: {mode: proximal}``: the l1 and nuclear proximal steps (threshold
        ``lr * lambda``) after the optimizer's step."""
        if self.regularizer is not None and self.config.regularizers.proximal:
            l1, nuclear = self.regularizer.layers(self.model)
            proximal_step(l1, nuclear, lr)

    def run_epoch(self, bar: tqdm) -> None:
        """The rest of the current epoch (all of it unless resuming mid-epoch)."""
        from ..data import batches

        config, h = self.config, self.config.history
        skip = self.step_in_epoch
        lr = self.lr_of(self.epoch)
        for group in self.opt.param_groups:
            group["lr"] = lr
        shuffle = torch.Generator().manual_seed(derive_seed(config.seed, SHUFFLE, self.epoch))
        self.model.train()  # attacks and evaluation restore the mode they found
        self._structure_phase()
        t_train = time.perf_counter()
        for i, (xb, yb) in enumerate(
            batches(self.setup.x_tr, self.setup.y_tr, config.batch_size, generator=shuffle)
        ):
            if i < skip:
                continue
            self.step_in_epoch = i + 1
            self.step(xb, yb)
            self._proximal(lr)
            bar.update(1)
            self._show(bar)
            every = h.every_steps
            if every and self.global_step % every == 0 and self.step_in_epoch < self.n_batches:
                self.times["train"] += time.perf_counter() - t_train
                self.commit("steps")
                t_train = time.perf_counter()
        self.times["train"] += time.perf_counter() - t_train
        is_row = self.epoch % h.every_epochs == 0 or self.epoch == config.epochs
        row = self.commit("epoch" if is_row else None)
        if row is not None and "test_acc" in row:
            self.last_test = row["test_acc"]

    def execute(self, until_epoch: int | None = None) -> TrainResult:
        """Train to the end (:meth:`finish`), or pause after epoch ``until_epoch``."""
        if self.setup.resume_state is None:
            self.start()
        else:
            self.restore(self.setup.resume_state)
        self.last_test = self.rows[-1].get("test_acc") if self.rows else None
        bar = tqdm(
            total=self.config.epochs * self.n_batches,
            initial=self.global_step,
            desc=self.config.name,
            unit="step",
            disable=not self.progress,
            dynamic_ncols=True,
            file=sys.stderr,
        )
        try:
            while True:
                if self.step_in_epoch >= self.n_batches:
                    if self.epoch >= self.config.epochs:
                        break
                    if until_epoch is not None and self.epoch >= until_epoch:
                        return self.pause()
                    self.epoch, self.step_in_epoch = self.epoch + 1, 0
                    self.acc = Accumulator()
                self.run_epoch(bar)
        finally:
            bar.close()
        return self.finish()

    # ------------------------------------------------------------------ finish

    def pause(self) -> TrainResult:
        """Stop at the end of the current epoch (its resume state is already saved)."""
        log(f"[{self.config.name}] paused after epoch {self.epoch} of {self.config.epochs}")
        self.model.eval()
        return TrainResult(
            model=self.model,
            history=self.rows,
            out_dir=self.out_dir,
            final_checkpoint=self.out_dir / FINAL_FILE,
            history_jsonl=self.jsonl,
            history_csv=self.csv_path,
            wall_time=time.perf_counter() - self.t_call,
            config=self.config,
            resumed=self.setup.resume_state is not None,
            paused=True,
        )

    def finish(self) -> TrainResult:
        """Final checkpoint, then done.json (the commit point), then clean up."""
        config, out_dir = self.config, self.out_dir
        last_row = self.rows[-1] if self.rows else {}
        final = out_dir / FINAL_FILE
        meta = self._checkpoint_meta()
        save_checkpoint(self.model, final, **meta, test_acc=last_row.get("test_acc"))
        done = {
            "name": config.name,
            "epochs": config.epochs,
            "steps": self.global_step,
            "final_checkpoint": FINAL_FILE,
            "test_acc": last_row.get("test_acc"),
            "time_train": self.times["train"],
            "time_elapsed": self.elapsed(),
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        text = json.dumps(done, indent=2) + "\n"
        atomic_write_bytes(out_dir / DONE_FILE, text.encode("utf-8"))
        (out_dir / RESUME_FILE).unlink(missing_ok=True)
        (out_dir / LAST_FILE).unlink(missing_ok=True)
        msg = f"[{config.name}] finished {config.epochs} epochs in {done['time_elapsed']:.1f} s"
        if last_row.get("test_acc") is not None:
            msg += f"; test accuracy {last_row['test_acc']:.4f}"
        log(msg)
        self.model.eval()
        return TrainResult(
            model=self.model,
            history=self.rows,
            out_dir=out_dir,
            final_checkpoint=final,
            history_jsonl=self.jsonl,
            history_csv=self.csv_path,
            wall_time=time.perf_counter() - self.t_call,
            config=config,
            resumed=self.setup.resume_state is not None,
        )
