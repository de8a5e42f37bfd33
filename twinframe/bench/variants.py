"""The model variants of a bench: torch eager, torch.compile and JAX jit, each as the train step
alone (on a batch already on the device: the engine's `bench_step`) and as the end-to-end
trainer step (host data, host logic, transfers, metric fetch: `Trainer.train_step`).

An engine offers the step alone through an optional method `bench_step(host) -> BenchStep`
(`twinframe.training.engine.BenchStep`); without it only the end-to-end step is timed."""

from __future__ import annotations

import logging
import time
from typing import Any

from twinframe.bench import env
from twinframe.bench.timing import TimeLimit, Variant, time_limit, warm_up
from twinframe.training.runner import Trainer

log = logging.getLogger(__name__)

EAGER, COMPILED, JIT = "torch eager", "torch.compile", "jax jit"


def _one_line(e: BaseException) -> str:
    s = f"{type(e).__name__}: {e}".strip().splitlines()
    return s[0][:300] if s else type(e).__name__


class ModelVariants:
    """Trainers of one model config pair and their variants (built lazily, warmed up once)."""

    def __init__(self, spec: Any, cfg: Any, run: Any, steps: int, warmup: int) -> None:
        self.spec, self.cfg, self.run = spec, cfg, run
        self.steps, self.warmup = steps, warmup
        self.trainers: list[Trainer] = []
        self.notes: dict[str, str] = {}
        self.jax_cost: dict[str, Any] = {}

    def _pair(self, framework: str, trainer: Trainer, mem: tuple) -> list[Variant]:
        """[step alone, end to end] of one trainer; both warmed up; peak memory after both."""
        reset, peak = mem
        B = self.run.batch_size
        sync = env.jax_sync if trainer.framework == "jax" else env.torch_sync
        out: list[Variant] = []
        reset()
        e2e = Variant(f"{framework} e2e", framework, "e2e", trainer.train_step,
                      lambda _: None, items=B, steps=self.steps)
        hook = getattr(trainer.engine, "bench_step", None)
        bs = hook(trainer.host) if hook is not None else None
        if bs is not None and bs.lower is not None:
            self._jax_compile(bs)  # before any call: a real compile, not a cache hit
        t0 = time.perf_counter()
        trainer.train_step()  # first call: compiles (JAX, torch.compile)
        first = time.perf_counter() - t0
        if bs is not None:
            e2e.flops = bs.flops
            step = Variant(f"{framework} step", framework, "step", bs.run, sync, items=B,
                           flops=bs.flops, steps=self.steps)
            step.call(1)
            warm_up(step, self.warmup)
            out.append(step)
        warm_up(e2e, self.warmup)
        per_call = (e2e.warmup_s or 0.0) / self.warmup if self.warmup else 0.0
        e2e.warmup_s = first + (e2e.warmup_s or 0.0)
        if framework == COMPILED:  # the first call's excess over a warm call
            e2e.compile_s = max(first - per_call, 0.0)
            for v in out:
                v.compile_s = e2e.compile_s
        out.append(e2e)
        pk = peak()
        for v in out:
            v.peak_memory_bytes = pk
        if framework == JIT and self.jax_cost.get("compile_s") is not None:
            e2e.compile_s = self.jax_cost["compile_s"]
            for v in out:
                v.compile_s = self.jax_cost["compile_s"]
        return out

    def _jax_compile(self, bs: Any) -> None:
        """AOT lower + compile of the step (timed) and XLA's cost analysis of it (of
        `bs.lower_for_cost()` where given: loops unrolled, since XLA counts a loop body once)."""
        t0 = time.perf_counter()
        compiled = bs.lower().compile()
        self.jax_cost["compile_s"] = time.perf_counter() - t0
        try:
            if bs.lower_for_cost is not None:
                compiled = bs.lower_for_cost().compile()
            ca = compiled.cost_analysis()
            ca = ca[0] if isinstance(ca, list | tuple) else ca
            self.jax_cost["xla_flops"] = float(ca.get("flops", 0.0)) if ca else None
            self.jax_cost["xla_bytes_accessed"] = (float(ca.get("bytes accessed", 0.0))
                                                   if ca else None)
        except Exception as e:  # cost analysis is best effort on some backends
            self.jax_cost["xla_flops"] = None
            self.notes["cost_analysis"] = _one_line(e)

    def torch_eager(self) -> list[Variant]:
        tr = Trainer(self.spec, self.cfg, self.run, "torch")
        self.trainers.append(tr)
        return self._pair(EAGER, tr, (env.torch_reset_peak, env.torch_peak))

    def torch_compiled(self, limit_s: float | None) -> list[Variant]:
        """torch.compile of the engine's module (`nn.Module.compile`, in place); a failure or a
        first step over `limit_s` is recorded in `notes` and the variant left out."""
        tr = Trainer(self.spec, self.cfg, self.run, "torch")
        try:
            tr.engine.model.compile()
            with time_limit(limit_s):
                vs = self._pair(COMPILED, tr, (env.torch_reset_peak, env.torch_peak))
        except Exception as e:  # TimeLimit may come back wrapped (InductorError)
            if isinstance(e, TimeLimit) or "TimeLimit" in _one_line(e):
                self.notes[COMPILED] = (f"not measured: the first compiled step was still "
                                        f"compiling after {limit_s:g} s (--compile-limit)")
            else:
                self.notes[COMPILED] = f"does not compile here: {_one_line(e)}"
            log.debug("torch.compile failed", exc_info=True)
            tr.close()
            return []
        self.trainers.append(tr)
        self.notes[COMPILED] = "compiled"
        return vs

    def jax_jit(self) -> list[Variant]:
        tr = Trainer(self.spec, self.cfg, self.run, "jax")
        self.trainers.append(tr)
        return self._pair(JIT, tr, (lambda: None, env.jax_peak))

    def close(self) -> None:
        for tr in self.trainers:
            tr.close()
