"""Parity results -> `report/index.html` (one self-contained file, inline SVG plots) and
`report/report.json` (the same figures). Both written atomically."""

from __future__ import annotations

import dataclasses
import html
import json
import platform
import time
from pathlib import Path
from typing import Any

from twinframe.parity import tolerances
from twinframe.parity.compare import Record
from twinframe.store.io import atomic_write


@dataclasses.dataclass
class ModelResult:
    """Everything the report shows about one model."""

    model: str
    config_name: str
    config: dict
    records: list[Record]
    curves: dict[str, Any] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    images: dict[str, bytes] = dataclasses.field(default_factory=dict)  # caption -> PNG

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.records)


def environment() -> dict[str, str]:
    import jax
    import numpy as np
    import torch

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "jax": jax.__version__,
        "numpy": np.__version__,
        "jax_devices": ", ".join(str(d) for d in jax.devices()),
        "torch_device": "cuda" if torch.cuda.is_available() else "cpu",
        "jax_default_matmul_precision": str(jax.config.jax_default_matmul_precision),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def to_json(results: list[ModelResult], env: dict, wall: float) -> dict:
    return {
        "passed": all(r.passed for r in results),
        "wall_time_s": round(wall, 2),
        "environment": env,
        "tolerances": {f"{k}|{d}": {**dataclasses.asdict(t), "rule": t.describe()}
                       for (k, d), t in tolerances.TOLERANCES.items()},
        "models": {
            r.model: {
                "config_name": r.config_name,
                "config": r.config,
                "passed": r.passed,
                "seconds": round(r.seconds, 2),
                "records": [x.to_dict() for x in r.records],
                "curves": r.curves,
                "images": sorted(r.images),
            }
            for r in results
        },
    }


def write(out_dir: str | Path, results: list[ModelResult], env: dict, wall: float) -> Path:
    """Write index.html and report.json into out_dir; returns the HTML path."""
    out_dir = Path(out_dir)
    data = to_json(results, env, wall)
    atomic_write(out_dir / "report.json", lambda p: p.write_text(json.dumps(data, indent=1)))
    atomic_write(out_dir / "index.html", lambda p: p.write_text(render_html(results, data)))
    return out_dir / "index.html"


