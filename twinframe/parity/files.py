"""Convert checkpoint files between frameworks: validate everything, then write atomically.

Direction comes from the file types (`io.kind_of`). The model and its config come, in order,
from `--model`/`--config`, the file's twinframe metadata, or the key set and shapes
(`ModelSpec.recognise` of every registered model; for JAX files without metadata, the presets'
layouts). Only the model config (architecture) must agree between a given `--config` and the
file; run settings (lr, batch, ...) never matter here.

Order of work (nothing is read that a check could have refused, nothing written before every
check passed): destination (`store.dest`), the source's structure (`store.readers.probe`:
headers, sizes, metadata), model and config (bounded by `ModelSpec.layout_size`, then the
layout's names, shapes and dtypes against the file's), data, NaN/Inf, conversion, write.

Round trips keep what the file was: the torch dtype of every tensor and the source layout
(`reference`: a bare state_dict / a safetensors file without metadata, as the models' public
code saves them; `twinframe`: with twinframe's metadata) are recorded in the JAX checkpoint's
metadata and restored on the way back. A torch optimizer file (`--optimizer`) travels in the
JAX checkpoint under `opt/` and comes back as the same `state_dict`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from twinframe.contract import ModelSpec, StateDict
from twinframe.errors import CheckpointError, TwinframeError
from twinframe.models.base import FrozenConfig
from twinframe.models.layout import Table, path_str, unflatten_tree
from twinframe.store import checkpoint, dest, io, readers, torch_optim
from twinframe.store import validate as v

log = logging.getLogger(__name__)

FLOAT_DTYPES = ("float32", "bfloat16", "float16")
LAYOUTS = ("twinframe", "reference")
OPT_ROOT = "opt"
_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "str": (str,),
                                       "bool": (bool,)}
INT_BOUND = 2**31


# ----------------------------------------------------------------------------------------------
# configs from files


def config_from_file(spec: ModelSpec, data: Any, path: str | Path, n_tensors: int | None = None,
                     key: str = "config", max_dim: int = 0) -> FrozenConfig:
    """A model config from a file's JSON: an object of known fields with values of the field's
    type (integers within +-2**31, finite floats), valid, and (with `n_tensors`) implying a
    layout no larger than the file could hold, checked before any layout is built."""
    if not isinstance(data, Mapping):
        raise v.fail(path, f"is {v.an(type(data).__name__)}, not an object", key)
    fields = {f.name: f for f in dataclasses.fields(spec.config_cls)}
    unknown = sorted(set(map(str, data)) - set(fields))
    if unknown:
        raise v.fail(path, f"{v.q(unknown[0])} is not {v.an(spec.name)} config field "
                     f"({len(unknown)} unknown in all)", key)
    for name, x in data.items():
        _check_field_type(spec, fields[name], x, path, f"{key}.{name}")
    try:
        cfg = spec.config_cls.from_dict(dict(data))
    except TwinframeError as e:
        raise v.fail(path, f"invalid {spec.name} config: {e}", key) from None
    except Exception as e:  # noqa: BLE001 - any rejection of a damaged config: one line
        raise v.fail(path, f"invalid {spec.name} config ({v.first_line(e)})", key) from None
    check_size(spec, cfg, path, n_tensors, max_dim)
    return cfg


def _check_field_type(spec: ModelSpec, f: dataclasses.Field, x: Any, path: str | Path,
                      key: str) -> None:
    ann = str(f.type).replace(" ", "")
    optional = "None" in ann.split("|")
    base = next((p for p in ann.split("|") if p != "None"), "")
    if x is None:
        if optional:
            return
        raise v.fail(path, "is null", key)
    want = _TYPES.get(base)
    if want is None:
        return
    ok = isinstance(x, want) and (base == "bool" or not isinstance(x, bool))
    if not ok:
        raise v.fail(path, f"is {v.an(type(x).__name__)}, want {base}", key)
    if isinstance(x, int) and not isinstance(x, bool) and not -INT_BOUND <= x < INT_BOUND:
        raise v.fail(path, f"{x} is out of range", key)
    if isinstance(x, float) and not np.isfinite(x):
        raise v.fail(path, "is not finite", key)
    if isinstance(x, str) and len(x) > 256:
        raise v.fail(path, f"is {len(x)} characters long", key)


FALLBACK_INT_BOUND = 65536


def check_size(spec: ModelSpec, cfg: FrozenConfig, path: str | Path, n_tensors: int | None,
               max_dim: int = 0) -> None:
    """Refuse a config whose layout is far larger than the file's tensor count, before the
    layout is built (a small file claiming a million layers). Models without
    `ModelSpec.layout_size`: every integer field at most max(65536, 4 x tensors, the largest
    dimension in the file), or a value one of the model's presets uses."""
    if n_tensors is None:
        return
    if spec.layout_size is None:
        bound = max(FALLBACK_INT_BOUND, 4 * n_tensors, max_dim)
        known = {(k, x) for p in spec.presets.values() for k, x in p.model.to_dict().items()}
        for k, x in cfg.to_dict().items():
            if type(x) is int and abs(x) > bound and (k, x) not in known:
                raise v.fail(path, f"{x} is larger than this file could need ({bound})",
                             f"config.{k}")
        return
    rows = spec.layout_size(cfg)
    if rows > max(4 * n_tensors, 64):
        raise v.fail(path, f"config implies {rows} tensors, the file holds {n_tensors}",
                     "config")


