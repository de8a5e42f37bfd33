"""Validated readers of every checkpoint format, in two steps: `probe(path)` checks the file's
structure and returns what it holds (tensor names, dtypes, shapes, twinframe metadata) without
reading tensor data; `Probe.load()` then reads the data. Callers check names and shapes against
what they expect between the two, so nothing is allocated for a shape a file merely claims.

- safetensors: `safetensors_reader` (header parsed and checked here, not by the library).
- `.pt`/`.pth`: the zip central directory is checked (sizes against the file, one pickle), then
  `torch.load(weights_only=True, mmap=True)`; raw pickles and legacy (pre-zip) torch files are
  refused unread; sparse, meta, quantized, nested and complex tensors are refused by key.
- `.npz`: every member's .npy header is read and checked against the zip's sizes; object
  arrays (pickles) are refused; tree paths may not conflict.
- orbax directory: `twinframe.json`, `tree/` (regular files and directories only), orbax's own
  `_METADATA` and the array metadata (shapes, dtypes) checked before anything is restored.
Every failure is one `CheckpointError` line: `<file>: <key>: <problem>`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from twinframe.errors import CheckpointError
from twinframe.store import safetensors_reader as st
from twinframe.store import validate as v

log = logging.getLogger(__name__)

TORCH_FILE_SUFFIXES = (".pt", ".pth")
META_FILE = "twinframe.json"
META_MEMBER = "__twinframe__"
MAX_PICKLE = 256 * 2**20
MAX_RATIO = 200            # deflated zip members: uncompressed/compressed above this, refused
MAX_DEFLATED_FREE = 16 * 2**20   # ... unless the member is smaller than this


@dataclasses.dataclass
class Probe:
    """What a checkpoint holds, validated, before its data is read.

    `index`: name -> (dtype name, shape): torch keys (torch formats) or '/'-joined tree paths
    (JAX formats). `meta`: twinframe metadata ({} if none): `model`, `config` (a dict), and
    whatever else the writer recorded. `layout`: 'twinframe' (written by twinframe or wrapped
    in its dict) or 'reference' (a bare state_dict / safetensors without twinframe metadata).
    `extras`: for `.pt` train states, everything besides the model (optimizer, host, ...).
    `nested`: a bare `.pt` holding one state_dict per module (`{'wm': ..., 'am': ...}`), whose
    keys `index` names `<module>.<key>`."""

    path: Path
    format: str
    index: dict[str, tuple[str, tuple[int, ...]]]
    meta: dict[str, Any]
    layout: str
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)
    loader: Callable[[list[str] | None], dict[str, np.ndarray]] | None = None
    nested: bool = False  # a bare .pt dict of state_dicts, flattened to `<module>.<key>` names

    @property
    def kind(self) -> str:
        return "torch" if self.format in ("safetensors", "torch") else "jax"

    def load(self, keys: list[str] | None = None) -> dict[str, np.ndarray]:
        assert self.loader is not None
        return self.loader(keys)

    def placeholders(self) -> dict[str, np.ndarray]:
        """Zero-stride arrays of the right dtype and shape (no allocation): what
        `ModelSpec.recognise` and shape checks read."""
        out = {}
        for k, (dt, shape) in self.index.items():
            out[k] = np.broadcast_to(np.zeros((), _dtype(dt)), shape)
        return out


def _dtype(name: str) -> np.dtype:
    import ml_dtypes

    return np.dtype(getattr(ml_dtypes, name)) if hasattr(ml_dtypes, name) and name in (
        "bfloat16", "float8_e4m3fn", "float8_e5m2") else np.dtype(name)


def format_of(path: str | Path) -> str:
    s = Path(path).suffix
    if s == ".safetensors":
        return "safetensors"
    if s in TORCH_FILE_SUFFIXES:
        return "torch"
    if s == ".npz":
        return "npz"
    return "orbax"


def probe(path: str | Path) -> Probe:
    path = Path(path)
    fmt = format_of(path)
    if fmt == "safetensors":
        return probe_safetensors(path)
    if fmt == "torch":
        return probe_torch(path)
    if fmt == "npz":
        return probe_npz(path)
    return probe_orbax(path)


# ----------------------------------------------------------------------------------------------
# safetensors


def probe_safetensors(path: Path) -> Probe:
    h = st.read_header(path)
    index = {k: (e.np_dtype.name, e.shape) for k, e in h.entries.items()}
    meta: dict[str, Any] = {}
    fmt = h.metadata.get("format", "")
    if fmt.startswith("twinframe/"):
        parts = fmt.split("/")
        if len(parts) != 3 or not parts[1]:
            raise v.fail(path, f"__metadata__ format {v.q(fmt)} is not twinframe/<model>/1")
        meta["model"] = parts[1]
        meta["format"] = fmt
        if "config" in h.metadata:
            meta["config"] = v.loads_object(h.metadata["config"], path, "__metadata__.config",
                                            "config")
        for k, raw in h.metadata.items():
            if k.startswith("twinframe.") and k != "twinframe.":
                meta[k[len("twinframe."):]] = v.loads(raw, path, f"__metadata__.{k}")
    elif "config" in h.metadata:
        meta["config"] = v.loads_object(h.metadata["config"], path, "__metadata__.config",
                                        "config")
    layout = "twinframe" if "model" in meta else "reference"
    return Probe(path, "safetensors", index, meta, layout,
                 loader=lambda keys: st.read_tensors(h, keys))


# ----------------------------------------------------------------------------------------------
# torch .pt / .pth


_GLOBAL = re.compile(r"GLOBAL ([^\s]+) was not an allowed global|Unsupported global: GLOBAL "
                     r"([^\s]+)|unsupported global: ([^\s]+)|unsupported GLOBAL ([^\s]+)", re.I)
TORCH_DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int16",
                "int8", "uint8", "bool")


def _check_zip(path: Path, z: zipfile.ZipFile, size: int, pickles: str = "data.pkl") -> None:
    names: set[str] = set()
    n_pkl = 0
    infos = z.infolist()
    if len(infos) > v.MAX_TENSORS + 16:
        raise v.fail(path, f"archive lists {len(infos)} members")
    for info in infos:
        name = info.filename
        v.check_name(name, path, "archive member")
        if name in names:
            raise v.fail(path, "archive holds this member twice", name)
        names.add(name)
        if info.header_offset + info.compress_size > size:
            raise v.fail(path, f"archive member claims {info.compress_size} bytes past the end "
                         f"of the file ({size} bytes)", name)
        if info.compress_type == zipfile.ZIP_STORED:
            if info.file_size != info.compress_size:
                raise v.fail(path, f"stored archive member claims {info.file_size} bytes but "
                             f"holds {info.compress_size}", name)
        elif info.file_size > MAX_DEFLATED_FREE and \
                info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise v.fail(path, f"archive member expands {info.compress_size} bytes to "
                         f"{info.file_size} (refused: more than {MAX_RATIO}x)", name)
        if name.endswith(pickles):
            n_pkl += 1
            if info.file_size > MAX_PICKLE:
                raise v.fail(path, f"pickle of {info.file_size} bytes (at most {MAX_PICKLE})",
                             name)
    if pickles == "data.pkl" and n_pkl != 1:
        raise v.fail(path, f"not a torch checkpoint ({n_pkl} data.pkl records in the archive)")


def torch_load(path: str | Path, what: str = "a torch checkpoint") -> Any:
    """`torch.load(weights_only=True, mmap=True)` after checking the file and its zip directory;
    every failure is one line (a refused global is named)."""
    path = Path(path)
    with v.open_file(path, f"{what} file") as f:
        size = os.fstat(f.fileno()).st_size
        magic = f.read(4)
        f.seek(0)
        if magic[:2] != b"PK":
            if magic[:1] == b"\x80":
                raise v.fail(path, "a pickle stream, not a torch zip archive (raw pickles and "
                             "legacy pre-1.6 torch files are refused unread: they can run code;"
                             " re-save with a current torch.save)")
            raise v.fail(path, "not a loadable torch file (not a zip archive)")
        try:
            with zipfile.ZipFile(f) as z:
                _check_zip(path, z, size)
        except CheckpointError:
            raise
        except Exception as e:  # noqa: BLE001 - zipfile raises many kinds on damaged input
            raise v.fail(path, f"not a loadable torch file (damaged zip archive: "
                         f"{v.first_line(e)})") from None
    import torch

    try:
        with warnings_off():
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except RecursionError:
        raise v.fail(path, "pickle nested too deep") from None
    except Exception as e:  # noqa: BLE001 - unpickling/zip errors of any kind: one line
        raise _torch_error(path, e) from None


def _torch_error(path: Path, e: Exception) -> CheckpointError:
    text = v._ANSI.sub("", str(e))
    m = _GLOBAL.search(text)
    if m:
        name = next(g for g in m.groups() if g)
        return v.fail(path, f"refused: the pickle calls the global {v.q(name)}, which "
                      "weights-only loading does not allow (the file may run code)")
    if "Weights only load failed" in text:
        detail = [x for x in text.splitlines() if x.strip() and "Weights only" not in x and
                  "weights_only" not in x and "Please" not in x and "pytorch.org" not in x]
        why = v.one_line(detail[0].strip(), 200) if detail else "unsupported content"
        return v.fail(path, f"refused by weights-only loading: {why}")
    return v.fail(path, f"not a loadable torch file ({v.first_line(e)})")


@contextlib.contextmanager
def warnings_off():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def tensor_to_numpy(t: Any, path: Path, key: str) -> np.ndarray:
    """A plain dense CPU tensor -> NumPy (bf16 exact as ml_dtypes.bfloat16); anything else is
    refused naming the key."""
    import torch

    if not isinstance(t, torch.Tensor):
        raise v.fail(path, f"is {v.an(type(t).__name__)}, not a tensor", key)
    if t.is_nested:
        raise v.fail(path, "is a nested tensor (not supported)", key)
    if t.layout != torch.strided:
        raise v.fail(path, f"is {v.an(str(t.layout).replace('torch.', ''))} tensor (only dense "
                     "tensors are supported)", key)
    if t.is_quantized:
        raise v.fail(path, "is a quantized tensor (not supported)", key)
    if t.device.type != "cpu":
        raise v.fail(path, f"is {v.an(t.device.type)} tensor with no data", key)
    name = str(t.dtype).replace("torch.", "")
    if name not in TORCH_DTYPES:
        raise v.fail(path, f"has dtype {name} (not supported)", key)
    t = t.detach()
    if t.dtype == torch.bfloat16:
        import ml_dtypes

        return t.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16).copy()
    return np.array(t.contiguous().numpy(), copy=True)


def _tensor_meta(t: Any, path: Path, key: str) -> tuple[str, tuple[int, ...]]:
    import torch

    if not isinstance(t, torch.Tensor):
        raise v.fail(path, f"is {v.an(type(t).__name__)}, not a tensor", key)
    if t.is_nested or t.layout != torch.strided or t.is_quantized or t.device.type != "cpu" \
            or str(t.dtype).replace("torch.", "") not in TORCH_DTYPES:
        tensor_to_numpy(t, path, key)  # raises the precise message
    name = str(t.dtype).replace("torch.", "")
    return name, tuple(int(d) for d in t.shape)


def _state_of(obj: Mapping, path: Path, what: str = "state_dict") -> dict[str, Any]:
    for k in obj:
        if not isinstance(k, str):
            raise v.fail(path, f"{what} key {v.q(k)} is {v.an(type(k).__name__)}, not a string")
        v.check_name(k, path, f"{what} key")
    return dict(obj)


def probe_torch(path: Path) -> Probe:
    obj = torch_load(path)
    v.check_depth(obj, path)
    if not isinstance(obj, Mapping):
        raise v.fail(path, f"holds a {type(obj).__name__}, not a state_dict")
    if not obj:
        raise v.fail(path, "holds an empty dict (no tensors)")
    extras: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    nested = False
    if isinstance(obj.get("model"), Mapping):
        extras = {k: x for k, x in obj.items() if k != "model"}
        state = _state_of(obj["model"], path)
        layout = "twinframe"
        name = extras.pop("model_name", None)
        if name is not None:
            if not isinstance(name, str):
                raise v.fail(path, f"is {v.an(type(name).__name__)}, not a model name",
                             "model_name")
            meta["model"] = name
        cfg = extras.get("config")
        if isinstance(cfg, str):
            meta["config"] = v.loads_object(cfg, path, "config", "config")
        elif isinstance(cfg, Mapping):
            meta["config"] = dict(cfg)
        elif cfg is not None:
            raise v.fail(path, f"is {v.an(type(cfg).__name__)}, not a JSON object", "config")
        if "config" in meta:
            extras["config"] = meta["config"]
        if isinstance(extras.get("format"), str):
            meta["format"] = extras["format"]
        for k in ("twinframe", "source"):
            if isinstance(extras.get(k), str):
                meta.update(v.loads_object(extras[k], path, k))
        if "model" in meta:
            extras["model"] = meta["model"]
    elif isinstance(obj.get("model_state_dict"), Mapping):
        # a training script's checkpoint ({'epoch', 'model_state_dict', 'config', ...}): the
        # weights are the state_dict under that key; the rest is kept as extras, not read
        extras = {k: x for k, x in obj.items() if k != "model_state_dict"}
        state, nested = _modules_state(_state_of(obj["model_state_dict"], path), path)
        layout = "reference"
        meta["wrapped"] = sorted(str(k) for k in extras)
    elif "state" in obj and "param_groups" in obj:
        raise v.fail(path, "is a torch optimizer state_dict, not model weights (convert it "
                     "with --optimizer next to its model file)")
    else:
        state, nested = _modules_state(_state_of(obj, path), path)
        layout = "reference"
    index = {k: _tensor_meta(t, path, k) for k, t in state.items()}

    def load(keys: list[str] | None) -> dict[str, np.ndarray]:
        return {k: tensor_to_numpy(state[k], path, k) for k in (keys or list(state))}

    return Probe(path, "torch", index, meta, layout, extras, load, nested)


def _modules_state(obj: dict[str, Any], path: Path) -> tuple[dict[str, Any], bool]:
    """A bare state_dict, or a dict of state_dicts ({'wm': wm.state_dict(), 'am': ...}: what
    code whose model is several modules saves) flattened to one with `<name>.` prefixes, as a
    parent module's state_dict would name them. -> (state, whether it was nested)."""
    if not any(isinstance(x, Mapping) for x in obj.values()):
        return obj, False
    out: dict[str, Any] = {}
    for k, x in obj.items():
        if not isinstance(x, Mapping):
            out[k] = x
            continue
        if "state" in x and "param_groups" in x:
            raise v.fail(path, "is a torch optimizer state_dict beside the weights (convert "
                         "the weights alone; optimizer files convert with --optimizer)", k)
        for k2, t in _state_of(x, path, f"{k} key").items():
            out[f"{k}.{k2}"] = t
    if len(out) < sum(len(x) if isinstance(x, Mapping) else 1 for x in obj.values()):
        raise v.fail(path, "its state_dicts' names collide once prefixed with their module")
    return out, True


