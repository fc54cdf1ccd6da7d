"""Training objectives (``adversarial.objective``): the registry, TRADES and MART against
independent write-ups of their formulas, the TRADES inner maximisation, the config rules
and short training runs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from robustrank.registry import NameTakenError, UnknownNameError
from robustrank.training import (
    ConfigError,
    get_objective,
    list_objectives,
    list_presets,
    load_config,
    load_preset,
    objectives,
    read_history,
    register_objective,
    train,
)
from robustrank.training.objectives import (
    Adversary,
    Madry,
    Mart,
    Mix,
    Objective,
    ObjectiveOutput,
    Trades,
    mart_loss,
    trades_adversary,
    trades_loss,
)
from runs import interrupt_then_resume, same_weights, tiny_fcnn

BETA = 6.0


def small_model(seed: int = 0, hidden: bool = False) -> nn.Module:
    """A 4-pixel, 3-class model in float64 (tight comparisons)."""
    torch.manual_seed(seed)
    if hidden:
        layers = [nn.Flatten(), nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)]
    else:
        layers = [nn.Flatten(), nn.Linear(4, 3)]
    return nn.Sequential(*layers).double()


def batch(seed: int = 1, n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 2, 2, generator=g, dtype=torch.float64)
    x[0] = 0.0  # rows on the edges of [0, 1]: the ball is clipped there
    x[1] = 1.0
    y = torch.randint(0, 3, (n,), generator=g)
    return x, y


def perturbed(x: torch.Tensor, seed: int = 2, eps: float = 0.1) -> torch.Tensor:
    """A fixed x' in the eps-ball around x and in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    return (x + eps * (2 * torch.rand(x.shape, generator=g, dtype=x.dtype) - 1)).clamp(0, 1)


def value_and_grads(model: nn.Module, loss: torch.Tensor) -> tuple[float, list[torch.Tensor]]:
    grads = torch.autograd.grad(loss, list(model.parameters()), retain_graph=True)
    return loss.item(), list(grads)


def assert_same_value_and_grads(model, loss, reference, rtol=1e-10, atol=1e-12):
    value, grads = value_and_grads(model, loss)
    ref_value, ref_grads = value_and_grads(model, reference)
    assert value == pytest.approx(ref_value, rel=rtol, abs=atol)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=rtol, atol=atol)


def tiny(**overrides):
    """A FCNN run on 256 MNIST images (8 batches), no evaluation."""
    settings = {"train_subset": 256, "epochs": 1, "batch_size": 32, "history": {"evaluate": False}}
    return tiny_fcnn(**{"name": "tiny-objective", **settings, **overrides})


# --------------------------------------------------------------------------- the registry


def test_registry_lists_the_builtins_with_their_options():
    assert list_objectives()[:4] == ["madry", "mix", "trades", "mart"]
    assert get_objective("TRADES").name == "trades"
    assert get_objective("trades").options["beta"] == 6.0
    assert get_objective("mart").options == {"beta": 6.0}
    assert not get_objective("madry").needs_attack and get_objective("mart").needs_attack
    assert all(get_objective(n).description for n in list_objectives())
    with pytest.raises(UnknownNameError, match="unknown objective 'trdes'; did you mean 'trades'"):
        get_objective("trdes")


def test_register_objective_as_decorator_and_call():
    with objectives.REGISTRY.temporary():

        @register_objective("double-ce", description="2 * CE")
        class DoubleCE(Objective):
            def __init__(self, weight: float = 2.0) -> None:
                self.weight = weight

            def loss(self, model, x, y, adversary):
                logits = model(adversary.inputs(x, y))
                return ObjectiveOutput(self.weight * F.cross_entropy(logits, y), logits)

        entry = get_objective("double-ce")
        assert entry.cls is DoubleCE and entry.options == {"weight": 2.0}
        assert entry.description == "2 * CE" and entry.needs_attack
        with pytest.raises(NameTakenError):
            register_objective("double-ce", DoubleCE)
        with pytest.raises(ValueError, match=r"takes no option 'wieght'.*accepted options: weight"):
            entry.create(wieght=1.0)
    assert "double-ce" not in list_objectives()


# --------------------------------------------------------------------------- outer losses


