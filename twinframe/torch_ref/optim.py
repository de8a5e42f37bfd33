"""Optimizers the references use and torch lacks.

`MLXAdamW` is MLX-Swift's AdamW (hrm.md §6.3): no bias correction, decay as p*(1 - lr*wd)
before the Adam step. Its state per parameter uses torch.optim.AdamW's names (`exp_avg`,
`exp_avg_sq`, `step`) so one converter handles both.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class MLXAdamW(torch.optim.Optimizer):
    """p <- p*(1 - lr*wd) - lr*m / (sqrt(v) + eps); m, v without bias correction (f32)."""

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - torch API
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                m = state["exp_avg"].copy_(b1 * state["exp_avg"] + (1 - b1) * g)
                v = state["exp_avg_sq"].copy_(b2 * state["exp_avg_sq"] + (1 - b2) * (g * g))
                p.copy_(p * (1 - lr * wd) - (lr * m) / (torch.sqrt(v) + eps))
        return None
