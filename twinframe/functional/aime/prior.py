"""DPGMM prior in JAX (aime.md §2.4), mirroring `torch_ref.aime.prior`."""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
from jax.scipy.special import digamma, gammaln

from twinframe.functional.aime.prims import (
    EPS32,
    TINY32,
    clamp_t,
    gamma_reparam,
    gelu,
    kumaraswamy_sample,
    layer_norm,
    layer_norm_pair,
    linear,
    sn_linear,
    softplus_half,
    standard_gamma_draw,
)
from twinframe.models.aime import AIMEConfig

EULER = 0.5772156649
SB = "prior.stick_breaking"


def kumar(p: Mapping, st: dict, h: jax.Array) -> tuple[jax.Array, jax.Array]:
    out = []
    for ab in ("a", "b"):
        n = p["kumar_net"][f"net_{ab}"]
        key = f"{SB}.kumar_net.net_{ab}.kumar_{ab}"
        y = sn_linear(n[f"kumar_{ab}_fc"], st, f"{key}_fc", h)
        y = gelu(layer_norm(n[f"kumar_{ab}_ln"], y, 1e-6))
        y = layer_norm(n[f"kumar_{ab}_ln_out"], sn_linear(n[f"kumar_{ab}_out"], st, f"{key}_out",
                                                          y))
        y = clamp_t(y, -5.0, 5.0)
        out.append(jnp.nan_to_num(y, nan=0.0, posinf=5.0, neginf=-5.0))
    return out[0], out[1]


def gamma_params(p: Mapping, st: dict, h: jax.Array) -> tuple[jax.Array, jax.Array]:
    n = p["alpha_posterior"]["param_net"]
    key = f"{SB}.alpha_posterior.param_net"
    y = gelu(layer_norm(n["gamma_ln"], sn_linear(n["gamma_fc"], st, f"{key}.gamma_fc", h)))
    y = layer_norm_pair(n["gamma_ln_out"], sn_linear(n["gamma_out"], st, f"{key}.gamma_out", y),
                        1e-6)
    y = softplus_half(y) + EPS32
    return clamp_t(y[..., 0], EPS32), clamp_t(y[..., 1], EPS32)


def stick_breaking(v: jax.Array, perm: jax.Array | None) -> jax.Array:
    B, K = v.shape[0], v.shape[1] + 1
    v = clamp_t(v, EPS32, 1 - EPS32)
    log_prefix = jnp.pad(jnp.cumsum(jnp.log1p(-v), -1), ((0, 0), (1, 0)))
    pi = jnp.exp(jnp.log(jnp.pad(v, ((0, 0), (0, 1)), constant_values=1.0)) + log_prefix)
    if perm is not None:
        full = jnp.concatenate([perm, jnp.full((B, 1), K - 1, perm.dtype)], 1)
        pi = jnp.take_along_axis(pi, jnp.argsort(full, axis=1), 1)
    return pi / (jnp.sum(pi, -1, keepdims=True) + EPS32)


def dpgmm(p: Mapping, st: dict, h: jax.Array, noise: Mapping, cfg: AIMEConfig) -> dict:
    """aime.md §2.4.2 in call order (SN updates: kumar nets, then the gamma sample call)."""
    K, D = cfg.max_components, cfg.latent_dim
    sb = p["stick_breaking"]
    log_a, log_b = kumar(sb, st, h)
    perm = jnp.argsort(noise["u_perm"], axis=-1, stable=True)
    la = jnp.take_along_axis(log_a, perm, 1)
    lb = jnp.take_along_axis(log_b, perm, 1)
    v = kumaraswamy_sample(la, lb, noise["u_kuma"])
    pi = stick_breaking(v, perm)
    kappa, rho = gamma_params(sb, st, h)
    k_s = jnp.broadcast_to(kappa[:, None], (h.shape[0], cfg.alpha_samples))
    x_hat = standard_gamma_draw(k_s, noise["gamma_normal"], noise["gamma_uniform"],
                                noise["gamma_boost"])
    x = gamma_reparam(k_s, x_hat)
    x = jnp.where(x < TINY32, TINY32, x)
    alpha = jnp.mean(x / rho[:, None], -1, keepdims=True)
    c = p["component_nn"]
    y = layer_norm(c[4], linear(c[3], jax.nn.leaky_relu(layer_norm(c[1], linear(c[0], h)), 0.2)))
    mu, lv = jnp.split(y, 2, -1)
    B = h.shape[0]
    return {"pi": pi, "kumar_a": jnp.exp(log_a), "kumar_b": jnp.exp(log_b), "v": v,
            "alpha": alpha, "mu": mu.reshape(B, K, D),
            "logvar": clamp_t(lv.reshape(B, K, D), -10.0, 2.0), "perm": perm}


