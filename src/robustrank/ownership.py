"""Output directories robustrank owns, and exactly what ``--overwrite`` may delete.

Every directory robustrank creates for its outputs (a run, a ``reproduce`` output, a
sweep, a budget study) carries a marker file, ``.robustrank.json``::

    {"tool": "robustrank", "kind": "run", "version": 1, "files": []}

``kind`` names the :class:`OutputKind` that wrote it: the file patterns it writes and the
child directories it creates (each with its own marker). ``files`` lists further outputs
written into the directory by commands such as ``evaluate --out`` (see
:func:`check_files` and :func:`record_files`).

``--overwrite`` (every command that has it goes through :func:`claim_dir` or
:func:`check_files`) deletes, in a directory whose marker names the expected kind:

* the files matching the kind's patterns, and the files its marker lists;
* the child directories matching the kind's child patterns that carry a marker of the
  child kind, by the same rules, recursively;
* directories of the kind's layout (``tables/``, ``runs/<preset>/``) that this leaves empty;

and nothing else. A file or folder robustrank did not write (``.git/``, notes, data) stays
and is named. A directory without a marker, or with another kind's, is refused and nothing
is deleted. A single output file is replaced only if the marker of its directory lists it.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from ._io import atomic_write_text, log

__all__ = [
    "MARKER_FILE",
    "OwnershipError",
    "OutputExistsError",
    "OutputKind",
    "Marker",
    "read_marker",
    "mark",
    "check_dir",
    "claim_dir",
    "read_record",
    "clear_dir",
    "unowned",
    "check_files",
    "record_files",
    "OUTPUT_FILES",
]

MARKER_FILE = ".robustrank.json"
MARKER_VERSION = 1
ATOMIC_TMP = ".*.tmp"  # a write interrupted before its rename (robustrank._io)


class OwnershipError(ValueError):
    """A directory or file is not robustrank's to write into, replace or delete."""


class OutputExistsError(OwnershipError, FileExistsError):
    """An output file exists and ``overwrite`` was not given."""


@dataclass(frozen=True)
class OutputKind:
    """What one kind of output directory holds.

    Attributes:
        name: the kind, as written in the marker (``run``, ``sweep``, ...).
        files: glob patterns, relative to the directory (``tables/*.csv``), of the files
            this kind writes.
        children: glob pattern of a child directory -> its kind (``runs/*/seed-*`` -> run).
            A child is deleted only if it carries a marker of that kind.
        lock: the name of the lock file held while writing (never deleted while held).
    """

    name: str
    files: tuple[str, ...] = ()
    children: Mapping[str, OutputKind] = field(default_factory=dict)
    lock: str | None = None

    def top_level(self) -> frozenset[str]:
        """The names this kind may write directly in its directory (``runs``, ``tables``,
        ``results.json``, ...): what an earlier, unmarked output of it may hold."""
        return frozenset(p.split("/")[0] for p in (*self.files, *self.children))


#: Single files written by commands like ``evaluate --out`` (listed in the marker).
OUTPUT_FILES = OutputKind("outputs")


class Marker(BaseModel):
    """The validated content of ``.robustrank.json``."""

    model_config = ConfigDict(extra="ignore")

    tool: Literal["robustrank"]
    kind: str
    version: Literal[1]
    files: list[str] = []

    @field_validator("files")
    @classmethod
    def _relative_names(cls, names: list[str]) -> list[str]:
        for name in names:
            p = PurePosixPath(name)
            if not name or p.is_absolute() or ".." in p.parts or "\\" in name:
                raise ValueError(f"{name!r} is not a relative path inside the directory")
        return names


# --------------------------------------------------------------------------- marker


def read_marker(directory: str | Path) -> Marker | None:
    """The marker of ``directory``, None without one; an invalid one raises."""
    path = Path(directory) / MARKER_FILE
    if not path.is_file():
        if path.exists() or path.is_symlink():
            raise OwnershipError(f"{path} is not a regular file; it was not written by robustrank")
        return None
    try:
        if path.stat().st_size > 1 << 20:
            raise ValueError("larger than 1 MiB")
        return Marker.model_validate(json.loads(path.read_text("utf-8")))
    except (ValueError, UnicodeDecodeError) as err:
        raise OwnershipError(
            f"{path} is not a valid robustrank marker ({_reason(err)}); robustrank did not write "
            "it, so nothing in the directory is deleted. Choose another output directory"
        ) from None