def resolve_config(spec: ModelSpec, file_cfg: dict | None, requested: str | None,
                   state: StateDict | None = None, path: str | Path = "file"
                   ) -> FrozenConfig:
    """The model config to convert with; a disagreement names the first differing field."""
    if file_cfg is None and requested is None:
        found = spec.recognise(state) if state is not None else None
        if found is None:
            raise CheckpointError(f"{v.show(path)}: file carries no config and its tensors do "
                                  f"not look like a {spec.name} model: pass --config")
        return found
    if file_cfg is None:
        return spec.config(requested)
    shapes = {k: ("", np.shape(x)) for k, x in (state or {}).items()}
    cfg = config_from_file(spec, file_cfg, path, len(state) if state is not None else None,
                           max_dim=_max_dim(shapes))
    if requested is not None:
        _agree(spec, cfg, requested, path)
    return cfg


def _agree(spec: ModelSpec, cfg: FrozenConfig, requested: str, path: str | Path) -> None:
    """Only the architecture (the model config) must agree with `--config`."""
    want = spec.config(requested).to_dict()
    have = cfg.to_dict()
    for k, x in want.items():
        if have.get(k) != x:
            raise CheckpointError(
                f"{v.show(path)}: config mismatch: file has {k}={have.get(k)!r}, --config "
                f"{requested} has {k}={x!r}")


# ----------------------------------------------------------------------------------------------
# recognition


@dataclasses.dataclass(frozen=True)
class Identified:
    spec: ModelSpec
    cfg: FrozenConfig
    how: str  # "--config", "metadata", "recognised", "preset shapes"

    @property
    def preset(self) -> str | None:
        return next((k for k, p in self.spec.presets.items() if p.model == self.cfg), None)


def _registry():
    from twinframe import registry

    return registry


def recognise_model(state: Mapping[str, Any], path: str | Path = "file"
                    ) -> tuple[ModelSpec, FrozenConfig]:
    """The one registered model whose `recognise` accepts this torch-layout state (arrays or
    shape-only placeholders)."""
    reg = _registry()
    hits = []
    for name in reg.MODELS:
        spec = reg.get(name)
        try:
            cfg = spec.recognise(state)
        except Exception:  # noqa: BLE001 - a recogniser choking on odd shapes = "not this one"
            cfg = None
        if cfg is not None:
            hits.append((spec, cfg))
    if not hits:
        raise v.fail(path, f"its keys and shapes match no registered model "
                     f"({', '.join(reg.MODELS)}): pass --model and --config")
    if len(hits) > 1:
        raise v.fail(path, "its keys and shapes match several models: "
                     f"{', '.join(_describe(s, c) for s, c in hits)}; pass --model")
    return hits[0]


def _describe(spec: ModelSpec, cfg: FrozenConfig) -> str:
    name = next((k for k, p in spec.presets.items() if p.model == cfg), None)
    return f"{spec.name} ({'preset ' + name if name else 'custom config'})"


