"""Perceiver context path in JAX (aime.md §2.2), mirroring `torch_ref.aime.perceiver`.

VQ state (`vq.embed`, `vq.embed_avg`, `vq.cluster_size`) is updated functionally twice per
step; the JAX step may override the discrete decisions (VQ ids, predicted tokens) with the
reference's (lockstep parity, aime.md §7) and always reports its own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from twinframe.functional.aime.prims import (
    HI,
    MASK_VALUE,
    conv_p,
    conv_transpose3d,
    gelu,
    group_norm,
    layer_norm,
    linear,
    resize,
)
from twinframe.models.aime import AIMEConfig, rope_angles
from twinframe.models.aime.tree import tokenizer_plan

# ----------------------------------------------------------------------------------------------
# Tokenizer


def conv_gn_act3d(p: Mapping, x: jax.Array, o: int) -> jax.Array:
    y = group_norm(p["block"][1], conv_p(p["block"][0], x, 1, 1), math.gcd(o, 8))
    a, g = jnp.split(y, 2, axis=1)
    return g * gelu(a)


def resblock3d(p: Mapping, x: jax.Array, o: int) -> jax.Array:
    y = conv_gn_act3d(p["conv2"], conv_gn_act3d(p["conv1"], x, o), o)
    return y + (conv_p(p["skip"], x) if "skip" in p else x)


def _strides(temporal: bool) -> tuple[tuple, tuple]:
    return ((2, 2, 2), (1, 1, 1)) if temporal else ((1, 2, 2), (0, 1, 1))


def tok_encode_maps(p: Mapping, x: jax.Array, cfg: AIMEConfig
                    ) -> tuple[jax.Array, list[jax.Array]]:
    """x [B, 3, T, H, W] -> z [B, Dc, T', Ht, Wt], skips."""
    plan, base = tokenizer_plan(cfg), cfg.perceiver_base_channels
    e = p["encoder"]
    h = resblock3d(e["stem"], x, base)
    skips = [h]
    for i, (_, co, temporal) in enumerate(plan["downs"]):
        d = e["downs"][i]
        st, pd = _strides(temporal)
        h = resblock3d(d["res"], conv_p(d["down"], conv_p(d["pool"], h, 1, 1), st, pd), co)
        skips.append(h)
    return conv_p(e["to_code"], h, 1, 1), skips


def tok_decode(p: Mapping, q: jax.Array, skips: list[jax.Array], cfg: AIMEConfig) -> jax.Array:
    """q [B, Dc, T', Ht, Wt] -> [B, T_rec, 3, H, W]."""
    plan, d = tokenizer_plan(cfg), p["decoder"]
    x = q
    for u, (_, _, o, temporal) in enumerate(plan["ups"]):
        up = d["ups"][u]
        st, pd = _strides(temporal)
        x = conv_transpose3d(up["up"], x, st, pd)
        skip = resize(skips[-(u + 2)], x.shape[2:])
        x = resblock3d(up["res"], jnp.concatenate([x, skip], axis=1), o)
    x = conv_p(d["final"][1], resblock3d(d["final"][0], x, cfg.perceiver_base_channels), 1, 1)
    return jnp.tanh(x).transpose(0, 2, 1, 3, 4)


def vq_distances(x: jax.Array, e_val: jax.Array, e_grad: jax.Array | None = None) -> jax.Array:
    x2 = jnp.sum(x * x, -1, keepdims=True)
    e2 = jnp.sum(e_val * e_val, -1)[None]
    if e_grad is None:
        xy = jnp.matmul(x, e_val.T, precision=HI)
    else:
        xy = (jnp.matmul(x, e_grad.T, precision=HI)
              + jnp.matmul(jax.lax.stop_gradient(x), (e_val - e_grad).T, precision=HI))
    s = x2 + e2 + xy * -2.0
    return -jnp.sqrt(jnp.where(s < 1e-8, 1e-8, s))


def vq_loss(dist: jax.Array, ids: jax.Array, frames: int, cfg: AIMEConfig) -> jax.Array:
    logp = jax.nn.log_softmax(dist, -1)
    ce = -jnp.mean(jnp.take_along_axis(logp, ids[:, None], -1))
    p = jnp.mean(jax.nn.softmax(dist, -1).reshape(frames, -1, dist.shape[-1]), 0)
    ent = -jnp.sum(p * jnp.log(jnp.maximum(p, 1e-5)), -1)
    return cfg.vq_diversity_weight * (-jnp.mean(ent)) + cfg.vq_commitment_weight * ce


def ema_update(vq: Mapping, x: jax.Array, ids: jax.Array, decay: float) -> dict:
    """EMA codebook update (aime.md §2.2.2 step 3) -> new {embed, embed_avg, cluster_size}."""
    E = vq["embed"][0]
    V = E.shape[0]
    x = jax.lax.stop_gradient(x)
    onehot = jax.nn.one_hot(ids, V, dtype=x.dtype)
    count = jnp.sum(onehot, 0)
    summed = jnp.matmul(onehot.T, x, precision=HI)
    w = 1.0 - decay
    n = vq["cluster_size"][0] + w * (count - vq["cluster_size"][0])
    avg = vq["embed_avg"][0] + w * (summed - vq["embed_avg"][0])
    total = jnp.sum(n)
    smoothed = (n + 1e-5) / (total + V * 1e-5) * total
    return {**vq, "cluster_size": n[None], "embed_avg": avg[None],
            "embed": (avg / smoothed[:, None])[None]}


def tok_encode(p: Mapping, vq: Mapping, video: jax.Array, cfg: AIMEConfig,
               ids_override: jax.Array | None = None, use_override: jax.Array | bool = False
               ) -> dict:
    """video [B, T, 3, H, W] -> ids (used), own ids, x, E, dist, skips, new vq state."""
    B = video.shape[0]
    z, skips = tok_encode_maps(p, video.transpose(0, 2, 1, 3, 4), cfg)
    _, Dc, Tq, Ht, Wt = z.shape
    x = z.transpose(0, 2, 3, 4, 1).reshape(-1, Dc)
    E = vq["embed"][0]
    dist = vq_distances(x, E)
    own = jnp.argmax(dist, -1).astype(jnp.int32)
    ids = own if ids_override is None else jnp.where(use_override,
                                                     ids_override.reshape(-1), own)
    return {"ids": ids.reshape(B, Tq, Ht, Wt), "own": own.reshape(B, Tq, Ht, Wt), "x": x,
            "E": E, "dist": dist, "skips": skips, "frames": B * Tq,
            "vq": ema_update(vq, x, ids, cfg.vq_decay)}


def codes(E: jax.Array, ids: jax.Array) -> jax.Array:
    """E[ids] (ids outside [0, V) -> 0) as [B, Dc, T, Ht, Wt]."""
    V = E.shape[0]
    safe = jnp.where((ids >= 0) & (ids < V), ids, 0)
    return E[safe].transpose(0, 4, 1, 2, 3)


def rotation_trick(x: jax.Array, q: jax.Array) -> jax.Array:
    """L0 primitive only (dead in the model, aime.md §2.2.2 step 4)."""
    sg = jax.lax.stop_gradient
    xn = jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-6)
    qn = jnp.maximum(jnp.linalg.norm(q, axis=-1, keepdims=True), 1e-6)
    u, qh = x / xn, q / qn
    w = u + qh
    w = sg(w / jnp.maximum(jnp.linalg.norm(w, axis=-1, keepdims=True), 1e-6))
    out = x - 2 * jnp.sum(x * w, -1, keepdims=True) * w + 2 * jnp.sum(
        x * sg(u), -1, keepdims=True) * sg(qh)
    return out * sg(jnp.linalg.norm(q, axis=-1, keepdims=True) / xn)


