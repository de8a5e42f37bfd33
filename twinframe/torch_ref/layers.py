"""Shared PyTorch primitives (one copy): trunc-normal from uniforms, casted Linear, RMSNorm, RoPE,
explicit attention, SwiGLU and the post-norm transformer block (hrm.md §2.1-§2.2, §2.5).

Precision policy: weights are stored float32 and cast to the compute dtype T of the input at use;
norms, RoPE, softmax and silu(g)*u run in float32 and are cast back to T. Parameters are created
empty (no global RNG); models fill them from an explicit init.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from twinframe.models.base import TRUNC_LOWER, TRUNC_UPPER, trunc_normal_compensation


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with n intra-op threads (0: leave torch's setting), restoring the count after. Small
    per-step tensors (GAIA's batch-1 agent, AIME's batch 2) gain nothing from a second thread,
    and on a loaded 2-core machine it made steps ~10x slower (measured). The count can change
    reduction orders, i.e. results at the ulp level (docs/findings.md)."""
    old = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def trunc_normal_from_uniform(
    u: torch.Tensor, std: float, lower: float = TRUNC_LOWER, upper: float = TRUNC_UPPER
) -> torch.Tensor:
    """hrm.md §2.1: u ~ U[erf(lower/sqrt2), erf(upper/sqrt2)) -> truncated normal with std `std`."""
    if std == 0:
        return torch.zeros_like(u)
    c = std / trunc_normal_compensation(lower, upper)
    w = math.sqrt(2.0) * torch.special.erfinv(u) * c
    return torch.clamp(w, lower * c, upper * c)


class CastedLinear(nn.Module):
    """y = x @ W.T (+ b), W: [out, in] stored f32 and cast to x.dtype. Created uninitialised."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [..., in] (T) -> [..., out] (T)."""
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), bias)

    def forward_f32(self, x: torch.Tensor) -> torch.Tensor:
        """Head form: both operands upcast, product and bias in f32 -> [..., out] f32."""
        y = F.linear(x.float(), self.weight.float())
        return y if self.bias is None else y + self.bias.float()


def rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm without scale, computed in f32, returned in x.dtype. x: [..., H]."""
    x32 = x.float()
    y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return y.to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """[x1 || x2] -> [-x2 || x1] over the last axis (GPT-NeoX convention)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, P, n_h, d] f32; cos, sin: [P, 1, d] -> x*cos + rotate_half(x)*sin (f32)."""
    return x * cos.float() + rotate_half(x) * sin.float()


class RotaryEmbedding(nn.Module):
    """Holds the RoPE tables as persistent buffers `cos`, `sin`: [P, 1, d] (part of the state)."""

    def __init__(self, num_positions: int, head_dim: int) -> None:
        super().__init__()
        self.register_buffer("cos", torch.empty(num_positions, 1, head_dim))
        self.register_buffer("sin", torch.empty(num_positions, 1, head_dim))


class Attention(nn.Module):
    """Bidirectional multi-head attention, explicit f32 softmax, no mask, no bias."""

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv_proj = CastedLinear(hidden_size, 3 * hidden_size)
        self.out_proj = CastedLinear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x: [B, P, H] (T) -> [B, P, H] (T)."""
        B, P, H = x.shape
        n_h, d = self.num_heads, H // self.num_heads
        qkv = self.qkv_proj(x).view(B, P, 3 * n_h, d)
        q, k, v = qkv.split(n_h, dim=2)
        q = apply_rope(q.float(), cos, sin).to(x.dtype)
        k = apply_rope(k.float(), cos, sin).to(x.dtype)
        s = torch.einsum("bthd,bshd->bhts", q.float(), k.float()) * (d**-0.5)
        p = torch.softmax(s, dim=-1).to(x.dtype)
        o = torch.einsum("bhts,bshd->bthd", p.float(), v.float()).to(x.dtype)
        return self.out_proj(o.reshape(B, P, H))


class SwiGLU(nn.Module):
    """[g || u] = x W_gu; out = (silu(g) * u) W_d, the gate product in f32."""

    def __init__(self, hidden_size: int, ffn_dim: int) -> None:
        super().__init__()
        self.gate_up_proj = CastedLinear(hidden_size, 2 * ffn_dim)
        self.down_proj = CastedLinear(ffn_dim, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [..., H] (T) -> [..., H] (T)."""
        g, u = self.gate_up_proj(x).float().chunk(2, dim=-1)
        return self.down_proj((F.silu(g) * u).to(x.dtype))


class PostNormBlock(nn.Module):
    """x <- rms(x + attn(x)); x <- rms(x + mlp(x)). Residual sums in T."""

    def __init__(self, hidden_size: int, num_heads: int, ffn_dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.self_attn = Attention(hidden_size, num_heads)
        self.mlp = SwiGLU(hidden_size, ffn_dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x: [B, P, H] (T) -> [B, P, H] (T)."""
        x = rms_norm(x + self.self_attn(x, cos, sin), self.eps)
        return rms_norm(x + self.mlp(x), self.eps)


def binary_cross_entropy_with_logits(logit: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Elementwise BCE(l, t) = softplus(l) - l*t (hrm.md §6.2), gradient sigmoid(l) - t
    everywhere: at l = 0 exactly it is 0.5 - t (autograd of the max/|l| form gives 1 - t)."""
    return F.softplus(logit) - logit * target


def load_numpy_state(module: nn.Module, state: dict, strict: bool = True) -> None:
    """Copy a {key: np.ndarray} state into `module` (dtype cast by load_state_dict)."""
    tensors = {k: torch.from_numpy(v.copy()) for k, v in state.items()}
    module.load_state_dict(tensors, strict=strict)
