"""AIME-core JAX primitives (aime.md §2.1), pure functions over the layout's trees.

Trees: `params` mirrors the torch module paths (kernels `[in, out]` for linear layers; conv
kernels in torch layout `[O, I, k...]` with NCHW/NCDHW dimension numbers). Mutable state is a
flat dict `{"<torch module path>.<leaf>": array}` (`flat_state`) threaded through the step.
Clamps whose input can sit on the bound use torch's gradient convention (aime.md §7 trap 12).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

F32 = jnp.float32
EPS32 = float(np.finfo(np.float32).eps)
TINY32 = float(np.finfo(np.float32).tiny)
MASK_VALUE = -3.4028234663852886e38
HI = jax.lax.Precision.HIGHEST


def sub(tree: Any, path: str) -> Any:
    """tree['a']['b'][0]... for path 'a.b.0' (digits index lists / int-keyed dicts)."""
    for k in path.split("."):
        tree = tree[int(k)] if k.isdigit() else tree[k]
    return tree


def _key_str(k: Any) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def flat_state(tree: Any) -> dict[str, jax.Array]:
    """Nested state tree -> {'a.b.0.u': leaf}."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {".".join(_key_str(k) for k in path): leaf for path, leaf in flat}


def unflat_state(flat: Mapping[str, jax.Array], like: Any) -> Any:
    """Inverse of `flat_state` with the structure of `like`."""
    paths, treedef = jax.tree_util.tree_flatten_with_path(like)
    return jax.tree_util.tree_unflatten(
        treedef, [flat[".".join(_key_str(k) for k in p)] for p, _ in paths])


def clamp_t(x: jax.Array, lo: float | None = None, hi: float | None = None) -> jax.Array:
    """torch.clamp: full gradient at the bounds."""
    if lo is not None:
        x = jnp.where(x < lo, jnp.asarray(lo, x.dtype), x)
    if hi is not None:
        x = jnp.where(x > hi, jnp.asarray(hi, x.dtype), x)
    return x


def swish(x: jax.Array) -> jax.Array:
    return x * jax.nn.sigmoid(x)


def gelu(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x, approximate=False)


def softplus_half(x: jax.Array) -> jax.Array:
    """Softplus(beta=0.5), identity where beta*x > 20 (torch)."""
    bx = 0.5 * x
    return jnp.where(bx > 20.0, x, jnp.log1p(jnp.exp(jnp.minimum(bx, 20.0))) / 0.5)


def safe_norm(x: jax.Array, axis: int | tuple | None = -1, keepdims: bool = True) -> jax.Array:
    """||x||_2 with gradient 0 at x = 0 (torch's convention, aime.md §6.3 JAX trap)."""
    ss = jnp.sum(x * x, axis=axis, keepdims=keepdims)
    ok = ss > 0
    return jnp.where(ok, jnp.sqrt(jnp.where(ok, ss, 1.0)), 0.0)


def normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
    return x / clamp_t(safe_norm(x, axis), eps)


def linear(p: Mapping, x: jax.Array) -> jax.Array:
    y = jnp.matmul(x, p["kernel"], precision=HI)
    return y + p["bias"] if "bias" in p else y


def layer_norm(p: Mapping, x: jax.Array, eps: float = 1e-5) -> jax.Array:
    m = jnp.mean(x, -1, keepdims=True)
    v = jnp.mean(jnp.square(x - m), -1, keepdims=True)
    return (x - m) * jax.lax.rsqrt(v + eps) * p["scale"] + p["bias"]


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _saturating_unit(d: jax.Array, eps: float) -> jax.Array:
    """d / sqrt(d^2 + eps), derivative eps / (d^2 + eps)^(3/2) in closed form."""
    return d * jax.lax.rsqrt(d * d + eps)


@_saturating_unit.defjvp
def _saturating_unit_jvp(eps, primals, tangents):
    (d,), (dd,) = primals, tangents
    r = jax.lax.rsqrt(d * d + eps)
    return d * r, (eps * r * r * r) * dd


