"""The run-level certification: certified accuracy of a trained run's final model with
every certifier of a :class:`~robustrank.evaluation.spec.CertificationSpec` at every eps
of its grid, per-example masks, and the check that no certified input is broken by the
run's attacks (:func:`certify_run`, :func:`cached_certification`,
:func:`certificate_conflicts`).

The inputs are the strong subset of the run's evaluation (``EvaluationSpec.n`` and
``seed``, :func:`robustrank.data.eval_subset`), or a seeded subset of ``n`` of them
(:func:`certified_positions`), so every run of a profile is certified on the same inputs
and the claims can pair two models input by input, and so the certified masks line up
with the attacks' fooled masks of the same run. Results are cached in the run directory
(``certification.json``) apart from the attacks' ``evaluation.json``: adding or changing
the certification re-runs no attack.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..data import eval_subset, load_dataset, subset_indices
from ..data.hashing import file_digest
from ..models import load_checkpoint
from .certification import certify_sweep
from .spec import EvaluationSpec, cached_result, decode_mask

if TYPE_CHECKING:  # for annotations only: importing robustrank.evaluation loads no training
    from ..training import TrainConfig

__all__ = [
    "certified_positions",
    "certify_run",
    "cached_certification",
    "certificate_conflicts",
    "certified_key",
]


def certified_key(method: str, eps: float) -> str:
    """The name of one certified mask and metric: ``"<method>@<eps>"`` (e.g.
    ``"crown@0.01"``); method ``"best"`` is the union over the methods."""
    return f"{method}@{eps:g}"


def certified_positions(spec: EvaluationSpec) -> np.ndarray:
    """The positions, within the strong subset (``spec.n`` inputs), of the inputs the
    certification uses: all of them, or a seeded subset of ``certification.n``."""
    cert = spec.certification
    if cert is None or cert.n is None or cert.n >= spec.n:
        return np.arange(spec.n)
    return subset_indices(spec.n, cert.n, seed=spec.seed).numpy()


def certify_run(
    config: TrainConfig,
    checkpoint: Path,
    spec: EvaluationSpec,
    *,
    trust_code: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Certify the checkpoint of a run with ``spec.certification`` (methods x eps) on the
    inputs of :func:`certified_positions`; ``trust_code``: rebuild a model named by import
    path.

    Returns :meth:`CertificationSweep.to_dict` (``eps``, ``methods``, ``correct``,
    ``results`` with each row's hex ``certified`` mask) with ``n`` and ``seed`` (of the
    strong subset) and ``positions`` (within it).
    """
    cert = spec.certification
    if cert is None:
        raise ValueError("the evaluation spec has no certification; set its certification")
    model, _ = load_checkpoint(checkpoint, config.device, trust_code=trust_code)
    x_all, y_all = load_dataset(config.dataset, "test")
    x, y = eval_subset(x_all, y_all, spec.n, seed=spec.seed)
    positions = certified_positions(spec)
    index = torch.from_numpy(positions)
    sweep = certify_sweep(
        model,
        x[index].to(config.device),
        y[index].to(config.device),
        cert.eps,
        cert.methods,
        progress=progress,
        options=cert.options,
    )
    return {"n": spec.n, "seed": spec.seed, "positions": positions.tolist(), **sweep.to_dict()}


def _cache_key(spec: EvaluationSpec, checkpoint: Path) -> str:
    assert spec.certification is not None
    return json.dumps(
        {
            "certification": spec.certification.model_dump(),
            "n": spec.n,
            "seed": spec.seed,
            "checkpoint": file_digest(checkpoint),
        },
        sort_keys=True,
    )


def cached_certification(
    config: TrainConfig,
    checkpoint: Path,
    spec: EvaluationSpec,
    cache: Path,
    *,
    trust_code: bool = False,
) -> dict[str, Any]:
    """:func:`certify_run`, cached in ``cache`` (written atomically) under the
    certification settings, the strong subset and the checkpoint's SHA-256."""
    key = _cache_key(spec, checkpoint)
    return cached_result(
        cache, key, lambda: certify_run(config, checkpoint, spec, trust_code=trust_code)
    )


def _broken_within(evaluation: dict[str, Any], n: int) -> list[tuple[str, float, np.ndarray]]:
    """``(attack, eps, fooled)`` of every fixed-eps attack of a run's evaluation on the
    strong subset of ``n`` inputs (none when the subsets differ)."""
    found = []
    strong = evaluation.get("outcomes", {}).get("strong")
    if strong is not None and int(strong["n"]) == n:
        for attack in strong["fooled"]:
            eps = evaluation.get(attack, {}).get("eps")
            if eps is not None:
                found.append((attack, float(eps), decode_mask(strong["fooled"][attack], n)))
    return found


def certificate_conflicts(
    certification: dict[str, Any], evaluation: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """Certified inputs that an attack of the same run broke: a bug in a certifier or an
    attack (sound bounds never meet a real adversarial example). A certificate at eps
    conflicts with an attack's success at ``eps' <= eps`` (PGD-20 and the strong attack
    at the evaluation's eps) and with a robustness-curve breaking budget ``<= eps``.

    Returns one record per (method, eps, source) with conflicts: ``method``, ``eps``,
    ``source`` and ``inputs`` (positions within the strong subset).
    """
    if not evaluation:
        return []
    n = int(certification["n"])
    positions = np.asarray(certification["positions"], dtype=np.int64)
    sources = _broken_within(evaluation, n)
    breaking = (evaluation.get("curve") or {}).get("breaking_eps")
    out = []
    for row in certification["results"]:
        eps = float(row["eps"])
        certified = np.zeros(n, dtype=bool)
        certified[positions] = decode_mask(row["certified"], len(positions))
        checks = [(a, fooled) for a, e, fooled in sources if e <= eps]
        if breaking is not None and len(breaking) == n:
            within = np.array([b is not None and b <= eps for b in breaking], dtype=bool)
            checks.append(("curve", within))
        for source, broken in checks:
            both = np.flatnonzero(certified & broken)
            if len(both):
                out.append(
                    {"method": row["method"], "eps": eps, "source": source,
                     "inputs": both.tolist()}
                )  # fmt: skip
    return out
