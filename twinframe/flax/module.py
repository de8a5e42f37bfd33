"""One generic Flax NNX adapter over the model contract: `module(name, cfg, params, rngs=...)`.

The module holds the model's layout tree as NNX variables and runs the model's pure functions
(`ModelSpec.jax_face`, a `contract.JaxFace`) on their values:

- every top-level entry of the `params` tree is an attribute holding that subtree with its leaves
  wrapped in `nnx.Param` (the arrays themselves, not copies), so `nnx.state(m, nnx.Param)` has
  exactly the pure params tree's paths, shapes and dtypes, and `nnx.Optimizer(m, tx,
  wrt=nnx.Param)` hands the model's own optax transformation the tree it was written for;
- the other layout roots are attributes of the same name: `state` (leaves `Buffer`, an
  `nnx.BatchStat`: running statistics, EMA copies; or, where the model's `JaxFace.kinds`
  names the leaf, its subclasses `Trace` (plastic state) and `Diagnostic` (histories,
  counters)), `consts` and any other non-trained root (leaves `Const`: not trained; written
  only by what a model's functions return);
- state the face keeps outside the layout table (`JaxFace.extra`, e.g. AIME's EMA teacher) is
  an attribute per root, built from the weights when the module is made (leaves `Buffer`, or
  the type its `kinds` entry names: `Ema` for a teacher copy);
- the carry rows of the layout live under `carry` (leaves `Carry`, an `nnx.Cache`), created by
  `init_carry(batch_size)` (as `init_cache` is in Flax attention) and written by every call.

Calls (`__call__`, `loss`, the model's further methods) write what the pure function returns as
`updates` into those variables, so state flows through `nnx.jit`, `nnx.grad` and
`nnx.split`/`nnx.merge` as in any NNX module. Randomness is always an input (injected noise, as
in the pure functions); `rngs` only draws the init seed when no weights are given.

Training: `model.train_step(optimizer, *batch)` with `optimizer = nnx.Optimizer(model,
spec.jax_optimizer(run), wrt=nnx.Param)` is the model's `make_train_step` (bit for bit under
`nnx.jit`): `grads` (what the model's optax transformation consumes: the gradient of `loss` for
most models, AIME's per-task gradients for RGB), `optimizer.update`, then `after_update` (AIME's
EMA teacher). Host-side loops stay outside (each module class's docstring says which).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from twinframe.contract import JaxFace, ModelSpec
from twinframe.errors import CheckpointError, TwinframeError
from twinframe.models.base import FrozenConfig
from twinframe.models.layout import (
    check_key_sets,
    flatten_tree,
    normalize_tree_keys,
    path_str,
    plain_path,
    unflatten_tree,
)


class Const(nnx.Variable):
    """A non-trained model tensor that no step changes (layout root `consts`, and any root
    other than `params`/`state`, e.g. frozen projections)."""


class Buffer(nnx.BatchStat):
    """Mutable non-trainable model state (layout root `state`: running statistics, EMA copies,
    power-iteration vectors); an `nnx.BatchStat`, so the usual filters find it."""


class Trace(Buffer):
    """Plastic state a call rewrites (e.g. Hebbian fast/slow traces): a `Buffer`, never
    trained by gradient; `nnx.state(m, Trace)` selects it alone."""


class Diagnostic(Buffer):
    """Bookkeeping a call writes and no output reads back into the math beyond ring slots
    (histories, step counters): a `Buffer`; `nnx.state(m, Diagnostic)` selects it alone."""


class Ema(Buffer):
    """A copy of weights that the training step averages (an EMA teacher) and its update
    count: a `Buffer`, never trained by gradient; `nnx.state(m, Ema)` selects it alone."""


class Carry(nnx.Cache):
    """A carried per-run tensor (a layout carry row, batch first), written by every call."""


ROOT_TYPES: dict[str, type[nnx.Variable]] = {"params": nnx.Param, "consts": Const,
                                             "state": Buffer}
CARRY = "carry"
KINDS: dict[str, type[nnx.Variable]] = {"buffer": Buffer, "trace": Trace,
                                        "diagnostic": Diagnostic, "ema": Ema}


def variable_type(root: str) -> type[nnx.Variable]:
    """The NNX variable type of a layout tree root: `params` -> `nnx.Param`, `state` ->
    `Buffer`, `consts` and any other non-trained root (e.g. frozen projections) -> `Const`."""
    return ROOT_TYPES.get(root, Const)


def _is_var(x: Any) -> bool:
    return isinstance(x, nnx.Variable)


def values(tree: Any) -> Any:
    """A tree of NNX variables -> the same tree of their values."""
    return jax.tree.map(lambda v: v.get_value(), tree, is_leaf=_is_var)


def _wrap(kind: type[nnx.Variable], tree: Any, kinds: Mapping[str, str] | None = None
          ) -> Any:
    """Leaves -> `kind` variables, or KINDS[kinds[leaf name]] where `kinds` names the leaf."""
    def var(path: tuple, x: Any) -> nnx.Variable:
        leaf = getattr(path[-1], "key", None) if path else None
        return KINDS[kinds[leaf]](x) if kinds and leaf in kinds else kind(x)

    wrapped = jax.tree_util.tree_map_with_path(var, tree)
    return wrapped if isinstance(wrapped, nnx.Variable) else nnx.data(wrapped)


@functools.lru_cache(maxsize=64)
def face_of(name: str, cfg: FrozenConfig) -> JaxFace:
    """The model's `JaxFace` at `cfg` (one per config: jit caches key on its functions)."""
    spec = _spec(name)
    if spec.jax_face is None:
        raise TwinframeError(f"model '{name}' declares no jax_face: it has no Flax NNX module")
    return spec.jax_face(cfg)


