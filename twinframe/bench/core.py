"""`bench(spec, options)`: one process, torch eager / torch.compile / JAX jit of one model, the
train step alone and the end-to-end trainer step, plus the matmul rate, timed in interleaved
rounds after a warm-up; returns everything as a JSON-able dict (`table.render` prints it)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from twinframe.bench import dots, env, matmul
from twinframe.bench.timing import Variant, interleaved, warm_up
from twinframe.bench.variants import COMPILED, EAGER, JIT, ModelVariants
from twinframe.errors import ConfigError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class BenchOptions:
    """What to run. `steps` calls per variant per round, `rounds` interleaved rounds (median),
    `warmup` untimed calls per variant after the first; `torch_compile` adds the torch.compile
    variant with its first step bounded by `compile_limit_s`; `matmul` adds the matmul rate;
    `dots` the rate of each framework on the step's own dot shapes (`bench.dots`)."""

    config: str = "tiny"
    batch: int | None = None
    dtype: str | None = None
    steps: int = 3
    rounds: int = 5
    warmup: int = 2
    torch_compile: bool = True
    compile_limit_s: float | None = 600.0
    matmul: bool = True
    matmul_n: int | None = None  # one matmul size instead of the device's defaults (tests)
    dots: bool = True
    dot_reps: int | None = None  # products per timed dot-shape call (tests: 1)
    frameworks: tuple[str, ...] = (EAGER, COMPILED, JIT)
    torch_threads: int | None = None  # torch.set_num_threads (default: torch's own choice)


def configs(spec: Any, opts: BenchOptions) -> tuple[Any, Any]:
    """The preset's configs with --batch and --dtype applied (a dtype only where the model has
    a compute dtype)."""
    cfg, run = spec.config(opts.config), spec.run_config(opts.config)
    if opts.batch is not None:
        run = run.replace(batch_size=opts.batch)
    if opts.dtype is not None:
        if not hasattr(cfg, "compute_dtype"):
            raise ConfigError(f"{spec.name} has no compute dtype to set (--dtype)")
        cfg = cfg.replace(compute_dtype=opts.dtype)
    return cfg, run


def bench(spec: Any, opts: BenchOptions) -> dict[str, Any]:
    """Run the bench (see the module docstring); the result holds every round's time."""
    cfg, run = configs(spec, opts)
    if opts.torch_threads:
        import torch

        torch.set_num_threads(opts.torch_threads)
    environment = env.environment()
    load_before = env.load()
    mv = ModelVariants(spec, cfg, run, opts.steps, opts.warmup)
    variants: list[Variant] = []
    try:
        if EAGER in opts.frameworks:
            variants += mv.torch_eager()
        if COMPILED in opts.frameworks:
            if opts.torch_compile:
                variants += mv.torch_compiled(opts.compile_limit_s)
            else:
                mv.notes[COMPILED] = "not run (--no-compile)"
        if JIT in opts.frameworks:
            variants += mv.jax_jit()
        on_gpu = environment["jax_backend"] != "cpu"
        hook = next((getattr(t.engine, "bench_dots", None) for t in mv.trainers
                     if hasattr(t.engine, "bench_dots")), None)
        if opts.dots and hook is not None:
            dvs = dots.variants(hook(), getattr(cfg, "compute_dtype", "float32"), on_gpu,
                                opts.dot_reps)
            for v in dvs:
                warm_up(v, 1)
            variants += dvs
        if opts.matmul:
            mms = matmul.variants(on_gpu, size=opts.matmul_n)
            for v in mms:
                warm_up(v, 1)
            variants += mms
        interleaved(variants, opts.rounds)
    finally:
        mv.close()
    return result(spec, cfg, run, opts, variants, mv, environment, load_before)


def result(spec: Any, cfg: Any, run: Any, opts: BenchOptions, variants: list[Variant],
           mv: ModelVariants, environment: dict[str, Any], load_before: dict[str, Any]
           ) -> dict[str, Any]:
    """The JSON-able result: variants, ratios, FLOPs, matmul fraction, the dot-shape ceilings
    (and the step's fraction of them), host share."""
    rows = [v.summary() for v in variants]
    model_rows = [r for r in rows if r["kind"] in ("step", "e2e")]
    by = {(r["framework"], r["kind"]): r for r in model_rows}
    mm = [r for r in rows if r["kind"] == "matmul"]
    best_mm = max((r["gflop_per_s"] for r in mm if r.get("gflop_per_s")), default=None)
    ceil = dots.ceilings(rows)
    best_ceil = max((c["gflop_per_s"] for c in ceil.values()), default=None)
    for c in ceil.values():
        c["fraction_of_best_matmul"] = c["gflop_per_s"] / best_mm if best_mm else None
    for r in model_rows:
        base = by.get((EAGER, r["kind"]))
        r["speedup_vs_torch_eager"] = (base["median_s"] / r["median_s"]
                                       if base and r["median_s"] else None)
        if best_mm and r.get("gflop_per_s"):
            r["fraction_of_best_matmul"] = r["gflop_per_s"] / best_mm
        own = ceil.get("jax" if r["framework"] == JIT else "torch")
        if own and r.get("gflop_per_s"):
            r["fraction_of_own_dot_ceiling"] = r["gflop_per_s"] / own["gflop_per_s"]
            r["fraction_of_best_dot_ceiling"] = r["gflop_per_s"] / best_ceil
    host_share = {}
    for fw in {r["framework"] for r in model_rows}:
        step, e2e = by.get((fw, "step")), by.get((fw, "e2e"))
        if step and e2e and e2e["median_s"]:
            host_share[fw] = max(e2e["median_s"] - step["median_s"], 0.0) / e2e["median_s"]
    flops = {"analytic_per_step": next((r["flops"] for r in model_rows if r["flops"]),
                                   None),
             **{k: v for k, v in mv.jax_cost.items() if k != "compile_s"}}
    if flops.get("analytic_per_step") and flops.get("xla_flops"):
        flops["xla_over_analytic"] = flops["xla_flops"] / flops["analytic_per_step"]
    return {
        "model": spec.name, "preset": opts.config, "config": cfg.to_dict(), "run": run.to_dict(),
        "options": dataclasses.asdict(opts), "batch": run.batch_size,
        "variants": rows, "notes": mv.notes, "flops": flops,
        "best_matmul_gflop_per_s": best_mm, "dot_ceiling": ceil, "host_share": host_share,
        "jax_compile_s": mv.jax_cost.get("compile_s"),
        "max_rss_bytes": env.max_rss_bytes(),
        "environment": environment, "device": env.device_label(environment),
        "load": {"before": load_before, "after": env.load()},
    }
