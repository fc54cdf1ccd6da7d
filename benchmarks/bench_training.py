"""Training-loop overhead against a bare PyTorch loop (same model, data, batches, same run).

Cases (after one warm-up run each, medians of ``--repeat`` runs in ABBA order; machines
are noisy, so only ratios measured in this run are compared):

* natural training, FCNN/MNIST (batch 128) and CNN/F-MNIST (batch 64): the time of one
  epoch over a fixed subset of ``--fcnn-batches``/``--cnn-batches`` batches; target <= 1.05x
  the bare loop. The bare loop uses the same memory layout as ``train`` (channels-last conv
  weights on CPU), so the ratio is the loop's overhead; for the CNN a bare loop on the
  default layout is timed too, which shows what the layout itself gains;
* PGD-20 adversarial training (eps 0.05, alpha 0.005, random start), CNN, on
  ``--pgd-batches`` batches; target <= 1.05x a bare loop with an inline PGD;
* the nuclear-norm regulariser on the CNN's conv2 (lambda_{*,2} = 0.1): time per step
  relative to an unregularised step through the same code; target <= 1.15x.

``robustrank.train`` runs with history evaluation disabled and its epoch time is the
``time_train`` column (the batch loop only); the bare loop does no evaluation either. The
history evaluation (clean accuracy, FGSM/PGD-20/GNM-5 fooling ratios on 1000 test
examples, weight structure) is timed separately and reported, not compared.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from robustrank.data import eval_subset, load_dataset
from robustrank.models import create_model, use_fast_layout
from robustrank.training import config_from_dict, derive_seed, train

TARGET_LOOP = 1.05
TARGET_NUCLEAR = 1.15


def _config(model: str, n_batches: int, **extra) -> dict:
    fcnn = model == "fcnn"
    bs = 128 if fcnn else 64
    data = {
        "name": f"bench-{model}",
        "model": {"name": model},
        "dataset": "mnist" if fcnn else "fashion-mnist",
        "train_subset": n_batches * bs,
        "epochs": 1,
        "batch_size": bs,
        "lr": 0.001 if fcnn else 0.01,
        "history": {"evaluate": False},
    }
    data.update(extra)
    return data


@functools.lru_cache(maxsize=2)
def _train_set(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    return load_dataset(name, "train")


def robustrank_epoch(cfg: dict) -> tuple[float, dict]:
    """``time_train`` of one epoch of ``robustrank.train`` and the final history row."""
    with tempfile.TemporaryDirectory() as tmp:
        result = train(config_from_dict(cfg), Path(tmp) / "run", progress=False)
    return result.history[-1]["time_train"], result.history[-1]


def bare_epoch(cfg: dict, fast_layout: bool = True) -> float:
    """A plain PyTorch epoch: shuffled index slices, SGD, optional inline PGD.

    ``fast_layout``: the model in the layout ``train`` uses (channels-last conv weights on
    CPU, :func:`robustrank.models.use_fast_layout`), so the ratio measures loop overhead
    only; ``False`` is the model as ``create_model`` builds it, what a bare loop gets.
    """
    x, y = _train_set(cfg["dataset"])
    x, y = eval_subset(x, y, cfg["train_subset"], seed=0)
    # the same initial weights as train(): per-step cost depends on the weights (ReLU and
    # max-pool patterns), so both loops must start from the same point
    torch.manual_seed(derive_seed(cfg.get("seed", 0), 0))
    model = create_model(cfg["model"]["name"])
    if fast_layout:
        use_fast_layout(model)
    opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"])
    adv = cfg.get("adversarial", {})
    gen = torch.Generator().manual_seed(1)
    bs = cfg["batch_size"]
    start = time.perf_counter()
    # train()'s batch order of epoch 1
    perm = torch.randperm(
        len(x), generator=torch.Generator().manual_seed(derive_seed(cfg.get("seed", 0), 1, 1))
    )
    for i in range(0, len(x), bs):
        idx = perm[i : i + bs]
        xb, yb = x.index_select(0, idx), y.index_select(0, idx)
        if adv.get("attack") == "pgd":
            eps, alpha = adv["eps"], adv["alpha"]
            model.eval()
            noise = torch.empty_like(xb).uniform_(-eps, eps, generator=gen)
            xa = (xb + noise).clamp(0, 1)
            for _ in range(adv["steps"]):
                xa.requires_grad_(True)
                (g,) = torch.autograd.grad(F.cross_entropy(model(xa), yb), xa)
                xa = xa.detach() + alpha * g.sign()
                xa = torch.min(torch.max(xa, xb - eps), xb + eps).clamp(0, 1)
            model.train()
            xb = xa.detach()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def alternate(*fns, repeat: int) -> list[list[float]]:
    """Warm each up once, then time them in alternating (ABBA...) order so drift cancels."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for i in range(repeat):
        order = range(len(fns)) if i % 2 == 0 else reversed(range(len(fns)))
        for j in order:
            times[j].append(fns[j]())
    return times


