"""Frozen dataclass configs that reject unknown fields, and shared NumPy init helpers."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Self

import numpy as np
from scipy.special import erfinv

from twinframe.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class FrozenConfig:
    """Base of every model config. Subclasses implement `validate()` (raise ConfigError)."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError on an invalid combination of fields."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Build from a dict; unknown fields raise ConfigError naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown field(s) {', '.join(unknown)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Self:
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> Self:
        """Copy with fields changed; unknown fields raise ConfigError."""
        return type(self).from_dict({**self.to_dict(), **changes})


TRUNC_LOWER = -2.0
TRUNC_UPPER = 2.0


def trunc_normal_bounds(
    lower: float = TRUNC_LOWER, upper: float = TRUNC_UPPER
) -> tuple[float, float]:
    """(a, b) = (erf(lower/sqrt2), erf(upper/sqrt2)): the uniform range the init draws from."""
    return math.erf(lower / math.sqrt(2.0)), math.erf(upper / math.sqrt(2.0))


def trunc_normal_compensation(lower: float = TRUNC_LOWER, upper: float = TRUNC_UPPER) -> float:
    """sqrt of the variance of a unit normal truncated to [lower, upper] (0.8796... for +-2)."""
    a, b = trunc_normal_bounds(lower, upper)
    z = (b - a) / 2.0

    def phi(x: float) -> float:
        return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)

    v = 1.0 + (lower * phi(lower) - upper * phi(upper)) / z - ((phi(lower) - phi(upper)) / z) ** 2
    return math.sqrt(v)


def trunc_normal_from_uniform_np(
    u: np.ndarray, std: float, lower: float = TRUNC_LOWER, upper: float = TRUNC_UPPER
) -> np.ndarray:
    """hrm.md §2.1 in float64: u ~ U[a, b) -> clip(sqrt2*erfinv(u)*c, lower*c, upper*c)."""
    if std == 0:
        return np.zeros_like(u, dtype=np.float64)
    c = std / trunc_normal_compensation(lower, upper)
    w = math.sqrt(2.0) * erfinv(np.asarray(u, dtype=np.float64)) * c
    return np.clip(w, lower * c, upper * c)


def draw_trunc_normal(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    """One canonical trunc-normal leaf: uniforms in [a, b) (float64) -> float32 weights."""
    a, b = trunc_normal_bounds()
    u = rng.uniform(a, b, size=shape)
    return trunc_normal_from_uniform_np(u, std).astype(np.float32)