def layer_norm_pair(p: Mapping, x: jax.Array, eps: float = 1e-5) -> jax.Array:
    """LayerNorm over exactly two features in closed form (our choice, aime.md §2.4.1 note):
    with d = (x0 - x1)/2 the output is (+-d/sqrt(d^2+eps))*scale + bias, saturated at +-1, whose
    derivative eps/(d^2+eps)^(3/2) the generic LayerNorm backward gets as the difference of two
    nearly equal f32 terms (measured: every gradient below `gamma_ln_out` 2-4% off a float64
    evaluation, in either framework). Same function; the derivative computed directly."""
    s = _saturating_unit((x[..., 0] - x[..., 1]) * 0.5, eps)
    return jnp.stack([s, -s], -1) * p["scale"] + p["bias"]


def group_norm(p: Mapping, x: jax.Array, groups: int, eps: float = 1e-5) -> jax.Array:
    """x [B, C, ...]: statistics over (C/g, spatial)."""
    B, C = x.shape[:2]
    xg = x.reshape(B, groups, -1)
    m = jnp.mean(xg, -1, keepdims=True)
    v = jnp.mean(jnp.square(xg - m), -1, keepdims=True)
    y = ((xg - m) * jax.lax.rsqrt(v + eps)).reshape(x.shape)
    shape = (1, C) + (1,) * (x.ndim - 2)
    return y * p["scale"].reshape(shape) + p["bias"].reshape(shape)


def _dn(nd: int) -> tuple[str, str, str]:
    return ("NCHW", "OIHW", "NCHW") if nd == 2 else ("NCDHW", "OIDHW", "NCDHW")


def conv(x: jax.Array, w: jax.Array, b: jax.Array | None = None, stride: int | tuple = 1,
         padding: int | tuple = 0) -> jax.Array:
    """torch Conv2d/Conv3d (weight [O, I, k...])."""
    nd = w.ndim - 2
    st = (stride,) * nd if isinstance(stride, int) else tuple(stride)
    pd = (padding,) * nd if isinstance(padding, int) else tuple(padding)
    y = jax.lax.conv_general_dilated(x, w, st, [(q, q) for q in pd], dimension_numbers=_dn(nd),
                                     precision=HI)
    return y if b is None else y + b.reshape((1, -1) + (1,) * nd)


def conv_p(p: Mapping, x: jax.Array, stride: int | tuple = 1, padding: int | tuple = 0
           ) -> jax.Array:
    return conv(x, p["kernel"], p.get("bias"), stride, padding)


def conv_transpose3d(p: Mapping, x: jax.Array, stride: tuple, padding: tuple) -> jax.Array:
    """torch ConvTranspose3d (weight [I, O, k, k, k]): dilated conv with the flipped kernel."""
    w = p["kernel"]
    k = w.shape[2]
    wf = jnp.flip(w, (2, 3, 4)).transpose(1, 0, 2, 3, 4)
    y = jax.lax.conv_general_dilated(x, wf, (1, 1, 1), [(k - 1 - q, k - 1 - q) for q in padding],
                                     lhs_dilation=stride, dimension_numbers=_dn(3), precision=HI)
    return y + p["bias"].reshape(1, -1, 1, 1, 1)


