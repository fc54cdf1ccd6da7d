"""Evaluation: fooling ratio (Section 5), robust accuracy, early stopping, sweeps, reports, CLI."""

from __future__ import annotations

import csv
import json
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustrank.attacks import FGSM, GNM, PGD
from robustrank.evaluation import (
    PAPER_DEFAULTS,
    AttackName,
    EvalResult,
    accuracy,
    eps_sweep,
    evaluate,
    fooling_ratio,
    format_results,
    make_attack,
    robust_accuracy,
    save_results,
)

C = 4


class Net(nn.Module):
    """A small tanh MLP on N x 1 x 4 x 4 inputs, with a dropout (so modes matter)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.fc1 = nn.Linear(16, 10)
        self.drop = nn.Dropout(0.5)
        self.fc2 = nn.Linear(10, C)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def forward(self, x):
        return self.fc2(self.drop(torch.tanh(self.fc1(x.flatten(1)))))


@pytest.fixture
def model():
    return Net(0).eval()


@pytest.fixture
def xy(model):
    """Inputs labelled mostly by the model itself (so most are correctly classified)."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(60, 1, 4, 4, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:12] = (y[:12] + 1) % C  # 12 misclassified inputs
    return x, y


def manual_counts(model, x, y, x_adv):
    with torch.no_grad():
        clean = model(x).argmax(1) == y
        adv = model(x_adv).argmax(1) == y
    return int(clean.sum()), int((clean & ~adv).sum())


# --------------------------------------------------------------------------- basics


def test_accuracy_matches_manual(model, xy):
    x, y = xy
    assert accuracy(model, x, y, batch_size=7) == pytest.approx(48 / 60)


def test_fooling_and_robust_accuracy_with_deterministic_attack(model, xy):
    x, y = xy
    eps = 0.2
    x_adv = FGSM(model, eps)(x, y)  # FGSM is per-row deterministic: attack all, count correct
    n_correct, n_fooled = manual_counts(model, x, y, x_adv)
    assert 0 < n_fooled < n_correct  # a meaningful setting
    fr = fooling_ratio(model, FGSM(model, eps), x, y, batch_size=9)
    ra = robust_accuracy(model, FGSM(model, eps), x, y, batch_size=9)
    assert fr == pytest.approx(n_fooled / n_correct)
    assert ra == pytest.approx((n_correct - n_fooled) / len(x))
    res = evaluate(model, FGSM(model, eps), x, y, batch_size=1000, checks=False)
    assert (res.n, res.n_correct, res.n_fooled, res.n_robust) == (
        60,
        n_correct,
        n_fooled,
        n_correct - n_fooled,
    )
    assert res.clean_accuracy == pytest.approx(n_correct / 60)
    # the per-input masks: correct before the attack, and fooled (only among the correct)
    with torch.no_grad():
        clean = model(x).argmax(1) == y
        adv = model(x_adv).argmax(1) == y
    assert torch.equal(res.correct, clean) and torch.equal(res.fooled, clean & ~adv)
    assert "correct" not in res.to_dict() and "fooled" not in res.to_dict()


@pytest.mark.parametrize("name", ["fgsm", "pgd", "gnm"])
def test_zero_budget_gives_zero_fooling_ratio(model, xy, name):
    x, y = xy
    attack = make_attack(name, model, 0.0, seed=0) if name == "pgd" else make_attack(name, model, 0)
    for es in (False, True):
        assert fooling_ratio(model, attack, x, y, early_stop=es) == 0.0
    assert robust_accuracy(model, attack, x, y) == pytest.approx(48 / 60)


def test_no_correct_input_gives_nan_with_warning(model, xy):
    x, y = xy
    with torch.no_grad():
        y_wrong = (model(x).argmax(1) + 1) % C
    with pytest.warns(RuntimeWarning, match="no input is classified correctly"):
        fr = fooling_ratio(model, FGSM(model, 0.1), x, y_wrong)
    assert math.isnan(fr)
    assert robust_accuracy(model, FGSM(model, 0.1), x, y_wrong) == 0.0


# --------------------------------------------------------------------------- early stop


