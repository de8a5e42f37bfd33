"""Checkpoint files: safetensors / torch `.pt` (weights_only) <-> NumPy state dicts, and JAX
pytrees as orbax directories or `.npz`. All writes are atomic (temp path + rename) so a failed
conversion never leaves a partial output. Every read error is a one-line `CheckpointError`.

On-disk formats written here:
- `.safetensors`: torch-layout tensors; metadata `format` = "twinframe/<model>/1", `config`
  (JSON). Foreign files without metadata are accepted (bf16 or f32 per tensor).
- `.pt`/`.pth`: either a bare state_dict or a dict with a `model` state_dict plus `config`,
  `optimizer`, ...; always read with `torch.load(weights_only=True)`.
- orbax directory: `tree/` (orbax StandardCheckpointer) + `twinframe.json` (model, config).
- `.npz`: flattened pytree, keys are '/'-joined paths, plus `__twinframe__` JSON metadata.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from twinframe.errors import CheckpointError
from twinframe.models.layout import flatten_tree, normalize_tree_keys, path_str, unflatten_tree

TORCH_SUFFIXES = (".safetensors", ".pt", ".pth")
JAX_SUFFIXES = (".npz", ".orbax", "")
META_FILE = "twinframe.json"


def kind_of(path: str | Path) -> str:
    """'torch' for .safetensors/.pt/.pth, 'jax' for .npz or an orbax directory (other names)."""
    return "torch" if Path(path).suffix in TORCH_SUFFIXES else "jax"


def atomic_write(dst: Path, write: Callable[[Path], None], is_dir: bool = False) -> None:
    """Run write(tmp) on a sibling temp path, then rename onto dst; clean up on any failure."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    target = tmp / "out"
    try:
        write(target)
        if is_dir and dst.exists():
            shutil.rmtree(dst)
        os.replace(target, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
    x = np.ascontiguousarray(x, dtype=np.float32)
    t = torch.from_numpy(x.copy())
    return t.to(torch.bfloat16) if dtype == "bfloat16" else t


def read_torch(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """-> (state {key: array}, extras). extras holds `config`/`model` and for `.pt` train states
    everything besides the model (optimizer, step, ...)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise CheckpointError(f"{path}: no such file")
        return _read_safetensors(path)
    obj = torch_load(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict, found {type(obj).__name__}")
    extras: dict[str, Any] = {}
    if "model" in obj and isinstance(obj["model"], dict):
        extras = {k: v for k, v in obj.items() if k != "model"}
        obj = obj["model"]
    if "model_name" in extras:
        extras["model"] = extras.pop("model_name")
    if isinstance(extras.get("config"), str):
        extras["config"] = json.loads(extras["config"])
    return {k: to_numpy(v) for k, v in obj.items()}, extras


def torch_load(path: Path) -> Any:
    """`torch.load(weights_only=True)` on CPU; any failure is one CheckpointError line."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling/zip error becomes one line
        raise CheckpointError(f"{path}: not a loadable torch file ({first_line(e)})") from None


def _read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: to_numpy(f.get_tensor(k)) for k in f.keys()}  # noqa: SIM118
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path}: not a valid safetensors file ({first_line(e)})") from None
    extras: dict[str, Any] = {}
    if "config" in meta:
        try:
            extras["config"] = json.loads(meta["config"])
        except json.JSONDecodeError:
            raise CheckpointError(f"{path}: metadata 'config' is not valid JSON") from None
    if "format" in meta:
        extras["model"] = meta["format"].split("/")[1] if "/" in meta["format"] else None
    return state, extras


def write_torch(
    path: str | Path,
    state: dict[str, np.ndarray],
    model: str,
    config: dict,
    dtype: str = "float32",
    extras: dict[str, Any] | None = None,
) -> None:
    """Write a torch-layout state atomically (.safetensors, or .pt with extras)."""
    path = Path(path)
    tensors = {k: from_numpy(v, dtype) for k, v in state.items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        meta = {"format": f"twinframe/{model}/1", "config": json.dumps(config, sort_keys=True)}
        atomic_write(path, lambda p: save_file(tensors, str(p), metadata=meta))
        return
    import torch

    obj = {"model": tensors, "model_name": model, "config": json.dumps(config, sort_keys=True)}
    obj.update(extras or {})
    atomic_write(path, lambda p: torch.save(obj, str(p)))


def read_jax(path: str | Path) -> tuple[dict, dict[str, Any]]:
    """-> (tree, meta) from an `.npz` file or an orbax directory written by `write_jax`."""
    path = Path(path)
    if path.suffix == ".npz":
        return _read_npz(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such orbax checkpoint directory")
    meta_path = path / META_FILE
    if not meta_path.is_file() or not (path / "tree").is_dir():
        raise CheckpointError(f"{path}: not a twinframe orbax checkpoint (no {META_FILE} or tree/)")
    try:
        meta = json.loads(meta_path.read_text())
        import orbax.checkpoint as ocp

        with ocp.StandardCheckpointer() as ckptr:
            tree = ckptr.restore((path / "tree").absolute())
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path}: unreadable orbax checkpoint ({first_line(e)})") from None
    tree = jax_tree_to_numpy(normalize_tree_keys(tree))
    return tree, meta


def _read_npz(path: Path) -> tuple[dict, dict[str, Any]]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path}: not a valid .npz file ({first_line(e)})") from None
    meta_raw = arrays.pop("__twinframe__", None)
    meta = json.loads(bytes(meta_raw).decode()) if meta_raw is not None else {}
    flat = {tuple(k.split("/")): v for k, v in arrays.items()}
    return normalize_tree_keys(unflatten_tree(flat)), meta


def write_jax(
    path: str | Path, tree: dict, model: str, config: dict, extra_meta: dict | None = None
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

        atomic_write(path, write_npz)
        return

    def write_orbax(p: Path) -> None:
        import orbax.checkpoint as ocp

        p.mkdir()
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save((p / "tree").absolute(), tree)
            ckptr.wait_until_finished()
        (p / META_FILE).write_text(json.dumps(meta))

    atomic_write(path, write_orbax, is_dir=True)


def jax_tree_to_numpy(tree: Any) -> Any:
    flat = flatten_tree(tree)
    return unflatten_tree({k: np.asarray(v) for k, v in flat.items()})


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]
