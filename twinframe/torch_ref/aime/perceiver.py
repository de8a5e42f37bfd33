"""Perceiver context path in torch (aime.md §2.2): 3-D UNet VQ tokenizer with its EMA codebook,
Perceiver token predictor, perceiver loss and the per-frame global context.

The codebook buffers are replaced by new tensors at each update (never written into a tensor
autograd saved), so the distance gradient sees the codebook of the forward value ("forward",
default); "step_end" reproduces the reference's aliasing by evaluating the full-clip VQ loss
with the codebook after the second update (aime.md §2.2.2 step 6).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from twinframe.models.aime import AIMEConfig, rope_angles
from twinframe.models.aime.tree import tokenizer_plan
from twinframe.torch_ref.aime.prims import (
    GN,
    LN,
    MASK_VALUE,
    Conv,
    ConvT3,
    Emb,
    Lin,
    Seq,
    gelu,
)

# ----------------------------------------------------------------------------------------------
# Tokenizer (aime.md §2.2.1)


class ConvGNAct3D(nn.Module):
    def __init__(self, i: int, o: int) -> None:
        super().__init__()
        self.block = Seq({0: Conv(2 * o, i, (3, 3, 3), 1, 1), 1: GN(math.gcd(o, 8), 2 * o)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, g = self.block[1](self.block[0](x)).chunk(2, dim=1)
        return g * gelu(a)


class ResBlock3D(nn.Module):
    def __init__(self, i: int, o: int) -> None:
        super().__init__()
        self.conv1 = ConvGNAct3D(i, o)
        self.conv2 = ConvGNAct3D(o, o)
        self.skip = Conv(o, i, (1, 1, 1)) if i != o else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x)) + (x if self.skip is None else self.skip(x))


class Down3D(nn.Module):
    def __init__(self, c: int, o: int, temporal: bool) -> None:
        super().__init__()
        self.pool = Conv(c, c, (3, 3, 3), 1, 1)
        stride, pad = ((2, 2, 2), (1, 1, 1)) if temporal else ((1, 2, 2), (0, 1, 1))
        self.down = Conv(o, c, (4, 4, 4), stride, pad)
        self.res = ResBlock3D(o, o)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res(self.down(self.pool(x)))


class Up3D(nn.Module):
    def __init__(self, i: int, skip: int, o: int, temporal: bool) -> None:
        super().__init__()
        stride, pad = ((2, 2, 2), (1, 1, 1)) if temporal else ((1, 2, 2), (0, 1, 1))
        self.up = ConvT3(i, o, stride, pad)
        self.res = ResBlock3D(o + skip, o)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        if skip.shape[2:] != x.shape[2:]:
            skip = F.interpolate(skip, size=x.shape[2:], mode="trilinear", align_corners=False)
        return self.res(torch.cat([x, skip], dim=1))


class TokEncoder(nn.Module):
    def __init__(self, cfg: AIMEConfig) -> None:
        super().__init__()
        plan = tokenizer_plan(cfg)
        self.stem = ResBlock3D(3, cfg.perceiver_base_channels)
        self.downs = nn.ModuleList([Down3D(c, o, t) for c, o, t in plan["downs"]])
        self.to_code = Conv(cfg.code_dim, plan["c_last"], (3, 3, 3), 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x [B, 3, T, H, W] -> z [B, Dc, T', Ht, Wt], skips [stem, down_0, ...]."""
        h = self.stem(x)
        skips = [h]
        for d in self.downs:
            h = d(h)
            skips.append(h)
        return self.to_code(h), skips