def _tree_want(table: Table) -> dict[str, tuple[tuple[int, ...], str]]:
    return {path_str(r.path): (r.jax_shape, r.jax_dtype() if hasattr(r, "jax_dtype") else
                               "float32") for r in table.rows}


def _torch_want(table: Table) -> dict[str, tuple[tuple[int, ...], str]]:
    return {r.torch_key: (r.shape, getattr(r, "dtype", "float32")) for r in table.rows}


def match_presets(index: Mapping[str, tuple[str, tuple[int, ...]]], specs: list[ModelSpec]
                  ) -> list[tuple[ModelSpec, FrozenConfig]]:
    """(spec, preset config) whose JAX layout has exactly these tree paths and shapes (the
    first preset of each model that fits)."""
    hits = []
    for spec in specs:
        for p in spec.presets.values():
            want = _tree_want(spec.layout(p.model).table)
            if set(want) == set(index) and all(tuple(index[k][1]) == want[k][0] for k in want):
                hits.append((spec, p.model))
                break
    return hits


def identify(p: readers.Probe, model: str | None = None, config: str | None = None,
             index: Mapping[str, tuple[str, tuple[int, ...]]] | None = None) -> Identified:
    """Model and config of a probed file: --model/--config, metadata, or keys and shapes."""
    reg = _registry()
    index = p.index if index is None else index
    path = p.path
    meta_model = p.meta.get("model")
    if meta_model is not None and meta_model not in reg.MODELS:
        raise v.fail(path, f"names the model {v.q(meta_model)}, which is not registered "
                     f"({', '.join(reg.MODELS)})", "model")
    if model is not None:
        if model not in reg.MODELS:
            raise TwinframeError(f"unknown model {v.q(model)} (have {', '.join(reg.MODELS)})")
        if meta_model and meta_model != model:
            raise v.fail(path, f"holds the model {v.q(meta_model)}, not {v.q(model)}")
    name = model or meta_model
    file_cfg = p.meta.get("config")
    n, max_dim = len(index), _max_dim(index)
    if name is None and file_cfg is not None:
        fits = [s for s in reg.MODELS if _config_fits(reg.get(s), file_cfg, path, n, max_dim)]
        name = fits[0] if len(fits) == 1 else None
    if name is None:
        specs = [reg.get(s) for s in reg.MODELS]
        if p.kind == "torch":
            spec, found = recognise_model(_placeholders(index), path)
            how = "recognised"
        else:
            hits = match_presets(index, specs)
            if not hits:
                raise v.fail(path, "names no model and its tree matches no preset of "
                             f"{', '.join(reg.MODELS)}: pass --model and --config")
            if len(hits) > 1:
                raise v.fail(path, "its tree matches several models: "
                             f"{', '.join(_describe(s, c) for s, c in hits)}; pass --model")
            spec, found = hits[0]
            how = "preset shapes"
        if config is not None:
            return Identified(spec, spec.config(config), "--config")
        return Identified(spec, found, how)
    spec = reg.get(name)
    if file_cfg is not None:
        cfg = config_from_file(spec, file_cfg, path, n, max_dim=max_dim)
        if config is not None:
            _agree(spec, cfg, config, path)
        return Identified(spec, cfg, "metadata")
    if config is not None:
        return Identified(spec, spec.config(config), "--config")
    if p.kind == "torch":
        try:
            found = spec.recognise(_placeholders(index))
        except Exception:  # noqa: BLE001
            found = None
        how = "recognised"
    else:
        hits = match_presets(index, [spec])
        found = hits[0][1] if hits else None
        how = "preset shapes"
    if found is None:
        raise v.fail(path, f"carries no config and its tensors do not look like a {spec.name} "
                     "model: pass --config")
    return Identified(spec, found, how)


def _max_dim(index: Mapping[str, tuple[str, tuple[int, ...]]]) -> int:
    return max((max(s, default=0) for _, s in index.values()), default=0)


def _config_fits(spec: ModelSpec, data: Any, path: Path, n: int, max_dim: int) -> bool:
    try:
        config_from_file(spec, data, path, n, max_dim=max_dim)
        return True
    except TwinframeError:
        return False


def _placeholders(index: Mapping[str, tuple[str, tuple[int, ...]]]) -> dict[str, np.ndarray]:
    return readers.Probe(Path("."), "", dict(index), {}, "").placeholders()


