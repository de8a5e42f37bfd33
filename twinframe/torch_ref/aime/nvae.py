"""NVAE encoder / decoder in torch (aime.md §2.3): spectral-normed gated residual stack, UNet
skips with 1x1 adapters, the discretized-logistic mixture head and its NLL, the gram loss
against the EMA teacher."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from twinframe.models.aime import AIMEConfig
from twinframe.models.aime.config import MDL_MIXTURES
from twinframe.models.aime.tree import (
    adapter_name,
    decoder_plan,
    encoder_plan,
    fusion_plan,
    stem_groups,
    up_groups,
)
from twinframe.torch_ref.aime.prims import GN, LN, BN2d, Conv, Lin, Seq, SNConv, swish


class NVAEResidualBlock(nn.Module):
    def __init__(self, i: int, o: int, stride: int) -> None:
        super().__init__()
        self.conv1 = SNConv(o, i, 3, stride, 1)
        self.norm1 = GN(min(32, o), o)
        self.conv2 = SNConv(o, o, 3, 1, 1)
        self.norm2 = GN(min(32, o), o)
        self.skip = SNConv(o, i, 1, stride, 0) if (stride != 1 or i != o) else None
        self.gate = nn.Parameter(torch.empty(1))

    def forward(self, x: torch.Tensor, w: dict | None = None, p: str = "") -> torch.Tensor:
        """`w` (with key prefix `p`) overrides the trained tensors (EMA teacher)."""
        def g(name: str, default: torch.Tensor) -> torch.Tensor:
            return default if w is None else w[p + name]

        ident = x if self.skip is None else self.skip(
            x, None if w is None else w[p + "skip.weight_orig"])
        h = self.conv1(x, None if w is None else w[p + "conv1.weight_orig"])
        h = swish(F.group_norm(h, self.norm1.groups, g("norm1.weight", self.norm1.weight),
                               g("norm1.bias", self.norm1.bias), 1e-5))
        h = self.conv2(h, None if w is None else w[p + "conv2.weight_orig"])
        h = swish(F.group_norm(h, self.norm2.groups, g("norm2.weight", self.norm2.weight),
                               g("norm2.bias", self.norm2.bias), 1e-5))
        return ident + g("gate", self.gate) * h


class _Blocks(nn.Module):
    def __init__(self, blocks: dict) -> None:
        super().__init__()
        self.blocks = Seq(blocks)


class Encoder(nn.Module):
    def __init__(self, cfg: AIMEConfig) -> None:
        super().__init__()
        c0 = cfg.nvae_stem_channels
        self.stem = Seq({0: SNConv(c0, 3, 7, 1, 3), 1: GN(stem_groups(c0), c0)})
        blocks = []
        for ci, co, s, n in encoder_plan(cfg):
            blocks.append(_Blocks({j: NVAEResidualBlock(ci if j == 0 else co, co,
                                                        s if j == 0 else 1) for j in range(n)}))
        self.encoder_blocks = nn.ModuleList(blocks)
        c, f, Hd = encoder_plan(cfg)[-1][1], cfg.nvae_final_size, cfg.hidden_dim
        self.final_norm = BN2d(c)
        self.mlp = Seq({1: Lin(c * f * f, Hd), 2: LN(Hd), 5: Lin(Hd, Hd), 6: LN(Hd)})
        self.proj = Lin(Hd, 2 * cfg.latent_dim)

    def features(self, x: torch.Tensor, w: dict | None = None) -> tuple[torch.Tensor, list]:
        """Stem + blocks -> (last map, levels C2..last, coarsest last) (aime.md §2.3.2)."""
        st = self.stem
        h = st[0](x, None if w is None else w["stem.0.weight_orig"])
        h = swish(F.group_norm(h, st[1].groups,
                               st[1].weight if w is None else w["stem.1.weight"],
                               st[1].bias if w is None else w["stem.1.bias"], 1e-5))
        levels: dict[int, torch.Tensor] = {}
        level, hw = 1, h.shape[-1]
        for i, blk in enumerate(self.encoder_blocks):
            for j, rb in enumerate(blk.blocks.children()):
                h = rb(h, w, f"encoder_blocks.{i}.blocks.{j}.")
            if h.shape[-1] != hw:
                level, hw = level + 1, h.shape[-1]
            if level >= 2:
                levels[level] = h
        return h, [levels[k] for k in sorted(levels)]

    def forward(self, x: torch.Tensor, eps: torch.Tensor):
        h, levels = self.features(x)
        h = swish(self.final_norm(h))
        m = self.mlp
        h = swish(m[6](m[5](swish(m[2](m[1](h.flatten(1)))))))
        mu, lv = self.proj(h).chunk(2, dim=-1)
        lv = torch.clamp(lv, -10.0, 2.0)
        return mu + eps * torch.exp(0.5 * lv), mu, lv, levels


class Decoder(nn.Module):
    def __init__(self, cfg: AIMEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        Hd, f, c0 = cfg.hidden_dim, cfg.nvae_final_size, cfg.dec_channels[0]
        self.mlp = Seq({0: Lin(cfg.latent_dim, Hd), 1: LN(Hd), 4: Lin(Hd, Hd), 5: LN(Hd),
                        7: Lin(Hd, c0 * f * f), 8: LN(c0 * f * f)})
        blocks = []
        for ci, co, up, n in decoder_plan(cfg):
            if up:
                d = {1: SNConv(co, ci, 3, 1, 1), 2: GN(up_groups(co), co)}
                d.update({4 + j: NVAEResidualBlock(co, co, 1) for j in range(n)})
            else:
                d = {j: NVAEResidualBlock(ci if j == 0 else co, co, 1) for j in range(n)}
            blocks.append(_Blocks(d))
        self.decoder_blocks = nn.ModuleList(blocks)
        self.post_concat_adapters = nn.ModuleDict({
            adapter_name(cfg, i): Conv(fu[2], fu[2] + fu[3], (1, 1))
            for i, fu in enumerate(fusion_plan(cfg)) if fu is not None})
        c = decoder_plan(cfg)[-1][1]
        self.final_norm = GN(up_groups(c), c)
        self.pre_output = Seq({0: Conv(c // 2, c, (1, 1))})
        self.mdl_head = Seq({"proj": Conv(MDL_MIXTURES * 10, c // 2, (1, 1))})

    def forward(self, z: torch.Tensor, levels: list[torch.Tensor]) -> torch.Tensor:
        """z [B, D] + encoder levels -> MDL parameters [B, 100, H, W]."""
        cfg, m = self.cfg, self.mlp
        h = swish(m[1](m[0](z)))
        h = swish(m[5](m[4](h)))
        h = swish(m[8](m[7](h)))
        f = cfg.nvae_final_size
        h = h.view(z.shape[0], cfg.dec_channels[0], f, f)
        for i, (blk, fu) in enumerate(zip(self.decoder_blocks, fusion_plan(cfg), strict=True)):
            for mod in blk.blocks.children():
                if isinstance(mod, SNConv):  # the upsampling conv (blocks.1)
                    h = mod(F.interpolate(h, scale_factor=2, mode="nearest"))
                elif isinstance(mod, GN):
                    h = swish(mod(h))
                else:
                    h = mod(h)
            if fu is not None:
                skip = levels[fu[0]]
                if skip.shape[-1] != h.shape[-1]:
                    skip = F.interpolate(skip, size=h.shape[-2:], mode="bilinear",
                                         align_corners=False)
                h = self.post_concat_adapters[adapter_name(cfg, i)](torch.cat([h, skip], 1))
        h = swish(self.final_norm(h))
        h = F.silu(self.pre_output[0](h))
        return self.mdl_head["proj"](h)


def mdl_nll(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-image NLL [B] of x [B, 3, H, W] in [-1, 1] under the mixture y [B, 100, H, W]
    (aime.md §2.3.4)."""
    B, C, H, W = y.shape
    K = C // 10
    y = y.view(B, K, 10, H, W)
    logit, means = y[:, :, 0], y[:, :, 1:4]
    log_s = torch.clamp(y[:, :, 4:7], min=-7.0)
    coef = torch.tanh(y[:, :, 7:10])
    xk = x.unsqueeze(1).expand(-1, K, -1, -1, -1)
    mu_r = means[:, :, 0]
    mu_g = means[:, :, 1] + coef[:, :, 0] * xk[:, :, 0]
    mu_b = means[:, :, 2] + coef[:, :, 1] * xk[:, :, 0] + coef[:, :, 2] * xk[:, :, 1]
    mu = torch.stack([mu_r, mu_g, mu_b], dim=2)
    inv_s = torch.exp(-log_s)
    half = (1.0 / 255.0) / 2
    cdf_lo = torch.sigmoid((xk - half - mu) * inv_s)
    cdf_hi = torch.sigmoid((xk + half - mu) * inv_s)
    p = torch.where(xk < -0.999, torch.clamp(cdf_hi, min=1e-12),
                    torch.where(xk > 0.999, torch.clamp(1 - cdf_lo, min=1e-12),
                                torch.clamp(cdf_hi - cdf_lo, min=1e-12)))
    log_p = torch.log(torch.clamp(p, min=1e-12)).sum(2)
    log_mix = log_p + torch.log_softmax(logit, dim=1)
    return -torch.logsumexp(log_mix, dim=1).mean(dim=(1, 2))


