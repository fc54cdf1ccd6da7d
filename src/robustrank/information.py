"""KDE mutual-information bounds between inputs, labels and hidden representations (Section 5).

The paper estimates I(X; T^i) with the pairwise-distance bounds of Kolchinsky & Tracey
(2017), as used by Saxe et al. (2018), with noise variance sigma^2 = 0.1. A layer's
activations h_1..h_N (N x d) define T = h + Z with Z ~ N(0, sigma^2 I): an equal-weight
mixture of N Gaussians. With D_ij = ||h_i - h_j||^2 (i = j included),

    H_up(T)  = (d/2) ln(2 pi e sigma^2) - (1/N) sum_i ln[(1/N) sum_j exp(-D_ij / (2 sigma^2))]
    H_low(T) = (d/2) ln(2 pi e sigma^2) - (1/N) sum_i ln[(1/N) sum_j exp(-D_ij / (8 sigma^2))]
    H(T|X)   = (d/2) ln(2 pi e sigma^2)

The upper bound is the KL form, the lower the Bhattacharyya form. The constant cancels, so

    I_up(T;X)  = -(1/N) sum_i ln[(1/N) sum_j exp(-D_ij / (2 sigma^2))]   in [0, ln N]
    I_low(T;X) = the same with 8 sigma^2                                 <= I_up(T;X)

I(T;Y) = H(T) - sum_y p(y) H(T | Y = y) applies the *same* estimator to each class's
samples, upper with upper and lower with lower, with p(y) the empirical label frequencies
(the reference code's convention). With kappa_ij = exp(-D_ij / (c sigma^2)) this becomes

    I(T;Y) = H(Y) + (1/N) sum_i ln[ sum_{j: y_j = y_i} kappa_ij / sum_j kappa_ij ]

with H(Y) the empirical label entropy. The ratio is at most 1 (its log <= 0), hence
I(T;Y) <= H(Y) for both bounds whatever the data (identical points give exactly 0).
These two I(T;Y) numbers are estimates at two kernel widths rather than rigorous bounds
(a difference of two upper bounds bounds nothing); in particular "lower <= upper" is
guaranteed for I(T;X) only (see ``mutual_information_y``). All results are in bits.

Distances are computed in chunks of rows, each reduced with log-sum-exp over j, in
float64, so N = 10,000 needs O(chunk_size * N) memory, never an N x N matrix.

:func:`analyze_model` gathers a model's structure report (Eqs. 2-3) and these bounds per
layer into a :class:`ModelAnalysis` (what ``robustrank analyze`` prints and saves).
"""

from __future__ import annotations

import fnmatch
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ._io import atomic_write_bytes
from ._modes import eval_mode
from .metrics import LayerStructure, format_structure_report, structure_report
from .models import named_weight_layers
from .ownership import check_files, record_files

__all__ = [
    "LayerMI",
    "mutual_information_x",
    "mutual_information_y",
    "layer_activations",
    "named_layer_activations",
    "default_mi_layers",
    "mi_per_layer",
    "label_entropy",
    "format_mi_table",
    "ModelAnalysis",
    "analyze_model",
]

CHUNK_ELEMENTS = 1 << 23  # automatic chunks hold ~8M distances (64 MB in float64)
_LN2 = math.log(2.0)


# --------------------------------------------------------------------------- validation


def _check_noise_var(noise_var: float) -> float:
    if isinstance(noise_var, bool) or not isinstance(noise_var, int | float):
        raise TypeError(f"noise_var must be a real number, got {type(noise_var).__name__}")
    if not math.isfinite(noise_var) or noise_var <= 0:
        raise ValueError(
            f"noise_var must be a finite number > 0 (the paper uses 0.1), got {noise_var!r}"
        )
    return float(noise_var)


