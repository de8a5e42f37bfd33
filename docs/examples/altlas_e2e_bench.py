# ruff: noqa: T201  (a benchmark script: its output is the table)
"""End-to-end AltLAS `Trainer.train_step()` (generation + sandbox/scoring + update), one process,
interleaved rounds: torch eager, JAX jit with `twinframe/functional/altlas.py` as of git revision
BEFORE ("jax_before", loaded from `git show`) and JAX jit as in the working tree ("jax_after").
How docs/performance_altlas.md was measured, until `twinframe bench` takes a batch option (issue
13 item 1).

usage: python docs/examples/altlas_e2e_bench.py B STEPS ROUNDS [BEFORE]   (e.g. 32 10 4 main)
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import subprocess
import sys
import time
import types

from twinframe.registry import get
from twinframe.training.runner import Trainer

PARTS = ("generate_s", "execute_s", "learn_s")


def functional_at(rev: str) -> types.ModuleType:
    """`twinframe.functional.altlas` as of git revision `rev`, as a separate module."""
    src = subprocess.run(["git", "show", f"{rev}:twinframe/functional/altlas.py"], check=True,
                         capture_output=True, text=True).stdout
    mod = types.ModuleType(f"altlas_functional_{rev}")
    sys.modules[mod.__name__] = mod
    exec(compile(src, f"{rev}:twinframe/functional/altlas.py", "exec"), mod.__dict__)  # noqa: S102
    return mod


def main(batch: int, steps: int, rounds: int, before: str = "main") -> None:
    spec = get("altlas")
    preset = spec.presets["default"]
    cfg, run = preset.model, preset.run.replace(batch_size=batch)
    old = functional_at(before)
    old_spec = dataclasses.replace(spec, make_train_step=old.make_train_step)
    trainers = {"torch": Trainer(spec, cfg, run, "torch"),
                "jax_before": Trainer(old_spec, cfg, run, "jax"),
                "jax_after": Trainer(spec, cfg, run, "jax")}
    trainers["jax_before"].engine.fns = old.jitted(cfg)  # its generate
    for tr in trainers.values():
        for _ in range(3):
            tr.train_step()
    wall = {k: [] for k in trainers}
    split = {k: {q: [] for q in PARTS} for k in trainers}
    loads = []
    for _ in range(rounds):
        for name, tr in trainers.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                rec = tr.train_step()
                for q in PARTS:
                    split[name][q].append(rec[q])
            wall[name].append(time.perf_counter() - t0)
        loads.append(os.getloadavg()[0])
    for tr in trainers.values():
        tr.close()
    step = {k: 1e3 * statistics.median(v) / steps for k, v in wall.items()}
    med = {k: {q: 1e3 * statistics.median(v) for q, v in s.items()} for k, s in split.items()}
    print(f"B={batch}, {rounds} rounds of {steps} steps, load {min(loads):.1f}-{max(loads):.1f}")
    for k, m in med.items():
        model = m["generate_s"] + m["learn_s"]
        print(f"{k:10s} step {step[k]:7.1f} ms | generate {m['generate_s']:.1f} host "
              f"{m['execute_s']:.1f} update {m['learn_s']:.1f} | generate+update {model:.1f}")
    mt = med["torch"]
    for k in ("jax_before", "jax_after"):
        mj = med[k]
        model = (mt["generate_s"] + mt["learn_s"]) / (mj["generate_s"] + mj["learn_s"])
        print(f"{k}: end to end {step['torch'] / step[k]:.2f}x, generate+update {model:.2f}x")
    host = mt["execute_s"]
    print(f"host share of the torch step {host / step['torch']:.2f}: end-to-end ratio <= "
          f"{step['torch'] / host:.2f}x even with a free JAX model")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:4]), *sys.argv[4:5])
