"""Shuffling + batching one MNIST epoch vs. the FCNN's compute for the same epoch.

Issue target: batching must cost a small fraction of the FCNN's forward+backward+SGD work
for one epoch (batch 128). Both are measured in the same run; the ratio is printed.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from robustrank.data import batches, load_dataset
from robustrank.models import create_model


def _median_time(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    x, y = load_dataset("mnist", "train")
    model = create_model("fcnn")
    opt = torch.optim.SGD(model.parameters(), lr=0.001)

    def batching_only() -> None:
        for _xb, _yb in batches(x, y, 128, seed=1):
            pass

    # the FCNN's compute on pre-sliced, unshuffled batches (no shuffling cost inside)
    slices = [(x[i : i + 128], y[i : i + 128]) for i in range(0, len(x), 128)]

    def compute_only() -> None:
        for xb, yb in slices:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            opt.step()

    t_batch = _median_time(batching_only)
    t_compute = _median_time(compute_only)
    ratio = t_batch / t_compute
    verdict = "PASS" if ratio < 0.1 else "MISS"
    print(f"shuffle+batch one MNIST epoch : {t_batch * 1e3:8.1f} ms")
    print(f"FCNN compute for that epoch   : {t_compute * 1e3:8.1f} ms")
    print(f"batching / compute            : {ratio:8.3f}  (target < 0.10) {verdict}")


if __name__ == "__main__":
    main()
