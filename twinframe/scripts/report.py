"""`twinframe report [MODEL ...]`: every check on the tiny configs -> report/index.html + .json."""

from __future__ import annotations

import argparse
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="*", help="models to include (default: all registered)")
    p.add_argument("--config", default="tiny", help="config preset (default tiny)")
    p.add_argument("--out", default="report", help="output directory (default report/)")
    p.add_argument("--curve", type=int, default=50, metavar="N",
                   help="lockstep training-curve steps per model (0 = skip; default 50)")


def main(args: argparse.Namespace) -> int:
    from twinframe import registry
    from twinframe.parity import checks, report

    t0 = time.perf_counter()
    names = args.models or list(registry.MODELS)
    results = []
    for name in names:
        spec = registry.get(name)
        cfg = spec.config(args.config)
        print(f"[{name}] parity checks ({args.config}) ...", flush=True)
        t1 = time.perf_counter()
        records = checks.run(spec, cfg, progress=lambda m: print("  " + m, flush=True))
        curves = {}
        if args.curve and spec.curve is not None:
            print(f"[{name}] {args.curve}-step lockstep training curve ...", flush=True)
            curve = checks.run_curve(spec, cfg, args.curve)
            records += curve.records
            curves = curve.curves
        results.append(report.ModelResult(name, args.config, cfg.to_dict(), records, curves,
                                          time.perf_counter() - t1))
        failed = sum(not r.passed for r in records)
        print(f"[{name}] {len(records) - failed}/{len(records)} passed", flush=True)
    path = report.write(args.out, results, report.environment(), time.perf_counter() - t0)
    ok = all(r.passed for r in results)
    print(f"report: {path} ({'all checks passed' if ok else 'SOME CHECKS FAILED'}, "
          f"{time.perf_counter() - t0:.1f}s)")
    return 0 if ok else 1
