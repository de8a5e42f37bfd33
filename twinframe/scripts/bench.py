"""`twinframe bench MODEL [--config tiny] [--steps N]`: torch eager vs JAX jit, side by side."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model name")
    p.add_argument("--config", default="tiny", help="config preset (default tiny)")
    p.add_argument("--steps", type=int, default=20, help="train steps per timed round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median taken)")
    p.add_argument("--out", default="bench", help="directory for the JSON result")


def main(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from twinframe import jax_cache, registry
    from twinframe.store.io import atomic_write
    from twinframe.training.bench import bench

    jax_cache.enable()
    spec = registry.get(args.model)
    cfg, run = spec.config(args.config), spec.run_config(args.config)
    r = bench(spec, cfg, run, args.steps, args.rounds)
    for fw in ("torch", "jax"):
        print(f"{args.model}/{fw:5s}: {r['steps_per_s'][fw]:8.2f} steps/s  "
              f"{r['items_per_s'][fw]:9.1f} examples/s (batch {run.batch_size})  "
              f"(warmup {r['warmup_s'][fw]:.1f}s)")
    print(f"JAX jit / torch eager speed ratio: {r['jax_over_torch']:.2f}x "
          f"({r['environment']['jax_devices'][0]})")
    out = Path(args.out) / f"{args.model}-{args.config}.json"
    atomic_write(out, lambda p: p.write_text(json.dumps(r, indent=1)))
    return 0
