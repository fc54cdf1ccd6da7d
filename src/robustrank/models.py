"""The paper's models (Section 5), a small registry, weight matrices and safe checkpoints.

Models take inputs in [0, 1] (NCHW, 1 x 28 x 28) and return logits; there is no softmax
inside. Every model exposes ``weight_layers()`` (the layers W^1..W^m of Eq. (1), in
order) and ``activations(x)`` (the hidden representations t^i and the output).

Checkpoints are a single safetensors file whose header carries JSON metadata: the
architecture (name and options, from which the model is rebuilt), a SHA-256 digest of the
tensors, and whatever metadata the caller adds. No pickle is ever read or written.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ._io import atomic_write_bytes

__all__ = [
    "FCNN",
    "CNN",
    "CheckpointError",
    "create_model",
    "list_models",
    "register_model",
    "weight_layers",
    "weight_matrices",
    "as_matrix",
    "save_checkpoint",
    "load_checkpoint",
    "model_spec",
    "atomic_write_bytes",
    "use_fast_layout",
    "prefers_channels_last",
]

CHECKPOINT_FORMAT = "robustrank-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, tampered with, or does not match its model."""


def _activation(name: str) -> nn.Module:
    table: dict[str, Callable[[], nn.Module]] = {
        "tanh": nn.Tanh,
        "relu": nn.ReLU,
        "sigmoid": nn.Sigmoid,
        "identity": nn.Identity,
    }
    if name not in table:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(table)}")
    return table[name]()


class _Normalize(nn.Module):
    """(x - mean) / std inside the model, so that attacks always work in [0, 1]."""

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        if std <= 0:
            raise ValueError(f"normalisation std must be > 0, got {std}")
        self.mean, self.std = float(mean), float(std)

    def forward(self, x: Tensor) -> Tensor:
        if self.mean == 0.0 and self.std == 1.0:  # the default: exactly the identity
            return x
        return (x - self.mean) / self.std


def _check_input(x: Tensor, model: str) -> None:
    if x.dim() != 4 or tuple(x.shape[1:]) != (1, 28, 28):
        raise ValueError(
            f"{model} expects inputs of shape N x 1 x 28 x 28 in [0, 1], got {tuple(x.shape)}; "
            "add the channel dimension with x.unsqueeze(1) if you have N x 28 x 28"
        )


class FCNN(nn.Module):
    """The paper's FCNN (Section 5): 784 -> ``depth`` hidden layers of ``width`` -> 10.

    Hidden layers use tanh; the output layer returns logits (softmax is in the loss).

    Args:
        width: units per hidden layer (paper: 20).
        depth: number of hidden layers (paper: 5).
        activation: hidden activation (paper: ``"tanh"``).
        num_classes: number of logits.
        mean, std: optional input normalisation applied inside the model.

    Shape: ``(N, 1, 28, 28) -> (N, num_classes)``.
    """

    def __init__(
        self,
        width: int = 20,
        depth: int = 5,
        activation: str = "tanh",
        num_classes: int = 10,
        mean: float = 0.0,
        std: float = 1.0,
    ) -> None:
        super().__init__()
        if width < 1 or depth < 1 or num_classes < 2:
            raise ValueError("FCNN needs width >= 1, depth >= 1 and num_classes >= 2")
        self.normalize = _Normalize(mean, std)
        dims = [784] + [width] * depth
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.act = _activation(activation)
        self.out = nn.Linear(width, num_classes)

    def activations(self, x: Tensor) -> list[Tensor]:
        """Hidden representations t^1..t^{m-1} (post-activation) and the logits, Eq. (1)."""
        _check_input(x, "FCNN")
        t = self.normalize(x).flatten(1)
        outs = []
        for layer in self.hidden:
            t = self.act(layer(t))
            outs.append(t)
        outs.append(self.out(t))
        return outs

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x, "FCNN")
        t = self.normalize(x).flatten(1)
        for layer in self.hidden:
            t = self.act(layer(t))
        return self.out(t)

    def weight_layers(self) -> list[nn.Module]:
        """W^1..W^m in layer order."""
        return [*self.hidden, self.out]


