"""Orbax checkpoints of a model's Flax NNX state (`twinframe convert ... --format nnx`).

On disk, a directory:
- `state/`: `nnx.state(module)` saved by orbax's `StandardCheckpointer` (the model's layout
  tree as NNX variables: params at the top level, `consts`/`state` roots; the face's `extra`
  roots as built from those weights, e.g. AIME's EMA teacher; no carry);
- `twinframe.json`: `{"model", "config", "format": "twinframe/<model>/nnx/1"}`.

Flax's own recipe loads it (`abstract_module` gives the graphdef and the target state):

    graphdef, abstract = nnx.split(twinframe.flax.abstract_module(name, cfg))
    with ocp.StandardCheckpointer() as c:
        model = nnx.merge(graphdef, c.restore(path / "state", abstract))

`read_nnx`/`load` read it without a target and check every key, shape and dtype against the
layout first (a bad directory is one `CheckpointError` line); they read the weights: training
state outside the layout table (`extra` roots: an EMA teacher) is rebuilt from them, as
`twinframe.flax.module` builds it (Flax's recipe above restores a saved module's whole state,
teacher included). Writes are atomic.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from twinframe.contract import ModelSpec, StateDict
from twinframe.errors import CheckpointError, TwinframeError
from twinframe.models.base import FrozenConfig
from twinframe.models.layout import flatten_tree, normalize_tree_keys, unflatten_tree
from twinframe.store import io

STATE_DIR = "state"
FORMAT = "twinframe/{model}/nnx/1"
CARRY = "carry"


def is_nnx(path: str | Path) -> bool:
    """True for a directory written by `write_nnx` (judged by its metadata file only)."""
    meta = Path(path) / io.META_FILE
    if not meta.is_file():
        return False
    try:
        fmt = json.loads(meta.read_text()).get("format", "")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(fmt, str) and fmt.endswith("/nnx/1")


def write_nnx(dst: str | Path, spec: ModelSpec, cfg: FrozenConfig, state_dict: StateDict
              ) -> None:
    """Write the NNX state of `spec` at `cfg` holding the torch-layout weights `state_dict`
    (checked against the layout before anything is written) as an orbax directory."""
    from flax import nnx

    from twinframe.flax.module import module

    model = module(spec.name, cfg, state_dict, rngs=None)
    state = nnx.state(model)
    meta = {"model": spec.name, "config": cfg.to_dict(), "format": FORMAT.format(model=spec.name)}

    def write(p: Path) -> None:
        import orbax.checkpoint as ocp

        p.mkdir()
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save((p / STATE_DIR).absolute(), state)
            ckptr.wait_until_finished()
        (p / io.META_FILE).write_text(json.dumps(meta, sort_keys=True))

    io.atomic_write(Path(dst), write, is_dir=True)


def _meta(path: Path) -> tuple[ModelSpec, FrozenConfig]:
    from twinframe import registry

    if not path.is_dir():
        raise CheckpointError(f"{path}: no such NNX checkpoint directory")
    if not (path / io.META_FILE).is_file() or not (path / STATE_DIR).is_dir():
        raise CheckpointError(f"{path}: not a twinframe NNX checkpoint (no {io.META_FILE} or "
                              f"{STATE_DIR}/)")
    try:
        meta = json.loads((path / io.META_FILE).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable {io.META_FILE} ({io.first_line(e)})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{path}: {io.META_FILE} holds no config")
    name = meta.get("model")
    if not isinstance(name, str) or meta.get("format") != FORMAT.format(model=name):
        raise CheckpointError(f"{path}: {io.META_FILE} names no model in format "
                              f"{FORMAT.format(model='<model>')}")
    try:
        spec = registry.get(name)
        cfg = spec.config_cls.from_dict(meta["config"])
    except TwinframeError as e:
        raise CheckpointError(f"{path}: {e}") from None
    except Exception as e:  # noqa: BLE001 - a damaged config dict (TypeError, ValueError)
        raise CheckpointError(f"{path}: config in {io.META_FILE} is invalid "
                              f"({io.first_line(e)})") from None
    return spec, cfg


def _extra_roots(spec: ModelSpec, cfg: FrozenConfig) -> tuple[str, ...]:
    from twinframe.flax.module import face_of

    return tuple(face_of(spec.name, cfg).extra) if spec.jax_face is not None else ()


def _read_tree(path: str | Path) -> tuple[ModelSpec, FrozenConfig, dict]:
    """-> (spec, cfg, layout tree of NumPy arrays), checked against the layout."""
    path = Path(path)
    spec, cfg = _meta(path)
    try:
        import orbax.checkpoint as ocp

        with ocp.StandardCheckpointer() as ckptr:
            raw = ckptr.restore((path / STATE_DIR).absolute())
    except Exception as e:  # noqa: BLE001 - any orbax/tensorstore failure is one line
        raise CheckpointError(f"{path}: unreadable NNX state ({io.first_line(e)})") from None
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{path}: NNX state is not a mapping")
    flat: dict[tuple, Any] = {}
    skip = {CARRY, *_extra_roots(spec, cfg)}
    for k, v in flatten_tree(dict(raw)).items():  # Variables are saved as {..., 'value': x}
        if k and k[-1] == "value":
            k = k[:-1]
        if not k or k[0] in skip:  # a saved module's carry and extra roots are training state
            continue
        flat[k] = np.asarray(v)
    roots = {r.path[0] for r in spec.layout(cfg).table.rows} - {"params"}
    tree = {"params": {}, **{r: {} for r in roots}}
    lifted = {(k if k[0] in roots else ("params", *k)): v for k, v in flat.items()}
    tree = normalize_tree_keys(unflatten_tree(lifted)) if lifted else tree
    return spec, cfg, tree


def read_nnx(path: str | Path) -> tuple[str, dict[str, Any], StateDict]:
    """An NNX checkpoint -> (model name, config dict, torch-layout state: float32 NumPy)."""
    spec, cfg, tree = _read_tree(path)
    try:
        state = spec.layout(cfg).table.tree_to_torch(tree)  # keys, shapes, dtypes
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    return spec.name, cfg.to_dict(), state


def load(path: str | Path, *, batch_size: int | None = None) -> Any:
    """An NNX checkpoint -> the model's NNX module (`twinframe.flax.module`), checked."""
    from twinframe.flax.module import module

    spec, cfg, tree = _read_tree(path)
    try:
        return module(spec.name, cfg, tree, rngs=None, batch_size=batch_size)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None



