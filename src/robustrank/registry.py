"""One registry pattern for every axis: models, datasets, attacks, executors, sweep
strategies, optimizers and learning-rate schedules.

A :class:`Registry` maps names to entries. Each axis owns one (``robustrank.models.registry``,
``robustrank.attacks.registry``, ...), and every entry registers where it is defined, e.g.
``@register_attack("pgd", ...)`` on the PGD class. This module imports nothing from the
rest of robustrank, so any module can register without an import cycle.

Example::

    >>> colours = Registry[str]("colour", normalise=str.lower)
    >>> colours.register("red", "#f00")
    '#f00'
    >>> @colours.register("blue")
    ... def blue() -> str: ...
    >>> colours.get("RED")
    '#f00'
    >>> colours.get("rd")
    Traceback (most recent call last):
    UnknownNameError: unknown colour 'rd'; did you mean 'red'? choose one of: red, blue
"""

from __future__ import annotations

import builtins
import contextlib
import difflib
import inspect
from collections.abc import Callable, Iterator, Mapping
from enum import StrEnum
from typing import Any, Generic, TypeVar

__all__ = [
    "Registry",
    "RegistryError",
    "UnknownNameError",
    "NameTakenError",
    "summary_line",
    "keyword_options",
    "format_options",
    "check_keyword_options",
]

T = TypeVar("T")
F = TypeVar("F")


class RegistryError(ValueError):
    """A registry refused a name (unknown, or already taken)."""


class UnknownNameError(RegistryError):
    """``get`` of a name nobody registered; the message lists the choices and, when one is
    close, suggests it (``did you mean 'pgd'?``)."""

    def __init__(self, axis: str, name: Any, choices: list[str], hint: str = "") -> None:
        self.axis, self.name, self.choices = axis, name, choices
        close = difflib.get_close_matches(str(name), choices, n=1, cutoff=0.6)
        self.suggestion = close[0] if close else None
        did = f" did you mean {self.suggestion!r}?" if self.suggestion else ""
        more = f"; {hint}" if hint else ""
        super().__init__(
            f"unknown {axis} {name!r};{did} choose one of: {', '.join(choices) or '(none)'}{more}"
        )


class NameTakenError(RegistryError):
    """``register`` of a name that is already registered, without ``overwrite=True``."""


