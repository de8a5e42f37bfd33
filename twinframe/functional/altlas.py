"""AltLAS as pure JAX functions (altlas.md §2-§4), names mirroring `torch_ref.altlas`.

params (kernels `[in, out]`, gate blocks in torch order i,f,g,o / r,z,n along the last axis):
    {"embedding": {"embedding": [V, E]},
     "rnn": {"layer_k": {"w_ih": [in, G*H], "w_hh": [H, G*H], "b_ih": [G*H], "b_hh": [G*H]}},
     "fc": {"kernel": [H, V], "bias": [V]}}
The RNN state is `RNNState(h, c)` in torch order (h first), each [L, B, H]; GRU has c = None.
Generation is one `lax.scan` over T with injected Gumbel noise; the REINFORCE update is
`make_train_step(cfg, make_optimizer(run))`: one jitted, donating function (loss, grads, then
the optax chain torch-style clipping -> Adam) with a `lax.cond` skip.

Choices where the spec is silent (ours):
- Sequence mode runs layer by layer: the input projection x @ w_ih of a layer is one matmul over
  all T steps, the scan carries only h @ w_hh. LSTM adds `b = b_ih + b_hh`, formed once outside
  the scan, so both biases receive bitwise-identical cotangents (altlas.md §2.3, P9 invariant) while
  staying separate parameters under Adam. The LSTM recurrence (`lstm_recurrence`) has a
  hand-written backward: a reverse scan of the gate cotangents, then the weight gradients as
  single matmuls over all T*B rows. Layer 0's input projection is a row gather from
  `input_table` = Emb @ w_ih [V, G*H] (V rows instead of B*T; its gradient is a scatter-add into
  V rows). GRU keeps b_ih with the input projection and b_hh (incl.
  b_hn, inside the reset product) with the hidden one; its update is h' = n + u*(h - n) (torch's
  CPU kernel form).
- Step mode (generation) uses the same cell functions with T = 1.
- The global gradient norm is computed as torch does: the 2-norm of the per-tensor 2-norms, taken
  in state-dict order (`optim.clip_by_global_norm_torch` with `torch_leaves`).
- `init_params` draws the spec's distributions from a JAX key (values differ from the NumPy
  canonical init; parity always starts from converted torch weights).
- The Adam defaults to `optim.torch_adam`: torch's Adam operation order, accurate float32 bias
  corrections, and exactly `optax.adam`'s state pytree (so conversion and checkpoints are the
  same). The spec's `optax.adam(eps_root=0)` remains available (`make_optimizer(run, "optax")`):
  its float32 1 - b2^t is ~2e-5 off at small t, which made a B=1, 300-step lockstep run drift
  to rel-L2 3.8e-4 here, against 2.4e-5 with `torch_adam`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from twinframe.functional.optim import clip_by_global_norm_torch, torch_adam, torch_global_norm
from twinframe.models.altlas import (
    CLIP_EPS,
    ENTROPY_EPS,
    EOS_ID,
    PAD_ID,
    SOS_ID,
    SPECIAL_IDS,
    AltLASConfig,
    AltLASRun,
    grammar_boost_table,
    layer_name,
    torch_shapes,
    uses_grammar,
    xavier_bound,
)

F32 = jnp.float32
sg = jax.lax.stop_gradient
Params = dict


class RNNState(NamedTuple):
    """h: [L, B, H]; c: [L, B, H] (LSTM) or None (GRU). torch order: h first."""

    h: jax.Array
    c: jax.Array | None


def leaf_order(num_layers: int) -> list[tuple[str, ...]]:
    """Param paths in torch state-dict order (used for the torch-style global norm)."""
    paths: list[tuple[str, ...]] = [("embedding", "embedding")]
    for k in range(num_layers):
        paths += [("rnn", layer_name(k), n) for n in ("w_ih", "w_hh", "b_ih", "b_hh")]
    return paths + [("fc", "kernel"), ("fc", "bias")]


def zero_state(cfg: AltLASConfig, batch: int) -> RNNState:
    """Zeros [L, B, H] (c only for LSTM)."""
    z = jnp.zeros((cfg.num_layers, batch, cfg.hidden_dim), F32)
    return RNNState(z, z if cfg.cell == "lstm" else None)


# ----------------------------------------------------------------------------------------------
# Init (same distributions as altlas.md §2.2; not the same draws)


@functools.partial(jax.jit, static_argnums=1)
def init_params(key: jax.Array, cfg: AltLASConfig) -> Params:
    """Fresh params drawn in JAX (jitted, cfg static): altlas or torch_default scheme; orthogonal
    drawn in torch layout [G*H, H] (QR of a Gaussian, sign-corrected by diag(R)), transposed."""
    shapes = torch_shapes(cfg)
    keys = dict(zip(shapes, jax.random.split(key, len(shapes)), strict=True))
    H = cfg.hidden_dim

    def uni(k: jax.Array, shape: tuple[int, ...], b: float) -> jax.Array:
        return jax.random.uniform(k, shape, F32, -b, b)

    def orth(k: jax.Array, shape: tuple[int, ...]) -> jax.Array:
        q, r = jnp.linalg.qr(jax.random.normal(k, shape, F32))
        d = jnp.sign(jnp.diag(r))
        return q * jnp.where(d == 0, 1.0, d)[None, :]

    torch_layout: dict[str, jax.Array] = {}
    for name, shape in shapes.items():
        k, leaf = keys[name], name.split(".")[-1]
        if cfg.init == "torch_default":
            if name == "embedding.weight":
                w = jax.random.normal(k, shape, F32).at[PAD_ID].set(0.0)
            else:
                w = uni(k, shape, 1.0 / math.sqrt(H))
        elif name in ("embedding.weight", "fc.weight") or leaf.startswith("weight_ih"):
            w = uni(k, shape, xavier_bound(shape))
        elif leaf.startswith("weight_hh"):
            w = orth(k, shape)
        elif leaf.startswith("bias_"):
            w = jnp.zeros(shape, F32)
            if cfg.cell == "lstm":
                w = w.at[H:2 * H].set(1.0)
        elif cfg.fc_bias_init == "uniform":
            w = uni(k, shape, 0.1)
        else:
            w = jnp.zeros(shape, F32)
        torch_layout[name] = w
    p = cfg.cell
    rnn = {
        layer_name(k): {
            "w_ih": torch_layout[f"{p}.weight_ih_l{k}"].T,
            "w_hh": torch_layout[f"{p}.weight_hh_l{k}"].T,
            "b_ih": torch_layout[f"{p}.bias_ih_l{k}"],
            "b_hh": torch_layout[f"{p}.bias_hh_l{k}"],
        }
        for k in range(cfg.num_layers)
    }
    return {
        "embedding": {"embedding": torch_layout["embedding.weight"]},
        "rnn": rnn,
        "fc": {"kernel": torch_layout["fc.weight"].T, "bias": torch_layout["fc.bias"]},
    }


# ----------------------------------------------------------------------------------------------
# Model


def embed(params: Params, x: jax.Array) -> jax.Array:
    """Emb[x] with no gradient into row PAD (padding_idx semantics, altlas.md §2.2). x: int
    [...]."""
    emb = params["embedding"]["embedding"]
    emb = emb.at[PAD_ID].set(sg(emb[PAD_ID]))
    return emb[x]


def input_table(params: Params, w_ih: jax.Array) -> jax.Array:
    """Emb @ w_ih: [V, G*H], row PAD without gradient into the embedding (as `embed`). Layer 0's
    input projection of token x is row x of this table (ours: V = 63 rows instead of B*T)."""
    emb = params["embedding"]["embedding"]
    return jnp.dot(emb.at[PAD_ID].set(sg(emb[PAD_ID])), w_ih)


def lstm_cell(
    xw: jax.Array, h: jax.Array, c: jax.Array, w_hh: jax.Array, b: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """z = xw + h@w_hh + b, blocks i,f,g,o; xw: [B, 4H]; h, c: [B, H] -> (h', c')."""
    z = xw + jnp.dot(h, w_hh) + b
    i, f, g, o = jnp.split(z, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    return jax.nn.sigmoid(o) * jnp.tanh(c), c


def gru_cell(gi: jax.Array, h: jax.Array, w_hh: jax.Array, b_hh: jax.Array) -> jax.Array:
    """gi = x@w_ih + b_ih: [B, 3H], blocks r,z,n; n = tanh(gi_n + r*(h@w_hn + b_hn))."""
    gh = jnp.dot(h, w_hh) + b_hh
    i_r, i_z, i_n = jnp.split(gi, 3, axis=-1)
    h_r, h_z, h_n = jnp.split(gh, 3, axis=-1)
    r = jax.nn.sigmoid(i_r + h_r)
    u = jax.nn.sigmoid(i_z + h_z)
    n = jnp.tanh(i_n + r * h_n)
    return n + u * (h - n)


def _lstm_scan(
    xw: jax.Array, h0: jax.Array, c0: jax.Array, w_hh: jax.Array, b: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array, tuple[jax.Array, ...]]:
    """LSTM recurrence over xw: [T, B, 4H] -> (y [T, B, H], hT, cT, saved activations
    (c_{t-1}, i, f, g, o, tanh c_t), each [T, B, H]); the cell maths of `lstm_cell`."""

    def body(carry, xw_t):
        h, c = carry
        z = xw_t + jnp.dot(h, w_hh) + b
        z_i, z_f, z_g, z_o = jnp.split(z, 4, axis=-1)
        i, f, g, o = jax.nn.sigmoid(z_i), jax.nn.sigmoid(z_f), jnp.tanh(z_g), jax.nn.sigmoid(z_o)
        c2 = f * c + i * g
        tc = jnp.tanh(c2)
        h2 = o * tc
        return (h2, c2), (h2, c, i, f, g, o, tc)

    (h, c), (y, *saved) = jax.lax.scan(body, (h0, c0), xw)
    return y, h, c, tuple(saved)


@jax.custom_vjp
def lstm_recurrence(
    xw: jax.Array, h0: jax.Array, c0: jax.Array, w_hh: jax.Array, b: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The LSTM recurrence over precomputed input projections, with a hand-written backward
    (ours, for speed). xw = x @ w_ih: [T, B, 4H]; h0, c0: [B, H]; w_hh: [H, 4H]; b = b_ih + b_hh:
    [4H] -> (y [T, B, H], hT, cT).

    The forward is `lstm_cell`'s maths. The backward scan carries only (dh, dc) and emits the
    gate cotangents dz [T, B, 4H] (= the cotangent of xw); dw_hh and db are then one matmul /
    one sum over all T*B rows (as cuDNN and torch do) instead of a small accumulation per step,
    which autodiff of the scan does (B=32, default config: value_and_grad 27 -> 20 ms on CPU).
    """
    y, h, c, _ = _lstm_scan(xw, h0, c0, w_hh, b)
    return y, h, c


