"""AutoAttack benchmark: robustrank's ensemble against torchattacks' on the paper's models.

Workload (issue "Strong, trustworthy evaluation"): the paper's FCNN (MNIST) and CNN
(Fashion-MNIST), trained, on a fixed seeded subset of 1000 test images, eps 0.05, l_inf.

* robustrank ``AutoAttack(model, eps)`` (standard: APGD-CE, APGD-T, FAB-T, Square; 100
  iterations, 9 targets, 5000 queries), evaluated with ``evaluate(..., early_stop=True)``,
  at the precision ``--precision MODEL=P`` gives (default: the CNN searches in bfloat16
  where the CPU has it natively (``auto``; float32 where it is emulated), confirmed in
  float32, and its float32 run is reported beside it; the FCNN, whose small
  products gain nothing from bfloat16, in float32).
* torchattacks 3.5.1 ``MultiAttack([APGD, APGDT, FAB(multi_targeted), Square])`` rebuilt
  with the reference's 100 iterations (its own ``AutoAttack`` keeps the class default of
  10), and torchattacks' ``AutoAttack`` as shipped (10 iterations).

Every attack gets the same correctly classified inputs in batches of ``--batch-size``.
Reported: robust accuracy (all inputs), time, time per component, and the rows the model
processed forward and backward (counted by hooks, independent of the machine's load).
Ratios are against the 100-iteration peer measured in the same run. The whole process
runs on the allocator settings the CLI applies (``robustrank.allocator``; set
``ROBUSTRANK_MALLOC=system`` for glibc's defaults), robustrank and the peers alike. The
exit code is 0 whatever the outcome: this is a report.

The FCNN is trained here (SGD, lr 0.01, momentum 0.9, batch 64, 10 epochs; cached); the
CNN is ``bench_attacks.trained_cnn`` (45 epochs of the paper's SGD; cached). ``--checkpoint
NAME=PATH`` evaluates any robustrank checkpoint instead.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# run as a script (``make bench``), so its directory is on sys.path
from bench_attacks import WorkCounter, _import_torchattacks, predictions, trained_cnn
from robustrank.allocator import keep_freed_memory
from robustrank.attacks import AutoAttack, resolve_precision
from robustrank.data import batches, default_data_dir, eval_subset, load_dataset
from robustrank.evaluation import evaluate
from robustrank.models import create_model, load_checkpoint, save_checkpoint

EPS = 0.05
DATASET = {"fcnn": "mnist", "cnn": "fashion-mnist"}
#: our AutoAttack's search precision per model (``--precision`` overrides)
PRECISION = {"fcnn": "float32", "cnn": "auto"}


def trained_fcnn(seed: int = 0, epochs: int = 10) -> nn.Module:
    """The paper's FCNN after ``epochs`` of SGD with momentum on MNIST (cached)."""
    path = default_data_dir() / "bench" / f"fcnn-mnist-sgdm-seed{seed}-e{epochs}.safetensors"
    if not path.exists():
        print(f"training the FCNN ({epochs} epochs, cached)", flush=True)
        torch.manual_seed(seed)
        model = create_model("fcnn")
        x, y = load_dataset("mnist", "train", progress=False)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        for epoch in range(epochs):
            model.train()
            for xb, yb in batches(x, y, 64, seed=seed + 1000 * epoch):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(xb), yb).backward()
                opt.step()
        save_checkpoint(model.eval(), path, dataset="mnist", epochs=epochs)
    model, _ = load_checkpoint(path)
    return model.eval()


# --------------------------------------------------------------------------- runners


class Timed:
    """Wraps each torchattacks component's ``forward`` to sum its time by name."""

    def __init__(self, attacks: list, names: list[str]) -> None:
        self.seconds = dict.fromkeys(names, 0.0)
        for attack, name in zip(attacks, names):
            attack.forward = self._wrap(attack.forward, name)

    def _wrap(self, fn: Callable, name: str) -> Callable:
        def timed(images: Tensor, labels: Tensor) -> Tensor:
            t0 = time.perf_counter()
            out = fn(images, labels)
            self.seconds[name] += time.perf_counter() - t0
            return out

        return timed


