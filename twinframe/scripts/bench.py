"""`twinframe bench MODEL [--config tiny] [--batch N] [--dtype D] [--json OUT]`: torch eager,
torch.compile and JAX jit side by side in one process (see `twinframe.bench`)."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model name")
    p.add_argument("--config", default="tiny", help="config preset (default tiny)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default: the preset's)")
    p.add_argument("--dtype", default=None, choices=("float32", "bfloat16"),
                   help="compute dtype (models that have one; default: the preset's)")
    p.add_argument("--steps", type=int, default=3, help="calls per variant per round")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median taken)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls after the first")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--compile-limit", type=float, default=600.0,
                   help="seconds allowed for torch.compile's first step (default 600)")
    p.add_argument("--no-matmul", action="store_true", help="skip the matmul-rate reference")
    p.add_argument("--no-dots", action="store_true",
                   help="skip the rate on the step's own dot shapes")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--json", default=None, metavar="OUT", help="write the full result here")


def main(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from twinframe import registry
    from twinframe.bench import BenchOptions, bench, table
    from twinframe.store.io import atomic_write

    opts = BenchOptions(config=args.config, batch=args.batch, dtype=args.dtype,
                        steps=args.steps, rounds=args.rounds, warmup=args.warmup,
                        torch_compile=not args.no_compile, compile_limit_s=args.compile_limit,
                        matmul=not args.no_matmul, dots=not args.no_dots,
                        torch_threads=args.torch_threads)
    r = bench(registry.get(args.model), opts)
    print(table.render(r))
    if args.json:
        atomic_write(Path(args.json), lambda p: p.write_text(json.dumps(r, indent=1)))
    return 0
