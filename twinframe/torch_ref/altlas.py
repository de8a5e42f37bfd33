"""AltLAS in PyTorch (altlas.md §2-§4): Variant A `AltLAS_RNN` whose state_dict is the
reference layout (altlas.md §2.3), batched Gumbel-max generation with injected noise (altlas.md
§3.2-§3.4), the
teacher-forced REINFORCE loss with EMA baseline and entropy bonus (altlas.md §4.1), and one clip +
Adam
update (altlas.md §4.2, torch's own `clip_grad_norm_` and `Adam`).

Choices where the spec is silent (ours):
- Submodules are built on the meta device and materialised empty, then filled from the canonical
  NumPy init (or a given state): constructing a model never touches torch's global RNG.
- Dropout (altlas.md §2.1: on the RNN output before `fc`; stacked layers have no inter-layer
  dropout):
  only through an explicit keep-mask [B, T, H] (values 0 or 1/(1-p), drawn by the caller)
  multiplied into the last layer's output, exactly as `functional.altlas.forward`'s
  `dropout_mask`. Without a mask there is no dropout, in train and eval mode alike: the model
  holds no `nn.Dropout` and never draws from torch's global RNG. The LSTM/GRU is built with its
  own `dropout=0` (torch's inter-layer dropout would apply between stacked layers only).
- `generate` also returns the top-2 gap of z + g per step (`top2_gap`) so parity can excuse a
  token mismatch at a near tie (altlas.md §8).
- `learn_step` skips (no backward, no optimizer step) when B_eff = 0 and reports `skipped`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from twinframe.models.altlas import (
    ENTROPY_EPS,
    EOS_ID,
    PAD_ID,
    SOS_ID,
    SPECIAL_IDS,
    AltLASConfig,
    AltLASRun,
    canonical_init,
    grammar_boost_table,
    uses_grammar,
)
from twinframe.torch_ref.layers import load_numpy_state

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None


class AltLAS_RNN(nn.Module):  # noqa: N801 - the reference class name
    """Embedding -> LSTM/GRU (L layers, batch_first) -> * dropout mask (if given) -> Linear
    (Variant A, altlas.md §2.1)."""

    def __init__(self, cfg: AltLASConfig, state: dict[str, np.ndarray] | None = None) -> None:
        super().__init__()
        V, E, H, L = cfg.vocab_size, cfg.embed_dim, cfg.hidden_dim, cfg.num_layers
        self.cfg = cfg
        meta = torch.device("meta")
        self.embedding = nn.Embedding(V, E, padding_idx=PAD_ID, device=meta)
        rnn_cls = nn.LSTM if cfg.cell == "lstm" else nn.GRU
        setattr(self, cfg.cell, rnn_cls(E, H, L, batch_first=True, dropout=0.0, device=meta))
        self.fc = nn.Linear(H, V, device=meta)
        self.to_empty(device="cpu")
        load_numpy_state(self, canonical_init(cfg) if state is None else state)

    @property
    def rnn(self) -> nn.LSTM | nn.GRU:
        return getattr(self, self.cfg.cell)

    def forward(
        self, x: torch.Tensor, state: State = None, dropout_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        """Sequence mode. x: int [B, T]; state: LSTM (h, c) / GRU h, each [L, B, H] (zeros if None);
        dropout_mask: f32 [B, T, H] keep-mask (0 or 1/(1-p)) multiplied into the RNN output, or
        None for no dropout -> logits [B, T, V] f32, final state."""
        e = self.embedding(x.long())
        y, state = self.rnn(e, state)
        if dropout_mask is not None:
            y = y * dropout_mask
        return self.fc(y), state

    def step(self, tok: torch.Tensor, state: State = None) -> tuple[torch.Tensor, State]:
        """Step mode: tok int [B] -> logits [B, V], new state."""
        logits, state = self(tok[:, None], state)
        return logits[:, 0], state


# ----------------------------------------------------------------------------------------------
# Generation (altlas.md §3.2)


class Rollout(NamedTuple):
    """tokens int32 [B, T] (PAD after the end); valid bool [B, T] (EOS step included); hit_eos
    bool [B]; length int32 [B] (EOS excluded); logp_model, logp_behav, entropy f32 [B, T]
    (meaningful under `valid` only); top2_gap f32 [B, T] (top-1 minus top-2 of z + g)."""

    tokens: torch.Tensor
    valid: torch.Tensor
    hit_eos: torch.Tensor
    length: torch.Tensor
    logp_model: torch.Tensor
    logp_behav: torch.Tensor
    entropy: torch.Tensor
    top2_gap: torch.Tensor


def entropy_of(logits: torch.Tensor) -> torch.Tensor:
    """H = -sum_v p log(p + 1e-9), p = softmax(logits) (reference formula). [..., V] -> [...]."""
    p = torch.softmax(logits, dim=-1)
    return -(p * torch.log(p + ENTROPY_EPS)).sum(-1)


def modify_logits(
    logits: torch.Tensor,
    prev: torch.Tensor,
    seen: torch.Tensor,
    t: int,
    cfg: AltLASConfig,
    grammar: torch.Tensor | None,
    boost: torch.Tensor | None,
) -> torch.Tensor:
    """z of altlas.md §3.4 in the spec's order: temperature, grammar, repetition, special mask,
    top-k."""
    z = logits / torch.tensor(cfg.temperature, dtype=torch.float32)
    if grammar is not None and boost is not None:
        z = z + boost[t] * grammar[prev]
    if cfg.repetition_penalty != 1.0:
        log_rho = torch.tensor(np.float32(math.log(cfg.repetition_penalty)))
        z = z + log_rho * seen.float()
    if cfg.mask_special_tokens:
        z = z.clone()
        z[:, list(SPECIAL_IDS)] = -torch.inf
    if cfg.top_k > 0:
        theta = torch.topk(z, cfg.top_k, dim=-1).values[:, -1:]
        z = torch.where(z < theta, torch.tensor(-torch.inf), z)
    return z


@torch.no_grad()
def generate(
    model: AltLAS_RNN,
    noise: torch.Tensor,
    grammar: np.ndarray | torch.Tensor | None = None,
) -> Rollout:
    """B episodes of T steps in eval mode, Gumbel-max with injected noise g: f32 [B, T, V]."""
    cfg = model.cfg
    B, T, V = noise.shape
    was_training = model.training
    model.eval()
    G = None
    boost = None
    if uses_grammar(cfg) and grammar is not None:
        G = torch.as_tensor(np.asarray(grammar, np.float32))
        boost = torch.from_numpy(grammar_boost_table(cfg))
    prev = torch.full((B,), SOS_ID, dtype=torch.long)
    done = torch.zeros(B, dtype=torch.bool)
    seen = torch.zeros(B, V, dtype=torch.bool)
    rows = torch.arange(B)
    state: State = None
    cols: dict[str, list[torch.Tensor]] = {k: [] for k in
                                           ("tok", "valid", "lpm", "lpb", "ent", "gap")}
    for t in range(T):
        logits, state = model.step(prev, state)
        z = modify_logits(logits, prev, seen, t, cfg, G, boost)
        s = z + noise[:, t]
        a = torch.argmax(s, dim=-1)
        top2 = torch.topk(s, 2, dim=-1).values
        valid = ~done
        a = torch.where(done, torch.tensor(PAD_ID), a)
        lpm = torch.log_softmax(logits, -1)[rows, a]
        lpb = torch.log_softmax(z, -1)[rows, a]
        for k, v in zip(cols, (a, valid, lpm, lpb, entropy_of(logits), top2[:, 0] - top2[:, 1]),
                        strict=True):
            cols[k].append(v)
        done = done | (a == EOS_ID)
        seen[rows, a] = True
        prev = a
    model.train(was_training)
    tokens = torch.stack(cols["tok"], 1).to(torch.int32)
    valid = torch.stack(cols["valid"], 1)
    hit_eos = (valid & (tokens == EOS_ID)).any(1)
    length = (valid.sum(1) - hit_eos.long()).to(torch.int32)
    return Rollout(tokens, valid, hit_eos, length, torch.stack(cols["lpm"], 1),
                   torch.stack(cols["lpb"], 1), torch.stack(cols["ent"], 1),
                   torch.stack(cols["gap"], 1))


def torch_gumbel(gen: torch.Generator, batch: int, steps: int, vocab: int) -> torch.Tensor:
    """Normal-mode noise (altlas.md §3.3): U ~ rand(gen) clamped to [tiny32, 1), g = -log(-log
    U)."""
    u = torch.rand((batch, steps, vocab), generator=gen, dtype=torch.float32)
    u = torch.clamp(u, min=float(np.finfo(np.float32).tiny))
    return -torch.log(-torch.log(u))


# ----------------------------------------------------------------------------------------------
# Learning (altlas.md §4)


class LossOut(NamedTuple):
    """loss (scalar, differentiable); policy_term, entropy_term (detached scalars); logits
    [B, T, V]; logp [B, T] of the targets; entropy [B, T]; mask m [B, T] f32."""

    loss: torch.Tensor
    policy_term: torch.Tensor
    entropy_term: torch.Tensor
    logits: torch.Tensor
    logp: torch.Tensor
    entropy: torch.Tensor
    mask: torch.Tensor


def teacher_inputs(tokens: torch.Tensor) -> torch.Tensor:
    """x[:, 0] = SOS, x[:, t] = tokens[:, t-1]. tokens: int [B, T] -> long [B, T]."""
    sos = torch.full((tokens.shape[0], 1), SOS_ID, dtype=torch.long)
    return torch.cat([sos, tokens[:, :-1].long()], dim=1)


def reinforce_loss(
    model: AltLAS_RNN,
    tokens: torch.Tensor,
    valid: torch.Tensor,
    advantages: torch.Tensor,
    weights: torch.Tensor,
    beta: float | torch.Tensor,
    dropout_mask: torch.Tensor | None = None,
) -> LossOut:
    """L = (1/B_eff) sum_b w_b [-A_b sum_t m logp - beta sum_t m H] (altlas.md §4.1), train-mode
    pass.

    tokens: int [B, T]; valid: bool [B, T]; advantages, weights: f32 [B]; beta: f32 scalar;
    dropout_mask: f32 [B, T, H] keep-mask (0 or 1/(1-p)) or None (no dropout).
    """
    cfg = model.cfg
    logits, _ = model(teacher_inputs(tokens), None, dropout_mask)
    logp_all = torch.log_softmax(logits, -1)
    logp = logp_all.gather(-1, tokens.long()[..., None])[..., 0]
    ent = entropy_of(logits)
    m = valid.bool()
    if not cfg.credit_eos:
        m = m & (tokens != EOS_ID)
    m = m.float()
    beta_t = torch.as_tensor(beta, dtype=torch.float32)
    lp_sum = (m * logp).sum(1)
    h_sum = (m * ent).sum(1)
    b_eff = weights.sum()
    policy = -advantages * lp_sum
    entropy_bonus = -beta_t * h_sum
    loss = (weights * (policy + entropy_bonus)).sum() / b_eff
    with torch.no_grad():
        pol_term = (weights * policy).sum() / b_eff
        ent_term = (weights * entropy_bonus).sum() / b_eff
    return LossOut(loss, pol_term, ent_term, logits, logp, ent, m)


def make_optimizer(model: nn.Module, run: AltLASRun) -> torch.optim.Adam:
    """torch Adam with the run config's lr, betas, eps; no weight decay, no amsgrad (altlas.md
    §4.2)."""
    return torch.optim.Adam(model.parameters(), lr=run.lr, betas=(run.beta1, run.beta2),
                            eps=run.eps)


def clip_grads(model: nn.Module, max_norm: float) -> torch.Tensor:
    """torch `clip_grad_norm_` (g *= min(1, c/(n + 1e-6)), always applied) when c > 0; returns
    the pre-clip global norm n (computed the same way, without scaling, when c <= 0)."""
    params = [p for p in model.parameters() if p.grad is not None]
    if max_norm > 0:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    return torch.nn.utils.get_total_norm([p.grad for p in params])


class LearnOut(NamedTuple):
    """Scalars of one update: loss, policy term, entropy term, pre-clip grad norm; skipped."""

    loss: float
    policy_term: float
    entropy_term: float
    grad_norm: float
    skipped: bool


def learn_step(
    model: AltLAS_RNN,
    optimizer: torch.optim.Optimizer,
    tokens: torch.Tensor,
    valid: torch.Tensor,
    advantages: torch.Tensor,
    weights: torch.Tensor,
    beta: float | torch.Tensor,
    dropout_mask: torch.Tensor | None = None,
    *,
    grad_clip_norm: float,
) -> LearnOut:
    """One REINFORCE update: loss, backward, `clip_grads(model, grad_clip_norm)` (the run
    config's), Adam step. No-op when B_eff = 0. Arguments as `reinforce_loss`."""
    if float(weights.sum()) == 0.0:
        return LearnOut(0.0, 0.0, 0.0, 0.0, True)
    model.train()
    optimizer.zero_grad(set_to_none=True)
    out = reinforce_loss(model, tokens, valid, advantages, weights, beta, dropout_mask)
    out.loss.backward()
    n = clip_grads(model, grad_clip_norm)
    optimizer.step()
    return LearnOut(out.loss.item(), float(out.policy_term), float(out.entropy_term), float(n),
                    False)