def any_iterate_fooled_pgd(model, x, y, eps, alpha, steps, seed):
    """Independent PGD (documented random start) counting inputs fooled by ANY iterate."""
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    xc, yc = x[correct], y[correct]
    g = torch.Generator().manual_seed(seed)
    xa = (xc + (2 * torch.rand(xc.shape, generator=g) - 1) * eps).clamp(0, 1)
    hit = torch.zeros(len(xc), dtype=torch.bool)
    final_hit = None
    for t in range(steps + 1):
        xa = xa.detach().requires_grad_(True)
        logits = model(xa)
        wrong = logits.argmax(1) != yc
        hit |= wrong
        final_hit = wrong
        if t == steps:
            break
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, yc), xa)
        xa = torch.min(torch.max(xa + alpha * grad.sign(), xc - eps), xc + eps).clamp(0, 1)
    return int(correct.sum()), int(hit.sum()), int(final_hit.sum())


def test_early_stop_counts_inputs_fooled_by_any_iterate(model, xy):
    x, y = xy
    # a large step makes PGD oscillate: some inputs are fooled on the way but not at the end
    eps, alpha, steps, seed = 0.2, 0.15, 8, 7
    n_correct, n_any, n_final = any_iterate_fooled_pgd(model, x, y, eps, alpha, steps, seed)
    assert n_any > n_final > 0  # the setting separates "any iterate" from "final iterate"
    plain = fooling_ratio(model, PGD(model, eps, alpha, steps, seed=seed), x, y, batch_size=1000)
    es = fooling_ratio(
        model, PGD(model, eps, alpha, steps, seed=seed), x, y, batch_size=1000, early_stop=True
    )
    assert plain == pytest.approx(n_final / n_correct)
    assert es == pytest.approx(n_any / n_correct)
    assert es > plain


@pytest.mark.parametrize("seed", range(4))
def test_early_stop_never_weaker_than_plain(seed):
    model = Net(seed).eval()
    g = torch.Generator().manual_seed(100 + seed)
    x = torch.rand(50, 1, 4, 4, generator=g)
    y = torch.randint(0, C, (50,), generator=g)
    with torch.no_grad():
        y[:35] = model(x[:35]).argmax(1)
    for make in (
        lambda: PGD(model, 0.1, 0.02, 8, seed=seed),
        lambda: GNM(model, 0.1, steps=4),
        lambda: FGSM(model, 0.1),
    ):
        plain = fooling_ratio(model, make(), x, y, batch_size=16)
        es = fooling_ratio(model, make(), x, y, batch_size=16, early_stop=True)
        assert es >= plain


def test_gnm_early_stop_refresh_path_matches_independent_count(model, xy):
    """GNM with early stopping (including the graph-rebuild path) vs. a step-by-step count."""
    x, y = xy
    eps, steps = 0.3, 4
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    xc, yc = x[correct], y[correct]
    # count with plain GNM at every T' <= steps: iterate t of GNM(T) is not GNM(t), so
    # recompute the trajectory by running GNM(T) one step at a time via its own clip rule
    attack = GNM(model, eps, steps=steps)
    hit = torch.zeros(len(xc), dtype=torch.bool)
    xa = xc.clone()
    for t in range(steps + 1):
        with torch.no_grad():
            hit |= model(xa).argmax(1) != yc
        if t == steps:
            break
        one = GNM(model, eps / steps, steps=1)  # one step of size eps/T from the current point
        xa = one(xa, yc)
    for refresh in (0.0, 1.1):  # always / never rebuild the graph on the remaining rows
        attack.refresh_fraction = refresh
        es = fooling_ratio(model, attack, x, y, batch_size=1000, early_stop=True)
        assert es == pytest.approx(int(hit.sum()) / int(correct.sum()))


# --------------------------------------------------------------------------- mode / device


def test_evaluate_restores_training_mode_and_uses_eval_mode(xy):
    x, y = xy
    net = Net(0)
    net.train()
    net.fc2.eval()
    with pytest.warns(UserWarning, match="training mode"):
        res = evaluate(net, PGD(net, 0.1, 0.02, 3, seed=0), x, y)
    assert net.training and net.fc1.training and net.drop.training and not net.fc2.training
    # dropout was off during evaluation: the clean accuracy is the deterministic one
    assert res.n_correct == 48


def test_transfer_attack_is_judged_on_the_evaluated_model(model, xy):
    x, y = xy
    source = Net(3).eval()
    attack = FGSM(source, 0.3)
    res = evaluate(model, attack, x, y, checks=False)
    assert res.transfer
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    x_adv = attack(x[correct], y[correct])
    with torch.no_grad():
        fooled = int((model(x_adv).argmax(1) != y[correct]).sum())
    assert res.n_fooled == fooled
    with pytest.raises(ValueError, match="early_stop needs the attack to target"):
        evaluate(model, attack, x, y, early_stop=True, checks=False)


