"""The attack registry: the one place where attack names are looked up (timm style).

An attack name maps to an :class:`~robustrank.attacks.Attack` subclass and its default
options; each attack registers where it is defined (``@register_attack("pgd", ...)`` on
:class:`~robustrank.attacks.PGD`), and this module imports none of them. Everything that
takes an attack name (:func:`create_attack`, :func:`robustrank.evaluation.make_attack`,
:func:`robustrank.evaluation.eps_sweep`, the training configs and the command line) looks
it up here, so an attack registered from Python works everywhere::

    @register_attack("random-sign", description="eps * random signs (a baseline)")
    class RandomSign(Attack):
        def __init__(self, model, eps, seed: int | None = None, channels_last=None):
            super().__init__(model, eps, channels_last)
            self.seed = seed

        def perturb(self, x, y, early_stop=False):
            g = torch.Generator(device=x.device).manual_seed(self.seed or 0)
            s = torch.randint(0, 2, x.shape, generator=g, device=x.device) * 2 - 1
            return (x + self.eps * s.to(x.dtype)).clamp(0, 1), None

    attack = create_attack("random-sign", model, eps=0.05, seed=0)

The built-in attacks are the paper's three with its settings (Section 5, eps = 0.05 for
all): ``fgsm``; ``pgd`` with ``alpha=0.005, steps=20, random_start=True`` (Madry et al.,
2018); ``gnm`` with ``steps=5`` (Balda et al., 2018). Then come the evaluation attacks of
AutoAttack with the reference's settings: ``apgd-ce``, ``apgd-dlr``, ``apgd-t``, ``fab``,
``fab-t``, ``square`` and the ensemble ``autoattack``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar, overload

from torch import nn

from ..registry import Registry, summary_line
from .base import Attack

__all__ = [
    "AttackSpec",
    "REGISTRY",
    "PAPER_ATTACKS",
    "register_attack",
    "list_attacks",
    "get_attack",
    "create_attack",
    "supported_options",
    "builtin_attacks",
]

T = TypeVar("T", bound=Attack)

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")

#: The paper's attacks (Section 5), in its order: :func:`builtin_attacks`.
PAPER_ATTACKS = ("fgsm", "pgd", "gnm")


def _normalise(name: Any) -> str:
    if not isinstance(name, str):
        raise TypeError(f"attack name must be a string, got {type(name).__name__}")
    return name.strip().lower()


#: Every attack by name (case-insensitive); each registers where it is defined.
REGISTRY: Registry[AttackSpec] = Registry(
    "attack", normalise=_normalise, hint="register your own with robustrank.attacks.register_attack"
)
#: The first registration of each paper attack (robustrank's own, made on import).
_PAPER: dict[str, AttackSpec] = {}


class _Signature(NamedTuple):
    """How ``cls(model, eps, **options)`` binds: see :func:`_signature`."""

    fixed: tuple[str, ...]  # the parameters that receive model and eps
    options: tuple[str, ...]  # the later parameters that can be passed by keyword
    required: tuple[str, ...]  # options without a default value
    var_keyword: bool  # takes **kwargs


def _signature(cls: type[Attack]) -> _Signature:
    """Read ``cls.__init__``: its first two positional parameters get ``model`` and ``eps``
    (whatever their names); the options are the later ones passable by keyword."""
    try:
        params = list(inspect.signature(cls).parameters.values())
    except (TypeError, ValueError) as err:
        raise TypeError(f"cannot read the signature of {cls.__name__}: {err}") from err
    kind = inspect.Parameter
    positional = [p for p in params if p.kind in (kind.POSITIONAL_ONLY, kind.POSITIONAL_OR_KEYWORD)]
    if len(positional) < 2 and not any(p.kind == kind.VAR_POSITIONAL for p in params):
        raise TypeError(
            f"{cls.__name__}.__init__ must take (model, eps) as its first two arguments, "
            "like Attack.__init__(self, model, eps, channels_last=None)"
        )
    fixed = tuple(p.name for p in positional[:2])
    rest = [
        p
        for p in params
        if p.name not in fixed and p.kind in (kind.POSITIONAL_OR_KEYWORD, kind.KEYWORD_ONLY)
    ]
    return _Signature(
        fixed=fixed,
        options=tuple(p.name for p in rest),
        required=tuple(p.name for p in rest if p.default is p.empty),
        var_keyword=any(p.kind == kind.VAR_KEYWORD for p in params),
    )


@dataclass(frozen=True)
class AttackSpec:
    """A registered attack: its name, class, default options and description.

    ``create_attack(name, model, eps, **options)`` calls ``cls(model, eps, **{**defaults,
    **options})``. Built by :func:`register_attack`, which checks every field.

    Attributes:
        name: the registered name (lower case).
        cls: the :class:`~robustrank.attacks.Attack` subclass.
        defaults: read-only default options (e.g. the paper's PGD ``steps=20``).
        description: one line for listings (``robustrank attacks``).
        title: how tables and reports name it (e.g. ``"AutoAttack"``); the name if empty.
    """

    name: str
    cls: type[Attack]
    defaults: Mapping[str, Any] = field(default_factory=dict, hash=False)
    description: str = ""
    title: str = ""
    _sig: _Signature = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ValueError(
                f"attack name must be lower-case letters, digits, '.', '_' or '-' (it names "
                f"result files), got {self.name!r}; e.g. 'my-attack'"
            )
        cls = self.cls
        if not (isinstance(cls, type) and issubclass(cls, Attack)) or cls is Attack:
            got = cls.__name__ if isinstance(cls, type) else type(cls).__name__
            raise TypeError(
                f"attack {self.name!r} must be a subclass of robustrank.attacks.Attack, got "
                f"{got}; subclass Attack and implement perturb(x, y, early_stop)"
            )
        if cls.perturb is Attack.perturb:
            raise TypeError(
                f"{cls.__name__} does not implement perturb(x, y, early_stop); an Attack "
                "subclass must override it"
            )
        if not isinstance(self.description, str):
            raise TypeError(f"description must be a string, got {self.description!r}")
        if not isinstance(self.title, str):
            raise TypeError(f"title must be a string, got {self.title!r}")
        object.__setattr__(self, "title", self.title or self.name)
        if not isinstance(self.defaults, Mapping):
            raise TypeError(f"defaults must be a mapping option -> value, got {self.defaults!r}")
        object.__setattr__(self, "_sig", _signature(cls))
        defaults = dict(self.defaults)
        self.check_options(defaults, what="bad default for attack")
        object.__setattr__(self, "defaults", MappingProxyType(defaults))

    @property
    def options(self) -> tuple[str, ...]:
        """The option names ``cls.__init__`` takes after ``(model, eps)``, in order."""
        return self._sig.options

    @property
    def takes_seed(self) -> bool:
        """Whether ``cls.__init__`` has a ``seed`` parameter (then seed it explicitly)."""
        return "seed" in self._sig.options

    def accepts(self, option: str) -> bool:
        """Whether ``cls.__init__`` takes the keyword ``option`` (``model``/``eps`` are not
        options: they are the positional arguments of :func:`create_attack`)."""
        if option in self._sig.options:
            return True
        return self._sig.var_keyword and isinstance(option, str) and option not in self._sig.fixed

    def check_options(
        self, options: Mapping[str, Any], what: str = "bad option for attack"
    ) -> None:
        """Raise ``ValueError`` naming the attack, the options it does not take and the
        accepted ones."""
        bad = [k for k in options if not self.accepts(k)]
        if bad:
            accepted = ", ".join(self._sig.options) or "none"
            more = " (and any other keyword, via **kwargs)" if self._sig.var_keyword else ""
            raise ValueError(
                f"{what} {self.name!r}: {self.cls.__name__} takes no option "
                f"{', '.join(map(repr, bad))}; accepted options: {accepted}{more}"
            )


@overload
def register_attack(
    name: str,
    cls: None = None,
    defaults: Mapping[str, Any] | None = None,
    *,
    description: str = "",
    title: str = "",
    overwrite: bool = False,
) -> Callable[[type[T]], type[T]]: ...


@overload
def register_attack(
    name: str,
    cls: type[T],
    defaults: Mapping[str, Any] | None = None,
    *,
    description: str = "",
    title: str = "",
    overwrite: bool = False,
) -> type[T]: ...


def register_attack(
    name: str,
    cls: type[T] | None = None,
    defaults: Mapping[str, Any] | None = None,
    *,
    description: str = "",
    title: str = "",
    overwrite: bool = False,
) -> type[T] | Callable[[type[T]], type[T]]:
    """Register an :class:`~robustrank.attacks.Attack` subclass under ``name``.

    Use it as a call, ``register_attack("my-attack", MyAttack, {"steps": 10})``, or as a
    class decorator, ``@register_attack("my-attack", defaults={"steps": 10})``; both return
    the class. The name is stripped and lower-cased. ``defaults`` must be options that
    ``cls.__init__`` takes (checked now). ``description`` defaults to the first line of the
    class docstring, ``title`` (how tables and reports name the attack) to the name. A
    class that does not set its own ``name`` attribute gets this name
    (reports and :class:`~robustrank.evaluation.EvalResult` use it).

    Raises:
        ValueError: the name is taken (pass ``overwrite=True`` to replace it), malformed,
            or a default is not an option of ``cls``.
        TypeError: ``cls`` is not an ``Attack`` subclass implementing ``perturb``.
    """
    if isinstance(name, type):
        raise TypeError(
            "register_attack needs a name first: use @register_attack('my-attack') or "
            "register_attack('my-attack', MyAttack), not a bare @register_attack"
        )
    if cls is None:
        return lambda c: register_attack(
            name, c, defaults, description=description, title=title, overwrite=overwrite
        )
    key = _normalise(name)
    if not description and isinstance(cls, type):
        description = summary_line(cls)
    spec = AttackSpec(key, cls, {} if defaults is None else defaults, description, title)
    REGISTRY.register(key, spec, overwrite=overwrite)
    if "name" not in cls.__dict__:
        cls.name = key
    if key in PAPER_ATTACKS:
        _PAPER.setdefault(key, spec)
    return cls


def list_attacks() -> list[str]:
    """The registered attack names, in registration order (the paper's first)."""
    return REGISTRY.names()


def get_attack(name: str) -> AttackSpec:
    """The :class:`AttackSpec` registered under ``name`` (case-insensitive, stripped).

    Raises ``ValueError`` listing every registered name, with a "did you mean" hint.
    """
    return REGISTRY.get(name)


def create_attack(name: str, model: nn.Module, eps: float, **options: Any) -> Attack:
    """Build the attack registered as ``name`` on ``model`` with l_inf budget ``eps``.

    The registry's defaults (for the built-ins the paper's, Section 5) are overridden by
    ``options``; ``None`` values are ignored, so a CLI can pass unset options through.

    Raises:
        ValueError: unknown name (the message lists the registered ones), an option the
            attack does not take (the message lists the accepted ones), or a bad value.

    Example::

        >>> attack = create_attack("pgd", model, eps=0.05, seed=0)  # alpha=0.005, steps=20
        >>> x_adv = attack(x, y)
    """
    spec = get_attack(name)
    given = {k: v for k, v in options.items() if v is not None}
    spec.check_options(given)
    merged = {**spec.defaults, **given}
    missing = [k for k in spec._sig.required if k not in merged]
    if missing:
        raise ValueError(
            f"attack {spec.name!r} needs the option(s) {', '.join(missing)} (no registered "
            f"default); pass them, e.g. create_attack({spec.name!r}, model, eps, "
            f"{missing[0]}=...)"
        )
    attack = spec.cls(model, eps, **merged)
    if type(attack).name != spec.name:  # a class registered under several names
        attack.name = spec.name
    return attack


def supported_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The subset of ``options`` that attack ``name`` takes (``None`` values dropped).

    Lets generic code offer one set of settings to any attack, e.g.
    ``create_attack(name, model, eps, **supported_options(name, {"alpha": a, "seed": s}))``.
    """
    spec = get_attack(name)
    return {k: v for k, v in options.items() if v is not None and spec.accepts(k)}


def builtin_attacks() -> dict[str, AttackSpec]:
    """The paper's attacks (Section 5) as robustrank registers them, by name, in order.

    Unaffected by later registrations (even ``overwrite=True`` of a built-in name).
    """
    return {name: _PAPER[name] for name in PAPER_ATTACKS if name in _PAPER}
