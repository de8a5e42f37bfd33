"""A model's layout, declared as data: the conversion table between torch state_dicts and JAX
pytrees, the carry rows and the optimizer-state slots; and the train-state conversion they drive.

A `Table` is data: one `Row(torch_key, path, rule, shape)` per tensor. `rule` is a named
transform (identity or 2-D transpose); `shape` is the torch-orientation shape. Key sets are
checked in both directions and every shape before anything is returned, so a converter either
yields a complete, valid result or raises `CheckpointError` naming the first offending key.
Trees are nested dicts; integer path components become list indices (`layers/0/...`).
Top-level tree roots name what a tensor is: `params` (trained), `consts` (never changes),
`state` (mutable non-trainable: running statistics, power-iteration vectors, EMA copies).

A `Layout` adds what a train state holds besides the model: `carry` rows (per-run tensors such
as recurrent states, same name in both frameworks) and optimizer `slots` (a torch per-parameter
state key <-> the field of the optax state that holds a params-shaped tree, e.g. `exp_avg` <->
`mu`), plus the step counter (`step` <-> `count`). `convert_train_state` is driven by that data
alone, for any model, optimizer and carried state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

import numpy as np

from twinframe.errors import CheckpointError

PathT = tuple[str | int, ...]
ACCEPTED_DTYPES = ("float32", "bfloat16", "float16")


class Rule(StrEnum):
    IDENTITY = "identity"
    TRANSPOSE = "transpose"


INT_DTYPES = {"int64": "int32"}  # integer rows: torch dtype -> JAX dtype (JAX runs without x64)


@dataclasses.dataclass(frozen=True)
class Row:
    """One torch tensor <-> one pytree leaf. `dtype` is the torch dtype: "float32" (float
    files in bf16/f16 accepted), or an integer counter ("int64" in torch, int32 in JAX).
    `stack` = (i, n): the tensor is slice i of a leaf stacked over n modules along a new
    leading JAX axis (per-module torch keys, one vmapped JAX leaf)."""

    torch_key: str
    path: PathT
    rule: Rule
    shape: tuple[int, ...]
    dtype: str = "float32"
    stack: tuple[int, int] | None = None

    @property
    def jax_shape(self) -> tuple[int, ...]:
        base = self.shape[::-1] if self.rule is Rule.TRANSPOSE else self.shape
        return base if self.stack is None else (self.stack[1], *base)

    def jax_dtype(self) -> str:
        return INT_DTYPES.get(self.dtype, self.dtype)


def apply_rule(rule: Rule, x: np.ndarray) -> np.ndarray:
    """Same transform both directions (2-D transpose is its own inverse); always contiguous
    (0-d arrays stay 0-d)."""
    out = x.T if rule is Rule.TRANSPOSE else x
    return np.ascontiguousarray(out).reshape(np.shape(out))


def path_str(path: PathT) -> str:
    return "/".join(str(p) for p in path)


def plain_path(path: tuple) -> PathT:
    """A JAX key path (`tree_leaves_with_path`) as plain keys: dict keys and list indices
    alike (NNX states hold lists as dicts with int keys)."""
    return tuple(getattr(k, "key", getattr(k, "idx", k)) for k in path)


def flatten_tree(tree: Any, prefix: PathT = ()) -> dict[PathT, Any]:
    """Nested dicts/lists -> {path: leaf}."""
    if isinstance(tree, Mapping):
        items = tree.items()
    elif isinstance(tree, list | tuple):
        items = enumerate(tree)
    else:
        return {prefix: tree}
    out: dict[PathT, Any] = {}
    for k, v in items:
        out.update(flatten_tree(v, (*prefix, k)))
    return out


def unflatten_tree(flat: Mapping[PathT, Any]) -> dict:
    """{path: leaf} -> nested dicts, where dicts keyed 0..n-1 become lists."""
    root: dict = {}
    for path, leaf in flat.items():
        node = root
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = leaf
    return _listify(root)


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    node = {k: _listify(v) for k, v in node.items()}
    keys = list(node)
    if keys and all(isinstance(k, int) for k in keys) and sorted(keys) == list(range(len(keys))):
        return [node[i] for i in range(len(keys))]
    return node


def normalize_tree_keys(tree: Any) -> Any:
    """Turn digit-string dict keys (as orbax/npz restore them) back into list indices."""
    if isinstance(tree, Mapping):
        flat = flatten_tree(tree)
        fixed = {
            tuple(int(p) if isinstance(p, str) and p.isdigit() else p for p in k): v
            for k, v in flat.items()
        }
        return unflatten_tree(fixed)
    return tree


def _check_array(name: str, x: Any, shape: tuple[int, ...], dtype: str = "float32"
                 ) -> np.ndarray:
    """Validate dtype and shape of one tensor; return it as float32 (or, for an integer row,
    as `dtype`: integers, or floats holding integers, are accepted)."""
    x = np.asarray(x)
    if dtype in INT_DTYPES or dtype in INT_DTYPES.values():
        ok = np.issubdtype(x.dtype, np.integer) or (
            x.dtype.name in ACCEPTED_DTYPES and bool(np.all(np.asarray(x, np.float64) % 1 == 0)))
        if not ok:
            raise CheckpointError(f"{name}: dtype {x.dtype.name} is not an integer counter")
    elif x.dtype.name not in ACCEPTED_DTYPES:
        raise CheckpointError(f"{name}: dtype {x.dtype.name} not supported (want float32/bfloat16)")
    if tuple(x.shape) != tuple(shape):
        raise CheckpointError(f"{name}: shape {tuple(x.shape)} does not match expected {shape}")
    return x.astype(np.float32 if dtype == "float32" else dtype)


def check_key_sets(have: set, want: set, what: str) -> None:
    """Raise naming the first missing or unexpected key."""
    missing, extra = sorted(map(str, want - have)), sorted(map(str, have - want))
    if missing:
        raise CheckpointError(f"missing {what} '{missing[0]}' ({len(missing)} missing in all)")
    if extra:
        raise CheckpointError(f"unexpected {what} '{extra[0]}' ({len(extra)} unexpected in all)")


@dataclasses.dataclass(frozen=True)
class Table:
    """Declarative torch_key <-> pytree path mapping for one model at one config."""

    rows: tuple[Row, ...]

    def by_key(self) -> dict[str, Row]:
        return {r.torch_key: r for r in self.rows}

    def torch_to_tree(self, state: Mapping[str, Any]) -> dict:
        """torch-layout {key: array} -> nested pytree (float32 NumPy leaves)."""
        check_key_sets(set(state), set(self.by_key()), "key")
        flat: dict[PathT, Any] = {}
        stacked: dict[PathT, dict[int, np.ndarray]] = {}
        for r in self.rows:
            x = apply_rule(r.rule, _check_array(r.torch_key, state[r.torch_key], r.shape,
                                                r.jax_dtype()))
            if r.stack is None:
                if r.path in flat and not np.array_equal(flat[r.path], x):
                    raise CheckpointError(f"{r.torch_key}: differs from the other key of the "
                                          f"same tensor ({path_str(r.path)})")
                flat[r.path] = x
            else:
                stacked.setdefault(r.path, {})[r.stack[0]] = x
        for path, parts in stacked.items():
            flat[path] = np.stack([parts[i] for i in range(len(parts))])
        return unflatten_tree(flat)

    def tree_to_torch(self, tree: Any) -> dict[str, np.ndarray]:
        """Nested pytree -> torch-layout {key: float32 contiguous array}."""
        flat = flatten_tree(normalize_tree_keys(tree))
        paths = {r.path for r in self.rows}
        check_key_sets(set(map(path_str, flat)), set(map(path_str, paths)), "tree path")
        out = {}
        for r in self.rows:
            x = _check_array(path_str(r.path), np.asarray(flat[r.path]), r.jax_shape, r.dtype)
            out[r.torch_key] = apply_rule(r.rule, x if r.stack is None else x[r.stack[0]])
        return out

    def subtable(self, root: str) -> Table:
        """Rows under one top-level tree (e.g. 'params'), with that root stripped from paths.

        Optimizer moments convert with `subtable('params')`: same keys, same rules. Alias rows
        (a later row with the path of an earlier one: a module registered under two names) are
        left out: one tensor, one key."""
        return Table(tuple(dataclasses.replace(r, path=r.path[1:])
                           for r in self.unique_rows() if r.path[0] == root))

    def unique_rows(self) -> tuple[Row, ...]:
        """Rows without aliases (the first row of each path)."""
        seen: set = set()
        out = []
        for r in self.rows:
            key = (r.path, r.stack)
            if key not in seen:
                seen.add(key)
                out.append(r)
        return tuple(out)


# ----------------------------------------------------------------------------------------------
# Layout: table + carry rows + optimizer slots


@dataclasses.dataclass(frozen=True)
class CarryRow:
    """One carried tensor (same name both sides); `rule` maps torch <-> JAX orientation."""

    name: str
    rule: Rule = Rule.IDENTITY
    dtype: str = "float32"


@dataclasses.dataclass(frozen=True)
class OptSlot:
    """A params-shaped optimizer moment: torch per-parameter state key <-> optax state field."""

    torch: str
    jax: str


@dataclasses.dataclass(frozen=True)
class StepSlot:
    """The optimizer step counter: torch per-parameter `step` (float) <-> optax `count` (int32)."""

    torch: str = "step"
    jax: str = "count"


ADAM_SLOTS = (OptSlot("exp_avg", "mu"), OptSlot("exp_avg_sq", "nu"))


@dataclasses.dataclass(frozen=True)
class Layout:
    """Everything a train state holds, as data: model table, carry rows, optimizer slots."""

    table: Table
    carry: tuple[CarryRow, ...] = ()
    slots: tuple[OptSlot, ...] = ADAM_SLOTS
    step: StepSlot = StepSlot()
    step_groups: tuple[str, ...] = ()
    """Top-level `params` subtrees with their own step counter (several optimizers, or one
    whose updates are gated per group). Empty: one counter for all. Else the counters are
    named `<group>.<step.torch>` / `<group>.<step.jax>`, and the JAX optimizer state is a dict
    {group: optax state of params[group]}."""

    def step_names(self, framework: str) -> dict[str | None, str]:
        """{group (None when ungrouped): the counter's name in `framework`'s train state}."""
        base = self.step.torch if framework == "torch" else self.step.jax
        if not self.step_groups:
            return {None: base}
        return {g: f"{g}.{base}" for g in self.step_groups}

    def group_of(self, torch_key: str) -> str | None:
        """The step group of a trained tensor (None when ungrouped)."""
        if not self.step_groups:
            return None
        return str(next(r.path[1] for r in self.table.rows if r.torch_key == torch_key))

    @property
    def params(self) -> Table:
        """Rows of the trained tensors (root `params` stripped): what optimizer slots follow."""
        return self.table.subtable("params")

    def trainable_keys(self) -> tuple[str, ...]:
        """torch keys of the trained tensors, in table order."""
        return tuple(r.torch_key for r in self.table.unique_rows() if r.path[0] == "params")

    def frozen_keys(self) -> tuple[str, ...]:
        return tuple(r.torch_key for r in self.table.rows if r.path[0] != "params")


FRAMEWORKS = ("torch", "jax")


def _convert_carry(carry: Mapping[str, Any], rows: tuple[CarryRow, ...]) -> dict[str, np.ndarray]:
    check_key_sets(set(carry), {r.name for r in rows}, "carry row")
    return {r.name: apply_rule(r.rule, np.asarray(carry[r.name], r.dtype)) for r in rows}


def convert_train_state(state: Mapping[str, Any], layout: Layout, to: str) -> dict[str, Any]:
    """Map a train state between framework layouts, driven by `layout` alone.

    torch: model = {key: array}; opt = {step: float, <slot.torch>: {key: array}, ...};
    jax:   model = {root: tree}; opt = {count: int32, <slot.jax>: params-shaped tree, ...}.
    Moments take their parameter's rule; carry rows take theirs; the step count is kept; host
    state, configs and anything else pass through unchanged."""
    if to not in FRAMEWORKS:
        raise CheckpointError(f"unknown framework {to!r}")
    if state["framework"] == to:
        return dict(state)
    tab, sub, opt = layout.table, layout.params, state["opt"]
    out = {k: v for k, v in state.items() if k not in ("model", "opt", "carry", "framework")}
    if to == "jax":
        out["model"] = tab.torch_to_tree(state["model"])
        names = layout.step_names("jax")
        new_opt: dict[str, Any] = {
            names[g]: np.asarray(int(round(float(np.asarray(opt[n])))), np.int32)
            for g, n in layout.step_names("torch").items()}
        for s in layout.slots:
            new_opt[s.jax] = sub.torch_to_tree(opt[s.torch])
    else:
        out["model"] = tab.tree_to_torch(state["model"])
        names = layout.step_names("torch")
        new_opt = {names[g]: float(np.asarray(opt[n]))
                   for g, n in layout.step_names("jax").items()}
        for s in layout.slots:
            new_opt[s.torch] = sub.tree_to_torch(opt[s.jax])
    out["opt"] = new_opt
    out["carry"] = _convert_carry(state.get("carry") or {}, layout.carry)
    out["framework"] = to
    return out