def _check_chunk(chunk_size: int | None, n: int) -> int:
    if chunk_size is None:
        return max(1, min(n, CHUNK_ELEMENTS // n))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    return chunk_size


def _prepare(activations: Tensor, dtype: torch.dtype) -> Tensor:
    """Validate, flatten to N x d, convert and centre (distances are translation invariant)."""
    if not isinstance(activations, Tensor):
        raise TypeError(
            f"activations must be a torch.Tensor (N x d), got {type(activations).__name__}; "
            "wrap arrays with torch.as_tensor"
        )
    if activations.dim() < 2:
        raise ValueError(
            f"activations must have shape N x d (or N x ... , flattened), got "
            f"{tuple(activations.shape)}; for a single feature use x.unsqueeze(1)"
        )
    if activations.shape[0] < 2:
        raise ValueError(
            f"need at least N = 2 samples to estimate mutual information, got N = "
            f"{activations.shape[0]}"
        )
    h = activations.detach().flatten(1)
    if h.shape[1] == 0:
        raise ValueError("activations have zero features (d = 0)")
    if not (h.is_floating_point() or h.dtype in (torch.int64, torch.int32, torch.uint8)):
        raise TypeError(f"activations must be real-valued, got dtype {h.dtype}")
    if not bool(torch.isfinite(h).all()):
        raise ValueError(
            "activations contain NaN or infinite values; the network diverged or the "
            "input is broken: fix the model or the data before estimating information"
        )
    h = h.to(dtype)
    return h - h.mean(dim=0, keepdim=True)


def _check_labels(labels: Tensor, n: int) -> Tensor:
    if not isinstance(labels, Tensor):
        raise TypeError(f"labels must be a torch.Tensor of class indices, got {type(labels)}")
    if labels.dim() != 1:
        raise ValueError(f"labels must be one-dimensional (N,), got shape {tuple(labels.shape)}")
    if labels.shape[0] != n:
        raise ValueError(
            f"labels have length {labels.shape[0]} but activations have N = {n} rows; "
            "pass one label per activation row"
        )
    if labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"labels must be integer class indices, got dtype {labels.dtype}")
    return labels


# --------------------------------------------------------------------------- core


def _kernel_bounds(h: Tensor, noise_var: float, chunk_size: int) -> tuple[float, float]:
    """(lower, upper) of -(1/N) sum_i ln[(1/N) sum_j exp(-D_ij / (c sigma^2))] in nats.

    c = 8 (Bhattacharyya, lower) and c = 2 (KL, upper). ``h`` is N x d (float, centred).
    Rows are processed ``chunk_size`` at a time; memory is O(chunk_size * N):

    * one GEMM gives the chunk's squared distances to all N points,
      [h_i, |h_i|^2, 1] . [-2 h_j, 1, |h_j|^2] = |h_i|^2 + |h_j|^2 - 2 h_i.h_j; they are
      clamped at 0 (rounding can make them slightly negative) and the diagonal is set to
      exactly 0;
    * each row is reduced by log-sum-exp over j. The row maximum is known: it is the
      diagonal term exp(0) = 1, every other term lies in [0, 1], so the sum is in [1, N]
      and ln(sum_j exp(.)) needs no max-subtraction (no overflow, no underflow);
    * exp(-D/(2 sigma^2)) = exp(-D/(8 sigma^2))^4, so one exp and two squarings give both.
    """
    n = h.shape[0]
    sq = (h * h).sum(dim=1, keepdim=True)
    ones = torch.ones_like(sq)
    left = torch.cat([h, sq, ones], dim=1)
    right = torch.cat([-2.0 * h, ones, sq], dim=1).T.contiguous()
    a_low = 1.0 / (8.0 * noise_var)
    total_low = torch.zeros((), dtype=h.dtype, device=h.device)
    total_up = torch.zeros((), dtype=h.dtype, device=h.device)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        k = left[start:stop] @ right  # squared distances, chunk x N
        k.clamp_(min=0.0)
        rows = torch.arange(stop - start, device=h.device)
        k[rows, rows + start] = 0.0
        k.mul_(-a_low).exp_()  # Bhattacharyya kernel exp(-D / (8 sigma^2))
        total_low += k.sum(dim=1).log_().sum()
        k.square_().square_()  # KL kernel exp(-D / (2 sigma^2))
        total_up += k.sum(dim=1).log_().sum()
    log_n = math.log(n)
    return log_n - float(total_low) / n, log_n - float(total_up) / n


def _ixt(h: Tensor, noise_var: float, chunk_size: int) -> tuple[float, float]:
    """(lower, upper) I(T;X) in nats: H(T) - H(T|X), the (d/2) ln(2 pi e sigma^2) cancels."""
    return _kernel_bounds(h, noise_var, chunk_size)


def _iyt(
    h: Tensor, labels: Tensor, noise_var: float, chunk_size: int, full: tuple[float, float]
) -> tuple[float, float]:
    """I(T;Y) in nats from the full-set estimate ``full`` = (lower, upper) of H(T) - H(T|X)."""
    n = h.shape[0]
    classes, counts = torch.unique(labels, return_counts=True)
    cond_low = cond_up = 0.0
    for c, count in zip(classes.tolist(), counts.tolist(), strict=True):
        idx = (labels == c).nonzero().flatten().to(h.device)
        if count < 2:  # one point: H(T|Y=y) - H(T|X) = 0 for both bounds
            continue
        low, up = _ixt(h.index_select(0, idx), noise_var, chunk_size)
        cond_low += count / n * low
        cond_up += count / n * up
    return full[0] - cond_low, full[1] - cond_up


def mutual_information_x(
    activations: Tensor,
    noise_var: float = 0.1,
    chunk_size: int | None = None,
    *,
    dtype: torch.dtype = torch.float64,
) -> tuple[float, float]:
    """(lower, upper) KDE bounds on I(T;X) in bits (Kolchinsky & Tracey; Section 5).

    Args:
        activations: N x d representations (dims beyond 1 are flattened), N >= 2. The
            computation runs on their device.
        noise_var: sigma^2 of the Gaussian noise added to T (paper: 0.1).
        chunk_size: rows of the distance matrix held at once (memory O(chunk_size * N));
            None picks ~8M distances per chunk (64 MB).
        dtype: accumulation dtype (float64 by default, so identical points give ~0).

    Both bounds lie in [0, log2 N]; lower <= upper.
    """
    noise_var = _check_noise_var(noise_var)
    h = _prepare(activations, dtype)
    chunk_size = _check_chunk(chunk_size, h.shape[0])
    low, up = _ixt(h, noise_var, chunk_size)
    return low / _LN2, up / _LN2


def mutual_information_y(
    activations: Tensor,
    labels: Tensor,
    noise_var: float = 0.1,
    chunk_size: int | None = None,
    *,
    dtype: torch.dtype = torch.float64,
) -> tuple[float, float]:
    """(lower, upper) KDE estimates of I(T;Y) in bits (Saxe et al.'s convention; Section 5).

    I(T;Y) = H(T) - sum_y p(y) H(T|Y=y) with the same estimator on the whole set and on
    each class (Bhattacharyya width for "lower", KL width for "upper") and p(y) the label
    frequencies. Both satisfy I(T;Y) <= H(Y) exactly (see the module docstring). Unlike
    I(T;X), "lower" is not guaranteed to be <= "upper" here: they are the same
    difference of entropies at two kernel widths, and on contrived configurations (mixed
    classes at a distance comparable to sigma) the wide kernel can score slightly higher;
    on random data we have not seen it happen. I(T;Y) >= 0 was observed, not proven.
    """
    noise_var = _check_noise_var(noise_var)
    h = _prepare(activations, dtype)
    chunk_size = _check_chunk(chunk_size, h.shape[0])
    labels = _check_labels(labels, h.shape[0])
    low, up = _iyt(h, labels, noise_var, chunk_size, _ixt(h, noise_var, chunk_size))
    return low / _LN2, up / _LN2


def label_entropy(labels: Tensor) -> float:
    """Empirical H(Y) in bits from label frequencies (the ceiling of I(T;Y))."""
    if not isinstance(labels, Tensor) or labels.dim() != 1 or len(labels) == 0:
        raise ValueError("labels must be a non-empty one-dimensional tensor of class indices")
    _, counts = torch.unique(labels, return_counts=True)
    p = counts.to(torch.float64) / labels.shape[0]
    return float(-(p * torch.log2(p)).sum())


# --------------------------------------------------------------------------- models


def _check_activation_args(model: nn.Module, x: Tensor, batch_size: int) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if len(x) == 0:
        raise ValueError("x is empty; pass at least one input")


def default_mi_layers(model: nn.Module) -> list[str]:
    """Module paths whose outputs :func:`named_layer_activations` records by default for a
    model without ``activations(x)``: every weight layer but the last (whose output is
    normally the logits, recorded as ``"output"``)."""
    return [layer.name for layer in named_weight_layers(model)][:-1]


def _select_modules(model: nn.Module, layers: Sequence[str]) -> dict[str, nn.Module]:
    modules = dict(model.named_modules())
    chosen: dict[str, nn.Module] = {}
    for key in layers:
        found = [n for n in modules if n and (n == key or fnmatch.fnmatchcase(n, key))]
        if not found:
            raise ValueError(
                f"no module of {type(model).__name__} matches {key!r}; modules: "
                f"{', '.join(n for n in modules if n)}"
            )
        chosen.update({n: modules[n] for n in found})
    return chosen


@torch.no_grad()
def _hooked_batch(model: nn.Module, x: Tensor, modules: dict[str, nn.Module]) -> dict[str, Tensor]:
    """One forward pass recording each module's first output (flattened) and the logits."""
    seen: dict[str, Tensor] = {}
    handles = []
    for name, module in modules.items():

        def hook(_m: nn.Module, _i: Any, out: Any, name: str = name) -> None:
            if name not in seen and isinstance(out, Tensor):
                seen[name] = out.detach().flatten(1)

        handles.append(module.register_forward_hook(hook))
    try:
        logits = model(x)
    finally:
        for h in handles:
            h.remove()
    missing = [n for n in modules if n not in seen]
    if missing:
        raise ValueError(
            f"modules {missing} were not called (or returned no tensor) in the forward pass; "
            "choose modules the forward pass uses"
        )
    return {**{n: seen[n] for n in modules}, "output": logits.detach().flatten(1)}


def named_layer_activations(
    model: nn.Module,
    x: Tensor,
    batch_size: int = 1000,
    layers: Sequence[str] | None = None,
) -> dict[str, Tensor]:
    """Hidden representations by name, and the logits as ``"output"`` (Eq. 1's t^i).

    A model with ``activations(x)`` (the paper's FCNN and CNN) gives ``t1..t{m-1}``
    (post-activation) itself. Any other model is read through forward hooks on ``layers``
    (module paths or globs; default :func:`default_mi_layers`), each module's output
    flattened to N x d. Runs in eval mode (every module's flag restored), without
    gradients, ``batch_size`` inputs at a time on the model's device.
    """
    _check_activation_args(model, x, batch_size)
    param = next(model.parameters(), None)
    device = param.device if param is not None else x.device
    use_method = layers is None and hasattr(model, "activations")
    if not use_method:
        names = list(layers) if layers is not None else default_mi_layers(model)
        modules = _select_modules(model, names)
    parts: list[dict[str, Tensor]] = []
    with eval_mode(model), torch.no_grad():
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size].to(device)
            if use_method:
                outs = model.activations(xb)
                keys = [f"t{i}" for i in range(1, len(outs))] + ["output"]
                parts.append({k: t.flatten(1) for k, t in zip(keys, outs, strict=True)})
            else:
                parts.append(_hooked_batch(model, xb, modules))
    return {k: torch.cat([p[k] for p in parts], dim=0) for k in parts[0]}


