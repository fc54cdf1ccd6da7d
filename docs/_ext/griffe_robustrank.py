"""Griffe extension for the documentation site (loaded by mkdocs.yml; not part of the package).

robustrank's docstrings are written for readers of the source: Sphinx roles
(``:func:`name```, ``:class:`~pkg.Name```) and reST literal blocks (``Algorithm::``). The
site renders docstrings as Markdown, where a role would show as ``:func:`` before the code
span and ``::`` would end a sentence. This extension rewrites both, in the docstring text
only, before griffe parses the docstring:

* ``:role:`target``` becomes the code span ``target`` (``~pkg.mod.Name`` becomes ``Name``,
  as in Sphinx); a role is never turned into a link, so a renamed target cannot break
  the ``--strict`` build;
* a line ending in ``::`` ends in ``:`` (the indented block after it is a code block in
  Markdown too).

It also loads folders of the package that have no ``__init__.py`` (implicit namespace
packages such as ``robustrank/experiments/``): Python imports them, but griffe skips them
on purpose, so ``::: robustrank.experiments.reproduce`` would not be found. When such a
folder gains an ``__init__.py``, griffe loads it itself and this part does nothing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj|const|ref):`(~?)([^`]+)`")
_LITERAL = re.compile(r"(?<=\S)::[ \t]*$", re.MULTILINE)


def _role(match: re.Match) -> str:
    short, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


def rewrite(text: str) -> str:
    """The docstring ``text`` with Sphinx roles as code spans and ``::`` as ``:``."""
    return _LITERAL.sub(":", _ROLE.sub(_role, text))


class RobustrankDocs(griffe.Extension):
    """Rewrite Sphinx roles in docstrings; load namespace subfolders of a package."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if not isinstance(pkg.filepath, Path) or pkg.filepath.name != "__init__.py":
            return
        self._load_namespaces(pkg, pkg.filepath.parent, loader)

    # the same hook under its name in griffe 1.x (a second call finds the folders loaded)
    on_package_loaded = on_package

    def _load_namespaces(self, parent: griffe.Module, folder: Path, loader) -> None:
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
            if sub.name in parent.members or not sub.name.isidentifier():
                continue
            if (sub / "__init__.py").exists() or not any(sub.glob("*.py")):
                continue
            namespace = griffe.Module(
                sub.name,
                filepath=[sub],
                parent=parent,
                lines_collection=loader.lines_collection,
                modules_collection=loader.modules_collection,
            )
            parent.set_member(sub.name, namespace)
            for path in sorted(sub.glob("*.py")):
                code = path.read_text(encoding="utf-8-sig")
                loader.lines_collection[path] = code.splitlines(keepends=False)
                module = griffe.visit(
                    path.stem,
                    filepath=path,
                    code=code,
                    extensions=loader.extensions,
                    parent=namespace,
                    docstring_parser=loader.docstring_parser,
                    docstring_options=loader.docstring_options,
                    lines_collection=loader.lines_collection,
                    modules_collection=loader.modules_collection,
                )
                namespace.set_member(path.stem, module)