# ----------------------------------------------------------------------------------------------
# Token predictor


def rope(x: jax.Array, ang: jax.Array) -> jax.Array:
    rot = jnp.stack([-x[..., 1::2], x[..., 0::2]], axis=-1).reshape(x.shape)
    return x * jnp.cos(ang) + rot * jnp.sin(ang)


def mha_p(p: Mapping, xq: jax.Array, xkv: jax.Array, heads: int, ang: jax.Array | None = None,
          causal: bool = False) -> jax.Array:
    B, nq, C = xq.shape
    dh = C // heads

    def split(x):
        return x.reshape(B, -1, heads, dh).transpose(0, 2, 1, 3)

    q = split(linear(p["q_proj"], xq)) * dh ** -0.5
    k, v = split(linear(p["k_proj"], xkv)), split(linear(p["v_proj"], xkv))
    if ang is not None:
        q, k = rope(q, ang), rope(k, ang)
    s = jnp.matmul(q, k.transpose(0, 1, 3, 2), precision=HI)
    if causal:
        mask = np.triu(np.ones((nq, k.shape[2]), bool), 1)
        s = jnp.where(mask, MASK_VALUE, s)
    o = jnp.matmul(jax.nn.softmax(s, -1), v, precision=HI)
    return linear(p["o_proj"], o.transpose(0, 2, 1, 3).reshape(B, nq, C))


