"""GAIA v3.1 in PyTorch (spec gaia.md §1): BitNet absmean ternary quantizer (§1.2),
`DiagnosticPlasticLinear` with fast/slow traces, homeostasis and diagnostic histories (§1.3),
the ensemble world model (§1.4, §1.5), the stochastic action model (§1.6) and the
active-inference agent with expected-free-energy action selection (§1.7).

The reference's op sequence is kept (one module call per member, `F.linear`, `nn.LayerNorm`,
`F.mse_loss`, `Normal.log_prob`, `clip_grad_norm_`, `torch.optim.AdamW`), so with the faithful
init and the reference's draws (an explicit `torch.Generator`, never the global one) the loop
reproduces the reference (§1.8). All randomness is injectable: `select_action(..., eps, u)`
and the environment's `xi` (parity mode, §3).

Module tree (state_dict = the layout of `models.gaia.layout`): `GaiaAgentModule` with children
`wm` (`EnsembleWorldModel`: `models.{i}` = `PlasticMember`: l1, l2, l3, ln1, ln2) and `am`
(`ActionModel`: `net` = Linear, ReLU, Linear), plus the buffer `preferred_state` (1, S).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from twinframe.models.gaia import (
    ALPHA_FAST,
    ALPHA_SLOW,
    AM_HIDDEN,
    HOMEO_EPS,
    Q_FLOOR,
    STD_MAX,
    STD_MIN,
    GaiaConfig,
    GaiaRun,
)
from twinframe.torch_ref.layers import load_numpy_state
from twinframe.torch_ref.layers import torch_threads as torch_threads


def bitnet_quantize(w: torch.Tensor, ste: bool = False) -> torch.Tensor:
    """Q(W) (§1.2): per output row s = max(mean|W|, 1e-5); q = clamp(round(W / s), -1, 1);
    Q = q*s. No straight-through estimator unless `ste` (then W + (Q - W).detach())."""
    s = w.abs().mean(dim=-1, keepdim=True).clamp(min=Q_FLOOR)
    q = torch.round(w / s).clamp(-1, 1)
    out = q * s
    return w + (out - w).detach() if ste else out


class DiagnosticPlasticLinear(nn.Module):
    """y = x (Q(W) + a_f F + a_s Sl)^T (no bias); traces updated from (x, y) after y (§1.3)."""

    def __init__(self, in_features: int, out_features: int, cfg: GaiaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.register_buffer("fast_trace", torch.zeros(out_features, in_features))
        self.register_buffer("slow_trace", torch.zeros(out_features, in_features))
        if cfg.track_metrics:
            L = cfg.trace_history_len
            self.register_buffer("trace_norm_history", torch.zeros(L))
            self.register_buffer("update_magnitude_history", torch.zeros(L))
            self.register_buffer("step_counter", torch.zeros((), dtype=torch.int64))
        self.plasticity_enabled = cfg.plasticity_enabled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:
            raise ValueError(f"DiagnosticPlasticLinear needs 2-D input (B, in), got {x.dim()}-D")
        w_static = bitnet_quantize(self.weight, self.cfg.ste)
        w_plastic = ALPHA_FAST * self.fast_trace + ALPHA_SLOW * self.slow_trace
        y = F.linear(x, w_static + w_plastic)
        if self.plasticity_enabled:
            self.update_traces(x, y)
        return y

    @torch.no_grad()
    def update_traces(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Δ = relu(y)^T x / B; F = λ_f F + η_f Δ; homeostasis on F (strict >); Sl = λ_s Sl +
        η_s F; histories at slot c mod L (‖Δ‖ before lr scaling, pre-rescale ‖F‖); c += 1."""
        cfg = self.cfg
        delta = torch.matmul(F.relu(y).t(), x) / x.shape[0]
        if cfg.track_metrics:
            k = int(self.step_counter) % cfg.trace_history_len
            self.update_magnitude_history[k] = delta.norm()
        self.fast_trace.mul_(cfg.fast_trace_decay).add_(delta, alpha=cfg.fast_trace_lr)
        norm = self.fast_trace.norm()
        if norm > cfg.homeostatic_target:
            self.fast_trace.mul_(cfg.homeostatic_target / (norm + HOMEO_EPS))
        self.slow_trace.mul_(cfg.slow_trace_decay).add_(self.fast_trace, alpha=cfg.slow_trace_lr)
        if cfg.track_metrics:
            self.trace_norm_history[k] = norm
            self.step_counter += 1

    def get_diagnostics(self) -> dict[str, float]:
        """§1.3 diagnostics (empty without metrics or before the first update)."""
        if not self.cfg.track_metrics or int(self.step_counter) == 0:
            return {}
        v = min(int(self.step_counter), self.cfg.trace_history_len)
        return {"fast_trace_norm": self.fast_trace.norm().item(),
                "slow_trace_norm": self.slow_trace.norm().item(),
                "mean_trace_norm": self.trace_norm_history[:v].mean().item(),
                "mean_update_mag": self.update_magnitude_history[:v].mean().item(),
                "weight_static_norm": self.weight.norm().item()}


