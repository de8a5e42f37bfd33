"""RGB rotation-based gradient balancing (aime.md §6.3) as a reusable optax-style
transformation over a list of task gradients.

`rgb(n_tasks, ...)` is a `GradientTransformation` whose `update` takes the task gradients
stacked on a leading axis (a pytree whose leaves are `[n, ...]`, e.g. `jax.vmap(pullback)(eye)`;
`stack_tasks` turns a list of trees into one) and returns the combined gradient G (a tree
without the task axis, ||G|| <= 1). State: `RGBState(rgb_count, rgb_d, rgb_alpha)`; "unset" is
read from the counter (d unset at count 0, alpha unset before the first balanced step).

Norms are safe (sqrt of a positive sum, gradient 0 at 0): with `jnp.linalg.norm` an all-zero
task would give NaN angles where torch gives alpha = alpha_max. Both branches (plain mean on odd
steps, rotation on even steps) are computed and selected with `where`, so the step compiles
once. `multitask(balance, inner)` chains it with an ordinary transformation (clip, AdamW).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from twinframe.errors import TwinframeError

ALPHA_MAX = math.pi / 2 - 1e-6


class RGBState(NamedTuple):
    rgb_count: jax.Array   # int32: balancing steps taken
    rgb_d: optax.Updates   # consensus direction, params-shaped
    rgb_alpha: jax.Array   # [n] rotation angles


def stack_tasks(grads: Sequence[Any]) -> Any:
    """[tree_0, ..., tree_{n-1}] -> one tree with leaves [n, ...]."""
    return jax.tree_util.tree_map(lambda *g: jnp.stack(g), *grads)


def _safe_norm(x: jax.Array) -> jax.Array:
    """||x|| over the last axis (keepdims), gradient 0 at 0."""
    ss = jnp.sum(x * x, -1, keepdims=True)
    ok = ss > 0
    return jnp.where(ok, jnp.sqrt(jnp.where(ok, ss, 1.0)), 0.0)


def _unit(x: jax.Array, eps: float) -> jax.Array:
    return x / jnp.maximum(_safe_norm(x), eps)


def rgb(n_tasks: int, mu: float = 0.9, lam: float = 1.0, steps: int = 1, lr: float = 0.1,
        interval: int = 2, thr: float = 0.999, eps: float = 1e-8
        ) -> optax.GradientTransformation:
    """The task gradients are flattened into one [n, P] array (leaf order of the tree) and the
    rotation works on it; G and d go back to the tree's shape."""
    n = n_tasks

    def init_fn(params: optax.Params) -> RGBState:
        return RGBState(jnp.zeros([], jnp.int32),
                        jax.tree_util.tree_map(lambda p: jnp.zeros_like(p, jnp.float32), params),
                        jnp.zeros([n], jnp.float32))

    def update_fn(task_grads, state: RGBState, params=None):
        del params
        got = {x.shape[0] if x.ndim else 0 for x in jax.tree_util.tree_leaves(task_grads)}
        if got != {n}:  # at trace time: a one-line error instead of a shape error below
            raise TwinframeError(f"RGB balances {n} task gradients (leading axis of every "
                                 f"leaf), got leading axes {sorted(got)}")
        d_flat, unravel = ravel_pytree(state.rgb_d)
        g = jnp.concatenate([x.reshape(n, -1) for x in jax.tree_util.tree_leaves(task_grads)],
                            axis=1)
        gh = _unit(g, eps)                                             # [n, P]
        y = _unit(jnp.mean(gh, 0), eps)
        first = state.rgb_count == 0
        d = _unit(jnp.where(first, y, mu * d_flat + (1 - mu) * y), eps)
        count = state.rgb_count + 1
        plain = jnp.mean(gh, 0)
        if n <= 1:
            return unravel(plain), RGBState(count, unravel(d), state.rgb_alpha)
        balanced = count % interval == 0
        p = jnp.matmul(gh, d, precision=jax.lax.Precision.HIGHEST)   # [n]
        w = _unit(d[None] - p[:, None] * gh, eps)
        flag = jnp.abs(p) > thr
        unset = count == interval
        alpha0 = jnp.where(unset, 0.0, jnp.clip(state.rgb_alpha, 0.0, ALPHA_MAX))
        alpha0 = jnp.where(flag, 0.0, alpha0)

        def rot(a):
            return _unit(jnp.cos(a)[:, None] * gh + jnp.sin(a)[:, None] * w, eps)

        def objective(a):
            r = rot(a)
            tot = jnp.sum(r, 0)
            return ((n * (n - 1) / 2 - 0.5 * (jnp.sum(tot * tot) - n)) / (n * (n - 1))
                    + lam * jnp.sum(jnp.square(r - gh)) / (4 * n))

        alpha = alpha0
        for _ in range(steps):
            grad = jnp.where(flag, 0.0, jax.grad(objective)(alpha))
            alpha = jnp.clip(alpha - lr * grad, 0.0, ALPHA_MAX)
            alpha = jnp.where(flag, 0.0, alpha)
        G = jnp.where(balanced, jnp.mean(rot(alpha), 0), plain)
        new_alpha = jnp.where(balanced, alpha, state.rgb_alpha)
        return unravel(G), RGBState(count, unravel(d), new_alpha)

    return optax.GradientTransformation(init_fn, update_fn)


def global_norms(task_grads: Any) -> jax.Array:
    """||g_i|| per task of a stacked tree -> [n]."""
    leaves = jax.tree_util.tree_leaves(task_grads)
    n = leaves[0].shape[0]
    ss = sum(jnp.sum(jnp.square(x.reshape(n, -1)), 1) for x in leaves)
    return jnp.sqrt(ss)


class MultiTaskTransformation(NamedTuple):
    """`balance` (task gradients -> one gradient) followed by `inner` (an ordinary optax
    transformation). State: (balance state, inner state). `key`: optional hashable value that
    determines the update functions completely (two transformations with equal keys compute
    the same updates from the same state), so compiled steps can be shared between them."""

    init: Any
    update: Any
    balance: optax.GradientTransformation
    inner: optax.GradientTransformation
    key: Any = None


def multitask(balance: optax.GradientTransformation, inner: optax.GradientTransformation,
              key: Any = None) -> MultiTaskTransformation:
    def init_fn(params):
        return (balance.init(params), inner.init(params))

    def update_fn(task_grads, state, params=None):
        G, bs = balance.update(task_grads, state[0], params)
        updates, ins = inner.update(G, state[1], params)
        return updates, (bs, ins)

    return MultiTaskTransformation(init_fn, update_fn, balance, inner, key)