def peer_run(model: nn.Module, x: Tensor, y: Tensor, bs: int, steps: int | None) -> dict:
    """torchattacks on the correctly classified inputs: its AutoAttack (``steps=None``) or
    MultiAttack of its components rebuilt with ``steps`` iterations."""
    ta = _import_torchattacks()
    names = ["apgd-ce", "apgd-t", "fab-t", "square"]
    if steps is None:
        multi = ta.AutoAttack(model, norm="Linf", eps=EPS, version="standard", seed=0)
        components = multi._autoattack.attacks
    else:
        components = [
            ta.APGD(model, eps=EPS, steps=steps, loss="ce", n_restarts=1, seed=0),
            ta.APGDT(model, eps=EPS, steps=steps, n_restarts=1, n_classes=10, seed=0),
            ta.FAB(model, eps=EPS, steps=steps, multi_targeted=True, n_classes=10, seed=0),
            ta.Square(model, eps=EPS, n_queries=5000, n_restarts=1, seed=0),
        ]
        multi = ta.MultiAttack(components)
    timed = Timed(components, names)
    correct = predictions(model, x, bs) == y
    xs, ys = x[correct], y[correct]
    counter = WorkCounter(model)
    t0 = time.perf_counter()
    adv = torch.cat([multi(xs[s : s + bs], ys[s : s + bs]) for s in range(0, len(xs), bs)])
    seconds = time.perf_counter() - t0
    counter.remove()
    robust = int((predictions(model, adv, bs) == ys).sum())
    return {
        "robust_accuracy": robust / len(x),
        "seconds": seconds,
        "components": timed.seconds,
        "forward": counter.fwd,
        "backward": counter.bwd,
    }


def ours_run(model: nn.Module, x: Tensor, y: Tensor, bs: int, precision: str) -> dict:
    attack = AutoAttack(model, EPS, precision=precision)
    counter = WorkCounter(model)
    res = evaluate(model, attack, x, y, batch_size=bs, early_stop=True, checks=False)
    counter.remove()
    return {
        "robust_accuracy": res.robust_accuracy,
        "seconds": res.seconds,
        "components": {s.name: s.seconds for s in attack.stats},
        "broken": {s.name: s.n_broken for s in attack.stats},
        "unconfirmed": {s.name: s.n_unconfirmed for s in attack.stats},
        "forward": counter.fwd,
        "backward": counter.bwd,
        "own_counts": res.forward + res.backward,
    }


# --------------------------------------------------------------------------- report


def report(name: str, runs: dict[str, dict], n: int) -> None:
    base = runs.get("torchattacks, 100 it.")
    print(f"\n{name}: {n} test inputs, eps {EPS}")
    head = f"{'robust acc':>11}{'time':>9}{'vs peer-100':>13}{'fwd rows':>11}{'bwd rows':>11}"
    print(" " * 26 + head)
    for label, r in runs.items():
        speed = f"{base['seconds'] / r['seconds']:.2f}x" if base else "-"
        print(
            f"{label:26}{r['robust_accuracy']:>11.4f}{r['seconds']:>8.1f}s{speed:>13}"
            f"{r['forward']:>11}{r['backward']:>11}"
        )
    for label, r in runs.items():
        parts = ", ".join(f"{k} {v:.1f}s" for k, v in r["components"].items())
        print(f"  {label}: {parts}")
        if "broken" in r:
            print(f"  {label} broke: {r['broken']}")
        if any((r.get("unconfirmed") or {}).values()):
            print(f"  {label} found, not confirmed in float32: {r['unconfirmed']}")
    if base:
        ours = runs["robustrank"]
        gap = ours["robust_accuracy"] - base["robust_accuracy"]
        ok_acc = gap <= 0.003 + 1e-12
        ok_speed = base["seconds"] / ours["seconds"] >= 3
        print(
            f"  goals: robust acc <= peer-100 + 0.3 pts: {'met' if ok_acc else 'MISSED'} "
            f"({100 * gap:+.1f} pts); >= 3x faster: {'met' if ok_speed else 'MISSED'}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="fcnn,cnn")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--skip-default", action="store_true", help="skip torchattacks' own")
    parser.add_argument("--checkpoint", action="append", default=[], help="NAME=PATH")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--precision", action="append", default=[], help="MODEL=float32|bfloat16|auto (ours)"
    )
    args = parser.parse_args()
    keep_freed_memory()  # as the CLI does; for robustrank and the peers alike
    precision = {**PRECISION, **dict(item.split("=", 1) for item in args.precision)}
    if args.threads:
        torch.set_num_threads(args.threads)
    ckpts = dict(item.split("=", 1) for item in args.checkpoint)
    for name in args.models.split(","):
        if name in ckpts:
            model = load_checkpoint(ckpts[name])[0].eval()
        else:
            model = trained_fcnn() if name == "fcnn" else trained_cnn(0, 45)
        x, y = load_dataset(DATASET[name], "test", progress=False)
        x, y = eval_subset(x, y, args.n, seed=0)
        p = resolve_precision(precision.get(name, "float32"), torch.device("cpu")).value
        runs = {"robustrank": ours_run(model, x, y, args.batch_size, p)}
        if p != "float32":
            runs["robustrank, float32"] = ours_run(model, x, y, args.batch_size, "float32")
        runs["torchattacks, 100 it."] = peer_run(model, x, y, args.batch_size, steps=100)
        if not args.skip_default:
            runs["torchattacks, default"] = peer_run(model, x, y, args.batch_size, steps=None)
        report(name, runs, len(x))


if __name__ == "__main__":
    main()
