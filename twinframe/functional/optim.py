"""Optax transforms the references need and optax lacks.

`adamw_mlx`: MLX-Swift AdamW (hrm.md §6.3), no bias correction, decay p*(1 - lr*wd) applied
before the Adam step. The update is returned as (p_new - p) so `optax.apply_updates` gives
p_new; the subtraction is exact whenever p_new is within a factor 2 of p (Sterbenz), i.e. for
every realistic step, so this equals the torch in-place formula up to that rounding.

`clip_by_global_norm_torch`: torch's `clip_grad_norm_` (altlas.md §4.2) as a stateless
transform. `torch_adam`: `torch.optim.Adam`'s operation order with `optax.adam`'s state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

F32 = jnp.float32
TORCH_CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_: coef = c / (n + 1e-6)

LeafOrder = Callable[[optax.Updates], Sequence[jax.Array]]
"""A gradient tree -> its leaves in the reference's order (e.g. torch state-dict order)."""


class ScaleByAdamNoBCState(NamedTuple):
    """count: int32 scalar; mu, nu: first/second moments, same tree as params (f32)."""

    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates


def adamw_mlx(
    lr: float = 1e-4,
    b1: float = 0.9,
    b2: float = 0.95,
    eps: float = 1e-8,
    weight_decay: float = 0.01,
) -> optax.GradientTransformation:
    """m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g; p = p*(1-lr*wd) - lr*m/(sqrt(v)+eps)."""
    decay = 1.0 - lr * weight_decay

    def init_fn(params: optax.Params) -> ScaleByAdamNoBCState:
        def zeros():  # two distinct trees: mu and nu must not share buffers (donation)
            return jax.tree_util.tree_map(lambda p: jnp.zeros_like(p, dtype=jnp.float32), params)

        return ScaleByAdamNoBCState(jnp.zeros([], jnp.int32), zeros(), zeros())

    def update_fn(grads, state, params=None):
        if params is None:
            raise ValueError("adamw_mlx needs params for weight decay")
        mu = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, grads)
        nu = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * (g * g), state.nu, grads)

        def new_minus_old(p, m, v):
            return (p * decay - (lr * m) / (jnp.sqrt(v) + eps)) - p

        updates = jax.tree_util.tree_map(new_minus_old, params, mu, nu)
        return updates, ScaleByAdamNoBCState(state.count + 1, mu, nu)

    return optax.GradientTransformation(init_fn, update_fn)


def torch_global_norm(leaves: Sequence[jax.Array]) -> jax.Array:
    """torch's total norm: ||[||g_0||_2, ||g_1||_2, ...]||_2 over `leaves` in the given order."""
    return jnp.linalg.norm(jnp.stack([jnp.linalg.norm(jnp.ravel(g)) for g in leaves]))


def clip_by_global_norm_torch(
    max_norm: float, order: LeafOrder, eps: float = TORCH_CLIP_EPS
) -> optax.GradientTransformation:
    """torch `clip_grad_norm_(params, c)` bit for bit: n = `torch_global_norm(order(g))`,
    g *= min(1, c/(n + eps)) in f32, applied even when the factor is 1; c <= 0: identity.
    State: `optax.EmptyState()`."""

    def init_fn(params: optax.Params) -> optax.EmptyState:
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params
        if max_norm <= 0:
            return updates, state
        n = torch_global_norm(order(updates))
        coef = jnp.minimum(F32(max_norm) / (n + eps), 1.0)
        return jax.tree_util.tree_map(lambda g: g * coef, updates), state

    return optax.GradientTransformation(init_fn, update_fn)


def torch_adam(lr: float, b1: float, b2: float, eps: float) -> optax.GradientTransformation:
    """Adam in torch's operation order (foreach, non-capturable) with `optax.adam`'s state:
    (ScaleByAdamState(count int32, mu, nu), EmptyState()).

    m <- m + (1-b1)(g - m);  v <- v*b2 + (1-b2)*g*g;  bc_i = 1 - b_i^t;
    update = -(lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps).
    torch evaluates bc_i in float64 on the host; here bc_i = -expm1(t*log(b_i)) in float32
    (~1 ulp), where `optax.adam`'s float32 1 - b2^t loses ~2e-5 relative to cancellation at small
    t. Remaining differences are torch's FMA use in its CPU kernels (~1 ulp of a parameter)."""
    w1, wb2, w2 = F32(1 - b1), F32(b2), F32(1 - b2)
    log_b1, log_b2 = F32(math.log(b1)), F32(math.log(b2))

    def init_fn(params: optax.Params) -> optax.OptState:
        def zeros():  # distinct trees for mu and nu (no shared buffers under donation)
            return jax.tree_util.tree_map(lambda p: jnp.zeros_like(p, dtype=F32), params)

        return (optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32), mu=zeros(), nu=zeros()),
                optax.EmptyState())

    def update_fn(grads, state, params=None):
        del params
        adam, empty = state
        count = optax.safe_int32_increment(adam.count)
        mu = jax.tree_util.tree_map(lambda m, g: m + w1 * (g - m), adam.mu, grads)
        nu = jax.tree_util.tree_map(lambda v, g: v * wb2 + w2 * g * g, adam.nu, grads)
        t = count.astype(F32)
        step = -(F32(lr) / -jnp.expm1(t * log_b1))
        bc2_sqrt = jnp.sqrt(-jnp.expm1(t * log_b2))
        updates = jax.tree_util.tree_map(
            lambda m, v: step * (m / (jnp.sqrt(v) / bc2_sqrt + F32(eps))), mu, nu)
        return updates, (optax.ScaleByAdamState(count=count, mu=mu, nu=nu), empty)

    return optax.GradientTransformation(init_fn, update_fn)