# ---------------------------------------------------------------------------------------------
# HTML

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1200px;color:#1d1d1f}
h1{margin-bottom:4px} h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:36px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:12.5px}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left} th{background:#f3f3f5}
td.num{text-align:right;font-family:ui-monospace,monospace}
tr.pass td.v{background:#dff5e1;color:#145a1e} tr.fail td.v{background:#fbdada;color:#8a1010}
tr.fail{background:#fff4f4} .badge{display:inline-block;padding:2px 10px;border-radius:10px;
color:#fff;font-weight:600} .ok{background:#2e7d32} .bad{background:#c62828}
details{margin:6px 0 12px} summary{cursor:pointer;font-weight:600}
.plots{display:flex;flex-wrap:wrap;gap:16px} .note{color:#666;font-size:12px}
"""


def _badge(ok: bool) -> str:
    return f'<span class="badge {"ok" if ok else "bad"}">{"PASS" if ok else "FAIL"}</span>'


def _records_table(records: list[Record]) -> str:
    rows = ["<tr><th>level</th><th>tensor</th><th>max abs err</th><th>max rel err</th>"
            "<th>tolerance</th><th>result</th><th>note</th></tr>"]
    for r in records:
        cls = "pass" if r.passed else "fail"
        rows.append(
            f'<tr class="{cls}"><td>{r.level}</td><td>{html.escape(r.name)}</td>'
            f'<td class="num">{r.max_abs:.3e}</td><td class="num">{r.max_rel:.3e}</td>'
            f"<td>{html.escape(r.tolerance)}</td><td class=\"v\">{'pass' if r.passed else 'FAIL'}"
            f"</td><td>{html.escape(r.note)}</td></tr>"
        )
    return "<table>" + "".join(rows) + "</table>"


def _level_summary(records: list[Record]) -> str:
    levels: dict[str, list[Record]] = {}
    for r in records:
        levels.setdefault(r.level, []).append(r)
    rows = ["<tr><th>level</th><th>tensors</th><th>failed</th><th>max abs err</th>"
            "<th>max rel err</th><th>result</th></tr>"]
    for lv, rs in levels.items():
        ok = all(r.passed for r in rs)
        rows.append(
            f'<tr class="{"pass" if ok else "fail"}"><td>{lv}</td><td class="num">{len(rs)}</td>'
            f'<td class="num">{sum(not r.passed for r in rs)}</td>'
            f'<td class="num">{max(r.max_abs for r in rs):.3e}</td>'
            f'<td class="num">{max(r.max_rel for r in rs):.3e}</td>'
            f'<td class="v">{"pass" if ok else "FAIL"}</td></tr>'
        )
    return "<table>" + "".join(rows) + "</table>"


def svg_plot(title: str, series: dict[str, list[float]], width: int = 560, height: int = 260,
             log_y: bool = False, ylabel: str = "", x_start: int = 1) -> str:
    """A line plot as inline SVG; series share the x axis (step = index + 1)."""
    import math

    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]
    pad_l, pad_r, pad_t, pad_b = 62, 12, 28, 34
    vals = [v for s in series.values() for v in s if v is not None and math.isfinite(v)]
    if log_y:
        vals = [v for v in vals if v > 0]
    if not vals:
        return f"<p class='note'>{html.escape(title)}: no data</p>"

    def ty(v: float) -> float:
        return math.log10(v) if log_y else v

    lo, hi = min(map(ty, vals)), max(map(ty, vals))
    if hi - lo < 1e-12:
        lo, hi = lo - 1, hi + 1
    n = max(len(s) for s in series.values())
    w, h = width - pad_l - pad_r, height - pad_t - pad_b

    def xy(i: int, v: float) -> str:
        x = pad_l + (i / max(n - 1, 1)) * w
        y = pad_t + (1 - (ty(v) - lo) / (hi - lo)) * h
        return f"{x:.1f},{y:.1f}"

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'style="background:#fff;border:1px solid #ddd">',
             f'<text x="{pad_l}" y="18" font-size="13" font-weight="600">{html.escape(title)}'
             "</text>"]
    for j in range(5):
        v = lo + (hi - lo) * j / 4
        y = pad_t + (1 - j / 4) * h
        label = f"{10 ** v:.1e}" if log_y else f"{v:.4g}"
        parts.append(f'<line x1="{pad_l}" x2="{pad_l + w}" y1="{y:.1f}" y2="{y:.1f}" '
                     'stroke="#eee"/>')
        parts.append(f'<text x="{pad_l - 4}" y="{y + 4:.1f}" font-size="10" '
                     f'text-anchor="end">{label}</text>')
    parts.append(f'<text x="{pad_l + w / 2}" y="{height - 6}" font-size="11" '
                 f'text-anchor="middle">step ({x_start}..{x_start + n - 1})</text>')
    if ylabel:
        parts.append(f'<text x="12" y="{pad_t + h / 2}" font-size="11" '
                     f'transform="rotate(-90 12 {pad_t + h / 2})" text-anchor="middle">'
                     f"{html.escape(ylabel)}</text>")
    for k, (name, s) in enumerate(series.items()):
        pts = [xy(i, v) for i, v in enumerate(s)
               if v is not None and math.isfinite(v) and (v > 0 or not log_y)]
        color = colors[k % len(colors)]
        dash = ' stroke-dasharray="6 4"' if k % 2 else ""
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2"{dash} '
                     f'points="{" ".join(pts)}"/>')
        parts.append(f'<rect x="{pad_l + w - 150}" y="{pad_t + 4 + 16 * k}" width="14" '
                     f'height="4" fill="{color}"/><text x="{pad_l + w - 130}" '
                     f'y="{pad_t + 9 + 16 * k}" font-size="11">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _curves_html(curves: dict[str, Any]) -> str:
    if not curves:
        return "<p class='note'>No training-curve check in this run.</p>"
    out = []
    for name, c in curves.items():
        x0 = c.get("x_start", 1)
        plots = [svg_plot(f"{name}: loss per step", {"torch": c["torch_loss"],
                                                      "jax": c["jax_loss"]}, ylabel="loss",
                          x_start=x0)]
        if "abs_diff" in c:
            plots.append(svg_plot(f"{name}: |loss_torch - loss_jax| (zeros not drawn)",
                                  {"abs diff": c["abs_diff"]},
                                  log_y=True, ylabel="abs diff (log scale)", x_start=x0))
        for metric, series in c.get("series", {}).items():  # the other declared metrics
            plots.append(svg_plot(f"{name}: {metric} per step", series, ylabel=metric,
                                  x_start=x0))
        summary = html.escape(c.get("summary", ""))
        out.append(f"<h3>{html.escape(name)}</h3><p>{summary}</p>"
                   f"<div class='plots'>{''.join(plots)}</div>")
    return "".join(out)


def _images_html(images: dict[str, bytes]) -> str:
    """PNG figures inline (data URIs: the page stays one self-contained file)."""
    import base64

    if not images:
        return ""
    figs = [f"<figure><img alt='{html.escape(c)}' style='image-rendering:pixelated' "
            f"src='data:image/png;base64,{base64.b64encode(b).decode()}'>"
            f"<figcaption class='note'>{html.escape(c)}</figcaption></figure>"
            for c, b in images.items()]
    return f"<h3>What the model does</h3><div class='plots'>{''.join(figs)}</div>"


def _tolerance_table() -> str:
    rows = ["<tr><th>check</th><th>dtype</th><th>rule</th><th>justification</th></tr>"]
    for (key, dtype), t in tolerances.TOLERANCES.items():
        rows.append(f"<tr><td>{key}</td><td>{dtype}</td><td>{html.escape(t.describe())}</td>"
                    f"<td>{html.escape(t.why)}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def render_html(results: list[ModelResult], data: dict) -> str:
    env = data["environment"]
    body = [f"<h1>twinframe parity report {_badge(data['passed'])}</h1>",
            f"<p class='note'>{html.escape(env['date'])} &middot; wall time "
            f"{data['wall_time_s']:.1f} s</p><h2>Summary</h2><table><tr><th>model</th>"
            "<th>config</th><th>tensors checked</th><th>failed</th><th>seconds</th>"
            "<th>result</th></tr>"]
    for r in results:
        nfail = sum(not x.passed for x in r.records)
        body.append(f'<tr class="{"pass" if r.passed else "fail"}"><td>{r.model}</td>'
                    f"<td>{r.config_name}</td><td class='num'>{len(r.records)}</td>"
                    f"<td class='num'>{nfail}</td><td class='num'>{r.seconds:.1f}</td>"
                    f"<td class='v'>{'pass' if r.passed else 'FAIL'}</td></tr>")
    body.append("</table>")
    for r in results:
        rt = [x for x in r.records if x.level == "L6"]
        rest = [x for x in r.records if x.level != "L6"]
        body += [
            f"<h2>{r.model} [{r.config_name}] {_badge(r.passed)}</h2>",
            "<h3>Levels</h3>", _level_summary(r.records),
            "<h3>Training curves (lockstep)</h3>", _curves_html(r.curves), _images_html(r.images),
            "<details open><summary>Forward, gradient, decision and optimizer errors per tensor"
            f" ({len(rest)})</summary>", _records_table(rest), "</details>",
            f"<details><summary>Conversion round trip ({len(rt)} tensors, "
            f"{'bit-exact' if all(x.max_abs == 0 for x in rt) else 'NOT bit-exact'})</summary>",
            _records_table(rt), "</details>",
            "<details><summary>Config</summary><pre>"
            f"{html.escape(json.dumps(r.config, indent=1))}</pre></details>",
        ]
    body += ["<h2>Tolerances</h2>", _tolerance_table(), "<h2>Environment</h2><table>"]
    body += [f"<tr><td>{k}</td><td>{html.escape(str(v))}</td></tr>" for k, v in env.items()]
    body.append("</table>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>twinframe report</title>"
            f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>")