def test_trades_loss_matches_an_independent_write_up():
    model = small_model()
    x, y = batch()
    x_adv = perturbed(x)
    lc, la = model(x), model(x_adv)
    loss = trades_loss(lc, la, y, BETA)
    # written out: CE as -log softmax_y, KL(p || q) = sum_k p_k (log p_k - log q_k)
    log_p, log_q = lc.log_softmax(1), la.log_softmax(1)
    ce = -log_p[torch.arange(len(y)), y].mean()
    kl = (log_p.exp() * (log_p - log_q)).sum() / len(y)
    assert kl.item() > 0
    assert_same_value_and_grads(model, loss, ce + BETA * kl)


def test_mart_loss_matches_an_independent_write_up():
    model = small_model(seed=3)
    x, y = batch(seed=4, n=8)
    x_adv = perturbed(x, eps=0.3)
    lc, la = model(x), model(x_adv)
    loss = mart_loss(lc, la, y, BETA)
    pc, pa = lc.softmax(1), la.softmax(1)
    rows = []
    for i in range(len(y)):
        wrong = max(pa[i, k] for k in range(3) if k != y[i])
        bce = -torch.log(pa[i, y[i]]) - torch.log(1.0001 - wrong + 1e-12)
        kl = sum(pc[i, k] * (torch.log(pc[i, k]) - torch.log(pa[i, k] + 1e-12)) for k in range(3))
        rows.append((bce, kl * (1.0000001 - pc[i, y[i]])))
    reference = sum(b for b, _ in rows) / len(y) + BETA * sum(r for _, r in rows) / len(y)
    assert_same_value_and_grads(model, loss, reference)


def test_mart_and_trades_reduce_to_their_clean_parts_at_beta_zero():
    model = small_model()
    x, y = batch()
    lc, la = model(x), model(perturbed(x))
    assert trades_loss(lc, la, y, 0.0).item() == pytest.approx(F.cross_entropy(lc, y).item())
    # MART's first part is a boosted CE: larger than the plain CE on x'
    assert mart_loss(lc, la, y, 0.0).item() > F.cross_entropy(la, y).item()


# --------------------------------------------------------------------------- objectives


def test_madry_and_mix_are_the_old_training_loss_bit_for_bit():
    model = small_model(hidden=True)
    x, y = batch()
    x_adv = perturbed(x)
    adversary = Adversary(lambda xb, yb: x_adv, seed=0)
    loss, logits = Madry().loss(model, x, y, adversary)
    assert torch.equal(loss, F.cross_entropy(model(x_adv), y)) and torch.equal(logits, model(x_adv))
    loss, logits = Mix(0.3).loss(model, x, y, adversary)
    old = 0.3 * F.cross_entropy(model(x_adv), y) + (1.0 - 0.3) * F.cross_entropy(model(x), y)
    assert torch.equal(loss, old) and torch.equal(logits, model(x_adv))
    for objective in (Madry(), Mix(0.3)):  # no attack: natural training
        loss, logits = objective.loss(model, x, y, Adversary(None, seed=0))
        assert torch.equal(loss, F.cross_entropy(model(x), y))


def test_trades_objective_is_its_inner_and_outer_parts():
    model = small_model(hidden=True)
    x, y = batch()
    trades = Trades(eps=0.1, alpha=0.02, steps=4, beta=BETA)
    loss, logits = trades.loss(model, x, y, Adversary(None, seed=5))
    g = torch.Generator().manual_seed(5)
    x_adv = trades_adversary(model, x, eps=0.1, alpha=0.02, steps=4, generator=g)
    assert torch.equal(logits, model(x_adv))
    assert_same_value_and_grads(model, loss, trades_loss(model(x), model(x_adv), y, BETA), 0, 0)