def _spec(name: str) -> ModelSpec:
    from twinframe import registry

    return registry.get(name)


class TwinModule(nnx.Module):
    """Base of every model's NNX module (see the module docstring); `module()` builds one."""

    def __init__(self, name: str, cfg: FrozenConfig, tree: Mapping[str, Any],
                 batch_size: int | None = None) -> None:
        spec = _spec(name)
        self.model_name, self.config = name, cfg
        face = face_of(name, cfg) if spec.jax_face is not None else None
        self.carry_rows = (tuple(r.name for r in spec.layout(cfg).carry)
                           if face is not None and face.init_carry is not None else ())
        self.param_keys = tuple(tree["params"])
        self.frozen_roots = tuple(k for k in tree if k != "params")
        self.extra_roots = tuple(face.extra) if face is not None else ()
        taken = set(dir(type(self))) | set(vars(self)) | {CARRY}
        names = [*self.param_keys, *self.frozen_roots, *self.extra_roots]
        clash = sorted(k for k in names if k in taken or k.startswith(("__", "_pytree")))
        if clash or len(set(names)) < len(names):
            raise TwinframeError(f"{name}: layout tree entry '{(clash or names)[0]}' clashes "
                                 "with an attribute of the NNX module")
        for k in self.param_keys:
            setattr(self, k, _wrap(nnx.Param, tree["params"][k]))
        kinds = face.kinds if face is not None else {}
        bad = sorted(set(kinds.values()) - set(KINDS))
        if bad:
            raise TwinframeError(f"{name}: jax_face kind '{bad[0]}' is not one of "
                                 f"{', '.join(KINDS)}")
        for root in self.frozen_roots:
            setattr(self, root, _wrap(variable_type(root), tree[root], kinds))
        if self.extra_roots:
            params = values({k: getattr(self, k) for k in self.param_keys})
            frozen = {root: values(getattr(self, root)) for root in self.frozen_roots}
            for root, init in face.extra.items():
                kind = KINDS[kinds[root]] if root in kinds else Buffer
                setattr(self, root, _wrap(kind, init(params, frozen), kinds))
        self.carry = nnx.data({})
        if batch_size is not None:
            self.init_carry(batch_size)

    # -- the pure side ---------------------------------------------------------------------------

    @property
    def face(self) -> JaxFace:
        return face_of(self.model_name, self.config)

    def params(self) -> dict[str, Any]:
        """The pure params tree (the arrays the `nnx.Param`s hold)."""
        return {k: values(getattr(self, k)) for k in self.param_keys}

    def frozen(self) -> dict[str, Any]:
        """The pure non-params roots and `extra` roots, plus `carry` when the module has
        carry rows."""
        out = {root: values(getattr(self, root)) for root in
               (*self.frozen_roots, *self.extra_roots)}
        if self.carry_rows:
            if not self.carry:
                raise TwinframeError(f"{self.model_name}: the carry is not initialised; call "
                                     "init_carry(batch_size) first")
            out[CARRY] = values(self.carry)
        return out

    def tree(self) -> dict[str, Any]:
        """The layout tree (`params` + other roots), as the pure functions and
        `Layout.table.tree_to_torch` take it."""
        return {"params": self.params(),
                **{root: values(getattr(self, root)) for root in self.frozen_roots}}

    def write(self, updates: Mapping[str, Any]) -> None:
        """Write a pure function's `updates` ({root or 'carry': subtree}) into the variables;
        shapes and dtypes must match what they replace."""
        for path, value in flatten_tree(dict(updates)).items():
            if path[0] == "params" or path[0] not in (*self.frozen_roots, *self.extra_roots,
                                                       CARRY):
                raise TwinframeError(f"{self.model_name}: cannot update '{path_str(path)}'")
            node = getattr(self, path[0])
            try:
                for k in path[1:]:
                    node = node[k]
            except (KeyError, IndexError, TypeError):
                raise TwinframeError(f"{self.model_name}: no variable at '{path_str(path)}'"
                                     ) from None
            if not isinstance(node, nnx.Variable):
                raise TwinframeError(f"{self.model_name}: '{path_str(path)}' is not a variable")
            old = node.get_value()
            if (np.shape(value), jnp.result_type(value)) != (np.shape(old), old.dtype):
                raise TwinframeError(
                    f"{self.model_name}: update of '{path_str(path)}' has shape "
                    f"{np.shape(value)} {jnp.result_type(value)}, the variable "
                    f"{np.shape(old)} {old.dtype}")
            node.set_value(value)

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """outputs of `fn(params, frozen, *args) -> (outputs, updates)`; updates written."""
        outputs, updates = fn(self.params(), self.frozen(), *args)
        self.write(updates)
        return outputs

    # -- entry points ----------------------------------------------------------------------------

    def __call__(self, *inputs: Any) -> Any:
        """The model's main forward (`JaxFace.apply`); carried state is updated in place."""
        return self.run(self.face.apply, *inputs)

    def loss(self, *batch: Any) -> tuple[Any, Any]:
        """(loss, aux) of the model's training objective (`JaxFace.loss`), for
        `nnx.value_and_grad(lambda m: m.loss(*batch), has_aux=True)`; carry updated."""
        value, (aux, updates) = self.face.loss(self.params(), self.frozen(), *batch)
        self.write(updates)
        return value, aux

    def grads(self, *batch: Any) -> tuple[Any, nnx.State, Any]:
        """(loss, grads, aux): the gradients the model's optax transformation consumes
        (`JaxFace.grads`; else the gradient of `loss`), as an `nnx.State` of `nnx.Param`s
        shaped like `nnx.state(self, nnx.Param)` (multi-task models: each leaf with the task
        axis first), for `nnx.Optimizer.update(model, grads)`; state and carry updated."""
        value, g, (aux, updates) = self.face.value_and_grads(self.params(), self.frozen(),
                                                             *batch)
        self.write(updates)
        by_path = {plain_path(p): x for p, x in jax.tree_util.tree_leaves_with_path(g)}
        state = nnx.state(self, nnx.Param)
        return value, jax.tree_util.tree_map_with_path(
            lambda p, v: v.replace(by_path[plain_path(p)]), state, is_leaf=_is_var), aux

    def after_update(self, *batch: Any) -> None:
        """What the training step changes after the optimizer's update, from the new params
        (`JaxFace.after_update`, e.g. an EMA teacher); nothing for most models."""
        if self.face.after_update is not None:
            self.write(self.face.after_update(self.params(), self.frozen(), *batch))

    def train_step(self, optimizer: nnx.Optimizer, *batch: Any) -> tuple[Any, Any]:
        """One step of the model's `make_train_step` through `optimizer` (an `nnx.Optimizer`
        of this module with `spec.jax_optimizer(run)`, `wrt=nnx.Param`): `grads`,
        `optimizer.update(self, grads)`, `after_update`. Returns (loss, aux)."""
        value, g, aux = self.grads(*batch)
        optimizer.update(self, g)
        self.after_update(*batch)
        return value, aux

    def init_carry(self, batch_size: int) -> None:
        """(Re)create the carry for `batch_size` rows at the model's initial state."""
        if not self.carry_rows:
            return
        frozen = {root: values(getattr(self, root)) for root in self.frozen_roots}
        fresh = self.face.init_carry(frozen, batch_size)
        try:
            check_key_sets(set(fresh), set(self.carry_rows), "carry row")
        except CheckpointError as e:
            raise TwinframeError(f"{self.model_name}: init_carry: {e}") from None
        self.carry = nnx.data({k: Carry(jnp.asarray(fresh[k])) for k in self.carry_rows})

    def reset_carry(self, mask: Any = None) -> None:
        """Rows where `mask` [B] is true (all rows if None) go back to the initial state."""
        if not self.carry_rows:
            return
        batch = next(iter(self.carry.values())).shape[0] if self.carry else None
        if mask is None or batch is None:
            if batch is None:
                raise TwinframeError(f"{self.model_name}: call init_carry(batch_size) first")
            self.init_carry(batch)
            return
        frozen = {root: values(getattr(self, root)) for root in self.frozen_roots}
        fresh = self.face.init_carry(frozen, batch)
        m = jnp.asarray(mask, bool)
        for k, var in self.carry.items():
            old = var.get_value()
            var.set_value(jnp.where(m.reshape((batch,) + (1,) * (old.ndim - 1)),
                                    fresh[k].astype(old.dtype), old))