def check_index(path: Path, index: Mapping[str, tuple[str, tuple[int, ...]]],
                want: Mapping[str, tuple[tuple[int, ...], str]], what: str) -> None:
    """Names, shapes and dtypes of a file against a layout, before any data is read."""
    missing = sorted(set(want) - set(index))
    extra = sorted(set(index) - set(want))
    if missing:
        raise v.fail(path, f"missing {what} ({len(missing)} missing in all; "
                     f"{len(extra)} unexpected)", missing[0])
    if extra:
        raise v.fail(path, f"unexpected {what} ({len(extra)} unexpected in all)", extra[0])
    for k, (shape, dt) in want.items():
        have_dt, have_shape = index[k]
        if tuple(have_shape) != tuple(shape):
            raise v.fail(path, f"shape {tuple(have_shape)} does not match the config's "
                         f"{tuple(shape)}", k)
        if dt in ("float32",) and have_dt not in FLOAT_DTYPES:
            raise v.fail(path, f"dtype {have_dt} not supported (want float32, bfloat16 or "
                         "float16)", k)
        if dt not in ("float32",) and not (have_dt.startswith(("int", "uint")) or
                                           have_dt in FLOAT_DTYPES):
            raise v.fail(path, f"dtype {have_dt} is not an integer counter", k)


# ----------------------------------------------------------------------------------------------
# reading


@dataclasses.dataclass
class Source:
    """A validated, loaded source: torch-layout state, its identity, what it was."""

    probe: readers.Probe
    ident: Identified
    state: StateDict                       # torch layout, arrays as stored (dtypes kept)
    dtypes: dict[str, str]                 # torch dtype of every key (what to write back)
    layout: str                            # 'twinframe' | 'reference'
    opt_tree: dict[str, Any] | None = None  # JAX optimizer subtree (from a JAX checkpoint)
    filled: tuple[str, ...] = ()           # keys the reference code does not save, filled
    nested: bool = False                   # the reference .pt held one state_dict per module
    ignored: tuple[str, ...] = ()          # keys of parts the model excludes, left out


def reference_fill(p: readers.Probe, model: str | None = None) -> StateDict:
    """The keys a bare torch file lacks because the model's reference code does not save them
    (`ModelSpec.reference`), filled as the spec loads such files; {} for any other file."""
    if p.kind != "torch" or p.layout != "reference":
        return {}
    reg = _registry()
    names = [model] if model in reg.MODELS else list(reg.MODELS)
    shapes = p.placeholders()
    for name in names:
        form = reg.get(name).reference
        fill = form.fill(shapes) if form is not None else {}
        if fill:
            return {k: x for k, x in fill.items() if k not in shapes}
    return {}


def reference_ignored(p: readers.Probe, model: str | None = None) -> frozenset[str]:
    """Keys of a bare torch file that the reference code saves for parts the model excludes
    (`ReferenceForm.ignores`, e.g. a discriminator): left out of the conversion."""
    if p.kind != "torch" or p.layout != "reference":
        return frozenset()
    reg = _registry()
    forms = [reg.get(n).reference for n in ([model] if model in reg.MODELS else reg.MODELS)]
    return frozenset(k for k in p.index
                     if any(f is not None and f.ignores(k) for f in forms))


def _meta_keys(meta: Mapping[str, Any], key: str) -> tuple[str, ...]:
    x = meta.get(key)
    return tuple(x) if isinstance(x, list) and all(isinstance(k, str) for k in x) else ()