def _lstm_recurrence_fwd(xw, h0, c0, w_hh, b):
    y, h, c, saved = _lstm_scan(xw, h0, c0, w_hh, b)
    return (y, h, c), (h0, w_hh, y, saved)


def _lstm_recurrence_bwd(res, cts):
    h0, w_hh, y, saved = res
    dy, dh_T, dc_T = cts

    def body(carry, xs):
        dh, dc = carry
        dy_t, c_prev, i, f, g, o, tc = xs
        dh = dh + dy_t
        do = dh * tc
        dc = dc + dh * o * (1 - tc * tc)
        dz = jnp.concatenate([dc * g * i * (1 - i), dc * c_prev * f * (1 - f),
                              dc * i * (1 - g * g), do * o * (1 - o)], axis=-1)
        return (jnp.dot(dz, w_hh.T), dc * f), dz

    (dh0, dc0), dz = jax.lax.scan(body, (dh_T, dc_T), (dy, *saved), reverse=True)
    h_prev = jnp.concatenate([h0[None], y[:-1]], axis=0)
    return dz, dh0, dc0, jnp.einsum("tbh,tbg->hg", h_prev, dz), jnp.sum(dz, axis=(0, 1))


lstm_recurrence.defvjp(_lstm_recurrence_fwd, _lstm_recurrence_bwd)