def _lbeta(x: jax.Array, y: jax.Array) -> jax.Array:
    return gammaln(x + EPS32) + gammaln(y + EPS32) - gammaln(x + y + EPS32)


def kumar_beta_kl(a, b, alpha, beta, M: int) -> jax.Array:
    e = 100 * EPS32
    a, b = clamp_t(a, e, 20.0), clamp_t(b, e, 20.0)
    alpha, beta = clamp_t(alpha, e), clamp_t(beta, e)
    ab = a * b
    a_inv, b_inv = 1.0 / (a + e), 1.0 / (b + e)
    terms = jnp.stack([_lbeta(m * a_inv, b) - jnp.log(m + ab) for m in range(1, M + 1)], -1)
    kl = (beta - 1) * b * jnp.exp(jax.nn.logsumexp(terms, -1))
    t1 = (a - alpha) / (a + e) * (-EULER - digamma(b + e) - b_inv)
    t2 = jnp.log(ab + e) + _lbeta(alpha, beta) + (-(b - 1)) / (b + e)
    return clamp_t(kl + t1 + t2, 0.0)


def gamma_kl(kappa, rho, a0, b0) -> jax.Array:
    kl = (a0 * jnp.log(rho / b0) + (-gammaln(kappa) + gammaln(a0))
          + (kappa - a0) * digamma(kappa) + (-(rho - b0) * (kappa / rho)))
    return jnp.mean(kl)


def mc_kl(mu_q, lv_q, pi, mu, lv, xi) -> jax.Array:
    D = mu_q.shape[-1]
    c = D * math.log(2 * math.pi)
    z = mu_q + xi * jnp.exp(0.5 * lv_q)
    log_q = -0.5 * (c + jnp.sum(lv_q, -1) + jnp.sum(jnp.square(z - mu_q) * jnp.exp(-lv_q), -1))
    zk = z[:, :, None, :]
    log_n = -0.5 * (c + jnp.sum(lv, -1)[None]
                    + jnp.sum(jnp.square(zk - mu[None]) * jnp.exp(-lv)[None], -1))
    log_w = jnp.log(clamp_t(pi, EPS32) + EPS32)
    log_p = jax.nn.logsumexp(log_n + log_w[None], -1)
    return jnp.mean(log_q - log_p)


def cluster_entropy(pi: jax.Array) -> jax.Array:
    q = pi / jnp.sum(pi, -1, keepdims=True)
    logits = jnp.log(clamp_t(q, EPS32, 1 - EPS32))
    logits = logits - jax.nn.logsumexp(logits, -1, keepdims=True)
    h1 = -jnp.sum(jnp.exp(logits) * logits, -1)
    pc = clamp_t(pi, EPS32)
    h2 = -jnp.sum(pc * jnp.log(pc), -1)
    return jnp.mean(h1) + jnp.mean(h2)


def hierarchical_kl(p: Mapping, st: dict, out: Mapping, h: jax.Array, cfg: AIMEConfig
                    ) -> jax.Array:
    a, b = out["kumar_a"], out["kumar_b"]
    beta = jnp.broadcast_to(out["alpha"], a.shape)
    kl = kumar_beta_kl(a, b, jnp.ones_like(a), beta, cfg.dkl_taylor_order)
    sb = p["stick_breaking"]
    kappa, rho = gamma_params(sb, st, h)
    return jnp.mean(jnp.sum(kl, -1)) + gamma_kl(kappa, rho, sb["gamma_a"], sb["gamma_b"])