def _reason(err: Exception) -> str:
    if isinstance(err, ValidationError):
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the file"
        return f"{where}: {first['msg']}"
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def mark(
    directory: str | Path, kind: OutputKind, files: Iterable[str] = (), *, reset: bool = False
) -> Path:
    """Create ``directory`` if needed and mark it as ``kind``'s, listing ``files`` besides
    the files listed before (none with ``reset``)."""
    directory = Path(directory)
    old = read_marker(directory)
    listed = list(old.files) if old is not None and not reset else []
    listed += [f for f in files if f not in listed]
    if old is not None and old.kind != kind.name and kind is not OUTPUT_FILES:
        raise OwnershipError(_other_kind(directory, old, kind))
    name = old.kind if old is not None else kind.name
    record = {"tool": "robustrank", "kind": name, "version": MARKER_VERSION, "files": listed}
    if old is not None and old.model_dump() == record:
        return directory / MARKER_FILE
    directory.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(directory / MARKER_FILE, json.dumps(record, indent=2) + "\n")


# --------------------------------------------------------------------------- layout


def _matches(rel: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(rel, p) for p in patterns)


def _inside_layout(rel: str, kind: OutputKind) -> bool:
    """``rel`` (a directory) is a parent of one of the kind's patterns (``tables``)."""
    parts = rel.split("/")
    for pattern in (*kind.files, *kind.children):
        segs = pattern.split("/")
        if len(segs) > len(parts) and all(fnmatch.fnmatchcase(a, b) for a, b in zip(parts, segs)):
            return True
    return False


def _child_kind(rel: str, kind: OutputKind) -> OutputKind | None:
    for pattern, child in kind.children.items():
        if fnmatch.fnmatchcase(rel, pattern):
            return child
    return None