def resize(x: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Bilinear/trilinear, align_corners=False, no antialias, over the trailing axes."""
    if tuple(x.shape[2:]) == tuple(shape):
        return x
    return jax.image.resize(x, (*x.shape[:2], *shape), "linear", antialias=False)


# ----------------------------------------------------------------------------------------------
# Spectral norm (one power iteration per training call) and BatchNorm


def sn_weight(w: jax.Array, u: jax.Array, v: jax.Array
              ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """-> (W / sigma, new u, new v); sigma = u^T W v with grad through W only."""
    w_mat = w.reshape(w.shape[0], -1)
    wm = jax.lax.stop_gradient(w_mat)
    v = normalize(jnp.matmul(wm.T, u, precision=HI), 0)
    u = normalize(jnp.matmul(wm, v, precision=HI), 0)
    u, v = jax.lax.stop_gradient(u), jax.lax.stop_gradient(v)
    sigma = jnp.dot(u, jnp.matmul(w_mat, v, precision=HI), precision=HI)
    return w / sigma, u, v


def sn_conv(p: Mapping, st: dict, key: str, x: jax.Array, stride: int = 1, padding: int = 0,
            kernel: jax.Array | None = None) -> jax.Array:
    """SN-Conv2d without bias; updates st[key+'.u'/'.v'] (a trace-time dict)."""
    w, u, v = sn_weight(p["kernel"] if kernel is None else kernel, st[key + ".u"],
                        st[key + ".v"])
    st[key + ".u"], st[key + ".v"] = u, v
    return conv(x, w, None, stride, padding)


def sn_linear(p: Mapping, st: dict, key: str, x: jax.Array) -> jax.Array:
    """SN-Linear: the stored kernel is [in, out] (torch weight^T); W_mat = kernel^T."""
    w, u, v = sn_weight(p["kernel"].T, st[key + ".u"], st[key + ".v"])
    st[key + ".u"], st[key + ".v"] = u, v
    return jnp.matmul(x, w.T, precision=HI) + p["bias"]


def batch_norm_train(p: Mapping, st: dict, key: str, x: jax.Array, eps: float = 1e-5,
                     momentum: float = 0.1) -> jax.Array:
    n = x.size // x.shape[1]
    mean = jnp.mean(x, (0, 2, 3))
    var = jnp.mean(jnp.square(x - mean[None, :, None, None]), (0, 2, 3))
    m = momentum
    sm, sv = jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var)
    st[key + ".mean"] = (1 - m) * st[key + ".mean"] + m * sm
    st[key + ".var"] = (1 - m) * st[key + ".var"] + m * sv * (n / (n - 1))
    st[key + ".count"] = st[key + ".count"] + 1
    y = (x - mean[None, :, None, None]) / jnp.sqrt(var[None, :, None, None] + eps)
    return y * p["scale"][None, :, None, None] + p["bias"][None, :, None, None]


def batch_norm_eval(p: Mapping, st: Mapping, key: str, x: jax.Array, eps: float = 1e-5
                    ) -> jax.Array:
    m, v = st[key + ".mean"], st[key + ".var"]
    y = (x - m[None, :, None, None]) / jnp.sqrt(v[None, :, None, None] + eps)
    return y * p["scale"][None, :, None, None] + p["bias"][None, :, None, None]


# ----------------------------------------------------------------------------------------------
# Recurrent cells, torch-style multi-head attention


def lstm_step(p: Mapping, x: jax.Array, h: jax.Array, c: jax.Array, layers: int
              ) -> tuple[jax.Array, jax.Array]:
    hs, cs = [], []
    for k in range(layers):
        q = p[f"l{k}"]
        gates = ((jnp.matmul(x, q["kernel_ih"], precision=HI) + q["bias_ih"])
                 + (jnp.matmul(h[k], q["kernel_hh"], precision=HI) + q["bias_hh"]))
        i, f, g, o = jnp.split(gates, 4, axis=-1)
        c_new = jax.nn.sigmoid(f) * c[k] + jax.nn.sigmoid(i) * jnp.tanh(g)
        h_new = jax.nn.sigmoid(o) * jnp.tanh(c_new)
        hs.append(h_new)
        cs.append(c_new)
        x = h_new
    return jnp.stack(hs), jnp.stack(cs)


def gru_cell(p: Mapping, x: jax.Array, h: jax.Array) -> jax.Array:
    gi = jnp.matmul(x, p["kernel_ih"], precision=HI) + p["bias_ih"]
    gh = jnp.matmul(h, p["kernel_hh"], precision=HI) + p["bias_hh"]
    ir, iz, in_ = jnp.split(gi, 3, axis=-1)
    hr, hz, hn = jnp.split(gh, 3, axis=-1)
    r = jax.nn.sigmoid(ir + hr)
    z = jax.nn.sigmoid(iz + hz)
    n = jnp.tanh(in_ + r * hn)
    return (1 - z) * n + z * h


def mha_t(p: Mapping, q: jax.Array, k: jax.Array, v: jax.Array, heads: int) -> jax.Array:
    """nn.MultiheadAttention (batch_first) math."""
    B, Nq, E = q.shape
    dh = E // heads
    wq, wk, wv = jnp.split(p["in_proj_kernel"], 3, axis=1)
    bq, bk, bv = jnp.split(p["in_proj_bias"], 3)

    def heads_of(x, w, b):
        return (jnp.matmul(x, w, precision=HI) + b).reshape(B, -1, heads, dh).transpose(0, 2, 1, 3)

    qh, kh, vh = heads_of(q, wq, bq), heads_of(k, wk, bk), heads_of(v, wv, bv)
    s = jnp.matmul(qh * dh ** -0.5, kh.transpose(0, 1, 3, 2), precision=HI)
    o = jnp.matmul(jax.nn.softmax(s, -1), vh, precision=HI)
    return linear(p["out_proj"], o.transpose(0, 2, 1, 3).reshape(B, Nq, E))


# ----------------------------------------------------------------------------------------------
# Kumaraswamy stable inverse CDF with its custom gradient (aime.md §2.4.2 step 3)


def log1mexp(y: jax.Array) -> jax.Array:
    small = y < math.log(2.0)
    ys = jnp.where(small, y, 1.0)
    yl = jnp.where(small, 1.0, y)
    return jnp.where(small, jnp.log(-jnp.expm1(-ys)), jnp.log1p(-jnp.exp(-yl)))


def _kuma_fwd_parts(log_a, log_b, u):
    u = jnp.maximum(u, TINY32)
    ia, ib = jnp.exp(-log_a), jnp.exp(-log_b)
    c = jnp.minimum(ib * jnp.log(u), -TINY32)
    z = log1mexp(-c)
    v = jnp.clip(jnp.exp(ia * z), TINY32, 1.0 - 2.0 ** -24)
    return v, (log_a, log_b, u, c, z)


@jax.custom_vjp
def kumaraswamy_sample(log_a: jax.Array, log_b: jax.Array, u: jax.Array) -> jax.Array:
    return _kuma_fwd_parts(log_a, log_b, u)[0]


def _kuma_fwd(log_a, log_b, u):
    return _kuma_fwd_parts(log_a, log_b, u)


def _kuma_bwd(res, g):
    log_a, log_b, u, c, z = res
    ia = jnp.exp(-log_a)
    da = -z * jnp.exp(-log_a + ia * z)
    db = jnp.log(u) * jnp.exp(-log_a - log_b + c + (ia - 1.0) * z)
    return g * da, g * db, jnp.zeros_like(u)


kumaraswamy_sample.defvjp(_kuma_fwd, _kuma_bwd)


# ----------------------------------------------------------------------------------------------
# Standard gamma from host noise + implicit gradient (see models/aime/noise.py)


def standard_gamma_draw(kappa: jax.Array, normals: jax.Array, uniforms: jax.Array,
                        boost: jax.Array) -> jax.Array:
    kappa = jax.lax.stop_gradient(kappa)
    k = kappa[..., None]
    small = k < 1.0
    a = jnp.where(small, k + 1.0, k)
    d = a - 1.0 / 3.0
    c = 1.0 / jnp.sqrt(9.0 * d)
    v = (1.0 + c * normals) ** 3
    vpos = jnp.maximum(v, TINY32)
    ok = (v > 0) & (jnp.log(uniforms) < 0.5 * normals ** 2 + d - d * vpos + d * jnp.log(vpos))
    last = ok.shape[-1] - 1
    idx = jnp.where(ok.any(-1), jnp.argmax(ok, -1), last)
    x = jnp.take_along_axis(d * vpos, idx[..., None], -1)[..., 0]
    return jnp.where(small[..., 0], x * boost ** (1.0 / kappa), x)


def gamma_reparam(kappa: jax.Array, x_hat: jax.Array) -> jax.Array:
    g = jax.lax.random_gamma_grad(jax.lax.stop_gradient(kappa), x_hat)
    return x_hat + jax.lax.stop_gradient(g) * (kappa - jax.lax.stop_gradient(kappa))
