"""name -> ModelSpec; the only place that knows every model."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from twinframe.errors import TwinframeError
from twinframe.models.base import FrozenConfig


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What the generic machinery (convert, check, report, train) needs of a model."""

    name: str
    config_cls: type[FrozenConfig]
    presets: Mapping[str, FrozenConfig]
    table: Callable[[Any], Any]
    canonical_init: Callable[[Any], dict]
    parity_levels: Callable[[Any], dict[str, Callable[[], list]]]
    curve: Any = None  # lockstep-curve adapter (see parity.checks.run_curve), None if absent
    trainer: Any = None  # trainer(cfg, framework) -> object with train_step/export/import_state
    extra_curve_lrs: tuple[float, ...] = ()  # L5 curves also run at these learning rates

    def config(self, preset_or_dict: str | dict) -> FrozenConfig:
        if isinstance(preset_or_dict, dict):
            return self.config_cls.from_dict(preset_or_dict)
        try:
            return self.presets[preset_or_dict]
        except KeyError:
            raise TwinframeError(
                f"{self.name}: unknown config '{preset_or_dict}' (have {', '.join(self.presets)})"
            ) from None


def _hrm() -> ModelSpec:
    from twinframe.models import hrm
    from twinframe.parity import hrm as parity_hrm
    from twinframe.training import hrm as training_hrm

    return ModelSpec("hrm", hrm.HRMConfig, hrm.PRESETS, parity_hrm.table, hrm.canonical_init,
                     parity_hrm.levels, curve=training_hrm.HRMLockstep,
                     trainer=training_hrm.HRMTrainer, extra_curve_lrs=(1e-3,))


def _altlas() -> ModelSpec:
    from twinframe.models import altlas
    from twinframe.parity import altlas as parity_altlas
    from twinframe.training import altlas as training_altlas

    return ModelSpec("altlas", altlas.AltLASConfig, altlas.PRESETS, parity_altlas.table,
                     altlas.canonical_init, parity_altlas.levels,
                     curve=training_altlas.AltLASLockstep, trainer=training_altlas.AltLASTrainer)


_FACTORIES: dict[str, Callable[[], ModelSpec]] = {"hrm": _hrm, "altlas": _altlas}
MODELS = tuple(_FACTORIES)


def get(name: str) -> ModelSpec:
    try:
        return _FACTORIES[name]()
    except KeyError:
        raise TwinframeError(f"unknown model '{name}' (have {', '.join(MODELS)})") from None