def lstm_sequence(
    x: jax.Array, w_ih: jax.Array, h0: jax.Array, c0: jax.Array, w_hh: jax.Array, b: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One LSTM layer over time: `lstm_recurrence(x @ w_ih, ...)`. x: [T, B, in]; w_ih:
    [in, 4H] -> (y [T, B, H], hT, cT)."""
    return lstm_recurrence(jnp.einsum("tbi,ig->tbg", x, w_ih), h0, c0, w_hh, b)


def rnn_layer(
    p: Params, x: jax.Array | None, h0: jax.Array, c0: jax.Array | None, cell: str,
    xw: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array | None]:
    """One layer over time. x: [T, B, in] (or its projection xw = x @ w_ih: [T, B, G*H]);
    h0, c0: [B, H] -> (y [T, B, H], hT, cT)."""
    if xw is None:
        xw = jnp.einsum("tbi,ig->tbg", x, p["w_ih"])
    if cell == "lstm":
        return lstm_recurrence(xw, h0, c0, p["w_hh"], p["b_ih"] + p["b_hh"])
    gi = xw + p["b_ih"]

    def body_gru(h, gi_t):
        h = gru_cell(gi_t, h, p["w_hh"], p["b_hh"])
        return h, h

    h, y = jax.lax.scan(body_gru, h0, gi)
    return y, h, None


def forward(
    params: Params,
    x: jax.Array,
    cfg: AltLASConfig,
    state: RNNState | None = None,
    dropout_mask: jax.Array | None = None,
) -> tuple[jax.Array, RNNState]:
    """Sequence mode. x: int [B, T] -> logits [B, T, V] f32, final state (zeros if None)."""
    state = zero_state(cfg, x.shape[0]) if state is None else state
    y, hs, cs = None, [], []
    for k in range(cfg.num_layers):
        c0 = None if state.c is None else state.c[k]
        p = params["rnn"][layer_name(k)]
        xw = input_table(params, p["w_ih"])[x.T] if k == 0 else None
        y, h, c = rnn_layer(p, y, state.h[k], c0, cfg.cell, xw)
        hs.append(h)
        cs.append(c)
    y = jnp.swapaxes(y, 0, 1)
    if dropout_mask is not None:
        y = y * dropout_mask
    logits = jnp.dot(y, params["fc"]["kernel"]) + params["fc"]["bias"]
    new = RNNState(jnp.stack(hs), None if state.c is None else jnp.stack(cs))
    return logits, new


def step(
    params: Params, tok: jax.Array, state: RNNState, cfg: AltLASConfig,
    table: jax.Array | None = None,
) -> tuple[jax.Array, RNNState]:
    """Step mode. tok: int [B] -> logits [B, V], new state (eval mode: no dropout). table:
    layer 0's `input_table` (computed here when None; pass it to reuse it over many steps)."""
    x = None
    hs, cs = [], []
    for k in range(cfg.num_layers):
        p = params["rnn"][layer_name(k)]
        if k == 0:
            xw = (input_table(params, p["w_ih"]) if table is None else table)[tok]
        else:
            xw = jnp.dot(x, p["w_ih"])
        if cfg.cell == "lstm":
            h, c = lstm_cell(xw, state.h[k], state.c[k], p["w_hh"], p["b_ih"] + p["b_hh"])
            cs.append(c)
        else:
            h = gru_cell(xw + p["b_ih"], state.h[k], p["w_hh"], p["b_hh"])
        hs.append(h)
        x = h
    logits = jnp.dot(x, params["fc"]["kernel"]) + params["fc"]["bias"]
    return logits, RNNState(jnp.stack(hs), jnp.stack(cs) if cs else None)


def entropy_of(logits: jax.Array) -> jax.Array:
    """H = -sum_v p log(p + 1e-9), p = softmax(logits). [..., V] -> [...]."""
    p = jax.nn.softmax(logits, axis=-1)
    return -jnp.sum(p * jnp.log(p + ENTROPY_EPS), axis=-1)


# ----------------------------------------------------------------------------------------------
# Generation (altlas.md §3.2-§3.4)


class Rollout(NamedTuple):
    """tokens int32 [B, T] (PAD after the end); valid bool [B, T]; hit_eos bool [B]; length
    int32 [B] (EOS excluded); logp_model, logp_behav, entropy f32 [B, T] (valid steps only)."""

    tokens: jax.Array
    valid: jax.Array
    hit_eos: jax.Array
    length: jax.Array
    logp_model: jax.Array
    logp_behav: jax.Array
    entropy: jax.Array


def modify_logits(
    logits: jax.Array,
    prev: jax.Array,
    seen: jax.Array,
    boost_t: jax.Array | None,
    grammar: jax.Array | None,
    cfg: AltLASConfig,
) -> jax.Array:
    """z of altlas.md §3.4 in the spec's order: temperature, grammar, repetition, special mask,
    top-k."""
    z = logits / jnp.float32(cfg.temperature)
    if grammar is not None and boost_t is not None:
        z = z + boost_t * grammar[prev]
    if cfg.repetition_penalty != 1.0:
        z = z + jnp.float32(math.log(cfg.repetition_penalty)) * seen.astype(F32)
    if cfg.mask_special_tokens:
        z = z.at[:, jnp.asarray(SPECIAL_IDS)].set(-jnp.inf)
    if cfg.top_k > 0:
        theta = jax.lax.top_k(z, cfg.top_k)[0][:, -1:]
        z = jnp.where(z < theta, -jnp.inf, z)
    return z


def generate(
    params: Params, noise: jax.Array, cfg: AltLASConfig, grammar: jax.Array | None = None
) -> Rollout:
    """B episodes, T steps, Gumbel-max a = argmax(z + g) with g: f32 [B, T, V] (jit-friendly)."""
    B, T, V = noise.shape
    use_g = uses_grammar(cfg) and grammar is not None
    boost = jnp.asarray(grammar_boost_table(cfg)[:T]) if use_g else jnp.zeros(T, F32)
    rows = jnp.arange(B)
    table = input_table(params, params["rnn"][layer_name(0)]["w_ih"])

    def body(carry, xs):
        state, prev, done, seen = carry
        g, boost_t = xs
        logits, state = step(params, prev, state, cfg, table)
        z = modify_logits(logits, prev, seen, boost_t if use_g else None,
                          grammar if use_g else None, cfg)
        a = jnp.argmax(z + g, axis=-1).astype(jnp.int32)
        valid = ~done
        a = jnp.where(done, jnp.int32(PAD_ID), a)
        lpm = jax.nn.log_softmax(logits, -1)[rows, a]
        lpb = jax.nn.log_softmax(z, -1)[rows, a]
        ent = entropy_of(logits)
        done = done | (a == EOS_ID)
        seen = seen.at[rows, a].set(True)
        return (state, a, done, seen), (a, valid, lpm, lpb, ent)

    init = (zero_state(cfg, B), jnp.full((B,), SOS_ID, jnp.int32), jnp.zeros(B, bool),
            jnp.zeros((B, V), bool))
    _, (a, valid, lpm, lpb, ent) = jax.lax.scan(body, init, (jnp.swapaxes(noise, 0, 1), boost))
    tokens, valid = a.T, valid.T
    hit_eos = jnp.any(valid & (tokens == EOS_ID), axis=1)
    length = (valid.sum(1) - hit_eos).astype(jnp.int32)
    return Rollout(tokens, valid, hit_eos, length, lpm.T, lpb.T, ent.T)


@functools.partial(jax.jit, static_argnums=2)
def sample_noise(
    sample_key: jax.Array, k: int | jax.Array, shape: tuple[int, int, int]
) -> jax.Array:
    """Normal-mode noise for update k: gumbel(fold_in(sample_key, k), [B, T, V]) (altlas.md
    §3.3)."""
    return jax.random.gumbel(jax.random.fold_in(sample_key, k), shape, F32)


# ----------------------------------------------------------------------------------------------
# Learning (altlas.md §4)


class LossAux(NamedTuple):
    """policy_term, entropy_term (scalars); logits [B, T, V]; logp, entropy, mask [B, T]."""

    policy_term: jax.Array
    entropy_term: jax.Array
    logits: jax.Array
    logp: jax.Array
    entropy: jax.Array
    mask: jax.Array


def teacher_inputs(tokens: jax.Array) -> jax.Array:
    """x[:, 0] = SOS, x[:, t] = tokens[:, t-1]. tokens: int [B, T] -> int32 [B, T]."""
    sos = jnp.full((tokens.shape[0], 1), SOS_ID, jnp.int32)
    return jnp.concatenate([sos, tokens[:, :-1].astype(jnp.int32)], axis=1)


def reinforce_loss(
    params: Params,
    tokens: jax.Array,
    valid: jax.Array,
    advantages: jax.Array,
    weights: jax.Array,
    beta: jax.Array,
    cfg: AltLASConfig,
    dropout_mask: jax.Array | None = None,
) -> tuple[jax.Array, LossAux]:
    """L = (1/B_eff) sum_b w_b [-A_b sum_t m logp - beta sum_t m H] (altlas.md §4.1).

    tokens: int [B, T]; valid: bool [B, T]; advantages, weights: f32 [B]; beta: f32 scalar.
    """
    tokens = tokens.astype(jnp.int32)
    logits, _ = forward(params, teacher_inputs(tokens), cfg, None, dropout_mask)
    logp = jnp.take_along_axis(jax.nn.log_softmax(logits, -1), tokens[..., None], -1)[..., 0]
    ent = entropy_of(logits)
    m = valid.astype(bool)
    if not cfg.credit_eos:
        m = m & (tokens != EOS_ID)
    m = m.astype(F32)
    lp_sum = jnp.sum(m * logp, axis=1)
    h_sum = jnp.sum(m * ent, axis=1)
    b_eff = jnp.sum(weights)
    policy = -advantages * lp_sum
    bonus = -jnp.asarray(beta, F32) * h_sum
    loss = jnp.sum(weights * (policy + bonus)) / b_eff
    aux = LossAux(sg(jnp.sum(weights * policy) / b_eff), sg(jnp.sum(weights * bonus) / b_eff),
                  logits, logp, ent, m)
    return loss, aux


def loss_and_grads(
    params: Params,
    tokens: jax.Array,
    valid: jax.Array,
    advantages: jax.Array,
    weights: jax.Array,
    beta: jax.Array,
    cfg: AltLASConfig,
    dropout_mask: jax.Array | None = None,
) -> tuple[jax.Array, LossAux, Params]:
    """(loss, aux, grads w.r.t. params); embedding row PAD's gradient is exactly 0."""
    (loss, aux), grads = jax.value_and_grad(reinforce_loss, has_aux=True)(
        params, tokens, valid, advantages, weights, beta, cfg, dropout_mask
    )
    return loss, aux, grads


def _get(tree: Params, path: tuple[str, ...]) -> jax.Array:
    for p in path:
        tree = tree[p]
    return tree


def torch_leaves(tree: Params) -> list[jax.Array]:
    """A params-shaped tree -> its leaves in torch state-dict order (`leaf_order`)."""
    return [_get(tree, p) for p in leaf_order(len(tree["rnn"]))]


def global_norm_torch(grads: Params) -> jax.Array:
    """torch's total norm: ||[||g_0||, ||g_1||, ...]||_2 over tensors in state-dict order."""
    return torch_global_norm(torch_leaves(grads))


def make_clip(max_norm: float) -> optax.GradientTransformation:
    """torch `clip_grad_norm_(model.parameters(), max_norm)` as an optax transform (altlas.md
    §4.2)."""
    return clip_by_global_norm_torch(max_norm, torch_leaves, CLIP_EPS)


def clip_grads(grads: Params, max_norm: float) -> tuple[Params, jax.Array]:
    """`make_clip(max_norm)` applied once: (clipped grads, pre-clip norm n) (altlas.md §4.2)."""
    clipped, _ = make_clip(max_norm).update(grads, optax.EmptyState())
    return clipped, global_norm_torch(grads)


ADAM_FLAVOURS = ("torch", "optax")


def make_optimizer(run: AltLASRun, flavour: str = "torch") -> optax.GradientTransformation:
    """The JAX clip + Adam of altlas.md §4.2 (grad_clip_norm, lr, b1, b2, eps from the run config;
    no
    weight decay): chain(`make_clip`, `torch_adam` (default) or `optax.adam(..., eps_root=0)`).

    State (both flavours; read it with `adam_state`, build it with `opt_state_from_adam`):
        (EmptyState(),                                   # clip
         (ScaleByAdamState(count int32 [], mu, nu),      # mu, nu: f32 trees shaped like params
          EmptyState()))                                 # learning-rate scale
    """
    if flavour == "optax":
        adam = optax.adam(run.lr, b1=run.beta1, b2=run.beta2, eps=run.eps, eps_root=0.0)
    elif flavour == "torch":
        adam = torch_adam(run.lr, run.beta1, run.beta2, run.eps)
    else:
        raise ValueError(f"Adam flavour must be one of {ADAM_FLAVOURS}, got {flavour!r}")
    return optax.chain(make_clip(run.grad_clip_norm), adam)


def adam_state(opt_state: optax.OptState) -> optax.ScaleByAdamState:
    """The Adam moments (count, mu, nu) of a `make_optimizer` state."""
    return opt_state[1][0]


def opt_state_from_adam(adam: optax.ScaleByAdamState) -> optax.OptState:
    """A `make_optimizer` state holding the given Adam moments."""
    return (optax.EmptyState(), (adam, optax.EmptyState()))


class LearnBatch(NamedTuple):
    """One update's data: tokens int32 [B, T]; valid bool [B, T]; advantages, weights f32 [B];
    beta f32 scalar; dropout_mask f32 [B, T, H] (0 or 1/(1-p)) or None (no dropout)."""

    tokens: jax.Array
    valid: jax.Array
    advantages: jax.Array
    weights: jax.Array
    beta: jax.Array
    dropout_mask: jax.Array | None = None


class LearnOut(NamedTuple):
    """f32 scalars of one update: loss, policy term, entropy term, pre-clip norm; skipped bool."""

    loss: jax.Array
    policy_term: jax.Array
    entropy_term: jax.Array
    grad_norm: jax.Array
    skipped: jax.Array


def train_step(
    params: Params,
    opt_state: optax.OptState,
    batch: LearnBatch,
    cfg: AltLASConfig,
    tx: optax.GradientTransformation,
) -> tuple[Params, optax.OptState, LearnOut]:
    """Loss, grads, `tx` (clip + Adam from `make_optimizer`); grad_norm is the pre-clip torch
    norm. When B_eff = sum(weights) = 0 nothing changes (`lax.cond`). Pure; jit it."""

    def update(operands):
        p, s = operands
        loss, aux, grads = loss_and_grads(p, batch.tokens, batch.valid, batch.advantages,
                                          batch.weights, batch.beta, cfg, batch.dropout_mask)
        updates, s = tx.update(grads, s, p)
        out = LearnOut(loss, aux.policy_term, aux.entropy_term, global_norm_torch(grads),
                       jnp.bool_(False))
        return optax.apply_updates(p, updates), s, out

    def skip(operands):
        z = jnp.float32(0.0)
        return operands[0], operands[1], LearnOut(z, z, z, z, jnp.bool_(True))

    return jax.lax.cond(jnp.sum(batch.weights) > 0, update, skip, (params, opt_state))


def make_train_step(cfg: AltLASConfig, tx: optax.GradientTransformation) -> Callable:
    """jit(update) with cfg and tx bound, params and opt_state donated (do not reuse them):
    step(params, opt_state, batch: LearnBatch) -> (params, opt_state, LearnOut)."""

    def update(params: Params, opt_state: optax.OptState, batch: LearnBatch):
        return train_step(params, opt_state, batch, cfg, tx)

    return jax.jit(update, donate_argnums=(0, 1))


# ----------------------------------------------------------------------------------------------
# jit once per config


class Jitted(NamedTuple):
    """jit-compiled entry points with `cfg` bound (the update: `make_train_step`)."""

    forward: Callable
    step: Callable
    generate: Callable
    loss_and_grads: Callable


@functools.lru_cache(maxsize=32)
def jitted(cfg: AltLASConfig) -> Jitted:
    """One set of compiled functions per config (configs are frozen, hence hashable)."""
    return Jitted(
        forward=jax.jit(lambda p, x, s=None, m=None: forward(p, x, cfg, s, m)),
        step=jax.jit(lambda p, tok, s: step(p, tok, s, cfg)),
        generate=jax.jit(lambda p, g, G=None: generate(p, g, cfg, G)),
        loss_and_grads=jax.jit(
            lambda p, tok, v, a, w, b, m=None: loss_and_grads(p, tok, v, a, w, b, cfg, m)),
    )


def to_jax(tree: Params) -> Params:
    """NumPy leaves -> jnp arrays (float32)."""
    return jax.tree_util.tree_map(lambda x: jnp.asarray(np.asarray(x, np.float32)), tree)
