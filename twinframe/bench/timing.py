"""Variants and interleaved timing: every round times each variant for `steps` calls (device
synchronised once at the end of the calls), in an order rotated per round; the median over
rounds is the figure. Warm-up (compiles) happens before and is timed separately."""

from __future__ import annotations

import dataclasses
import logging
import signal
import statistics
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Variant:
    """One timed thing: `fn()` does one call (one train step, one matmul), `sync(out)` waits for
    the device. `items` per call (batch size), `flops` per call (None when unknown)."""

    name: str
    framework: str  # "torch eager" | "torch.compile" | "jax jit"
    kind: str  # "step" (train step alone) | "e2e" (trainer step) | "matmul"
    fn: Callable[[], Any]
    sync: Callable[[Any], None]
    items: int = 1
    flops: float | None = None
    steps: int = 1  # calls per timed round
    warmup_s: float | None = None
    compile_s: float | None = None
    peak_memory_bytes: int | None = None
    times: list[float] = dataclasses.field(default_factory=list)  # per-call seconds per round
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    def call(self, n: int) -> float:
        """n calls, synchronised at the end; wall seconds."""
        t0 = time.perf_counter()
        out = None
        for _ in range(n):
            out = self.fn()
        self.sync(out)
        return time.perf_counter() - t0

    @property
    def median_s(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    def summary(self) -> dict[str, Any]:
        s = self.median_s
        out = {"name": self.name, "framework": self.framework, "kind": self.kind,
               "steps_per_round": self.steps, "round_s_per_call": self.times,
               "median_s": s, "min_s": min(self.times) if self.times else None,
               "warmup_s": self.warmup_s, "compile_s": self.compile_s,
               "peak_memory_bytes": self.peak_memory_bytes, "items": self.items,
               "flops": self.flops, **self.info}
        if s:
            out["items_per_s"] = self.items / s
            out["gflop_per_s"] = self.flops / s / 1e9 if self.flops else None
        return out


def warm_up(v: Variant, n: int) -> None:
    """n untimed calls (compiles happen here); `warmup_s` is their wall time."""
    v.warmup_s = v.call(n) if n > 0 else 0.0


def interleaved(variants: list[Variant], rounds: int) -> None:
    """`rounds` rounds; round r starts at variant r mod len (rotation against order effects)."""
    for r in range(rounds):
        k = r % max(len(variants), 1)
        for v in variants[k:] + variants[:k]:
            v.times.append(v.call(v.steps) / v.steps)


class TimeLimit(Exception):
    """Raised inside `time_limit` when the limit passes."""


@contextmanager
def time_limit(seconds: float | None):
    """Raise `TimeLimit` in the main thread after `seconds` (SIGALRM; no limit elsewhere or when
    None). Used to bound torch.compile's first call."""
    import threading

    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, frame: Any) -> None:
        raise TimeLimit(f"over {seconds:g} s")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