# ----------------------------------------------------------------------------------------------
# npz


def _npy_header(path: Path, fp: Any, name: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fp, max_header_size=10_000)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(fp, max_header_size=10_000)
        else:
            raise ValueError(f"npy format version {version} not supported")
    except Exception as e:  # noqa: BLE001 - a damaged .npy header: one line
        raise v.fail(path, f"not a .npy array ({v.first_line(e)})", name) from None
    if dtype.hasobject:
        raise v.fail(path, "is an object array (a pickle): refused unread", name)
    shape = v.check_shape(list(shape), path, name)
    return shape, bool(fortran), dtype, fp.tell()


def probe_npz(path: Path) -> Probe:
    with v.open_file(path, "an .npz file") as f:
        size = os.fstat(f.fileno()).st_size
        try:
            z = zipfile.ZipFile(f)
        except Exception as e:  # noqa: BLE001 - zipfile raises many kinds on damaged input
            raise v.fail(path, f"not an .npz file ({v.first_line(e)})") from None
        with z:
            _check_zip(path, z, size, pickles="\0")
            infos = z.infolist()
            if not infos:
                raise v.fail(path, "empty .npz (no arrays)")
            heads: dict[str, tuple[zipfile.ZipInfo, tuple[int, ...], bool, np.dtype, int]] = {}
            for info in infos:
                if not info.filename.endswith(".npy"):
                    raise v.fail(path, "archive member is not a .npy array", info.filename)
                name = info.filename[:-4]
                try:
                    with z.open(info) as fp:
                        shape, fortran, dtype, hlen = _npy_header(path, fp, name)
                except CheckpointError:
                    raise
                except Exception as e:  # noqa: BLE001 - damaged member of any kind
                    raise v.fail(path, f"damaged archive member ({v.first_line(e)})",
                                 name) from None
                want = v.count(shape) * dtype.itemsize
                if info.file_size != hlen + want:
                    raise v.fail(path, f"array of shape {list(shape)} {dtype.name} needs {want} "
                                 f"bytes, the archive holds {info.file_size - hlen}", name)
                heads[name] = (info, shape, fortran, dtype, hlen)
            meta: dict[str, Any] = {}
            if META_MEMBER in heads:
                info, shape, _, dtype, _ = heads.pop(META_MEMBER)
                if dtype != np.uint8 or len(shape) != 1 or shape[0] > v.MAX_JSON_BYTES:
                    raise v.fail(path, "twinframe metadata is not a byte string", META_MEMBER)
                raw = _read_member(path, z, META_MEMBER, (info, shape, False, dtype,
                                                          info.file_size - shape[0]))
                meta = _jax_meta(path, v.loads_object(raw.tobytes(), path, META_MEMBER,
                                                      "metadata"), META_MEMBER)
    check_tree_paths(path, heads)
    index = {k: (h[3].name, h[1]) for k, h in heads.items()}

    def load(keys: list[str] | None) -> dict[str, np.ndarray]:
        out = {}
        with v.open_file(path, "an .npz file") as f:
            if os.fstat(f.fileno()).st_size != size:
                raise v.fail(path, "file changed while it was read")
            try:
                z = zipfile.ZipFile(f)
            except Exception as e:  # noqa: BLE001
                raise v.fail(path, f"not an .npz file ({v.first_line(e)})") from None
            with z:
                for k in keys or list(heads):
                    out[k] = _read_member(path, z, k, heads[k])
        return out

    return Probe(path, "npz", index, meta, "twinframe", loader=load)