def layer_activations(
    model: nn.Module, x: Tensor, batch_size: int = 1000, layers: Sequence[str] | None = None
) -> list[Tensor]:
    """The values of :func:`named_layer_activations`, in order (the logits last)."""
    return list(named_layer_activations(model, x, batch_size, layers).values())


@dataclass(frozen=True)
class LayerMI:
    """KDE information bounds of one layer (bits).

    ``layer`` is ``"t1".."t{m-1}"`` for the paper's models' hidden layers (the module path
    for other models) and ``"output"`` for the logits; ``index`` is 1-based (the output
    has index m).
    """

    layer: str
    index: int
    dim: int
    ixt_lower: float
    ixt_upper: float
    iyt_lower: float
    iyt_upper: float

    def as_dict(self) -> dict:
        return asdict(self)


def mi_per_layer(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    noise_var: float = 0.1,
    batch_size: int = 1000,
    *,
    chunk_size: int | None = None,
    layers: Sequence[str] | None = None,
) -> list[LayerMI]:
    """I(T;X) and I(T;Y) bounds for every hidden layer and the output (Section 5, Fig. 2).

    The paper's information plane uses the hidden layers t^1..t^{m-1}; the output layer
    (logits, before softmax) is included last as ``"output"`` so callers can drop it.
    Any ``nn.Module`` works: ``layers`` (module paths or globs) chooses the representations
    (see :func:`named_layer_activations`). The computation runs on the model's device.
    """
    noise_var = _check_noise_var(noise_var)
    _check_chunk(chunk_size, 1)
    if not isinstance(y, Tensor):
        raise TypeError(f"y must be a torch.Tensor of labels, got {type(y).__name__}")
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} != {len(y)}")
    labels = _check_labels(y, len(x))
    acts = named_layer_activations(model, x, batch_size=batch_size, layers=layers)
    rows = []
    for i, (name, a) in enumerate(acts.items(), 1):
        h = _prepare(a, torch.float64)
        chunk = _check_chunk(chunk_size, h.shape[0])
        full = _ixt(h, noise_var, chunk)
        iy = _iyt(h, labels, noise_var, chunk, full)
        rows.append(
            LayerMI(
                layer=name,
                index=i,
                dim=int(h.shape[1]),
                ixt_lower=full[0] / _LN2,
                ixt_upper=full[1] / _LN2,
                iyt_lower=iy[0] / _LN2,
                iyt_upper=iy[1] / _LN2,
            )
        )
    return rows