def _owned_file(rel: str, kind: OutputKind, listed: list[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return (
        rel in listed
        or rel == MARKER_FILE
        or _matches(rel, kind.files)
        or fnmatch.fnmatchcase(name, ATOMIC_TMP)
    )


def _walk(
    root: Path, kind: OutputKind, listed: list[str], delete: bool, rel: str = "", top: bool = True
) -> list[str]:
    """Visit ``root/rel``: delete (or, dry, only find) what ``kind`` owns; return what is
    not robustrank's (relative paths, directories with a trailing ``/``). The marker and
    the lock (held by this process) of the top directory stay."""
    keep = (MARKER_FILE, kind.lock) if top and not rel else (MARKER_FILE,)
    kept: list[str] = []
    for entry in sorted((root / rel).iterdir() if rel else root.iterdir()):
        sub = f"{rel}/{entry.name}" if rel else entry.name
        if entry.is_symlink() or not entry.is_dir():
            if _owned_file(sub, kind, listed):
                if delete and entry.name not in keep:
                    entry.unlink(missing_ok=True)
            else:
                kept.append(sub)
            continue
        child = _child_kind(sub, kind)
        marker = _marker_of(entry, child) if child is not None else None
        if child is not None and marker is not None:
            inner = _walk(entry, child, list(marker.files), delete, top=False)
            kept += [f"{sub}/{k}" for k in inner]
        elif child is None and _inside_layout(sub, kind):
            kept += _walk(root, kind, listed, delete, sub, top)
        else:
            kept.append(f"{sub}/")
            continue
        if delete:
            _remove_if_empty(entry)
    return kept


def _remove_if_empty(directory: Path) -> None:
    """Remove a cleared directory of the layout when nothing but its marker is left."""
    left = [p.name for p in directory.iterdir()]
    if left == [MARKER_FILE]:
        (directory / MARKER_FILE).unlink()
        left = []
    if not left:
        directory.rmdir()


def _marker_of(directory: Path, kind: OutputKind) -> Marker | None:
    """The valid marker of ``directory`` if it names ``kind``, else None."""
    try:
        marker = read_marker(directory)
    except OwnershipError:
        return None
    return marker if marker is not None and marker.kind == kind.name else None


def _listed(directory: Path) -> list[str]:
    marker = read_marker(directory)
    return list(marker.files) if marker is not None else []


def unowned(directory: str | Path, kind: OutputKind) -> list[str]:
    """What in ``directory`` robustrank did not write as ``kind`` (nothing is deleted)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return _walk(directory, kind, _listed(directory), delete=False)


def _shown(entries: list[str], limit: int = 6) -> str:
    return ", ".join(entries[:limit]) + (
        f", ... ({len(entries)} in all)" if len(entries) > limit else ""
    )


def _other_kind(directory: Path, marker: Marker, kind: OutputKind) -> str:
    return (
        f"{directory} is a robustrank {marker.kind!r} directory, not a {kind.name!r} one; "
        "nothing was changed. Choose another output directory"
    )


# --------------------------------------------------------------------------- directories


def check_dir(
    directory: str | Path,
    kind: OutputKind,
    *,
    overwrite: bool = False,
    adopt: Callable[[Path], bool] | None = None,
) -> Marker | None:
    """Refuse ``directory`` unless robustrank may write ``kind``'s outputs there; change
    nothing. Returns its marker (None when it is new, empty or adopted).

    Accepted: a missing or empty directory, one marked as ``kind``, and (without
    ``overwrite``) an unmarked one that ``adopt`` recognises as an output of an earlier
    robustrank. Refused with :class:`OwnershipError`: a file, a directory marked as another
    kind, and any other non-empty directory (the message names what is there).
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise OwnershipError(
            f"{directory} is a file, not a directory; give a directory for the outputs"
        )
    marker = read_marker(directory) if directory.is_dir() else None
    if marker is not None:
        if marker.kind != kind.name:
            raise OwnershipError(_other_kind(directory, marker, kind))
        return marker
    present = [n for n in _names(directory) if n != kind.lock]
    if not present:
        return None
    if adopt is not None and not overwrite and adopt(directory):
        return None
    what = "has no robustrank marker (" + MARKER_FILE + ")"
    raise OwnershipError(
        f"{directory} is not empty ({_shown(present)}) and {what}, so robustrank did not "
        f"create it{' and will not delete anything in it' if overwrite else ''}. Choose a new "
        "or empty output directory"
        + (" (an output of an earlier robustrank: delete it yourself)" if overwrite else "")
    )


def _names(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    return sorted(
        p.name + ("/" if p.is_dir() and not p.is_symlink() else "") for p in directory.iterdir()
    )


def clear_dir(directory: str | Path, kind: OutputKind) -> list[str]:
    """Delete what robustrank wrote in ``directory`` as ``kind`` (see the module docstring);
    return what was kept. The directory must carry ``kind``'s marker."""
    directory = Path(directory)
    marker = read_marker(directory)
    if marker is None or marker.kind != kind.name:
        raise OwnershipError(
            f"{directory} is not marked as a robustrank {kind.name!r} directory; nothing deleted"
        )
    return _walk(directory, kind, list(marker.files), delete=True)


def claim_dir(
    directory: str | Path,
    kind: OutputKind,
    *,
    overwrite: bool = False,
    adopt: Callable[[Path], bool] | None = None,
    conflict: Callable[[], str | None] | None = None,
) -> list[str]:
    """Make ``directory`` ``kind``'s: check it (:func:`check_dir`); refuse what
    ``conflict()`` describes (e.g. another spec's sweep) unless ``overwrite``; with
    ``overwrite`` delete what robustrank wrote there (:func:`clear_dir`, naming what it
    kept); then mark it. Returns the entries kept because robustrank did not write them."""
    directory = Path(directory)
    marker = check_dir(directory, kind, overwrite=overwrite, adopt=adopt)
    problem = conflict() if conflict is not None else None
    if problem and not overwrite:
        raise OwnershipError(f"{problem}; nothing was changed")
    kept = clear_dir(directory, kind) if overwrite and marker is not None else []
    if kept:
        log(f"--overwrite kept {', '.join(kept)} in {directory}: not written by robustrank")
    mark(directory, kind, reset=overwrite)
    return kept


def read_record(path: Path, valid: Callable[[Any], bool], what: str) -> Any:
    """The JSON document at ``path`` (None when there is none); OwnershipError naming the
    file when it is unreadable or ``valid`` refuses it."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text("utf-8"))
    except (ValueError, OSError) as err:
        raise OwnershipError(f"{path} is not {what} ({err}); choose another --out") from None
    if not valid(data):
        raise OwnershipError(f"{path} is not {what}; choose another --out")
    return data


# --------------------------------------------------------------------------- single files


def check_files(paths: Iterable[str | Path | None], *, overwrite: bool = False) -> None:
    """Refuse output files that cannot be written: a directory in the way, an existing
    file without ``overwrite``, or (with it) a file robustrank did not write (one that
    the marker of its directory does not list). Changes nothing."""
    for p in paths:
        if p is None:
            continue
        p = Path(p)
        if p.is_dir():
            raise OwnershipError(f"{p} is a directory; give the path of a file to write")
        if any(d.exists() and not d.is_dir() for d in p.parents):
            raise OwnershipError(
                f"cannot write {p}: {next(d for d in p.parents if d.exists())} is a file, not a "
                "directory; choose another output path"
            )
        if not (p.exists() or p.is_symlink()):
            continue
        if not overwrite:
            raise OutputExistsError(
                f"{p} exists; refusing to overwrite it (pass --overwrite or another path)"
            )
        marker = read_marker(p.parent)
        if marker is None or p.name not in marker.files:
            raise OwnershipError(
                f"{p} exists and robustrank did not write it (its directory's {MARKER_FILE} "
                "does not list it), so --overwrite does not replace it; move it away or "
                "choose another path"
            )


def record_files(paths: Iterable[str | Path | None]) -> None:
    """List written output files in the markers of their directories (creating a marker
    of kind ``outputs`` where there is none), so that ``--overwrite`` may replace them."""
    by_dir: dict[Path, list[str]] = {}
    for p in paths:
        if p is not None:
            p = Path(os.path.abspath(p))
            by_dir.setdefault(p.parent, []).append(p.name)
    for directory, names in by_dir.items():
        mark(directory, OUTPUT_FILES, names)
