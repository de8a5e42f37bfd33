"""Checkpoint files: safetensors / torch `.pt` (weights_only) <-> NumPy state dicts, and JAX
pytrees as orbax directories or `.npz`. All writes are atomic (temp path + rename) so a failed
conversion never leaves a partial output. Every read error is a one-line `CheckpointError`;
reading goes through `store.readers` (every format validated before its data is read).

On-disk formats written here:
- `.safetensors`: torch-layout tensors; metadata `format` = "twinframe/<model>/1", `config`
  (JSON). Foreign files without metadata are accepted (bf16 or f32 per tensor). In the
  reference layout (`layout="reference"`): the tensors alone, no metadata.
- `.pt`/`.pth`: either a bare state_dict (the reference layout) or a dict with a `model`
  state_dict plus `format`, `model_name`, `config`, `optimizer`, ...; always read with
  `torch.load(weights_only=True)`.
- orbax directory: `tree/` (orbax StandardCheckpointer) + `twinframe.json` (model, config).
- `.npz`: flattened pytree, keys are '/'-joined paths, plus `__twinframe__` JSON metadata.
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from twinframe.errors import CheckpointError
from twinframe.models.layout import flatten_tree, normalize_tree_keys, path_str, unflatten_tree
from twinframe.store import validate

log = logging.getLogger(__name__)

TORCH_SUFFIXES = (".safetensors", ".pt", ".pth")
JAX_SUFFIXES = (".npz", ".orbax", "")
META_FILE = "twinframe.json"


def kind_of(path: str | Path) -> str:
    """'torch' for .safetensors/.pt/.pth, 'jax' for .npz or an orbax directory (other names)."""
    return "torch" if Path(path).suffix in TORCH_SUFFIXES else "jax"


TMP_PREFIX = ".tf-"  # temp names: ".tf-" + 8 characters, whatever the destination's length


def atomic_write(dst: Path, write: Callable[[Path], None], is_dir: bool = False, *,
                 replace: bool = True) -> None:
    """Run write(tmp) on a short-named sibling temp path, then rename it onto dst.

    Nothing is deleted before the new output is complete: an existing file is replaced by one
    atomic rename; an existing directory only when it carries twinframe's marker (a checkpoint
    twinframe wrote), swapped atomically where the kernel can (renameat2 RENAME_EXCHANGE), the
    old one removed last. `replace=False` refuses any existing dst. Outputs get the modes of a
    plain `open`/`mkdir` (0666/0777 less the umask: 0644/0755 by default), never mkstemp's
    0600/0700. Missing parent directories are created, and removed again on failure; the temp
    path is always removed."""
    dst = Path(dst)
    created = _make_parents(dst.parent)
    done = False
    try:
        tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=dst.parent))
    except OSError as e:
        _remove_created(created)
        raise validate.fail(dst.parent, f"cannot write here ({e.strerror})") from None
    try:
        target = tmp / "o"
        write(target)
        if not os.path.lexists(target):
            raise CheckpointError(f"{validate.show(dst)}: the writer produced nothing")
        set_modes(target)
        _publish(target, dst, tmp, is_dir, replace)
        done = True
    except OSError as e:
        raise validate.fail(dst, f"cannot write ({e.strerror or e})") from None
    finally:
        _remove_temp(tmp)
        if not done:
            _remove_created(created)


def _remove_temp(tmp: Path) -> None:
    """Remove a temp tree; retried briefly because a failed orbax/tensorstore write can still
    be creating files in it from a background thread when the error reaches us (seen once
    under load: ENOTEMPTY left the temp behind). What remains is logged; `remove_stale` of a
    resumed run removes it."""
    for delay in (0.0, 0.05, 0.2, 0.5, 1.0):
        time.sleep(delay)
        shutil.rmtree(tmp, ignore_errors=True)
        if not os.path.lexists(tmp):
            return
    log.warning("could not remove the temp path %s", tmp)


def _make_parents(parent: Path) -> list[Path]:
    missing = []
    p = parent
    while not os.path.lexists(p):
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    if os.path.lexists(p) and not p.is_dir():
        raise validate.fail(p, "is not a directory (cannot hold the output)")
    created = []
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue
        except OSError as e:
            _remove_created(created)
            raise validate.fail(d, f"cannot create directory ({e.strerror})") from None
        created.append(d)
    return created


def _remove_created(created: list[Path]) -> None:
    for d in reversed(created):
        try:
            d.rmdir()
        except OSError:
            break


def _publish(target: Path, dst: Path, tmp: Path, is_dir: bool, replace: bool) -> None:
    if not os.path.lexists(dst):
        if is_dir:
            os.rename(target, dst)  # fails if dst appeared meanwhile, unless it is empty
        else:
            try:
                os.link(target, dst)  # fails if dst appeared meanwhile: never overwrites
            except FileExistsError:
                raise validate.fail(dst, "appeared while writing (not replaced)") from None
            except OSError:
                os.rename(target, dst)
        return
    if not replace:
        raise validate.fail(dst, "already exists (not replaced)")
    if os.path.islink(dst):
        raise validate.fail(dst, "is a symbolic link (not replaced)")
    if is_dir != dst.is_dir():
        have = "a directory" if dst.is_dir() else "a file"
        raise validate.fail(dst, f"exists as {have}; the output is "
                            f"{'a directory' if is_dir else 'a file'} (not replaced)")
    if not is_dir:
        os.replace(target, dst)
        return
    if not has_dir_marker(dst):
        raise validate.fail(dst, f"is a directory twinframe did not write (no {META_FILE}): "
                            "not replaced")
    if not _exchange(target, dst):
        os.rename(dst, tmp / "old")
        try:
            os.rename(target, dst)
        except OSError:
            os.rename(tmp / "old", dst)
            raise
    # the old directory is now at `target` or tmp/old: removed with tmp


def has_dir_marker(path: Path) -> bool:
    """A directory twinframe wrote: it holds `twinframe.json` (a regular file)."""
    return validate.kind(Path(path) / META_FILE) == "file"


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err))


def _umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def set_modes(path: Path) -> None:
    """Files 0666 & ~umask, directories 0777 & ~umask, recursively (links untouched)."""
    mask = _umask()
    fmode, dmode = 0o666 & ~mask, 0o777 & ~mask
    path = Path(path)
    if path.is_symlink():
        return
    if not path.is_dir():
        os.chmod(path, fmode)
        return
    os.chmod(path, dmode)
    for dirpath, dirnames, filenames in os.walk(path):
        for n in dirnames:
            p = os.path.join(dirpath, n)
            if not os.path.islink(p):
                os.chmod(p, dmode)
        for n in filenames:
            p = os.path.join(dirpath, n)
            if not os.path.islink(p):
                os.chmod(p, fmode)


def to_numpy(t: Any) -> np.ndarray:
    """torch tensor -> NumPy, bf16 kept as ml_dtypes.bfloat16 (exact)."""
    import ml_dtypes
    import torch

    if not isinstance(t, torch.Tensor):
        raise CheckpointError(f"expected a tensor, found {type(t).__name__}")
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def from_numpy(x: np.ndarray, dtype: str) -> Any:
    """float arrays -> float32 (or bf16) tensors; integer arrays (counters) keep their dtype."""
    import torch

    if np.issubdtype(np.asarray(x).dtype, np.integer):
        return torch.from_numpy(np.array(x))
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(np.shape(x))  # 0-d stays 0-d
    t = torch.from_numpy(x.copy())
    if dtype in ("bfloat16", "float16"):
        return t.to(getattr(torch, dtype))
    return t


def read_torch(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """-> (state {key: array}, extras). extras holds `config`/`model` and for `.pt` train states
    everything besides the model (optimizer, step, ...). Validated by `store.readers`."""
    from twinframe.store import readers

    path = Path(path)
    if readers.format_of(path) not in ("safetensors", "torch"):
        raise validate.fail(path, "not a torch checkpoint name (.safetensors, .pt, .pth)")
    p = readers.probe(path)
    extras = dict(p.extras)
    for k in ("model", "config"):
        if k in p.meta:
            extras[k] = p.meta[k]
    return p.load(), extras


def torch_load(path: Path) -> Any:
    """`torch.load(weights_only=True)` on CPU after the file and its zip directory are checked;
    any failure is one CheckpointError line (a rejected global is named)."""
    from twinframe.store import readers

    return readers.torch_load(Path(path))


def write_torch(
    path: str | Path,
    state: dict[str, np.ndarray],
    model: str,
    config: dict,
    dtype: str | Mapping[str, str] | None = "float32",
    extras: dict[str, Any] | None = None,
    *,
    layout: str = "twinframe",
    replace: bool = True,
    nested: bool = False,
) -> None:
    """Write a torch-layout state atomically (.safetensors, or .pt with extras).

    `dtype`: one float dtype for every float tensor, a {key: dtype} map, or None (each array
    keeps its own float dtype). `layout="reference"`: the tensors alone (a safetensors file
    without metadata, a bare `.pt` state_dict), as the models' public code saves them; with
    `nested`, a `.pt` holds one state_dict per first name component (`{'wm': {...}, ...}`)."""
    path = Path(path)

    def cast(k: str, x: np.ndarray) -> Any:
        want = dtype.get(k) if isinstance(dtype, Mapping) else dtype
        if want is None:
            name = np.asarray(x).dtype.name
            want = name if name in ("bfloat16", "float16") else "float32"
        return from_numpy(x, want)

    tensors = {k: cast(k, x) for k, x in state.items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        meta = None if layout == "reference" else {
            "format": f"twinframe/{model}/1", "config": json.dumps(config, sort_keys=True)}
        atomic_write(path, lambda p: save_file(tensors, str(p), metadata=meta), replace=replace)
        return
    import torch

    if layout == "reference":
        obj: dict[str, Any] = tensors
        if nested:
            obj = {}
            for k, t in tensors.items():
                head, _, rest = k.partition(".")
                if rest:
                    obj.setdefault(head, {})[rest] = t
                else:
                    obj[head] = t
    else:
        obj = {"model": tensors, "format": f"twinframe/{model}/1", "model_name": model,
               "config": json.dumps(config, sort_keys=True)}
        obj.update(extras or {})
    atomic_write(path, lambda p: torch.save(obj, str(p)), replace=replace)


def read_jax(path: str | Path) -> tuple[dict, dict[str, Any]]:
    """-> (tree, meta) from an `.npz` file or an orbax directory written by `write_jax`
    (validated by `store.readers`)."""
    from twinframe.store import readers

    path = Path(path)
    if readers.format_of(path) in ("safetensors", "torch"):
        raise validate.fail(path, "not a JAX checkpoint name (.npz or an orbax directory)")
    p = readers.probe(path)
    flat = {tuple(k.split("/")): x for k, x in p.load().items()}
    return normalize_tree_keys(unflatten_tree(flat)), p.meta


def write_jax(
    path: str | Path, tree: dict, model: str, config: dict, extra_meta: dict | None = None,
    *, replace: bool = True,
) -> None:
    """Write a pytree atomically as `.npz` or as an orbax directory (+ twinframe.json)."""
    path = Path(path)
    meta = {"model": model, "config": config, "format": f"twinframe/{model}/1",
            **(extra_meta or {})}
    flat = {path_str(k): np.asarray(v) for k, v in flatten_tree(tree).items()}
    if path.suffix == ".npz":
        blob = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)

        def write_npz(p: Path) -> None:
            with open(p, "wb") as f:
                np.savez(f, __twinframe__=blob, **flat)

        atomic_write(path, write_npz, replace=replace)
        return

    def write_orbax(p: Path) -> None:
        import orbax.checkpoint as ocp

        p.mkdir()
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save((p / "tree").absolute(), tree)
            ckptr.wait_until_finished()
        (p / META_FILE).write_text(json.dumps(meta))

    atomic_write(path, write_orbax, is_dir=True, replace=replace)


def jax_tree_to_numpy(tree: Any) -> Any:
    flat = flatten_tree(tree)
    return unflatten_tree({k: np.asarray(v) for k, v in flat.items()})


def first_line(e: BaseException) -> str:
    return validate.first_line(e)
