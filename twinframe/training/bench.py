"""Side-by-side speed of the torch (eager) and JAX (jit) trainers of one model, one process.

Both trainers are warmed up (JAX compiles), then timed in interleaved rounds of `steps` train
steps each; the median round gives steps/s. Reported as a JAX/torch ratio."""

from __future__ import annotations

import platform
import statistics
import time
from typing import Any

from twinframe.contract import ModelSpec
from twinframe.training.runner import Trainer


def _round(trainer: Trainer, steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    return time.perf_counter() - t0


def bench(spec: ModelSpec, cfg: Any, run: Any, steps: int = 20, rounds: int = 3,
          warmup: int = 3) -> dict[str, Any]:
    import jax
    import torch

    trainers = {fw: Trainer(spec, cfg, run, fw) for fw in ("torch", "jax")}
    compile_s = {}
    for fw, tr in trainers.items():
        compile_s[fw] = _round(tr, warmup)
    times: dict[str, list[float]] = {fw: [] for fw in trainers}
    for _ in range(rounds):
        for fw, tr in trainers.items():
            times[fw].append(_round(tr, steps))
    for tr in trainers.values():
        tr.close()
    per_step = {fw: statistics.median(ts) / steps for fw, ts in times.items()}
    batch = run.batch_size
    return {
        "model": spec.name,
        "config": cfg.to_dict(), "run": run.to_dict(),
        "steps_per_round": steps,
        "rounds": rounds,
        "warmup_s": compile_s,
        "step_s": per_step,
        "steps_per_s": {fw: 1.0 / s for fw, s in per_step.items()},
        "items_per_s": {fw: batch / s for fw, s in per_step.items()},
        "jax_over_torch": per_step["torch"] / per_step["jax"],
        "environment": {"jax_devices": [str(d) for d in jax.devices()],
                        "torch_cuda": torch.cuda.is_available(),
                        "torch_threads": torch.get_num_threads(),
                        "machine": platform.machine(), "python": platform.python_version()},
    }
