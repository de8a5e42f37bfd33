"""Convert checkpoint files between frameworks: validate everything, then write atomically.

Direction comes from the file types (`io.kind_of`). The model and its config come, in order,
from `--model`/`--config`, the file's twinframe metadata, or the key set and shapes
(`ModelSpec.recognise` of every registered model). Only the model config (architecture) must
agree between a given `--config` and the file; run settings (lr, batch, ...) never matter here.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from twinframe.contract import ModelSpec, StateDict
from twinframe.errors import CheckpointError
from twinframe.models.base import FrozenConfig
from twinframe.store import checkpoint, io

log = logging.getLogger(__name__)


def resolve_config(spec: ModelSpec, file_cfg: dict | None, requested: str | None,
                   state: StateDict | None = None) -> FrozenConfig:
    """The model config to convert with; a disagreement names the first differing field."""
    if file_cfg is None and requested is None:
        found = spec.recognise(state) if state is not None else None
        if found is None:
            raise CheckpointError(f"file carries no config and its tensors do not look like a "
                                  f"{spec.name} model: pass --config")
        return found
    if file_cfg is None:
        return spec.config(requested)
    try:
        cfg = spec.config_cls.from_dict(file_cfg)
    except Exception as e:  # noqa: BLE001 - ConfigError or TypeError from a damaged config
        raise CheckpointError(f"config in file is invalid: {e}") from None
    if requested is not None:
        want = spec.config(requested).to_dict()
        for k, v in want.items():
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


def recognise_model(state: StateDict) -> tuple[ModelSpec, FrozenConfig]:
    """The one registered model whose `recognise` accepts this torch-layout state."""
    from twinframe import registry

    hits = []
    for name in registry.MODELS:
        spec = registry.get(name)
        cfg = spec.recognise(state)
        if cfg is not None:
            hits.append((spec, cfg))
    if not hits:
        raise CheckpointError(f"no registered model ({', '.join(registry.MODELS)}) matches the "
                              "file's keys and shapes: pass --model and --config")
    if len(hits) > 1:
        raise CheckpointError("the file matches several models: "
                              f"{', '.join(s.name for s, _ in hits)}; pass --model")
    return hits[0]


def _model_of_config(file_cfg: Any) -> str | None:
    """The one registered model whose config class accepts the file's config dict."""
    from twinframe import registry

    if not isinstance(file_cfg, dict):
        return None
    names = []
    for name in registry.MODELS:
        try:
            registry.get(name).config_cls.from_dict(file_cfg)
            names.append(name)
        except Exception:  # noqa: BLE001 - any rejection means "not this model"
            continue
    return names[0] if len(names) == 1 else None


def _spec_and_config(payload: Any, kind: str, meta: dict, model: str | None,
                     config: str | None) -> tuple[ModelSpec, FrozenConfig]:
    from twinframe import registry

    if meta.get("model") and model and meta["model"] != model:
        raise CheckpointError(f"file holds model '{meta['model']}', not '{model}'")
    name = model or meta.get("model") or _model_of_config(meta.get("config"))
    if name is None and kind == "torch":
        spec, found = recognise_model(payload)
        return spec, (found if config is None else spec.config(config))
    if name is None:
        raise CheckpointError("file names no model: pass --model")
    spec = registry.get(name)
    state = payload if kind == "torch" else None
    return spec, resolve_config(spec, meta.get("config"), config, state)


def convert_file(
    src: str | Path,
    dst: str | Path,
    model: str | None = None,
    config: str | None = None,
    dtype: str = "float32",
) -> dict[str, Any]:
    """Convert `src` to `dst`; returns a summary. Raises CheckpointError before writing."""
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise CheckpointError("source and destination are the same path")
    kind, payload, meta = read_any(src)
    spec, cfg = _spec_and_config(payload, kind, meta, model, config)
    table = spec.layout(cfg).table
    state = payload if kind == "torch" else table.tree_to_torch(payload)
    tree = table.torch_to_tree(state)  # validates keys, shapes and dtypes both ways
    if io.kind_of(dst) == "torch":
        io.write_torch(dst, table.tree_to_torch(tree), spec.name, cfg.to_dict(), dtype=dtype)
    else:
        io.write_jax(dst, tree, spec.name, cfg.to_dict())
    log.info("converted %s (%s) -> %s", src, kind, dst)
    return {"model": spec.name, "from": kind, "to": io.kind_of(dst), "tensors": len(state)}


def read_model_state(spec: ModelSpec, path: str | Path, config: str | None
                     ) -> tuple[FrozenConfig, StateDict, str]:
    """Torch-layout weights of `spec` from a model file, a train-state checkpoint or a train
    directory (its newest checkpoint) -> (model config, state, run preset name)."""
    path = Path(path)
    if path.is_dir() and not (path / io.META_FILE).exists():
        path = checkpoint.latest(path)
    if checkpoint.PATTERN.match(path.name) and (path.suffix == ".pt" or path.is_dir()):
        ts = checkpoint.load(path)
        cfg = resolve_config(spec, ts["config"], config)
        model = ts["model"] if ts["framework"] == "torch" else \
            spec.layout(cfg).table.tree_to_torch(ts["model"])
    else:
        kind, payload, meta = read_any(path)
        state = payload if kind == "torch" else None
        cfg = resolve_config(spec, meta.get("config"), config, state)
        model = payload if kind == "torch" else spec.layout(cfg).table.tree_to_torch(payload)
    preset = config or next((k for k, p in spec.presets.items() if p.model == cfg),
                            next(iter(spec.presets)))
    return cfg, model, preset
