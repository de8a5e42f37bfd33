"""One host driving engines: the `Trainer` (one engine; what `twinframe train` runs) and the
`Lockstep` runner (both engines on one host; the L5 curve and every lockstep parity level).

The host's outputs come from engines[0] (torch in lockstep), so both engines see the same data
stream even after a decision differs; each difference is counted as a mismatch.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from twinframe.contract import Engine, Host, Record, StateDict, TrainState
from twinframe.errors import CheckpointError

if TYPE_CHECKING:
    from twinframe.contract import ModelSpec


def make_engine(spec: ModelSpec, cfg: Any, run: Any, framework: str,
                state: StateDict | None = None) -> Engine:
    """spec's engine of `framework`, starting from torch-layout weights `state` (default: the
    canonical init of run.seed) with a fresh optimizer."""
    try:
        factory = spec.engines[framework]
    except KeyError:
        raise CheckpointError(f"unknown framework {framework!r} (have "
                              f"{', '.join(spec.engines)})") from None
    return factory(spec, cfg, run, state)


class Trainer:
    """Host + one engine. `train_step()` returns the step's log record."""

    def __init__(self, spec: ModelSpec, cfg: Any, run: Any, framework: str,
                 host: Host | None = None) -> None:
        spec.check_trainable(cfg, run)
        self.spec, self.cfg, self.run, self.framework = spec, cfg, run, framework
        self.host = spec.make_host(cfg, run) if host is None else host
        self.engine = make_engine(spec, cfg, run, framework)

    @property
    def t(self) -> int:
        return self.host.t

    def train_step(self) -> Record:
        return self.host.step([self.engine]).records[0]

    def export_state(self) -> TrainState:
        """Full train state in this framework's layout (+ host state and both configs)."""
        return {**self.engine.export_state(),
                "host": json.loads(json.dumps(self.host.state_dict())),
                "config": self.cfg.to_dict(), "run": self.run.to_dict(),
                "framework": self.framework, "model_name": self.spec.name,
                "runtime": self.runtime()}

    def runtime(self) -> dict[str, Any]:
        """The engine's `runtime()` (library versions, device, threads): recorded in
        checkpoints, compared on resume."""
        fn = getattr(self.engine, "runtime", None)
        return fn() if fn is not None else {}

    def import_state(self, state: TrainState) -> None:
        self.engine.import_state(state)
        self.host.load_state_dict(state["host"])

    def params_torch_layout(self) -> StateDict:
        return self.engine.params_torch_layout()

    def evaluate(self, n: int) -> dict[str, Any]:
        if self.spec.evaluate is None:
            return {}
        return self.spec.evaluate(self.engine, self.cfg, self.run, n)

    def close(self) -> None:
        self.host.close()


class Lockstep:
    """Both engines on one host, same data and injected noise every step."""

    def __init__(self, spec: ModelSpec, cfg: Any, run: Any, host: Host | None = None,
                 state: StateDict | None = None) -> None:
        spec.check_trainable(cfg, run)
        self.spec = spec
        self.host = spec.make_host(cfg, run) if host is None else host
        self.engines: list[Engine] = [make_engine(spec, cfg, run, fw, state)
                                      for fw in ("torch", "jax")]
        self.mismatches = 0

    def step(self) -> tuple[Record, Record, str]:
        res = self.host.step(self.engines)
        self.mismatches += res.mismatches
        return res.records[0], res.records[1], res.note

    def params(self) -> tuple[StateDict, StateDict]:
        return self.engines[0].params_torch_layout(), self.engines[1].params_torch_layout()

    def close(self) -> None:
        self.host.close()

