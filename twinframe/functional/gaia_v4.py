"""GAIA v4.x as pure JAX functions (spec gaia.md §2.11): layers, rules, the hierarchy as a
`lax.scan`, the ES pieces and the metrics, with the leaf names of the numpy_ref npz export.

dtype follows the inputs: run under `jax.enable_x64(True)` with float64 arrays for the P10
comparison against numpy_ref (rel 1e-10), or in float32 (rel 1e-4 for <= 20 steps).

State trees (numpy_ref npz export = these pytrees, `export_*` in `parity.gaia`):
    reactive: {W (out, in), b (out,)}
    hebbian:  {W (out, in), pre (in,), post (out,), hist_pre (100, in), hist_post (100, out),
               hist_len (), hist_head ()};  hparams: {learning_rate, decay_rate,
               ltp_coefficient, ltd_coefficient, homeostatic_strength, bcm_theta} (scalars)
    temporal: {W (H, in), W_rec (H, H), h (H,), hist (tw, H), hist_len, hist_head}
    level:    {layers: [layer states], rep (1, out), t_last (), has_rep ()}
Ring buffers: slot `head` is written next; chronological order = `unroll` (oldest first).

The controller and the meta-optimizer stay host-side (data-dependent early stop, Python task
objects; our choice, §2.11): `parity.gaia` drives them with these jitted pieces.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

HIST_MAX = 100
Tree = Any
ACTS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": lambda z: jnp.maximum(0, z), "sigmoid": lambda z: 1 / (1 + jnp.exp(-z)),
    "tanh": jnp.tanh, "linear": lambda z: z}
RULES = ("hebbian", "oja", "bcm")


def _batch(x: jax.Array) -> jax.Array:
    return x[None] if x.ndim == 1 else x


def _push(hist: jax.Array, length: jax.Array, head: jax.Array, v: jax.Array
          ) -> tuple[jax.Array, jax.Array, jax.Array]:
    n = hist.shape[0]
    return hist.at[head].set(v), jnp.minimum(length + 1, n), (head + 1) % n


def unroll(hist: Any, length: int, head: int) -> np.ndarray:
    """Ring buffer -> chronological rows (oldest first), host side."""
    hist = np.asarray(hist)
    length, head = int(length), int(head)
    if length < hist.shape[0]:
        return hist[:length]
    return np.concatenate([hist[head:], hist[:head]])


# ----------------------------------------------------------------------------------------------
# Layers (§2.2, §2.3, §2.5)


def reactive_forward(p: Tree, x: jax.Array, act: str = "relu") -> jax.Array:
    return ACTS[act](_batch(x) @ p["W"].T + p["b"])


def hebbian_init(W: jax.Array) -> Tree:
    out, inp = W.shape
    z = jnp.zeros((), jnp.int32)
    return {"W": W, "pre": jnp.zeros(inp, W.dtype), "post": jnp.zeros(out, W.dtype),
            "hist_pre": jnp.zeros((HIST_MAX, inp), W.dtype),
            "hist_post": jnp.zeros((HIST_MAX, out), W.dtype),
            "hist_len": z, "hist_head": z}


def hebbian_hparams(dtype: Any = None, **kw: float) -> Tree:
    hp = {"learning_rate": 0.01, "decay_rate": 0.001, "ltp_coefficient": 1.0,
          "ltd_coefficient": 0.8, "homeostatic_strength": 0.1, "bcm_theta": 1.0, **kw}
    return {k: jnp.asarray(v, dtype) for k, v in hp.items()}


def hebbian_forward(st: Tree, x: jax.Array) -> tuple[jax.Array, Tree]:
    """y = x W^T; pre = mean_B x; post = mean_B y; (pre, post) appended to the history."""
    x = _batch(x)
    pre = jnp.mean(x, axis=0)
    y = x @ st["W"].T
    post = jnp.mean(y, axis=0)
    hp_, n, h = _push(st["hist_pre"], st["hist_len"], st["hist_head"], pre)
    hq, _, _ = _push(st["hist_post"], st["hist_len"], st["hist_head"], post)
    return y, {**st, "pre": pre, "post": post, "hist_pre": hp_, "hist_post": hq,
               "hist_len": n, "hist_head": h}


def hebbian_update(st: Tree, hp: Tree, rule: str, lr: Any = None) -> tuple[Tree, Tree]:
    """§2.3 update: the rule's dW (bcm with the old theta, then theta <- 0.9 theta + 0.1
    mean(post)); W + dW; decay; homeostatic scaling f; row normalisation."""
    eta = hp["learning_rate"] if lr is None else lr
    W, pre, post = st["W"], st["pre"], st["post"]
    if rule == "hebbian":
        dW = eta * jnp.outer(post, pre)
    elif rule == "oja":
        dW = eta * jnp.outer(post, pre - W.T @ post)
    elif rule == "bcm":
        theta = hp["bcm_theta"]
        dW = eta * jnp.outer(post * (post - theta), pre)
        hp = {**hp, "bcm_theta": 0.9 * theta + 0.1 * jnp.mean(post)}
    else:
        raise ValueError(f"rule must be one of {RULES}")
    W = W + dW
    W = W * (1 - hp["decay_rate"])
    f = 1 + hp["homeostatic_strength"] * (0.5 - jnp.mean(post))
    W = W * f
    W = W / (jnp.linalg.norm(W, axis=1, keepdims=True) + 1e-8)
    return {**st, "W": W}, hp


def temporal_init(W: jax.Array, W_rec: jax.Array, time_window: int) -> Tree:
    H = W.shape[0]
    z = jnp.zeros((), jnp.int32)
    return {"W": W, "W_rec": W_rec, "h": jnp.zeros(H, W.dtype),
            "hist": jnp.zeros((time_window, H), W.dtype), "hist_len": z, "hist_head": z}


def temporal_forward(st: Tree, x: jax.Array, act: str = "tanh") -> tuple[jax.Array, Tree]:
    """z = x W^T + h W_rec^T; y = act(z); h = mean_B y; h appended to the history."""
    x = _batch(x)
    z = x @ st["W"].T + st["h"] @ st["W_rec"].T
    y = ACTS[act](z)
    h = jnp.mean(y, axis=0)
    hist, n, head = _push(st["hist"], st["hist_len"], st["hist_head"], h)
    return y, {**st, "h": h, "hist": hist, "hist_len": n, "hist_head": head}


def temporal_context(st: Tree) -> np.ndarray:
    """(tw, H): the history in the last rows, zeros before (host side)."""
    tw = st["hist"].shape[0]
    rows = unroll(st["hist"], st["hist_len"], st["hist_head"])
    ctx = np.zeros(np.shape(st["hist"]), np.asarray(st["hist"]).dtype)
    if len(rows):
        ctx[tw - len(rows):] = rows
    return ctx


# ----------------------------------------------------------------------------------------------
# Standalone rules (§2.4)


def hebbian_rule(W, pre, post, eta=0.01):
    return W + eta * jnp.outer(post, pre)


def oja_rule(W, pre, post, eta=0.01):
    return W + eta * jnp.outer(post, pre - W.T @ post)


def bcm_rule(W, pre, post, eta=0.01, theta=1.0):
    """theta first (trap 18), then W + eta (post (post - theta)) pre: (W', theta')."""
    theta = 0.9 * theta + 0.1 * jnp.mean(post)
    return W + eta * jnp.outer(post * (post - theta), pre), theta


def stdp_rule(W, pre, post, eta=0.01):
    return W + eta * (jnp.outer(post, pre) - 0.5 * jnp.outer(post ** 2, pre ** 2))


# ----------------------------------------------------------------------------------------------
# Hierarchy (§2.6) as lax.scan


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """kind: 'reactive' | 'hebbian' | 'temporal' | 'plastic' (the hybrid bridge's v3.1
    layer, `functional.gaia_bridge`); act: activation name; extra: static config."""

    kind: str
    act: str = "linear"
    extra: Any = None


@dataclasses.dataclass(frozen=True)
class LevelSpec:
    layers: tuple[LayerSpec, ...]
    resolution: int = 1


def plastic_forward(st: Tree, x: jax.Array, sp: LayerSpec) -> tuple[jax.Array, Tree]:
    """The hybrid bridge's layer (guide §5.1): a v3.1 plastic layer (`functional.gaia`) inside
    a v4.x level; st = {"params": {weight}, "traces": plastic state}, sp.extra = GaiaConfig."""
    from twinframe.functional import gaia as fg

    y, traces = fg.plastic_linear(st["params"], st["traces"], _batch(x), sp.extra)
    return y, {"params": st["params"], "traces": traces}


def plastic_init(weight: jax.Array, cfg: Any) -> Tree:
    """A plastic layer's hybrid state with zero traces (and histories / counter)."""
    z = jnp.zeros_like(weight)
    traces = {"fast_trace": z, "slow_trace": z}
    if cfg.track_metrics:
        L = cfg.trace_history_len
        traces.update(trace_norm_history=jnp.zeros(L, weight.dtype),
                      update_magnitude_history=jnp.zeros(L, weight.dtype),
                      step_counter=jnp.zeros((), jnp.int32))
    return {"params": {"weight": weight}, "traces": traces}


