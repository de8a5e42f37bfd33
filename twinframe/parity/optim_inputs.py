"""Shared inputs of the one-update optimizer checks (HRM L4, AltLAS P5): seeded gradients and
non-zero moments, and a torch optimizer primed with them as if at step `step`."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

Arrays = dict[str, np.ndarray]


def grads_and_moments(
    rng: np.random.Generator, shapes: Mapping[str, tuple[int, ...]]
) -> tuple[Arrays, Arrays, Arrays]:
    """g ~ 1e-2 N(0,1), m ~ 1e-3 N(0,1), v ~ 1e-5 U[0,1) per leaf (float32, torch layout)."""
    g = {k: (rng.standard_normal(s) * 1e-2).astype(np.float32) for k, s in shapes.items()}
    m = {k: (rng.standard_normal(s) * 1e-3).astype(np.float32) for k, s in shapes.items()}
    v = {k: (rng.random(s) * 1e-5).astype(np.float32) for k, s in shapes.items()}
    return g, m, v


def prime_torch_optimizer(
    opt: torch.optim.Optimizer,
    named: Mapping[str, torch.nn.Parameter],
    g: Arrays,
    m: Arrays,
    v: Arrays,
    step: int = 3,
) -> None:
    """Set .grad and the Adam-style state (`step`, `exp_avg`, `exp_avg_sq`) of every key in g."""
    for k in g:
        named[k].grad = torch.from_numpy(g[k].copy())
        opt.state[named[k]] = {"step": torch.tensor(float(step)),
                               "exp_avg": torch.from_numpy(m[k].copy()),
                               "exp_avg_sq": torch.from_numpy(v[k].copy())}
