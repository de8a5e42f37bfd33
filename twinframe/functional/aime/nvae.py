"""NVAE encoder / decoder in JAX (aime.md §2.3), mirroring `torch_ref.aime.nvae`.

`st` is the flat state dict (spectral-norm u/v under '<module>.u/.v', BatchNorm statistics under
'encoder.final_norm.mean/.var/.count'), updated at trace time."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from twinframe.functional.aime.prims import (
    batch_norm_train,
    conv_p,
    group_norm,
    layer_norm,
    linear,
    normalize,
    resize,
    sn_conv,
    swish,
)
from twinframe.models.aime import AIMEConfig
from twinframe.models.aime.tree import (
    adapter_name,
    decoder_plan,
    encoder_plan,
    fusion_plan,
    stem_groups,
    up_groups,
)


def nvae_res(p: Mapping, st: dict, key: str, x: jax.Array, o: int, stride: int,
             w: Mapping | None = None) -> jax.Array:
    """`w` (same structure as p) overrides the trained tensors (EMA teacher); SN state is
    shared."""
    q = p if w is None else w
    ident = x if "skip" not in p else sn_conv(p["skip"], st, key + ".skip", x, stride, 0,
                                              q["skip"]["kernel"])
    h = sn_conv(p["conv1"], st, key + ".conv1", x, stride, 1, q["conv1"]["kernel"])
    h = swish(group_norm(q["norm1"], h, min(32, o)))
    h = sn_conv(p["conv2"], st, key + ".conv2", h, 1, 1, q["conv2"]["kernel"])
    h = swish(group_norm(q["norm2"], h, min(32, o)))
    return ident + q["gate"] * h


def encoder_features(p: Mapping, st: dict, x: jax.Array, cfg: AIMEConfig,
                     w: Mapping | None = None) -> tuple[jax.Array, list[jax.Array]]:
    """Stem + blocks -> (last map, levels C2..last)."""
    q = p if w is None else w
    c0 = cfg.nvae_stem_channels
    h = sn_conv(p["stem"][0], st, "encoder.stem.0", x, 1, 3, q["stem"][0]["kernel"])
    h = swish(group_norm(q["stem"][1], h, stem_groups(c0)))
    levels: dict[int, jax.Array] = {}
    level, hw = 1, h.shape[-1]
    for i, (_, co, s, n) in enumerate(encoder_plan(cfg)):
        for j in range(n):
            key = f"encoder.encoder_blocks.{i}.blocks.{j}"
            pb = p["encoder_blocks"][i]["blocks"][j]
            wb = None if w is None else w["encoder_blocks"][i]["blocks"][j]
            h = nvae_res(pb, st, key, h, co, s if j == 0 else 1, wb)
        if h.shape[-1] != hw:
            level, hw = level + 1, h.shape[-1]
        if level >= 2:
            levels[level] = h
    return h, [levels[k] for k in sorted(levels)]


def encoder(p: Mapping, st: dict, x: jax.Array, eps: jax.Array, cfg: AIMEConfig):
    h, levels = encoder_features(p, st, x, cfg)
    h = swish(batch_norm_train(p["final_norm"], st, "encoder.final_norm", h))
    m = p["mlp"]
    h = swish(layer_norm(m[2], linear(m[1], h.reshape(h.shape[0], -1))))
    h = swish(layer_norm(m[6], linear(m[5], h)))
    mu, lv = jnp.split(linear(p["proj"], h), 2, -1)
    lv = jnp.where(lv < -10.0, -10.0, jnp.where(lv > 2.0, 2.0, lv))
    return mu + eps * jnp.exp(0.5 * lv), mu, lv, levels


def decoder(p: Mapping, st: dict, z: jax.Array, levels: list[jax.Array], cfg: AIMEConfig
            ) -> jax.Array:
    m, f = p["mlp"], cfg.nvae_final_size
    h = swish(layer_norm(m[1], linear(m[0], z)))
    h = swish(layer_norm(m[5], linear(m[4], h)))
    h = swish(layer_norm(m[8], linear(m[7], h)))
    h = h.reshape(z.shape[0], cfg.dec_channels[0], f, f)
    for i, ((_, co, up, n), fu) in enumerate(zip(decoder_plan(cfg), fusion_plan(cfg),
                                                  strict=True)):
        blk = p["decoder_blocks"][i]["blocks"]
        key = f"decoder.decoder_blocks.{i}.blocks"
        if up:
            h = jnp.repeat(jnp.repeat(h, 2, axis=2), 2, axis=3)
            h = sn_conv(blk[1], st, f"{key}.1", h, 1, 1)
            h = swish(group_norm(blk[2], h, up_groups(co)))
            for j in range(n):
                h = nvae_res(blk[4 + j], st, f"{key}.{4 + j}", h, co, 1)
        else:
            for j in range(n):
                h = nvae_res(blk[j], st, f"{key}.{j}", h, co, 1)
        if fu is not None:
            skip = resize(levels[fu[0]], h.shape[-2:])
            h = conv_p(p["post_concat_adapters"][adapter_name(cfg, i)],
                       jnp.concatenate([h, skip], 1))
    c = decoder_plan(cfg)[-1][1]
    h = swish(group_norm(p["final_norm"], h, up_groups(c)))
    h = jax.nn.silu(conv_p(p["pre_output"][0], h))
    return conv_p(p["mdl_head"]["proj"], h)


def mdl_nll(y: jax.Array, x: jax.Array) -> jax.Array:
    """Per-image NLL [B] (aime.md §2.3.4)."""
    B, C, H, W = y.shape
    K = C // 10
    y = y.reshape(B, K, 10, H, W)
    logit, means = y[:, :, 0], y[:, :, 1:4]
    log_s = jnp.where(y[:, :, 4:7] < -7.0, -7.0, y[:, :, 4:7])
    coef = jnp.tanh(y[:, :, 7:10])
    xk = jnp.broadcast_to(x[:, None], (B, K, 3, H, W))
    mu_r = means[:, :, 0]
    mu_g = means[:, :, 1] + coef[:, :, 0] * xk[:, :, 0]
    mu_b = means[:, :, 2] + coef[:, :, 1] * xk[:, :, 0] + coef[:, :, 2] * xk[:, :, 1]
    mu = jnp.stack([mu_r, mu_g, mu_b], 2)
    inv_s = jnp.exp(-log_s)
    half = (1.0 / 255.0) / 2
    cdf_lo = jax.nn.sigmoid((xk - half - mu) * inv_s)
    cdf_hi = jax.nn.sigmoid((xk + half - mu) * inv_s)

    def floor(v):
        return jnp.where(v < 1e-12, 1e-12, v)

    p = jnp.where(xk < -0.999, floor(cdf_hi),
                  jnp.where(xk > 0.999, floor(1 - cdf_lo), floor(cdf_hi - cdf_lo)))
    log_p = jnp.sum(jnp.log(floor(p)), 2)
    log_mix = log_p + jax.nn.log_softmax(logit, 1)
    return -jnp.mean(jax.nn.logsumexp(log_mix, 1), (1, 2))


def mdl_mode(y: jax.Array) -> jax.Array:
    """Per-pixel mode of the most likely component: [B, 3, H, W] in [-1, 1]."""
    B, C, H, W = y.shape
    y = y.reshape(B, C // 10, 10, H, W)
    k = jnp.argmax(y[:, :, 0], 1)
    p = jnp.take_along_axis(y, k[:, None, None], 1)[:, 0]
    m, c = p[:, 1:4], jnp.tanh(p[:, 7:10])
    r = jnp.clip(m[:, 0], -1, 1)
    g = jnp.clip(m[:, 1] + c[:, 0] * r, -1, 1)
    b = jnp.clip(m[:, 2] + c[:, 1] * r + c[:, 2] * g, -1, 1)
    return jnp.stack([r, g, b], 1)


def _avg_pool2(x: jax.Array) -> jax.Array:
    B, C, H, W = x.shape
    return x.reshape(B, C, H // 2, 2, W // 2, 2).mean((3, 5))


def gram_loss(student: list[jax.Array], teacher: list[jax.Array]) -> jax.Array:
    total = jnp.zeros((), jnp.float32)
    for s, t in zip(student, teacher, strict=True):
        if s.shape[-1] % 2 == 0:
            s, t = _avg_pool2(s), _avg_pool2(t)
        rs = normalize(s.reshape(*s.shape[:2], -1).transpose(0, 2, 1), -1)
        rt = normalize(t.reshape(*t.shape[:2], -1).transpose(0, 2, 1), -1)
        gs = jax.nn.relu(jnp.matmul(rs, rs.transpose(0, 2, 1), precision="highest"))
        gt = jax.nn.relu(jnp.matmul(rt, rt.transpose(0, 2, 1), precision="highest"))
        total = total + jnp.mean(jnp.square(gs - gt))
    return total
