"""AIME-core training step in torch (aime.md §6.3-§6.5): per-task gradients, RGB gradient
balancing, global-norm clip, AdamW with the reference's parameter groups (leaves no task reaches
are never touched), the LR schedule, the EMA teacher update."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from twinframe.models.aime import NEVER_REACHED, AIMERun, ema_keys, trained_keys
from twinframe.models.aime.schedule import lr_at
from twinframe.models.aime.tree import GROUPS, group_of
from twinframe.torch_ref.aime.model import AIME, StepOut, forward_sequence

ALPHA_MAX = math.pi / 2 - 1e-6
RGB_EPS = 1e-8
RGB_THR = 0.999


def make_optimizer(model: AIME, run: AIMERun) -> torch.optim.AdamW:
    """torch.optim.AdamW, groups (aime.md §6.4): perceiver lr x1.5 wd x0.5, trunk, head lr x1.2
    wd x0.5, h0/c0 lr x0.1 wd 0; weight decay only on tensors with ndim >= 2."""
    named = dict(model.named_parameters())
    groups: dict[tuple[str, bool], list] = {}
    for k in trained_keys(model.cfg):
        p = named[k]
        groups.setdefault((group_of(k), p.ndim >= 2), []).append(p)
    param_groups = []
    for (g, decay), ps in groups.items():
        lr_m, wd_m = GROUPS[g]
        param_groups.append({"params": ps, "lr": run.lr * lr_m, "lr_mult": lr_m,
                             "weight_decay": run.weight_decay * wd_m if decay else 0.0})
    return torch.optim.AdamW(param_groups, lr=run.lr, betas=(run.beta1, run.beta2),
                             eps=run.eps, weight_decay=run.weight_decay, foreach=False)


def set_lr(opt: torch.optim.Optimizer, step: int, run: AIMERun) -> None:
    for g in opt.param_groups:
        g["lr"] = lr_at(step, run.lr * g["lr_mult"], run)


# ----------------------------------------------------------------------------------------------
# RGB (aime.md §6.3)


@dataclasses.dataclass
class RGBState:
    d: torch.Tensor          # [P] consensus direction (flat, trained-keys order)
    alpha: torch.Tensor      # [n]
    count: int = 0


def rgb_init(n_params: int, n_tasks: int) -> RGBState:
    return RGBState(torch.zeros(n_params), torch.zeros(n_tasks), 0)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / torch.clamp(x.norm(dim=-1, keepdim=True), min=RGB_EPS)


def rgb_step(g: torch.Tensor, st: RGBState, run: AIMERun) -> tuple[torch.Tensor, RGBState]:
    """g [n, P] task gradients -> (G [P], new state)."""
    n = g.shape[0]
    gh = _unit(g)
    y = _unit(gh.mean(0))
    d = y if st.count == 0 else run.rgb_mu * st.d + (1 - run.rgb_mu) * y
    d = _unit(d)
    count = st.count + 1
    if count % run.rgb_interval != 0 or n <= 1:
        return gh.mean(0), RGBState(d, st.alpha, count)
    p = gh @ d
    w = _unit(d[None] - p[:, None] * gh)
    flag = p.abs() > RGB_THR
    first = count == run.rgb_interval  # alpha unset until the first balanced step
    alpha = torch.zeros(n) if first else torch.clamp(st.alpha, 0.0, ALPHA_MAX)
    alpha = torch.where(flag, torch.zeros_like(alpha), alpha)

    def rot(a: torch.Tensor) -> torch.Tensor:
        return _unit(torch.cos(a)[:, None] * gh + torch.sin(a)[:, None] * w)

    for _ in range(run.rgb_steps):
        a = alpha.clone().requires_grad_(True)
        r = rot(a)
        J = ((n * (n - 1) / 2 - 0.5 * ((r.sum(0) ** 2).sum() - n)) / (n * (n - 1))
             + run.rgb_lambda * ((r - gh) ** 2).sum() / (4 * n))
        (grad,) = torch.autograd.grad(J, a)
        grad = torch.where(flag, torch.zeros_like(grad), grad)
        alpha = torch.clamp(alpha - run.rgb_lr * grad, 0.0, ALPHA_MAX)
        alpha = torch.where(flag, torch.zeros_like(alpha), alpha)
    with torch.no_grad():
        G = rot(alpha).mean(0)
    return G, RGBState(d, alpha.detach(), count)


# ----------------------------------------------------------------------------------------------
# EMA teacher (aime.md §2.3.5)


def ema_init(model: AIME) -> dict[str, torch.Tensor]:
    named = dict(model.named_parameters())
    return {k[len("encoder."):]: named[k].detach().clone() for k in ema_keys(model.cfg)}


def ema_update(model: AIME, shadow: dict[str, torch.Tensor], n: int, decay: float
               ) -> tuple[dict[str, torch.Tensor], int]:
    n += 1
    delta = min(decay, (1 + n) / (10 + n))
    live = dict(model.encoder.named_parameters())
    with torch.no_grad():
        new = {k: (1 - delta) * live[k].detach() + delta * v for k, v in shadow.items()}
    return new, n


# ----------------------------------------------------------------------------------------------
# One training step (aime.md §6.5)


@dataclasses.dataclass
class TorchStep:
    out: StepOut
    task_grads: dict[str, np.ndarray] | None  # [n, ...] per trained key (when requested)
    G: np.ndarray | None
    rgb: RGBState
    grad_norms: list[float]
    G_norm: float


def train_step(model: AIME, opt: torch.optim.Optimizer, x: torch.Tensor, actions: torch.Tensor,
               noise: dict, hyper: dict, shadow: dict, ema_n: int, rgb: RGBState, step: int,
               run: AIMERun, keep_grads: bool = False
               ) -> tuple[TorchStep, dict, int]:
    """One step; returns (outputs, new EMA shadow, new EMA count). `step` is 0-based."""
    cfg = model.cfg
    model.train()
    out = forward_sequence(model, x, actions, noise, hyper, shadow, run.num_tasks)
    named = dict(model.named_parameters())
    keys = trained_keys(cfg)
    reached = [k for k in keys if k not in NEVER_REACHED]
    params = [named[k] for k in reached]
    flat = []
    for i, task in enumerate(out.tasks):
        if task.grad_fn is None:
            gs = [None] * len(params)
        else:
            gs = torch.autograd.grad(task, params, retain_graph=i < len(out.tasks) - 1,
                                     allow_unused=True)
        flat.append(torch.cat([(torch.zeros_like(p) if gi is None else gi).reshape(-1)
                               for p, gi in zip(params, gs, strict=True)]))
    g = torch.stack(flat)
    G, rgb_new = rgb_step(g, rgb, run)
    offs = np.cumsum([0] + [named[k].numel() for k in reached])
    opt.zero_grad(set_to_none=True)
    for i, k in enumerate(reached):
        named[k].grad = G[offs[i]:offs[i + 1]].view_as(named[k]).clone()
    torch.nn.utils.clip_grad_norm_([named[k] for k in reached], run.grad_clip, foreach=False)
    set_lr(opt, step, run)
    opt.step()
    shadow, ema_n = ema_update(model, shadow, ema_n, run.ema_decay)
    task_grads = None
    if keep_grads:
        task_grads = {k: g[:, offs[i]:offs[i + 1]].reshape(-1, *named[k].shape).numpy().copy()
                      for i, k in enumerate(reached)}
    res = TorchStep(out, task_grads, G.numpy().copy() if keep_grads else None, rgb_new,
                    [float(v) for v in g.norm(dim=-1)], float(G.norm()))
    return res, shadow, ema_n


def rgb_d_by_key(rgb: RGBState, model: AIME) -> dict[str, np.ndarray]:
    """The flat consensus direction as {trained key: tensor-shaped array} (zeros for leaves no
    task reaches)."""
    named = dict(model.named_parameters())
    keys = trained_keys(model.cfg)
    reached = [k for k in keys if k not in NEVER_REACHED]
    offs = np.cumsum([0] + [named[k].numel() for k in reached])
    d = rgb.d.numpy()
    out = {k: np.zeros(tuple(named[k].shape), np.float32) for k in keys}
    for i, k in enumerate(reached):
        out[k] = d[offs[i]:offs[i + 1]].reshape(out[k].shape).copy()
    return out


def rgb_d_from_keys(d: dict[str, np.ndarray], model: AIME) -> torch.Tensor:
    keys = [k for k in trained_keys(model.cfg) if k not in NEVER_REACHED]
    return torch.from_numpy(np.concatenate([np.asarray(d[k], np.float32).reshape(-1)
                                            for k in keys]))
