"""Attack registry: names, defaults, errors, and a user attack usable everywhere by name."""

from __future__ import annotations

from types import MappingProxyType

import pytest
import torch
from torch import Tensor, nn

from robustrank.attacks import (
    FGSM,
    GNM,
    PGD,
    Attack,
    AttackSpec,
    builtin_attacks,
    create_attack,
    get_attack,
    list_attacks,
    register_attack,
    supported_options,
)
from robustrank.attacks import registry as registry_module
from robustrank.evaluation import (
    PAPER_DEFAULTS,
    AttackName,
    eps_sweep,
    evaluate,
    make_attack,
)

C = 4


class Net(nn.Module):
    """A small tanh MLP on N x 1 x 4 x 4 inputs."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.fc1 = nn.Linear(16, 10)
        self.fc2 = nn.Linear(10, C)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(torch.tanh(self.fc1(x.flatten(1))))


def random_sign_class() -> type[Attack]:
    """A fresh user-defined attack class: ``x + eps * scale * s`` with seeded random signs."""

    class RandomSign(Attack):
        """Random-sign baseline: every pixel moves by +-eps*scale, then clipped to [0, 1]."""

        def __init__(
            self,
            model: nn.Module,
            eps: float,
            scale: float = 1.0,
            seed: int | None = None,
            channels_last: bool | None = None,
        ) -> None:
            super().__init__(model, eps, channels_last)
            self.scale, self.seed = float(scale), seed

        def params(self) -> dict:
            return {"eps": self.eps, "scale": self.scale, "seed": self.seed}

        def perturb(self, x: Tensor, y: Tensor, early_stop: bool = False):
            g = torch.Generator(device=x.device).manual_seed(self.seed or 0)
            s = torch.randint(0, 2, x.shape, generator=g, device=x.device).to(x.dtype) * 2 - 1
            return (x + self.eps * min(self.scale, 1.0) * s).clamp(0.0, 1.0), None

    return RandomSign


@pytest.fixture
def clean_registry():
    """Restore the registry after a test that registers attacks."""
    with registry_module.REGISTRY.temporary():
        yield


@pytest.fixture
def model() -> Net:
    return Net(0).eval()


@pytest.fixture
def xy(model):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(40, 1, 4, 4, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:8] = (y[:8] + 1) % C
    return x, y


# --------------------------------------------------------------------------- built-ins


def test_builtins_listed_in_paper_order_with_paper_defaults():
    assert list_attacks()[:3] == ["fgsm", "pgd", "gnm"]
    assert list(builtin_attacks()) == ["fgsm", "pgd", "gnm"]
    pgd = get_attack("  PGD ")
    assert isinstance(pgd, AttackSpec) and pgd.name == "pgd" and pgd.cls is PGD
    assert dict(pgd.defaults) == {"alpha": 0.005, "steps": 20, "random_start": True}
    assert dict(get_attack("gnm").defaults) == {"steps": 5} and get_attack("gnm").cls is GNM
    assert dict(get_attack("fgsm").defaults) == {} and get_attack("fgsm").cls is FGSM
    assert isinstance(pgd.defaults, MappingProxyType)
    with pytest.raises(TypeError):
        pgd.defaults["steps"] = 3  # read-only
    assert [FGSM.name, PGD.name, GNM.name] == ["fgsm", "pgd", "gnm"]


def test_spec_accepts_and_takes_seed_follow_the_constructor():
    pgd, fgsm = get_attack("pgd"), get_attack("fgsm")
    assert pgd.takes_seed and not fgsm.takes_seed and not get_attack("gnm").takes_seed
    assert pgd.accepts("alpha") and pgd.accepts("generator") and not fgsm.accepts("steps")
    assert fgsm.options == ("clip", "channels_last")
    assert not pgd.accepts("model") and not pgd.accepts("eps")  # positional, not options


def test_attack_name_and_paper_defaults_are_derived_from_the_registry():
    assert [a.value for a in AttackName] == list(builtin_attacks())
    assert AttackName.PGD == "pgd"
    assert {str(k): v for k, v in PAPER_DEFAULTS.items()} == {
        n: dict(s.defaults) for n, s in builtin_attacks().items()
    }


def test_create_attack_pgd_is_bit_identical_to_direct_construction(model, xy):
    x, y = xy
    via_registry = create_attack("pgd", model, 0.05, seed=0)
    direct = PGD(model, 0.05, alpha=0.005, steps=20, random_start=True, seed=0)
    assert via_registry.params() == direct.params()
    x_adv = direct(x, y)
    assert torch.equal(via_registry(x, y), x_adv)
    assert torch.equal(make_attack("PGD", model, 0.05, seed=0)(x, y), x_adv)
    assert torch.equal(make_attack("pgd", model, 0.05, seed=0).run(x, y).x_adv, x_adv)


# --------------------------------------------------------------------------- errors


def test_unknown_name_lists_every_name_and_suggests():
    with pytest.raises(ValueError, match="choose one of: fgsm, pgd, gnm") as err:
        get_attack("pgdd")
    assert "did you mean 'pgd'?" in str(err.value)
    with pytest.raises(ValueError, match="unknown attack 'cw'; choose one of: fgsm, pgd, gnm"):
        create_attack("cw", Net(), 0.05)
    with pytest.raises(TypeError, match="attack name must be a string"):
        get_attack(3)


def test_bad_option_names_the_attack_the_option_and_the_accepted_ones(model):
    msg = r"bad option for attack 'fgsm': FGSM takes no option 'steps'; accepted options: clip, ch"
    with pytest.raises(ValueError, match=msg):
        create_attack("fgsm", model, 0.05, steps=3)
    with pytest.raises(ValueError, match="takes no option 'alpha', 'steps'; accepted"):
        create_attack("fgsm", model, 0.05, alpha=0.1, steps=2, clip=True)
    with pytest.raises(ValueError, match="'alpha'"):
        make_attack("gnm", model, 0.05, alpha=0.1)


def test_none_options_are_ignored(model):
    pgd = create_attack("pgd", model, 0.05, steps=None, alpha=0.01, seed=None)
    assert (pgd.steps, pgd.alpha, pgd.seed) == (20, 0.01, None)
    assert isinstance(create_attack("fgsm", model, 0.05, steps=None, alpha=None), FGSM)


def test_supported_options_keeps_what_the_constructor_takes():
    given = {"alpha": 0.01, "steps": 3, "random_start": False, "seed": 7, "clip": None}
    assert supported_options("fgsm", given) == {}
    assert supported_options("gnm", given) == {"steps": 3}
    assert supported_options("PGD", given) == {
        "alpha": 0.01,
        "steps": 3,
        "random_start": False,
        "seed": 7,
    }
    with pytest.raises(ValueError, match="unknown attack"):
        supported_options("nope", given)


@pytest.mark.usefixtures("clean_registry")
def test_duplicate_names_are_refused_unless_overwrite():
    cls = random_sign_class()
    with pytest.raises(ValueError, match="'pgd' is already registered .*overwrite=True"):
        register_attack("PGD", cls)
    assert get_attack("pgd").cls is PGD
    register_attack("random-sign", cls)
    with pytest.raises(ValueError, match="already registered"):
        register_attack("random-sign", cls)
    register_attack("random-sign", cls, {"scale": 0.5}, overwrite=True)
    assert dict(get_attack("random-sign").defaults) == {"scale": 0.5}
    assert builtin_attacks()["pgd"].cls is PGD


@pytest.mark.usefixtures("clean_registry")
def test_non_attack_classes_are_refused():
    class NoPerturb(Attack):
        pass

    with pytest.raises(TypeError, match="needs a name first"):
        register_attack(random_sign_class())
    for bad, match in [
        (nn.Linear, "must be a subclass of robustrank.attacks.Attack, got Linear"),
        (Attack, "must be a subclass"),
        (lambda model, eps: None, "must be a subclass"),
        (NoPerturb, "does not implement perturb"),
    ]:
        with pytest.raises(TypeError, match=match):
            register_attack("bad", bad)
    assert "bad" not in list_attacks()


@pytest.mark.usefixtures("clean_registry")
def test_bad_defaults_and_names_are_refused_at_registration():
    cls = random_sign_class()
    msg = r"bad default for attack 'rs': RandomSign takes no option 'steps'; accepted options: s"
    with pytest.raises(ValueError, match=msg):
        register_attack("rs", cls, {"steps": 5})
    with pytest.raises(TypeError, match="defaults must be a mapping"):
        register_attack("rs", cls, [("scale", 1.0)])
    with pytest.raises(ValueError, match="lower-case letters, digits"):
        register_attack("random sign", cls)
    assert "rs" not in list_attacks() and cls.name == "attack"  # nothing changed


@pytest.mark.usefixtures("clean_registry")
def test_required_options_and_kwargs_constructors(model):
    class Needs(Attack):
        def __init__(self, model, eps, steps, **kw):
            super().__init__(model, eps)
            self.steps, self.kw = steps, kw

        def perturb(self, x, y, early_stop=False):
            return x, None

    spec = get_attack(register_attack("needs", Needs).name)
    assert spec.accepts("anything") and not spec.accepts("model") and not spec.takes_seed
    with pytest.raises(ValueError, match="needs the option\\(s\\) steps"):
        create_attack("needs", model, 0.1)
    assert create_attack("needs", model, 0.1, steps=2, extra=1).kw == {"extra": 1}


# --------------------------------------------------------------------------- user attack


@pytest.mark.usefixtures("clean_registry")
def test_decorator_registers_and_returns_the_class():
    cls = random_sign_class()
    out = register_attack("  Random-Sign ", defaults={"scale": 0.5})(cls)
    assert out is cls and cls.name == "random-sign"
    spec = get_attack("random-sign")
    assert spec.description.startswith("Random-sign baseline") and spec.takes_seed
    assert "random-sign" in list_attacks()
    assert spec.title == "random-sign"  # tables name an untitled attack by its name
    register_attack("titled", cls, title="Random Sign")
    assert get_attack("titled").title == "Random Sign"
    assert get_attack("autoattack").title == "AutoAttack"
    with pytest.raises(TypeError, match="title must be a string"):
        register_attack("bad-title", cls, title=3)


@pytest.mark.usefixtures("clean_registry")
def test_user_attack_works_everywhere_a_name_is_accepted(model, xy):
    x, y = xy
    register_attack("random-sign", random_sign_class(), {"scale": 1.0})
    eps = 0.1
    attack = create_attack("random-sign", model, eps, seed=3)
    x_adv = attack(x, y)
    assert float((x_adv - x).abs().max()) <= eps + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert torch.equal(make_attack("Random-Sign", model, eps, seed=3)(x, y), x_adv)

    attack = create_attack("random-sign", model, 0.3, seed=3)
    res = evaluate(model, attack, x, y, checks=False)
    assert res.attack == "random-sign" and res.seed == 3 and res.n_correct == 32
    with torch.no_grad():  # only the correctly classified inputs are attacked (Section 5)
        correct = model(x).argmax(1) == y
        x_c = attack(x[correct], y[correct])
        fooled = int((model(x_c).argmax(1) != y[correct]).sum())
    assert res.n_fooled == fooled > 0

    grid = [0.0, 0.1, 0.3]
    sweep = eps_sweep(model, "random-sign", grid, x, y, batch_size=7, checks=False, seed=3)
    assert [r.eps for r in sweep] == grid and sweep[0].n_fooled == 0
    for r in sweep:  # the seeded attack restarts from the same seed at every eps
        again = create_attack("random-sign", model, r.eps, seed=3)
        single = evaluate(model, again, x, y, batch_size=7, checks=False)
        assert (r.attack, r.n_fooled, r.seed) == ("random-sign", single.n_fooled, 3)
    es = eps_sweep(model, "random-sign", [0.3], x, y, batch_size=7, early_stop=True, seed=3)
    assert es[0].n_fooled == sweep[-1].n_fooled
