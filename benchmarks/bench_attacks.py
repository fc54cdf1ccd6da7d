"""Attack benchmark: fooling-ratio evaluation speed vs. the bare floor and the peers.

Workload (Section 5 settings): the paper's CNN (``create_model("cnn")``) trained on
Fashion-MNIST with the ``cnn-natural`` preset's budget, 45 epochs of plain SGD (lr 0.01,
batch 64), which reaches the paper's clean accuracy (about 0.90); evaluated on a fixed
seeded subset of 1000 test images. The model is trained once (about 10 minutes on two
cores) and cached per epoch under ``<data dir>/bench/``; ``--epochs 1`` gives the weaker
one-epoch model, ``--checkpoint`` any robustrank checkpoint of the CNN.

* PGD-20, eps 0.05, alpha 0.005, random start. Floor: 20 forward + input-gradient
  backward passes over all inputs. Compared: robustrank (plain and ``early_stop``),
  torchattacks 3.5.1 ``PGD`` and IBM ART 1.20.1 ``ProjectedGradientDescentPyTorch``
  (``num_random_init=1``), each both in its usual use (attack every input) and fairly
  (attack only the correctly classified inputs, as robustrank does).
* FGSM, eps 0.05. Floor: 1 forward + backward pass. Compared with torchattacks ``FGSM``.
* GNM, T = 5, eps 0.05. Floor: 5 x (1 forward + 10 class-gradient backward passes), what a
  direct implementation needs; also a straightforward reference implementation (below).

Every timing is the median of ``--repeat`` runs, on the same model, inputs and batch size
(the fastest of 100/250/500 for the floor), in the same process; ratios against the floor
measured in the same run. The exit code is 0 whatever the outcome: this is a report.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
import types
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustrank.attacks import FGSM, GNM, PGD
from robustrank.data import batches, default_data_dir, eval_subset, load_dataset
from robustrank.evaluation import fooling_ratio
from robustrank.models import create_model, load_checkpoint, save_checkpoint, use_fast_layout

EPS, ALPHA, STEPS, GNM_STEPS = 0.05, 0.005, 20, 5


def _import_torchattacks():
    # torchattacks declares torchvision (datasets only); never let pip pull it in.
    if "torchvision" not in sys.modules and importlib.util.find_spec("torchvision") is None:
        tv = types.ModuleType("torchvision")
        for sub in ("datasets", "transforms", "models", "utils"):
            mod = types.ModuleType(f"torchvision.{sub}")
            setattr(tv, sub, mod)
            sys.modules[f"torchvision.{sub}"] = mod
        sys.modules["torchvision"] = tv
    import torchattacks

    return torchattacks


# --------------------------------------------------------------------------- model


def _ckpt(seed: int, epoch: int):
    return default_data_dir() / "bench" / f"cnn-fashion-mnist-sgd-seed{seed}-e{epoch}.safetensors"


def trained_cnn(seed: int, epochs: int) -> nn.Module:
    """The paper's CNN after ``epochs`` epochs of plain SGD (lr 0.01, batch 64), cached.

    Every epoch's weights are cached, so a longer run resumes from the last cached epoch.
    """
    done = max(e for e in range(epochs + 1) if e == 0 or _ckpt(seed, e).exists())
    if done == epochs:
        model, _ = load_checkpoint(_ckpt(seed, epochs))
        return model.eval()
    if done:
        model, _ = load_checkpoint(_ckpt(seed, done))
    else:
        torch.manual_seed(seed)
        model = create_model("cnn")
    print(f"training the CNN, epochs {done + 1}..{epochs} (cached per epoch)", flush=True)
    x, y = load_dataset("fashion-mnist", "train", progress=False)
    use_fast_layout(model)  # only speeds the training up; checkpoints are contiguous
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for epoch in range(done + 1, epochs + 1):
        model.train()
        t0 = time.perf_counter()
        for xb, yb in batches(x, y, 64, seed=seed + 1000 * (epoch - 1)):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
        model.eval()
        save_checkpoint(
            model, _ckpt(seed, epoch), dataset="fashion-mnist", epochs=epoch, lr=0.01, batch_size=64
        )
        print(f"  epoch {epoch} done in {time.perf_counter() - t0:.0f}s", flush=True)
    model, _ = load_checkpoint(_ckpt(seed, epochs))  # the attacked model: standard layout
    return model.eval()


# --------------------------------------------------------------------------- workloads


def floor(model: nn.Module, x: Tensor, y: Tensor, bs: int, passes: int) -> None:
    """``passes`` forward + input-gradient backward passes over every input."""
    model.eval()
    for s in range(0, len(x), bs):
        xb, yb = x[s : s + bs], y[s : s + bs]
        for _ in range(passes):
            xi = xb.clone().requires_grad_(True)
            loss = F.cross_entropy(model(xi), yb, reduction="sum")
            torch.autograd.grad(loss, xi)


def floor_gnm(model: nn.Module, x: Tensor, bs: int, steps: int, classes: int) -> None:
    """``steps`` x (1 forward + ``classes`` class-gradient backward passes)."""
    model.eval()
    for s in range(0, len(x), bs):
        xb = x[s : s + bs]
        for _ in range(steps):
            xi = xb.clone().requires_grad_(True)
            logits = model(xi)
            for j in range(classes):
                torch.autograd.grad(logits[:, j].sum(), xi, retain_graph=j < classes - 1)


def gnm_reference(model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int) -> Tensor:
    """Straightforward GNM (Balda et al. 2018): full Jacobian by one backward per class."""
    step = eps / steps
    xa = x.clone()
    rows = torch.arange(len(x))
    for _ in range(steps):
        xi = xa.clone().requires_grad_(True)
        logits = model(xi)
        c = logits.shape[1]
        jac = torch.stack(
            [
                torch.autograd.grad(logits[:, j].sum(), xi, retain_graph=j < c - 1)[0]
                for j in range(c)
            ],
            1,
        )
        f = logits.detach()
        g = jac[rows, y].unsqueeze(1) - jac  # g_j = grad f_k - grad f_j
        margin = f[rows, y].unsqueeze(1) - f - step * g.abs().flatten(2).sum(2)
        margin[rows, y] = torch.inf
        target = margin.argmin(1)
        xa = (xa - step * g[rows, target].sign()).clamp(0.0, 1.0)
    return xa


def predictions(model: nn.Module, x: Tensor, bs: int) -> Tensor:
    with torch.no_grad():
        return torch.cat([model(x[s : s + bs]).argmax(1) for s in range(0, len(x), bs)])


def peer_ratio(
    model: nn.Module,
    attack_fn: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    bs: int,
    fair: bool,
    whole: bool = False,
) -> float:
    """Fooling ratio with a peer attack: clean predictions, attack, adversarial predictions.

    ``fair``: attack only the correctly classified inputs (like robustrank); otherwise
    attack everything (the peer's usual use) and count among the correct ones. ``whole``:
    hand the whole set to ``attack_fn`` at once (ART batches internally).
    """
    model.eval()
    correct = predictions(model, x, bs) == y
    xs, ys = (x[correct], y[correct]) if fair else (x, y)
    if whole:
        adv = attack_fn(xs, ys)
    else:
        adv = torch.cat([attack_fn(xs[s : s + bs], ys[s : s + bs]) for s in range(0, len(xs), bs)])
    wrong = predictions(model, adv, bs) != ys
    if not fair:
        wrong = wrong[correct]
    return int(wrong.sum()) / len(wrong)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


class WorkCounter:
    """Counts the rows the model processes: forward rows and rows of every backward pass.

    A forward hook on the model; outputs that require grad get a tensor hook that fires
    whenever a gradient flows back through them (once per ``autograd.grad`` call). Unlike
    timings, these counts do not depend on the load of the machine.
    """

    def __init__(self, model: nn.Module) -> None:
        self.fwd = self.bwd = 0
        self._handle = model.register_forward_hook(self._forward)

    def _forward(self, module: nn.Module, inputs: object, out: Tensor) -> None:
        self.fwd += out.shape[0]
        if out.requires_grad:
            out.register_hook(self._backward)

    def _backward(self, grad: Tensor) -> None:
        self.bwd += grad.shape[0]

    def remove(self) -> None:
        self._handle.remove()


def measure(
    contenders: dict[str, Callable[[], object]],
    repeat: int,
    clock: str = "wall",
    model: nn.Module | None = None,
) -> tuple[dict[str, tuple[float, object]], dict[str, float], dict[str, tuple[int, int]]]:
    """Median time (and last result) of each contender, run round-robin.

    Interleaving the contenders (and rotating who goes first) spreads the load of a noisy
    machine evenly over them instead of penalising whoever ran during a busy spell.
    Returns ``{name: (median on clock, result)}``, ``{name: median on the other clock}``
    and, with ``model``, ``{name: (forward rows, backward rows)}`` from one extra untimed
    run with a :class:`WorkCounter`.
    """
    names = list(contenders)
    times: dict[str, dict[str, list[float]]] = {c: {k: [] for k in names} for c in CLOCKS}
    results: dict[str, object] = {}
    for r in range(repeat):
        for k in names[r % len(names) :] + names[: r % len(names)]:
            torch.manual_seed(0)  # peers draw their random start from the global RNG
            t0 = {c: f() for c, f in CLOCKS.items()}
            results[k] = contenders[k]()
            for c, f in CLOCKS.items():
                times[c][k].append(f() - t0[c])
    work: dict[str, tuple[int, int]] = {}
    if model is not None:
        for k in names:
            counter = WorkCounter(model)
            try:
                torch.manual_seed(0)
                contenders[k]()
            finally:
                counter.remove()
            work[k] = (counter.fwd, counter.bwd)
    other = next(c for c in CLOCKS if c != clock)
    chosen = {k: (statistics.median(times[clock][k]), results[k]) for k in names}
    return chosen, {k: statistics.median(times[other][k]) for k in names}, work


# --------------------------------------------------------------------------- report


def report(title: str, measured: tuple[dict, dict, dict], ref: str, clock: str) -> None:
    """Print times relative to the floor and to the reference peer, work and fooling ratios."""
    res, alt, work = measured
    other = next(c for c in CLOCKS if c != clock)
    fl, t_ref = res["floor"][0], res[ref][0]
    print(f"\n## {title}")
    print(
        f"{'':36s} {clock + ' s':>8s} {'x floor':>8s} {'x ref':>7s}   "
        f"{other + ' s':>7s} {'x floor':>8s} {'x ref':>6s}   "
        f"{'fwd rows':>8s} {'bwd rows':>8s} {'bwd/ref':>7s} {'fooling':>8s}"
    )
    for name, (t, out) in res.items():
        fr = f"{out:8.4f}" if isinstance(out, float) else f"{'':8s}"
        mark = "  (ref)" if name == ref else ""
        a, afl, aref = alt[name], alt["floor"], alt[ref]
        f, b = work.get(name, (0, 0))
        b_ref = work.get(ref, (0, 0))[1]
        print(
            f"{name:36s} {t:8.2f} {t / fl:8.2f} {t / t_ref:7.2f}   "
            f"{a:7.2f} {a / afl:8.2f} {a / aref:6.2f}   "
            f"{f:8d} {b:8d} {b / b_ref if b_ref else 0:7.2f} {fr}{mark}"
        )


def verdict(ok: bool, text: str) -> None:
    print(f"  [{'PASS' if ok else 'MISS'}] {text}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--epochs",
        type=int,
        default=45,
        help="training epochs of the CNN (default: 45, the cnn-natural preset, clean accuracy "
        "about 0.90 as in the paper; trained once and cached per epoch)",
    )
    ap.add_argument(
        "--checkpoint",
        default=None,
        help="benchmark this robustrank checkpoint of the CNN instead (e.g. a paper-profile "
        "run's runs/cnn-natural/final.safetensors)",
    )
    ap.add_argument("--batch-size", type=int, default=0, help="0: fastest of 100/250/500")
    ap.add_argument("--skip", default="", help="comma list of sections: pgd,fgsm,gnm")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="wall", help="clock of verdicts")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, repeat {args.repeat}")
    if args.checkpoint:
        model, _ = load_checkpoint(args.checkpoint)
        model.eval()
        origin = f"checkpoint {args.checkpoint}"
    else:
        model = trained_cnn(args.seed, args.epochs)
        origin = f"{args.epochs} epoch(s) of plain SGD"
    xt, yt = load_dataset("fashion-mnist", "test", progress=False)
    x, y = eval_subset(xt, yt, args.n, seed=args.seed)
    acc = float((predictions(model, x, 500) == y).double().mean())
    print(f"CNN ({origin}), Fashion-MNIST, n={len(x)}, clean accuracy {acc:.4f}")

    bs = args.batch_size
    if not bs:
        cand = measure(
            {b: lambda b=b: floor(model, x, y, b, 4) for b in (100, 250, 500)}, 2, args.clock
        )[0]
        bs = min(cand, key=lambda b: cand[b][0])
        print("batch size:", ", ".join(f"{b}: {t:.2f}s" for b, (t, _) in cand.items()), f"-> {bs}")

    ta = _import_torchattacks()
    import warnings

    from art.attacks.evasion import ProjectedGradientDescentPyTorch
    from art.estimators.classification import PyTorchClassifier

    warnings.filterwarnings("ignore", module="art")

    def ours(make, es):
        return lambda: fooling_ratio(model, make(), x, y, batch_size=bs, early_stop=es)

    def peer(fn, fair, whole=False):
        return lambda: peer_ratio(model, fn, x, y, bs, fair=fair, whole=whole)

    # ------------------------------------------------------------------ PGD
    if "pgd" not in skip:

        def ta_pgd(xb, yb):
            atk = ta.PGD(model, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=True)
            return atk(xb, yb)

        clf = PyTorchClassifier(
            model=model,
            loss=nn.CrossEntropyLoss(),
            input_shape=(1, 28, 28),
            nb_classes=10,
            clip_values=(0.0, 1.0),
            device_type="cpu",
        )
        art_pgd = ProjectedGradientDescentPyTorch(
            clf,
            norm=np.inf,
            eps=EPS,
            eps_step=ALPHA,
            max_iter=STEPS,
            num_random_init=1,
            batch_size=bs,
            verbose=False,
        )

        def art_fn(xb, yb):
            return torch.from_numpy(art_pgd.generate(x=xb.numpy(), y=yb.numpy()))

        def pgd():
            return PGD(model, EPS, ALPHA, STEPS, seed=args.seed)

        res = measure(
            {
                "floor": lambda: floor(model, x, y, bs, STEPS),
                "torchattacks (fair: correct only)": peer(ta_pgd, True),
                "torchattacks (usual: all inputs)": peer(ta_pgd, False),
                "ART (fair: correct only)": peer(art_fn, True, whole=True),
                "ART (usual: all inputs)": peer(art_fn, False, whole=True),
                "robustrank": ours(pgd, False),
                "robustrank early_stop": ours(pgd, True),
            },
            args.repeat,
            args.clock,
            model,
        )
        ref = "torchattacks (fair: correct only)"
        report(f"PGD-{STEPS}, eps {EPS}, alpha {ALPHA}, batch {bs}", res, ref, args.clock)
        (fl, _), (t_ta, fr_ta) = res[0]["floor"], res[0][ref]
        t_tau, fr_tau = res[0]["torchattacks (usual: all inputs)"]
        t_rr, fr_rr = res[0]["robustrank"]
        t_es, fr_es = res[0]["robustrank early_stop"]
        verdict(
            t_ta / t_es >= 2 and fr_es >= fr_ta,
            f"early_stop {t_ta / t_es:.2f}x faster than torchattacks (fair) (target >= 2x), "
            f"fooling ratio {fr_es:.4f} vs {fr_ta:.4f} (target >=)",
        )
        verdict(
            t_tau / t_es >= 2 and fr_es >= fr_tau,
            f"early_stop {t_tau / t_es:.2f}x faster than torchattacks (usual) (target >= 2x), "
            f"fooling ratio {fr_es:.4f} vs {fr_tau:.4f} (target >=)",
        )
        verdict(t_rr <= 1.1 * fl, f"plain {t_rr / fl:.2f}x the floor (target <= 1.1x)")
        verdict(
            t_rr <= t_ta,
            f"plain {t_rr / t_ta:.2f}x torchattacks (fair) time (target <= 1x); "
            f"{t_rr / t_tau:.2f}x torchattacks (usual)",
        )
        work = res[2]
        b_es, b_rr, b_ta = (work[k][1] for k in ("robustrank early_stop", "robustrank", ref))
        verdict(b_rr <= b_ta, f"work: plain {b_rr / b_ta:.2f}x torchattacks (fair) (target <= 1x)")
        per_row = (t_rr / b_rr) / (t_ta / b_ta)
        print(
            f"  where the time goes: early_stop computes {b_es / b_ta:.2f}x the backward rows of "
            f"torchattacks (fair), so early stopping alone saves {b_ta / b_es:.2f}x "
            f"({fr_es:.0%} of the attacked inputs are fooled; the rest need every step). "
            f"Per backward row robustrank takes {per_row:.2f}x torchattacks' time "
            "(channels-last conv weights on CPU)."
        )

    # ------------------------------------------------------------------ FGSM
    if "fgsm" not in skip:

        def ta_fgsm(xb, yb):
            return ta.FGSM(model, eps=EPS)(xb, yb)

        def fgsm():
            return FGSM(model, EPS)

        res = measure(
            {
                "floor": lambda: floor(model, x, y, bs, 1),
                "torchattacks (fair: correct only)": peer(ta_fgsm, True),
                "torchattacks (usual: all inputs)": peer(ta_fgsm, False),
                "robustrank": ours(fgsm, False),
                "robustrank early_stop": ours(fgsm, True),
            },
            args.repeat,
            args.clock,
            model,
        )
        ref = "torchattacks (fair: correct only)"
        report(f"FGSM, eps {EPS}, batch {bs}", res, ref, args.clock)
        print(
            "  note: a fooling-ratio evaluation also needs a clean and a final forward pass, "
            "which the 1 fwd+bwd floor leaves out"
        )
        t_ta, fr_ta = res[0][ref]
        t_rr, fr_rr = res[0]["robustrank"]
        verdict(
            t_rr <= 1.05 * t_ta and fr_rr == fr_ta,
            f"plain {t_rr / t_ta:.2f}x torchattacks (fair) time (target <= 1.05x, same work), "
            f"same fooling ratio ({fr_rr:.4f} vs {fr_ta:.4f})",
        )

    # ------------------------------------------------------------------ GNM
    if "gnm" not in skip:
        classes = 10

        def ref_fn(xb, yb):
            return gnm_reference(model, xb, yb, EPS, GNM_STEPS)

        def gnm():
            return GNM(model, EPS, GNM_STEPS)

        res = measure(
            {
                "floor": lambda: floor_gnm(model, x, bs, GNM_STEPS, classes),
                "reference implementation (fair)": peer(ref_fn, True),
                "robustrank": ours(gnm, False),
                "robustrank early_stop": ours(gnm, True),
            },
            args.repeat,
            args.clock,
            model,
        )
        ref = "reference implementation (fair)"
        report(
            f"GNM T={GNM_STEPS}, eps {EPS}, batch {bs} (floor: T x (1 fwd + 10 bwd))",
            res,
            ref,
            args.clock,
        )
        t_ref, fr_ref = res[0][ref]
        t_rr, fr_rr = res[0]["robustrank"]
        t_es, fr_es = res[0]["robustrank early_stop"]
        work = res[2]
        w_rr, w_es = (work[k][1] / work[ref][1] for k in ("robustrank", "robustrank early_stop"))
        verdict(w_rr <= 1, f"work (noise-free): plain {w_rr:.2f}x the reference's backward rows")
        print(f"  work: early_stop computes {w_es:.2f}x the reference's backward rows")
        verdict(
            abs(fr_rr - fr_ref) < 1e-12,
            f"plain GNM fooling ratio equals the reference ({fr_rr:.4f} vs {fr_ref:.4f})",
        )
        verdict(t_rr <= t_ref, f"plain {t_rr / t_ref:.2f}x the reference time (target <= 1x)")
        verdict(
            fr_es >= fr_rr and t_es * 2 <= t_ref,
            f"early_stop {t_ref / t_es:.2f}x faster than the reference (target >= 2x), "
            f"fooling ratio {fr_es:.4f} >= plain {fr_rr:.4f}",
        )


if __name__ == "__main__":
    main()
    sys.exit(0)
