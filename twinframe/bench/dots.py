"""The matmul rate each framework reaches on a model's OWN dot shapes (the achievable ceiling of
its step at those shapes), measured in the same rounds as the steps: one variant per framework
and distinct shape, in the step's compute dtype (f32 products accumulate in f32; bf16 products
accumulate in f32 and return bf16, as the model's `linear` does).

An engine offers its step's shapes through an optional method `bench_dots() -> list` of items
with `names, batch, m, k, n, count` and `flops` (one occurrence), e.g. `models.hrm.Dot`."""

from __future__ import annotations

import math
from typing import Any

from twinframe.bench import env
from twinframe.bench.timing import Variant

MIN_SHARE = 0.005  # shapes below this share of the step's dot FLOPs are not timed


def label(dot: Any) -> str:
    b = f"{dot.batch}x" if dot.batch > 1 else ""
    return f"{b}[{dot.m},{dot.k}]x[{dot.k},{dot.n}]"


def variants(dots: list[Any], dtype: str, on_gpu: bool, reps: int | None = None
             ) -> list[Variant]:
    """torch and JAX variants of every shape with at least MIN_SHARE of the step's dot FLOPs,
    `reps` products per timed call (a few ms). Each pays its per-product cost as it would
    inside its step: torch eager one dispatched op per product (`steps=reps`); JAX one
    executable computing `reps` products of distinct operands (XLA cannot merge them), as
    the dots of a compiled step run without a Python dispatch each. `reps` fixes the count
    (tests: 1)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    total = sum(d.flops * d.count for d in dots) or 1.0
    # FLOPs per timed call (CPU: some 30-100 ms; GPU: under a ms), products per call at most
    # `cap` (JAX holds `reps` distinct operands per shape on the device)
    target, cap = (1e11, 8) if on_gpu else (5e9, 32)
    dev = env.torch_device()
    tdt, jdt = getattr(torch, dtype), getattr(jnp, dtype)

    def jmm(a: Any, b: Any) -> Any:
        return jnp.matmul(a, b, preferred_element_type=jnp.float32).astype(jdt)

    @jax.jit
    def jmany(as_: tuple, b: Any) -> tuple:
        return tuple(jmm(a, b) for a in as_)
    out = []
    for i, dot in enumerate(dots):
        share = dot.flops * dot.count / total
        if share < MIN_SHARE:
            continue
        rng = np.random.default_rng(i)
        lead = (dot.batch,) if dot.batch > 1 else ()
        a32 = rng.standard_normal(lead + (dot.m, dot.k), np.float32)
        b32 = rng.standard_normal(lead + (dot.k, dot.n), np.float32)
        ta, tb = (torch.from_numpy(x).to(dev, tdt) for x in (a32, b32))
        n = reps or max(1, min(cap, math.ceil(target / dot.flops)))
        jas = tuple(jnp.asarray(a32 + np.float32(r), jdt) for r in range(n))
        jb = jnp.asarray(b32, jdt)
        info = {"shape": label(dot), "products": list(dot.names), "count": dot.count,
                "share_of_step_dot_flops": share}
        tag = f"dot {label(dot)}"
        out.append(Variant(tag, "torch", "dot", lambda ta=ta, tb=tb: ta @ tb, env.torch_sync,
                           flops=dot.flops, steps=n, info={**info, "products_per_call": 1}))
        out.append(Variant(tag, "jax", "dot", lambda jas=jas, jb=jb: jmany(jas, jb),
                           env.jax_sync, flops=dot.flops * n,
                           info={**info, "products_per_call": n}))
    return out


def ceilings(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per framework ("torch", "jax"): the step's dot time at the measured per-shape medians
    (sum of count x median over the timed shapes) and the rate it implies (the ceiling)."""
    out: dict[str, dict[str, Any]] = {}
    for fw in ("torch", "jax"):
        mine = [r for r in rows if r["kind"] == "dot" and r["framework"] == fw and r["median_s"]]
        if not mine:
            continue
        t = sum(r["count"] * r["median_s"] / r["products_per_call"] for r in mine)
        f = sum(r["count"] * r["flops"] / r["products_per_call"] for r in mine)
        out[fw] = {"step_dot_s": t, "gflop_per_s": f / t / 1e9,
                   "share_of_step_dot_flops_timed": sum(r["share_of_step_dot_flops"]
                                                         for r in mine)}
    return out
