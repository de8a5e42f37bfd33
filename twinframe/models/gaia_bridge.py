"""Bridges between GAIA v4.x (NumPy) and v3.1 (PyTorch / JAX), framework-neutral part (the
user's guide, "PyTorch Integration Guide" §3-§7):

- `UnifiedGaiaConfig` (guide §4.2): one config that produces the v4.x HebbianCore hyper-
  parameters and the v3.1 `GaiaConfig`, with the guide's field mapping (learning_rate ->
  fast_trace_lr; fast_decay -> fast_trace_decay and decay_rate = 1 - fast_decay; slow_decay ->
  slow_trace_decay; homeostatic_target; homeostatic_strength 0.1), and back (`from_configs`).
- Weight transfer as arrays (guide §3, §4.1, §6.2): a HebbianCore weight and a
  DiagnosticPlasticLinear weight are both (out, in) (spec gaia.md §2.3, §1.3), so the guide's
  `.T` is not applied: shapes are checked instead (`hebbian_to_plastic_weight`,
  `plastic_to_hebbian_weight`; the "effective" weight Q(W) + a_f F + a_s Sl on request).
- Analysis arrays (guide §5.2, §7.1): weights, fast/slow traces, histories in chronological
  order, counters, per member and layer, from any torch-layout agent state (either framework's
  through the layout); correlation and sparsity helpers.

Choices (ours): HebbianCore hparams not in the guide's mapping keep the reference defaults
(a partial dict would raise KeyError at update(), spec §2.3); `from_configs` refuses configs
whose shared fields disagree (fast_trace_lr != learning_rate, decay_rate != 1 - fast_decay).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from twinframe.errors import ConfigError
from twinframe.models.base import FrozenConfig
from twinframe.models.gaia import ALPHA_FAST, ALPHA_SLOW, Q_FLOOR, GaiaConfig

HEBBIAN_DEFAULTS = {"learning_rate": 0.01, "decay_rate": 0.001, "ltp_coefficient": 1.0,
                    "ltd_coefficient": 0.8, "homeostatic_strength": 0.1, "bcm_theta": 1.0}


@dataclasses.dataclass(frozen=True)
class UnifiedGaiaConfig(FrozenConfig):
    """Guide §4.2 `UnifiedGaiaConfig`: dimensions and plasticity shared by both systems."""

    input_dim: int = 10
    hidden_dim: int = 64
    output_dim: int = 10
    learning_rate: float = 0.01
    fast_decay: float = 0.95
    slow_decay: float = 0.99
    homeostatic_target: float = 5.0
    homeostatic_strength: float = 0.1
    plasticity_rule: str = "hebbian"

    def validate(self) -> None:
        if min(self.input_dim, self.hidden_dim, self.output_dim) < 1:
            raise ConfigError("dimensions must be >= 1")
        if not (0 < self.fast_decay <= 1 and 0 < self.slow_decay <= 1):
            raise ConfigError("decays must lie in (0, 1]")
        if self.plasticity_rule not in ("hebbian", "oja", "bcm"):
            raise ConfigError("plasticity_rule must be hebbian, oja or bcm")

    def to_numpy_config(self) -> dict[str, float]:
        """HebbianCore hparams (all six keys; guide: decay_rate = 1 - fast_decay)."""
        return {**HEBBIAN_DEFAULTS, "learning_rate": self.learning_rate,
                "decay_rate": 1 - self.fast_decay,
                "homeostatic_strength": self.homeostatic_strength}

    def to_pytorch_config(self, **overrides: Any) -> GaiaConfig:
        """GaiaConfig(hidden_dim, fast/slow decays, fast_trace_lr = learning_rate, tau_H)."""
        return GaiaConfig(**{"hidden_dim": self.hidden_dim,
                             "fast_trace_decay": self.fast_decay,
                             "slow_trace_decay": self.slow_decay,
                             "fast_trace_lr": self.learning_rate,
                             "homeostatic_target": self.homeostatic_target, **overrides})

    def layer_shapes(self) -> dict[str, tuple[int, int]]:
        """(out, in) of the hidden and output layers in both systems."""
        return {"hidden": (self.hidden_dim, self.input_dim),
                "output": (self.output_dim, self.hidden_dim)}

    @classmethod
    def from_configs(cls, numpy_hparams: Mapping[str, float], torch_cfg: GaiaConfig,
                     input_dim: int = 10, output_dim: int = 10) -> UnifiedGaiaConfig:
        """The unified config both sides came from (the inverse of the two methods)."""
        lr, fd = float(numpy_hparams["learning_rate"]), torch_cfg.fast_trace_decay
        if not np.isclose(torch_cfg.fast_trace_lr, lr, rtol=0, atol=1e-15):
            raise ConfigError(f"fast_trace_lr {torch_cfg.fast_trace_lr} != learning_rate {lr}")
        if not np.isclose(float(numpy_hparams["decay_rate"]), 1 - fd, rtol=0, atol=1e-12):
            raise ConfigError(f"decay_rate {numpy_hparams['decay_rate']} != 1 - fast_decay "
                              f"{1 - fd}")
        return cls(input_dim=input_dim, hidden_dim=torch_cfg.hidden_dim, output_dim=output_dim,
                   learning_rate=lr, fast_decay=fd, slow_decay=torch_cfg.slow_trace_decay,
                   homeostatic_target=torch_cfg.homeostatic_target,
                   homeostatic_strength=float(numpy_hparams["homeostatic_strength"]))


# ----------------------------------------------------------------------------------------------
# Weight transfer as arrays


def _check(name: str, w: np.ndarray, shape: tuple[int, int]) -> None:
    if tuple(np.shape(w)) != tuple(shape):
        raise ConfigError(f"{name}: shape {tuple(np.shape(w))} does not match (out, in) = "
                          f"{tuple(shape)} (both systems store (out, in): no transpose)")


def hebbian_to_plastic_weight(w: np.ndarray, out_in: tuple[int, int]) -> np.ndarray:
    """HebbianCore.weights (out, in) float64 -> DiagnosticPlasticLinear.weight (out, in) f32."""
    _check("HebbianCore.weights", w, out_in)
    return np.asarray(w, np.float64).astype(np.float32)


def quantize_np(w: np.ndarray) -> np.ndarray:
    """Q(W) of spec §1.2 in NumPy float32 (true division, half-to-even)."""
    w = np.asarray(w, np.float32)
    s = np.maximum(np.abs(w).mean(-1, keepdims=True, dtype=np.float32), np.float32(Q_FLOOR))
    return np.clip(np.round(w / s), -1, 1).astype(np.float32) * s


def plastic_to_hebbian_weight(w: np.ndarray, out_in: tuple[int, int],
                              fast: np.ndarray | None = None, slow: np.ndarray | None = None,
                              effective: bool = False) -> np.ndarray:
    """DiagnosticPlasticLinear -> HebbianCore.weights (out, in) float64: the raw weight, or
    (effective=True) the weight the forward uses, Q(W) + a_f F + a_s Sl."""
    _check("DiagnosticPlasticLinear.weight", w, out_in)
    if not effective:
        return np.asarray(w, np.float32).astype(np.float64)
    z = np.zeros(out_in, np.float32)
    fast = z if fast is None else np.asarray(fast, np.float32)
    slow = z if slow is None else np.asarray(slow, np.float32)
    w_eff = quantize_np(w) + (np.float32(ALPHA_FAST) * fast + np.float32(ALPHA_SLOW) * slow)
    return w_eff.astype(np.float64)


# ----------------------------------------------------------------------------------------------
# Analysis export (arrays; files: `parity.gaia_io.write_analysis`)


def chronological(hist: np.ndarray, counter: int) -> np.ndarray:
    """A ring-buffer history (slot = c mod L) in write order, oldest first (c writes)."""
    hist = np.asarray(hist)
    L, c = hist.shape[-1], int(counter)
    if c <= L:
        return hist[..., :c].copy()
    k = c % L
    return np.concatenate([hist[..., k:], hist[..., :k]], axis=-1)


def analysis_arrays(cfg: GaiaConfig, state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per member i and plastic layer l: `m{i}.{l}.weights`, `.fast_trace`, `.slow_trace`,
    `.effective_weights`, and with metrics `.trace_norm_history`, `.update_magnitude_history`
    (chronological) and `.step_counter`; plus `am.*` weights (torch layout, float32)."""
    out: dict[str, np.ndarray] = {}
    for i in range(cfg.n_ensemble):
        for name in ("l1", "l2"):
            p = f"wm.models.{i}.{name}"
            w, f, s = (np.asarray(state[f"{p}.{k}"], np.float32)
                       for k in ("weight", "fast_trace", "slow_trace"))
            q = f"m{i}.{name}"
            out.update({f"{q}.weights": w, f"{q}.fast_trace": f, f"{q}.slow_trace": s,
                        f"{q}.effective_weights": quantize_np(w) + (np.float32(ALPHA_FAST) * f
                                                                    + np.float32(ALPHA_SLOW) * s)})
            if cfg.track_metrics:
                c = int(np.asarray(state[f"{p}.step_counter"]))
                out[f"{q}.step_counter"] = np.asarray(c, np.int64)
                for h in ("trace_norm_history", "update_magnitude_history"):
                    out[f"{q}.{h}"] = chronological(state[f"{p}.{h}"], c)
    for k, v in state.items():
        if k.startswith("am."):
            out[k] = np.asarray(v, np.float32)
    return out


def correlation_matrix(w: np.ndarray) -> np.ndarray:
    """Guide §7.1: np.corrcoef of the weight rows."""
    return np.corrcoef(np.asarray(w, np.float64))


def sparsity(w: np.ndarray, threshold: float = 0.01) -> float:
    """Guide §7.1: fraction of |w| < threshold."""
    return float(np.mean(np.abs(np.asarray(w)) < threshold))
