"""The AIME-core training step in JAX (aime.md §6.5): one forward through `jax.vjp`, the task
gradients from its pullback mapped over the rows of the identity (`lax.map`: one backward graph,
run once per task; `vmap` of the pullback, aime.md §6.5's suggestion, did not finish compiling on
XLA CPU within 20 minutes and 10 GB here), RGB, clip, AdamW, the EMA teacher update. One jitted
function; params, optimiser state, mutable state and carry are donated.

step(params, opt_state, state, carry, static, batch) ->
    (params, opt_state, state, carry, out)
  state  = {'sn', 'bn', 'vq'};  carry = {'ema': encoder-shaped tree, 'ema_n': int32};
  static = {'consts', 'fixed'} (never changes);  batch: see `model.forward` (+ hyper['ema_decay']);
  out = {'tasks', 'parts', 'metrics', 'decisions', 'task_grads' [n, ...], 'G', 'alpha',
         'grad_norms', 'G_norm'}.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from twinframe.functional.aime.model import forward
from twinframe.functional.rgb import global_norms
from twinframe.models.aime import AIMEConfig


def ema_update(params_enc, shadow, n, decay):
    n = n + 1
    nf = n.astype(jnp.float32)
    delta = jnp.minimum(decay, (1 + nf) / (10 + nf))
    new = jax.tree_util.tree_map(lambda p, s: (1 - delta) * p + delta * s, params_enc, shadow)
    return new, n


def task_grads(cfg: AIMEConfig, n: int, params, frozen, teacher, batch):
    """(tasks [n], task gradients (params tree, leaves [n, ...]), forward aux): one forward
    through `jax.vjp`, its pullback mapped over the rows of the identity."""
    def f(p):
        return forward(p, frozen, teacher, batch, cfg, n)

    tasks, pullback, aux = jax.vjp(f, params, has_aux=True)
    (grads,) = jax.lax.map(pullback, jnp.eye(n, dtype=tasks.dtype))
    return tasks, grads, aux


def step_fn(cfg: AIMEConfig, tx, params, opt_state, state, carry, static, batch):
    n = opt_state[0].rgb_alpha.shape[0]
    tasks, grads, aux = task_grads(cfg, n, params, {"state": state, **static}, carry["ema"],
                                   batch)
    G, bstate = tx.balance.update(grads, opt_state[0], params)
    updates, istate = tx.inner.update(G, opt_state[1], params)
    params = optax.apply_updates(params, updates)
    ema, ema_n = ema_update(params["encoder"], carry["ema"], carry["ema_n"],
                            batch["hyper"]["ema_decay"])
    out = {"tasks": tasks, "parts": aux["parts"], "metrics": aux["metrics"],
           "decisions": aux["decisions"], "task_grads": grads, "G": G,
           "alpha": bstate.rgb_alpha, "grad_norms": global_norms(grads),
           "G_norm": global_norms(jax.tree_util.tree_map(lambda x: x[None], G))[0]}
    return params, (bstate, istate), aux["state"], {"ema": ema, "ema_n": ema_n}, out


def make_train_step(cfg: AIMEConfig, tx) -> Callable:
    """Jitted, donated (params, opt_state, state, carry)."""
    return jax.jit(functools.partial(step_fn, cfg, tx), donate_argnums=(0, 1, 2, 3))
