"""A torch optimizer `state_dict()` file (the AltLAS reference `optimizer_state.pth`, or any
optimizer whose per-parameter state follows a model's declared `Layout` slots) <-> the named
optimizer state of `models.layout` and its JAX form, kept exactly.

Parameter order is the layout's trainable keys (torch's `named_parameters()` order, the index
the optimizer state uses). Everything the file holds besides the moments (the param group's
hyper-parameters, parameter ids, the dtype of `step`, the order of a state entry's fields) is
recorded as JSON (`info`) so that the file written back is the same `state_dict`, bit for bit,
and `torch.optim.*.load_state_dict` accepts it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from twinframe.models.layout import Layout
from twinframe.store import readers
from twinframe.store import validate as v

JSON_SCALARS = (bool, int, float, str, type(None))


def _hyper(path: Path, key: str, x: Any) -> Any:
    if isinstance(x, JSON_SCALARS):
        if isinstance(x, float) and not np.isfinite(x):
            raise v.fail(path, "is not a finite number", f"param_groups[0].{key}")
        return x
    if isinstance(x, list | tuple) and len(x) <= 16 and all(
            isinstance(y, JSON_SCALARS) for y in x):
        return {"__tuple__": list(x)} if isinstance(x, tuple) else list(x)
    raise v.fail(path, f"is {v.an(type(x).__name__)} (only numbers, strings, booleans and short "
                 "lists are kept)", f"param_groups[0].{key}")


def _unhyper(x: Any) -> Any:
    if isinstance(x, dict) and "__tuple__" in x:
        return tuple(x["__tuple__"])
    return x


def read(path: str | Path, layout: Layout, allow_nonfinite: bool = False
         ) -> tuple[dict[str, Any], dict[str, Any]]:
    """-> (opt, info): opt = {step: float, <slot.torch>: {key: float32 array}} (step 0 and zero
    moments for a fresh optimizer with empty state); info = JSON of everything else."""
    path = Path(path)
    sd = readers.torch_load(path, "a torch optimizer")
    v.check_depth(sd, path)
    if not isinstance(sd, Mapping) or not isinstance(sd.get("state"), Mapping) or \
            not isinstance(sd.get("param_groups"), list | tuple):
        raise v.fail(path, "not a torch optimizer state_dict (need 'state' and 'param_groups')")
    extra = sorted(str(k) for k in sd if k not in ("state", "param_groups"))
    if extra:
        raise v.fail(path, "unexpected top-level entry (not kept)", extra[0])
    groups = sd["param_groups"]
    if len(groups) != 1 or not isinstance(groups[0], Mapping):
        raise v.fail(path, f"has {len(groups)} param groups (exactly one is supported)")
    group = groups[0]
    keys = list(layout.trainable_keys())
    shapes = {r.torch_key: r.shape for r in layout.table.rows}
    ids = group.get("params")
    if not isinstance(ids, list | tuple) or not all(type(i) is int for i in ids):
        raise v.fail(path, "is not a list of parameter ids", "param_groups[0].params")
    if len(ids) != len(keys) or len(set(ids)) != len(ids):
        raise v.fail(path, f"lists {len(ids)} parameters, the model has {len(keys)}",
                     "param_groups[0].params")
    hyper = {}
    for k, x in group.items():
        if k == "params":
            continue
        if not isinstance(k, str):
            raise v.fail(path, "param group key is not a string", repr(k))
        hyper[k] = _hyper(path, k, x)
    state = sd["state"]
    slots = [s.torch for s in layout.slots]
    step_key = layout.step.torch
    info: dict[str, Any] = {"format": "torch-optimizer/1", "hyper": hyper, "params": list(ids),
                            "hyper_order": [k for k in group if k != "params"] + ["params"]}
    opt: dict[str, Any] = {step_key: 0.0, **{s: {} for s in slots}}
    if len(state) == 0:
        for s in slots:
            opt[s] = {k: np.zeros(shapes[k], np.float32) for k in keys}
        info["empty"] = True
        return opt, info
    if len(state) != len(keys):
        raise v.fail(path, f"holds state for {len(state)} parameters, the model has "
                     f"{len(keys)}", "state")
    steps: dict[float, str] = {}
    entry_order: list[str] | None = None
    step_dtype = None
    for pid, key in zip(ids, keys, strict=True):
        entry = state.get(pid)
        where = f"state[{pid}] ({key})"
        if not isinstance(entry, Mapping):
            raise v.fail(path, "is missing", where)
        order = [str(k) for k in entry]
        if set(order) != {step_key, *slots}:
            raise v.fail(path, f"holds {sorted(order)}, want {sorted([step_key, *slots])}",
                         where)
        entry_order = entry_order or order
        for s in slots:
            x = readers.tensor_to_numpy(entry[s], path, f"{where}.{s}")
            if x.dtype != np.float32:
                raise v.fail(path, f"has dtype {x.dtype.name}, want float32", f"{where}.{s}")
            if tuple(x.shape) != shapes[key]:
                raise v.fail(path, f"has shape {tuple(x.shape)}, the parameter has "
                             f"{shapes[key]}", f"{where}.{s}")
            opt[s][key] = x
        raw = entry[step_key]
        if isinstance(raw, bool | int | float):
            t_step, step_dtype = float(raw), type(raw).__name__
        else:
            a = readers.tensor_to_numpy(raw, path, f"{where}.{step_key}")
            if a.shape != ():
                raise v.fail(path, f"has shape {a.shape}, want a scalar", f"{where}.{step_key}")
            t_step, step_dtype = float(a), a.dtype.name
        steps.setdefault(t_step, key)
    if len(steps) != 1:
        raise v.fail(path, f"step counts differ between parameters ({sorted(steps)})", "state")
    step = next(iter(steps))
    if not np.isfinite(step) or step != int(step) or step < 1:
        raise v.fail(path, f"step {step} is not a positive integer", "state")
    opt[step_key] = step
    for s in slots:
        v.check_finite(opt[s], path, allow_nonfinite, f"{s} ")
    info.update(empty=False, step_dtype=step_dtype, entry_order=entry_order)
    return opt, info


def state_dict(opt: Mapping[str, Any], layout: Layout, info: Mapping[str, Any]) -> dict:
    """The torch `state_dict()` recorded by `read` (same ids, hyper-parameters, dtypes)."""
    import torch

    keys = list(layout.trainable_keys())
    slots = [s.torch for s in layout.slots]
    step_key = layout.step.torch
    hyper = {k: _unhyper(x) for k, x in info["hyper"].items()}
    group = {k: (list(info["params"]) if k == "params" else hyper[k])
             for k in info.get("hyper_order", [*hyper, "params"])}
    state: dict[int, dict[str, Any]] = {}
    if not info.get("empty"):
        step = float(np.asarray(opt[step_key]))
        sdt = info.get("step_dtype", "float32")
        for pid, key in zip(info["params"], keys, strict=True):
            entry: dict[str, Any] = {}
            for f in info.get("entry_order") or [step_key, *slots]:
                if f == step_key:
                    entry[f] = (int(step) if sdt == "int" else step if sdt == "float" else
                                torch.tensor(step, dtype=getattr(torch, sdt)))
                else:
                    entry[f] = torch.from_numpy(np.array(opt[f][key], np.float32))
            state[pid] = entry
    return {"state": state, "param_groups": [group]}


def to_jax(opt: Mapping[str, Any], layout: Layout) -> dict[str, Any]:
    """Named torch-layout optimizer state -> {count, <slot.jax>: params-shaped tree}."""
    sub = layout.params
    out: dict[str, Any] = {layout.step.jax: np.asarray(int(round(float(opt[layout.step.torch]))),
                                                       np.int32)}
    for s in layout.slots:
        out[s.jax] = sub.torch_to_tree(opt[s.torch])
    return out


def from_jax(tree: Mapping[str, Any], layout: Layout) -> dict[str, Any]:
    sub = layout.params
    out: dict[str, Any] = {layout.step.torch: float(np.asarray(tree[layout.step.jax]))}
    for s in layout.slots:
        out[s.torch] = sub.tree_to_torch(tree[s.jax])
    return out
