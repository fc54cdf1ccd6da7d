"""The paper's models (Section 5): the FCNN (Table 1) and the CNN (Table 2).

Both take inputs in [0, 1] (NCHW, 1 x 28 x 28) and return logits; there is no softmax
inside. Each exposes ``weight_layers()`` (the layers W^1..W^m of Eq. (1), in forward
order), ``layer_aliases()`` (the paper's names ``W1..Wm`` for their module paths) and
``activations(x)`` (the hidden representations t^i and the output).
"""

from __future__ import annotations

from collections.abc import Callable

import torch.fx
from torch import Tensor, nn

from .registry import register_model

__all__ = ["FCNN", "CNN"]

MNIST_SHAPE = (1, 28, 28)


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


# an opaque call in torch.fx graphs (the certifiers trace the paper's models): its shape
# checks cannot run on symbolic tensors, and its result is unused
torch.fx.wrap("_check_input")


@register_model("fcnn", input_shape=MNIST_SHAPE, dataset="mnist")
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
        # layer by layer (no list of ``depth`` sizes), so a checkpoint probe that stops
        # after a budget of layers never holds more than that
        self.hidden = nn.ModuleList(
            nn.Linear(784 if i == 0 else width, width) for i in range(depth)
        )
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

    def layer_aliases(self) -> dict[str, str]:
        """The paper's names: ``{"W1": "hidden.0", ..., "W6": "out"}``."""
        return _aliases(self)


@register_model("cnn", input_shape=MNIST_SHAPE, dataset="fashion-mnist")
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
        t1 = self.act_pool(self.conv1(self.normalize(x)))
        t2 = self.act_pool(self.conv2(t1))
        t3 = self.fc_act(self.fc1(t2.flatten(1)))
        return [t1, t2, t3, self.out(t3)]

    def act_pool(self, z: Tensor) -> Tensor:
        """A block's activation, then its 2x2 max-pool. ReLU commutes exactly with max
        (``max(relu(a), relu(b)) = relu(max(a, b))``, and a window whose maximum is <= 0
        gets a zero gradient either way), so in eager mode a ReLU block pools first: the
        activation touches a quarter of the values, and the outputs and all gradients are
        the same numbers. A ``torch.fx`` trace (the certifiers' graph) keeps the written
        order, activation then pool."""
        if isinstance(self.conv_act, nn.ReLU) and not isinstance(z, torch.fx.Proxy):
            return self.conv_act(self.pool(z))
        return self.pool(self.conv_act(z))

    def forward(self, x: Tensor) -> Tensor:
        return self.activations(x)[-1]

    def weight_layers(self) -> list[nn.Module]:
        """W^1..W^m in layer order (conv1, conv2, fc1, out)."""
        return [self.conv1, self.conv2, self.fc1, self.out]

    def layer_aliases(self) -> dict[str, str]:
        """The paper's names: ``{"W1": "conv1", "W2": "conv2", "W3": "fc1", "W4": "out"}``."""
        return _aliases(self)


def _aliases(model: nn.Module) -> dict[str, str]:
    paths = {id(m): name for name, m in model.named_modules()}
    return {f"W{i}": paths[id(m)] for i, m in enumerate(model.weight_layers(), 1)}