def _read_member(path: Path, z: zipfile.ZipFile, name: str, head: tuple) -> np.ndarray:
    info, shape, fortran, dtype, hlen = head
    try:
        with z.open(info) as fp:
            raw = fp.read(info.file_size + 1)
    except Exception as e:  # noqa: BLE001 - damaged member of any kind (CRC, zlib, ...)
        raise v.fail(path, f"damaged archive member ({v.first_line(e)})", name) from None
    if len(raw) != info.file_size:
        raise v.fail(path, "archive member changed size while it was read", name)
    a = np.frombuffer(bytearray(raw[hlen:]), dtype)
    return a.reshape(shape, order="F" if fortran else "C")


def check_tree_paths(path: Path, names: Mapping[str, Any]) -> None:
    """'/'-joined tree paths: non-empty parts, and no path is also a subtree of another."""
    prefixes: dict[str, str] = {}
    for name in names:
        v.check_name(name, path, "tree path")
        parts = name.split("/")
        if any(p == "" for p in parts):
            raise v.fail(path, "tree path has an empty component", name)
        for i in range(1, len(parts)):
            prefixes.setdefault("/".join(parts[:i]), name)
    for name in names:
        if name in prefixes:
            raise v.fail(path, f"is both a leaf and the parent of {v.q(prefixes[name])}", name)


