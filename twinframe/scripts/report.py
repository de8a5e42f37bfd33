"""`twinframe report [MODEL ...]`: every check on each model's check preset (tiny unless it
declares another) -> report/index.html + .json."""

from __future__ import annotations

import argparse
import time

DEFAULT_CURVE = 50


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="*", help="models to include (default: all registered)")
    p.add_argument("--config", default=None,
                   help="config preset (default: each model's check preset, tiny for most)")
    p.add_argument("--out", default="report", help="output directory (default report/)")
    p.add_argument("--curve", type=int, default=None, metavar="N",
                   help="lockstep training-curve steps per model (0 = skip; default: the "
                   f"model's spec length where it fixes one, else {DEFAULT_CURVE})")
    p.add_argument("--switch", type=int, default=20, metavar="N",
                   help="mid-training framework switch: N steps before and after (0 = skip)")


def main(args: argparse.Namespace) -> int:
    from twinframe import jax_cache, registry
    from twinframe.parity import checks, report

    jax_cache.enable()
    t0 = time.perf_counter()
    names = args.models or list(registry.MODELS)
    results = []
    for name in names:
        spec = registry.get(name)
        preset = args.config or spec.check_preset
        cfg, run = spec.config(preset), spec.run_config(preset)
        print(f"[{name}] parity checks ({preset}) ...", flush=True)
        t1 = time.perf_counter()
        records = checks.run(spec, cfg, run, progress=lambda m: print("  " + m, flush=True))
        curves: dict = {}
        results_l5 = []
        n_curve = args.curve if args.curve is not None else (spec.curve.steps or DEFAULT_CURVE)
        if n_curve:
            for lr in (run.lr, *spec.curve.extra_lrs):
                label = f"@lr{lr:g}"
                print(f"[{name}] {n_curve}-step lockstep training curve, lr {lr:g} ...",
                      flush=True)
                results_l5.append(
                    checks.run_curve(spec, cfg, run.replace(lr=lr), n_curve, label))
        if args.switch:
            for src, dst in (("torch", "jax"), ("jax", "torch")):
                print(f"[{name}] mid-training switch {src} -> {dst} ...", flush=True)
                results_l5.append(checks.run_switch(spec, cfg, run, args.switch, src, dst))
        for res in results_l5:
            records += res.records
            curves.update(res.curves)
        images = {}
        if spec.visualize is not None and results_l5 and results_l5[0].states:
            for fw, state in results_l5[0].states.items():
                for caption, png in spec.visualize(cfg, run, state).items():
                    images[f"{fw} after the {n_curve}-step curve: {caption}"] = png
        results.append(report.ModelResult(name, preset, {**cfg.to_dict(), **run.to_dict()},
                                          records, curves,
                                          time.perf_counter() - t1, images))
        failed = sum(not r.passed for r in records)
        print(f"[{name}] {len(records) - failed}/{len(records)} passed", flush=True)
    path = report.write(args.out, results, report.environment(), time.perf_counter() - t0)
    ok = all(r.passed for r in results)
    print(f"report: {path} ({'all checks passed' if ok else 'SOME CHECKS FAILED'}, "
          f"{time.perf_counter() - t0:.1f}s)")
    return 0 if ok else 1
