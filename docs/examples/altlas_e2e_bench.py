# ruff: noqa: T201  (a benchmark script: its output is the table)
"""End-to-end AltLAS `Trainer.train_step()` (generation + sandbox/scoring + update), one process,
interleaved rounds: torch eager, JAX jit with main's LSTM layer (scan autodiff, "jax_before") and
JAX jit as in the library ("jax_after"). How docs/performance_altlas.md was measured, until
`twinframe bench` takes a batch option (issue 13 item 1).

usage: python docs/examples/altlas_e2e_bench.py B STEPS ROUNDS    (e.g. 32 10 4)
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import jax

from twinframe.functional import altlas as f
from twinframe.registry import get
from twinframe.training.runner import Trainer

PARTS = ("generate_s", "execute_s", "learn_s")


def scan_autodiff_layer(p, x, h0, c0, cell):
    """main's LSTM branch of `rnn_layer`: autodiff through lax.scan of `lstm_cell`."""
    del cell
    xw = jax.numpy.einsum("tbi,ig->tbg", x, p["w_ih"])
    b = p["b_ih"] + p["b_hh"]

    def body(carry, xw_t):
        h, c = f.lstm_cell(xw_t, carry[0], carry[1], p["w_hh"], b)
        return (h, c), h

    (h, c), y = jax.lax.scan(body, (h0, c0), xw)
    return y, h, c


def main(batch: int, steps: int, rounds: int) -> None:
    spec = get("altlas")
    preset = spec.presets["default"]
    cfg, run = preset.model, preset.run.replace(batch_size=batch)
    trainers = {"torch": Trainer(spec, cfg, run, "torch"),
                # another run config -> its own compiled train step (the step cache is per config)
                "jax_before": Trainer(spec, cfg, run.replace(checkpoint_every=7), "jax"),
                "jax_after": Trainer(spec, cfg, run, "jax")}
    library_layer = f.rnn_layer
    for name, tr in trainers.items():  # compiles happen here, with the layer of that trainer
        f.rnn_layer = scan_autodiff_layer if name == "jax_before" else library_layer
        for _ in range(3):
            tr.train_step()
    f.rnn_layer = library_layer
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
    main(*(int(a) for a in sys.argv[1:4]))
