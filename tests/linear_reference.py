"""A 10-class linear model whose exact l_inf robust accuracy is known in closed form.

For ``f(x) = W x + b`` and an input ``x`` at least ``eps`` away from the box [0, 1] in every
coordinate, the worst case of ``f_y - f_j`` over the eps-ball is
``f_y(x) - f_j(x) - eps * ||w_y - w_j||_1`` (move each pixel by ``eps`` against the sign of
``w_y - w_j``). So an input is breakable at ``eps`` iff

    min_{j != y} (f_y - f_j - eps * ||w_y - w_j||_1) < 0,

and its minimal breaking l_inf norm is ``min_j (f_y - f_j) / ||w_y - w_j||_1``. Shared by the
tests of every attack (``from linear_reference import linear_problem``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class LinearProblem:
    model: nn.Module
    x: Tensor  # (N, 1, 8, 8), in [0.25, 0.75], so inside the box at eps <= 0.25
    y: Tensor  # (N,), the clean predictions (every input is classified correctly)
    eps: float

    def weights(self) -> tuple[Tensor, Tensor]:
        lin = self.model[1]
        return lin.weight.detach().double(), lin.bias.detach().double()

    def min_norm(self) -> Tensor:
        """Each input's exact minimal breaking l_inf norm (float64)."""
        w, b = self.weights()
        f = self.x.flatten(1).double() @ w.T + b
        fy = f.gather(1, self.y[:, None])
        dist = (w[self.y][:, None, :] - w[None, :, :]).abs().sum(2)  # (N, K) ||w_y - w_j||_1
        ratio = (fy - f) / dist
        ratio.scatter_(1, self.y[:, None], float("inf"))
        return ratio.amin(1)

    def breakable(self, eps: float | None = None) -> Tensor:
        """The exact set of inputs an l_inf attack of budget ``eps`` can break."""
        return self.min_norm() < (self.eps if eps is None else eps)

    def exact_robust_accuracy(self, eps: float | None = None) -> float:
        return float((~self.breakable(eps)).double().mean())


def linear_problem(n: int = 200, eps: float = 0.05, seed: int = 0) -> LinearProblem:
    """A seeded 10-class linear model on 8x8 inputs with about half the inputs breakable."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(10, 64, generator=g) * 0.5)
        model[1].bias.copy_(torch.randn(10, generator=g) * 0.1)
    x = 0.25 + 0.5 * torch.rand(n, 1, 8, 8, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    return LinearProblem(model.eval(), x, y, eps)
