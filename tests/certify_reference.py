"""Independent references for the certifier tests: the worst margins an adversary finds in
the region (uniform samples, random vertices and PGD on each margin), the exact worst case
of a linear model, and small models of every supported layer type."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def region(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """The l_inf ball around x clipped to [0, 1]."""
    return (x - eps).clamp(min=0), (x + eps).clamp(max=1)


def margins_at(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """``z_y - z_j`` for every class, ``(N, C)``."""
    z = model(x)
    return z.gather(1, y[:, None]) - z


@torch.no_grad()
def sampled_margins(model: nn.Module, x: Tensor, y: Tensor, eps: float, samples: int) -> Tensor:
    """The smallest margins over uniform samples and random vertices of the region."""
    lo, hi = region(x, eps)
    best = margins_at(model, x, y)
    for i in range(samples):
        u = torch.rand_like(x)
        point = torch.where(u < 0.5, lo, hi) if i % 2 else lo + (hi - lo) * u
        best = torch.minimum(best, margins_at(model, point, y))
    return best


def pgd_margins(
    model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int = 20, restarts: int = 2
) -> Tensor:
    """The smallest margins ``z_y - z_j`` projected gradient descent finds, for each class
    ``j`` separately (every iterate counts)."""
    n, c = len(x), model(x[:1]).shape[1]
    lo, hi = (t.repeat_interleave(c, 0) for t in region(x, eps))
    yy, jj = y.repeat_interleave(c), torch.arange(c).repeat(n)
    best = torch.full((n * c,), torch.inf)
    step = max(eps, 1e-3) / 4
    for _ in range(restarts):
        point = (lo + (hi - lo) * torch.rand_like(lo)).requires_grad_(True)
        for _ in range(steps):
            z = model(point)
            margin = z.gather(1, yy[:, None])[:, 0] - z.gather(1, jj[:, None])[:, 0]
            best = torch.minimum(best, margin.detach())
            (grad,) = torch.autograd.grad(margin.sum(), point)
            with torch.no_grad():
                point = torch.maximum(torch.minimum(point - step * grad.sign(), hi), lo)
            point.requires_grad_(True)
    return best.view(n, c)


def observed_margins(model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Tensor:
    """The smallest margins any of the attacks above finds (an upper bound on the truth)."""
    return torch.minimum(sampled_margins(model, x, y, eps, 64), pgd_margins(model, x, y, eps))


def exact_linear_margins(w: Tensor, b: Tensor, x: Tensor, y: Tensor, eps: float) -> Tensor:
    """The exact worst margins of ``x -> W x + b`` (x flattened) over the clipped ball:
    ``sum_i min(d_i lo_i, d_i hi_i) + b_y - b_j`` with ``d = w_y - w_j``."""
    lo, hi = (t.flatten(1) for t in region(x, eps))
    d = w[y][:, None, :] - w[None, :, :]  # (N, C, D)
    worst = torch.minimum(d * lo[:, None, :], d * hi[:, None, :]).sum(-1)
    return worst + b[y][:, None] - b[None, :]


def load_small_resnet() -> type[nn.Module]:
    """``SmallResNet`` from examples/small_resnet.py."""
    spec = importlib.util.spec_from_file_location("small_resnet", EXAMPLES / "small_resnet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SmallResNet


def randomise_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every batch norm non-trivial running statistics and affine parameters."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            if m.weight is not None:
                m.weight.data.copy_(torch.randn(c, generator=g))
                m.bias.data.copy_(torch.randn(c, generator=g) * 0.2)
    return model.eval()


class Normalise(nn.Module):
    """``(x - mean) / std`` with per-channel buffers."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.linspace(0.3, 0.6, channels).view(1, -1, 1, 1))
        self.register_buffer("std", torch.linspace(0.2, 0.4, channels).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class Residual(nn.Module):
    """``relu(x + conv(relu(bn(conv(x)))))`` with functional relu, then a global mean."""

    def __init__(self, width: int = 3, classes: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.fc = nn.Linear(width, classes)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn(self.conv1(x)))
        x = torch.relu(x + self.conv2(out))
        return self.fc(x.mean(dim=(2, 3)))


class Mixed(nn.Module):
    """Constants, methods and functional forms: sub/mul/div by numbers, ``Tensor.sigmoid``,
    ``F.avg_pool2d``, ``F.max_pool2d`` with overlapping windows, ``x.view(x.size(0), -1)``,
    ``c - x``, ``x - y`` of two tensors, and a batch norm after an activation."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 2, stride=1, padding="same")
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 3 * 3, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = (x * 2.0 - 1.0) / 0.5
        h = self.bn(torch.tanh(self.conv(x)))
        h = F.max_pool2d(h, 3, stride=2, padding=1)
        h = 1.0 - F.avg_pool2d(h.sigmoid(), 1) - 0.5 * h
        h = h.relu() - F.relu(-h) * 0.5
        return self.fc(h.view(h.size(0), -1))


def mlp(activation: type[nn.Module], sizes: tuple[int, ...] = (6, 8, 8, 4)) -> nn.Module:
    """Flatten, then linear layers with ``activation`` between them."""
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def convnet(activation: type[nn.Module] = nn.ReLU) -> nn.Module:
    """Strided and padded convolutions, BN, max and average pooling; input 2 x 10 x 10."""
    return nn.Sequential(
        Normalise(2),
        nn.Conv2d(2, 4, 3, stride=2, padding=1),  # 5 x 5
        nn.BatchNorm2d(4),
        activation(),
        nn.MaxPool2d(2, stride=1),  # 4 x 4
        nn.Conv2d(4, 3, 3, padding="same"),
        activation(),
        nn.AvgPool2d(2),  # 2 x 2
        nn.Flatten(),
        nn.Linear(12, 8),
        nn.BatchNorm1d(8),
        activation(),
        nn.Dropout(0.3),
        nn.Linear(8, 5),
    )