def read_source(src: Path, model: str | None, config: str | None, allow_nonfinite: bool
                ) -> Source:
    p = readers.probe(src)
    model_index = {k: x for k, x in p.index.items()
                   if not (p.kind == "jax" and "optimizer" in p.meta and
                           k.split("/")[0] == OPT_ROOT)}
    ignored = reference_ignored(p, model)
    model_index = {k: x for k, x in model_index.items() if k not in ignored}
    fill = reference_fill(p, model)
    model_index.update({k: (x.dtype.name, tuple(x.shape)) for k, x in fill.items()})
    ident = identify(p, model, config, model_index)
    form = ident.spec.reference
    if ignored and (form is None or not all(form.ignores(k) for k in ignored)):
        model_index.update({k: p.index[k] for k in ignored})  # another model's: report them
        ignored = frozenset()
    table = ident.spec.layout(ident.cfg).table
    filled, nested = tuple(fill), p.nested
    if p.kind == "torch":
        check_index(src, model_index, _torch_want(table), "key")
        state = {**p.load([k for k in p.index if k not in ignored]), **fill}
        v.check_finite(state, src, allow_nonfinite)
        dtypes = {k: state[k].dtype.name for k in state}
        layout = p.layout
        opt_tree = None
    else:
        check_index(src, model_index, _tree_want(table), "tree path")
        flat = p.load()
        v.check_finite(flat, src, allow_nonfinite)
        tree = unflatten_tree({tuple(k.split("/")): x for k, x in flat.items()
                               if k in model_index})
        try:
            state = table.tree_to_torch(tree)
        except CheckpointError as e:
            raise CheckpointError(f"{v.show(src)}: {e}") from None
        recorded = p.meta.get("torch_dtypes")
        dtypes = {}
        by_path = {r.torch_key: path_str(r.path) for r in table.rows}
        for k in state:
            rec = recorded.get(k) if isinstance(recorded, dict) else None
            leaf = flat[by_path[k]].dtype.name
            dtypes[k] = rec if isinstance(rec, str) and rec in (*FLOAT_DTYPES, "int64") else (
                leaf if leaf in FLOAT_DTYPES else state[k].dtype.name)
        layout = p.meta.get("source_layout", "twinframe")
        layout = layout if layout in LAYOUTS else "twinframe"
        filled = tuple(k for k in _meta_keys(p.meta, "reference_filled") if k in state)
        nested = p.meta.get("source_nested") is True
        opt_tree = None
        if "optimizer" in p.meta:
            opt_flat = {tuple(k.split("/")[1:]): x for k, x in flat.items()
                        if k.split("/")[0] == OPT_ROOT}
            opt_tree = unflatten_tree(opt_flat) if opt_flat else None
    return Source(p, ident, state, dtypes, layout, opt_tree, filled, nested, tuple(sorted(ignored)))


def read_any(path: Path) -> tuple[str, Any, dict]:
    """-> (kind, payload, meta): payload is a torch-layout state or a pytree (validated files;
    an optimizer subtree `opt/` of a converted reference optimizer is left out)."""
    p = readers.probe(Path(path))
    data = p.load()
    if p.kind == "torch":
        meta = dict(p.meta)
        return "torch", data, meta
    flat = {tuple(k.split("/")): x for k, x in data.items()
            if not ("optimizer" in p.meta and k.split("/")[0] == OPT_ROOT)}
    from twinframe.models.layout import normalize_tree_keys

    return "jax", normalize_tree_keys(unflatten_tree(flat)), p.meta


# ----------------------------------------------------------------------------------------------
# convert


