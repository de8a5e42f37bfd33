"""Attention schema in torch (aime.md §2.5): slot-attention posterior, the attention state
(`phi_attention`), the transformer attention prior and the attention losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from twinframe.models.aime import AIMEConfig
from twinframe.models.aime.config import (
    CONVGRU_CHANNELS,
    FPN_CHANNELS,
    MOTION_KERNELS,
    NUM_SLOTS,
    PRIOR_HEADS,
    SLOT_DIM,
)
from twinframe.torch_ref.aime.prims import (
    EPS32,
    GN,
    LN,
    MHAT,
    Conv,
    GRUCell,
    Lin,
    Seq,
    gelu,
    normalize,
    swish,
)


def resize2d(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


class SlotAttention(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.norm_x, self.norm_s = LN(d), LN(d)
        self.slots_mu = nn.Parameter(torch.empty(1, 1, d))
        self.slots_logsigma = nn.Parameter(torch.empty(1, 1, d))
        self.to_q, self.to_k, self.to_v = Lin(d, d, False), Lin(d, d, False), Lin(d, d, False)
        self.gru = GRUCell(d, d)
        self.mlp = Seq({0: LN(d), 1: Lin(d, 2 * d), 3: Lin(2 * d, d)})

    def forward(self, x: torch.Tensor, slots: torch.Tensor, iters: int = 3
                ) -> tuple[torch.Tensor, torch.Tensor]:
        B, N, d = x.shape
        x = self.norm_x(x)
        k, v = self.to_k(x), self.to_v(x)
        attn = None
        for _ in range(iters):
            q = self.to_q(self.norm_s(slots))
            logits = torch.einsum("bkd,bnd->bkn", q, k) * d ** -0.5
            attn = torch.softmax(logits, dim=1) + 1e-8
            attn = attn / attn.sum(dim=1, keepdim=True)
            updates = torch.einsum("bkn,bnd->bkd", attn, v)
            K = slots.shape[1]
            slots = self.gru(updates.reshape(B * K, d), slots.reshape(B * K, d)).view(B, K, d)
            m = self.mlp
            slots = slots + m[3](gelu(m[1](m[0](slots))))
        return slots, attn


class AttentionPosterior(nn.Module):
    def __init__(self, cfg: AIMEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, K, R, Hd, Cc = SLOT_DIM, NUM_SLOTS, cfg.attention_resolution, cfg.hidden_dim, \
            cfg.context_dim
        c1, c2 = FPN_CHANNELS
        self.pyramid_conv1 = Seq({0: Conv(c1, 3, (5, 5), 2, 2), 1: GN(8, c1)})
        self.pyramid_conv2 = Seq({0: Conv(c2, c1, (5, 5), 2, 2), 1: GN(12, c2)})
        self.pyramid_conv3 = Seq({0: Conv(d, c2, (3, 3), 1, 1), 1: GN(16, d)})
        self.pyramid_fusion = Conv(d, c1 + c2 + d, (1, 1))
        self.slot_attn = SlotAttention(d)
        self.slot_modulator = Seq({0: Lin(Hd + Cc, d * K), 1: LN(d * K), 3: Lin(d * K, d * K)})
        self.row_embed = nn.Parameter(torch.empty(R, d // 2))
        self.col_embed = nn.Parameter(torch.empty(R, d // 2))
        self.fusion_weights_head = Seq({0: Lin(d * K, K), 1: LN(K)})
        self.slot_temperatures = nn.Parameter(torch.empty(K))
        self.spatial_regularizer = Seq({0: Lin(2 * K, Hd // 2), 1: LN(Hd // 2),
                                        3: Lin(Hd // 2, 2)})
        self.bottleneck_projector = Seq({0: Lin(d * K, Hd), 1: LN(Hd), 3: Lin(Hd, Hd // 2)})

    def forward(self, o: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> dict:
        """o [B, 3, H, W], h [B, Hd], c [B, Cc] -> attention map [B, R, R], coords [B, 2],
        bottleneck [B, Hd/2], diversity (aime.md §2.5.1)."""
        R, K, d = self.cfg.attention_resolution, NUM_SLOTS, SLOT_DIM
        B = o.shape[0]
        l1 = swish(self.pyramid_conv1[1](self.pyramid_conv1[0](o)))
        l2 = swish(self.pyramid_conv2[1](self.pyramid_conv2[0](l1)))
        l3 = swish(self.pyramid_conv3[1](self.pyramid_conv3[0](l2)))
        fused = self.pyramid_fusion(torch.cat([resize2d(l1, R), resize2d(l2, R),
                                               resize2d(l3, R)], dim=1))
        pos = torch.cat([self.row_embed[:, None].expand(-1, R, -1),
                         self.col_embed[None].expand(R, -1, -1)], dim=-1).reshape(1, R * R, d)
        x = fused.flatten(2).transpose(1, 2) + pos
        m = self.slot_modulator
        seeds = m[3](swish(m[1](m[0](torch.cat([h, c], dim=-1))))).view(B, K, d)
        slots, attn = self.slot_attn(x, seeds)
        maps = attn.view(B, K, R, R)
        feats = slots.reshape(B, -1)
        fw = self.fusion_weights_head
        w = torch.softmax(fw[1](fw[0](feats)), dim=-1)
        fused_map = (maps * w.view(B, K, 1, 1)).sum(1)
        amap = torch.softmax(fused_map.flatten(1), dim=-1).view(B, R, R)
        lin = torch.linspace(-1, 1, R)
        yg, xg = torch.meshgrid(lin, lin, indexing="ij")
        pk = torch.softmax(maps.flatten(2), dim=-1).view(B, K, R, R)
        centres = torch.stack([(pk * xg).sum((2, 3)), (pk * yg).sum((2, 3))], dim=-1)
        sr = self.spatial_regularizer
        coords = torch.tanh(sr[3](swish(sr[1](sr[0](centres.flatten(1)))))) * 0.995
        P = normalize(torch.softmax(maps.view(B, K, -1), dim=-1), dim=-1)
        corr = P @ P.transpose(1, 2)
        div = ((corr - torch.eye(K)[None]) ** 2).sum() / (B * K * (K - 1) + 1e-8)
        bp = self.bottleneck_projector
        bottleneck = bp[3](swish(bp[1](bp[0](feats))))
        return {"map": amap, "coords": coords, "bottleneck": bottleneck, "div": div}


class LinearResidual(nn.Module):
    def __init__(self, cfg: AIMEConfig) -> None:
        super().__init__()
        Hd = cfg.hidden_dim
        self.residual_projection = Lin(Hd // 2 + 2, 2 * Hd)
        self.fn = Seq({0: Lin(2 * Hd, 2 * Hd), 1: LN(2 * Hd), 4: Lin(2 * Hd, 2 * Hd),
                       5: LN(2 * Hd)})

    def forward(self, bottleneck: torch.Tensor, coords: torch.Tensor, eps: torch.Tensor
                ) -> torch.Tensor:
        """Attention state m + eps * exp(lv/2) (aime.md §2.5.2)."""
        r = self.residual_projection(torch.cat([bottleneck, coords], dim=-1))
        f = self.fn
        g = swish(f[5](f[4](swish(f[1](f[0](r))))))
        m, lv = (g + r).chunk(2, dim=-1)
        return m + eps * torch.exp(0.5 * torch.clamp(lv, -10.0, 2.0))


class _ConvGRU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        G = CONVGRU_CHANNELS
        self.ConvGates = Conv(2 * G, 1 + G, (5, 5), 1, 2)
        self.Conv_ct = Conv(G, 1 + G, (5, 5), 1, 2)
        self.norm_gates = GN(2, 2 * G)
        self.norm_candidate = GN(8, G)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        """Zero hidden state: S = (1 - u) * cand."""
        zero = torch.zeros(a.shape[0], CONVGRU_CHANNELS, *a.shape[2:])
        rt, ut = self.norm_gates(self.ConvGates(torch.cat([a, zero], 1))).chunk(2, 1)
        r, u = torch.sigmoid(rt), torch.sigmoid(ut)
        cand = torch.tanh(self.norm_candidate(self.Conv_ct(torch.cat([a, r * zero], 1))))
        return u * zero + (1 - u) * cand


class AttentionPrior(nn.Module):
    def __init__(self, cfg: AIMEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        R, Hd, D, fd = cfg.attention_resolution, cfg.hidden_dim, cfg.latent_dim, cfg.hidden_dim
        self.spatial_dynamics = _ConvGRU()
        self.motion_kernels = nn.Parameter(torch.empty(MOTION_KERNELS, 1, 5, 5))
        self.context_projection = Seq({0: Lin(Hd + D, Hd), 1: LN(Hd), 3: Lin(Hd, fd)})
        self.spatial_downsampler = Conv(fd, CONVGRU_CHANNELS, (3, 3), 1, 1)
        self.motion_projection = Conv(fd // 2, MOTION_KERNELS, (1, 1))
        self.pos_embed = nn.Parameter(torch.empty(1, R * R, fd))
        self.relative_position_bias_table = nn.Parameter(torch.empty(2 * R - 1, 2 * R - 1, 4))
        self.register_buffer("relative_position_index", torch.empty(R * R, R * R, 2,
                                                                    dtype=torch.long))
        self.self_attention = MHAT(fd, PRIOR_HEADS)
        self.context_attention = MHAT(fd, PRIOR_HEADS)
        self.norm1, self.norm2, self.norm3 = LN(fd), LN(fd), LN(fd)
        self.ffn = Seq({0: Lin(fd, 2 * fd), 1: LN(2 * fd), 4: Lin(2 * fd, fd)})
        self.output_projection = Seq({0: Lin(fd, Hd), 1: LN(Hd), 3: Lin(Hd, 1)})
        self.movement_predictor = Conv(2, 1, (3, 3), 1, 1)

    def forward(self, prev: torch.Tensor, h: torch.Tensor, z: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """prev [B, R, R], h [B, Hd], z [B, D] -> prior map [B, R, R], dx, dy [B, R, R]."""
        B, R, fd = prev.shape[0], self.cfg.attention_resolution, self.cfg.hidden_dim
        a = prev[:, None]
        S = self.spatial_dynamics(a)
        motion = F.conv2d(a, self.motion_kernels, padding=2)
        mp = self.motion_projection(motion)
        seq = self.spatial_downsampler(S).permute(0, 2, 3, 1).reshape(B, -1, fd)
        mseq = mp.permute(0, 2, 3, 1).reshape(B, -1, fd // 2)
        seq = seq + F.pad(mseq, (0, fd // 2)) + self.pos_embed
        cp = self.context_projection
        ctx = cp[3](swish(cp[1](cp[0](torch.cat([h, z], dim=-1)))))
        y = self.norm1(seq)
        seq = seq + self.self_attention(y, y, y)
        ce = ctx[:, None].expand(-1, R * R, -1)
        seq = seq + self.context_attention(self.norm2(seq), ce, ce)
        f = self.ffn
        seq = seq + f[4](swish(f[1](f[0](self.norm3(seq)))))
        op = self.output_projection
        logits = op[3](swish(op[1](op[0](seq))))[..., 0]
        pmap = torch.softmax(logits, dim=-1).view(B, R, R)
        mv = self.movement_predictor(a)
        return pmap, mv[:, 0], mv[:, 1]


class AttentionSchema(nn.Module):
    def __init__(self, cfg: AIMEConfig) -> None:
        super().__init__()
        self.posterior_net = AttentionPosterior(cfg)
        self.prior_net = AttentionPrior(cfg)


def attention_kl(q_map: torch.Tensor, p_map: torch.Tensor) -> torch.Tensor:
    """mean_b sum_n q (log q~ - log p~), categorical KL with torch's clamping (aime.md §2.5.4)."""
    q = q_map.flatten(1)
    q = q / q.sum(-1, keepdim=True)
    p = p_map.flatten(1)
    p = p / p.sum(-1, keepdim=True)
    lq = torch.log(torch.clamp(q, EPS32, 1 - EPS32))
    lp = torch.log(torch.clamp(p, EPS32, 1 - EPS32))
    t = torch.where(q == 0, torch.zeros_like(q), q * (lq - lp))
    return t.sum(-1).mean()


def centre_of_mass(amap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """In grid units: (sum A*col, sum A*row) / max(sum A, 1e-8)."""
    R = amap.shape[-1]
    idx = torch.arange(R, dtype=amap.dtype)
    tot = torch.clamp(amap.sum((1, 2)), min=1e-8)
    return (amap * idx[None, None, :]).sum((1, 2)) / tot, (amap * idx[None, :, None]).sum(
        (1, 2)) / tot


def smooth_l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.smooth_l1_loss(x, y, beta=1.0)