LAYER_FORWARD: dict[str, Callable[[Tree, jax.Array, LayerSpec], tuple[jax.Array, Tree]]] = {
    "reactive": lambda st, x, sp: (reactive_forward(st, x, sp.act), st),
    "hebbian": lambda st, x, sp: hebbian_forward(st, x),
    "temporal": lambda st, x, sp: temporal_forward(st, x, sp.act),
    "plastic": plastic_forward,
}


def level_init(layer_states: list[Tree], out_dim: int, dtype: Any) -> Tree:
    return {"layers": list(layer_states), "rep": jnp.zeros((1, out_dim), dtype),
            "t_last": jnp.zeros((), jnp.int32), "has_rep": jnp.zeros((), bool)}


def level_step(spec: LevelSpec, st: Tree, x: jax.Array, t: jax.Array) -> tuple[jax.Array, Tree]:
    """One `process_time_step`: run the layers when t mod r == 0 (compute and select: on other
    steps the old rep and the old layer states are kept)."""
    out, layers = _batch(x), []
    for sp, ls in zip(spec.layers, st["layers"], strict=True):
        out, ls = LAYER_FORWARD[sp.kind](ls, out, sp)
        layers.append(ls)
    go = (t % spec.resolution) == 0
    new = {"layers": layers, "rep": out, "t_last": t.astype(jnp.int32),
           "has_rep": jnp.ones((), bool)}
    st = jax.tree_util.tree_map(lambda n, o: jnp.where(go, n, o), new, st)
    return st["rep"], st


