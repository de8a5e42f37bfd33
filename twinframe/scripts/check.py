"""`twinframe check MODEL [--config tiny] [--levels L0,L1,...]`: parity table, exit 1 on failure."""

from __future__ import annotations

import argparse

from twinframe.parity.compare import Record


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a registered model name")
    p.add_argument("--config", default=None,
                   help="config preset (default: the model's check preset, tiny for most)")
    p.add_argument("--levels", default="", help="comma-separated subset, e.g. L0,L1 (default all)")
    p.add_argument("--curve", type=int, default=0, metavar="N",
                   help="also run an N-step lockstep training curve (L5)")
    p.add_argument("--failures-only", action="store_true", help="print only failing rows")


def format_table(records: list[Record], failures_only: bool = False) -> str:
    """Fixed-width table: level, tensor, max abs err, max rel err, tolerance, pass/fail."""
    rows = [r for r in records if not (failures_only and r.passed)]
    width = max([len(r.name) for r in rows] + [6])
    head = (f"{'level':<6} {'tensor':<{width}} {'max_abs':>10} {'max_rel':>10}  "
            f"{'tolerance':<32} result")
    lines = [head, "-" * len(head)]
    for r in rows:
        verdict = "pass" if r.passed else "FAIL"
        note = f"  ({r.note})" if r.note else ""
        lines.append(f"{r.level:<6} {r.name:<{width}} {r.max_abs:>10.3e} {r.max_rel:>10.3e}  "
                     f"{r.tolerance:<32} {verdict}{note}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    from twinframe import jax_cache, registry
    from twinframe.parity import checks

    jax_cache.enable()
    spec = registry.get(args.model)
    preset = args.config or spec.check_preset
    cfg, run = spec.config(preset), spec.run_config(preset)
    only = {s.strip() for s in args.levels.split(",") if s.strip()} or None
    records = checks.run(spec, cfg, run, only=only, progress=lambda m: print(m, flush=True))
    if args.curve:
        records += checks.run_curve(spec, cfg, run, args.curve).records
    print(format_table(records, args.failures_only))
    failed = [r for r in records if not r.passed]
    print(f"\n{args.model} [{preset}]: {len(records) - len(failed)}/{len(records)} passed")
    return 1 if failed else 0
