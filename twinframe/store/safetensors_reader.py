"""A safetensors reader that validates the whole header before it reads a tensor.

The 8-byte length, the header JSON (UTF-8, object, bounded depth, no duplicate names,
`__metadata__` a string -> string object), every entry (known dtype, shape, offsets as two
integers), element counts against byte counts, offsets within the data and neither overlapping
nor leaving bytes uncovered: all checked against the file size first. Tensors are then read
with plain file reads into NumPy arrays (little-endian, bf16 as `ml_dtypes.bfloat16`).
"""

from __future__ import annotations

import dataclasses
import os
import struct
from pathlib import Path

import numpy as np

from twinframe.store import validate as v

DTYPES: dict[str, str] = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?",
}


def np_dtype(name: str) -> np.dtype:
    import ml_dtypes

    spec = DTYPES[name]
    return np.dtype(getattr(ml_dtypes, spec) if spec in _ML_DTYPES else spec)


_ML_DTYPES = ("bfloat16", "float8_e4m3fn", "float8_e5m2")


@dataclasses.dataclass(frozen=True)
class Entry:
    dtype: str            # safetensors name (F32, BF16, ...)
    shape: tuple[int, ...]
    begin: int            # offsets within the data section
    end: int

    @property
    def np_dtype(self) -> np.dtype:
        return np_dtype(self.dtype)


@dataclasses.dataclass(frozen=True)
class Header:
    path: Path
    entries: dict[str, Entry]     # in file order of offsets
    metadata: dict[str, str]
    data_start: int
    file_size: int


def read_header(path: str | Path) -> Header:
    path = Path(path)
    with v.open_file(path, "a safetensors file") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8:
            raise v.fail(path, f"not a safetensors file ({size} bytes: too short for the "
                         "8-byte header length)")
        n = struct.unpack("<Q", head)[0]
        if n > v.MAX_HEADER_BYTES:
            raise v.fail(path, f"header length {n} is over the {v.MAX_HEADER_BYTES}-byte limit")
        if 8 + n > size:
            raise v.fail(path, f"header length {n} runs past the end of the file ({size} bytes)")
        raw = f.read(n)
    if len(raw) != n:
        raise v.fail(path, "file changed while it was read")
    if not raw.lstrip().startswith(b"{"):
        what = "empty" if not raw.strip() else "not a JSON object"
        raise v.fail(path, f"not a safetensors file (header {what})")
    obj = v.loads_object(raw, path, what="header")
    data_size = size - 8 - n
    meta_raw = obj.pop("__metadata__", None)
    metadata: dict[str, str] = {}
    if meta_raw is not None:
        if not isinstance(meta_raw, dict) or not all(
                isinstance(k, str) and isinstance(x, str) for k, x in meta_raw.items()):
            raise v.fail(path, "__metadata__ is not an object of strings")
        metadata = meta_raw
    if len(obj) > v.MAX_TENSORS:
        raise v.fail(path, f"header lists {len(obj)} tensors (at most {v.MAX_TENSORS})")
    entries: dict[str, Entry] = {}
    for name, e in obj.items():
        v.check_name(name, path)
        entries[name] = _entry(path, name, e, data_size)
    _check_layout(path, entries, data_size)
    order = sorted(entries, key=lambda k: (entries[k].begin, entries[k].end))
    return Header(path, {k: entries[k] for k in order}, metadata, 8 + n, size)


def _entry(path: Path, name: str, e: object, data_size: int) -> Entry:
    if not isinstance(e, dict):
        raise v.fail(path, f"header entry is {v.an(type(e).__name__)}, not an object", name)
    extra = sorted(set(e) - {"dtype", "shape", "data_offsets"})
    if extra:
        raise v.fail(path, f"header entry has unknown field {v.q(extra[0])}", name)
    for field in ("dtype", "shape", "data_offsets"):
        if field not in e:
            raise v.fail(path, f"header entry has no {field!r}", name)
    dtype = e["dtype"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise v.fail(path, f"unknown dtype {v.q(dtype, 40)} (known: {', '.join(DTYPES)})", name)
    shape = v.check_shape(e["shape"], path, name)
    offs = e["data_offsets"]
    if not isinstance(offs, list) or len(offs) != 2 or not all(type(o) is int for o in offs):
        raise v.fail(path, f"data_offsets {v.q(offs, 60)} is not two integers", name)
    begin, end = offs
    if not 0 <= begin <= end:
        raise v.fail(path, f"data_offsets [{begin}, {end}] are not 0 <= begin <= end", name)
    if end > data_size:
        raise v.fail(path, f"data_offsets end {end} is past the data ({data_size} bytes)", name)
    want = v.count(shape) * np_dtype(dtype).itemsize
    if end - begin != want:
        raise v.fail(path, f"shape {list(shape)} of {dtype} needs {want} bytes, the offsets "
                     f"give {end - begin}", name)
    return Entry(dtype, shape, begin, end)


def _check_layout(path: Path, entries: dict[str, Entry], data_size: int) -> None:
    pos, prev = 0, None
    for name, e in sorted(entries.items(), key=lambda kv: (kv[1].begin, kv[1].end)):
        if e.begin < pos:
            raise v.fail(path, f"overlaps {v.q(prev)} (bytes {e.begin}..{pos})", name)
        if e.begin > pos:
            raise v.fail(path, f"bytes {pos}..{e.begin} of the data belong to no tensor")
        pos, prev = e.end, name
    if pos != data_size:
        raise v.fail(path, f"bytes {pos}..{data_size} of the data belong to no tensor")


def read_tensors(header: Header, keys: list[str] | None = None) -> dict[str, np.ndarray]:
    """The tensors of a validated header (all, or `keys`), as writable NumPy arrays."""
    path = header.path
    out: dict[str, np.ndarray] = {}
    with v.open_file(path, "a safetensors file") as f:
        if os.fstat(f.fileno()).st_size != header.file_size:
            raise v.fail(path, "file changed while it was read")
        for k in keys if keys is not None else header.entries:
            e = header.entries[k]
            buf = bytearray(e.end - e.begin)
            f.seek(header.data_start + e.begin)
            if f.readinto(buf) != len(buf):
                raise v.fail(path, "file changed while it was read", k)
            out[k] = np.frombuffer(buf, e.np_dtype).reshape(e.shape)
    return out
