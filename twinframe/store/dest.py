"""Where `convert` may write: never over anything twinframe did not write.

Refused outright: `/`, the home directory, the current directory and every directory above
it, any directory holding a source (or above one), a path inside a source directory, the
source itself (by name, symlink or hard link), a symbolic link, a name too long for the file
system, a parent that is a file. An existing destination is refused unless `force`, and even
then only a file or a checkpoint directory that carries twinframe's marker, of the kind being
written, is replaced (by `io.atomic_write`: written beside, then renamed over; the old one is
removed only after the new one is complete). A twinframe checkpoint directory holding anything
besides what twinframe writes (`twinframe.json`, `tree/` or an NNX `state/`) is not replaced
either.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from twinframe.errors import CheckpointError
from twinframe.store import validate as v

DIR_ENTRIES = {"twinframe.json", "tree", "state"}  # orbax checkpoints; Flax NNX ones: state/


def _ancestors(p: Path) -> set[Path]:
    return {p, *p.parents}


def _forms(p: Path) -> set[Path]:
    """The lexical absolute form and the resolved form of a path."""
    out = {Path(os.path.abspath(p))}
    try:
        out.add(Path(os.path.realpath(p)))
    except (OSError, RuntimeError):
        pass
    return out


def check_destination(dst: str | Path, sources: Sequence[str | Path], force: bool,
                      out_is_dir: bool) -> bool:
    """Raise a one-line CheckpointError if `dst` may not be written; True when an existing
    twinframe-written destination is to be replaced (`force`)."""
    raw = str(dst)
    dst = Path(dst)
    if not raw.strip():
        raise CheckpointError("destination is empty")
    _check_names(dst)
    protected: dict[Path, str] = {Path("/"): "the root directory"}
    try:
        home = Path.home()
        for p in _forms(home):
            for a in _ancestors(p):
                protected.setdefault(a, "the home directory" if a == p else
                                     "a directory holding the home directory")
    except (RuntimeError, KeyError):
        pass
    cwd = Path.cwd()
    for p in _forms(cwd):
        for a in _ancestors(p):
            protected.setdefault(a, "the current directory" if a == p else
                                 "a directory holding the current directory")
    for s in sources:
        for p in _forms(Path(s)):
            for a in p.parents:
                protected.setdefault(a, f"a directory holding the source {v.show(s)}")
    for form in _forms(dst):
        if form in protected:
            raise v.fail(dst, f"is {protected[form]}: refused (name a new file or directory)")
        for s in sources:
            for sp in _forms(Path(s)):
                if form == sp:
                    raise v.fail(dst, "is the source: refused")
                if sp in form.parents:
                    raise v.fail(dst, f"is inside the source {v.show(s)}: refused")
    if os.path.lexists(dst):
        return _existing(dst, sources, force, out_is_dir)
    _check_parent(dst)
    return False


def _check_names(dst: Path) -> None:
    raw = os.fsencode(str(dst))
    if len(raw) >= 4096:
        raise v.fail(dst, f"path is {len(raw)} bytes long (at most 4095)")
    probe = Path(os.path.abspath(dst)).parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        name_max = os.pathconf(probe, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    for part in dst.parts:
        n = len(os.fsencode(part))
        if n > name_max:
            raise v.fail(dst, f"a name in the path is {n} bytes long (this file system allows "
                         f"{name_max})")


def _check_parent(dst: Path) -> None:
    p = Path(os.path.abspath(dst)).parent
    while not os.path.lexists(p):
        p = p.parent
    k = v.kind(p)
    if k != "directory":
        raise v.fail(dst, f"cannot be created: {v.show(p)} is {v.an(k)}, not a directory")
    if not os.access(p, os.W_OK | os.X_OK):
        raise v.fail(dst, f"cannot be created: directory {v.show(p)} is not writable")


def _existing(dst: Path, sources: Sequence[str | Path], force: bool, out_is_dir: bool) -> bool:
    if os.path.islink(dst):
        raise v.fail(dst, "exists as a symbolic link: not replaced")
    for s in sources:
        try:
            if os.path.exists(s) and os.path.samefile(dst, s):
                raise v.fail(dst, "is the source (same file): refused")
        except OSError:
            pass
    k = v.kind(dst)
    if k not in ("file", "directory"):
        raise v.fail(dst, f"exists as a {k}: not replaced")
    if not force:
        raise v.fail(dst, "already exists: refused (pass --force to replace a file or "
                     "checkpoint twinframe wrote)")
    if out_is_dir and k != "directory":
        raise v.fail(dst, "exists as a file, the output is a directory: not replaced")
    if not out_is_dir and k != "file":
        raise v.fail(dst, "exists as a directory, the output is a file: not replaced")
    why = foreign(dst)
    if why:
        raise v.fail(dst, f"{why}: not replaced, even with --force")
    _check_parent(dst)
    return True


def foreign(path: Path) -> str | None:
    """Why an existing path is not one twinframe wrote (None when it carries the marker)."""
    from twinframe.store import readers

    if path.is_dir():
        extra = sorted(set(os.listdir(path)) - DIR_ENTRIES)
        if extra:
            return f"holds {v.q(extra[0])}, which twinframe did not write"
        try:
            meta = v.loads_object(v.read_small(path / "twinframe.json"), path / "twinframe.json")
        except CheckpointError:
            return "is not a checkpoint twinframe wrote"
        return None if str(meta.get("format", "")).startswith("twinframe") else \
            "is not a checkpoint twinframe wrote"
    try:
        p = readers.probe(path)
    except CheckpointError:
        return "is not a file twinframe wrote"
    fmt = str(p.meta.get("format", ""))
    if fmt.startswith("twinframe") or (p.layout == "twinframe" and "model" in p.meta):
        return None
    return "carries no twinframe marker (reference-layout files have none)"
