"""Convert checkpoint files between frameworks: validate everything, then write atomically.

Direction comes from the file types (`io.kind_of`). The model and config come from the file's
metadata when present; `config` (a preset name or dict) is required for foreign files and must
agree with the metadata when both exist.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from twinframe.errors import CheckpointError
from twinframe.parity import io

log = logging.getLogger(__name__)


def resolve_config(spec, file_cfg: dict | None, requested: str | None):
    """The config to convert with; a disagreement names the first differing field."""
    if file_cfg is None and requested is None:
        raise CheckpointError("file carries no config: pass --config (e.g. tiny or full)")
    if file_cfg is None:
        return spec.config(requested)
    try:
        cfg = spec.config_cls.from_dict(file_cfg)
    except Exception as e:  # noqa: BLE001 - ConfigError or TypeError from a damaged config
        raise CheckpointError(f"config in file is invalid: {e}") from None
    if requested is not None:
        want = spec.config(requested)
        for k, v in want.to_dict().items():
            if cfg.to_dict()[k] != v:
                raise CheckpointError(
                    f"config mismatch: file has {k}={cfg.to_dict()[k]!r}, "
                    f"--config {requested} has {k}={v!r}"
                )
    return cfg


def read_any(path: Path) -> tuple[str, Any, dict]:
    """-> (kind, payload, meta): payload is a torch-layout state or a pytree."""
    kind = io.kind_of(path)
    payload, meta = io.read_torch(path) if kind == "torch" else io.read_jax(path)
    return kind, payload, meta


def convert_file(
    src: str | Path,
    dst: str | Path,
    model: str | None = None,
    config: str | None = None,
    dtype: str = "float32",
) -> dict[str, Any]:
    """Convert `src` to `dst`; returns a summary. Raises CheckpointError before writing."""
    from twinframe import registry

    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise CheckpointError("source and destination are the same path")
    kind, payload, meta = read_any(src)
    name = model or meta.get("model") or "hrm"
    if meta.get("model") and model and meta["model"] != model:
        raise CheckpointError(f"file holds model '{meta['model']}', not '{model}'")
    spec = registry.get(name)
    cfg = resolve_config(spec, meta.get("config"), config)
    table = spec.table(cfg)
    state = payload if kind == "torch" else table.tree_to_torch(payload)
    tree = table.torch_to_tree(state)  # validates keys, shapes and dtypes both ways
    if io.kind_of(dst) == "torch":
        io.write_torch(dst, table.tree_to_torch(tree), name, cfg.to_dict(), dtype=dtype)
    else:
        io.write_jax(dst, tree, name, cfg.to_dict())
    log.info("converted %s (%s) -> %s", src, kind, dst)
    return {"model": name, "from": kind, "to": io.kind_of(dst), "tensors": len(state)}


def convert_train_state(state: dict[str, Any], table, to: str) -> dict[str, Any]:
    """Map a full train state between framework layouts (spec hrm §3.3, §6.5).

    torch: model = state_dict, opt = {step, exp_avg: {name: m}, exp_avg_sq: {name: v}};
    jax:   model = {params, consts}, opt = {count, mu, nu} (trees shaped like params).
    Moments take their parameter's rule (kernels transposed); the step count is kept; carry,
    host state and config are framework-neutral and pass through unchanged."""
    if state["framework"] == to:
        return state
    psub = table.subtable("params")
    out = {k: v for k, v in state.items() if k not in ("model", "opt", "framework")}
    if to == "jax":
        opt = state["opt"]
        out["model"] = table.torch_to_tree(state["model"])
        out["opt"] = {"count": np.asarray(int(round(float(opt["step"]))), np.int32),
                      "mu": psub.torch_to_tree(opt["exp_avg"]),
                      "nu": psub.torch_to_tree(opt["exp_avg_sq"])}
    elif to == "torch":
        opt = state["opt"]
        out["model"] = table.tree_to_torch(state["model"])
        out["opt"] = {"step": float(np.asarray(opt["count"])),
                      "exp_avg": psub.tree_to_torch(opt["mu"]),
                      "exp_avg_sq": psub.tree_to_torch(opt["nu"])}
    else:
        raise CheckpointError(f"unknown framework '{to}'")
    out["framework"] = to
    return out