def test_mart_objective_trains_on_the_configured_attack():
    model = small_model(hidden=True)
    x, y = batch()
    x_adv = perturbed(x)
    seen = []

    def attack(xb, yb):
        seen.append((xb, yb))
        return x_adv

    loss, logits = Mart(beta=BETA).loss(model, x, y, Adversary(attack, seed=0))
    assert len(seen) == 1 and seen[0][0] is x and seen[0][1] is y
    assert torch.equal(logits, model(x_adv))
    assert_same_value_and_grads(model, loss, mart_loss(model(x), model(x_adv), y, BETA), 0, 0)
    with pytest.raises(ValueError, match="needs an attack"):
        Mart().loss(model, x, y, Adversary(None, seed=0))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Trades(eps=0.1, alpha=0.01, steps=2, beta=-1.0), "beta must be"),
        (lambda: Mart(beta=float("nan")), "beta must be"),
        (lambda: Trades(eps=2.0, alpha=0.01, steps=2), "eps must be"),
        (lambda: Trades(eps=0.1, alpha=0.01, steps=0), "steps must be"),
        (lambda: Mix(1.5), "mix must lie"),
    ],
)
def test_objectives_refuse_bad_options(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# --------------------------------------------------------------------------- TRADES' inner loop


def kl_sum(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor) -> float:
    with torch.no_grad():
        log_p, log_q = model(x).log_softmax(1), model(x_adv).log_softmax(1)
        return float((log_p.exp() * (log_p - log_q)).sum())


def test_trades_inner_maximisation_increases_the_kl_inside_the_ball():
    model = small_model(seed=7, hidden=True)
    x, _ = batch(n=16)
    eps = 0.1
    g = torch.Generator().manual_seed(0)
    start = x + 0.001 * torch.randn(x.shape, generator=g, dtype=x.dtype)
    g = torch.Generator().manual_seed(0)
    x_adv = trades_adversary(model, x, eps=eps, alpha=0.02, steps=10, generator=g)
    assert kl_sum(model, x, x_adv) > 10 * kl_sum(model, x, start)
    assert float((x_adv - x).abs().max()) <= eps + 1e-12
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert not x_adv.requires_grad
    assert all(p.grad is None for p in model.parameters())  # gradients w.r.t. x only


def test_trades_inner_maximisation_is_seeded():
    model = small_model(hidden=True)
    x, _ = batch()

    def run(seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return trades_adversary(model, x, eps=0.1, alpha=0.02, steps=2, generator=g)

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))
    trades = Trades(eps=0.1, alpha=0.02, steps=2)
    y = torch.zeros(len(x), dtype=torch.long)
    a = trades.loss(model, x, y, Adversary(None, seed=3)).logits
    b = trades.loss(model, x, y, Adversary(None, seed=3)).logits
    assert torch.equal(a, b)


def test_trades_runs_its_inner_loop_in_eval_mode_and_restores_the_modes():
    model = small_model(hidden=True)
    model.append(nn.Dropout(0.5))
    model.train()
    model[2].eval()  # a submodule in eval mode inside a model in train mode stays so
    modes = []
    model.register_forward_hook(lambda m, args, out: modes.append(m.training))
    x, y = batch()
    Trades(eps=0.1, alpha=0.02, steps=3).loss(model, x, y, Adversary(None, seed=0))
    # p(x) once and 3 steps in eval mode, then f(x) and f(x') in train mode
    assert modes == [False] * 4 + [True, True]
    assert model.training and model[-1].training and not model[2].training


# --------------------------------------------------------------------------- configs


def test_config_chooses_the_objective_by_name_with_options_beside_it(tmp_path):
    cfg = tiny(adversarial={"attack": "pgd", "eps": 0.05, "objective": {"name": "trades"}})
    adv = cfg.adversarial
    assert adv.objective_name == "trades"
    assert adv.objective_options() == {"eps": 0.05, "alpha": 0.005, "steps": 20}
    assert cfg.plain()["adversarial"]["objective"] == "trades"  # the bare name back
    cfg = tiny(adversarial={"attack": "fgsm", "objective": {"name": "MART", "beta": 3}})
    assert cfg.plain()["adversarial"]["objective"] == {"name": "mart", "beta": 3}
    assert cfg.adversarial.objective_options() == {"beta": 3}
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg and load_config(path).to_yaml() == cfg.to_yaml()


def test_an_unset_objective_follows_mix_and_is_not_written():
    assert tiny().adversarial.objective_name == "madry"
    mixed = tiny(adversarial={"attack": "pgd", "mix": 0.5})
    assert mixed.adversarial.objective_name == "mix"
    assert mixed.adversarial.objective_options() == {"mix": 0.5}
    assert "objective" not in mixed.plain()["adversarial"]
    assert "objective" not in yaml.safe_load(mixed.to_yaml())["adversarial"]
    explicit = tiny(adversarial={"attack": "pgd", "mix": 0.5, "objective": "mix"})
    assert explicit.adversarial.objective_options() == {"mix": 0.5}


def test_presets_serialise_without_an_objective():
    for name in list_presets():
        if name.endswith(("-trades", "-ibp")):
            assert load_preset(name).adversarial.objective_name == name.rsplit("-", 1)[1]
            continue
        preset = load_preset(name)
        assert "objective" not in preset.plain()["adversarial"], name
        assert "objective" not in preset.to_yaml(), name
        assert preset.adversarial.objective_name == "madry"
    assert load_preset("fcnn-pgd").plain()["adversarial"] == {
        "attack": "pgd",
        "eps": 0.05,
        "alpha": 0.005,
        "steps": 20,
        "random_start": True,
        "mix": 1.0,
        "options": {},
    }


