"""GAIA v3.1 as pure JAX functions (spec gaia.md §1.10): explicit state pytrees, no mutation.

Trees (the layout of `models.gaia.layout`; members stacked on axis 0, plastic weights (out, in)):
    params = {"wm": {"l1": {"weight": (E, H, D)}, "l2": {"weight": (E, H, H)},
                     "l3": {"kernel": (E, H, S), "bias": (E, S)},
                     "ln1"/"ln2": {"scale": (E, H), "bias": (E, H)}},
              "am": {"dense0": {"kernel": (S, 64), "bias": (64,)},
                     "dense1": {"kernel": (64, 2A), "bias": (2A,)}}}
    state  = {"wm": {"l1"/"l2": {"fast_trace", "slow_trace" (E, out, in),
                                 ["trace_norm_history", "update_magnitude_history" (E, L),
                                  "step_counter" (E,) int32]}}}   (histories: track_metrics)
    consts = {"preferred_state": (1, S)}
    opt_state = {"wm": chain state, "am": chain state}; chain = (clip EmptyState,
                 (ScaleByAdamState(count, mu, nu), EmptyState)), moments at [1][0] (§1.10).

Conventions (§1.2, §4.3): |W| = W*stop_gradient(sign W) (d|w| at 0 is 0, as torch); clamps are
`lax.clamp` (strict boundary gradient 0); rounding half to even; unbiased ensemble std; the
trace update sees stop_gradient(x), stop_gradient(y) and never feeds back into y; the policy
step is gated on I > 0 over the am params and the am optimizer state together.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from twinframe.functional.optim import clip_by_global_norm_torch
from twinframe.models.gaia import (
    ALPHA_FAST,
    ALPHA_SLOW,
    HOMEO_EPS,
    LN_EPS,
    LOG_SQRT_2PI,
    Q_FLOOR,
    STD_MAX,
    STD_MIN,
    TIE_EPS,
    GaiaConfig,
    GaiaRun,
)
from twinframe.tasks.leaky_reach import env_step

F32 = jnp.float32
HI = lax.Precision.HIGHEST
Tree = Any


def _mm(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.matmul(a, b, precision=HI)


# ----------------------------------------------------------------------------------------------
# Quantizer and plastic layer (§1.2, §1.3)


def absmean_scale(w: jax.Array) -> jax.Array:
    """s = max(mean_j |W_ij|, 1e-5) per row, (out, 1); |W| = W*stop_grad(sign W)."""
    absw = w * lax.stop_gradient(jnp.sign(w))
    return lax.clamp(F32(Q_FLOOR), jnp.mean(absw, axis=-1, keepdims=True), F32(jnp.inf))


def bitnet_quantize(w: jax.Array, ste: bool = False) -> jax.Array:
    """Q(W) = clamp(round(W / s), -1, 1) * s (true division, half-to-even rounding)."""
    s = absmean_scale(w)
    q = lax.clamp(F32(-1.0), jnp.round(w / s), F32(1.0))
    out = q * s
    return w + lax.stop_gradient(out - w) if ste else out


def update_traces(st: Tree, x: jax.Array, y: jax.Array, cfg: GaiaConfig) -> Tree:
    """The §1.3 trace update from (x, y), both stop-gradient'ed: new plastic state."""
    x, y = lax.stop_gradient(x), lax.stop_gradient(y)
    delta = _mm(jax.nn.relu(y).T, x) / F32(x.shape[0])
    f = st["fast_trace"] * F32(cfg.fast_trace_decay) + F32(cfg.fast_trace_lr) * delta
    nu = jnp.linalg.norm(f)
    tau = F32(cfg.homeostatic_target)
    f = jnp.where(nu > tau, f * (tau / (nu + F32(HOMEO_EPS))), f)
    sl = st["slow_trace"] * F32(cfg.slow_trace_decay) + F32(cfg.slow_trace_lr) * f
    new = {**st, "fast_trace": f, "slow_trace": sl}
    if cfg.track_metrics:
        c = st["step_counter"]
        k = c % cfg.trace_history_len
        new["update_magnitude_history"] = st["update_magnitude_history"].at[k].set(
            jnp.linalg.norm(delta))
        new["trace_norm_history"] = st["trace_norm_history"].at[k].set(nu)
        new["step_counter"] = c + 1
    return new