def _jax_meta(path: Path, meta: dict[str, Any], key: str) -> dict[str, Any]:
    if "model" in meta and not isinstance(meta["model"], str):
        raise v.fail(path, f"model is {v.an(type(meta['model']).__name__)}, not a name", key)
    if "config" in meta and not isinstance(meta["config"], dict):
        raise v.fail(path, f"config is a JSON {type(meta['config']).__name__}, not an object",
                     key)
    if "format" in meta and not isinstance(meta["format"], str):
        raise v.fail(path, "format is not a string", key)
    return meta


# ----------------------------------------------------------------------------------------------
# orbax


MAX_TREE_ENTRIES = 200_000


def probe_orbax(path: Path) -> Probe:
    v.require_dir(path, "an orbax checkpoint directory")
    meta_path = path / META_FILE
    if not os.path.lexists(meta_path):
        raise v.fail(path, f"not a twinframe orbax checkpoint (no {META_FILE})")
    meta = _jax_meta(meta_path, v.loads_object(v.read_small(meta_path), meta_path,
                                               what="metadata"), None)
    tree = path / "tree"
    if not os.path.lexists(tree):
        raise v.fail(path, "not a twinframe orbax checkpoint (no tree/)")
    v.require_dir(tree, "a directory")
    n = 0
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in dirnames + filenames:
            n += 1
            p = Path(dirpath) / name
            if n > MAX_TREE_ENTRIES:
                raise v.fail(tree, f"holds more than {MAX_TREE_ENTRIES} entries")
            if p.is_symlink():
                raise v.fail(tree, "holds a symbolic link (refused)", str(p.relative_to(tree)))
            mode = p.lstat().st_mode
            k = v._kind_of_mode(mode)
            if k not in ("file", "directory"):
                raise v.fail(tree, f"holds a {k} (refused)", str(p.relative_to(tree)))
    md_path = tree / "_METADATA"
    if not md_path.exists():
        raise v.fail(tree, "no orbax _METADATA file")
    md = v.loads_object(v.read_small(md_path, 64 * 2**20), md_path, what="orbax metadata")
    tm = md.get("tree_metadata")
    if not isinstance(tm, dict) or not tm:
        raise v.fail(md_path, "orbax metadata has no tree_metadata object")
    names = {}
    for raw_key, entry in tm.items():
        keys = entry.get("key_metadata") if isinstance(entry, dict) else None
        if not isinstance(keys, list) or not keys or not all(
                isinstance(x, dict) and isinstance(x.get("key"), str) for x in keys):
            raise v.fail(md_path, "tree_metadata entry has no key list", raw_key)
        vm = entry.get("value_metadata")
        if isinstance(vm, dict) and vm.get("skip_deserialize") is True:
            continue  # an empty container or None: no array stored
        names["/".join(x["key"] for x in keys)] = raw_key
    check_tree_paths(md_path, names)
    cm = tree / "_CHECKPOINT_METADATA"
    if cm.exists():
        v.loads_object(v.read_small(cm), cm, what="orbax checkpoint metadata")
    index = _orbax_index(path, tree)
    if set(index) != set(names):
        extra = sorted(set(index) ^ set(names))
        raise v.fail(md_path, "orbax metadata and stored arrays disagree", extra[0])

    def load(keys: list[str] | None) -> dict[str, np.ndarray]:
        return _orbax_restore(path, tree, index, keys)

    return Probe(path, "orbax", index, meta, "twinframe", loader=load)