# --------------------------------------------------------------------------- make_attack


def test_make_attack_uses_paper_defaults(model):
    pgd = make_attack("PGD", model, 0.05)
    assert (pgd.steps, pgd.alpha, pgd.random_start, pgd.eps) == (20, 0.005, True, 0.05)
    assert make_attack(AttackName.GNM, model, 0.05).steps == 5
    assert isinstance(make_attack("fgsm", model, 0.05), FGSM)
    assert make_attack("pgd", model, 0.05, steps=None, alpha=0.01).steps == 20
    assert PAPER_DEFAULTS[AttackName.PGD]["steps"] == 20
    with pytest.raises(ValueError, match="unknown attack 'cw'; choose one of: fgsm, pgd, gnm"):
        make_attack("cw", model, 0.05)
    with pytest.raises(ValueError, match="bad option for attack 'fgsm'"):
        make_attack("fgsm", model, 0.05, steps=3)
    with pytest.raises(ValueError, match=r"eps must be an l_inf budget in \[0, 1\]"):
        make_attack("gnm", model, -1.0)


def test_bad_evaluation_arguments(model, xy):
    x, y = xy
    with pytest.raises(ValueError, match="same number of examples"):
        fooling_ratio(model, FGSM(model, 0.1), x, y[:5])
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        fooling_ratio(model, FGSM(model, 0.1), x, y, batch_size=0)
    with pytest.raises(ValueError, match="empty"):
        accuracy(model, x[:0], y[:0])
    with pytest.raises(TypeError, match="make_attack"):
        evaluate(model, "pgd", x, y)
    with pytest.raises(ValueError, match="eps_grid is empty"):
        eps_sweep(model, "fgsm", [], x, y)
    with pytest.raises(TypeError, match="not an Attack instance"):
        eps_sweep(model, FGSM(model, 0.1), [0.1], x, y)


# --------------------------------------------------------------------------- sweep / report


def test_eps_sweep_agrees_with_single_evaluations(model, xy):
    x, y = xy
    grid = [0.0, 0.1, 0.3]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = eps_sweep(model, "pgd", grid, x, y, batch_size=13, steps=4, seed=2)
    assert [r.eps for r in res] == grid
    assert res[0].n_fooled == 0
    for r in res:
        single = evaluate(
            model, PGD(model, r.eps, 0.005, 4, seed=2), x, y, batch_size=13, checks=False
        )
        assert (r.n_correct, r.n_fooled) == (single.n_correct, single.n_fooled)
        assert r.params["steps"] == 4 and r.seed == 2
    by_factory = eps_sweep(model, lambda e: FGSM(model, e), [0.2], x, y, checks=False)
    assert by_factory[0].attack == "fgsm"
    table = format_results(res)
    assert "fooling ratio" in table and len(table.splitlines()) == 2 + len(grid)


def test_save_results_json_csv_atomic_and_no_overwrite(tmp_path, model, xy):
    x, y = xy
    res = eps_sweep(model, "fgsm", [0.1, 0.2], x, y, checks=False)
    nan = EvalResult("fgsm", 0.1, False, 5, 0, 0, 0.0, {"eps": 0.1})
    jp, cp = tmp_path / "r" / "e.json", tmp_path / "r" / "e.csv"
    save_results([*res, nan], json_path=jp, csv_path=cp, metadata={"dataset": "toy"})
    doc = json.loads(jp.read_text())
    assert doc["metadata"] == {"dataset": "toy"}
    assert [d["eps"] for d in doc["results"]] == [0.1, 0.2, 0.1]
    assert doc["results"][0]["n_fooled"] == res[0].n_fooled
    assert doc["results"][2]["fooling_ratio"] is None  # nan -> null
    rows = list(csv.DictReader(cp.open()))
    assert float(rows[1]["fooling_ratio"]) == pytest.approx(res[1].fooling_ratio)
    assert rows[2]["fooling_ratio"] == "nan"
    before = jp.read_bytes()
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        save_results(res[:1], json_path=jp)
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        save_results(res[:1], json_path=tmp_path / "new.json", csv_path=cp)
    assert jp.read_bytes() == before and not (tmp_path / "new.json").exists()
    save_results(res[:1], json_path=jp, overwrite=True)
    assert len(json.loads(jp.read_text())["results"]) == 1
    assert not [p for p in (tmp_path / "r").iterdir() if p.name.endswith(".tmp")]


