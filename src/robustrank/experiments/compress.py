"""Post-hoc compression of a trained checkpoint (``robustrank compress``): prune and/or
factorise it to exact densities and ranks (:mod:`robustrank.structure`), write the
structured checkpoint and a record of what changed, and optionally fine-tune it with a
preset's recipe (its objective, epochs, learning rate), starting from the compressed
weights.

The output directory (marked as robustrank's, kind ``compress``) holds
``compressed.safetensors``, ``compress.json`` (the request, the source's SHA-256, the
structure report before and after) and, with a fine-tune, the run directory ``finetune/``.
The same command again reuses the compressed checkpoint and resumes the fine-tune; a
different request is refused unless ``overwrite``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .._io import atomic_write_text, log
from ..metrics import LayerStructure, format_structure_report, structure_report
from ..models import CheckpointError, load_checkpoint, read_checkpoint_header, save_checkpoint
from ..ownership import OutputKind, OwnershipError, claim_dir, read_record
from ..structure import FactorizeConfig, PruneConfig, StructureConfig, get_pruning_method
from ..structure.pruning import LayerKey
from ..sweeps.space import merge_overrides
from ..training import ConfigError, RunError, config_from_dict, load_preset, train
from ..training.rundir import FINAL_FILE, RUN_DIR

__all__ = ["COMPRESS_DIR", "CompressError", "CompressResult", "compress"]

COMPRESSED_FILE, RECORD_FILE, FINETUNE_DIR = "compressed.safetensors", "compress.json", "finetune"

#: What a compression directory holds (:mod:`robustrank.ownership`).
COMPRESS_DIR = OutputKind(
    "compress", files=(COMPRESSED_FILE, RECORD_FILE), children={FINETUNE_DIR: RUN_DIR}
)


class CompressError(ValueError):
    """The compression cannot run as asked; the message names the problem and the fix."""


@dataclass
class CompressResult:
    """What :func:`compress` returns: the files and the record of ``compress.json``."""

    out_dir: Path
    checkpoint: Path
    record: dict[str, Any]
    finetune_checkpoint: Path | None = None

    def format(self) -> str:
        """The per-layer structure after compression, and the fine-tune's result."""
        rows = [LayerStructure(**{**r, "shape": tuple(r["shape"])}) for r in self.record["after"]]
        lines = [format_structure_report(rows)]
        tuned = self.record.get("finetune")
        if tuned:
            acc = tuned.get("test_acc")
            lines.append(
                f"fine-tuned with preset {tuned['preset']}: {self.finetune_checkpoint}"
                + (f" (test accuracy {acc:.4f})" if acc is not None else "")
            )
        return "\n".join(lines)


def structure_request(
    density: Mapping[LayerKey, float] | None = None,
    rank: Mapping[LayerKey, int] | None = None,
    energy: float | None = None,
    method: str = "magnitude",
    scope: str = "layer",
) -> StructureConfig:
    """The :class:`~robustrank.structure.StructureConfig` of a compression request."""
    if not density and not rank and energy is None:
        raise CompressError("nothing to do: give --density LAYER=D, --rank LAYER=R or --energy E")
    try:
        trainable = bool(density) and get_pruning_method(method).trainable
    except ValueError as err:
        raise CompressError(str(err)) from None
    if trainable:
        raise CompressError(
            f"method {method} (HYDRA) learns its mask in training: use a training config with "
            "structure: {prune: {method: scores, score_epochs: N, ...}} and init.checkpoint"
        )
    try:
        prune = PruneConfig(density=dict(density), method=method, scope=scope) if density else None
        factorize = None
        if rank or energy is not None:
            factorize = FactorizeConfig(rank=dict(rank) if rank else None, energy=energy)
        config = StructureConfig(prune=prune, factorize=factorize)
    except (ValidationError, ValueError) as err:
        errors = err.errors() if isinstance(err, ValidationError) else [{"msg": str(err)}]
        msgs = (str(e["msg"]).removeprefix("Value error, ") for e in errors)
        raise CompressError("; ".join(msgs)) from None
    return config


def _request(
    checkpoint: Path,
    structure: StructureConfig,
    seed: int,
    finetune: str | None,
    overrides: dict[str, Any],
) -> dict[str, Any]:
    header = read_checkpoint_header(checkpoint)
    return {
        "source": str(checkpoint),
        "source_sha256": header["sha256"],
        "structure": json.loads(json.dumps(structure.plain())),
        "seed": seed,
        "finetune": finetune,
        "overrides": json.loads(json.dumps(overrides)),
    }