def convert_file(
    src: str | Path,
    dst: str | Path,
    model: str | None = None,
    config: str | None = None,
    dtype: str | None = None,
    *,
    force: bool = False,
    allow_nonfinite: bool = False,
    layout: str | None = None,
    optimizer: str | Path | None = None,
) -> dict[str, Any]:
    """Convert `src` to `dst`; returns a summary. Raises CheckpointError before writing.

    dtype: float dtype of torch outputs (None: each tensor's source dtype). layout: of torch
    outputs ('twinframe' | 'reference'; None: the source's). optimizer: a torch optimizer file,
    read (torch -> JAX) or written (JAX -> torch) next to the model."""
    src, dst = Path(src), Path(dst)
    out_kind = io.kind_of(dst)
    if layout is not None and layout not in LAYOUTS:
        raise CheckpointError(f"--layout must be one of {', '.join(LAYOUTS)}")
    if dtype is not None and dtype not in FLOAT_DTYPES:
        raise CheckpointError(f"--dtype must be one of {', '.join(FLOAT_DTYPES)}")
    in_kind = io.kind_of(src)
    if optimizer is not None and in_kind == out_kind:
        raise CheckpointError("--optimizer converts between a torch optimizer file and a JAX "
                              "checkpoint (one side must be torch, the other JAX)")
    sources = [src] + ([Path(optimizer)] if optimizer is not None and in_kind == "torch" else [])
    out_is_dir = out_kind == "jax" and dst.suffix != ".npz"
    replace = dest.check_destination(dst, sources, force, out_is_dir)
    opt_replace = False
    if optimizer is not None and out_kind == "torch":
        opt_replace = dest.check_destination(optimizer, [src], force, False)
        if os.path.abspath(optimizer) == os.path.abspath(dst):
            raise CheckpointError("--optimizer and the destination are the same path")
    s = read_source(src, model, config, allow_nonfinite)
    spec, cfg = s.ident.spec, s.ident.cfg
    lay = spec.layout(cfg)
    table = lay.table
    tree = table.torch_to_tree(s.state)  # validates keys, shapes and dtypes both ways
    summary: dict[str, Any] = {
        "model": spec.name, "from": s.probe.kind, "to": out_kind, "tensors": len(s.state),
        "config": s.ident.preset or "custom", "how": s.ident.how, "optimizer": None}
    if s.filled:
        summary["filled"] = list(s.filled)
    if s.ignored:
        summary["ignored"] = list(s.ignored)
    if s.probe.meta.get("wrapped"):
        summary["wrapped"] = list(s.probe.meta["wrapped"])
    if out_kind == "torch":
        out_layout = layout or s.layout
        dtypes = {k: (dtype if dtype is not None and s.dtypes[k] in FLOAT_DTYPES else
                      s.dtypes[k]) for k in s.state}
        state = table.tree_to_torch(tree)
        drop = _reference_drops(spec, s, out_layout, state)
        state = {k: x for k, x in state.items() if k not in drop}
        dtypes = {k: d for k, d in dtypes.items() if k not in drop}
        opt_sd = None
        if optimizer is not None:
            info = s.probe.meta.get("optimizer")
            if s.opt_tree is None or not isinstance(info, dict):
                raise v.fail(src, "holds no optimizer state to write to --optimizer")
            try:
                opt_sd = torch_optim.state_dict(torch_optim.from_jax(s.opt_tree, lay), lay, info)
            except CheckpointError as e:
                raise CheckpointError(f"{v.show(src)}: optimizer: {e}") from None
            except (KeyError, TypeError, ValueError) as e:
                raise v.fail(src, f"optimizer metadata is damaged ({v.first_line(e)})",
                             "optimizer") from None
        existed = os.path.lexists(dst)
        io.write_torch(dst, state, spec.name, cfg.to_dict(), dtype=dtypes, layout=out_layout,
                       replace=replace, nested=s.nested and out_layout == "reference")
        if opt_sd is not None:
            import torch

            try:
                io.atomic_write(Path(optimizer), lambda p: torch.save(opt_sd, str(p)),
                                replace=opt_replace)
            except BaseException:
                if not existed:
                    Path(dst).unlink(missing_ok=True)
                raise
            summary["optimizer"] = str(optimizer)
        elif s.opt_tree is not None:
            summary["optimizer_skipped"] = True
        summary["layout"] = out_layout
        summary["dtype"] = _dtype_summary(dtypes)
    else:
        if layout is not None:
            raise CheckpointError("--layout applies to torch outputs (.safetensors/.pt/.pth)")
        extra = {"source_layout": s.layout, "torch_dtypes": s.dtypes,
                 "source_format": s.probe.format}
        if s.filled:
            extra["reference_filled"] = list(s.filled)
        if s.nested:
            extra["source_nested"] = True
        if optimizer is not None:
            opt, info = torch_optim.read(optimizer, lay, allow_nonfinite)
            tree = {**tree, OPT_ROOT: torch_optim.to_jax(opt, lay)}
            extra["optimizer"] = info
            summary["optimizer"] = str(optimizer)
        elif s.opt_tree is not None:
            tree = {**tree, OPT_ROOT: s.opt_tree}
            extra["optimizer"] = s.probe.meta["optimizer"]
        io.write_jax(dst, tree, spec.name, cfg.to_dict(), extra, replace=replace)
        summary["layout"] = s.layout
        summary["dtype"] = _dtype_summary(s.dtypes)
    log.info("converted %s (%s) -> %s", src, s.probe.kind, dst)
    return summary


