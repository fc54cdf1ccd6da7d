"""Bounded YAML reading: every YAML robustrank reads from a file or from user text.

:func:`load_yaml` parses with PyYAML's ``SafeLoader`` (plain data only, no Python objects)
and refuses, before any Python object is built:

- text above :data:`MAX_YAML_BYTES` (1 MiB, UTF-8);
- nesting deeper than :data:`MAX_YAML_DEPTH` (64 levels);
- documents whose alias expansion is too large: the node graph is composed first (an alias
  is a reference to its anchored node, nothing is copied yet), then the number of nodes
  the document holds once every alias is expanded is counted with memoisation over the
  nodes, and above :data:`MAX_YAML_NODES` (100,000) it is refused. A YAML "billion laughs"
  (nine levels of nine aliases, about 1 KB) expands to about 4 * 10^8 nodes and is refused;
  a recursive alias (``&a [*a]``) expands without end and is refused too.

Every failure (these limits, syntax errors, values PyYAML cannot construct, bad UTF-8) is a
:class:`YAMLInputError` (a ``ValueError`` and a ``yaml.YAMLError``) whose one-line message
names the source, the problem and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "MAX_YAML_BYTES",
    "MAX_YAML_DEPTH",
    "MAX_YAML_NODES",
    "YAMLInputError",
    "load_yaml",
    "load_yaml_file",
    "yaml_node_count",
]

#: Largest YAML text robustrank reads (bytes, UTF-8): configs and specs are a few KB.
MAX_YAML_BYTES = 1 << 20
#: Deepest nesting of sequences and mappings (configs nest a handful of levels).
MAX_YAML_DEPTH = 64
#: Most nodes a document may hold with every alias expanded (scalars and collections).
MAX_YAML_NODES = 100_000


class YAMLInputError(yaml.YAMLError, ValueError):
    """A YAML text is malformed, too large, too deep, or expands beyond the node limit."""


class _BoundedLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses nesting deeper than :data:`MAX_YAML_DEPTH` while composing."""

    def __init__(self, stream: str, source: str) -> None:
        super().__init__(stream)
        self.source = source
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:  # PyYAML hook
        self.depth += 1
        try:
            if self.depth > MAX_YAML_DEPTH:
                raise YAMLInputError(
                    f"{self.source}: YAML nested deeper than {MAX_YAML_DEPTH} levels; refusing "
                    "to read it. Fix: flatten the document (robustrank's files nest a few levels)"
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def yaml_node_count(root: yaml.Node, limit: int | None = None) -> int:
    """Nodes in the tree ``root`` stands for once every alias is expanded (memoised over the
    composed graph, so it costs one visit per distinct node). Stops counting above ``limit``;
    a recursive alias raises ``ValueError``."""
    sizes: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        key = id(node)
        children = _children(node)
        if expanded:
            active.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in children)
            if limit is not None and sizes[key] > limit:
                return sizes[key]
            continue
        if key in sizes:
            continue
        if key in active:
            raise ValueError("recursive alias: the node contains itself")
        active.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _too_big(source: str, size: str) -> YAMLInputError:
    return YAMLInputError(
        f"{source}: {size} of YAML, above robustrank's limit of {MAX_YAML_BYTES:,} bytes "
        "(1 MiB); refusing to read it. Fix: pass a robustrank config or spec (a few KB), or "
        "shorten the file"
    )


def _syntax(source: str, err: yaml.YAMLError) -> YAMLInputError:
    """One line from PyYAML's multi-line message: the problem, where, and its context."""
    if isinstance(err, yaml.MarkedYAMLError) and err.problem:
        mark = err.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        context = f" ({err.context})" if err.context else ""
        text = f"{err.problem}{where}{context}"
    else:
        text = " ".join(str(err).split())
    return YAMLInputError(f"{source}: YAML syntax error: {text}. Fix: correct the YAML there")


def _check_expansion(node: yaml.Node, source: str) -> None:
    try:
        count = yaml_node_count(node, MAX_YAML_NODES)
    except ValueError:
        raise YAMLInputError(
            f"{source}: a YAML alias refers to the node that contains it (a recursive "
            "structure without end); refusing to read it. Fix: remove that alias"
        ) from None
    if count > MAX_YAML_NODES:
        raise YAMLInputError(
            f"{source}: its YAML aliases expand to more than {MAX_YAML_NODES:,} values, "
            "robustrank's limit (an alias bomb such as 'billion laughs' expands to "
            "billions); refusing to read it. Fix: write the values out without nested aliases"
        )


def load_yaml(text: str, source: str) -> Any:
    """Parse one YAML document of plain data within the module's limits.

    ``source`` names the text in errors (a path, ``--option x=...``). An empty document is
    ``None``. Raises :class:`YAMLInputError` for text, nesting or alias expansion beyond
    the limits and for anything PyYAML cannot parse or construct.
    """
    if len(text) > MAX_YAML_BYTES:  # more characters than the limit allows bytes
        raise _too_big(source, f"more than {MAX_YAML_BYTES:,} bytes")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_YAML_BYTES:
        raise _too_big(source, f"{size:,} bytes")
    loader = None
    try:
        loader = _BoundedLoader(text, source)  # the reader refuses unprintable characters
        node = loader.get_single_node()  # composed: aliases are references, nothing copied
        if node is None:
            return None
        _check_expansion(node, source)
        return loader.construct_document(node)
    except YAMLInputError:
        raise
    except yaml.YAMLError as err:
        raise _syntax(source, err) from None
    except (ValueError, TypeError, OverflowError, RecursionError) as err:
        raise YAMLInputError(
            f"{source}: a YAML value cannot be read ({type(err).__name__}: {err}). Fix: "
            "correct that value (quote it to keep it a string)"
        ) from None
    finally:
        if loader is not None:
            loader.dispose()


def load_yaml_file(path: str | Path, source: str | None = None) -> Any:
    """:func:`load_yaml` of a UTF-8 file; a file above :data:`MAX_YAML_BYTES` is refused from
    its size, before it is read. ``OSError`` (missing, unreadable) is left to the caller."""
    path = Path(path)
    source = str(path) if source is None else source
    size = path.stat().st_size
    if size > MAX_YAML_BYTES:
        raise _too_big(source, f"{size:,} bytes")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise YAMLInputError(
            f"{source}: not UTF-8 text ({err}); YAML files must be UTF-8. Fix: save it as UTF-8"
        ) from None
    return load_yaml(text, source)