def cross_attention(p: Mapping, xq: jax.Array, xkv: jax.Array, heads: int) -> jax.Array:
    return mha_p(p["attention"], layer_norm(p["q_norm"], xq), layer_norm(p["kv_norm"], xkv),
                 heads)


def self_attention_block(p: list, x: jax.Array, heads: int, ang: jax.Array | None,
                         causal: bool = False) -> jax.Array:
    for ell, layer in enumerate(p):
        sa = layer[0]["module"]
        y = layer_norm(sa["norm"], x)
        x = x + mha_p(sa["attention"], y, y, heads, ang if ell == 0 else None, causal)
        m = layer[1]["module"]
        x = x + linear(m[3], gelu(linear(m[1], layer_norm(m[0], x))))
    return x


def _ang(cfg: AIMEConfig, start: int, n: int) -> jax.Array:
    return jnp.asarray(rope_angles(start, n, cfg.perceiver_head_dim))


def pred_encoder(p: Mapping, fixed: Mapping, consts: Mapping, ids: jax.Array, cfg: AIMEConfig
                 ) -> jax.Array:
    B, h = ids.shape[0], cfg.perceiver_heads
    e = p["token_embedding"]["embedding"][ids.reshape(B, -1)]
    pe = consts["pos_encoding"]["position_encoding"]
    x = linear(fixed["input_proj"], jnp.concatenate([e, jnp.broadcast_to(pe, (B, *pe.shape))],
                                                    -1))
    lq = p["latent_queries"]
    lat = cross_attention(p["encoder_cross_attn"], jnp.broadcast_to(lq, (B, *lq.shape)), x, h)
    return self_attention_block(p["encoder_self_attn"], lat, h, _ang(cfg, 0, lat.shape[1]))


def pred_bottleneck(p: Mapping, lat: jax.Array, n: int, start: int, cfg: AIMEConfig
                    ) -> jax.Array:
    ang = _ang(cfg, start, n)
    q = p["time_queries"]["_query"][start:start + n] + linear(p["time_pe_proj"], ang)
    q = cross_attention(p["temporal_cross_attn"], jnp.broadcast_to(q, (lat.shape[0], *q.shape)),
                        lat, cfg.perceiver_heads)
    return self_attention_block(p["temporal_self_attn"], q, cfg.perceiver_heads, ang, True)


def pred_decoder(p: Mapping, fixed: Mapping, consts: Mapping, lat: jax.Array, n: int,
                 start: int, cfg: AIMEConfig) -> tuple[jax.Array, jax.Array]:
    B, g = lat.shape[0], cfg.token_grid
    tc = pred_bottleneck(p, lat, n, start, cfg)
    rep = jnp.repeat(tc, g * g, axis=1)
    pe = jnp.tile(consts["pos_encoding"]["position_encoding"], (n, 1))
    q = linear(fixed["decoder_query_proj"],
               jnp.concatenate([rep, jnp.broadcast_to(pe, (B, *pe.shape))], -1))
    out = cross_attention(p["decoder_cross_attn"], q, lat, cfg.perceiver_heads)
    logits = jnp.matmul(out, p["token_embedding"]["embedding"].T, precision=HI)
    return logits.reshape(B, n, g, g, -1), tc