@pytest.mark.parametrize(
    ("adversarial", "match"),
    [
        (
            {"attack": "pgd", "objective": "trdes"},
            r"adversarial\.objective\.name: unknown objective 'trdes'; did you mean 'trades'\?",
        ),
        (
            {"attack": "pgd", "objective": {"name": "trades", "bta": 6}},
            r"adversarial\.objective: objective 'trades' takes no option 'bta' \(did you mean "
            r"'beta'\?\); accepted options: beta",
        ),
        (
            {"attack": "pgd", "objective": {"name": "madry", "beta": 6}},
            r"objective 'madry' takes no option 'beta'; accepted options: none",
        ),
        (
            {"attack": "pgd", "objective": {"name": "trades", "eps": 0.1}},
            r"adversarial\.objective: set eps beside objective",
        ),
        (
            {"objective": "trades"},
            r"adversarial: objective 'trades' trains on adversarial examples; set attack",
        ),
        ({"objective": "mart"}, r"objective 'mart' trains on adversarial examples"),
        (
            {"attack": "pgd", "mix": 0.5, "objective": "madry"},
            r"adversarial: mix 0\.5 .*objective 'madry' takes no mix",
        ),
        ({"attack": "pgd", "mix": 0.5, "objective": "trades"}, r"'trades' takes no mix"),
        (
            {"attack": "pgd", "objective": {"name": "trades", "beta": -2}},
            r"adversarial: objective 'trades': beta must be a finite number >= 0",
        ),
    ],
)
def test_config_errors_name_the_key_and_the_fix(adversarial, match):
    with pytest.raises(ConfigError, match=match):
        tiny(adversarial=adversarial)


# --------------------------------------------------------------------------- training runs


@pytest.mark.parametrize(
    "adversarial",
    [
        {"attack": "pgd", "eps": 0.1, "alpha": 0.02, "steps": 2, "objective": "trades"},
        {"attack": "pgd", "eps": 0.1, "alpha": 0.02, "steps": 2, "objective": "mart"},
    ],
)
def test_trades_and_mart_train_and_their_run_directory_round_trips(tmp_path, adversarial):
    cfg = tiny(adversarial=adversarial)
    result = train(cfg, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "done.json").exists()
    assert load_config(tmp_path / "run" / "config.yaml") == cfg
    last = read_history(tmp_path / "run")[-1]
    assert last["train_ce"] > 0 and 0.0 <= last["train_acc"] <= 1.0
    again = train(cfg, tmp_path / "run", resume=True, progress=False)  # same config: no-op
    assert again.already_done and same_weights(again.model, result.model)


@pytest.mark.slow
def test_an_interrupted_trades_run_resumes_to_identical_weights(tmp_path):
    cfg = tiny(
        epochs=2,
        adversarial={"attack": "pgd", "eps": 0.1, "alpha": 0.02, "steps": 3, "objective": "trades"},
        history={"evaluate": False, "every_steps": 3},
    )
    full = train(cfg, tmp_path / "full", progress=False)
    resumed = interrupt_then_resume(
        cfg, tmp_path / "run", lambda r: (r["kind"], r["epoch"]) == ("steps", 2)
    )
    assert resumed.resumed and same_weights(resumed.model, full.model)


def test_a_registered_objective_drives_training(tmp_path):
    calls = []

    class CleanPlusAdversarial(Objective):
        """CE(x) + w * CE(x_adv)."""

        def __init__(self, eps: float, w: float = 1.0) -> None:
            self.eps, self.w = eps, w

        def loss(self, model, x, y, adversary):
            calls.append((adversary.seed, self.eps, self.w))
            logits = model(adversary.inputs(x, y))
            ce = F.cross_entropy(model(x), y) + self.w * F.cross_entropy(logits, y)
            return ObjectiveOutput(ce, logits)

    with objectives.REGISTRY.temporary():
        register_objective("clean-plus-adversarial", CleanPlusAdversarial)
        cfg = tiny(
            adversarial={
                "attack": "fgsm",
                "eps": 0.1,
                "objective": {"name": "clean-plus-adversarial", "w": 0.5},
            }
        )
        train(cfg, tmp_path / "run", progress=False)
    # one call per batch (8), each with its own seed and the section's eps beside w
    assert len(calls) == 8 and len({seed for seed, _, _ in calls}) == 8
    assert {(eps, w) for _, eps, w in calls} == {(0.1, 0.5)}