class Registry(Generic[T]):
    """Names -> entries of one axis (``axis`` names it in messages: "unknown attack ...").

    Args:
        axis: what the entries are, singular ("model", "attack").
        normalise: maps a name to its key, for registering and looking up (e.g.
            ``str.lower`` for case-insensitive names); it may raise ``TypeError``.
        hint: appended to the "unknown name" message (how to add one, say).

    Names keep their registration order. An existing name is refused unless
    ``overwrite=True``, which replaces the entry in place.
    """

    def __init__(
        self, axis: str, *, normalise: Callable[[Any], str] | None = None, hint: str = ""
    ) -> None:
        self.axis, self.hint = axis, hint
        self._normalise = normalise
        self._entries: dict[str, T] = {}

    def key(self, name: Any) -> str:
        """The key ``name`` is registered and looked up under (after ``normalise``)."""
        return name if self._normalise is None else self._normalise(name)

    def register(
        self,
        name: str,
        entry: Any = None,
        *,
        overwrite: bool = False,
        build: Callable[[Any], T] | None = None,
    ) -> Any:
        """Register ``entry`` under ``name`` and return it; without ``entry``, return a
        decorator that registers the decorated object (and returns it unchanged).

        ``build`` turns the registered object into the stored entry (e.g. a class into a
        spec carrying its defaults); by default the object itself is stored.

        Raises:
            NameTakenError: ``name`` is registered already and ``overwrite`` is false.
            TypeError: ``name`` is not a non-empty string (e.g. a bare ``@register``).
        """
        if not isinstance(name, str):
            raise TypeError(
                f"{self.axis} registration needs a name first, e.g. @register('my-{self.axis}'),"
                f" got {name!r}"
            )
        if not name.strip():
            raise ValueError(f"{self.axis} name must not be empty")
        key = self.key(name)
        if entry is None:
            return lambda obj: self.register(name, obj, overwrite=overwrite, build=build)
        stored = entry if build is None else build(entry)
        if key in self._entries and not overwrite:
            raise NameTakenError(
                f"{self.axis} {key!r} is already registered and overwrite=False; choose "
                "another name or pass overwrite=True to replace it"
            )
        self._entries[key] = stored
        return entry

    def get(self, name: Any) -> T:
        """The entry registered as ``name``; :class:`UnknownNameError` otherwise."""
        key = self.key(name)  # a normaliser may refuse a non-string with TypeError
        try:
            return self._entries[key]
        except (KeyError, TypeError):  # TypeError: unhashable
            raise UnknownNameError(self.axis, name, self.names(), self.hint) from None

    def names(self) -> builtins.list[str]:
        """The registered names, in registration order."""
        return builtins.list(self._entries)

    def list(self) -> builtins.list[str]:
        """Same as :meth:`names`."""
        return self.names()

    def items(self) -> builtins.list[tuple[str, T]]:
        """``(name, entry)`` pairs in registration order."""
        return builtins.list(self._entries.items())

    def remove(self, name: str) -> T:
        """Unregister ``name`` and return its entry."""
        entry = self.get(name)
        del self._entries[self.key(name)]
        return entry

    def copy(self) -> Registry[T]:
        """An independent registry with the same entries (e.g. to patch in a test)."""
        other: Registry[T] = Registry(self.axis, normalise=self._normalise, hint=self.hint)
        other._entries = dict(self._entries)
        return other

    @contextlib.contextmanager
    def temporary(self) -> Iterator[Registry[T]]:
        """Undo every registration made inside the ``with`` block when it ends."""
        saved = dict(self._entries)
        try:
            yield self
        finally:
            self._entries = saved

    def choices(self, cls_name: str, module: str | None = None) -> type[StrEnum]:
        """A ``StrEnum`` of the names registered now (for CLI and config choices); give the
        ``module`` that exposes it so that its members pickle."""
        members = [(n, n) for n in self._entries]
        return StrEnum(cls_name, members, module=module)  # type: ignore[return-value]

    def __contains__(self, name: object) -> bool:
        try:
            return self.key(name) in self._entries
        except TypeError:
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(builtins.list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.axis!r}: {', '.join(self._entries)})"


def summary_line(obj: Any) -> str:
    """The first line of ``obj``'s own docstring (a class's, not its base's); "" if none."""
    doc = obj.__dict__.get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    lines = (doc or "").strip().splitlines()
    return lines[0].strip() if lines else ""


def keyword_options(fn: Callable[..., Any], skip: int = 0) -> dict[str, Any]:
    """The options ``fn`` takes by keyword after its first ``skip`` parameters, with their
    defaults (``inspect.Parameter.empty`` when required). ``**kwargs`` is not listed."""
    params = builtins.list(inspect.signature(fn).parameters.values())[skip:]
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name: p.default for p in params if p.kind in named}


def format_options(options: Mapping[str, Any]) -> str:
    """``"a, b=2"``: option names, with ``=default`` where there is one (for listings)."""
    return ", ".join(
        k if v is inspect.Parameter.empty else f"{k}={v!r}" for k, v in options.items()
    )


def check_keyword_options(what: str, given: Mapping[str, Any], accepted: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming ``what``, the options of ``given`` that are not in
    ``accepted`` and the accepted ones."""
    bad = [k for k in given if k not in accepted]
    if bad:
        close = difflib.get_close_matches(str(bad[0]), list(accepted), n=1, cutoff=0.6)
        did = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"{what} takes no option {', '.join(map(repr, bad))}{did}; accepted options: "
            f"{', '.join(accepted) or 'none'}"
        )
