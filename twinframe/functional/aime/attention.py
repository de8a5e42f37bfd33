"""Attention schema in JAX (aime.md §2.5), mirroring `torch_ref.aime.attention`."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from twinframe.functional.aime.prims import (
    EPS32,
    HI,
    clamp_t,
    conv,
    conv_p,
    gelu,
    group_norm,
    gru_cell,
    layer_norm,
    linear,
    mha_t,
    normalize,
    resize,
    swish,
)
from twinframe.models.aime import AIMEConfig
from twinframe.models.aime.config import CONVGRU_CHANNELS, NUM_SLOTS, PRIOR_HEADS, SLOT_DIM


def slot_attention(p: Mapping, x: jax.Array, slots: jax.Array, iters: int = 3):
    B, N, d = x.shape
    x = layer_norm(p["norm_x"], x)
    k, v = linear(p["to_k"], x), linear(p["to_v"], x)
    attn = None
    for _ in range(iters):
        q = linear(p["to_q"], layer_norm(p["norm_s"], slots))
        logits = jnp.einsum("bkd,bnd->bkn", q, k, precision=HI) * d ** -0.5
        attn = jax.nn.softmax(logits, 1) + 1e-8
        attn = attn / jnp.sum(attn, 1, keepdims=True)
        updates = jnp.einsum("bkn,bnd->bkd", attn, v, precision=HI)
        K = slots.shape[1]
        slots = gru_cell(p["gru"], updates.reshape(B * K, d), slots.reshape(B * K, d)).reshape(
            B, K, d)
        m = p["mlp"]
        slots = slots + linear(m[3], gelu(linear(m[1], layer_norm(m[0], slots))))
    return slots, attn


def posterior(p: Mapping, o: jax.Array, h: jax.Array, c: jax.Array, cfg: AIMEConfig) -> dict:
    R, K, d = cfg.attention_resolution, NUM_SLOTS, SLOT_DIM
    B = o.shape[0]
    l1 = swish(group_norm(p["pyramid_conv1"][1], conv_p(p["pyramid_conv1"][0], o, 2, 2), 8))
    l2 = swish(group_norm(p["pyramid_conv2"][1], conv_p(p["pyramid_conv2"][0], l1, 2, 2), 12))
    l3 = swish(group_norm(p["pyramid_conv3"][1], conv_p(p["pyramid_conv3"][0], l2, 1, 1), 16))
    fused = conv_p(p["pyramid_fusion"], jnp.concatenate(
        [resize(l1, (R, R)), resize(l2, (R, R)), resize(l3, (R, R))], 1))
    pos = jnp.concatenate([jnp.broadcast_to(p["row_embed"][:, None], (R, R, d // 2)),
                           jnp.broadcast_to(p["col_embed"][None], (R, R, d // 2))], -1)
    x = fused.reshape(B, d, R * R).transpose(0, 2, 1) + pos.reshape(1, R * R, d)
    m = p["slot_modulator"]
    seeds = linear(m[3], swish(layer_norm(m[1], linear(m[0], jnp.concatenate([h, c], -1)))))
    slots, attn = slot_attention(p["slot_attn"], x, seeds.reshape(B, K, d))
    maps = attn.reshape(B, K, R, R)
    feats = slots.reshape(B, -1)
    fw = p["fusion_weights_head"]
    w = jax.nn.softmax(layer_norm(fw[1], linear(fw[0], feats)), -1)
    fused_map = jnp.sum(maps * w.reshape(B, K, 1, 1), 1)
    amap = jax.nn.softmax(fused_map.reshape(B, -1), -1).reshape(B, R, R)
    lin = jnp.linspace(-1.0, 1.0, R, dtype=jnp.float32)
    yg, xg = jnp.meshgrid(lin, lin, indexing="ij")
    pk = jax.nn.softmax(maps.reshape(B, K, -1), -1).reshape(B, K, R, R)
    centres = jnp.stack([jnp.sum(pk * xg, (2, 3)), jnp.sum(pk * yg, (2, 3))], -1)
    sr = p["spatial_regularizer"]
    coords = jnp.tanh(linear(sr[3], swish(layer_norm(sr[1], linear(sr[0],
                                                                    centres.reshape(B, -1)))))
                      ) * 0.995
    P = normalize(jax.nn.softmax(maps.reshape(B, K, -1), -1), -1)
    corr = jnp.matmul(P, P.transpose(0, 2, 1), precision=HI)
    div = jnp.sum(jnp.square(corr - jnp.eye(K)[None])) / (B * K * (K - 1) + 1e-8)
    bp = p["bottleneck_projector"]
    bottleneck = linear(bp[3], swish(layer_norm(bp[1], linear(bp[0], feats))))
    return {"map": amap, "coords": coords, "bottleneck": bottleneck, "div": div}


def phi_attention(p: Mapping, bottleneck: jax.Array, coords: jax.Array, eps: jax.Array
                  ) -> jax.Array:
    r = linear(p["residual_projection"], jnp.concatenate([bottleneck, coords], -1))
    f = p["fn"]
    g = swish(layer_norm(f[5], linear(f[4], swish(layer_norm(f[1], linear(f[0], r))))))
    m, lv = jnp.split(g + r, 2, -1)
    return m + eps * jnp.exp(0.5 * clamp_t(lv, -10.0, 2.0))


def attention_prior(p: Mapping, prev: jax.Array, h: jax.Array, z: jax.Array, cfg: AIMEConfig
                    ) -> tuple[jax.Array, jax.Array, jax.Array]:
    B, R, fd = prev.shape[0], cfg.attention_resolution, cfg.hidden_dim
    a = prev[:, None]
    sd = p["spatial_dynamics"]
    zero = jnp.zeros((B, CONVGRU_CHANNELS, R, R), prev.dtype)
    gates = group_norm(sd["norm_gates"], conv_p(sd["ConvGates"], jnp.concatenate([a, zero], 1),
                                                1, 2), 2)
    rt, ut = jnp.split(gates, 2, 1)
    r, u = jax.nn.sigmoid(rt), jax.nn.sigmoid(ut)
    cand = jnp.tanh(group_norm(sd["norm_candidate"], conv_p(
        sd["Conv_ct"], jnp.concatenate([a, r * zero], 1), 1, 2), 8))
    S = u * zero + (1 - u) * cand
    motion = conv(a, p["motion_kernels"], None, 1, 2)
    mp = conv_p(p["motion_projection"], motion)
    seq = conv_p(p["spatial_downsampler"], S, 1, 1).transpose(0, 2, 3, 1).reshape(B, -1, fd)
    mseq = mp.transpose(0, 2, 3, 1).reshape(B, -1, fd // 2)
    seq = seq + jnp.pad(mseq, ((0, 0), (0, 0), (0, fd // 2))) + p["pos_embed"]
    cp = p["context_projection"]
    ctx = linear(cp[3], swish(layer_norm(cp[1], linear(cp[0], jnp.concatenate([h, z], -1)))))
    y = layer_norm(p["norm1"], seq)
    seq = seq + mha_t(p["self_attention"], y, y, y, PRIOR_HEADS)
    ce = jnp.broadcast_to(ctx[:, None], (B, R * R, fd))
    seq = seq + mha_t(p["context_attention"], layer_norm(p["norm2"], seq), ce, ce, PRIOR_HEADS)
    f = p["ffn"]
    seq = seq + linear(f[4], swish(layer_norm(f[1], linear(f[0], layer_norm(p["norm3"], seq)))))
    op = p["output_projection"]
    logits = linear(op[3], swish(layer_norm(op[1], linear(op[0], seq))))[..., 0]
    pmap = jax.nn.softmax(logits, -1).reshape(B, R, R)
    mv = conv_p(p["movement_predictor"], a, 1, 1)
    return pmap, mv[:, 0], mv[:, 1]


def attention_kl(q_map: jax.Array, p_map: jax.Array) -> jax.Array:
    q = q_map.reshape(q_map.shape[0], -1)
    q = q / jnp.sum(q, -1, keepdims=True)
    p = p_map.reshape(p_map.shape[0], -1)
    p = p / jnp.sum(p, -1, keepdims=True)
    lq = jnp.log(clamp_t(q, EPS32, 1 - EPS32))
    lp = jnp.log(clamp_t(p, EPS32, 1 - EPS32))
    t = jnp.where(q == 0, 0.0, q * (lq - lp))
    return jnp.mean(jnp.sum(t, -1))


def centre_of_mass(amap: jax.Array) -> tuple[jax.Array, jax.Array]:
    R = amap.shape[-1]
    idx = jnp.arange(R, dtype=amap.dtype)
    tot = clamp_t(jnp.sum(amap, (1, 2)), 1e-8)
    return (jnp.sum(amap * idx[None, None, :], (1, 2)) / tot,
            jnp.sum(amap * idx[None, :, None], (1, 2)) / tot)


def smooth_l1(x: jax.Array, y: jax.Array) -> jax.Array:
    d = jnp.abs(x - y)
    return jnp.mean(jnp.where(d < 1.0, 0.5 * d * d, d - 0.5))
