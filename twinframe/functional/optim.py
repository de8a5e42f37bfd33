"""Optax transforms the references need and optax lacks.

`adamw_mlx`: MLX-Swift AdamW (spec hrm §6.3), no bias correction, decay p*(1 - lr*wd) applied
before the Adam step. The update is returned as (p_new - p) so `optax.apply_updates` gives
p_new; the subtraction is exact whenever p_new is within a factor 2 of p (Sterbenz), i.e. for
every realistic step, so this equals the torch in-place formula up to that rounding.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


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
