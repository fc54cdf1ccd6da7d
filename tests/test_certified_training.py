"""Certified training objectives (``ibp``, ``crown-ibp``): the loss against interval and
CROWN-IBP bounds written out by hand for a 2-layer ReLU MLP, the warm-up/ramp schedules
against their closed forms, the loop's progress, a short IBP run certifying more than
natural training (a paired 95% interval), resume, the preset and bad options."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustrank.data import load_dataset
from robustrank.evaluation.certification import certify
from robustrank.intervals import newcombe_paired_interval
from robustrank.training import (
    ConfigError,
    get_objective,
    list_presets,
    load_preset,
    objectives,
    register_objective,
    train,
)
from robustrank.training.certified import CrownIBPTraining, IBPTraining, RampSchedule
from robustrank.training.objectives import Adversary, Objective, ObjectiveOutput, Progress
from runs import interrupt_then_resume, same_weights, sigkill_train, tiny_fcnn

EPS = 0.05
RELU_MLP = {"name": "fcnn", "options": {"activation": "relu", "depth": 2, "width": 64}}


def certified_config(**overrides):
    """A short IBP run of a small ReLU MLP (600 images, 12 batches per epoch)."""
    data = {
        "model": RELU_MLP,
        "epochs": 3,
        "lr": 0.001,
        "optimizer": {"name": "adam"},
        "adversarial": {"attack": "none", "eps": EPS, "objective": {"name": "ibp"}},
        **overrides,
    }
    return tiny_fcnn(**data)


# --------------------------------------------------------------------------- references


def mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))


def batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(5, 1, 2, 3, generator=g), torch.randint(0, 4, (5,), generator=g)


def first_layer_interval(net: nn.Sequential, x: torch.Tensor, eps: float):
    """Interval arithmetic on ``W1 x + b1`` over ``[x - eps, x + eps]`` within [0, 1]."""
    x = x.flatten(1)
    lo, hi = (x - eps).clamp(min=0.0), (x + eps).clamp(max=1.0)
    mid, rad = (hi + lo) / 2, (hi - lo) / 2
    w1, b1 = net[1].weight, net[1].bias
    z_mid, z_rad = mid @ w1.T + b1, rad @ w1.abs().T
    return z_mid - z_rad, z_mid + z_rad, mid, rad


def margin_weights(net: nn.Sequential, y: torch.Tensor):
    """The last layer with the margin ``z_y - z_j`` folded in: ``(N, C, H)``, ``(N, C)``."""
    w2, b2 = net[3].weight, net[3].bias
    return w2[y].unsqueeze(1) - w2.unsqueeze(0), b2[y].unsqueeze(1) - b2.unsqueeze(0)


def ibp_margins(net: nn.Sequential, x: torch.Tensor, y: torch.Tensor, eps: float):
    """Gowal et al. (2018): intervals through the ReLU, the margin folded into the last
    layer, then ``c . mid - |c| . rad``."""
    lo, hi, _, _ = first_layer_interval(net, x, eps)
    h_lo, h_hi = lo.relu(), hi.relu()
    h_mid, h_rad = (h_hi + h_lo) / 2, (h_hi - h_lo) / 2
    w, b = margin_weights(net, y)
    return (w @ h_mid.unsqueeze(2)).squeeze(2) + b - (w.abs() @ h_rad.unsqueeze(2)).squeeze(2)


def crown_ibp_margins(net: nn.Sequential, x: torch.Tensor, y: torch.Tensor, eps: float):
    """Zhang et al. (2020): interval pre-activation bounds ``l, u``; each ReLU bounded
    linearly (upper chord ``u (z - l) / (u - l)``, adaptive lower slope 1 if ``u >= -l``
    else 0), picked by the sign of its margin weight; the result concretised on the box."""
    lo, hi, mid, rad = first_layer_interval(net, x, eps)
    w, b = margin_weights(net, y)  # (N, C, H)
    active, dead = lo >= 0, hi <= 0
    unstable = ~active & ~dead
    chord = torch.where(unstable, hi / (hi - lo).clamp(min=1e-12), active.to(hi.dtype))
    lower_slope = torch.where(unstable, (hi >= -lo).to(hi.dtype), active.to(hi.dtype))
    upper_shift = torch.where(unstable, -chord * lo, torch.zeros_like(lo))
    lo_s, up_s, up_b = lower_slope.unsqueeze(1), chord.unsqueeze(1), upper_shift.unsqueeze(1)
    slope = torch.where(w >= 0, lo_s, up_s)  # (N, C, H)
    shift = torch.where(w >= 0, torch.zeros_like(w), up_b)
    lam = w * slope
    const = (w * shift).sum(2) + b + lam @ net[1].bias
    a = lam @ net[1].weight  # (N, C, D)
    m, r = mid.unsqueeze(2), rad.unsqueeze(2)
    return (a @ m).squeeze(2) - (a.abs() @ r).squeeze(2) + const


def progress_at(global_step: int, epochs: int = 10, per_epoch: int = 4) -> Progress:
    return Progress(global_step // per_epoch + 1, global_step % per_epoch, epochs, per_epoch)


# --------------------------------------------------------------------------- schedules


@pytest.mark.parametrize(
    "step, t",
    # warm-up 2 epochs = 8 steps, ramp 4 epochs = 16 steps
    [(0, 0.0), (7, 0.0), (8, 0.0), (12, 0.25), (16, 0.5), (24, 1.0), (39, 1.0)],
)
def test_the_schedules_follow_their_closed_forms(step, t):
    objective = IBPTraining(eps=0.1, kappa=0.3, warmup_epochs=2, ramp_epochs=4)
    values = objective.schedule(progress_at(step))
    assert values.eps == pytest.approx(0.1 * t)
    assert values.kappa == pytest.approx(1.0 - t * 0.7)
    assert values.beta == pytest.approx(1.0 - t)


def test_the_default_ramp_takes_half_the_steps_after_the_warmup():
    ramp = RampSchedule(warmup_epochs=2)  # 40 steps, 8 of warm-up: ramp of 16 steps
    assert [ramp.fraction(progress_at(s)) for s in (8, 16, 24, 30)] == [0.0, 0.5, 1.0, 1.0]
    assert RampSchedule().fraction(None) == 1.0  # outside the loop: the schedule's end
    assert RampSchedule(ramp_epochs=0).fraction(progress_at(0)) == 1.0


# --------------------------------------------------------------------------- the loss


@pytest.mark.parametrize("step", [16, 24])  # mid-ramp and after it
def test_the_ibp_loss_is_its_formula_on_hand_made_intervals(step):
    net, (x, y) = mlp(), batch()
    objective = IBPTraining(eps=0.2, kappa=0.5, warmup_epochs=2, ramp_epochs=4)
    t = min((step - 8) / 16, 1.0)
    eps_t, kappa_t = 0.2 * t, 1.0 - t * 0.5
    out = objective.loss(net, x, y, Adversary(None, 0, progress_at(step)))
    margins = ibp_margins(net, x, y, eps_t)
    assert torch.all(margins.gather(1, y.unsqueeze(1)) == 0)
    expected = kappa_t * F.cross_entropy(net(x), y) + (1 - kappa_t) * F.cross_entropy(-margins, y)
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.logits, net(x))  # the clean logits
    out.loss.backward()  # differentiable in the weights
    assert net[1].weight.grad is not None and net[1].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("step", [12, 16, 24])  # beta 0.75, 0.5, 0
def test_the_crown_ibp_loss_mixes_hand_made_bounds(step):
    net, (x, y) = mlp(2), batch(3)
    objective = CrownIBPTraining(eps=0.3, kappa=0.0, warmup_epochs=2, ramp_epochs=4)
    t = min((step - 8) / 16, 1.0)
    eps_t, kappa_t, beta_t = 0.3 * t, 1.0 - t, 1.0 - t
    out = objective.loss(net, x, y, Adversary(None, 0, progress_at(step)))
    mixed = beta_t * crown_ibp_margins(net, x, y, eps_t)
    mixed = mixed + (1 - beta_t) * ibp_margins(net, x, y, eps_t)
    expected = kappa_t * F.cross_entropy(net(x), y) + (1 - kappa_t) * F.cross_entropy(-mixed, y)
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-6)


def test_the_warmup_is_natural_training():
    net, (x, y) = mlp(), batch()
    objective = IBPTraining(eps=0.2, warmup_epochs=1)
    out = objective.loss(net, x, y, Adversary(None, 0, progress_at(3)))
    torch.testing.assert_close(out.loss, F.cross_entropy(net(x), y))


# --------------------------------------------------------------------------- the loop


def test_the_loop_tells_the_objective_where_the_run_is(tmp_path):
    seen = []

    class Recording(Objective):
        def loss(self, model, x, y, adversary):
            seen.append(adversary.progress)
            logits = model(x)
            return ObjectiveOutput(F.cross_entropy(logits, y), logits)

    with objectives.REGISTRY.temporary():
        register_objective("recording", Recording, needs_attack=False)
        cfg = tiny_fcnn(adversarial={"attack": "none", "objective": "recording"})
        train(cfg, tmp_path / "run", progress=False)
    assert [p.global_step for p in seen] == list(range(24))  # 2 epochs of 12 batches
    assert {(p.epochs, p.steps_per_epoch) for p in seen} == {(2, 12)}
    assert (seen[12].epoch, seen[12].step) == (2, 0)


def test_ibp_training_certifies_more_than_natural_training(tmp_path):
    """A ReLU MLP on 3000 MNIST images, 3 epochs of Adam: IBP-certified accuracy at the
    training eps on 1000 test images, IBP-trained minus natural, paired (Newcombe)."""
    x, y = load_dataset("mnist", "test", progress=False)
    x, y = x[:1000], y[:1000]
    certified = {}
    for name in ("ibp", "madry"):
        adversarial = {"attack": "none", "eps": EPS, "objective": name}
        cfg = certified_config(train_subset=3000, adversarial=adversarial)
        model = train(cfg, tmp_path / name, progress=False).model
        certified[name] = certify(model, x, y, EPS, "ibp").certified
    a, b = certified["ibp"], certified["madry"]
    counts = [int((a & b).sum()), int((a & ~b).sum()), int((~a & b).sum()), int((~a & ~b).sum())]
    interval = newcombe_paired_interval(*counts)
    print(f"certified: ibp {a.float().mean():.3f}, natural {b.float().mean():.3f}, {interval}")
    assert interval.lo > 0


def test_an_interrupted_crown_ibp_run_resumes_mid_ramp_to_identical_weights(tmp_path):
    objective = {"name": "crown-ibp", "warmup_epochs": 0.5, "ramp_epochs": 2}
    cfg = certified_config(adversarial={"attack": "none", "eps": EPS, "objective": objective})
    full = train(cfg, tmp_path / "full", progress=False)
    resumed = interrupt_then_resume(
        cfg, tmp_path / "run", lambda r: (r["kind"], r["epoch"]) == ("steps", 2)
    )
    assert resumed.resumed and same_weights(resumed.model, full.model)


@pytest.mark.slow
def test_a_sigkilled_ibp_run_resumes_mid_ramp_to_identical_weights(tmp_path):
    cfg = certified_config(name="ibp-kill", train_subset=1200)  # 24 batches, rows every 5
    full = train(cfg, tmp_path / "full", progress=False)
    path, run = tmp_path / "ibp.yaml", tmp_path / "run"
    path.write_text(cfg.to_yaml())
    # rows: epoch 0, steps 5..20, epoch 1; the 7th comes in epoch 2 (the ramp ends at step 36)
    sigkill_train(path, run, rows=7)
    resumed = train(cfg, run, resume=True, progress=False)
    assert resumed.resumed and same_weights(resumed.model, full.model)


# --------------------------------------------------------------------------- config


def test_the_yaml_shape_needs_no_attack():
    cfg = certified_config()
    assert cfg.adversarial.objective_name == "ibp"
    assert cfg.adversarial.objective_options() == {"eps": EPS}
    assert not get_objective("crown-ibp").needs_attack


@pytest.mark.parametrize("name", ["fcnn-ibp", "cnn-ibp"])
def test_the_presets_train_with_ibp_and_are_certified_runs(name):
    from robustrank.experiments.summary import RunKind, run_kind

    assert name in list_presets()
    cfg = load_preset(name)
    assert cfg.adversarial.attack == "none" and cfg.adversarial.objective_name == "ibp"
    assert cfg.init.from_preset == name.replace("-ibp", "-natural")
    assert run_kind(cfg) == RunKind.certified
    assert get_objective("ibp").certified and not get_objective("madry").certified


@pytest.mark.parametrize(
    "options, words",
    [
        ({"kappa": 1.5}, ["kappa", "[0, 1]", "objective.kappa"]),
        ({"kappa": -0.1}, ["kappa", "objective.kappa"]),
        ({"ramp_epochs": -1}, ["ramp_epochs", "objective.ramp_epochs"]),
        ({"warmup_epochs": -2}, ["warmup_epochs", "objective.warmup_epochs"]),
        ({"beta": 1}, ["beta", "kappa"]),  # unknown option: the accepted ones listed
    ],
)
def test_bad_options_are_refused_with_the_fix(options, words):
    objective = {"name": "crown-ibp", **options}
    with pytest.raises(ConfigError) as err:
        certified_config(adversarial={"attack": "none", "objective": objective})
    assert all(w in str(err.value) for w in words), str(err.value)
