"""DPGMM prior in torch (aime.md §2.4): Kumaraswamy stick-breaking with a random permutation,
Gamma posterior over the concentration, Gaussian components; the KL terms and the entropy."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from twinframe.models.aime import AIMEConfig
from twinframe.torch_ref.aime.prims import (
    EPS32,
    LN,
    TINY32,
    Lin,
    LNPair,
    Seq,
    SNLin,
    gamma_reparam,
    gelu,
    kumaraswamy_sample,
    softplus_half,
    standard_gamma_draw,
)

EULER = 0.5772156649


class _Net(nn.Module):
    def __init__(self, modules: dict) -> None:
        super().__init__()
        for k, m in modules.items():
            self.add_module(k, m)


class StickBreaking(nn.Module):
    def __init__(self, cfg: AIMEConfig) -> None:
        super().__init__()
        Hp, K = cfg.prior_input_dim, cfg.max_components
        self.alpha_posterior = _Net({"param_net": _Net({
            "gamma_fc": SNLin(Hp, Hp), "gamma_ln": LN(Hp), "gamma_out": SNLin(Hp, 2),
            "gamma_ln_out": LNPair(2, 1e-6)})})
        self.gamma_a = nn.Parameter(torch.empty(()))
        self.gamma_b = nn.Parameter(torch.empty(()))
        self.register_parameter("gamma_prior_a", self.gamma_a)
        self.register_parameter("gamma_prior_b", self.gamma_b)
        nets = {}
        for ab in ("a", "b"):
            nets[f"net_{ab}"] = _Net({f"kumar_{ab}_fc": SNLin(Hp, Hp),
                                      f"kumar_{ab}_ln": LN(Hp, 1e-6),
                                      f"kumar_{ab}_out": SNLin(Hp, K - 1),
                                      f"kumar_{ab}_ln_out": LN(K - 1)})
        self.kumar_net = _Net(nets)

    def kumar(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = []
        for ab in ("a", "b"):
            n = getattr(self.kumar_net, f"net_{ab}")
            m = dict(n.named_children())
            y = m[f"kumar_{ab}_ln_out"](m[f"kumar_{ab}_out"](
                gelu(m[f"kumar_{ab}_ln"](m[f"kumar_{ab}_fc"](h)))))
            out.append(torch.nan_to_num(torch.clamp(y, -5.0, 5.0), nan=0.0, posinf=5.0,
                                        neginf=-5.0))
        return out[0], out[1]

    def gamma_params(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = dict(self.alpha_posterior.param_net.named_children())
        y = m["gamma_ln_out"](m["gamma_out"](gelu(m["gamma_ln"](m["gamma_fc"](h)))))
        y = softplus_half(y) + EPS32
        return torch.clamp(y[..., 0], min=EPS32), torch.clamp(y[..., 1], min=EPS32)


class DPGMMPrior(nn.Module):
    def __init__(self, cfg: AIMEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        Hp, K, D = cfg.prior_input_dim, cfg.max_components, cfg.latent_dim
        self.stick_breaking = StickBreaking(cfg)
        self.component_nn = Seq({0: Lin(Hp, Hp), 1: LN(Hp), 3: Lin(Hp, 2 * K * D),
                                 4: LN(2 * K * D)})

    def forward(self, h: torch.Tensor, noise: dict) -> dict:
        """aime.md §2.4.2 in call order. noise: u_perm, u_kuma [B, K-1]; gamma_normal,
        gamma_uniform [B, S, R]; gamma_boost [B, S]."""
        cfg, sb = self.cfg, self.stick_breaking
        K, D = cfg.max_components, cfg.latent_dim
        log_a, log_b = sb.kumar(h)
        perm = torch.argsort(noise["u_perm"], dim=-1, stable=True)
        la, lb = log_a.gather(1, perm), log_b.gather(1, perm)
        v = kumaraswamy_sample(la, lb, noise["u_kuma"])
        pi = stick_breaking(v, perm)
        kappa, rho = sb.gamma_params(h)
        k_s = kappa[:, None].expand(-1, cfg.alpha_samples)
        x_hat = standard_gamma_draw(k_s, noise["gamma_normal"], noise["gamma_uniform"],
                                    noise["gamma_boost"])
        x = gamma_reparam(k_s, x_hat)
        x = torch.where(x < TINY32, torch.full_like(x, TINY32), x)
        alpha = (x / rho[:, None]).mean(-1, keepdim=True)
        c = self.component_nn
        y = c[4](c[3](F.leaky_relu(c[1](c[0](h)), 0.2)))
        mu, lv = y.chunk(2, dim=-1)
        B = h.shape[0]
        return {"pi": pi, "kumar_a": torch.exp(log_a), "kumar_b": torch.exp(log_b), "v": v,
                "alpha": alpha, "mu": mu.reshape(B, K, D),
                "logvar": torch.clamp(lv.reshape(B, K, D), -10.0, 2.0), "perm": perm}


def stick_breaking(v: torch.Tensor, perm: torch.Tensor | None) -> torch.Tensor:
    """aime.md §2.4.2 step 4: v [B, K-1] (permuted order) -> pi [B, K]."""
    B, K = v.shape[0], v.shape[1] + 1
    v = torch.clamp(v, EPS32, 1 - EPS32)
    log_prefix = F.pad(torch.cumsum(torch.log1p(-v), dim=-1), (1, 0), value=0.0)
    pi = torch.exp(torch.log(F.pad(v, (0, 1), value=1.0)) + log_prefix)
    if perm is not None:
        full = torch.cat([perm, torch.full((B, 1), K - 1, dtype=perm.dtype)], dim=1)
        pi = pi.gather(1, torch.argsort(full, dim=1))
    return pi / (pi.sum(-1, keepdim=True) + EPS32)


def _lbeta(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.lgamma(x + EPS32) + torch.lgamma(y + EPS32) - torch.lgamma(x + y + EPS32)


def kumar_beta_kl(a: torch.Tensor, b: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor,
                  M: int) -> torch.Tensor:
    """Kumaraswamy(a, b) || Beta(alpha, beta), M-term series, clamped at 0 (aime.md §2.4.3)."""
    e = 100 * EPS32
    a, b = torch.clamp(a, e, 20.0), torch.clamp(b, e, 20.0)
    alpha, beta = torch.clamp(alpha, min=e), torch.clamp(beta, min=e)
    ab = a * b
    a_inv, b_inv = 1.0 / (a + e), 1.0 / (b + e)
    terms = torch.stack([_lbeta(m * a_inv, b) - torch.log(m + ab) for m in range(1, M + 1)], -1)
    kl = (beta - 1) * b * torch.exp(torch.logsumexp(terms, dim=-1))
    t1 = (a - alpha) / (a + e) * (-EULER - torch.digamma(b + e) - b_inv)
    t2 = torch.log(ab + e) + _lbeta(alpha, beta) + (-(b - 1)) / (b + e)
    return torch.clamp(kl + t1 + t2, min=0.0)


def gamma_kl(kappa: torch.Tensor, rho: torch.Tensor, a0: torch.Tensor, b0: torch.Tensor
             ) -> torch.Tensor:
    """Gamma(kappa, rho) || Gamma(a0, b0), mean over the batch (aime.md §2.4.3)."""
    kl = (a0 * torch.log(rho / b0) + (-torch.lgamma(kappa) + torch.lgamma(a0))
          + (kappa - a0) * torch.digamma(kappa) + (-(rho - b0) * (kappa / rho)))
    return kl.mean()


def mc_kl(mu_q: torch.Tensor, lv_q: torch.Tensor, pi: torch.Tensor, mu: torch.Tensor,
          lv: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
    """MC KL of N(mu_q, exp lv_q) vs the mixture; xi [S, B, D] (aime.md §2.4.3)."""
    D = mu_q.shape[-1]
    c = D * math.log(2 * math.pi)
    z = mu_q + xi * torch.exp(0.5 * lv_q)
    log_q = -0.5 * (c + lv_q.sum(-1) + ((z - mu_q) ** 2 * torch.exp(-lv_q)).sum(-1))
    zk = z[:, :, None, :]
    log_n = -0.5 * (c + lv.sum(-1)[None] + ((zk - mu[None]) ** 2 * torch.exp(-lv)[None]).sum(-1))
    log_w = torch.log(torch.clamp(pi, min=EPS32) + EPS32)
    log_p = torch.logsumexp(log_n + log_w[None], dim=-1)
    return (log_q - log_p).mean()


def cluster_entropy(pi: torch.Tensor) -> torch.Tensor:
    """mean_b H(softmax(log clamp(pi/sum pi))) + mean_b H_c(pi) (aime.md §2.4.3)."""
    q = pi / pi.sum(-1, keepdim=True)
    logits = torch.log(torch.clamp(q, EPS32, 1 - EPS32))
    logits = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    h1 = -(torch.exp(logits) * logits).sum(-1)
    pc = torch.clamp(pi, min=EPS32)
    h2 = -(pc * torch.log(pc)).sum(-1)
    return h1.mean() + h2.mean()


def hierarchical_kl(prior: DPGMMPrior, out: dict, h: torch.Tensor) -> torch.Tensor:
    """hier_kumar + Gamma KL (second param_net call, second SN update)."""
    a, b = out["kumar_a"], out["kumar_b"]
    beta = out["alpha"].expand_as(a)
    kl = kumar_beta_kl(a, b, torch.ones_like(a), beta, prior.cfg.dkl_taylor_order)
    sb = prior.stick_breaking
    kappa, rho = sb.gamma_params(h)
    return kl.sum(-1).mean() + gamma_kl(kappa, rho, sb.gamma_a, sb.gamma_b)