def plastic_linear(p: Tree, st: Tree, x: jax.Array, cfg: GaiaConfig,
                   enabled: bool | None = None) -> tuple[jax.Array, Tree]:
    """y = x (Q(W) + (a_f F + a_s Sl))^T with the old traces; then the trace update (§1.3)."""
    if x.ndim != 2:
        raise ValueError(f"plastic_linear needs 2-D input (B, in), got {x.ndim}-D")
    enabled = cfg.plasticity_enabled if enabled is None else enabled
    w_plastic = F32(ALPHA_FAST) * st["fast_trace"] + F32(ALPHA_SLOW) * st["slow_trace"]
    w_eff = bitnet_quantize(p["weight"], cfg.ste) + w_plastic
    y = _mm(x, w_eff.T)
    return y, (update_traces(st, x, y, cfg) if enabled else st)


def layer_norm(p: Tree, h: jax.Array) -> jax.Array:
    """LayerNorm over the last axis, eps 1e-5, two-pass biased variance (§1.4, trap 11)."""
    mean = jnp.mean(h, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(h - mean), axis=-1, keepdims=True)
    return (h - mean) / jnp.sqrt(var + F32(LN_EPS)) * p["scale"] + p["bias"]


def member_apply(p: Tree, st: Tree, s: jax.Array, a: jax.Array, cfg: GaiaConfig
                 ) -> tuple[jax.Array, Tree]:
    """One member (§1.4, unstacked leaves): pred (B, S) and its new plastic state."""
    x = jnp.concatenate([s, a], axis=-1)
    y1, st1 = plastic_linear(p["l1"], st["l1"], x, cfg)
    h1 = layer_norm(p["ln1"], jax.nn.relu(y1))
    y2, st2 = plastic_linear(p["l2"], st["l2"], h1, cfg)
    h2 = layer_norm(p["ln2"], jax.nn.relu(y2))
    pred = _mm(h2, p["l3"]["kernel"]) + p["l3"]["bias"]
    return pred, {"l1": st1, "l2": st2}


def ensemble_apply(p: Tree, st: Tree, s: jax.Array, a: jax.Array, cfg: GaiaConfig
                   ) -> tuple[jax.Array, Tree]:
    """vmap of `member_apply` over the leading E axis: preds (E, B, S), new state."""
    return jax.vmap(member_apply, in_axes=(0, 0, None, None, None))(p, st, s, a, cfg)


