"""A corpus of malformed and hostile inputs for `twinframe convert`, built at test time.

Every case builds its inputs inside its own work directory (the current directory of the run;
`HOME` points to a sibling `home/` holding a file of its own) and returns the command line.
`expect="error"`: exit 2, one clean line on stderr naming the file, no traceback, nothing in
the case's tree changed. `expect="ok"`: exit 0 and the case's own `check` passes.

Used by `test_hostile_corpus.py` (in process) and, standalone, to measure any version of the
code in subprocesses (`python tests/store/hostile_corpus.py OUT_DIR`: hangs and memory blowups
become findings instead of a stuck run).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import struct
import zipfile
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import numpy as np

HRM_KEY = "cls_token"


# ----------------------------------------------------------------------------------------------
# base files (built once per session)


@dataclasses.dataclass
class Base:
    dir: Path

    def __getattr__(self, name: str) -> Path:  # base.hrm_st -> dir / files[name]
        if name in FILES:
            return self.dir / FILES[name]
        raise AttributeError(name)


FILES = {
    "hrm_st": "hrm.safetensors",          # twinframe-written (metadata)
    "hrm_ref": "hrm_ref.safetensors",     # public layout: bare keys, no metadata
    "hrm_pt": "hrm.pt",                   # twinframe-written .pt
    "alt_pth": "alt.pth",                 # AltLAS reference: bare state_dict
    "hrm_npz": "hrm.npz",                 # twinframe-written npz
    "alt_npz": "alt.npz",
    "hrm_orbax": "hrm.orbax",             # twinframe-written orbax directory
}


def hrm_state() -> dict[str, np.ndarray]:
    from twinframe.models.hrm import TINY, canonical_init

    return canonical_init(TINY)


def alt_state() -> dict[str, np.ndarray]:
    from twinframe.models import altlas

    return altlas.canonical_init(altlas.PRESETS["tiny"][0], 0)


def hrm_cfg() -> dict:
    from twinframe.models.hrm import TINY

    return TINY.to_dict()


def build_base(d: Path) -> Base:
    import torch
    from safetensors.torch import save_file

    from twinframe.models import altlas
    from twinframe.models.hrm import TINY, layout
    from twinframe.store import io

    d.mkdir(parents=True, exist_ok=True)
    b = Base(d)
    st = hrm_state()
    io.write_torch(b.hrm_st, st, "hrm", TINY.to_dict())
    save_file({k: torch.from_numpy(v) for k, v in st.items()}, str(b.hrm_ref))
    io.write_torch(b.hrm_pt, st, "hrm", TINY.to_dict())
    torch.save({k: torch.from_numpy(v) for k, v in alt_state().items()}, b.alt_pth)
    tree = layout(TINY).table.torch_to_tree(st)
    io.write_jax(b.hrm_npz, tree, "hrm", TINY.to_dict())
    io.write_jax(b.hrm_orbax, tree, "hrm", TINY.to_dict())
    acfg = altlas.PRESETS["tiny"][0]
    io.write_jax(b.alt_npz, altlas.layout(acfg).table.torch_to_tree(alt_state()), "altlas",
                 acfg.to_dict())
    return b


def copy(src: Path, dst: Path) -> Path:
    if src.is_dir():
        shutil.copytree(src, dst, symlinks=True)
    else:
        shutil.copyfile(src, dst)
    return dst


# ----------------------------------------------------------------------------------------------
# raw format builders


ST_DTYPE = {"float32": "F32", "int64": "I64", "float16": "F16"}


def st_bytes(tensors: dict[str, np.ndarray], metadata: dict | None = None) -> bytes:
    """A well-formed safetensors file, written here (not by the library under test)."""
    header: dict = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    data, off = b"", 0
    for k, v in tensors.items():
        raw = np.ascontiguousarray(v).tobytes()
        header[k] = {"dtype": ST_DTYPE[v.dtype.name], "shape": list(v.shape),
                     "data_offsets": [off, off + len(raw)]}
        data += raw
        off += len(raw)
    return st_raw(json.dumps(header).encode(), data)


def st_raw(header: bytes, data: bytes, n: int | None = None) -> bytes:
    pad = (-len(header)) % 8
    header += b" " * pad
    return struct.pack("<Q", len(header) if n is None else n) + header + data


def st_parts(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def st_with_header(base: Path, edit: Callable[[dict], object]) -> bytes:
    header, data = st_parts(base)
    edit(header)
    return st_raw(json.dumps(header).encode(), data)


def npy_bytes(a: np.ndarray) -> bytes:
    f = BytesIO()
    np.lib.format.write_array(f, a, allow_pickle=True)
    return f.getvalue()


def npz_bytes(members: dict[str, bytes], compress: bool = False) -> bytes:
    f = BytesIO()
    mode = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(f, "w", mode) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return f.getvalue()


def npz_members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def meta_blob(obj_or_bytes) -> bytes:
    raw = obj_or_bytes if isinstance(obj_or_bytes, bytes) else json.dumps(obj_or_bytes).encode()
    return npy_bytes(np.frombuffer(raw, np.uint8))


def patch_zip_sizes(raw: bytes, member_suffix: bytes, size: int) -> bytes:
    """Make the central directory (and local header) of one member claim `size` bytes."""
    out = bytearray(raw)
    for sig, name_len_at, size_at, name_at in ((b"PK\x01\x02", 28, 24, 46),
                                                (b"PK\x03\x04", 26, 22, 30)):
        i = out.find(sig)
        while i >= 0:
            nlen = struct.unpack("<H", out[i + name_len_at:i + name_len_at + 2])[0]
            name = bytes(out[i + name_at:i + name_at + nlen])
            if name.endswith(member_suffix):
                out[i + size_at:i + size_at + 4] = struct.pack("<I", size)
            i = out.find(sig, i + 4)
    return bytes(out)


def torch_bytes(obj, **kw) -> bytes:
    import torch

    f = BytesIO()
    torch.save(obj, f, **kw)
    return f.getvalue()


def replace_zip_member(raw: bytes, suffix: str, data: bytes) -> bytes:
    src = zipfile.ZipFile(BytesIO(raw))
    f = BytesIO()
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
        for info in src.infolist():
            z.writestr(info, data if info.filename.endswith(suffix) else src.read(info))
    return f.getvalue()


def tstate(state: dict[str, np.ndarray]) -> dict:
    import torch

    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}


def tw_pt(state: dict, config=None, model_name="hrm") -> dict:
    return {"model": state, "model_name": model_name,
            "config": json.dumps(hrm_cfg()) if config is None else config}


class Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


# ----------------------------------------------------------------------------------------------
# cases


@dataclasses.dataclass
class Case:
    cls: str
    name: str
    build: Callable[[Path, Base], list[str]]
    expect: str = "error"
    check: Callable[[Path], str | None] | None = None
    skip_before: str = ""  # never run against old code (why)
    needs_unprivileged: bool = False


CASES: list[Case] = []


def case(cls: str, name: str, expect: str = "error", check=None, skip_before: str = "",
         needs_unprivileged: bool = False):
    def deco(fn):
        CASES.append(Case(cls, name, fn, expect, check, skip_before, needs_unprivileged))
        return fn
    return deco


def conv(src: str, dst: str = "out.npz", *flags: str) -> list[str]:
    return ["convert", src, dst, *flags]


def write(p: Path, data: bytes) -> str:
    p.write_bytes(data)
    return p.name


# --- destinations ------------------------------------------------------------------------------

def _bystanders(w: Path, b: Base) -> None:
    copy(b.hrm_st, w / "src.safetensors")
    (w / "notes.txt").write_text("my other work\n")
    (w / "results").mkdir()
    (w / "results" / "run1.csv").write_text("a,b\n1,2\n")


@case("destination", "dot")
def _(w, b):
    _bystanders(w, b)
    return conv("src.safetensors", ".")


@case("destination", "dotdot")
def _(w, b):
    _bystanders(w, b)
    return conv("src.safetensors", "..")


@case("destination", "root", skip_before="the code under test would rmtree('/')")
def _(w, b):
    _bystanders(w, b)
    return conv("src.safetensors", "/")


@case("destination", "home")
def _(w, b):
    _bystanders(w, b)
    return conv("src.safetensors", os.environ["HOME"])


@case("destination", "dir holding the source (absolute)")
def _(w, b):
    _bystanders(w, b)
    (w / "sub").mkdir()
    copy(b.hrm_st, w / "sub" / "m.safetensors")
    return conv("sub/m.safetensors", str((w / "sub").resolve()))


@case("destination", "dir holding the source (sub/..)")
def _(w, b):
    _bystanders(w, b)
    return conv("src.safetensors", "results/..")


@case("destination", "existing unrelated directory")
def _(w, b):
    _bystanders(w, b)
    (w / "out.orbax").mkdir()
    (w / "out.orbax" / "thesis.tex").write_text("chapter 1\n")
    return conv("src.safetensors", "out.orbax")


@case("destination", "existing unrelated directory, --force")
def _(w, b):
    _bystanders(w, b)
    (w / "out.orbax").mkdir()
    (w / "out.orbax" / "thesis.tex").write_text("chapter 1\n")
    return conv("src.safetensors", "out.orbax", "--force")


@case("destination", "existing unrelated file")
def _(w, b):
    _bystanders(w, b)
    (w / "out.npz").write_bytes(b"not mine")
    return conv("src.safetensors", "out.npz")


@case("destination", "existing unrelated file, --force")
def _(w, b):
    _bystanders(w, b)
    (w / "out.npz").write_bytes(b"not mine")
    return conv("src.safetensors", "out.npz", "--force")


@case("destination", "existing unrelated .safetensors (not twinframe's), --force")
def _(w, b):
    _bystanders(w, b)
    copy(b.hrm_ref, w / "out.safetensors")
    copy(b.hrm_npz, w / "in.npz")
    return conv("in.npz", "out.safetensors", "--force")


@case("destination", "existing twinframe file, no --force")
def _(w, b):
    _bystanders(w, b)
    copy(b.hrm_npz, w / "out.npz")
    return conv("src.safetensors", "out.npz")


def _replaced_npz(w: Path) -> str | None:
    from twinframe.store import io

    _, meta = io.read_jax(w / "out.npz")
    leftovers = [p.name for p in w.iterdir() if p.name.startswith(".")]
    if leftovers:
        return f"temp files left: {leftovers}"
    return None if meta.get("model") == "altlas" else f"not replaced: {meta.get('model')}"


@case("destination", "existing twinframe file, --force", expect="ok", check=_replaced_npz)
def _(w, b):
    (w / "notes.txt").write_text("x")
    copy(b.hrm_npz, w / "out.npz")
    copy(b.alt_pth, w / "alt.pth")
    return conv("alt.pth", "out.npz", "--force")


def _replaced_orbax(w: Path) -> str | None:
    meta = json.loads((w / "out.orbax" / "twinframe.json").read_text())
    if meta.get("model") != "altlas":
        return "not replaced"
    if sorted(p.name for p in w.iterdir()) != ["alt.pth", "out.orbax"]:
        return f"unexpected entries {sorted(p.name for p in w.iterdir())}"
    return None


@case("destination", "existing twinframe orbax dir, --force", expect="ok", check=_replaced_orbax)
def _(w, b):
    copy(b.hrm_orbax, w / "out.orbax")
    copy(b.alt_pth, w / "alt.pth")
    return conv("alt.pth", "out.orbax", "--force")


@case("destination", "twinframe orbax dir holding a user file, --force")
def _(w, b):
    _bystanders(w, b)
    copy(b.hrm_orbax, w / "out.orbax")
    (w / "out.orbax" / "my_notes.md").write_text("keep me\n")
    return conv("src.safetensors", "out.orbax", "--force")


@case("destination", "destination is the source")
def _(w, b):
    _bystanders(w, b)
    return conv("src.safetensors", "src.safetensors", "--force")


@case("destination", "destination is a symlink to the source, --force")
def _(w, b):
    copy(b.hrm_npz, w / "src.npz")
    os.symlink("src.npz", w / "link.npz")
    return conv("src.npz", "link.npz", "--force")


@case("destination", "destination is a hard link to the source, --force")
def _(w, b):
    copy(b.hrm_st, w / "src.safetensors")
    os.link(w / "src.safetensors", w / "hard.safetensors")
    return conv("src.safetensors", "hard.safetensors", "--force")


@case("destination", "parent is a file")
def _(w, b):
    _bystanders(w, b)
    return conv("src.safetensors", "notes.txt/out.npz")


@case("destination", "parent is read-only", needs_unprivileged=True)
def _(w, b):
    _bystanders(w, b)
    (w / "ro").mkdir()
    os.chmod(w / "ro", 0o555)
    return conv("src.safetensors", "ro/out.npz")


@case("destination", "existing file where a directory is written, --force")
def _(w, b):
    _bystanders(w, b)
    copy(b.hrm_npz, w / "out.orbax")
    return conv("src.safetensors", "out.orbax", "--force")


@case("destination", "existing directory where a file is written, --force")
def _(w, b):
    _bystanders(w, b)
    copy(b.hrm_orbax, w / "out.npz")
    return conv("src.safetensors", "out.npz", "--force")


def _long_ok(w: Path) -> str | None:
    names = [p.name for p in w.iterdir() if len(p.name) >= 250]
    return None if len(names) == 1 else f"long outputs: {len(names)}"


@case("destination", "250-character .npz name", expect="ok", check=_long_ok)
def _(w, b):
    copy(b.hrm_st, w / "src.safetensors")
    return conv("src.safetensors", "n" * 246 + ".npz")


@case("destination", "250-character orbax directory name", expect="ok", check=_long_ok)
def _(w, b):
    copy(b.hrm_st, w / "src.safetensors")
    return conv("src.safetensors", "d" * 250)


@case("destination", "300-character name")
def _(w, b):
    _bystanders(w, b)
    return conv("src.safetensors", "n" * 296 + ".npz")


@case("destination", "dangling symlink")
def _(w, b):
    _bystanders(w, b)
    os.symlink("nowhere.npz", w / "out.npz")
    return conv("src.safetensors", "out.npz", "--force")


@case("destination", "inside the source orbax directory")
def _(w, b):
    copy(b.hrm_orbax, w / "src.orbax")
    return conv("src.orbax", "src.orbax/inner.safetensors")


@case("destination", "missing parent directories are created", expect="ok",
      check=lambda w: None if (w / "a" / "b" / "out.npz").is_file() else "no output")
def _(w, b):
    copy(b.hrm_st, w / "src.safetensors")
    return conv("src.safetensors", "a/b/out.npz")


# --- safetensors -------------------------------------------------------------------------------

@case("safetensors", "empty file")
def _(w, b):
    return conv(write(w / "x.safetensors", b""))


@case("safetensors", "shorter than the length prefix")
def _(w, b):
    return conv(write(w / "x.safetensors", b"\x10\x00\x00"))


@case("safetensors", "header length beyond the file")
def _(w, b):
    return conv(write(w / "x.safetensors", st_raw(b"{}", b"", n=10_000)))


@case("safetensors", "header length 2**63")
def _(w, b):
    return conv(write(w / "x.safetensors", st_raw(b"{}", b"", n=2**63)))


@case("safetensors", "header not JSON")
def _(w, b):
    return conv(write(w / "x.safetensors", st_raw(b"{not json", b"")))


@case("safetensors", "header JSON not an object")
def _(w, b):
    return conv(write(w / "x.safetensors", st_raw(b"[1, 2, 3]", b"")))


@case("safetensors", "header not UTF-8")
def _(w, b):
    return conv(write(w / "x.safetensors", st_raw(b'{"\xff\xfe": 1}', b"")))


@case("safetensors", "header nested 100000 deep")
def _(w, b):
    return conv(write(w / "x.safetensors",
                      st_raw(b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", b"")))


@case("safetensors", "duplicate tensor name")
def _(w, b):
    header, data = st_parts(b.hrm_ref)
    text = json.dumps(header)
    entry = json.dumps({"cls_token": header["cls_token"]})[1:-1]
    return conv(write(w / "x.safetensors", st_raw(("{" + entry + ", " + text[1:]).encode(),
                                                  data)))


@case("safetensors", "offsets beyond the data")
def _(w, b):
    def edit(h):
        h["cls_token"]["data_offsets"][1] += 10**9
    return conv(write(w / "x.safetensors", st_with_header(b.hrm_ref, edit)))


@case("safetensors", "overlapping tensors")
def _(w, b):
    def edit(h):
        h["initial_low_level"]["data_offsets"] = list(h["initial_high_level"]["data_offsets"])
    return conv(write(w / "x.safetensors", st_with_header(b.hrm_ref, edit)))


@case("safetensors", "trailing bytes not covered by any tensor")
def _(w, b):
    return conv(write(w / "x.safetensors", b.hrm_ref.read_bytes() + b"\x00" * 64))


@case("safetensors", "unknown dtype")
def _(w, b):
    def edit(h):
        h["cls_token"]["dtype"] = "F128"
    return conv(write(w / "x.safetensors", st_with_header(b.hrm_ref, edit)))


@case("safetensors", "element count does not match byte count")
def _(w, b):
    def edit(h):
        h["cls_token"]["shape"] = [16]
    return conv(write(w / "x.safetensors", st_with_header(b.hrm_ref, edit)))


@case("safetensors", "negative and non-integer shape entries")
def _(w, b):
    def edit(h):
        h["cls_token"]["shape"] = [-32, 1.5]
    return conv(write(w / "x.safetensors", st_with_header(b.hrm_ref, edit)))


@case("safetensors", "shape claims 2**40 elements")
def _(w, b):
    def edit(h):
        h["cls_token"]["shape"] = [2**20, 2**20]
    return conv(write(w / "x.safetensors", st_with_header(b.hrm_ref, edit)))


@case("safetensors", "tensor entry not an object")
def _(w, b):
    def edit(h):
        h["cls_token"] = "F32"
    return conv(write(w / "x.safetensors", st_with_header(b.hrm_ref, edit)))


@case("safetensors", "data_offsets of the wrong length")
def _(w, b):
    def edit(h):
        h["cls_token"]["data_offsets"] = [0]
    return conv(write(w / "x.safetensors", st_with_header(b.hrm_ref, edit)))


@case("safetensors", "__metadata__ not an object")
def _(w, b):
    def edit(h):
        h["__metadata__"] = ["twinframe"]
    return conv(write(w / "x.safetensors", st_with_header(b.hrm_ref, edit)))


def _meta_case(config_text: str, fmt: str = "twinframe/hrm/1"):
    def build(w, b):
        def edit(h):
            h["__metadata__"] = {"format": fmt, "config": config_text}
        return conv(write(w / "x.safetensors", st_with_header(b.hrm_ref, edit)))
    return build


case("safetensors", "metadata config not JSON")(_meta_case("{num_layers: 2"))
case("safetensors", "metadata config not an object")(_meta_case("[2, 32]"))
case("safetensors", "metadata config nested 50000 deep")(
    _meta_case('{"a": ' + "[" * 50_000 + "]" * 50_000 + "}"))
case("safetensors", "metadata config claims a million layers")(
    _meta_case(json.dumps({**hrm_cfg(), "num_layers": 1_000_000})))
case("safetensors", "metadata config of the wrong field type")(
    _meta_case(json.dumps({**hrm_cfg(), "num_layers": "2"})))
case("safetensors", "metadata config with an escape-code field name")(
    _meta_case(json.dumps({**hrm_cfg(), "\x1b[2J\nboom": 1})))
case("safetensors", "metadata names a model with escape codes")(
    _meta_case(json.dumps(hrm_cfg()), fmt="twinframe/\x1b[31mevil\nline/1"))
case("safetensors", "metadata config disagrees with the tensor shapes")(
    _meta_case(json.dumps({**hrm_cfg(), "num_layers": 3})))
case("safetensors", "metadata names the other model")(
    _meta_case(json.dumps(hrm_cfg()), fmt="twinframe/altlas/1"))


@case("safetensors", "tensor names with newline and escape codes")
def _(w, b):
    return conv(write(w / "x.safetensors", st_bytes(
        {"\x1b[31mred\nTraceback (most recent call last):": np.zeros(4, np.float32)})))


@case("safetensors", "NaN weight")
def _(w, b):
    st = hrm_state()
    st["output_head.weight"][3, 4] = np.nan
    return conv(write(w / "x.safetensors", st_bytes(st)))


@case("safetensors", "Inf weight")
def _(w, b):
    st = hrm_state()
    st["cls_token"][0] = np.inf
    return conv(write(w / "x.safetensors", st_bytes(st)))


@case("safetensors", "NaN weight with --allow-nonfinite", expect="ok",
      check=lambda w: None if (w / "out.npz").is_file() else "no output")
def _(w, b):
    st = hrm_state()
    st["output_head.weight"][3, 4] = np.nan
    return conv(write(w / "x.safetensors", st_bytes(st)), "out.npz", "--allow-nonfinite")


@case("safetensors", "int64 tensor where float weights belong")
def _(w, b):
    st = hrm_state()
    st["cls_token"] = np.zeros(32, np.int64)
    return conv(write(w / "x.safetensors", st_bytes(st)))


@case("safetensors", "a directory named x.safetensors")
def _(w, b):
    (w / "x.safetensors").mkdir()
    return conv("x.safetensors")


@case("safetensors", "a FIFO named x.safetensors")
def _(w, b):
    os.mkfifo(w / "x.safetensors")
    return conv("x.safetensors")


@case("safetensors", "a symlink loop")
def _(w, b):
    os.symlink("x.safetensors", w / "x.safetensors")
    return conv("x.safetensors")


@case("safetensors", "a character device (/dev/zero)")
def _(w, b):
    os.symlink("/dev/zero", w / "x.safetensors")
    return conv("x.safetensors")


@case("safetensors", "no such file")
def _(w, b):
    return conv("absent.safetensors")


@case("safetensors", "truncated data")
def _(w, b):
    return conv(write(w / "x.safetensors", b.hrm_ref.read_bytes()[:-1000]))


@case("safetensors", "keys of no registered model")
def _(w, b):
    return conv(write(w / "x.safetensors", st_bytes({"encoder.weight": np.zeros((4, 4),
                                                                                   np.float32)})))


@case("safetensors", "one key missing")
def _(w, b):
    st = hrm_state()
    del st["q_act_head.bias"]
    return conv(write(w / "x.safetensors", st_bytes(st)))


# --- .pt / .pth --------------------------------------------------------------------------------

def _no_pwned(w: Path) -> str | None:
    return "code ran" if (w / "pwned").exists() else None


@case("pt", "raw pickle that runs code")
def _(w, b):
    import pickle

    return conv(write(w / "x.pt", pickle.dumps({"model": Evil()})))


@case("pt", "torch zip whose pickle runs code")
def _(w, b):
    return conv(write(w / "x.pt", torch_bytes({"model": Evil()})))


@case("pt", "a whole nn.Module (global not allowed)")
def _(w, b):
    import torch

    return conv(write(w / "x.pt", torch_bytes(torch.nn.Linear(2, 2))))


@case("pt", "escape codes in the rejected global's name")
def _(w, b):
    raw = torch_bytes({"model": Evil()})
    name = next(n for n in zipfile.ZipFile(BytesIO(raw)).namelist() if n.endswith("data.pkl"))
    pkl = zipfile.ZipFile(BytesIO(raw)).read(name).replace(b"posix\nsystem", b"po\x1bix\nsystem")
    return conv(write(w / "x.pt", replace_zip_member(raw, name, pkl)))


@case("pt", "not a zip and not a pickle")
def _(w, b):
    return conv(write(w / "x.pt", b"hello, I am not a checkpoint\n" * 10))


@case("pt", "truncated zip")
def _(w, b):
    return conv(write(w / "x.pt", b.hrm_pt.read_bytes()[:3000]))


@case("pt", "zip directory claims 4 GB for data.pkl")
def _(w, b):
    return conv(write(w / "x.pt", patch_zip_sizes(b.hrm_pt.read_bytes(), b"data.pkl",
                                                  0xFFFFFFF0)))


def _pt_with(mutate):
    def build(w, b):
        st = tstate(hrm_state())
        mutate(st)
        return conv(write(w / "x.pt", torch_bytes(tw_pt(st))))
    return build


def _sparse(st):
    st["cls_token"] = st["cls_token"].to_sparse()


def _meta_t(st):
    import torch

    st["cls_token"] = torch.zeros(32, device="meta")


def _quant(st):
    import torch

    st["cls_token"] = torch.quantize_per_tensor(st["cls_token"], 0.1, 0, torch.qint8)


def _complex(st):
    import torch

    st["cls_token"] = torch.zeros(32, dtype=torch.complex64)


def _stringval(st):
    st["cls_token"] = "a string"


def _intkey(st):
    st[7] = st.pop("cls_token")


def _nan(st):
    st["q_act_head.weight"][1, 2] = float("nan")


case("pt", "sparse tensor")(_pt_with(_sparse))
case("pt", "meta tensor")(_pt_with(_meta_t))
case("pt", "quantized tensor")(_pt_with(_quant))
case("pt", "complex tensor")(_pt_with(_complex))
case("pt", "string where a tensor belongs")(_pt_with(_stringval))
case("pt", "integer state-dict key")(_pt_with(_intkey))
case("pt", "NaN weight")(_pt_with(_nan))


@case("pt", "top level is a list")
def _(w, b):
    return conv(write(w / "x.pt", torch_bytes([1, 2, 3])))


@case("pt", "empty dict")
def _(w, b):
    return conv(write(w / "x.pt", torch_bytes({})))


@case("pt", "config not JSON")
def _(w, b):
    return conv(write(w / "x.pt", torch_bytes(tw_pt(tstate(hrm_state()), config="{oops"))))


@case("pt", "config nested 50000 deep")
def _(w, b):
    deep = '{"a": ' + "[" * 50_000 + "]" * 50_000 + "}"
    return conv(write(w / "x.pt", torch_bytes(tw_pt(tstate(hrm_state()), config=deep))))


@case("pt", "config claims a million layers")
def _(w, b):
    cfg = json.dumps({**hrm_cfg(), "num_layers": 1_000_000})
    return conv(write(w / "x.pt", torch_bytes(tw_pt(tstate(hrm_state()), config=cfg))))


@case("pt", "model name with escape codes")
def _(w, b):
    return conv(write(w / "x.pt", torch_bytes(tw_pt(tstate(hrm_state()),
                                                   model_name="\x1b]0;pwn\x07\nhrm"))))


@case("pt", "pickle nested 100000 deep")
def _(w, b):
    raw = torch_bytes({"model": {}, "config": "{}"})
    deep = b"\x80\x02" + b"]" * 100_000 + b"a" * 99_999 + b"."
    name = next(n for n in zipfile.ZipFile(BytesIO(raw)).namelist() if n.endswith("data.pkl"))
    return conv(write(w / "x.pt", replace_zip_member(raw, name, deep)))


@case("pt", "legacy (pre-zip) torch format")
def _(w, b):
    return conv(write(w / "x.pt", torch_bytes(tstate(hrm_state()),
                                              _use_new_zipfile_serialization=False)))


@case("pt", "AltLAS state_dict with an unknown vocabulary size")
def _(w, b):
    st = alt_state()
    st["embedding.weight"] = np.zeros((50, 16), np.float32)
    st["fc.weight"] = np.zeros((50, 32), np.float32)
    st["fc.bias"] = np.zeros(50, np.float32)
    return conv(write(w / "x.pth", torch_bytes(tstate(st))))


@case("pt", "AltLAS Variant B (positional_encoding)")
def _(w, b):
    st = alt_state()
    st["positional_encoding"] = np.zeros((1, 16), np.float32)
    return conv(write(w / "x.pth", torch_bytes(tstate(st))))


@case("pt", "AltLAS state_dict with a NaN")
def _(w, b):
    st = alt_state()
    st["fc.bias"][5] = np.nan
    return conv(write(w / "x.pth", torch_bytes(tstate(st))))


@case("pt", "a directory named x.pt")
def _(w, b):
    (w / "x.pt").mkdir()
    return conv("x.pt")


@case("pt", "a FIFO named x.pth")
def _(w, b):
    os.mkfifo(w / "x.pth")
    return conv("x.pth")


# --- npz ---------------------------------------------------------------------------------------

@case("npz", "empty npz")
def _(w, b):
    return conv(write(w / "x.npz", npz_bytes({})), "out.safetensors")


@case("npz", "member claims terabytes")
def _(w, b):
    m = npz_members(b.hrm_npz)
    fake = BytesIO()
    np.lib.format.write_array_header_1_0(fake, {"descr": "<f4", "fortran_order": False,
                                               "shape": (2**40,)})
    m["params/cls_token.npy"] = fake.getvalue() + b"\x00" * 128
    return conv(write(w / "x.npz", npz_bytes(m)), "out.safetensors")


@case("npz", "zip directory lies about a member's size")
def _(w, b):
    return conv(write(w / "x.npz", patch_zip_sizes(b.hrm_npz.read_bytes(), b"cls_token.npy",
                                                   0xFFFFFFF0)), "out.safetensors")


@case("npz", "conflicting tree paths")
def _(w, b):
    m = npz_members(b.hrm_npz)
    m["params/cls_token/extra.npy"] = npy_bytes(np.zeros(2, np.float32))
    return conv(write(w / "x.npz", npz_bytes(m)), "out.safetensors")


def _npz_meta(blob: bytes):
    def build(w, b):
        m = npz_members(b.hrm_npz)
        m["__twinframe__.npy"] = blob
        return conv(write(w / "x.npz", npz_bytes(m)), "out.safetensors")
    return build


case("npz", "metadata not JSON")(_npz_meta(meta_blob(b"{model: hrm")))
case("npz", "metadata not UTF-8")(_npz_meta(meta_blob(b'{"model": "\xff"}')))
case("npz", "metadata not an object")(_npz_meta(meta_blob(["hrm"])))
case("npz", "metadata nested 50000 deep")(
    _npz_meta(meta_blob(b"[" * 50_000 + b"]" * 50_000)))
case("npz", "metadata names an unknown model with escape codes")(
    _npz_meta(meta_blob({"model": "\x1b[5mblink\nx", "config": hrm_cfg()})))
case("npz", "metadata config claims a million layers")(
    _npz_meta(meta_blob({"model": "hrm", "format": "twinframe/hrm/1",
                         "config": {**hrm_cfg(), "num_layers": 1_000_000}})))
case("npz", "metadata config of the wrong type")(
    _npz_meta(meta_blob({"model": "hrm", "config": "tiny"})))
case("npz", "metadata is an object array (pickle)")(
    _npz_meta(npy_bytes(np.array([{"model": "hrm"}], dtype=object))))


@case("npz", "object-dtype member (pickle)")
def _(w, b):
    m = npz_members(b.hrm_npz)
    m["params/cls_token.npy"] = npy_bytes(np.array([Evil()], dtype=object))
    return conv(write(w / "x.npz", npz_bytes(m)), "out.safetensors")


@case("npz", "member that is not .npy")
def _(w, b):
    m = npz_members(b.hrm_npz)
    m["readme.txt"] = b"hello"
    return conv(write(w / "x.npz", npz_bytes(m)), "out.safetensors")


@case("npz", "NaN value")
def _(w, b):
    m = npz_members(b.hrm_npz)
    a = np.zeros(32, np.float32)
    a[7] = np.nan
    m["params/cls_token.npy"] = npy_bytes(a)
    return conv(write(w / "x.npz", npz_bytes(m)), "out.safetensors")


@case("npz", "int64 member where float weights belong")
def _(w, b):
    m = npz_members(b.hrm_npz)
    m["params/cls_token.npy"] = npy_bytes(np.zeros(32, np.int64))
    return conv(write(w / "x.npz", npz_bytes(m)), "out.safetensors")


@case("npz", "not a zip")
def _(w, b):
    return conv(write(w / "x.npz", b"\x93NUMPY junk" * 20), "out.safetensors")


@case("npz", "truncated")
def _(w, b):
    return conv(write(w / "x.npz", b.hrm_npz.read_bytes()[:2000]), "out.safetensors")


@case("npz", "member names with escape codes")
def _(w, b):
    m = npz_members(b.hrm_npz)
    m["params/\x1b[31m\nx.npy"] = npy_bytes(np.zeros(2, np.float32))
    return conv(write(w / "x.npz", npz_bytes(m)), "out.safetensors")


@case("npz", "duplicate member names")
def _(w, b):
    import warnings

    f = BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(f, "w") as z:
            for n, data in npz_members(b.hrm_npz).items():
                z.writestr(n, data)
            z.writestr("params/cls_token.npy", npy_bytes(np.ones(32, np.float32)))
    return conv(write(w / "x.npz", f.getvalue()), "out.safetensors")


@case("npz", "deflate bomb (24 MiB of zeros in one member)")
def _(w, b):
    m = npz_members(b.hrm_npz)
    m["params/cls_token.npy"] = npy_bytes(np.zeros(6 * 2**20, np.float32))
    return conv(write(w / "x.npz", npz_bytes(m, compress=True)), "out.safetensors")


@case("npz", "empty path component")
def _(w, b):
    m = npz_members(b.hrm_npz)
    m["params//cls_token.npy"] = m.pop("params/cls_token.npy")
    return conv(write(w / "x.npz", npz_bytes(m)), "out.safetensors")


@case("npz", "no metadata, a tree matching no preset")
def _(w, b):
    m = npz_members(b.hrm_npz)
    del m["__twinframe__.npy"]
    del m["params/cls_token.npy"]
    return conv(write(w / "x.npz", npz_bytes(m)), "out.safetensors")


@case("npz", "a FIFO named x.npz")
def _(w, b):
    os.mkfifo(w / "x.npz")
    return conv("x.npz", "out.safetensors")


# --- orbax -------------------------------------------------------------------------------------

def _orbax(w: Path, b: Base, edit: Callable[[Path], object]) -> list[str]:
    d = copy(b.hrm_orbax, w / "x.orbax")
    edit(d)
    return conv("x.orbax", "out.safetensors")


def _tj(text: bytes):
    return lambda d: (d / "twinframe.json").write_bytes(text)


def _meta_edit(**changes):
    def edit(d):
        meta = json.loads((d / "twinframe.json").read_text())
        meta.update(changes)
        (d / "twinframe.json").write_text(json.dumps(meta))
    return edit


def _orbax_case(name: str, edit):
    case("orbax", name)(lambda w, b: _orbax(w, b, edit))


_orbax_case("twinframe.json missing", lambda d: (d / "twinframe.json").unlink())
_orbax_case("twinframe.json is a FIFO", lambda d: ((d / "twinframe.json").unlink(),
                                                   os.mkfifo(d / "twinframe.json")))
_orbax_case("twinframe.json a symlink loop", lambda d: ((d / "twinframe.json").unlink(),
                                                        os.symlink("twinframe.json",
                                                                   d / "twinframe.json")))
_orbax_case("twinframe.json not JSON", _tj(b"{model: hrm"))
_orbax_case("twinframe.json not UTF-8", _tj(b'{"model": "hr\xffm"}'))
_orbax_case("twinframe.json not an object", _tj(b'["hrm"]'))
_orbax_case("twinframe.json nested 50000 deep", _tj(b"[" * 50_000 + b"]" * 50_000))
_orbax_case("config of the wrong type", _meta_edit(config=["tiny"]))
_orbax_case("model name of the wrong type", _meta_edit(model=7))
_orbax_case("model name with escape codes", _meta_edit(model="\x1b[1m\nhrm"))
_orbax_case("config claims a million layers",
            _meta_edit(config={**hrm_cfg(), "num_layers": 1_000_000}))
_orbax_case("config disagrees with the stored shapes",
            _meta_edit(config={**hrm_cfg(), "hidden_size": 64}))
_orbax_case("tree/ missing", lambda d: shutil.rmtree(d / "tree"))
_orbax_case("tree is a file", lambda d: (shutil.rmtree(d / "tree"),
                                         (d / "tree").write_bytes(b"x")))
_orbax_case("orbax _METADATA not JSON", lambda d: (d / "tree" / "_METADATA").write_text("{"))
_orbax_case("orbax _METADATA of the wrong type",
            lambda d: (d / "tree" / "_METADATA").write_text("[]"))
_orbax_case("a FIFO inside tree/", lambda d: os.mkfifo(d / "tree" / "manifest.ocdbt.fifo"))


def _truncate_chunks(d: Path) -> None:
    files = sorted((p for p in (d / "tree").rglob("*") if p.is_file() and p.parent.name == "d"),
                   key=lambda p: p.stat().st_size)
    p = files[-1]
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


_orbax_case("truncated array data", _truncate_chunks)


@case("orbax", "a regular file named x.orbax")
def _(w, b):
    return conv(write(w / "x.orbax", b"not a directory"), "out.safetensors")


@case("orbax", "an empty directory")
def _(w, b):
    (w / "x.orbax").mkdir()
    return conv("x.orbax", "out.safetensors")


@case("orbax", "symlink loop named x.orbax")
def _(w, b):
    os.symlink("x.orbax", w / "x.orbax")
    return conv("x.orbax", "out.safetensors")


# ----------------------------------------------------------------------------------------------
# measuring


def snapshot(root: Path) -> dict[str, tuple]:
    """name -> (kind, size, content digest) of everything under root (links not followed)."""
    import hashlib

    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            rel = str(p.relative_to(root))
            st = p.lstat()
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif n in filenames and p.is_file():
                out[rel] = ("file", st.st_size, hashlib.sha1(p.read_bytes()).hexdigest())
            elif n in dirnames:
                out[rel] = ("dir",)
            else:
                out[rel] = ("special",)
    return out


def prepare(c: Case, root: Path, base: Base) -> tuple[Path, list[str]]:
    """root/{work,home}: build the case with HOME=root/home; returns (work dir, argv)."""
    work, home = root / "work", root / "home"
    work.mkdir(parents=True)
    home.mkdir()
    (home / ".bashrc").write_text("# mine\n")
    old = os.environ.get("HOME")
    os.environ["HOME"] = str(home)
    try:
        argv = c.build(work, base)
    finally:
        if old is not None:
            os.environ["HOME"] = old
    return work, argv


def judge(c: Case, root: Path, before: dict, rc: int | None, stderr: str,
          timed_out: bool = False, mem_blowup: bool = False) -> tuple[str, str]:
    """-> (verdict, detail). Verdicts: correct, hang, memory, traceback, destroyed, wrong output,
    left files, messy message."""
    if timed_out:
        return "hang", ""
    if mem_blowup:
        return "memory", ""
    after = snapshot(root) if root.exists() else {}
    lost = sorted(k for k in before if k not in after or after[k] != before[k])
    if c.expect == "error":
        lost = [k for k in lost if "pwned" not in k]
        if lost:
            return "destroyed", f"{len(lost)} entries changed or removed, e.g. {lost[0]}"
        if "Traceback" in stderr or rc not in (0, 2):
            return "traceback", _last(stderr)
        if rc == 0:
            return "wrong output", "exit 0"
        new = sorted(k for k in after if k not in before)
        if new:
            return "left files", new[0]
        if (root / "work" / "pwned").exists():
            return "code ran", ""
        lines = stderr.strip("\n").split("\n")
        if len(lines) != 1 or any(ord(ch) < 32 and ch != "\t" for ch in lines[0]) \
                or "\x7f" in lines[0] or "\x1b" in lines[0]:
            return "messy message", repr(stderr[:200])
        return "correct", lines[0][:300]
    # expected to succeed
    if "Traceback" in stderr or rc not in (0, 2):
        return "traceback", _last(stderr)
    if rc != 0:
        return "wrong output", "refused: " + stderr.strip()[:200]
    why = c.check(root / "work") if c.check else None
    return ("wrong output", why) if why else ("correct", "")


def _last(text: str) -> str:
    lines = [x for x in text.strip().splitlines() if x.strip()]
    return lines[-1][:200] if lines else ""


def run_subprocess(c: Case, root: Path, base: Base, timeout: float = 30.0,
                   max_rss_gb: float = 3.0, strip: tuple[str, ...] = ()) -> tuple[str, str]:
    """Run one case in a child process (hangs and memory growth are caught)."""
    import subprocess
    import sys
    import time

    work, argv = prepare(c, root, base)
    argv = [a for a in argv if a not in strip]
    before = snapshot(root)
    env = {**os.environ, "HOME": str(root / "home")}
    p = subprocess.Popen([sys.executable, "-m", "twinframe.cli", *argv], cwd=work, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0, peak, blow = time.time(), 0, False
    while p.poll() is None:
        try:
            for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    peak = max(peak, int(line.split()[1]) * 1024)
        except OSError:
            pass
        if peak > max_rss_gb * 2**30:
            blow = True
            p.kill()
        if time.time() - t0 > timeout:
            p.kill()
            p.communicate()
            return judge(c, root, before, None, "", timed_out=True)
        time.sleep(0.05)
    _, err = p.communicate()
    return judge(c, root, before, p.returncode, err, mem_blowup=blow)


def main() -> None:
    import collections
    import sys
    import tempfile

    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        base = build_base(Path(tmp) / "base")
        rows = []
        only = None
        if "--only" in sys.argv:
            only = set(json.loads(Path(sys.argv[sys.argv.index("--only") + 1]).read_text()))
        timeout = float(os.environ.get("CORPUS_TIMEOUT", "30"))
        for i, c in enumerate(CASES):
            if only is not None and f"{c.cls}:{c.name}" not in only:
                continue
            if c.skip_before and "--no-skip" not in sys.argv:
                rows.append((c.cls, c.name, "not run", c.skip_before))
                continue
            if c.needs_unprivileged and os.geteuid() == 0:
                rows.append((c.cls, c.name, "not run", "running as root"))
                continue
            strip = ("--force", "--allow-nonfinite") if "--old-flags" in sys.argv else ()
            verdict, detail = run_subprocess(c, Path(tmp) / f"case{i}", base, timeout=timeout,
                                             strip=strip)
            rows.append((c.cls, c.name, verdict, detail))
            print(f"{c.cls:12s} {verdict:14s} {c.name}: {detail[:150]!r}", flush=True)
    (out / "corpus.json").write_text(json.dumps(rows, indent=1))
    by = collections.Counter((r[0], r[2]) for r in rows)
    for (cls, verdict), n in sorted(by.items()):
        print(f"{cls:12s} {verdict:14s} {n}")
    print(f"{len(rows)} cases")


if __name__ == "__main__":
    main()