def compare(label: str, cfg: dict, repeat: int, target: float) -> bool:
    fns = [lambda: bare_epoch(cfg), lambda: robustrank_epoch(cfg)[0]]
    conv = cfg["model"]["name"] == "cnn"
    if conv:  # also a bare loop on the default NCHW layout: the speed a user would get
        fns.append(lambda: bare_epoch(cfg, fast_layout=False))
    times = alternate(*fns, repeat=repeat)
    mb, mo = statistics.median(times[0]), statistics.median(times[1])
    ratio = mo / mb
    ok = ratio <= target
    print(
        f"{label:<44} robustrank {mo:8.3f} s  bare {mb:8.3f} s  ratio {ratio:5.3f}x  "
        f"(target <= {target:.2f}x) {'PASS' if ok else 'MISS'}",
        flush=True,
    )
    if conv:
        md = statistics.median(times[2])
        print(
            f"{'':<44} bare loop on the default NCHW layout {md:8.3f} s: robustrank is "
            f"{md / mo:4.2f}x faster (channels-last conv weights on CPU)",
            flush=True,
        )
    return ok


def nuclear_overhead(batches: int, repeat: int) -> bool:
    plain = _config("cnn", batches)
    reg = _config("cnn", batches, regularizers={"nuclear": {2: 0.1}})
    t_plain, t_reg = alternate(
        lambda: robustrank_epoch(plain)[0], lambda: robustrank_epoch(reg)[0], repeat=repeat
    )
    a, b = statistics.median(t_plain), statistics.median(t_reg)
    ratio = b / a
    ok = ratio <= TARGET_NUCLEAR
    print(
        f"{'nuclear lambda_*,2 on CNN conv2 (per step)':<44} with {1000 * b / batches:7.2f} ms  "
        f"without {1000 * a / batches:7.2f} ms  ratio {ratio:5.3f}x  "
        f"(target <= {TARGET_NUCLEAR:.2f}x) {'PASS' if ok else 'MISS'}",
        flush=True,
    )
    return ok


def evaluation_cost(model: str) -> None:
    cfg = _config(model, 1, history={"evaluate": True})
    with tempfile.TemporaryDirectory() as tmp:
        rows = train(config_from_dict(cfg), Path(tmp) / "run", progress=False).history
    t = statistics.median(r["time_eval"] for r in rows)
    print(
        f"history evaluation, {model.upper():<4} (test acc on 10k, FGSM/PGD-20/GNM-5 fooling "
        f"ratios on 1000, structure): {t:.2f} s per history point (reported, not compared)",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--fcnn-repeat", type=int, default=21, help="FCNN epochs are short")
    parser.add_argument("--fcnn-batches", type=int, default=400)
    parser.add_argument("--cnn-batches", type=int, default=300)
    parser.add_argument("--pgd-batches", type=int, default=10)
    parser.add_argument("--nuclear-batches", type=int, default=100)
    args = parser.parse_args()
    derive_seed(0)  # warm imports
    for name in ("mnist", "fashion-mnist"):
        _train_set(name)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, repeat {args.repeat}")
    results = [
        compare(
            f"natural epoch, FCNN ({args.fcnn_batches} x 128)",
            _config("fcnn", args.fcnn_batches),
            args.fcnn_repeat,
            TARGET_LOOP,
        ),
        compare(
            f"natural epoch, CNN ({args.cnn_batches} x 64)",
            _config("cnn", args.cnn_batches),
            args.repeat,
            TARGET_LOOP,
        ),
        compare(
            f"PGD-20 adversarial epoch, CNN ({args.pgd_batches} x 64)",
            _config(
                "cnn",
                args.pgd_batches,
                lr=0.001,
                adversarial={"attack": "pgd", "eps": 0.05, "alpha": 0.005, "steps": 20},
            ),
            args.repeat,
            TARGET_LOOP,
        ),
        nuclear_overhead(args.nuclear_batches, args.repeat),
    ]
    evaluation_cost("fcnn")
    evaluation_cost("cnn")
    print(f"{sum(results)}/{len(results)} targets met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