class CNN(nn.Module):
    """The paper's CNN (Section 5): 2 x [conv 32 @ 3x3 -> max-pool 2x2] -> FC 128 tanh -> 10.

    The paper does not state the convolutions' activation or padding. We use ReLU and
    ``"same"`` padding by default (28 -> 14 -> 7, so FC1 is 1568 -> 128), the usual
    choice for this Keras-style block; both are options.

    Args:
        channels: filters per convolution (paper: 32).
        hidden: width of the first fully connected layer (paper: 128, tanh).
        conv_activation: ``"relu"`` (default) or ``"tanh"``, etc.
        padding: ``"same"`` (default) or ``"valid"`` (28 -> 13 -> 5, FC1 800 -> 128).
        num_classes: number of logits.
        mean, std: optional input normalisation applied inside the model.

    Shape: ``(N, 1, 28, 28) -> (N, num_classes)``.
    """

    def __init__(
        self,
        channels: int = 32,
        hidden: int = 128,
        conv_activation: str = "relu",
        padding: str = "same",
        num_classes: int = 10,
        mean: float = 0.0,
        std: float = 1.0,
    ) -> None:
        super().__init__()
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
        if channels < 1 or hidden < 1 or num_classes < 2:
            raise ValueError("CNN needs channels >= 1, hidden >= 1 and num_classes >= 2")
        pad = 1 if padding == "same" else 0
        self.normalize = _Normalize(mean, std)
        self.conv1 = nn.Conv2d(1, channels, 3, padding=pad)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=pad)
        self.conv_act = _activation(conv_activation)
        self.pool = nn.MaxPool2d(2)
        side = 7 if padding == "same" else 5
        self.fc1 = nn.Linear(channels * side * side, hidden)
        self.fc_act = nn.Tanh()
        self.out = nn.Linear(hidden, num_classes)

    def activations(self, x: Tensor) -> list[Tensor]:
        """t^1 (block 1), t^2 (block 2), t^3 (FC1, tanh) and the logits, Eq. (1)."""
        _check_input(x, "CNN")
        t1 = self.pool(self.conv_act(self.conv1(self.normalize(x))))
        t2 = self.pool(self.conv_act(self.conv2(t1)))
        t3 = self.fc_act(self.fc1(t2.flatten(1)))
        return [t1, t2, t3, self.out(t3)]

    def forward(self, x: Tensor) -> Tensor:
        return self.activations(x)[-1]

    def weight_layers(self) -> list[nn.Module]:
        """W^1..W^m in layer order (conv1, conv2, fc1, out)."""
        return [self.conv1, self.conv2, self.fc1, self.out]


_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str, factory: Callable[..., nn.Module]) -> None:
    """Add a model factory to the registry used by :func:`create_model`."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = factory


register_model("fcnn", FCNN)
register_model("cnn", CNN)


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return sorted(_REGISTRY)


def create_model(name: str, **options: Any) -> nn.Module:
    """Build a registered model, e.g. ``create_model("cnn", padding="valid")``.

    The name and options are kept on the model (``model.robustrank_spec``) so that a
    checkpoint can rebuild it.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    try:
        model = _REGISTRY[name](**options)
    except TypeError as err:
        raise ValueError(f"bad options for model {name!r}: {err}") from err
    model.robustrank_spec = {"name": name, "options": dict(options)}  # type: ignore[assignment]
    return model


def model_spec(model: nn.Module) -> dict[str, Any]:
    """The ``{"name", "options"}`` a model was created with (for checkpoints and reports)."""
    spec = getattr(model, "robustrank_spec", None)
    if spec is None:
        raise ValueError(
            f"{type(model).__name__} was not built by robustrank.create_model, so it cannot "
            "be rebuilt from a checkpoint; create it with create_model(name, **options)"
        )
    return spec


def prefers_channels_last(model: nn.Module, device: str | torch.device = "cpu") -> bool:
    """Whether ``model`` runs faster channels-last on ``device``: CPU with ``Conv2d`` layers."""
    return torch.device(device).type == "cpu" and any(
        isinstance(m, nn.Conv2d) for m in model.modules()
    )


def use_fast_layout(model: nn.Module, device: str | torch.device = "cpu") -> nn.Module:
    """Store a conv model's 4-D tensors channels-last on CPU, where oneDNN is faster.

    For the paper's CNN a training step was 1.0-1.9x faster on a 2-core CPU, depending on
    the machine's load (``benchmarks/bench_training.py``). Values, state-dict keys and
    checkpoints are unchanged (checkpoints are written contiguous); only the memory
    layout differs. Models without ``Conv2d`` layers, and CUDA devices, are left
    as they are. Returns ``model`` (converted in place).
    """
    if prefers_channels_last(model, device):
        model.to(memory_format=torch.channels_last)
    return model