def _method(fn_name: str) -> Callable[..., Any]:
    def method(self: TwinModule, *args: Any) -> Any:
        return self.run(self.face.methods[fn_name], *args)

    method.__name__ = fn_name
    method.__doc__ = f"The model's pure `{fn_name}` (JaxFace.methods); updates written back."
    return method


@functools.lru_cache(maxsize=64)
def module_class(name: str, methods: tuple[str, ...], outside: str) -> type[TwinModule]:
    """The NNX module class of one model: `TwinModule` plus its named entry points."""
    taken = set(dir(TwinModule))
    clash = [m for m in methods if m in taken]
    if clash:
        raise TwinframeError(f"{name}: method '{clash[0]}' clashes with TwinModule")
    doc = (f"Flax NNX module of '{name}' over its pure JAX functions (twinframe.flax).\n\n"
           f"Entry points: __call__ (apply), loss, grads, train_step, "
           f"{', '.join(methods) or 'no others'}.\n"
           f"Not covered: {outside or 'nothing (the whole model is jittable)'}.")
    cls_name = "".join(p.capitalize() for p in name.replace("-", "_").split("_")) + "Module"
    return type(cls_name, (TwinModule,), {"__doc__": doc, "__module__": __name__,
                                          **{m: _method(m) for m in methods}})


