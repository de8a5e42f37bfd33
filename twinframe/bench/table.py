"""The stdout table of a bench result (ratios against torch eager of the same kind)."""

from __future__ import annotations

from typing import Any


def _f(x: Any, fmt: str, none: str = "-") -> str:
    return none if x is None else format(x, fmt)


def _mb(x: int | None) -> str:
    return "n/a" if x is None else f"{x / 2**20:.0f} MiB"


def render(r: dict[str, Any]) -> str:
    head = (f"{r['model']} --config {r['preset']}  batch {r['batch']}  "
            f"dtype {r['config'].get('compute_dtype', '-')}  on {r['device']}  "
            f"(load {r['load']['before']['loadavg']} -> {r['load']['after']['loadavg']}, "
            f"{r['load']['before']['cpus']} CPUs)")
    lines = [head, f"{'variant':22s} {'ms/call':>10s} {'items/s':>9s} {'GFLOP/s':>8s} "
                   f"{'%matmul':>7s} {'vs eager':>8s} {'compile s':>9s} {'peak mem':>9s}"]
    for v in r["variants"]:
        if v["kind"] == "dot":
            continue
        ms = _f(v["median_s"] and v["median_s"] * 1e3, ".1f")
        pct = v.get("fraction_of_best_matmul")
        lines.append(
            f"{v['name']:22s} {ms:>10s} {_f(v.get('items_per_s'), '.1f'):>9s} "
            f"{_f(v.get('gflop_per_s'), '.1f'):>8s} {_f(pct and pct * 100, '.0f'):>7s} "
            f"{_f(v.get('speedup_vs_torch_eager'), '.2f'):>8s} {_f(v['compile_s'], '.1f'):>9s} "
            f"{_mb(v['peak_memory_bytes']) if v['kind'] != 'matmul' else '':>9s}")
    fl = r["flops"]
    if fl.get("analytic_per_step"):
        xla = fl.get("xla_flops")
        lines.append(f"FLOPs per step: analytic {fl['analytic_per_step'] / 1e9:.2f} G, XLA cost "
                     f"analysis {_f(xla and xla / 1e9, '.2f')} G "
                     f"(ratio {_f(fl.get('xla_over_analytic'), '.3f')})")
    lines += _dot_lines(r)
    if r["host_share"]:
        lines.append("host share of the end-to-end step: " + ", ".join(
            f"{k} {v * 100:.0f}%" for k, v in sorted(r["host_share"].items())))
    for k, v in r["notes"].items():
        lines.append(f"{k}: {v}")
    lines.append(f"process max RSS {_mb(r['max_rss_bytes'])}; medians of {r['options']['rounds']}"
                 f" interleaved rounds of {r['options']['steps']} call(s), warm-up excluded")
    return "\n".join(lines)


def _dot_lines(r: dict[str, Any]) -> list[str]:
    """The step's own dot shapes: per-shape GFLOP/s of each framework and the ceilings."""
    ceil = r.get("dot_ceiling") or {}
    if not ceil:
        return []
    dt = r["config"].get("compute_dtype", "float32")
    out = [f"the step's own dot shapes ({dt}; GFLOP/s torch / jax, share of the step's dot "
           f"FLOPs):"]
    per: dict[str, dict[str, Any]] = {}
    for v in r["variants"]:
        if v["kind"] == "dot":
            per.setdefault(v["shape"], {"share": v["share_of_step_dot_flops"]})[
                v["framework"]] = v.get("gflop_per_s")
    for shape, d in per.items():
        out.append(f"  {shape:28s} {_f(d.get('torch'), '.1f'):>7s} / "
                   f"{_f(d.get('jax'), '.1f'):>7s}  ({d['share'] * 100:.1f}%)")
    for fw, c in sorted(ceil.items()):
        pct = c.get("fraction_of_best_matmul")
        out.append(f"  {fw} ceiling at these shapes: {c['gflop_per_s']:.1f} GFLOP/s "
                   f"({_f(pct and pct * 100, '.0f')}% of best matmul), step dot time "
                   f"{c['step_dot_s'] * 1e3:.1f} ms")
    steps = [v for v in r["variants"] if v["kind"] == "step"
             and v.get("fraction_of_own_dot_ceiling")]
    if steps:
        out.append("  step at its framework's ceiling / the best ceiling: " + ", ".join(
            f"{v['framework']} {v['fraction_of_own_dot_ceiling'] * 100:.0f}% / "
            f"{v['fraction_of_best_dot_ceiling'] * 100:.0f}%" for v in steps))
    return out
