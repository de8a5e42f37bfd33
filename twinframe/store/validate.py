"""Checks every reader runs before it trusts a byte of a file: the kind of a path (regular file,
directory, FIFO, device, symlink loop), bounded JSON (UTF-8, depth, duplicate keys, size),
escaping of text taken from a file, finiteness, and the one-line error format
`<file>: <key>: <problem>`.

Limits are fixed here (ours): JSON nested at most 64 deep, metadata JSON at most 16 MiB, a
safetensors header at most 100 MB (the safetensors library's own limit), names of tensors and
tree paths at most 1024 characters, at most 1,000,000 tensors, at most 16 dimensions.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from twinframe.errors import CheckpointError

MAX_JSON_DEPTH = 64
MAX_JSON_BYTES = 16 * 2**20
MAX_HEADER_BYTES = 100_000_000
MAX_NAME = 1024
MAX_TENSORS = 1_000_000
MAX_NDIM = 16
MAX_SHOWN = 120

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def q(text: Any, limit: int = MAX_SHOWN) -> str:
    """Text taken from a file, quoted and escaped repr-style (no newline, no escape code ever
    reaches a terminal), shortened to `limit` characters."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "backslashreplace")
    s = repr(str(text))
    return s if len(s) <= limit else s[: limit - 4] + "...'"


def an(word: Any) -> str:
    """'an int', 'a str': the article for a type or kind name."""
    w = str(word)
    return f"{'an' if w[:1].lower() in 'aeiou' else 'a'} {w}"


def show(path: str | Path) -> str:
    """A path as the user gave it; escaped only when it holds unprintable characters."""
    s = str(path)
    return s if s.isprintable() else q(s, 400)


def one_line(text: str, limit: int = 2000) -> str:
    """Any message made safe for one terminal line: escape sequences and control characters
    escaped (repr-style), shortened."""
    out = []
    for ch in str(text):
        if ch.isprintable() or ch == " ":
            out.append(ch)
        else:
            out.append(repr(ch)[1:-1])
    s = "".join(out)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def first_line(e: BaseException) -> str:
    """The first line of an exception text with terminal escapes removed, escaped, short."""
    text = _ANSI.sub("", str(e)).strip().splitlines()
    return one_line(text[0] if text else type(e).__name__, 200)


def fail(path: str | Path, problem: str, key: Any = None) -> CheckpointError:
    """`<file>: <key>: <problem>` (the key quoted and escaped) as a CheckpointError."""
    where = show(path) if key is None else f"{show(path)}: {q(key)}"
    return CheckpointError(f"{where}: {problem}")


# ----------------------------------------------------------------------------------------------
# path kinds


def kind(path: str | Path) -> str:
    """'file', 'directory', 'missing', 'FIFO', 'socket', 'character device', 'block device',
    'symlink loop', 'dangling symlink', 'unreadable path' (following links)."""
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symlink loop"
        if e.errno == errno.ENOENT:
            return "dangling symlink" if os.path.islink(path) else "missing"
        if e.errno == errno.ENOTDIR:
            return "missing"
        if e.errno == errno.ENAMETOOLONG:
            return "name too long"
        return "unreadable path"
    return _kind_of_mode(st.st_mode)