def format_mi_table(rows: list[LayerMI]) -> str:
    """Render :func:`mi_per_layer` as a plain-text table (bits)."""
    head = f"{'layer':<7} {'dim':>6} {'I(T;X) low':>11} {'up':>8} {'I(T;Y) low':>11} {'up':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.layer:<7} {r.dim:>6} {r.ixt_lower:>11.4f} {r.ixt_upper:>8.4f} "
            f"{r.iyt_lower:>11.4f} {r.iyt_upper:>8.4f}"
        )
    return "\n".join(lines)


@dataclass
class ModelAnalysis:
    """A model's per-layer structure (Eqs. 2-3) and KDE information bounds on ``n`` inputs.

    ``checkpoint``, ``model`` (the model's ``robustrank_spec``), ``dataset`` (e.g.
    ``DatasetRef.plain()``), ``subset_seed`` and ``checkpoint_metadata`` say where the
    numbers come from; they are written to the JSON as given.
    """

    structure: list[LayerStructure]
    mi: list[LayerMI]
    n: int
    noise_var: float
    checkpoint: str | None = None
    model: dict[str, Any] | None = None
    dataset: str | dict[str, str] | None = None
    subset_seed: int | None = None
    checkpoint_metadata: dict[str, Any] = field(default_factory=dict)
    split: str = "test"

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly: the provenance, then ``structure`` and ``mi`` (one dict per layer)."""
        return {
            "checkpoint": self.checkpoint,
            "model": self.model,
            "dataset": self.dataset,
            "split": self.split,
            "n": self.n,
            "subset_seed": self.subset_seed,
            "noise_var": self.noise_var,
            "structure": [r.as_dict() for r in self.structure],
            "mi": [r.as_dict() for r in self.mi],
            "checkpoint_metadata": self.checkpoint_metadata,
        }

    def format(self) -> str:
        """A heading line, the structure table and the table of bounds (bits)."""
        arch = (self.model or {}).get("name")
        name = self.dataset if isinstance(self.dataset, str) else (self.dataset or {}).get("name")
        where = f" on {name} {self.split}" if name else ""
        head = (
            f"{self.checkpoint or 'model'} ({arch}){where}, n={self.n}, noise_var={self.noise_var}"
        )
        return "\n".join(
            [
                head,
                format_structure_report(self.structure),
                "",
                format_mi_table(self.mi) + "\n(KDE bounds in bits; I(T;X) <= log2 n)",
            ]
        )

    def save_json(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write :meth:`to_dict` atomically as JSON and list the file in its directory's
        ownership marker. An existing file is replaced only with ``overwrite``, and only
        when robustrank wrote it (:func:`robustrank.ownership.check_files`)."""
        check_files([path], overwrite=overwrite)
        written = atomic_write_bytes(path, json.dumps(self.to_dict(), indent=2).encode())
        record_files([written])
        return written


def analyze_model(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    noise_var: float = 0.1,
    batch_size: int = 1000,
    layers: Sequence[str] | None = None,
    checkpoint: str | Path | None = None,
    dataset: str | dict[str, str] | None = None,
    subset_seed: int | None = None,
    checkpoint_metadata: dict[str, Any] | None = None,
) -> ModelAnalysis:
    """The structure report (:func:`robustrank.metrics.structure_report`) and the bounds of
    :func:`mi_per_layer` of ``model`` on ``x, y`` in one :class:`ModelAnalysis`.

    ``layers`` chooses the representations (module paths or globs; default: the paper's
    t^i, or every weight layer but the last); the keyword arguments after it only label
    the result.
    """
    structure = structure_report(model)
    mi = mi_per_layer(model, x, y, noise_var=noise_var, batch_size=batch_size, layers=layers)
    return ModelAnalysis(
        structure=structure,
        mi=mi,
        n=len(x),
        noise_var=noise_var,
        checkpoint=None if checkpoint is None else str(checkpoint),
        model=getattr(model, "robustrank_spec", None),
        dataset=dataset,
        subset_seed=subset_seed,
        checkpoint_metadata=dict(checkpoint_metadata or {}),
    )