def mdl_mode(y: torch.Tensor) -> torch.Tensor:
    """Per-pixel mode of the most likely component (our deterministic 'reconstruction', aime.md
    §6.6): [B, 3, H, W] in [-1, 1]."""
    B, C, H, W = y.shape
    y = y.view(B, C // 10, 10, H, W)
    k = y[:, :, 0].argmax(1, keepdim=True)
    sel = k[:, :, None].expand(-1, 1, 10, -1, -1)
    p = y.gather(1, sel)[:, 0]
    m, c = p[:, 1:4], torch.tanh(p[:, 7:10])
    r = m[:, 0].clamp(-1, 1)
    g = (m[:, 1] + c[:, 0] * r).clamp(-1, 1)
    b = (m[:, 2] + c[:, 1] * r + c[:, 2] * g).clamp(-1, 1)
    return torch.stack([r, g, b], 1)


def gram_loss(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """Sum over levels of mean((relu(s s^T) - relu(t t^T))^2), rows normalised over channels,
    even-width levels avg-pooled 2x2 (aime.md §2.3.5)."""
    total = torch.zeros(())
    for s, t in zip(student, teacher, strict=True):
        if s.shape[-1] % 2 == 0:
            s, t = F.avg_pool2d(s, 2), F.avg_pool2d(t, 2)
        rs = F.normalize(s.flatten(2).transpose(1, 2), dim=-1)
        rt = F.normalize(t.flatten(2).transpose(1, 2), dim=-1)
        gs = torch.relu(rs @ rs.transpose(1, 2))
        gt = torch.relu(rt @ rt.transpose(1, 2))
        total = total + ((gs - gt) ** 2).mean()
    return total
