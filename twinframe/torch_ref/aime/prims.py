"""AIME-core torch primitives (aime.md §2.1): modules whose parameters are created empty (no
global RNG; filled from the canonical init), functional helpers shared by the parts, and the
custom-gradient pieces (Kumaraswamy inverse CDF, implicit gamma gradient).

Mutable state (spectral-norm u/v, BatchNorm statistics) is replaced by new tensors, never
written in place into a tensor autograd saved (aime.md §7 trap 10).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from twinframe.torch_ref.layers import torch_threads as torch_threads

EPS32 = float(torch.finfo(torch.float32).eps)
TINY32 = float(torch.finfo(torch.float32).tiny)
MASK_VALUE = -3.4028234663852886e38



def clamp_t(x: torch.Tensor, lo: float | None = None, hi: float | None = None) -> torch.Tensor:
    return torch.clamp(x, min=lo, max=hi)


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


def gelu(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x)


def softplus_half(x: torch.Tensor) -> torch.Tensor:
    """Softplus(beta=0.5) with torch's threshold 20 (on beta*x)."""
    return F.softplus(x, beta=0.5, threshold=20.0)


def normalize(x: torch.Tensor, dim: int = -1, eps: float = 1e-12) -> torch.Tensor:
    return x / torch.clamp(x.norm(dim=dim, keepdim=True), min=eps)


def _empty(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape))


