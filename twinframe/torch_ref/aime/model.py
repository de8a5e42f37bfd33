"""AIME-core world model in torch (aime.md §2.6, §6.1): the module with the reference's
state_dict keys, the training forward over a clip in the exact call order, and the three task
losses.

`forward_sequence(model, x, actions, noise, hyper, teacher, override)`:
- x [B, T, 3, H, W] in [-1, 1], actions [B, T, A];
- noise: the host's §4 arrays (time axis leading);
- hyper: beta and the loss weights of this step (floats);
- teacher: {encoder-relative key: tensor}, the EMA weights (aime.md §2.3.5);
- override: torch never needs it (it is the reference); kept for symmetry with JAX.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from twinframe.models.aime import AIMEConfig
from twinframe.torch_ref.aime import nvae, prior
from twinframe.torch_ref.aime.attention import (
    AttentionSchema,
    LinearResidual,
    attention_kl,
    centre_of_mass,
    smooth_l1,
)
from twinframe.torch_ref.aime.perceiver import CausalPerceiverIO, global_context
from twinframe.torch_ref.aime.prims import LN, LSTM
from twinframe.torch_ref.layers import load_numpy_state

LOSS_NAMES = ("recon", "kl_z", "hier", "ent", "gram", "att_kl", "dyn", "div", "perc", "ce", "vq")


class _LSTMLayer(nn.Module):
    def __init__(self, cfg: AIMEConfig) -> None:
        super().__init__()
        self.lstm = LSTM(cfg.lstm_input_dim, cfg.hidden_dim, cfg.lstm_layers)
        self.norm = LN(cfg.hidden_dim)


class AIME(nn.Module):
    """DPGMM-VRNN world model; `state_dict()` = the reference's core keys (aime.md §3.2)."""

    def __init__(self, cfg: AIMEConfig, state: dict[str, np.ndarray] | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        L, H = cfg.lstm_layers, cfg.hidden_dim
        self.h0 = nn.Parameter(torch.empty(L, 1, H))
        self.c0 = nn.Parameter(torch.empty(L, 1, H))
        self.perceiver_model = CausalPerceiverIO(cfg)
        self._rnn = _LSTMLayer(cfg)
        self.rnn_layer_norm = LN(H)
        self.attention_prior_posterior = AttentionSchema(cfg)
        self.phi_attention = LinearResidual(cfg)
        self.encoder = nvae.Encoder(cfg)
        self.decoder = nvae.Decoder(cfg)
        self.prior = prior.DPGMMPrior(cfg)
        if state is not None:
            load_numpy_state(self, state)


def make_model(cfg: AIMEConfig, state: dict[str, np.ndarray]) -> AIME:
    return AIME(cfg, state)


def encoder_params(model: AIME) -> dict[str, torch.Tensor]:
    """Encoder-relative name -> live parameter (what the EMA teacher shadows)."""
    return dict(model.encoder.named_parameters())


@dataclasses.dataclass
class StepOut:
    tasks: list[torch.Tensor]      # [L_elbo, L_perc, L_pred] (+ zero adversarial task)
    parts: dict[str, torch.Tensor]  # the §6.1 components
    decisions: dict[str, np.ndarray]
    metrics: dict[str, torch.Tensor]


def forward_sequence(model: AIME, x: torch.Tensor, actions: torch.Tensor, noise: dict,
                     hyper: dict, teacher: dict[str, torch.Tensor], n_tasks: int = 3,
                     override: dict | None = None) -> StepOut:
    """aime.md §2.6 in order; task losses of §6.1."""
    cfg = model.cfg
    B, T = x.shape[:2]
    R = cfg.attention_resolution
    ctx = global_context(model.perceiver_model, x, hyper, override)
    context = ctx.context
    h = model.h0.expand(-1, B, -1)
    c = model.c0.expand(-1, B, -1)
    c_prev = torch.zeros(B, cfg.context_dim)
    a_prev = torch.full((B, R, R), 1.0 / (R * R))
    z_prev = torch.zeros(B, cfg.latent_dim)
    att = model.attention_prior_posterior
    acc: dict[str, list] = {k: [] for k in ("recon", "kl_z", "hier", "ent", "gram", "div",
                                            "att_kl", "cx", "cy", "dx", "dy", "kmax", "keff")}
    for t in range(T):
        o, a_t, c_t = x[:, t], actions[:, t], context[:, t]
        z, mu_q, lv_q, levels = model.encoder(o, noise["eps_z"][t])
        mdl = model.decoder(z, levels)
        with torch.no_grad():
            _, t_levels = model.encoder.features(o, teacher)
        acc["gram"].append(nvae.gram_loss(levels, t_levels))
        post = att.posterior_net(o, h[-1], c_t)
        acc["div"].append(post["div"])
        s_att = model.phi_attention(post["bottleneck"], post["coords"], noise["eps_att"][t])
        h_tilde = torch.cat([h[-1], c_prev], dim=-1)
        pr = model.prior(h_tilde, {k: noise[k][t] for k in (
            "u_perm", "u_kuma", "gamma_normal", "gamma_uniform", "gamma_boost")})
        acc["recon"].append(nvae.mdl_nll(mdl, o).mean())
        acc["kl_z"].append(prior.mc_kl(mu_q, lv_q, pr["pi"], pr["mu"], pr["logvar"],
                                       noise["xi_mc"][t]))
        acc["hier"].append(prior.hierarchical_kl(model.prior, pr, h_tilde))
        acc["ent"].append(prior.cluster_entropy(pr["pi"]))
        cx, cy = centre_of_mass(post["map"])
        acc["cx"].append(cx)
        acc["cy"].append(cy)
        if t >= 1:
            pmap, dx, dy = att.prior_net(a_prev, h[-1], z_prev)
            acc["att_kl"].append(attention_kl(post["map"], pmap))
            acc["dx"].append(dx.mean((1, 2)))
            acc["dy"].append(dy.mean((1, 2)))
        with torch.no_grad():
            srt = torch.sort(pr["pi"], dim=-1, descending=True).values
            acc["keff"].append((1 + (torch.cumsum(srt, -1) < 0.999).sum(-1)).float().mean())
            acc["kmax"].append(srt[:, 0].mean())
        h, c = model._rnn.lstm.step(torch.cat([z, c_t, s_att, a_t], dim=-1), h, c)
        c_prev, a_prev, z_prev = c_t, post["map"], z

    def mean(k: str) -> torch.Tensor:
        return torch.stack(acc[k]).mean()

    cx, cy = torch.stack(acc["cx"]), torch.stack(acc["cy"])
    dyn = (smooth_l1(torch.stack(acc["dx"]), cx[1:] - cx[:-1])
           + smooth_l1(torch.stack(acc["dy"]), cy[1:] - cy[:-1]))
    parts = {k: mean(k) for k in ("recon", "kl_z", "hier", "ent", "gram", "div", "att_kl")}
    parts.update(dyn=dyn, perc=ctx.perc, ce=ctx.ce, vq=ctx.vq)
    beta = hyper["beta"]
    elbo = (hyper["lambda_recon"] * parts["recon"] + beta * parts["kl_z"] + beta * parts["hier"]
            - hyper["entropy_weight"] * parts["ent"] + hyper["lambda_gram"] * parts["gram"])
    pred = beta * parts["att_kl"] + hyper["lambda_att_dyn"] * dyn + parts["div"]
    tasks = [elbo, ctx.loss, pred] + [torch.zeros(())] * (n_tasks - 3)
    metrics = {"token_acc": ctx.token_acc, "k_eff": mean("keff"), "max_pi": mean("kmax")}
    return StepOut(tasks, parts, ctx.decisions, metrics)


@torch.no_grad()
def rollout(model: AIME, x: torch.Tensor, actions: torch.Tensor, noise: dict, hyper: dict,
            observe: int) -> tuple[torch.Tensor, torch.Tensor]:
    """What the model reconstructs and predicts (eval mode: no state updates, BatchNorm running
    statistics, no VQ EMA; aime.md §6.6), for pictures: per frame the reconstruction (per-pixel
    MDL mode of the most likely component, decoded from z = mu of the posterior) and, from frame
    `observe` on, the open-loop prediction (z = the mean of the prior's heaviest component,
    decoded with the encoder skips of the last observed frame; the context, attention state and
    actions stay teacher-forced). Frames before `observe` repeat the reconstruction.
    -> (recon, pred), each [B, T, 3, H, W] in [-1, 1]."""
    was = model.training
    model.eval()
    try:
        cfg = model.cfg
        B, T = x.shape[:2]
        ctx = global_context(model.perceiver_model, x, hyper).context
        h = model.h0.expand(-1, B, -1)
        c = model.c0.expand(-1, B, -1)
        c_prev = torch.zeros(B, cfg.context_dim)
        recon, pred, last = [], [], None
        for t in range(T):
            o = x[:, t]
            _, mu, _, levels = model.encoder(o, torch.zeros_like(noise["eps_z"][t]))
            recon.append(nvae.mdl_mode(model.decoder(mu, levels)))
            pr = model.prior(torch.cat([h[-1], c_prev], dim=-1), {k: noise[k][t] for k in (
                "u_perm", "u_kuma", "gamma_normal", "gamma_uniform", "gamma_boost")})
            if t < observe:
                z, last = mu, levels
                pred.append(recon[-1])
            else:
                k = pr["pi"].argmax(-1)
                z = pr["mu"][torch.arange(B), k]
                pred.append(nvae.mdl_mode(model.decoder(z, last)))
            post = model.attention_prior_posterior.posterior_net(o, h[-1], ctx[:, t])
            s_att = model.phi_attention(post["bottleneck"], post["coords"],
                                        torch.zeros_like(noise["eps_att"][t]))
            h, c = model._rnn.lstm.step(torch.cat([z, ctx[:, t], s_att, actions[:, t]], dim=-1),
                                        h, c)
            c_prev = ctx[:, t]
        return torch.stack(recon, 1), torch.stack(pred, 1)
    finally:
        model.train(was)
