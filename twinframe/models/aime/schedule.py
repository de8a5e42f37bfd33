"""Host-side schedules (aime.md §6.2) and the per-step hyper-parameters both engines receive."""

from __future__ import annotations

import math

from twinframe.models.aime.config import AIMERun


def epoch_of(step: int, run: AIMERun) -> int:
    """Epoch of 0-based step `step`."""
    return step // run.steps_per_epoch


def beta_at(step: int, run: AIMERun) -> float:
    """beta(epoch) = b_min + (b_max - b_min) * (1 - cos(pi * min(1, (epoch+1)/E))) / 2."""
    e = epoch_of(step, run)
    frac = min(1.0, (e + 1) / run.beta_epochs)
    return run.beta_min + (run.beta_max - run.beta_min) * 0.5 * (1 - math.cos(math.pi * frac))


def lr_factor(step: int, run: AIMERun) -> tuple[float, float]:
    """(cosine factor in [0, 1], eta_min) of 0-based step `step`: 1 while step <= constant
    steps, then CosineAnnealingWarmRestarts(T0, T_mult) at k = step - constant steps."""
    if step <= run.lr_constant_steps:
        return 1.0, run.lr_eta_min
    k, ti = step - run.lr_constant_steps, run.lr_t0
    while k >= ti:
        k -= ti
        ti *= run.lr_t_mult
    return (1 + math.cos(math.pi * k / ti)) / 2, run.lr_eta_min


def lr_at(step: int, base: float, run: AIMERun) -> float:
    if step <= run.lr_constant_steps:
        return base
    f, eta = lr_factor(step, run)
    return eta + (base - eta) * f


def hyper(step: int, run: AIMERun) -> dict[str, float]:
    """beta and the loss weights of 0-based step `step` (passed to both engines as data)."""
    return {"beta": beta_at(step, run), "lambda_recon": run.lambda_recon,
            "entropy_weight": run.entropy_weight, "lambda_gram": run.lambda_gram,
            "lambda_att_dyn": run.lambda_att_dyn, "label_smoothing": run.label_smoothing,
            "perceptual_weight": run.perceptual_weight}
