"""A small residual network with BatchNorm, trained in your own loop with robustrank.

Run from this directory::

    python small_resnet.py                      # synthetic CIFAR-10-shaped data
    python small_resnet.py --cifar10 ~/data/cifar-10-binary.tar.gz
    python small_resnet.py --data-only          # just write cifar_like.npz (for the YAML)

It trains ``SmallResNet`` with ``loss = CE + reg(model)`` (Eq. 8), where ``reg`` puts an
l1 penalty (Eq. 5) on every convolution of the residual blocks and a nuclear-norm penalty
(Eq. 6) on the classifier, and logs effective rank and sparsity per layer, PGD fooling
ratios and MI to ``runs/small-resnet-loop/structure.csv`` with ``StructureTracker``.

The same model trains from YAML with ``robustrank train small_resnet.yaml --trust-code``
(the config names it by import path ``small_resnet:SmallResNet``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import robustrank as rr
from robustrank.data import batches, load_dataset


class Block(nn.Module):
    """conv-BN-ReLU-conv-BN plus the identity (He et al. 2016, basic block)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(out)))


class SmallResNet(nn.Module):
    """Stem conv, ``blocks`` residual blocks, global average pooling, a linear classifier.

    The classifier is registered first on purpose: registration order is not forward
    order, and robustrank names layers by module path in forward order anyway.
    Input ``(N, 3, 32, 32)`` in [0, 1]; normalisation lives inside the model.
    """

    def __init__(self, width: int = 16, blocks: int = 2, num_classes: int = 10) -> None:
        super().__init__()
        self.fc = nn.Linear(width, num_classes)
        self.stem = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.layers = nn.Sequential(*(Block(width) for _ in range(blocks)))
        self.register_buffer("mean", torch.tensor([0.49, 0.48, 0.45]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.25, 0.24, 0.26]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        x = self.layers(F.relu(self.bn(self.stem(x))))
        return self.fc(x.mean(dim=(2, 3)))


def make_cifar_like(path: Path, n_train: int = 2000, n_test: int = 500, seed: int = 0) -> Path:
    """A CIFAR-10-shaped npz (uint8, N x 3 x 32 x 32): each class a coloured blob pattern
    plus noise, so that a small network learns it within a few epochs."""
    rng = np.random.default_rng(seed)
    templates = rng.uniform(0, 255, size=(10, 3, 8, 8))
    templates = templates.repeat(4, axis=2).repeat(4, axis=3)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 10, size=n)
        x = 0.6 * templates[y] + 0.4 * rng.uniform(0, 255, size=(n, 3, 32, 32))
        return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)

    (x_tr, y_tr), (x_te, y_te) = split(n_train), split(n_test)
    np.savez(path, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cifar10", type=Path, help="cifar-10-binary.tar.gz or its directory")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("runs/small-resnet-loop"))
    parser.add_argument("--data-only", action="store_true", help="write cifar_like.npz, exit")
    args = parser.parse_args()
    if args.data_only:
        print(f"wrote {make_cifar_like(Path('cifar_like.npz'))}")
        return

    if args.cifar10 is not None:
        dataset = {"name": "cifar10", "path": str(args.cifar10)}
    else:
        dataset = {"name": "npz", "path": str(make_cifar_like(Path("cifar_like.npz")))}
    x_train, y_train = load_dataset(dataset, "train")
    x_test, y_test = load_dataset(dataset, "test")

    torch.manual_seed(0)
    model = SmallResNet(width=16)
    reg = rr.Regularizer(l1={"layers.*.conv*": 1e-4}, nuclear={"fc": 1e-2})
    tracker = rr.StructureTracker(
        model,
        args.out,
        x=x_test,
        y=y_test,
        attacks=["pgd"],
        eval_n=200,
        track_mi=True,
        mi_n=300,
        mi_layers=["stem", "layers.0", "layers.1"],
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    tracker.log(epoch=0, step=0, loss=float("nan"))
    step = 0
    for epoch in range(1, args.epochs + 1):
        model.train()
        for xb, yb in batches(x_train, y_train, 64, seed=epoch):
            loss = F.cross_entropy(model(xb), yb) + reg(model)  # Eq. (8)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
        row = tracker.log(epoch=epoch, step=step, loss=loss.item())
        print(
            f"epoch {epoch}: test acc {row['test_acc']:.3f}, PGD fooling ratio "
            f"{row['fr_pgd']:.3f}, fc effective rank {row['eff_rank_fc']:.3f}"
        )
    print(f"wrote {tracker.csv_path}")


if __name__ == "__main__":
    main()