def convert_nnx(src: str | Path, dst: str | Path, model: str | None = None,
                config: str | None = None, dtype: str | None = None, *, to_nnx: bool = True,
                force: bool = False, **options: Any) -> dict[str, Any]:
    """`twinframe convert SRC DST --format nnx` (to_nnx) and conversions from an NNX SRC.

    Every other file goes through `parity.files.convert_file` (its checks of hostile inputs,
    model and config resolution, dtypes) by way of a temporary file: SRC -> temp .npz -> NNX
    checkpoint, or NNX checkpoint -> temp .safetensors -> DST (any type `convert` writes; with
    `to_nnx`, another NNX checkpoint). `options` (e.g. allow_nonfinite) pass
    through to `convert_file`. Returns its summary, with 'nnx' as the NNX side's kind."""
    import os
    import tempfile

    from twinframe import registry
    from twinframe.parity.files import convert_file

    src, dst = Path(src), Path(dst)
    kwargs = {k: v for k, v in options.items() if v not in (None, False)}
    if to_nnx and ({"layout", "optimizer"} & set(kwargs) or dtype is not None):
        raise CheckpointError("--format nnx writes float32 model weights only (no --dtype, "
                              "--layout or --optimizer)")
    if src.absolute() == dst.absolute():
        raise CheckpointError("source and destination are the same path")
    if to_nnx and os.path.lexists(dst) and not force:
        raise CheckpointError(f"{dst}: exists (pass --force to replace a checkpoint twinframe "
                              "wrote)")
    if force and not to_nnx:
        kwargs["force"] = True
    if dtype is not None:
        kwargs["dtype"] = dtype
    with tempfile.TemporaryDirectory(prefix="twinframe-nnx-") as tmp:
        mid = Path(tmp) / "weights.safetensors"
        if is_nnx(src):
            name, cfg_dict, state = read_nnx(src)
            if model is not None and model != name:
                raise CheckpointError(f"{src}: holds model '{name}', not '{model}'")
            io.write_torch(mid, state, name, cfg_dict)
            if not to_nnx:
                return {**convert_file(mid, dst, name, config, **kwargs), "from": "nnx"}
            summary = convert_file(mid, Path(tmp) / "check.safetensors", name, config, **kwargs)
            summary["from"] = "nnx"
            spec = registry.get(name)
            cfg = spec.config_cls.from_dict(cfg_dict)
        else:
            mid = Path(tmp) / "weights.npz"  # JAX outputs always carry model and config
            summary = convert_file(src, mid, model, config, **kwargs)
            tree, meta = io.read_jax(mid)
            spec = registry.get(meta["model"])
            cfg = spec.config_cls.from_dict(meta["config"])
            table = spec.layout(cfg).table
            roots = {r.path[0] for r in table.rows}  # leave out an optimizer subtree
            state = table.tree_to_torch({k: v for k, v in tree.items() if k in roots})
        write_nnx(dst, spec, cfg, state)
    return {**summary, "to": "nnx", "dtype": "float32"}