def _config(spec: ModelSpec, cfg: Any) -> FrozenConfig:
    if isinstance(cfg, spec.config_cls):
        return cfg
    if isinstance(cfg, str | dict):
        return spec.config(cfg)
    raise TwinframeError(f"{spec.name}: cfg must be a {spec.config_cls.__name__}, a preset name "
                         f"or a dict, not {type(cfg).__name__}")


def layout_tree(spec: ModelSpec, cfg: FrozenConfig, weights: Mapping[str, Any]) -> dict:
    """A layout tree (root `params`, ...) or a torch-layout state dict -> the layout tree,
    checked against the layout (paths, shapes, float dtypes); device arrays are kept as they
    are (no copy), NumPy arrays are put on the device."""
    table = spec.layout(cfg).table
    if "params" not in weights:
        tree = table.torch_to_tree(weights)  # validates keys, shapes and dtypes
        return jax.tree.map(jnp.asarray, normalize_tree_keys(tree))
    flat = {path_str(k): (k, v) for k, v in flatten_tree(normalize_tree_keys(dict(weights)))
            .items()}
    rows: dict[str, Any] = {}
    for r in table.rows:  # alias rows (several torch keys, one leaf) share a path
        rows.setdefault(path_str(r.path), r)
    check_key_sets(set(flat), set(rows), "tree path")
    for key, (_, v) in flat.items():
        shape, dtype = tuple(np.shape(v)), jnp.result_type(v)
        if shape != rows[key].jax_shape:
            raise CheckpointError(f"{key}: shape {shape} does not match expected "
                                  f"{rows[key].jax_shape}")
        kind = jnp.floating if getattr(rows[key], "dtype", "float32") == "float32" else \
            jnp.integer  # integer rows: counters
        if not jnp.issubdtype(dtype, kind):
            raise CheckpointError(f"{key}: dtype {dtype} is not {kind.__name__}")
    return unflatten_tree({k: (v if isinstance(v, jax.Array) else jnp.asarray(v))
                           for k, v in flat.values()})