class PlasticMember(nn.Module):
    """EnhancedDeepPlasticMember (§1.4): LN(relu(l1 x)), LN(relu(l2 h1)), l3 h2 + b."""

    def __init__(self, cfg: GaiaConfig) -> None:
        super().__init__()
        H, D, S = cfg.hidden_dim, cfg.in_dim, cfg.state_dim
        self.l1 = DiagnosticPlasticLinear(D, H, cfg)
        self.l2 = DiagnosticPlasticLinear(H, H, cfg)
        self.l3 = nn.Linear(H, S, device="meta").to_empty(device="cpu")
        self.ln1 = nn.LayerNorm(H)
        self.ln2 = nn.LayerNorm(H)

    def forward(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        x = torch.cat([s, a], dim=-1)
        h1 = self.ln1(F.relu(self.l1(x)))
        h2 = self.ln2(F.relu(self.l2(h1)))
        return self.l3(h2)


class EnsembleWorldModel(nn.Module):
    """E independent members (§1.5): mean and unbiased std over members."""

    def __init__(self, cfg: GaiaConfig) -> None:
        super().__init__()
        self.models = nn.ModuleList(PlasticMember(cfg) for _ in range(cfg.n_ensemble))

    def forward(self, s: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        preds = torch.stack([m(s, a) for m in self.models])
        return preds.mean(dim=0), preds.std(dim=0)

    def get_ensemble_diagnostics(self) -> dict[str, float]:
        m = self.models[0]
        return {**{f"l1_{k}": v for k, v in m.l1.get_diagnostics().items()},
                **{f"l2_{k}": v for k, v in m.l2.get_diagnostics().items()}}


class ActionModel(nn.Module):
    """StochasticActionModel (§1.6): net = Linear(S, 64), ReLU, Linear(64, 2A) -> (mu, sigma),
    sigma = clamp(exp(log-std), 0.01, 1)."""

    def __init__(self, cfg: GaiaConfig) -> None:
        super().__init__()
        S, A = cfg.state_dim, cfg.action_dim
        self.A = A
        self.net = nn.Sequential(nn.Linear(S, AM_HIDDEN, device="meta"), nn.ReLU(),
                                 nn.Linear(AM_HIDDEN, 2 * A, device="meta")).to_empty(
            device="cpu")

    def forward(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        o = self.net(s)
        mu, log_std = o[:, :self.A], o[:, self.A:]
        return mu, torch.clamp(log_std.exp(), STD_MIN, STD_MAX)

    def log_prob(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """sum_A Normal(mu, sigma).log_prob(a) (no tanh Jacobian): (B,)."""
        mu, std = self(s)
        return torch.distributions.Normal(mu, std).log_prob(a).sum(dim=-1)


class GaiaAgentModule(nn.Module):
    """The agent's tensors: `wm`, `am` and the preferred state g (buffer, (1, S))."""

    def __init__(self, cfg: GaiaConfig, state: dict[str, np.ndarray] | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("preferred_state", torch.zeros(1, cfg.state_dim))
        self.wm = EnsembleWorldModel(cfg)
        self.am = ActionModel(cfg)
        if state is not None:
            load_numpy_state(self, state)


def make_module(cfg: GaiaConfig, state: dict[str, np.ndarray]) -> GaiaAgentModule:
    """The contract's `make_torch`: the agent module filled from a torch-layout state."""
    return GaiaAgentModule(cfg, state)


def make_optimizer(module: GaiaAgentModule, run: GaiaRun) -> torch.optim.AdamW:
    """One AdamW, two parameter groups (wm at run.lr, am at run.policy_lr). torch keeps a step
    per parameter and skips parameters without a gradient, so this is the reference's two
    AdamW (wm_opt, act_opt) element for element (CPU: single-tensor kernels)."""
    kw = {"betas": (run.beta1, run.beta2), "eps": run.eps, "weight_decay": run.weight_decay}
    return torch.optim.AdamW([{"params": list(module.wm.parameters()), "lr": run.lr},
                              {"params": list(module.am.parameters()), "lr": run.policy_lr}],
                             **kw)


def make_optimizers(module: GaiaAgentModule, run: GaiaRun
                    ) -> tuple[torch.optim.AdamW, torch.optim.AdamW]:
    """The reference's wm_opt and act_opt (§1.7)."""
    kw = {"betas": (run.beta1, run.beta2), "eps": run.eps, "weight_decay": run.weight_decay}
    return (torch.optim.AdamW(module.wm.parameters(), lr=run.lr, **kw),
            torch.optim.AdamW(module.am.parameters(), lr=run.policy_lr, **kw))


# ----------------------------------------------------------------------------------------------
# Faithful init (the reference's torch-generator draws, §1.8)


def _linear_init(lin: nn.Linear, g: torch.Generator) -> None:
    """nn.Linear.reset_parameters with an explicit generator."""
    nn.init.kaiming_uniform_(lin.weight, a=math.sqrt(5), generator=g)
    fan_in, _ = nn.init._calculate_fan_in_and_fan_out(lin.weight)
    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
    nn.init.uniform_(lin.bias, -bound, bound, generator=g)


def plastic_weight(out_f: int, in_f: int, g: torch.Generator) -> torch.Tensor:
    """The reference's `torch.randn(out, in) * 0.02` from generator g."""
    return torch.randn(out_f, in_f, generator=g) * 0.02


@torch.no_grad()
def faithful_init(module: GaiaAgentModule, g: torch.Generator) -> None:
    """Draw every parameter as the reference's construction does (§1.8): per member l1.W,
    l2.W, l3 (weight, bias); then am net.0, net.2. LayerNorms draw nothing."""
    cfg = module.cfg
    for m in module.wm.models:
        m.l1.weight.copy_(plastic_weight(cfg.hidden_dim, cfg.in_dim, g))
        m.l2.weight.copy_(plastic_weight(cfg.hidden_dim, cfg.hidden_dim, g))
        _linear_init(m.l3, g)
        for ln in (m.ln1, m.ln2):
            ln.reset_parameters()
    _linear_init(module.am.net[0], g)
    _linear_init(module.am.net[2], g)


def faithful_state(cfg: GaiaConfig, seed: int) -> dict[str, np.ndarray]:
    """Torch-layout state of the reference init after `torch.manual_seed(seed)` (a private
    generator; torch's global one is untouched)."""
    from twinframe.models.gaia import canonical_init

    module = GaiaAgentModule(cfg, canonical_init(cfg, 0))
    faithful_init(module, torch.Generator().manual_seed(seed))
    return {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def load_reference_wm(module: GaiaAgentModule, wm_state: dict[str, Any],
                      counters: dict[str, int] | None = None) -> None:
    """A world-model state_dict saved by the reference code (keys `models.{i}.*`, 8 params + 8
    buffers per member, no `step_counter`: its counters are Python attributes) into the agent
    (§1.11): loaded with strict=False, then each counter set from `counters` (e.g. the
    reference object's `models.{i}.l1.step_counter` attributes) when given, else 0."""
    tensors = {k: torch.as_tensor(np.asarray(v)) for k, v in wm_state.items()}
    missing, unexpected = module.wm.load_state_dict(tensors, strict=False)
    if unexpected or any(not k.endswith("step_counter") for k in missing):
        raise KeyError(f"not a reference world model: missing {missing[:3]}, unexpected "
                       f"{unexpected[:3]}")
    with torch.no_grad():
        for k in missing:
            module.wm.get_buffer(k).fill_(int((counters or {}).get(k, 0)))


# ----------------------------------------------------------------------------------------------
# The agent (§1.7)


@dataclasses.dataclass
class Selection:
    """select_action's outputs: the action (1, A), its index, pi (P,), EFE (P,), candidates
    (P, A) and whether the inverse-CDF draw was a near tie (§3)."""

    action: torch.Tensor
    idx: int
    probs: torch.Tensor
    efe: torch.Tensor
    candidates: torch.Tensor
    tie: bool = False


@dataclasses.dataclass
class LearnOut:
    wm_loss: float
    uncertainty: float
    improvement: float
    policy_updated: bool
    policy_loss: float
    wm_grad_norm: float


def expected_free_energy(m: torch.Tensor, sd: torch.Tensor, g: torch.Tensor, beta: float
                         ) -> torch.Tensor:
    """EFE_p = mean_S (m_p - g)^2 - beta * mean_S sd_p (lower is better)."""
    pragmatic = ((m - g) ** 2).mean(dim=-1)
    epistemic = sd.mean(dim=-1)
    return pragmatic - beta * epistemic


@torch.no_grad()
def select_action(module: GaiaAgentModule, s: torch.Tensor, eps: torch.Tensor | None = None,
                  u: float | None = None, generator: torch.Generator | None = None
                  ) -> Selection:
    """§1.7 select_action for one state row s (1, S). eps (P, A) and u (inverse-CDF uniform)
    injected (parity mode), else drawn from `generator` (randn, multinomial: R4, R5).
    The world-model call updates every member's traces with a batch of P rows."""
    cfg = module.cfg
    if s.dim() != 2 or s.shape[0] != 1:
        raise ValueError("select_action takes one state row (1, S)")
    s_rep = s.repeat(cfg.planning_samples, 1)
    mu, std = module.am(s_rep)
    if eps is None:
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype)
    cand = torch.tanh(mu + std * eps)
    m, sd = module.wm(s_rep, cand)
    efe = expected_free_energy(m, sd, module.preferred_state, cfg.exploration_weight)
    probs = F.softmax(-efe / cfg.temperature, dim=0)
    tie = False
    if u is None:
        idx = int(torch.multinomial(probs, 1, generator=generator).item())
    else:
        idx, tie = inverse_cdf_torch(probs, u)
    return Selection(cand[idx:idx + 1], idx, probs, efe, cand, tie)


def inverse_cdf_torch(probs: torch.Tensor, u: float) -> tuple[int, bool]:
    """§3 inverse CDF with torch.cumsum (f32): idx = min(#{c_k <= f32(u)*c[-1]}, P-1)."""
    c = torch.cumsum(probs, dim=0)
    thr = torch.tensor(np.float32(u), dtype=torch.float32) * c[-1]
    idx = min(int((c <= thr).sum().item()), c.shape[0] - 1)
    return idx, bool((c - thr).abs().min().item() < 1e-6)


def clip_grads(params: Iterable[torch.Tensor], max_norm: float) -> float:
    """torch's clip_grad_norm_ (always multiplies by min(1, c/(n + 1e-6))); returns n."""
    return float(torch.nn.utils.clip_grad_norm_(list(params), max_norm))


def learn(module: GaiaAgentModule, wm_opt: torch.optim.Optimizer,
          am_opt: torch.optim.Optimizer, s: torch.Tensor, a: torch.Tensor,
          s_next: torch.Tensor, weight_scale: float | None = None,
          grad_clip_norm: float = 1.0) -> LearnOut:
    """§1.7 learn(s, a, s'): world-model MSE (second trace update, batch 1), clip, AdamW; then,
    if the improvement I > 0, the policy step -w log pi(a|s), w = sigmoid(kappa I). wm_opt and
    am_opt may be the same optimizer (`make_optimizer`): each step sees only its group's
    gradients."""
    cfg = module.cfg
    kappa = cfg.weight_scale if weight_scale is None else weight_scale
    g = module.preferred_state
    wm_opt.zero_grad(set_to_none=True)
    am_opt.zero_grad(set_to_none=True)
    preds = torch.stack([m(s, a) for m in module.wm.models])
    wm_loss = F.mse_loss(preds, s_next.unsqueeze(0).expand_as(preds))
    wm_loss.backward()
    norm = clip_grads(module.wm.parameters(), grad_clip_norm)
    wm_opt.step()
    wm_opt.zero_grad(set_to_none=True)
    with torch.no_grad():
        imp = (((s - g) ** 2).mean() - ((s_next - g) ** 2).mean()).item()
    updated, pol = False, 0.0
    if imp > 0:
        w = torch.sigmoid(torch.tensor(kappa * imp))
        logp = module.am.log_prob(s, a)
        loss = -(w * logp).mean()
        am_opt.zero_grad(set_to_none=True)
        loss.backward()
        clip_grads(module.am.parameters(), grad_clip_norm)
        am_opt.step()
        am_opt.zero_grad(set_to_none=True)
        updated, pol = True, float(loss.item())
    with torch.no_grad():
        unc = preds.detach().std().item()
    return LearnOut(float(wm_loss.item()), unc, imp, updated, pol, norm)


class GaiaAgent:
    """GaiaAgentEnhanced (§1.7): module + the reference's two AdamW + metric lists."""

    METRICS = ("wm_loss", "epistemic_uncertainty", "policy_improvement", "trace_norms")

    def __init__(self, cfg: GaiaConfig, run: GaiaRun | None = None,
                 state: dict[str, np.ndarray] | None = None) -> None:
        from twinframe.models.gaia import canonical_init

        self.cfg, self.run = cfg, run or GaiaRun()
        self.module = GaiaAgentModule(cfg, canonical_init(cfg, self.run.seed)
                                      if state is None else state)
        self.wm_opt, self.act_opt = make_optimizers(self.module, self.run)
        self.metrics: dict[str, list[float]] = {k: [] for k in self.METRICS}

    def select_action(self, s: torch.Tensor, eps: torch.Tensor | None = None,
                      u: float | None = None, generator: torch.Generator | None = None
                      ) -> Selection:
        return select_action(self.module, s, eps, u, generator)

    def learn(self, s: torch.Tensor, a: torch.Tensor, s_next: torch.Tensor) -> LearnOut:
        out = learn(self.module, self.wm_opt, self.act_opt, s, a, s_next,
                    grad_clip_norm=self.run.grad_clip_norm)
        self.metrics["wm_loss"].append(out.wm_loss)
        self.metrics["epistemic_uncertainty"].append(out.uncertainty)
        self.metrics["policy_improvement"].append(out.improvement)
        if self.module.wm.models[0].l1.get_diagnostics():
            self.metrics["trace_norms"].append(self.module.wm.models[0].l1.fast_trace.norm().item())
        return out

    def get_summary(self) -> dict[str, float]:
        out = {}
        for k, v in self.metrics.items():
            if v:
                x = np.asarray(v[-100:])
                out[f"{k}_mean"], out[f"{k}_std"] = float(x.mean()), float(x.std())
        return out


def env_step_torch(s: torch.Tensor, a: torch.Tensor, xi: torch.Tensor, sigma: float = 0.01
                   ) -> torch.Tensor:
    """LeakyReach (§1.9): (0.9 s + M a) + sigma xi in fp32; with S = A = 1 the reference
    loop's (s*0.9 + a) + 0.01*xi."""
    from twinframe.tasks.leaky_reach import env_step

    return env_step(s, a, xi, sigma)


def run_validation(agent: GaiaAgent, steps: int, generator: torch.Generator | None = None,
                   noise: Any = None, sigma: float = 0.01) -> dict[str, Any]:
    """The reference validation loop (§1.7): s0 = 0; per step select, env, learn. Faithful
    draws from `generator` (R4-R6), or parity noise from a `models.gaia.NoiseStream`. Returns
    per-step idx, s, ties and the agent's summary/diagnostics."""
    S = agent.cfg.state_dim
    s = torch.zeros(1, S)
    idx, states, ties = [], [], []
    for _ in range(steps):
        if noise is None:
            sel = agent.select_action(s, generator=generator)
            xi = torch.randn(s.shape, generator=generator, dtype=s.dtype)
        else:
            n = noise.next()
            sel = agent.select_action(s, torch.from_numpy(n.eps), float(n.u))
            xi = torch.from_numpy(n.xi)
        s_next = env_step_torch(s, sel.action, xi, sigma)
        agent.learn(s, sel.action, s_next)
        idx.append(sel.idx)
        ties.append(sel.tie)
        states.append(s_next.clone())
        s = s_next
    m0 = agent.module.wm.models[0]
    return {"idx": idx, "states": torch.cat(states).numpy(), "ties": ties,
            "summary": agent.get_summary(),
            "diagnostics": agent.module.wm.get_ensemble_diagnostics(),
            "stable": 0 < m0.l1.fast_trace.norm().item() < 1.1 * agent.cfg.homeostatic_target}

