"""HRM-ACT in PyTorch (hrm.md §2), state_dict = ZT's `.safetensors` layout (hrm.md §3.1).

`HRM.forward` is one ACT segment of the inner model; `act_loss` is one ACT training step's loss
(hrm.md §2.6, §6.2) with the exploration noise injected. The optimizer lives in `torch_ref.optim`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from twinframe.models.hrm import HRMConfig, HRMRun, canonical_init
from twinframe.torch_ref.layers import (
    CastedLinear,
    PostNormBlock,
    RotaryEmbedding,
    binary_cross_entropy_with_logits,
    load_numpy_state,
)
from twinframe.torch_ref.optim import MLXAdamW

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class HRMCarry(NamedTuple):
    """ACT carry. z_H, z_L: [B, P, H] (T); segments: [B] int32; inputs, targets: [B, S] int32."""

    z_H: torch.Tensor
    z_L: torch.Tensor
    segments: torch.Tensor
    inputs: torch.Tensor
    targets: torch.Tensor


class SegmentOut(NamedTuple):
    """One segment: new z_H, z_L (detached, T); logits [B, S, V] f32; q_halt, q_continue [B] f32."""

    z_H: torch.Tensor
    z_L: torch.Tensor
    logits: torch.Tensor
    q_halt: torch.Tensor
    q_continue: torch.Tensor


class StepOut(NamedTuple):
    """One ACT training step (pre-replacement): loss parts, decisions and the new carry."""

    loss: torch.Tensor
    carry: HRMCarry
    halted: torch.Tensor
    seq_correct: torch.Tensor
    is_last: torch.Tensor
    target_c: torch.Tensor
    metrics: dict[str, torch.Tensor]


class Reasoner(nn.Module):
    """R(z, inj): z <- z + inj, then N post-norm blocks."""

    def __init__(self, cfg: HRMConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            PostNormBlock(cfg.hidden_size, cfg.num_heads, cfg.ffn_dim, cfg.norm_eps)
            for _ in range(cfg.num_layers)
        )

    def forward(
        self, z: torch.Tensor, inj: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> torch.Tensor:
        """z, inj: [B, P, H] (T) -> [B, P, H] (T)."""
        z = z + inj
        for layer in self.layers:
            z = layer(z, cos, sin)
        return z


class HRM(nn.Module):
    """The inner model. Initialised from `state` (default: the canonical NumPy init, seed 0)."""

    def __init__(self, cfg: HRMConfig, state: dict | None = None) -> None:
        super().__init__()
        H, V = cfg.hidden_size, cfg.vocab_size
        self.cfg = cfg
        self.cls_token = nn.Parameter(torch.empty(H))
        self.input_embedding = nn.Embedding(V, H, _weight=torch.empty(V, H))
        self.output_head = CastedLinear(H, V)
        self.q_act_head = CastedLinear(H, 2, bias=True)
        self.rotary_emb = RotaryEmbedding(cfg.num_positions, cfg.head_dim)
        self.high_level_reasoner = Reasoner(cfg)
        self.low_level_reasoner = Reasoner(cfg)
        self.initial_high_level = nn.Parameter(torch.empty(H), requires_grad=False)
        self.initial_low_level = nn.Parameter(torch.empty(H), requires_grad=False)
        load_numpy_state(self, canonical_init(cfg) if state is None else state)

    @property
    def dtype(self) -> torch.dtype:
        return TORCH_DTYPES[self.cfg.compute_dtype]

    def initial_carry(self, inputs: torch.Tensor, targets: torch.Tensor) -> HRMCarry:
        """Fresh carry for a batch of puzzles. inputs, targets: [B, S] int32."""
        B, P, H = inputs.shape[0], self.cfg.num_positions, self.cfg.hidden_size
        z_H = self.initial_high_level.detach().to(self.dtype).expand(B, P, H).clone()
        z_L = self.initial_low_level.detach().to(self.dtype).expand(B, P, H).clone()
        segments = torch.zeros(B, dtype=torch.int32, device=inputs.device)
        return HRMCarry(z_H, z_L, segments, inputs, targets)

    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        """inputs: [B, S] int -> e: [B, P, H] (T) = sqrt(H) * [cls || E[x]], gathered in f32."""
        B, H = inputs.shape[0], self.cfg.hidden_size
        tokens = self.input_embedding.weight[inputs.long()]
        cls = self.cls_token.view(1, 1, H).expand(B, 1, H)
        return (math.sqrt(H) * torch.cat([cls, tokens], dim=1)).to(self.dtype)

    def forward(self, z_H: torch.Tensor, z_L: torch.Tensor, inputs: torch.Tensor) -> SegmentOut:
        """One ACT segment (hrm.md §2.3). z_H, z_L: [B, P, H] (T); inputs: [B, S]."""
        cfg, cos, sin = self.cfg, self.rotary_emb.cos, self.rotary_emb.sin
        R_H, R_L = self.high_level_reasoner, self.low_level_reasoner
        e = self.embed(inputs)
        with torch.no_grad():
            for c in range(1, cfg.high_level_cycles * cfg.low_level_cycles):
                z_L = R_L(z_L, z_H + e, cos, sin)
                if c % cfg.low_level_cycles == 0:
                    z_H = R_H(z_H, z_L, cos, sin)
        z_L = R_L(z_L.detach(), z_H.detach() + e, cos, sin)
        z_H = R_H(z_H.detach(), z_L, cos, sin)
        logits = self.output_head.forward_f32(z_H[:, 1:])
        q = self.q_act_head.forward_f32(z_H[:, 0])
        return SegmentOut(z_H.detach(), z_L.detach(), logits, q[:, 0], q[:, 1])


def act_loss(model: HRM, carry: HRMCarry, noise: dict[str, torch.Tensor]) -> StepOut:
    """One ACT training step's forward and loss (hrm.md §2.6 items 1-7, hrm.md §6.2, metrics of
    hrm.md §6.4).

    noise: explore_u [B] f32, min_halt_draw [B] int32 (injected, hrm.md §4).
    """
    cfg = model.cfg
    M = cfg.halt_max_steps
    out = model(carry.z_H, carry.z_L, carry.inputs)
    inputs, targets = carry.inputs.long(), carry.targets.long()
    given = inputs != 0
    pred = out.logits.argmax(-1)
    cell_ok = (pred == targets) | given
    seq_correct = cell_ok.all(-1)
    nxt = carry.segments + 1
    is_last = nxt > M if cfg.act_last_strict else nxt >= M
    p_explore = torch.tensor(cfg.halt_exploration_prob, dtype=torch.float32, device=nxt.device)
    explore = noise["explore_u"] < p_explore
    min_halt = torch.where(explore, noise["min_halt_draw"], torch.zeros_like(nxt))
    long_enough = nxt > min_halt if cfg.act_explore_strict else nxt >= min_halt
    halted = (is_last | (out.q_halt > out.q_continue)) & long_enough
    with torch.no_grad():
        nxt_out = model(out.z_H, out.z_L, carry.inputs)
        target_c = torch.where(
            is_last,
            torch.sigmoid(nxt_out.q_halt),
            torch.sigmoid(torch.maximum(nxt_out.q_halt, nxt_out.q_continue)),
        )
    mask = (~given).float()
    ce = torch.logsumexp(out.logits, -1) - out.logits.gather(-1, targets[..., None])[..., 0]
    output_loss = (mask * ce).sum() / torch.clamp(mask.sum(), min=1.0)
    seq_f = seq_correct.float()
    bce_h = binary_cross_entropy_with_logits(out.q_halt, seq_f)
    bce_c = binary_cross_entropy_with_logits(out.q_continue, target_c)
    q_act_loss = (bce_h + bce_c).mean() / 2
    loss = output_loss + q_act_loss
    halted_f = halted.float()
    metrics = {
        "loss": loss.detach(),
        "output_loss": output_loss.detach(),
        "q_act_loss": q_act_loss.detach(),
        "q_halt_loss": bce_h.mean().detach(),
        "q_continue_loss": bce_c.mean().detach(),
        "cell_acc_with_givens": cell_ok.float().mean(),
        "blank_cell_acc": (mask * (pred == targets).float()).sum() / torch.clamp(mask.sum(), min=1),
        "seq_exact_acc": seq_f.mean(),
        "halted_count": halted_f.sum(),
        "halted_correct_sum": (halted_f * seq_f).sum(),
        "halted_segments_sum": (halted_f * nxt.float()).sum(),
        "q_halt_acc": ((out.q_halt >= 0) == seq_correct).float().mean(),
    }
    new_carry = HRMCarry(out.z_H, out.z_L, nxt, carry.inputs, carry.targets)
    return StepOut(loss, new_carry, halted, seq_correct, is_last, target_c, metrics)


def make_optimizer(model: nn.Module, run: HRMRun) -> MLXAdamW:
    """MLX AdamW (hrm.md §6.3) over the trained parameters, hyper-parameters from the run."""
    return MLXAdamW([p for p in model.parameters() if p.requires_grad], lr=run.lr,
                    betas=(run.beta1, run.beta2), eps=run.eps, weight_decay=run.weight_decay)