def _jax_dtype(row: Any) -> str:
    """A table row's dtype on the JAX side (float32 unless the row declares an integer)."""
    return row.jax_dtype() if hasattr(row, "jax_dtype") else "float32"


def _seed(rngs: nnx.Rngs | None) -> int:
    if rngs is None:
        raise TwinframeError("pass rngs=nnx.Rngs(seed) (or params=) to initialise a module")
    key = rngs.params()
    if isinstance(key, jax.core.Tracer):  # under nnx.eval_shape: any seed gives the shapes
        return 0
    return int(jax.random.randint(key, (), 0, 2**31 - 1))


def module(name: str, cfg: Any, params: Mapping[str, Any] | None = None, *,
           rngs: nnx.Rngs | None, batch_size: int | None = None) -> TwinModule:
    """The Flax NNX module of registered model `name` at model config `cfg` (a config, preset
    name or dict). A model without `ModelSpec.jax_face` gets a module that holds its weights
    (for checkpoints) but whose calls raise.

    params: None (the model's canonical init, seed drawn from `rngs`), a layout tree
    (`{'params': ..., 'consts': ...}`, e.g. `JaxEngine.export_state()['model']`; device arrays
    are used as they are) or a torch-layout state dict (converted through the layout).
    batch_size: create the carry for that many rows now (models with carry rows; else call
    `init_carry` before the first call)."""
    spec = _spec(name)
    cfg = _config(spec, cfg)
    if params is None:
        params = spec.canonical_init(cfg, _seed(rngs))
    tree = layout_tree(spec, cfg, params)
    if spec.jax_face is None:  # weights only (checkpoints); calls raise
        cls = module_class(name, (), "every call: the model declares no jax_face")
    else:
        face = face_of(name, cfg)
        cls = module_class(name, tuple(face.methods), face.outside)
    return cls(name, cfg, tree, batch_size)


def abstract_module(name: str, cfg: Any, batch_size: int | None = None) -> TwinModule:
    """The module with abstract arrays (`nnx.eval_shape`): `nnx.split` of it gives the
    graphdef and the target state to restore a checkpoint into (no weights computed)."""
    spec = _spec(name)
    cfg = _config(spec, cfg)
    rows = spec.layout(cfg).table.rows

    def build() -> TwinModule:
        tree = unflatten_tree({r.path: jnp.zeros(r.jax_shape, _jax_dtype(r)) for r in rows})
        return module(name, cfg, tree, rngs=None, batch_size=batch_size)

    return nnx.eval_shape(build)