def _kind_of_mode(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    return "special file"


def _refuse_kind(path: str | Path, k: str, want: str) -> CheckpointError:
    if k == "missing":
        return fail(path, "no such file or directory")
    if k == "dangling symlink":
        return fail(path, "is a symbolic link to a path that does not exist")
    if k == "symlink loop":
        return fail(path, "is a symbolic link loop")
    return fail(path, f"is {an(k)}, not {want}")


def require_file(path: str | Path, what: str = "a regular file") -> None:
    k = kind(path)
    if k != "file":
        raise _refuse_kind(path, k, what)


def require_dir(path: str | Path, what: str = "a directory") -> None:
    k = kind(path)
    if k != "directory":
        raise _refuse_kind(path, k, what)


def open_file(path: str | Path, what: str = "a regular file"):
    """Open for binary reading without ever blocking: O_NONBLOCK (a FIFO opens at once), then
    the opened descriptor must be a regular file (no race between check and open)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        k = kind(path)
        if k != "file":
            raise _refuse_kind(path, k, what) from None
        raise fail(path, f"cannot open ({e.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refuse_kind(path, _kind_of_mode(st.st_mode), what)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_small(path: str | Path, limit: int = MAX_JSON_BYTES, what: str = "a regular file"
               ) -> bytes:
    with open_file(path, what) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise fail(path, f"larger than {limit} bytes")
    return data


# ----------------------------------------------------------------------------------------------
# JSON


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)


def json_depth(raw: bytes) -> int:
    """Nesting depth of JSON text (strings skipped), without recursion."""
    stripped = _STRING.sub(b"", raw)
    depth = best = 0
    for ch in stripped.translate(None, delete=bytes(set(range(256)) - set(b"[]{}"))):
        if ch in (0x5B, 0x7B):
            depth += 1
            best = max(best, depth)
        else:
            depth -= 1
    return best


def _no_dup(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads(raw: bytes | str, path: str | Path, key: Any = None, what: str = "JSON",
          max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Strict JSON: UTF-8, at most `max_depth` deep, no duplicate keys, no NaN/Infinity."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise fail(path, f"{what} is not UTF-8 (byte {e.start})", key) from None
    depth = json_depth(raw)
    if depth > max_depth:
        raise fail(path, f"{what} is nested {depth} deep (at most {max_depth})", key)
    try:
        return json.loads(text, object_pairs_hook=_no_dup, parse_constant=_no_constant)
    except _DuplicateKey as e:
        raise fail(path, f"{what} names {q(e.key)} twice", key) from None
    except (ValueError, RecursionError) as e:
        raise fail(path, f"{what} is not valid JSON ({first_line(e)})", key) from None


def loads_object(raw: bytes | str, path: str | Path, key: Any = None, what: str = "JSON"
                 ) -> dict[str, Any]:
    obj = loads(raw, path, key, what)
    if not isinstance(obj, dict):
        raise fail(path, f"{what} is a JSON {type(obj).__name__}, not an object", key)
    return obj


def check_depth(obj: Any, path: str | Path, key: Any = None, max_depth: int = MAX_JSON_DEPTH
                ) -> None:
    """Nesting depth of an in-memory value (from a pickle), iteratively."""
    stack = [(obj, 1)]
    while stack:
        x, d = stack.pop()
        if isinstance(x, Mapping | list | tuple):
            if d > max_depth:
                raise fail(path, f"value nested more than {max_depth} deep", key)
            stack.extend((v, d + 1) for v in (x.values() if isinstance(x, Mapping) else x))


# ----------------------------------------------------------------------------------------------
# values


def nonfinite(state: Mapping[str, Any]) -> tuple[int, int, str | None]:
    """(values, tensors, first key) of NaN/Inf over float arrays."""
    n_vals = n_tensors = 0
    first = None
    for k, v in state.items():
        x = np.asarray(v)
        if x.dtype.kind != "f" and x.dtype.name not in ("bfloat16", "float8_e4m3fn",
                                                         "float8_e5m2"):
            continue
        bad = int(np.count_nonzero(~np.isfinite(x.astype(np.float32, copy=False))))
        if bad:
            n_vals += bad
            n_tensors += 1
            first = first or k
    return n_vals, n_tensors, first


def check_finite(state: Mapping[str, Any], path: str | Path, allow: bool = False,
                 what: str = "") -> None:
    """Refuse NaN/Inf naming the first offending key, unless `allow`."""
    if allow:
        return
    n_vals, n_tensors, first = nonfinite(state)
    if first is not None:
        raise fail(path, f"{what}holds {n_vals} NaN/Inf value(s) in {n_tensors} tensor(s) "
                   "(pass --allow-nonfinite to convert anyway)", first)


def check_name(name: Any, path: str | Path, what: str = "tensor name") -> str:
    if not isinstance(name, str):
        raise fail(path, f"{what} {q(name)} is {an(type(name).__name__)}, not a string")
    if len(name) > MAX_NAME:
        raise fail(path, f"{what} is {len(name)} characters long (at most {MAX_NAME})",
                   name[:40])
    return name


def check_shape(shape: Any, path: str | Path, key: str) -> tuple[int, ...]:
    if not isinstance(shape, list | tuple) or len(shape) > MAX_NDIM or not all(
            type(d) is int and d >= 0 for d in shape):
        raise fail(path, f"shape {q(shape, 60)} is not a list of at most {MAX_NDIM} "
                   "non-negative integers", key)
    return tuple(shape)


def count(shape: Iterable[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n