def label_smoothed_ce(logits: jax.Array, target: jax.Array, eps: jax.Array) -> jax.Array:
    logp = jax.nn.log_softmax(logits, -1)
    nll = -jnp.take_along_axis(logp, target[..., None], -1)[..., 0]
    return jnp.mean((1 - eps) * nll + eps * (-jnp.mean(logp, -1)))


def global_context(params: Mapping, fixed: Mapping, consts: Mapping, vq: Mapping,
                   video: jax.Array, hyper: Mapping, cfg: AIMEConfig,
                   override: Mapping | None = None, use_override: jax.Array | bool = False
                   ) -> dict:
    """aime.md §2.2.4-§2.2.5 -> context [B, T, Cc], loss parts, own decisions, new vq."""
    pm = params["perceiver_model"]
    tok, model = pm["tokenizer"], pm["model"]
    fx = fixed["perceiver_model"]["model"] if "perceiver_model" in fixed else model
    cs = consts["perceiver_model"]["model"]
    ov = override or {}
    B, T = video.shape[:2]
    T_ctx = cfg.context_frames
    full = tok_encode(tok, vq, video, cfg, ov.get("ids_full"), use_override)
    Tq = full["ids"].shape[1]
    T_c = min(int(T_ctx / (T / Tq)), Tq - 1)
    T_p = Tq - T_c
    lat = pred_encoder(model, fx, cs, full["ids"][:, :T_c], cfg)
    logits, tc = pred_decoder(model, fx, cs, lat, T_p, T_c, cfg)
    own_pred = jnp.argmax(jax.lax.stop_gradient(logits), -1).astype(jnp.int32)
    pred = own_pred if ov.get("pred") is None else jnp.where(use_override, ov["pred"], own_pred)
    E1 = full["vq"]["embed"][0]
    recon = tok_decode(tok, codes(E1, jnp.concatenate([full["ids"][:, :T_c], pred], 1)),
                       full["skips"], cfg)
    target = full["ids"][:, T_c:]
    ce = label_smoothed_ce(logits, target, hyper["label_smoothing"])
    T_rec, T_tgt = recon.shape[1], T - T_ctx
    if cfg.perceiver_perceptual == "mse":
        perc = jnp.mean(jnp.square(recon[:, T_rec - T_tgt:] - jnp.clip(video[:, T_ctx:], -1, 1)))
    else:
        perc = jnp.zeros((), jnp.float32)
    past = tok_encode(tok, full["vq"], video[:, :T_ctx], cfg, ov.get("ids_past"), use_override)
    if cfg.vq_dist_grad_codebook == "step_end":
        dist = vq_distances(full["x"], full["E"], past["vq"]["embed"][0])
    else:
        dist = full["dist"]
    vql = vq_loss(dist, full["ids"].reshape(-1), full["frames"], cfg)
    if T_p == T - T_ctx:
        ctx_future = tc
    else:
        fut = tok_encode(tok, past["vq"], video[:, T_ctx:], cfg)
        ctx_future = pred_bottleneck(model, pred_encoder(model, fx, cs, fut["ids"], cfg),
                                     T - T_ctx, T_ctx, cfg)
    ctx_past = pred_bottleneck(model, pred_encoder(model, fx, cs, past["ids"], cfg), T_ctx, 0,
                               cfg)
    context = jnp.concatenate([ctx_past, ctx_future], 1)
    loss = ce + vql + hyper["perceptual_weight"] * perc
    acc = jnp.mean((own_pred == target).astype(jnp.float32))
    return {"context": context, "loss": loss, "ce": ce, "vq_loss": vql, "perc": perc,
            "token_acc": acc, "recon": recon, "vq": past["vq"],
            "decisions": {"ids_full": full["own"], "ids_past": past["own"], "pred": own_pred},
            "ids": {"ids_full": full["ids"], "ids_past": past["ids"], "pred": pred}}