def _conflict(out: Path, request: dict[str, Any]) -> str | None:
    saved = read_record(out / RECORD_FILE, lambda d: isinstance(d, dict), "a compression record")
    if saved is None or saved.get("request") == request:
        return None
    return (
        f"{out} holds a compression of another request ({saved.get('request')}); choose a new "
        "--out, or pass --overwrite to delete it"
    )


def _compress_model(
    checkpoint: Path, structure: StructureConfig, seed: int, trust_code: bool, out: Path
) -> dict[str, Any]:
    """Load, structure and save; the record of what changed."""
    model, meta = load_checkpoint(checkpoint, trust_code=trust_code)
    before = [r.as_dict() for r in structure_report(model)]
    done = structure.apply(model, seed)
    save_checkpoint(model, out / COMPRESSED_FILE, **{**meta, "compressed_from": str(checkpoint)})
    after = [r.as_dict() for r in structure_report(model)]
    return {"before": before, "after": after, "applied": done, "dataset": meta.get("dataset")}


def _finetune(
    out: Path,
    preset: str,
    overrides: Mapping[str, Any],
    seed: int,
    progress: bool,
    trust_code: bool,
) -> dict[str, Any]:
    """Train ``preset``'s recipe (with ``overrides``) from the compressed checkpoint into
    ``out/finetune``."""
    base = merge_overrides(load_preset(preset).plain(), overrides)
    base["init"] = {"checkpoint": str((out / COMPRESSED_FILE).resolve())}
    base["name"] = f"{preset}-compressed"
    base["seed"] = seed
    config = config_from_dict(base, f"preset {preset} from {out / COMPRESSED_FILE}")
    result = train(
        config, out / FINETUNE_DIR, resume=True, progress=progress, trust_code=trust_code
    )
    last = result.history[-1] if result.history else {}
    return {"preset": preset, "run": FINETUNE_DIR, "test_acc": last.get("test_acc")}


def compress(
    checkpoint: str | Path,
    out: str | Path,
    *,
    density: Mapping[LayerKey, float] | None = None,
    rank: Mapping[LayerKey, int] | None = None,
    energy: float | None = None,
    method: str = "magnitude",
    scope: str = "layer",
    seed: int = 0,
    finetune: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    trust_code: bool = False,
) -> CompressResult:
    """Compress ``checkpoint`` into the directory ``out``; optionally fine-tune it.

    Args:
        checkpoint: a robustrank checkpoint (any model it can rebuild).
        out: the output directory (see the module docstring).
        density: ``{layer key: fraction kept}`` to prune (keys as in the regularisers).
        rank: ``{layer key: rank}`` to factorise; a layer in both is low rank plus sparse.
        energy: instead of ``rank``, factorise every layer to keep this fraction of
            ``||W||_F^2``.
        method, scope: the pruning method (``magnitude``, ``random``) and scope.
        seed: seeds random pruning and the fine-tune.
        finetune: a preset whose recipe fine-tunes the compressed model (the structure
            stays exact through it), e.g. ``fcnn-pgd``.
        overrides: config values that change the preset's recipe, deep-merged
            (:func:`robustrank.sweeps.space.merge_overrides`; nested mappings or dotted
            keys, as :func:`robustrank.experiments.budgets.parse_overrides` builds from
            ``--set``).
    """
    checkpoint, out = Path(checkpoint), Path(out)
    structure = structure_request(density, rank, energy, method, scope)
    try:
        request = _request(checkpoint, structure, seed, finetune, dict(overrides or {}))
        claim_dir(out, COMPRESS_DIR, overwrite=overwrite, conflict=lambda: _conflict(out, request))
    except (OwnershipError, CheckpointError) as err:
        raise CompressError(str(err)) from None
    record = read_record(out / RECORD_FILE, lambda d: isinstance(d, dict), "a compression record")
    if record is None or not (out / COMPRESSED_FILE).is_file():
        try:
            record = {
                "request": request,
                **_compress_model(checkpoint, structure, seed, trust_code, out),
            }
        except (CheckpointError, ValueError) as err:
            raise CompressError(f"{checkpoint}: {err}") from None
        atomic_write_text(out / RECORD_FILE, json.dumps(record, indent=2) + "\n")
    else:
        log(f"{out}: reusing {COMPRESSED_FILE} of the same request")
    tuned = None
    if finetune is not None:
        try:
            tuned_by = _finetune(out, finetune, overrides or {}, seed, progress, trust_code)
            record["finetune"] = tuned_by
        except (ConfigError, RunError) as err:
            raise CompressError(f"fine-tuning with {finetune}: {err}") from None
        atomic_write_text(out / RECORD_FILE, json.dumps(record, indent=2) + "\n")
        tuned = out / FINETUNE_DIR / FINAL_FILE
    return CompressResult(out, out / COMPRESSED_FILE, record, tuned)