def ensemble_stats(preds: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean and unbiased (ddof 1) std over members (§1.5, trap 8)."""
    return jnp.mean(preds, axis=0), jnp.std(preds, axis=0, ddof=1)


# ----------------------------------------------------------------------------------------------
# Action model (§1.6)


def action_model(p: Tree, s: jax.Array, action_dim: int) -> tuple[jax.Array, jax.Array]:
    """(mu, sigma) (B, A): net = relu(s K0 + b0) K1 + b1; sigma = clamp(exp(l), 0.01, 1)."""
    h = jax.nn.relu(_mm(s, p["dense0"]["kernel"]) + p["dense0"]["bias"])
    o = _mm(h, p["dense1"]["kernel"]) + p["dense1"]["bias"]
    mu, log_std = o[:, :action_dim], o[:, action_dim:]
    return mu, lax.clamp(F32(STD_MIN), jnp.exp(log_std), F32(STD_MAX))


def log_prob(p: Tree, s: jax.Array, a: jax.Array, action_dim: int) -> jax.Array:
    """sum_A [-(a - mu)^2 / (2 sigma^2) - log sigma - log sqrt(2 pi)] (torch's op order; no
    tanh Jacobian): (B,)."""
    mu, std = action_model(p, s, action_dim)
    lp = -jnp.square(a - mu) / (2 * jnp.square(std)) - jnp.log(std) - F32(LOG_SQRT_2PI)
    return jnp.sum(lp, axis=-1)


def efe(m: jax.Array, sd: jax.Array, g: jax.Array, beta: float) -> jax.Array:
    """EFE_p = mean_S (m_p - g)^2 - beta mean_S sd_p: (P,)."""
    return jnp.mean(jnp.square(m - g), axis=-1) - F32(beta) * jnp.mean(sd, axis=-1)


def inverse_cdf(probs: jax.Array, u: jax.Array) -> tuple[jax.Array, jax.Array]:
    """§3: idx = min(#{c_k <= f32(u) c[-1]}, P-1) with c = cumsum(pi); tie flag."""
    c = jnp.cumsum(probs)
    thr = u.astype(F32) * c[-1]
    idx = jnp.minimum(jnp.sum(c <= thr), probs.shape[0] - 1).astype(jnp.int32)
    return idx, jnp.min(jnp.abs(c - thr)) < F32(TIE_EPS)


# ----------------------------------------------------------------------------------------------
# Agent (§1.7)


class Agent(NamedTuple):
    """Everything one agent carries: params, plastic state, consts and optimizer state."""

    params: Tree
    state: Tree
    consts: Tree
    opt_state: Tree


class Selection(NamedTuple):
    action: jax.Array      # (1, A)
    idx: jax.Array         # int32 scalar
    probs: jax.Array       # (P,)
    efe: jax.Array         # (P,)
    candidates: jax.Array  # (P, A)
    tie: jax.Array         # bool scalar


def select_action(params: Tree, state: Tree, consts: Tree, s: jax.Array, eps: jax.Array,
                  u: jax.Array, cfg: GaiaConfig) -> tuple[Selection, Tree]:
    """§1.7 select_action for s (1, S) with injected eps (P, A) and u: only the wm state
    changes (every member's traces see the P planning rows)."""
    P = cfg.planning_samples
    s_rep = jnp.repeat(s, P, axis=0)
    mu, std = action_model(params["am"], s_rep, cfg.action_dim)
    cand = jnp.tanh(mu + std * eps)
    preds, wm_state = ensemble_apply(params["wm"], state["wm"], s_rep, cand, cfg)
    m, sd = ensemble_stats(preds)
    e = efe(m, sd, consts["preferred_state"], cfg.exploration_weight)
    probs = jax.nn.softmax(-e / F32(cfg.temperature))
    idx, tie = inverse_cdf(probs, u)
    action = lax.dynamic_slice_in_dim(cand, idx, 1, axis=0)
    return Selection(action, idx, probs, e, cand, tie), {**state, "wm": wm_state}


class LearnOut(NamedTuple):
    wm_loss: jax.Array
    uncertainty: jax.Array
    improvement: jax.Array
    policy_updated: jax.Array
    policy_loss: jax.Array
    wm_grad_norm: jax.Array
    objective: jax.Array  # wm_loss + the ungated policy loss (`agent_loss`)


def wm_loss_fn(wm_params: Tree, wm_state: Tree, s: jax.Array, a: jax.Array, s_next: jax.Array,
               cfg: GaiaConfig) -> tuple[jax.Array, tuple[jax.Array, Tree]]:
    """mean over (E, 1, S) of (preds - s')^2; aux = (preds, new wm state)."""
    preds, new_state = ensemble_apply(wm_params, wm_state, s, a, cfg)
    return jnp.mean(jnp.square(preds - s_next[None])), (preds, new_state)


def policy_loss_fn(am_params: Tree, s: jax.Array, a: jax.Array, w: jax.Array, action_dim: int
                   ) -> jax.Array:
    return -jnp.mean(w * log_prob(am_params, s, a, action_dim))


def improvement(s: jax.Array, s_next: jax.Array, g: jax.Array) -> jax.Array:
    return jnp.mean(jnp.square(s - g)) - jnp.mean(jnp.square(s_next - g))


def agent_loss(params: Tree, state: Tree, consts: Tree, s: jax.Array, a: jax.Array,
               s_next: jax.Array, cfg: GaiaConfig) -> tuple[jax.Array, tuple[Tree, Tree]]:
    """wm_loss + policy_loss as one objective over all params: the two losses read disjoint
    parameter groups (wm, am), so its gradient is each group's own (`grads`). -> (total,
    (aux {wm_loss, policy_loss, improvement, preds}, new state)). The policy term is not gated
    here (see `learn`)."""
    wm_loss, (preds, wm_state) = wm_loss_fn(params["wm"], state["wm"], s, a, s_next, cfg)
    imp = improvement(s, s_next, consts["preferred_state"])
    w = jax.nn.sigmoid(F32(cfg.weight_scale) * imp)
    pol = policy_loss_fn(params["am"], s, a, w, cfg.action_dim)
    aux = {"wm_loss": wm_loss, "policy_loss": pol, "improvement": imp, "preds": preds}
    return wm_loss + pol, (aux, {**state, "wm": wm_state})


def grads(params: Tree, state: Tree, consts: Tree, s: jax.Array, a: jax.Array,
          s_next: jax.Array, cfg: GaiaConfig) -> tuple[Tree, Tree, Tree]:
    """Both losses' gradients from one state (the gradient of `agent_loss`): ({"wm", "am"}
    grads, new state, aux dict with the `agent_loss` value as 'objective')."""
    (total, (aux, new_state)), g = jax.value_and_grad(agent_loss, has_aux=True)(
        params, state, consts, s, a, s_next, cfg)
    return g, new_state, {**aux, "objective": total}


def learn(params: Tree, state: Tree, consts: Tree, opt_state: Tree, s: jax.Array, a: jax.Array,
          s_next: jax.Array, cfg: GaiaConfig, tx: optax.GradientTransformation
          ) -> tuple[Tree, Tree, Tree, LearnOut]:
    """§1.7 learn: wm MSE step (clip + AdamW) and the gated policy step; the am params and the
    am optimizer state keep their old values where I <= 0.

    The gate is a `lax.cond` between the whole step and the step with the old am parts (not a
    select after the step): a select consuming the new optimizer state made XLA's CPU backend
    fuse (and contract to FMAs) the step's arithmetic differently, moving it by an ulp; in a
    branch the step rounds as in any program applying it ungated (a Flax NNX optimizer)."""
    g, new_state, aux = grads(params, state, consts, s, a, s_next, cfg)

    def step(keep_am: bool) -> tuple[Tree, Tree]:
        updates, new_opt = tx.update(g, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        if keep_am:
            return {**new_params, "am": params["am"]}, {**new_opt, "am": opt_state["am"]}
        return new_params, new_opt

    gate = aux["improvement"] > 0
    new_params, new_opt = lax.cond(gate, lambda: step(False), lambda: step(True))
    out = LearnOut(aux["wm_loss"], jnp.std(aux["preds"], ddof=1), aux["improvement"], gate,
                   jnp.where(gate, aux["policy_loss"], F32(0.0)),
                   optax.global_norm(g["wm"]), aux["objective"])
    return new_params, new_state, new_opt, out


# ----------------------------------------------------------------------------------------------
# Optimizers: torch's clip + torch's AdamW per group (§1.10)


def wm_leaf_order(tree: Tree) -> list[jax.Array]:
    """wm grads in torch's `wm.parameters()` order (member i: l1.W, l2.W, l3.W, l3.b, ln1.w,
    ln1.b, ln2.w, ln2.b): per-member slices of the stacked leaves."""
    E = tree["l1"]["weight"].shape[0]
    keys = (("l1", "weight"), ("l2", "weight"), ("l3", "kernel"), ("l3", "bias"),
            ("ln1", "scale"), ("ln1", "bias"), ("ln2", "scale"), ("ln2", "bias"))
    return [tree[a][b][i] for i in range(E) for a, b in keys]


def am_leaf_order(tree: Tree) -> list[jax.Array]:
    return [tree["dense0"]["kernel"], tree["dense0"]["bias"], tree["dense1"]["kernel"],
            tree["dense1"]["bias"]]


def torch_adamw(lr: float, b1: float, b2: float, eps: float, weight_decay: float
                ) -> optax.GradientTransformation:
    """torch.optim.AdamW's single-tensor order with `optax.adam`'s state layout
    (ScaleByAdamState(count, mu, nu), EmptyState()): p <- p (1 - lr wd); m <- m + (1-b1)(g - m);
    v <- v b2 + (1-b2) g g; p <- p - (lr/bc1) m / (sqrt(v)/sqrt(bc2) + eps). The update is
    returned as p_new - p. bc_i = -expm1(t log b_i) in f32 (torch: float64 on the host)."""
    decay = F32(1.0 - lr * weight_decay)
    w1, wb2, w2 = F32(1 - b1), F32(b2), F32(1 - b2)
    log_b1, log_b2 = F32(math.log(b1)), F32(math.log(b2))

    def init_fn(params):
        def zeros():
            return jax.tree_util.tree_map(lambda p: jnp.zeros_like(p, dtype=F32), params)

        return (optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32), mu=zeros(), nu=zeros()),
                optax.EmptyState())

    def update_fn(grads_, state, params=None):
        if params is None:
            raise ValueError("torch_adamw needs params (weight decay)")
        adam, empty = state
        count = optax.safe_int32_increment(adam.count)
        mu = jax.tree_util.tree_map(lambda m, g: m + w1 * (g - m), adam.mu, grads_)
        nu = jax.tree_util.tree_map(lambda v, g: v * wb2 + w2 * g * g, adam.nu, grads_)
        t = count.astype(F32)
        step = F32(lr) / -jnp.expm1(t * log_b1)
        bc2_sqrt = jnp.sqrt(-jnp.expm1(t * log_b2))

        def new_minus_old(p, m, v):
            return (p * decay - step * (m / (jnp.sqrt(v) / bc2_sqrt + F32(eps)))) - p

        updates = jax.tree_util.tree_map(new_minus_old, params, mu, nu)
        return updates, (optax.ScaleByAdamState(count=count, mu=mu, nu=nu), empty)

    return optax.GradientTransformation(init_fn, update_fn)


def group_optimizer(lr: float, run: GaiaRun, order: Callable) -> optax.GradientTransformation:
    """chain(torch clip at run.grad_clip_norm over `order`, torch AdamW): moments at [1][0]."""
    return optax.chain(clip_by_global_norm_torch(run.grad_clip_norm, order),
                       torch_adamw(lr, run.beta1, run.beta2, run.eps, run.weight_decay))


def make_optimizer(run: GaiaRun) -> optax.GradientTransformation:
    """{"wm": chain at run.lr, "am": chain at run.policy_lr}: one transform over the params
    tree whose state is the dict {group: chain state} (the layout's step groups)."""
    parts = {"wm": group_optimizer(run.lr, run, wm_leaf_order),
             "am": group_optimizer(run.policy_lr, run, am_leaf_order)}

    def init_fn(params):
        return {k: tx.init(params[k]) for k, tx in parts.items()}

    def update_fn(updates, state, params=None):
        out, new = {}, {}
        for k, tx in parts.items():
            out[k], new[k] = tx.update(updates[k], state[k], None if params is None
                                       else params[k])
        return _same_structure(updates, out), new

    return optax.GradientTransformation(init_fn, update_fn)


def _same_structure(template: Tree, groups: Tree) -> Tree:
    """`groups`' leaves in `template`'s pytree structure (leaf by key path): the updates come
    back in the container the gradients came in (a dict, or e.g. a Flax `nnx.State`)."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(template)

    def at(path):
        node = groups
        for k in path:
            node = node[k.key if hasattr(k, "key") else k.idx]
        return node

    return jax.tree_util.tree_unflatten(treedef, [at(p) for p, _ in flat])


def adam_state(opt_state: Tree, group: str) -> optax.ScaleByAdamState:
    """The Adam moments (count, mu, nu) of one group."""
    return opt_state[group][1][0]


# ----------------------------------------------------------------------------------------------
# Jitted entry points


def make_train_step(cfg: GaiaConfig, tx: optax.GradientTransformation) -> Callable:
    """jit(learn) with cfg and tx bound; params, state and opt_state donated:
    step(params, state, consts, opt_state, s, a, s_next) -> (params, state, opt_state, LearnOut).
    """

    def step(params, state, consts, opt_state, s, a, s_next):
        return learn(params, state, consts, opt_state, s, a, s_next, cfg, tx)

    return jax.jit(step, donate_argnums=(0, 1, 3))


@functools.lru_cache(maxsize=32)
def jit_select(cfg: GaiaConfig) -> Callable:
    """jit(select_action) with cfg bound, state donated:
    select(params, state, consts, s, eps, u) -> (Selection, state)."""

    def sel(params, state, consts, s, eps, u):
        return select_action(params, state, consts, s, eps, u, cfg)

    return jax.jit(sel, donate_argnums=(1,))


class StepNoise(NamedTuple):
    eps: jax.Array  # (P, A)
    u: jax.Array    # ()
    xi: jax.Array   # (1, S)


class StepOut(NamedTuple):
    idx: jax.Array
    action: jax.Array
    s_next: jax.Array
    reward: jax.Array
    efe: jax.Array
    tie: jax.Array
    learn: LearnOut


def agent_env_step(agent: Agent, s: jax.Array, noise: StepNoise, cfg: GaiaConfig,
                   tx: optax.GradientTransformation, sigma: float = 0.01
                   ) -> tuple[Agent, jax.Array, StepOut]:
    """select -> LeakyReach step -> learn (usable in lax.scan): (agent', s', outputs)."""
    sel, state = select_action(agent.params, agent.state, agent.consts, s, noise.eps, noise.u,
                               cfg)
    s_next = env_step(s, sel.action, noise.xi, F32(sigma))
    params, state, opt_state, lo = learn(agent.params, state, agent.consts, agent.opt_state, s,
                                         sel.action, s_next, cfg, tx)
    out = StepOut(sel.idx, sel.action[0], s_next[0], -jnp.mean(jnp.square(s_next)),
                  sel.efe[sel.idx], sel.tie, lo)
    return Agent(params, state, agent.consts, opt_state), s_next, out


def rollout(agent: Agent, s0: jax.Array, noise: StepNoise, cfg: GaiaConfig,
            tx: optax.GradientTransformation, sigma: float = 0.01
            ) -> tuple[Agent, jax.Array, StepOut]:
    """lax.scan of `agent_env_step` over the leading T axis of `noise`."""

    def body(carry, n):
        ag, s = carry
        ag, s, out = agent_env_step(ag, s, StepNoise(*n), cfg, tx, sigma)
        return (ag, s), out

    (agent, s), outs = lax.scan(body, (agent, s0), tuple(noise))
    return agent, s, outs


@functools.lru_cache(maxsize=16)
def jit_rollout(cfg: GaiaConfig, run: GaiaRun, vmapped: bool = False) -> Callable:
    """jit(rollout) (agent donated), optionally vmapped over a leading agents axis of the
    agent, s0 and noise (independent agents / seeds)."""
    tx = make_optimizer(run)

    def f(agent, s0, noise):
        return rollout(agent, s0, noise, cfg, tx, run.sigma_env)

    return jax.jit(jax.vmap(f) if vmapped else f, donate_argnums=(0,))


class ActOut(NamedTuple):
    idx: jax.Array
    action: jax.Array
    s_next: jax.Array
    reward: jax.Array
    efe: jax.Array


def act_episode(params: Tree, state: Tree, consts: Tree, s0: jax.Array, noise: StepNoise,
                cfg: GaiaConfig, sigma: float | jax.Array = 0.01) -> tuple[Tree, ActOut]:
    """An episode without learning: lax.scan of select_action -> LeakyReach step over the
    leading T axis of `noise` -> (final state, ActOut with a leading T axis)."""

    def body(carry, n):
        st, s = carry
        sel, st = select_action(params, st, consts, s, n[0], n[1], cfg)
        s_next = env_step(s, sel.action, n[2], F32(sigma))
        return (st, s_next), ActOut(sel.idx, sel.action[0], s_next[0],
                                    -jnp.mean(jnp.square(s_next)), sel.efe[sel.idx])

    (state, _), out = lax.scan(body, (state, s0), tuple(noise))
    return state, out


@functools.lru_cache(maxsize=16)
def jit_act(cfg: GaiaConfig, sigma: float = 0.01) -> Callable:
    """jit of `act_episode` returning the outputs only:
    act(params, state, consts, s0, noise) -> ActOut with a leading T axis."""

    def act(params, state, consts, s0, noise):
        return act_episode(params, state, consts, s0, noise, cfg, sigma)[1]

    return jax.jit(act)


def native_noise(key: jax.Array, steps: int, cfg: GaiaConfig) -> StepNoise:
    """Native JAX randomness (§1.10): step keys = split(key, T); per step (k_eps, k_u, k_xi) =
    split(step_key, 3); eps normal (P, A), u uniform (), xi normal (1, S), all float32."""

    def one(k):
        ke, ku, kx = jax.random.split(k, 3)
        return StepNoise(jax.random.normal(ke, (cfg.planning_samples, cfg.action_dim), F32),
                         jax.random.uniform(ku, (), F32),
                         jax.random.normal(kx, (1, cfg.state_dim), F32))

    return jax.vmap(one)(jax.random.split(key, steps))


def native_init(key: jax.Array, cfg: GaiaConfig) -> tuple[Tree, Tree, Tree]:
    """Native JAX init (§1.10): the §1.3/§1.4/§1.6 distributions drawn with JAX keys (plastic
    W ~ N(0, 1)*0.02, Linear weights and biases ~ U(+-1/sqrt(fan_in)), LayerNorm 1/0, zero
    traces); it does not reproduce torch's init. -> (params, state, consts)."""
    E, H, D, S, A = cfg.n_ensemble, cfg.hidden_dim, cfg.in_dim, cfg.state_dim, cfg.action_dim
    k = iter(jax.random.split(key, 8))

    def unif(kk, shape, fan_in):
        b = 1.0 / math.sqrt(fan_in)
        return jax.random.uniform(kk, shape, F32, -b, b)

    params = {"wm": {"l1": {"weight": jax.random.normal(next(k), (E, H, D), F32) * F32(0.02)},
                     "l2": {"weight": jax.random.normal(next(k), (E, H, H), F32) * F32(0.02)},
                     "l3": {"kernel": unif(next(k), (E, H, S), H),
                            "bias": unif(next(k), (E, S), H)},
                     "ln1": {"scale": jnp.ones((E, H)), "bias": jnp.zeros((E, H))},
                     "ln2": {"scale": jnp.ones((E, H)), "bias": jnp.zeros((E, H))}},
              "am": {"dense0": {"kernel": unif(next(k), (S, 64), S),
                                "bias": unif(next(k), (64,), S)},
                     "dense1": {"kernel": unif(next(k), (64, 2 * A), 64),
                                "bias": unif(next(k), (2 * A,), 64)}}}

    def layer_state(out_f, in_f):
        st = {"fast_trace": jnp.zeros((E, out_f, in_f)), "slow_trace": jnp.zeros((E, out_f, in_f))}
        if cfg.track_metrics:
            L = cfg.trace_history_len
            st.update(trace_norm_history=jnp.zeros((E, L)),
                      update_magnitude_history=jnp.zeros((E, L)),
                      step_counter=jnp.zeros((E,), jnp.int32))
        return st

    state = {"wm": {"l1": layer_state(H, D), "l2": layer_state(H, H)}}
    return params, state, {"preferred_state": jnp.zeros((1, S))}


def diagnostics(params: Tree, state: Tree, cfg: GaiaConfig, member: int = 0) -> dict[str, float]:
    """Host-side §1.3 diagnostics of one member, prefixed l1_/l2_ (empty without metrics or
    before the first update)."""
    import numpy as np

    out: dict[str, float] = {}
    if not cfg.track_metrics:
        return out
    for name in ("l1", "l2"):
        st = jax.tree_util.tree_map(lambda x: np.asarray(x[member]), state["wm"][name])
        c = int(st["step_counter"])
        if c == 0:
            continue
        v = min(c, cfg.trace_history_len)
        w = np.asarray(params["wm"][name]["weight"][member])
        out.update({f"{name}_fast_trace_norm": float(np.linalg.norm(st["fast_trace"])),
                    f"{name}_slow_trace_norm": float(np.linalg.norm(st["slow_trace"])),
                    f"{name}_mean_trace_norm": float(st["trace_norm_history"][:v].mean()),
                    f"{name}_mean_update_mag": float(st["update_magnitude_history"][:v].mean()),
                    f"{name}_weight_static_norm": float(np.linalg.norm(w))})
    return out
