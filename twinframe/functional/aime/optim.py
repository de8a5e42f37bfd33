"""AIME-core optimiser in JAX (aime.md §6.2-§6.4): RGB over the task gradients, then torch's
clip_grad_norm_, then torch.optim.AdamW (single-tensor operation order) with the reference's
parameter groups, the LR schedule evaluated on the step counter, and leaves no task reaches
left untouched (no moment update, no decay).

The base learning rate lives in the optimiser state (`base_lr`) rather than in the compiled
function, so optimisers that differ only in it share one compiled step (and one persistent-cache
entry).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from twinframe.functional.optim import clip_by_global_norm_torch
from twinframe.functional.rgb import multitask, rgb
from twinframe.models.aime import AIMERun
from twinframe.models.aime.tree import GROUPS, never_reached_paths
from twinframe.models.layout import plain_path

F32 = jnp.float32


class AdamWGroupsState(NamedTuple):
    count: jax.Array
    mu: optax.Updates
    nu: optax.Updates
    base_lr: jax.Array


def leaf_group(path: tuple, ndim: int) -> tuple[float, float, bool]:
    """(lr multiplier, weight-decay multiplier, reached) of a params leaf (aime.md §6.4)."""
    top = path[0]
    g = ("perceiver" if top == "perceiver_model" else
         "head" if top in ("attention_prior_posterior", "phi_attention") else
         "scalars" if top in ("h0", "c0") else "trunk")
    lr_m, wd_m = GROUPS[g]
    return lr_m, (wd_m if ndim >= 2 else 0.0), tuple(path) not in never_reached_paths()


def lr_factor(count: jax.Array, run: AIMERun) -> jax.Array:
    """Cosine warm-restart factor of 0-based step `count` (1 while count <= constant steps),
    integer cycle search unrolled 30 times."""
    k = count - run.lr_constant_steps
    ti = jnp.asarray(run.lr_t0, jnp.int32)
    for _ in range(30):
        over = k >= ti
        k = jnp.where(over, k - ti, k)
        ti = jnp.where(over, ti * run.lr_t_mult, ti)
    f = (1 + jnp.cos(jnp.pi * k.astype(F32) / ti.astype(F32))) / 2
    return jnp.where(count <= run.lr_constant_steps, 1.0, f)


def adamw_torch_groups(run: AIMERun) -> optax.GradientTransformation:
    b1, b2, eps, wd = run.beta1, run.beta2, run.eps, run.weight_decay
    log_b1, log_b2 = F32(math.log(b1)), F32(math.log(b2))

    def init_fn(params):
        def zeros():
            return jax.tree_util.tree_map(lambda p: jnp.zeros_like(p, F32), params)

        return AdamWGroupsState(jnp.zeros([], jnp.int32), zeros(), zeros(),
                                jnp.asarray(run.lr, F32))

    def update_fn(grads, state, params=None):
        if params is None:
            raise ValueError("adamw_torch_groups needs params")
        s = state.count
        t = (s + 1).astype(F32)
        factor = lr_factor(s, run)
        bc1 = -jnp.expm1(t * log_b1)
        bc2_sqrt = jnp.sqrt(-jnp.expm1(t * log_b2))

        def one(path, g, m, v, p):
            lr_m, wd_m, reached = leaf_group(plain_path(path), p.ndim)
            if not reached:
                return jnp.zeros_like(p), m, v
            base = state.base_lr * lr_m
            lr = jnp.where(s <= run.lr_constant_steps, base,
                           run.lr_eta_min + (base - run.lr_eta_min) * factor)
            p1 = p * (1.0 - lr * (wd * wd_m))
            m2 = m + (1 - b1) * (g - m)
            v2 = v * b2 + (1 - b2) * g * g
            p2 = p1 - (lr / bc1) * (m2 / (jnp.sqrt(v2) / bc2_sqrt + eps))
            return p2 - p, m2, v2

        out = jax.tree_util.tree_map_with_path(one, grads, state.mu, state.nu, params)
        treedef = jax.tree_util.tree_structure(grads)
        flat = treedef.flatten_up_to(out)
        upd, mu, nu = (jax.tree_util.tree_unflatten(treedef, [f[i] for f in flat])
                       for i in range(3))
        return upd, AdamWGroupsState(s + 1, mu, nu, state.base_lr)

    return optax.GradientTransformation(init_fn, update_fn)


# The run fields the optimiser's update functions read (the base learning rate is state).
UPDATE_FIELDS = ("beta1", "beta2", "eps", "weight_decay", "grad_clip", "lr_constant_steps",
                 "lr_t0", "lr_t_mult", "lr_eta_min", "rgb_mu", "rgb_lambda", "rgb_steps",
                 "rgb_lr", "rgb_interval", "rgb_zero_adv_task")


def update_key(run: AIMERun) -> tuple:
    """What the compiled update depends on: optimisers with equal keys share a compiled step
    (runs differing in the learning rate, seed, loss weights or checkpointing included)."""
    return ("aime", *((f, getattr(run, f)) for f in UPDATE_FIELDS))


def make_optimizer(run: AIMERun) -> Any:
    """RGB (run.num_tasks tasks) -> clip -> AdamW groups; `key` = `update_key(run)`."""
    balance = rgb(run.num_tasks, run.rgb_mu, run.rgb_lambda, run.rgb_steps, run.rgb_lr,
                  run.rgb_interval)
    inner = optax.chain(clip_by_global_norm_torch(run.grad_clip, jax.tree_util.tree_leaves),
                        adamw_torch_groups(run))
    return multitask(balance, inner, update_key(run))