class Lin(nn.Module):
    def __init__(self, i: int, o: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = _empty(o, i)
        self.bias = _empty(o) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class LN(nn.Module):
    def __init__(self, n: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps, self.n = eps, n
        self.weight = _empty(n)
        self.bias = _empty(n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (self.n,), self.weight, self.bias, self.eps)


class _SaturatingUnit(torch.autograd.Function):
    """d / sqrt(d^2 + eps) with the derivative eps / (d^2 + eps)^(3/2) in closed form."""

    @staticmethod
    def forward(ctx, d: torch.Tensor, eps: float) -> torch.Tensor:
        r = torch.rsqrt(d * d + eps)
        ctx.save_for_backward(r)
        ctx.eps = eps
        return d * r

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (r,) = ctx.saved_tensors
        return g * (ctx.eps * r * r * r), None


class LNPair(LN):
    """LayerNorm over exactly two features in closed form (our choice, aime.md §2.4.1 note):
    the output is (+-d/sqrt(d^2+eps))*weight + bias with d = (x0 - x1)/2, saturated at +-1; the
    generic backward gets its derivative eps/(d^2+eps)^(3/2) as the difference of two nearly
    equal f32 terms (every gradient below it 2-4% off a float64 evaluation). Same function and
    parameters as nn.LayerNorm(2, eps); the derivative computed directly."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = _SaturatingUnit.apply((x[..., 0] - x[..., 1]) * 0.5, self.eps)
        return torch.stack([s, -s], -1) * self.weight + self.bias


class GN(nn.Module):
    def __init__(self, groups: int, c: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.groups, self.eps = groups, eps
        self.weight = _empty(c)
        self.bias = _empty(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x, self.groups, self.weight, self.bias, self.eps)


class Conv(nn.Module):
    """Conv2d / Conv3d (by kernel rank), weight [O, I, *k]."""

    def __init__(self, o: int, i: int, k: tuple[int, ...], stride: int | tuple = 1,
                 padding: int | tuple = 0, bias: bool = True) -> None:
        super().__init__()
        self.weight = _empty(o, i, *k)
        self.bias = _empty(o) if bias else None
        self.stride, self.padding, self.dims = stride, padding, len(k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = F.conv2d if self.dims == 2 else F.conv3d
        return f(x, self.weight, self.bias, self.stride, self.padding)


class ConvT3(nn.Module):
    """ConvTranspose3d, weight [I, O, k, k, k]."""

    def __init__(self, i: int, o: int, stride: tuple, padding: tuple) -> None:
        super().__init__()
        self.weight = _empty(i, o, 4, 4, 4)
        self.bias = _empty(o)
        self.stride, self.padding = stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose3d(x, self.weight, self.bias, self.stride, self.padding)


class Emb(nn.Module):
    def __init__(self, n: int, c: int) -> None:
        super().__init__()
        self.weight = _empty(n, c)


class Seq(nn.Module):
    """A container whose children are registered under given names (nn.Sequential's keys
    without its forward): `Seq({0: Lin(...), 1: LN(...)})`."""

    def __init__(self, children: dict) -> None:
        super().__init__()
        for k, m in children.items():
            self.add_module(str(k), m)

    def __getitem__(self, k: int | str) -> nn.Module:
        return self._modules[str(k)]


# ----------------------------------------------------------------------------------------------
# Spectral norm (legacy torch.nn.utils.spectral_norm semantics, one power iteration, aime.md §2.1)


def sn_power_iteration(w_mat: torch.Tensor, u: torch.Tensor, v: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """v <- normalize(W^T u); u <- normalize(W v) (no grad)."""
    with torch.no_grad():
        v = normalize(torch.mv(w_mat.t(), u), dim=0)
        u = normalize(torch.mv(w_mat, v), dim=0)
    return u, v


class _SN(nn.Module):
    """Shared part: `weight_orig` (trained), buffers `weight_u`, `weight_v`. In training mode
    every call runs one power iteration and stores the new u, v; sigma = u^T W v with grad
    through W only. `weight` overrides `weight_orig` (the EMA teacher's weights)."""

    def _register_sn(self, shape: tuple[int, ...]) -> None:
        self.weight_orig = _empty(*shape)
        self.register_buffer("weight_u", torch.empty(shape[0]))
        self.register_buffer("weight_v", torch.empty(math.prod(shape[1:])))

    def effective_weight(self, weight: torch.Tensor | None = None) -> torch.Tensor:
        w = self.weight_orig if weight is None else weight
        w_mat = w.reshape(w.shape[0], -1)
        u, v = self.weight_u, self.weight_v
        if self.training:
            u, v = sn_power_iteration(w_mat, u, v)
            self.weight_u, self.weight_v = u, v
            u, v = u.clone(), v.clone()
        sigma = torch.dot(u, torch.mv(w_mat, v))
        return w / sigma


class SNConv(_SN):
    def __init__(self, o: int, i: int, k: int, stride: int = 1, padding: int = 0) -> None:
        super().__init__()
        self._register_sn((o, i, k, k))
        self.stride, self.padding = stride, padding

    def forward(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        return F.conv2d(x, self.effective_weight(weight), None, self.stride, self.padding)


class SNLin(_SN):
    def __init__(self, i: int, o: int) -> None:
        super().__init__()
        self.bias = _empty(o)
        self._register_sn((o, i))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)


class BN2d(nn.Module):
    """BatchNorm2d: train mode normalises with the batch statistics (biased variance) and
    replaces the running statistics (momentum 0.1, unbiased variance); eval uses them."""

    def __init__(self, c: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = _empty(c)
        self.bias = _empty(c)
        self.register_buffer("running_mean", torch.empty(c))
        self.register_buffer("running_var", torch.empty(c))
        self.register_buffer("num_batches_tracked", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                False, 0.0, self.eps)
        n = x.numel() // x.shape[1]
        mean = x.mean(dim=(0, 2, 3))
        var = x.var(dim=(0, 2, 3), unbiased=False)
        with torch.no_grad():
            m = self.momentum
            self.running_mean = (1 - m) * self.running_mean + m * mean.detach()
            self.running_var = (1 - m) * self.running_var + m * var.detach() * (n / (n - 1))
            self.num_batches_tracked = self.num_batches_tracked + 1
        y = (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + self.eps)
        return y * self.weight[None, :, None, None] + self.bias[None, :, None, None]


# ----------------------------------------------------------------------------------------------
# Recurrent cells and torch-style multi-head attention


class LSTM(nn.Module):
    """nn.LSTM's parameters (`weight_ih_l{k}`, ...), one step at a time (gates i, f, g, o)."""

    def __init__(self, i: int, h: int, layers: int) -> None:
        super().__init__()
        self.layers = layers
        for k in range(layers):
            setattr(self, f"weight_ih_l{k}", _empty(4 * h, i if k == 0 else h))
            setattr(self, f"weight_hh_l{k}", _empty(4 * h, h))
            setattr(self, f"bias_ih_l{k}", _empty(4 * h))
            setattr(self, f"bias_hh_l{k}", _empty(4 * h))

    def step(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, in]; h, c [L, B, H] -> new (h, c)."""
        hs, cs = [], []
        for k in range(self.layers):
            gates = (F.linear(x, getattr(self, f"weight_ih_l{k}"), getattr(self, f"bias_ih_l{k}"))
                     + F.linear(h[k], getattr(self, f"weight_hh_l{k}"),
                                getattr(self, f"bias_hh_l{k}")))
            i, f, g, o = gates.chunk(4, dim=-1)
            c_new = torch.sigmoid(f) * c[k] + torch.sigmoid(i) * torch.tanh(g)
            h_new = torch.sigmoid(o) * torch.tanh(c_new)
            hs.append(h_new)
            cs.append(c_new)
            x = h_new
        return torch.stack(hs), torch.stack(cs)


class GRUCell(nn.Module):
    def __init__(self, i: int, h: int) -> None:
        super().__init__()
        self.weight_ih = _empty(3 * h, i)
        self.weight_hh = _empty(3 * h, h)
        self.bias_ih = _empty(3 * h)
        self.bias_hh = _empty(3 * h)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        gi = F.linear(x, self.weight_ih, self.bias_ih)
        gh = F.linear(h, self.weight_hh, self.bias_hh)
        ir, iz, in_ = gi.chunk(3, dim=-1)
        hr, hz, hn = gh.chunk(3, dim=-1)
        r = torch.sigmoid(ir + hr)
        z = torch.sigmoid(iz + hz)
        n = torch.tanh(in_ + r * hn)
        return (1 - z) * n + z * h


class MHAT(nn.Module):
    """nn.MultiheadAttention (batch_first, bias) math: in_proj rows q, k, v; per-head scaling;
    softmax over keys; out_proj."""

    def __init__(self, e: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = _empty(3 * e, e)
        self.in_proj_bias = _empty(3 * e)
        self.out_proj = Lin(e, e)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        B, Nq, E = q.shape
        h, dh = self.heads, E // self.heads
        wq, wk, wv = self.in_proj_weight.chunk(3)
        bq, bk, bv = self.in_proj_bias.chunk(3)
        qh = F.linear(q, wq, bq).view(B, Nq, h, dh).transpose(1, 2)
        kh = F.linear(k, wk, bk).view(B, -1, h, dh).transpose(1, 2)
        vh = F.linear(v, wv, bv).view(B, -1, h, dh).transpose(1, 2)
        s = torch.matmul(qh * dh ** -0.5, kh.transpose(-2, -1))
        o = torch.matmul(torch.softmax(s, dim=-1), vh)
        return self.out_proj(o.transpose(1, 2).reshape(B, Nq, E))


# ----------------------------------------------------------------------------------------------
# Kumaraswamy stable inverse CDF with its custom backward (aime.md §2.4.2 step 3)


def log1mexp(y: torch.Tensor) -> torch.Tensor:
    """log(1 - e^-y) for y > 0."""
    return torch.where(y < math.log(2.0), torch.log(-torch.expm1(-y)), torch.log1p(-torch.exp(-y)))


class KumaraswamyInverseCDF(torch.autograd.Function):
    @staticmethod
    def forward(ctx, log_a: torch.Tensor, log_b: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        u = torch.clamp(u, min=TINY32)
        ia, ib = torch.exp(-log_a), torch.exp(-log_b)
        c = torch.clamp(ib * torch.log(u), max=-TINY32)
        z = log1mexp(-c)
        v = torch.clamp(torch.exp(ia * z), min=TINY32, max=1.0 - 2.0 ** -24)
        ctx.save_for_backward(log_a, log_b, u, c, z)
        return v

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        log_a, log_b, u, c, z = ctx.saved_tensors
        ia = torch.exp(-log_a)
        da = -z * torch.exp(-log_a + ia * z)
        db = torch.log(u) * torch.exp(-log_a - log_b + c + (ia - 1.0) * z)
        return g * da, g * db, None


def kumaraswamy_sample(log_a: torch.Tensor, log_b: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    return KumaraswamyInverseCDF.apply(log_a, log_b, u)


# ----------------------------------------------------------------------------------------------
# Standard gamma from host noise (our choice, see models/aime/noise.py) + implicit gradient


def standard_gamma_draw(kappa: torch.Tensor, normals: torch.Tensor, uniforms: torch.Tensor,
                        boost: torch.Tensor) -> torch.Tensor:
    """Marsaglia-Tsang with a fixed number of proposals (last axis of normals/uniforms); the
    first accepted one wins; kappa < 1 via Gamma(kappa+1) * boost^(1/kappa). No gradient."""
    with torch.no_grad():
        k = kappa.unsqueeze(-1)
        small = k < 1.0
        a = torch.where(small, k + 1.0, k)
        d = a - 1.0 / 3.0
        c = 1.0 / torch.sqrt(9.0 * d)
        v = (1.0 + c * normals) ** 3
        vpos = torch.clamp(v, min=TINY32)
        ok = (v > 0) & (torch.log(uniforms) < 0.5 * normals ** 2 + d - d * vpos
                        + d * torch.log(vpos))
        last = ok.shape[-1] - 1
        idx = torch.where(ok.any(-1), ok.to(torch.int64).argmax(-1), torch.full_like(
            ok[..., 0], last, dtype=torch.int64))
        x = (d * vpos).gather(-1, idx.unsqueeze(-1)).squeeze(-1)
        x = torch.where(small.squeeze(-1), x * boost ** (1.0 / kappa), x)
    return x


def gamma_reparam(kappa: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """x = x_hat + sg(dx/dkappa) (kappa - sg kappa): value x_hat, implicit gradient."""
    g = torch._standard_gamma_grad(kappa.detach(), x_hat)
    return x_hat + g * (kappa - kappa.detach())
