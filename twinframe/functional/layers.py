"""Shared JAX primitives (one copy), pure functions over dict pytrees whose names mirror
`torch_ref.layers` (hrm.md §2.1-§2.2, §2.5).

Kernels are `[in, out]`. Weights are stored f32 and cast to the compute dtype T of the input;
matmuls accumulate in f32 (`preferred_element_type`) and return T; norms, RoPE, softmax and
silu(g)*u run in f32.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from twinframe.models.base import TRUNC_LOWER, TRUNC_UPPER, trunc_normal_compensation

F32 = jnp.float32
Params = dict


def trunc_normal_from_uniform(
    u: jax.Array, std: float, lower: float = TRUNC_LOWER, upper: float = TRUNC_UPPER
) -> jax.Array:
    """hrm.md §2.1: u ~ U[erf(lower/sqrt2), erf(upper/sqrt2)) -> truncated normal with std `std`."""
    if std == 0:
        return jnp.zeros_like(u)
    c = std / trunc_normal_compensation(lower, upper)
    w = math.sqrt(2.0) * jax.scipy.special.erfinv(u) * c
    return jnp.clip(w, lower * c, upper * c)


def linear(p: Params, x: jax.Array) -> jax.Array:
    """x: [..., in] (T) @ kernel [in, out] (+ bias) -> [..., out] (T), f32 accumulation."""
    y = jnp.dot(x, p["kernel"].astype(x.dtype), preferred_element_type=F32)
    if "bias" in p:
        y = y + p["bias"].astype(x.dtype)
    return y.astype(x.dtype)


def linear_f32(p: Params, x: jax.Array) -> jax.Array:
    """Head form: x upcast to f32, f32 product, f32 bias -> [..., out] f32."""
    y = jnp.dot(x.astype(F32), p["kernel"].astype(F32), preferred_element_type=F32)
    return y + p["bias"].astype(F32) if "bias" in p else y


def rms_norm(x: jax.Array, eps: float) -> jax.Array:
    """RMSNorm without scale, in f32, returned in x.dtype. x: [..., H]."""
    x32 = x.astype(F32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return y.astype(x.dtype)


def rotate_half(x: jax.Array) -> jax.Array:
    """[x1 || x2] -> [-x2 || x1] over the last axis."""
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([-x2, x1], axis=-1)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x: [..., d] f32; cos, sin broadcastable to x -> x*cos + rotate_half(x)*sin (f32), computed
    per half (the same products and sums, without materialising rotate_half(x))."""
    x1, x2 = jnp.split(x, 2, axis=-1)
    c1, c2 = jnp.split(cos.astype(F32), 2, axis=-1)
    s1, s2 = jnp.split(sin.astype(F32), 2, axis=-1)
    return jnp.concatenate([x1 * c1 + (-x2) * s1, x2 * c2 + x1 * s2], axis=-1)


def attention(
    p: Params, x: jax.Array, cos: jax.Array, sin: jax.Array, num_heads: int
) -> jax.Array:
    """Bidirectional MHA, explicit f32 softmax, no mask. x: [B, P, H] (T) -> [B, P, H] (T).

    Heads are laid out [B, h, P, d] after the projection, so both attention products are plain
    batched matmuls; RoPE is applied to q and k before their transpose, so that XLA can fuse
    the two (instead of copying all of [3, B, h, P, d], then RoPE over q and k).
    cos, sin: [P, 1, d]."""
    B, P, H = x.shape
    d = H // num_heads
    T = x.dtype
    qkv = linear(p["qkv_proj"], x).reshape(B, P, 3, num_heads, d)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [B, P, h, d]

    def heads_major(y: jax.Array, rope: bool) -> jax.Array:  # [B, P, h, d] -> [B, h, P, d]
        y = apply_rope(y.astype(F32), cos, sin).astype(T) if rope else y
        return y.transpose(0, 2, 1, 3)

    q, k, v = heads_major(q, True), heads_major(k, True), heads_major(v, False)
    s = jnp.einsum("bhtd,bhsd->bhts", q, k, preferred_element_type=F32) * (d**-0.5)
    prob = jax.nn.softmax(s, axis=-1).astype(T)
    o = jnp.einsum("bhts,bhsd->bhtd", prob, v, preferred_element_type=F32).astype(T)
    return linear(p["out_proj"], o.transpose(0, 2, 1, 3).reshape(B, P, H))


def swiglu(p: Params, x: jax.Array) -> jax.Array:
    """[g || u] = x W_gu; (silu(g) * u) W_d with the gate product in f32. x: [..., H] (T)."""
    g, u = jnp.split(linear(p["gate_up_proj"], x).astype(F32), 2, axis=-1)
    return linear(p["down_proj"], (jax.nn.silu(g) * u).astype(x.dtype))


def post_norm_block(
    p: Params, x: jax.Array, cos: jax.Array, sin: jax.Array, num_heads: int, eps: float
) -> jax.Array:
    """x <- rms(x + attn(x)); x <- rms(x + mlp(x)). x: [B, P, H] (T)."""
    x = rms_norm(x + attention(p["self_attn"], x, cos, sin, num_heads), eps)
    return rms_norm(x + swiglu(p["mlp"], x), eps)


def binary_cross_entropy_with_logits(logit: jax.Array, target: jax.Array) -> jax.Array:
    """Elementwise BCE(l, t) = softplus(l) - l*t (hrm.md §6.2), gradient sigmoid(l) - t
    everywhere: at l = 0 exactly it is 0.5 - t (differentiating the max/|l| form gives -t)."""
    return jax.nn.softplus(logit) - logit * target


def global_norm(tree: Params) -> jax.Array:
    """sqrt of the sum of squares of every leaf (f32)."""
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.sqrt(sum(jnp.sum(jnp.square(leaf.astype(F32))) for leaf in leaves))