def _reference_drops(spec: ModelSpec, s: Source, out_layout: str, state: StateDict
                     ) -> set[str]:
    """Keys a reference-layout output leaves out: those filled on reading it, or (asked for
    the reference layout of a twinframe file) every key the reference code does not save.
    Values that are not zero (what the reference starts from) are lost: logged."""
    if out_layout != "reference" or spec.reference is None:
        return set()
    if s.layout == "reference":
        drop = set(s.filled)
    else:
        drop = {k for k in state if not spec.reference.saves(k)}
    lost = sorted(k for k in drop if np.any(np.asarray(state[k]) != 0))
    if lost:
        log.warning("the reference layout does not save %d keys; non-zero values of %s "
                    "are left out", len(drop), ", ".join(lost[:3]) + (" ..." * (len(lost) > 3)))
    return drop


def _dtype_summary(dtypes: Mapping[str, str]) -> str:
    counts: dict[str, int] = {}
    for d in dtypes.values():
        counts[d] = counts.get(d, 0) + 1
    if len(counts) == 1:
        return next(iter(counts))
    return ", ".join(f"{d} x{n}" for d, n in sorted(counts.items(), key=lambda kv: -kv[1]))


# ----------------------------------------------------------------------------------------------
# inspect


def inspect_file(path: str | Path) -> dict[str, Any]:
    """What a checkpoint is, without converting it: format, layout, model, config, dtypes,
    tensor and parameter counts, non-finite values, twinframe metadata."""
    path = Path(path)
    p = readers.probe(path)
    out: dict[str, Any] = {"file": str(path), "format": p.format, "kind": p.kind,
                           "layout": p.layout, "tensors": len(p.index),
                           "parameters": sum(v.count(s) for _, s in p.index.values())}
    counts: dict[str, int] = {}
    for d, _ in p.index.values():
        counts[d] = counts.get(d, 0) + 1
    out["dtypes"] = counts
    model_index = {k: x for k, x in p.index.items()
                   if not (p.kind == "jax" and "optimizer" in p.meta and
                           k.split("/")[0] == OPT_ROOT)}
    fill = reference_fill(p)
    model_index.update({k: (x.dtype.name, tuple(x.shape)) for k, x in fill.items()})
    if fill:
        out["filled"] = sorted(fill)
    try:
        ident = identify(p, index=model_index)
        out["model"], out["config"] = ident.spec.name, ident.cfg.to_dict()
        out["preset"], out["recognised_by"] = ident.preset, ident.how
        table = ident.spec.layout(ident.cfg).table
        want = _torch_want(table) if p.kind == "torch" else _tree_want(table)
        check_index(path, model_index, want, "key" if p.kind == "torch" else "tree path")
        out["matches_layout"] = True
    except CheckpointError as e:
        out.setdefault("model", None)
        out["problem"] = str(e)
        out["matches_layout"] = False
    data = p.load()
    n_vals, n_tensors, first = v.nonfinite(data)
    out["nonfinite"] = {"values": n_vals, "tensors": n_tensors, "first": first}
    out["metadata"] = p.meta or None
    if p.kind == "torch" and p.extras:
        out["extras"] = sorted(str(k) for k in p.extras if k not in ("model", "config"))
    return out


# ----------------------------------------------------------------------------------------------
# model weights for other commands


def read_model_state(spec: ModelSpec, path: str | Path, config: str | None
                     ) -> tuple[FrozenConfig, StateDict, str]:
    """Torch-layout weights of `spec` from a model file, a train-state checkpoint or a train
    directory (its newest checkpoint) -> (model config, state, run preset name)."""
    path = Path(path)
    if path.is_dir() and not (path / io.META_FILE).exists():
        path = checkpoint.latest(path)
    if checkpoint.PATTERN.match(path.name) and (path.suffix == ".pt" or path.is_dir()):
        ts = checkpoint.load(path)
        cfg = resolve_config(spec, ts["config"], config, path=path)
        model = ts["model"] if ts["framework"] == "torch" else \
            spec.layout(cfg).table.tree_to_torch(ts["model"])
    else:
        s = read_source(path, spec.name, config, allow_nonfinite=False)
        cfg = s.ident.cfg
        model = {k: np.asarray(x, np.float32) if x.dtype.name in FLOAT_DTYPES else x
                 for k, x in s.state.items()}
    preset = config or next((k for k, p in spec.presets.items() if p.model == cfg),
                            next(iter(spec.presets)))
    return cfg, model, preset