class TokDecoder(nn.Module):
    def __init__(self, cfg: AIMEConfig) -> None:
        super().__init__()
        plan = tokenizer_plan(cfg)
        self.ups = nn.ModuleList([Up3D(i, s, o, t) for i, s, o, t in plan["ups"]])
        base = cfg.perceiver_base_channels
        self.final = Seq({0: ResBlock3D(plan["final_in"], base), 1: Conv(3, base, (3, 3, 3),
                                                                           1, 1)})

    def forward(self, q: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        x = q
        for u, up in enumerate(self.ups):
            x = up(x, skips[-(u + 2)])
        return torch.tanh(self.final[1](self.final[0](x)))


class Codebook(nn.Module):
    def __init__(self, v: int, dc: int) -> None:
        super().__init__()
        self.register_buffer("initted", torch.empty(1))
        self.register_buffer("cluster_size", torch.empty(1, v))
        self.register_buffer("embed_avg", torch.empty(1, v, dc))
        self.register_buffer("embed", torch.empty(1, v, dc))


class VQ(nn.Module):
    def __init__(self, cfg: AIMEConfig) -> None:
        super().__init__()
        self._codebook = Codebook(cfg.num_codes, cfg.code_dim)
        self.decay = cfg.vq_decay


def vq_distances(x: torch.Tensor, e_val: torch.Tensor, e_grad: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """-sqrt(max(|x|^2 + |E|^2 - 2 x.E, 1e-8)); with e_grad the cross term's value uses e_val
    and its gradient e_grad (aime.md §2.2.2 step 6, "step_end")."""
    x2 = (x * x).sum(-1, keepdim=True)
    e2 = (e_val * e_val).sum(-1)[None]
    if e_grad is None:
        xy = x @ e_val.t()
    else:
        xy = x @ e_grad.t() + x.detach() @ (e_val - e_grad).t()
    return -torch.sqrt(torch.clamp(x2 + e2 + xy * -2.0, min=1e-8))


def vq_loss(dist: torch.Tensor, ids: torch.Tensor, frames: int, cfg: AIMEConfig) -> torch.Tensor:
    """0.005 * diversity + 0.05 * CE commitment (aime.md §2.2.2 step 5)."""
    logp = torch.log_softmax(dist, dim=-1)
    ce = -logp.gather(-1, ids[:, None]).mean()
    p = torch.softmax(dist, dim=-1).view(frames, -1, dist.shape[-1]).mean(0)
    ent = -(p * torch.log(torch.clamp(p, min=1e-5))).sum(-1)
    return cfg.vq_diversity_weight * (-ent.mean()) + cfg.vq_commitment_weight * ce


def rotation_trick(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """q_out with the reference's stop-gradients (aime.md §2.2.2 step 4; dead in the model)."""
    xn = torch.clamp(x.norm(dim=-1, keepdim=True), min=1e-6)
    qn = torch.clamp(q.norm(dim=-1, keepdim=True), min=1e-6)
    u, qh = x / xn, q / qn
    w = (u + qh)
    w = (w / torch.clamp(w.norm(dim=-1, keepdim=True), min=1e-6)).detach()
    out = x - 2 * (x * w).sum(-1, keepdim=True) * w + 2 * (x * u.detach()).sum(
        -1, keepdim=True) * qh.detach()
    return out * (q.norm(dim=-1, keepdim=True) / xn).detach()


@dataclasses.dataclass
class Encoded:
    ids: torch.Tensor            # [B, T', Ht, Wt] int64
    x: torch.Tensor              # [n, Dc] pre-quantisation vectors
    embed: torch.Tensor          # codebook of the forward value [V, Dc]
    dist: torch.Tensor           # [n, V]
    skips: list[torch.Tensor]
    frames: int                  # B*T'


class Tokenizer(nn.Module):
    def __init__(self, cfg: AIMEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = TokEncoder(cfg)
        self.decoder = TokDecoder(cfg)
        self.vq = VQ(cfg)

    def encode(self, video: torch.Tensor, ids_override: torch.Tensor | None = None) -> Encoded:
        """video [B, T, 3, H, W] -> ids, VQ pieces; one EMA codebook update (training)."""
        B = video.shape[0]
        z, skips = self.encoder(video.permute(0, 2, 1, 3, 4))
        _, Dc, Tq, Ht, Wt = z.shape
        x = z.permute(0, 2, 3, 4, 1).reshape(-1, Dc)
        cb = self.vq._codebook
        E = cb.embed[0]
        dist = vq_distances(x, E)
        ids = dist.argmax(-1) if ids_override is None else ids_override.reshape(-1)
        if self.training:
            self.ema_update(x.detach(), ids)
            rotation_trick(x, E[ids])  # computed as in the reference; feeds nothing
        return Encoded(ids.view(B, Tq, Ht, Wt), x, E, dist, skips, B * Tq)

    def ema_update(self, x: torch.Tensor, ids: torch.Tensor) -> None:
        cb, dec = self.vq._codebook, self.vq.decay
        V = cb.embed.shape[1]
        onehot = F.one_hot(ids, V).to(x.dtype)
        count = onehot.sum(0)
        summed = onehot.t() @ x
        n = torch.lerp(cb.cluster_size[0], count, 1 - dec)
        avg = torch.lerp(cb.embed_avg[0], summed, 1 - dec)
        total = n.sum()
        smoothed = (n + 1e-5) / (total + V * 1e-5) * total
        cb.cluster_size = n[None]
        cb.embed_avg = avg[None]
        cb.embed = (avg / smoothed[:, None])[None]

    def codes(self, ids: torch.Tensor) -> torch.Tensor:
        """E[ids] with ids outside [0, V) -> 0 (aime.md §2.2.2), laid out [B, Dc, T, Ht, Wt]."""
        E = self.vq._codebook.embed[0]
        V = E.shape[0]
        safe = torch.where((ids >= 0) & (ids < V), ids, torch.zeros_like(ids))
        return E[safe].permute(0, 4, 1, 2, 3)

    def decode(self, q: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        """-> [B, T_rec, 3, H, W]."""
        return self.decoder(q, skips).permute(0, 2, 1, 3, 4)


# ----------------------------------------------------------------------------------------------
# Perceiver token predictor (aime.md §2.2.3)


def rope(x: torch.Tensor, ang: torch.Tensor) -> torch.Tensor:
    """Interleaved RoPE: x [B, h, n, dh], ang [n, dh] (pairs equal)."""
    rot = torch.stack([-x[..., 1::2], x[..., 0::2]], dim=-1).flatten(-2)
    return x * torch.cos(ang) + rot * torch.sin(ang)


class MHAP(nn.Module):
    def __init__(self, c: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (Lin(c, c) for _ in range(4))

    def forward(self, xq: torch.Tensor, xkv: torch.Tensor, ang: torch.Tensor | None = None,
                causal: bool = False) -> torch.Tensor:
        B, nq, C = xq.shape
        h = self.heads
        dh = C // h
        q = self.q_proj(xq).view(B, nq, h, dh).transpose(1, 2) * dh ** -0.5
        k = self.k_proj(xkv).view(B, -1, h, dh).transpose(1, 2)
        v = self.v_proj(xkv).view(B, -1, h, dh).transpose(1, 2)
        if ang is not None:
            q, k = rope(q, ang), rope(k, ang)
        s = q @ k.transpose(-2, -1)
        if causal:
            mask = torch.ones(nq, k.shape[2], dtype=torch.bool).triu(1)
            s = s.masked_fill(mask, MASK_VALUE)
        o = torch.softmax(s, dim=-1) @ v
        return self.o_proj(o.transpose(1, 2).reshape(B, nq, C))


class CrossAttention(nn.Module):
    def __init__(self, c: int, heads: int) -> None:
        super().__init__()
        self.q_norm, self.kv_norm = LN(c), LN(c)
        self.attention = MHAP(c, heads)

    def forward(self, xq: torch.Tensor, xkv: torch.Tensor) -> torch.Tensor:
        return self.attention(self.q_norm(xq), self.kv_norm(xkv))


class _SelfAttn(nn.Module):
    def __init__(self, c: int, heads: int) -> None:
        super().__init__()
        self.norm = LN(c)
        self.attention = MHAP(c, heads)


class _Residual(nn.Module):
    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module


class SelfAttentionBlock(nn.ModuleList):
    def __init__(self, c: int, heads: int, layers: int, widening: int) -> None:
        super().__init__([
            Seq({0: _Residual(_SelfAttn(c, heads)),
                 1: _Residual(Seq({0: LN(c), 1: Lin(c, widening * c),
                                   3: Lin(widening * c, c)}))})
            for _ in range(layers)])

    def run(self, x: torch.Tensor, ang: torch.Tensor | None, causal: bool = False
            ) -> torch.Tensor:
        for ell, layer in enumerate(self):
            sa = layer[0].module
            y = sa.norm(x)
            x = x + sa.attention(y, y, ang if ell == 0 else None, causal)
            m = layer[1].module
            x = x + m[3](gelu(m[1](m[0](x))))
        return x


class _Query(nn.Module):
    def __init__(self, n: int, c: int) -> None:
        super().__init__()
        self._query = nn.Parameter(torch.empty(n, c))


class _PosEnc(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.register_buffer("position_encoding", torch.empty(n, 195))


class TokenPredictor(nn.Module):
    def __init__(self, cfg: AIMEConfig, tokenizer: Tokenizer) -> None:
        super().__init__()
        C, V, h = cfg.context_dim, cfg.num_codes, cfg.perceiver_heads
        self.cfg = cfg
        self.token_embedding = Emb(V + 1, C)
        self.latent_queries = nn.Parameter(torch.empty(cfg.perceiver_latents, C))
        self.encoder_cross_attn = CrossAttention(C, h)
        self.encoder_self_attn = SelfAttentionBlock(C, h, cfg.perceiver_layers, 4)
        self.time_queries = _Query(cfg.context_window, C)
        self.time_pe_proj = Lin(cfg.perceiver_head_dim, C)
        self.temporal_cross_attn = CrossAttention(C, h)
        self.temporal_self_attn = SelfAttentionBlock(C, h, 1, 2)
        self.decoder_cross_attn = CrossAttention(C, h)
        self.output_proj = Lin(C, V, bias=False)
        self.input_proj = Lin(C + 195, C)
        self.decoder_query_proj = Lin(C + 195, C)
        train = cfg.train_lazy_perceiver_projs
        for m in (self.input_proj, self.decoder_query_proj):
            for p in m.parameters():
                p.requires_grad_(train)
        self.pos_encoding = _PosEnc(cfg.token_grid ** 2)
        self.tokenizer = tokenizer

    def _ang(self, start: int, n: int) -> torch.Tensor:
        return torch.from_numpy(rope_angles(start, n, self.cfg.perceiver_head_dim))

    def encoder(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [B, T_c, Ht, Wt] -> latents [B, N_lat, C]."""
        B = ids.shape[0]
        e = self.token_embedding.weight[ids.reshape(B, -1)]
        pe = self.pos_encoding.position_encoding
        x = self.input_proj(torch.cat([e, pe.expand(B, *pe.shape)], dim=-1))
        lat = self.encoder_cross_attn(self.latent_queries.expand(B, *self.latent_queries.shape),
                                      x)
        return self.encoder_self_attn.run(lat, self._ang(0, lat.shape[1]))

    def bottleneck(self, lat: torch.Tensor, n: int, start: int) -> torch.Tensor:
        ang = self._ang(start, n)
        q = self.time_queries._query[start:start + n] + self.time_pe_proj(ang)
        q = self.temporal_cross_attn(q.expand(lat.shape[0], *q.shape), lat)
        return self.temporal_self_attn.run(q, ang, causal=True)

    def decoder(self, lat: torch.Tensor, n: int, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        B = lat.shape[0]
        tc = self.bottleneck(lat, n, start)
        g = self.cfg.token_grid
        rep = tc.repeat_interleave(g * g, dim=1)
        pe = self.pos_encoding.position_encoding
        q = self.decoder_query_proj(torch.cat([rep, pe.repeat(n, 1).expand(B, -1, -1)], dim=-1))
        out = self.decoder_cross_attn(q, lat)
        logits = out @ self.token_embedding.weight.t()
        return logits.view(B, n, g, g, -1), tc


class CausalPerceiverIO(nn.Module):
    def __init__(self, cfg: AIMEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tokenizer = Tokenizer(cfg)
        self.model = TokenPredictor(cfg, self.tokenizer)


@dataclasses.dataclass
class ContextOut:
    context: torch.Tensor        # [B, T, Cc]
    loss: torch.Tensor           # CE_ls + vq + w * perc (label smoothing, weight from `hyper`)
    ce: torch.Tensor
    vq: torch.Tensor
    perc: torch.Tensor
    token_acc: torch.Tensor
    decisions: dict[str, np.ndarray]
    recon: torch.Tensor          # [B, T_rec, 3, H, W]


def label_smoothed_ce(logits: torch.Tensor, target: torch.Tensor, eps: float | torch.Tensor
                      ) -> torch.Tensor:
    logp = torch.log_softmax(logits, dim=-1)
    nll = -logp.gather(-1, target[..., None])[..., 0]
    return ((1 - eps) * nll + eps * (-logp.mean(-1))).mean()


def global_context(p: CausalPerceiverIO, video: torch.Tensor, hyper: dict,
                   override: dict | None = None) -> ContextOut:
    """aime.md §2.2.4-§2.2.5: perceiver forward on the full clip (VQ update #1), predicted
    tokens, reconstruction, past-clip encode (VQ update #2), context [B, T, Cc], loss."""
    cfg, tok, model = p.cfg, p.tokenizer, p.model
    ov = override or {}
    B, T = video.shape[:2]
    T_ctx = cfg.context_frames
    full = tok.encode(video, ov.get("ids_full"))
    Tq = full.ids.shape[1]
    f = T / Tq
    T_c = min(int(T_ctx / f), Tq - 1)
    T_p = Tq - T_c
    lat = model.encoder(full.ids[:, :T_c])
    logits, tc = model.decoder(lat, T_p, T_c)
    with torch.no_grad():
        pred = logits.argmax(-1)
    pred_used = pred if ov.get("pred") is None else ov["pred"]
    codes = tok.codes(torch.cat([full.ids[:, :T_c], pred_used], dim=1))
    recon = tok.decode(codes, full.skips)
    target = full.ids[:, T_c:]
    ce = label_smoothed_ce(logits, target, hyper["label_smoothing"])
    T_rec, T_tgt = recon.shape[1], T - T_ctx
    if cfg.perceiver_perceptual == "mse":
        perc = ((recon[:, T_rec - T_tgt:] - torch.clamp(video[:, T_ctx:], -1, 1)) ** 2).mean()
    else:
        perc = torch.zeros(())
    past = tok.encode(video[:, :T_ctx], ov.get("ids_past"))
    if cfg.vq_dist_grad_codebook == "step_end":
        e_end = tok.vq._codebook.embed[0]
        dist = vq_distances(full.x, full.embed, e_end)
    else:
        dist = full.dist
    vq = vq_loss(dist, full.ids.reshape(-1), full.frames, cfg)
    if T_p == T - T_ctx:
        ctx_future = tc
    else:
        lat_f = model.encoder(tok.encode(video[:, T_ctx:]).ids)
        ctx_future = model.bottleneck(lat_f, T - T_ctx, T_ctx)
    ctx_past = model.bottleneck(model.encoder(past.ids), T_ctx, 0)
    context = torch.cat([ctx_past, ctx_future], dim=1)
    loss = ce + vq + hyper["perceptual_weight"] * perc
    acc = (pred == target).float().mean()
    decisions = {"ids_full": full.ids.detach().cpu().numpy().astype(np.int32),
                 "ids_past": past.ids.detach().cpu().numpy().astype(np.int32),
                 "pred": pred.detach().cpu().numpy().astype(np.int32)}
    return ContextOut(context, loss, ce, vq, perc, acc, decisions, recon)
