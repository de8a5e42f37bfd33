"""LeakyReach (spec gaia.md §1.9): s' = 0.9 s + M a + sigma xi, the reference loop generalised.

M is S x A with M_ij = 1 iff j = i mod A, so (M a)_i = a_(i mod A): a gather, exact in every
framework. `env_step` uses only indexing and arithmetic operators, so the same function runs on
NumPy arrays, torch tensors and jax arrays (and under jit / vmap / lax.scan); the state update
is (0.9*s + M a) + sigma*xi in float32, in that order (with S = A = 1 and sigma = 0.01 it is the
reference's `(s*0.9 + a) + 0.01*xi` bit for bit).

Deterministic episodes (§1.9): at reset, rng = default_rng(seed); s0 = rng.uniform(-r, r, S)
first when the random start is on, then xi = rng.standard_normal((T, S)); both float32.
Goal g = 0; reward r_t = -mean_S s_{t+1}^2.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

DECAY = 0.9
SIGMA_ENV = 0.01
EPISODE_LEN = 200


def coupling_index(state_dim: int, action_dim: int) -> np.ndarray:
    """idx_i = i mod A: (M a)_i = a[..., idx_i]."""
    return np.arange(state_dim) % action_dim


def coupling_matrix(state_dim: int, action_dim: int) -> np.ndarray:
    """M (S, A) float32 with M_ij = 1 iff j = i mod A."""
    M = np.zeros((state_dim, action_dim), np.float32)
    M[np.arange(state_dim), coupling_index(state_dim, action_dim)] = 1.0
    return M


def env_step(s: Any, a: Any, xi: Any, sigma: float = SIGMA_ENV) -> Any:
    """s (..., S), a (..., A), xi (..., S) -> s' (..., S), framework-neutral."""
    S, A = s.shape[-1], a.shape[-1]
    ma = a if S == A else a[..., coupling_index(S, A)]
    return (s * DECAY + ma) + sigma * xi


def reward(s_next: Any) -> Any:
    """r = -mean_S s'^2 (goal g = 0)."""
    return -(s_next * s_next).mean(-1)


@dataclasses.dataclass
class LeakyReach:
    """Episodic NumPy environment: `reset(seed)` draws s0 and the episode's noise, `step(a)`
    returns (s', r, done)."""

    state_dim: int = 1
    action_dim: int = 1
    sigma: float = SIGMA_ENV
    start_radius: float = 0.0
    episode_len: int = EPISODE_LEN

    def reset(self, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        S = self.state_dim
        if self.start_radius > 0:
            s0 = rng.uniform(-self.start_radius, self.start_radius, S)
        else:
            s0 = np.zeros(S)
        self.xi = rng.standard_normal((self.episode_len, S)).astype(np.float32)
        self.s = s0.astype(np.float32)[None]
        self.t = 0
        return self.s

    def step(self, a: np.ndarray) -> tuple[np.ndarray, float, bool]:
        s_next = env_step(self.s, np.asarray(a, np.float32).reshape(1, -1), self.xi[self.t][None],
                          np.float32(self.sigma))
        self.s = np.asarray(s_next, np.float32)
        self.t += 1
        return self.s, float(reward(self.s)[0]), self.t >= self.episode_len