# --------------------------------------------------------------------------- real data


def _mnist_test():
    from robustrank.data import DataError, load_dataset

    try:
        return load_dataset("mnist", "test", progress=False)
    except DataError as err:  # pragma: no cover - depends on the machine
        pytest.skip(f"MNIST not available: {err}")


def test_gnm_t1_is_exact_on_a_linear_mnist_classifier_and_beats_fgsm():
    """On a linear model, unclipped GNM(T=1) fools exactly the inputs that can be fooled.

    For logits ``z = W x + b`` the smallest margin reachable in the l_inf ball is
    ``min_j z_k - z_j - eps ||w_k - w_j||_1`` (closed form), so GNM(T=1) must fool exactly
    the inputs where that is negative, and every input FGSM fools (Balda et al., 2018).
    """
    x, y = _mnist_test()
    torch.manual_seed(0)
    lin = nn.Linear(784, 10)
    model = nn.Sequential(nn.Flatten(), lin)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for s in range(0, 5000, 100):  # a quick logistic regression on 5000 images
        opt.zero_grad()
        F.cross_entropy(model(x[s : s + 100]), y[s : s + 100]).backward()
        opt.step()
    model.eval()
    xe, ye = x[5000:6000], y[5000:6000]
    assert accuracy(model, xe, ye) > 0.8
    eps = 0.05
    with torch.no_grad():
        z = model(xe)
        correct = z.argmax(1) == ye
        w = lin.weight
        dist = (w.unsqueeze(0) - w.unsqueeze(1)).abs().sum(2)  # ||w_k - w_j||_1, (k, j)
        margins = z.gather(1, ye[:, None]) - z - eps * dist[ye]
        margins[torch.arange(len(ye)), ye] = torch.inf
        exact = (margins.min(1).values < 0) & correct
    g_adv, g_fooled = GNM(model, eps, steps=1, clip=False).run(xe[correct], ye[correct])
    f_adv, f_fooled = FGSM(model, eps, clip=False).run(xe[correct], ye[correct])
    assert torch.equal(g_fooled, exact[correct])
    assert not bool((f_fooled & ~g_fooled).any())  # FGSM's fooled set is inside GNM's
    fr_gnm = fooling_ratio(model, GNM(model, eps, steps=1, clip=False), xe, ye)
    fr_fgsm = fooling_ratio(model, FGSM(model, eps, clip=False), xe, ye)
    assert fr_gnm == pytest.approx(int(exact.sum()) / int(correct.sum()))
    assert fr_gnm > fr_fgsm


def test_cli_evaluate_writes_results_and_refuses_overwrite(tmp_path):
    from typer.testing import CliRunner

    from robustrank.cli import app
    from robustrank.models import create_model, save_checkpoint

    _mnist_test()  # skips when the data is not available
    torch.manual_seed(0)
    ckpt = save_checkpoint(create_model("fcnn"), tmp_path / "m.safetensors", dataset="mnist")
    runner = CliRunner()
    args = ["evaluate", str(ckpt), "--attack", "pgd", "--eps-grid", "0,0.05", "--n", "40"]
    args += ["--steps", "3", "--out", str(tmp_path / "out"), "--no-progress"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "out" / "eval-pgd.json").read_text())
    assert [d["eps"] for d in doc["results"]] == [0.0, 0.05]
    assert doc["metadata"]["dataset"] == "mnist" and doc["results"][0]["n"] == 40
    assert doc["results"][0]["n_fooled"] == 0 and doc["results"][1]["seed"] == 0
    assert (tmp_path / "out" / "eval-pgd.csv").exists()
    again = runner.invoke(app, args)
    assert again.exit_code != 0 and "refusing to overwrite" in again.output
    bad = runner.invoke(app, ["evaluate", str(ckpt), "--attack", "fgsm", "--steps", "3"])
    assert bad.exit_code != 0 and "takes no --steps" in bad.output
    missing = runner.invoke(app, ["evaluate", str(tmp_path / "nope.safetensors")])
    assert missing.exit_code != 0 and "does not exist" in missing.output
