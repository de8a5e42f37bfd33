"""Host noise of one training step (aime.md §4), the same arrays for both frameworks.

`rng = Generator(PCG64(SeedSequence([seed, step])))`; one array per site, time axis leading,
drawn in the order eps_z, eps_att, u_perm, u_kuma, xi_mc, then the gamma proposals. Normals are
float64 standard normals cast to float32; uniforms are odd multiples of 2^-24 in (0, 1).

Gamma (our choice, replacing aime.md §4's record/replay): the standard-gamma draws at the
concentration kappa computed inside the step come from a fixed-trial Marsaglia-Tsang transform
of host normals/uniforms, evaluated identically in both frameworks (`gamma_trials` proposals,
the first accepted wins; kappa < 1 boosted by U^(1/kappa)); the gradient is the implicit one of
each framework (torch `_standard_gamma_grad`, `jax.lax.random_gamma_grad`). No framework draws
natively, so lockstep runs need no coupling and JAX-only runs need no second compiled variant.
"""

from __future__ import annotations

import numpy as np

from twinframe.models.aime.config import AIMEConfig

SITES = ("eps_z", "eps_att", "u_perm", "u_kuma", "xi_mc", "gamma_normal", "gamma_uniform",
         "gamma_boost")


def uniforms(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """(2k + 1) / 2^24, k < 2^23: exactly representable, never 0 or 1."""
    return ((2 * rng.integers(0, 2**23, shape) + 1) / 2.0**24).astype(np.float32)


def normals(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def shapes(cfg: AIMEConfig, batch: int) -> dict[str, tuple[int, ...]]:
    T, B, D, K = cfg.sequence_length, batch, cfg.latent_dim, cfg.max_components
    S, Ra = cfg.alpha_samples, cfg.gamma_trials
    return {"eps_z": (T, B, D), "eps_att": (T, B, cfg.hidden_dim), "u_perm": (T, B, K - 1),
            "u_kuma": (T, B, K - 1), "xi_mc": (T, cfg.mc_samples, B, D),
            "gamma_normal": (T, B, S, Ra), "gamma_uniform": (T, B, S, Ra),
            "gamma_boost": (T, B, S)}


def step_noise(cfg: AIMEConfig, batch: int, seed: int, step: int) -> dict[str, np.ndarray]:
    """The noise of 1-based training step `step`."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, step])))
    out = {}
    for name, shape in shapes(cfg, batch).items():
        out[name] = uniforms(rng, shape) if name.startswith(("u_", "gamma_u", "gamma_b")) \
            else normals(rng, shape)
    return out
