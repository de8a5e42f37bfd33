"""`twinframe inspect FILE`: what a checkpoint is, without converting it."""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="checkpoint (.safetensors, .pt, .pth, .npz or orbax directory)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def main(args: argparse.Namespace) -> int:
    from twinframe.parity.files import inspect_file
    from twinframe.store.validate import one_line, show

    r = inspect_file(args.file)
    if args.json:
        print(json.dumps(r, sort_keys=True))
        return 0
    rows = [("file", show(r["file"])), ("format", f"{r['format']} ({r['kind']})"),
            ("layout", r["layout"])]
    if r.get("model"):
        preset = f"preset {r['preset']}" if r.get("preset") else "custom config"
        rows.append(("model", f"{r['model']} ({preset}, {r['recognised_by']})"))
        rows.append(("config", json.dumps(r["config"], sort_keys=True)))
    else:
        rows.append(("model", "not recognised"))
    if r.get("problem"):
        rows.append(("problem", r["problem"]))
    rows.append(("dtype", ", ".join(f"{d} x{n}" for d, n in sorted(r["dtypes"].items(),
                                                                  key=lambda kv: -kv[1]))))
    rows.append(("tensors", str(r["tensors"])))
    rows.append(("parameters", f"{r['parameters']:,}"))
    nf = r["nonfinite"]
    rows.append(("non-finite", "none" if not nf["values"] else
                 f"{nf['values']} values in {nf['tensors']} tensors (first: {nf['first']!r})"))
    rows.append(("twinframe metadata", _meta_text(r["metadata"])))
    if r.get("extras"):
        rows.append(("other entries", ", ".join(r["extras"])))
    for k, x in rows:
        print(f"{k + ':':20s}{one_line(x, 4000)}")
    return 0


def _meta_text(meta: dict | None) -> str:
    """The metadata without what the lines above show (config), long maps summarised."""
    if not meta:
        return "none"
    shown = {k: x for k, x in meta.items() if k != "config"}
    if isinstance(shown.get("torch_dtypes"), dict):
        counts: dict[str, int] = {}
        for d in shown["torch_dtypes"].values():
            counts[str(d)] = counts.get(str(d), 0) + 1
        shown["torch_dtypes"] = ", ".join(f"{d} x{n}" for d, n in sorted(counts.items()))
    if isinstance(shown.get("optimizer"), dict):
        o = shown["optimizer"]
        shown["optimizer"] = (f"torch optimizer state_dict, {len(o.get('params', []))} "
                              f"parameters{', empty' if o.get('empty') else ''}")
    return json.dumps(shown, sort_keys=True)