def weight_layers(model: nn.Module) -> list[nn.Module]:
    """The layers W^1..W^m of a model, in order.

    Uses ``model.weight_layers()`` when defined, else every ``nn.Linear``/``nn.Conv2d``
    in registration order.
    """
    if hasattr(model, "weight_layers"):
        return list(model.weight_layers())
    return [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]


def as_matrix(w: Tensor) -> Tensor:
    """A weight as a 2-D matrix: conv kernels (out, in, kh, kw) -> (out, in*kh*kw), Appendix B."""
    if w.dim() == 2:
        return w
    if w.dim() == 4:
        return w.reshape(w.shape[0], -1)
    raise ValueError(
        f"expected a 2-D weight matrix or a 4-D conv kernel (out, in, kh, kw), "
        f"got shape {tuple(w.shape)}"
    )


def weight_matrices(model: nn.Module) -> dict[str, Tensor]:
    """Every weight as a 2-D matrix, keyed ``"W1".."Wm"`` in layer order (Appendix B).

    The matrices are views of the parameters, so they carry gradients.
    """
    return {f"W{i}": as_matrix(layer.weight) for i, layer in enumerate(weight_layers(model), 1)}


# --------------------------------------------------------------------------- checkpoints


def _tensor_digest(tensors: dict[str, Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().to("cpu").contiguous()
        h.update(key.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(model: nn.Module, path: str | Path, **metadata: Any) -> Path:
    """Save ``model`` as safetensors with JSON metadata (architecture + ``metadata``).

    The write is atomic. ``metadata`` must be JSON-serialisable.
    """
    from safetensors.torch import save

    spec = model_spec(model)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    try:
        user = json.loads(json.dumps(metadata))
    except TypeError as err:
        raise ValueError(f"checkpoint metadata must be JSON-serialisable: {err}") from err
    header = {
        "format": CHECKPOINT_FORMAT,
        "architecture": spec,
        "sha256": _tensor_digest(tensors),
        "metadata": user,
    }
    data = save(tensors, metadata={"robustrank": json.dumps(header, sort_keys=True)})
    path = Path(path)
    atomic_write_bytes(path, data)
    return path


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a checkpoint written by :func:`save_checkpoint`.

    Returns ``(model, metadata)``; the model is in eval mode. Tampered tensors, a missing
    or foreign header, or weights that do not fit the recorded architecture raise
    :class:`CheckpointError`.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    raw = path.read_bytes()
    try:
        tensors = load(raw)
        n = int.from_bytes(raw[:8], "little")
        header_meta = json.loads(raw[8 : 8 + n]).get("__metadata__") or {}
    except (SafetensorError, ValueError, json.JSONDecodeError, RuntimeError) as err:
        raise CheckpointError(
            f"{path} is not a valid safetensors file ({err}); it may be truncated or "
            "corrupt: re-save it or restore it from a backup"
        ) from err
    if "robustrank" not in header_meta:
        raise CheckpointError(
            f"{path} has no robustrank metadata; save it with robustrank.save_checkpoint"
        )
    try:
        header = json.loads(header_meta["robustrank"])
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: robustrank metadata is not valid JSON ({err})") from err
    if header.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: unsupported checkpoint format {header.get('format')!r}, "
            f"expected {CHECKPOINT_FORMAT!r}"
        )
    if _tensor_digest(tensors) != header.get("sha256"):
        raise CheckpointError(
            f"{path}: tensor checksum mismatch, the weights were modified after saving "
            "(tampered or corrupt); do not use this file"
        )
    arch = header.get("architecture") or {}
    try:
        model = create_model(arch["name"], **arch.get("options", {}))
    except (KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot rebuild the architecture {arch}: {err}") from err
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    bad = [k for k in expected if k in tensors and tensors[k].shape != expected[k].shape]
    if missing or extra or bad:
        raise CheckpointError(
            f"{path}: weights do not match architecture {arch['name']}: missing {missing}, "
            f"unexpected {extra}, wrong shape {bad}"
        )
    model.load_state_dict(tensors)
    model.to(map_location).eval()
    return model, header.get("metadata", {})
