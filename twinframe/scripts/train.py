"""`twinframe train MODEL --config tiny --steps N --framework jax|torch [--resume DIR]
[--on-nonfinite stop|skip] [--unsafe-no-sandbox]`."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a registered model name")
    p.add_argument("--config", default="tiny", help="config preset (default tiny)")
    p.add_argument("--steps", type=int, default=100, help="steps to run in this invocation")
    p.add_argument("--framework", choices=["jax", "torch"], default="jax")
    p.add_argument("--out", default="checkpoints",
                   help="checkpoint directory (default checkpoints/)")
    p.add_argument("--resume", default=None, metavar="DIR",
                   help="continue from the newest checkpoint in DIR (either framework's)")
    p.add_argument("--every", type=int, default=None, help="checkpoint every K steps")
    p.add_argument("--keep", type=int, default=3, help="checkpoints to keep (default 3)")
    p.add_argument("--lr", type=float, default=None, help="override the config's learning rate")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--eval", type=int, default=0, metavar="N",
                   help="after training, evaluate on N puzzles/tasks per difficulty")
    p.add_argument("--on-nonfinite", choices=["stop", "skip"], default="stop",
                   help="a NaN/Inf loss or gradient: stop the run naming the step and the first "
                        "non-finite tensor (default), or skip that step's update")
    p.add_argument("--unsafe-no-sandbox", action="store_true",
                   help="models that run generated programs: run them WITHOUT OS isolation "
                        "where the sandbox (bubblewrap) is unavailable (logged, shown, recorded)")


def main(args: argparse.Namespace) -> int:
    from twinframe import jax_cache, registry
    from twinframe.errors import ConfigError
    from twinframe.training.loop import train

    jax_cache.enable()
    spec = registry.get(args.model)
    cfg, run = spec.config(args.config), spec.run_config(args.config)
    if args.lr is not None:
        run = run.replace(lr=args.lr)
    if args.unsafe_no_sandbox:
        if "unsafe_no_sandbox" not in run.to_dict():
            raise ConfigError(f"model '{spec.name}' runs no generated programs: "
                              "--unsafe-no-sandbox does not apply")
        run = run.replace(unsafe_no_sandbox=True)
    trainer, records = train(spec, cfg, run, args.framework, args.steps, args.out, args.every,
                             args.keep, args.resume, show_progress=not args.no_progress,
                             on_nonfinite=args.on_nonfinite)
    if records:
        last = records[-1]
        timed = records[1:] or records  # the first step of a process includes compilation
        mean = sum(r["step_time_s"] for r in timed) / len(timed)
        print(f"{args.model}/{args.framework}: step {trainer.t}, loss {last['loss']:.4f}, "
              f"{1.0 / mean:.1f} steps/s (mean after the first step), "
              f"checkpoints in {args.out}/")
    if spec.visualize is not None and records:
        _write_pictures(spec, cfg, run, trainer, args.out)
    if args.eval and spec.evaluate is not None:
        import json
        import logging

        results = trainer.evaluate(args.eval)
        logging.getLogger("twinframe.train").info("eval %s", json.dumps(results))
        for name, m in results.items():
            shown = {k: round(v, 4) for k, v in m.items() if isinstance(v, float)}
            print(f"eval {name}: {shown}")
    trainer.close()
    return 0


def _write_pictures(spec, cfg, run, trainer, out: str) -> None:
    """The model's pictures of the weights reached (`ModelSpec.visualize`) ->
    out/<model>-step<t>[-<i>].png."""
    from pathlib import Path

    from twinframe.store.io import atomic_write

    state = trainer.engine.export_state()["model"]
    if trainer.framework != "torch":
        state = spec.layout(cfg).table.tree_to_torch(state)
    for i, (caption, png) in enumerate(spec.visualize(cfg, run, state).items()):
        path = Path(out) / f"{spec.name}-step{trainer.t}{f'-{i}' if i else ''}.png"
        atomic_write(path, lambda p, png=png: p.write_bytes(png))
        print(f"wrote {path}: {caption}")