def _orbax_calls():
    """orbax's checkpointer with its absl/asyncio chatter kept off the terminal."""
    import orbax.checkpoint as ocp

    for name in ("absl", "orbax", "asyncio", "jax._src.distributed"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    _quiet_closed_loop()
    return ocp.StandardCheckpointer()


def _quiet_closed_loop() -> None:
    """A failed orbax read leaves tensorstore callbacks that later find their asyncio loop
    closed; Python would print 'Exception ignored ... Event loop is closed' tracebacks after
    the one-line error. Those (and only those) are dropped."""
    import sys

    prev = sys.unraisablehook
    if getattr(prev, "_twinframe", False):
        return

    def hook(u: Any) -> None:
        if isinstance(u.exc_value, RuntimeError) and "Event loop is closed" in str(u.exc_value):
            return
        prev(u)

    hook._twinframe = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def _orbax_index(path: Path, tree: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    import jax

    try:
        leaves = jax.tree_util.tree_flatten_with_path(_orbax_tree_metadata(tree))[0]
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - orbax/tensorstore errors of any kind: one line
        raise v.fail(path, f"unreadable orbax checkpoint ({v.first_line(e)})") from None
    index: dict[str, tuple[str, tuple[int, ...]]] = {}
    for kp, leaf in leaves:
        name = "/".join(_key_str(k) for k in kp)
        shape, dtype = getattr(leaf, "shape", None), getattr(leaf, "dtype", None)
        if shape is None or dtype is None:
            raise v.fail(path, f"stores a {type(leaf).__name__}, not an array", name)
        try:
            dt = np.dtype(dtype)
        except TypeError:
            raise v.fail(path, f"stores dtype {v.q(dtype)}", name) from None
        if dt.hasobject:
            raise v.fail(path, "stores an object array", name)
        index[name] = (dt.name, v.check_shape(list(shape), path, name))
    return index


def _key_str(k: Any) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _orbax_tree_metadata(tree: Path) -> Any:
    with warnings_off(), _orbax_calls() as ck:
        md = ck.metadata(tree.absolute())
    md = getattr(md, "item_metadata", md)
    return getattr(md, "tree", md)


def _orbax_restore(path: Path, tree: Path, index: Mapping[str, tuple[str, tuple[int, ...]]],
                   keys: list[str] | None) -> dict[str, np.ndarray]:
    """Restore into arrays of the validated shapes and dtypes (orbax allocates nothing the
    metadata merely claims), in the structure orbax saved (lists stay lists)."""
    import jax

    from twinframe.models.layout import flatten_tree, normalize_tree_keys, path_str

    try:
        md = _orbax_tree_metadata(tree)
        target = jax.tree_util.tree_map_with_path(
            lambda kp, _: np.empty(index["/".join(_key_str(k) for k in kp)][1],
                                   _dtype(index["/".join(_key_str(k) for k in kp)][0])), md)
        with warnings_off(), _orbax_calls() as ck:
            restored = ck.restore(tree.absolute(), target)
    except Exception as e:  # noqa: BLE001 - orbax/tensorstore errors of any kind: one line
        raise v.fail(path, f"unreadable orbax array data ({v.first_line(e)})") from None
    got = {path_str(k): np.asarray(x) for k, x in
           flatten_tree(normalize_tree_keys(restored)).items()}
    out = {}
    for k in keys or list(index):
        if k not in got:
            raise v.fail(path, "missing from the restored tree", k)
        out[k] = got[k]
    return out