def hierarchy_scan(specs: tuple[LevelSpec, ...], states: list[Tree], X: jax.Array
                   ) -> tuple[list[jax.Array], list[Tree], list[jax.Array]]:
    """`process_hierarchy` over X (T, in): level 0 gets X[t], level k the output of level k-1
    (ids 0..n-1, our choice). Returns per level the reps (T, 1, out), the final states and the
    energies sum(rep^2) (T,)."""

    def body(sts, xt_t):
        xt, t = xt_t
        cur, new, reps = xt, [], []
        for spec, st in zip(specs, sts, strict=True):
            cur, st = level_step(spec, st, cur, t)
            new.append(st)
            reps.append(cur)
        return new, (reps, [jnp.sum(r * r) for r in reps])

    T = X.shape[0]
    states, (reps, energy) = lax.scan(body, states, (X, jnp.arange(T, dtype=jnp.int32)))
    return reps, states, energy


# ----------------------------------------------------------------------------------------------
# ES (§2.7) and metrics (§2.10)


def es_generate(mean: jax.Array, eps: jax.Array, sigma: Any) -> jax.Array:
    """Population (N, d) = mean + sigma * eps (eps injected, (N, d))."""
    return mean[None] + sigma * eps


def es_update(mean: jax.Array, pop: jax.Array, f: jax.Array, lr: Any, K: int) -> jax.Array:
    """Elites = the last K of a stable ascending argsort of f; mean + lr mean_k(pop_k - mean)."""
    elites = jnp.argsort(f, stable=True)[-K:]
    return mean + lr * jnp.mean(pop[elites] - mean[None], axis=0)


def plasticity_efficiency(st: Tree) -> jax.Array:
    """mean_j std_t(post_t[j]) over the history (ddof 0) when it has > 1 entry, else 0.5."""
    n = st["hist_len"]
    mask = (jnp.arange(HIST_MAX) < n)[:, None]
    cnt = jnp.maximum(n, 1).astype(st["hist_post"].dtype)
    m = jnp.sum(jnp.where(mask, st["hist_post"], 0), axis=0) / cnt
    var = jnp.sum(jnp.where(mask, jnp.square(st["hist_post"] - m), 0), axis=0) / cnt
    return jnp.where(n > 1, jnp.mean(jnp.sqrt(var)), jnp.asarray(0.5, var.dtype))


def adaptation_speed(st: Tree) -> float:
    """mean_t ||post_{t+1} - post_t|| in chronological order (> 2 entries), else 0.5 (host)."""
    post = unroll(st["hist_post"], st["hist_len"], st["hist_head"])
    if len(post) <= 2:
        return 0.5
    return float(np.mean(np.linalg.norm(np.diff(post, axis=0), axis=1)))
