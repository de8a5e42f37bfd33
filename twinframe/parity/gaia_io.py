"""GAIA agent checkpoint files of spec gaia.md §1.11, driven by the declared layout.

torch: one safetensors file, keys `wm.*`, `am.*` (the module's state_dict, counters int64),
`agent.preferred_state`, `wm_opt.{idx}.{exp_avg|exp_avg_sq|step}` and `am_opt.{idx}.*` (idx =
the parameter's index in `wm.parameters()` / `am.parameters()`; `step` a 0-d float32), and
optionally `metrics.{name}` (1-D float32); metadata `config` (JSON) and `format` =
"gaia-v31/1". An act_opt that never stepped has no `am_opt.*` keys (torch's lazy state).
JAX: one orbax PyTree {params, state, opt_state: {wm, am: {count, mu, nu}}, meta:
{preferred_state}} (+ the config in `twinframe.json`).

Both sides convert from/to the project's train states (`models.layout.convert_train_state`), so
a file written by either framework resumes in either.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from twinframe.errors import CheckpointError
from twinframe.models import gaia as mg
from twinframe.models.layout import convert_train_state, flatten_tree, path_str
from twinframe.store import io

FORMAT = "gaia-v31/1"
G_KEY, G_FILE = "preferred_state", "agent.preferred_state"
SLOTS = ("exp_avg", "exp_avg_sq")


def _group_keys(cfg: mg.GaiaConfig) -> dict[str, list[str]]:
    lay = mg.layout(cfg)
    return {g: [k for k in lay.trainable_keys() if lay.group_of(k) == g] for g in ("wm", "am")}


def to_agent_file(state: dict[str, Any], cfg: mg.GaiaConfig,
                  metrics: dict[str, list[float]] | None = None) -> dict[str, np.ndarray]:
    """A torch train state -> the tensors of the §1.11 safetensors file."""
    if state["framework"] != "torch":
        state = convert_train_state(state, mg.layout(cfg), "torch")
    out = {(G_FILE if k == G_KEY else k): np.asarray(v) for k, v in state["model"].items()}
    opt = state["opt"]
    for g, keys in _group_keys(cfg).items():
        step = float(opt[f"{g}.step"])
        if step == 0:
            continue
        for i, k in enumerate(keys):
            for slot in SLOTS:
                out[f"{g}_opt.{i}.{slot}"] = np.asarray(opt[slot][k], np.float32)
            out[f"{g}_opt.{i}.step"] = np.asarray(step, np.float32)
    for name, vals in (metrics or {}).items():
        out[f"metrics.{name}"] = np.asarray(vals, np.float32)
    return out


def from_agent_file(tensors: dict[str, np.ndarray], cfg: mg.GaiaConfig) -> dict[str, Any]:
    """§1.11 file tensors -> a torch train state {framework, model, opt} (+ metrics)."""
    model = {(G_KEY if k == G_FILE else k): v for k, v in tensors.items()
             if not k.startswith(("wm_opt.", "am_opt.", "metrics."))}
    shapes = mg.torch_shapes(cfg)
    opt: dict[str, Any] = {s: {} for s in SLOTS}
    for g, keys in _group_keys(cfg).items():
        steps = {float(tensors[f"{g}_opt.{i}.step"]) for i in range(len(keys))
                 if f"{g}_opt.{i}.step" in tensors}
        if len(steps) > 1:
            raise CheckpointError(f"{g}_opt: parameters at different steps {sorted(steps)}")
        opt[f"{g}.step"] = steps.pop() if steps else 0.0
        for i, k in enumerate(keys):
            for slot in SLOTS:
                v = tensors.get(f"{g}_opt.{i}.{slot}")
                if v is None and opt[f"{g}.step"] > 0:
                    raise CheckpointError(f"missing {g}_opt.{i}.{slot}")
                opt[slot][k] = np.zeros(shapes[k], np.float32) if v is None else v
    metrics = {k.split(".", 1)[1]: v.tolist() for k, v in tensors.items()
               if k.startswith("metrics.")}
    return {"framework": "torch", "model": model, "opt": opt, "carry": {}, "metrics": metrics}


def write_torch(path: Path, state: dict[str, Any], cfg: mg.GaiaConfig,
                metrics: dict[str, list[float]] | None = None) -> None:
    import torch
    from safetensors.torch import save_file

    tensors = {k: torch.from_numpy(np.array(v)) for k, v in
               to_agent_file(state, cfg, metrics).items()}
    meta = {"format": FORMAT, "config": cfg.to_json()}
    io.atomic_write(Path(path), lambda p: save_file(tensors, str(p), metadata=meta))


def read_torch(path: Path) -> tuple[dict[str, Any], mg.GaiaConfig]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: io.to_numpy(f.get_tensor(k)) for k in f.keys()}  # noqa: SIM118
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} file")
    cfg = mg.GaiaConfig.from_dict(json.loads(meta["config"]))
    return from_agent_file(tensors, cfg), cfg


def to_jax_tree(state: dict[str, Any], cfg: mg.GaiaConfig) -> dict[str, Any]:
    """Train state (either framework) -> {params, state, opt_state: {wm, am}, meta}."""
    js = convert_train_state(state, mg.layout(cfg), "jax")
    model, opt = js["model"], js["opt"]
    return {"params": model["params"], "state": model["state"],
            "opt_state": {g: {"count": np.asarray(opt[f"{g}.count"], np.int32),
                              "mu": opt["mu"][g], "nu": opt["nu"][g]} for g in ("wm", "am")},
            "meta": {"preferred_state": model["consts"]["preferred_state"]}}


def from_jax_tree(tree: dict[str, Any]) -> dict[str, Any]:
    o = tree["opt_state"]
    return {"framework": "jax",
            "model": {"params": tree["params"], "state": tree["state"],
                      "consts": {"preferred_state": tree["meta"]["preferred_state"]}},
            "opt": {"wm.count": o["wm"]["count"], "am.count": o["am"]["count"],
                    "mu": {g: o[g]["mu"] for g in ("wm", "am")},
                    "nu": {g: o[g]["nu"] for g in ("wm", "am")}}, "carry": {}}


def write_jax(path: Path, state: dict[str, Any], cfg: mg.GaiaConfig) -> None:
    io.write_jax(path, to_jax_tree(state, cfg), "gaia", cfg.to_dict(), {"agent": FORMAT})


def read_jax(path: Path) -> tuple[dict[str, Any], mg.GaiaConfig]:
    tree, meta = io.read_jax(path)
    return from_jax_tree(tree), mg.GaiaConfig.from_dict(meta["config"])


def roundtrip(state: dict[str, Any], cfg: mg.GaiaConfig, workdir: Path) -> dict[str, Any]:
    """torch -> safetensors -> JAX -> orbax -> JAX -> torch (-> the state's own framework)."""
    write_torch(workdir / "agent.safetensors", state, cfg)
    t1, _ = read_torch(workdir / "agent.safetensors")
    write_jax(workdir / "agent.orbax", t1, cfg)
    j2, _ = read_jax(workdir / "agent.orbax")
    return convert_train_state(convert_train_state(j2, mg.layout(cfg), "torch"),
                               mg.layout(cfg), state["framework"])


def leaf_pairs(a: dict[str, Any], b: dict[str, Any]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Model and optimizer leaves of two train states, as raw bytes (uint8 views)."""
    fa = flatten_tree({"model": a["model"], "opt": a["opt"]})
    fb = flatten_tree({"model": b["model"], "opt": b["opt"]})
    out = {}
    for k, v in fa.items():
        x = np.ascontiguousarray(np.asarray(v))
        y = fb.get(k)
        y = np.full(1, np.nan) if y is None else np.ascontiguousarray(np.asarray(y))
        out[path_str(k)] = (np.frombuffer(x.tobytes(), np.uint8) if x.dtype == y.dtype
                            else x.astype(np.float64), np.frombuffer(y.tobytes(), np.uint8)
                            if x.dtype == y.dtype else y.astype(np.float64))
    return out


def write_analysis(path: Path, cfg: mg.GaiaConfig, state: dict[str, Any],
                   records: list[dict[str, Any]] | None = None) -> dict[str, np.ndarray]:
    """Analysis export (guide §5.2, §7.1) to an npz: `models.gaia_bridge.analysis_arrays` of a
    torch-layout agent state (or a train state of either framework), plus per-step series of
    a run's records (`series.wm_loss`, `series.free_energy`, `series.reward`,
    `series.l1_fast_norm`, `series.l2_fast_norm`, ... where present). Returns the arrays."""
    from twinframe.models import gaia_bridge as mb

    if "framework" in state:
        state = convert_train_state(state, mg.layout(cfg), "torch")["model"]
    arrays = mb.analysis_arrays(cfg, state)
    for key in ("wm_loss", "free_energy", "reward", "uncertainty", "improvement",
                "l1_fast_norm", "l2_fast_norm"):
        vals = [r.get(key) for r in records or []]
        if vals and all(isinstance(v, int | float) for v in vals):
            arrays[f"series.{key}"] = np.asarray(vals, np.float64)
    meta = np.frombuffer(json.dumps({"format": "gaia-analysis/1", "config": cfg.to_dict()})
                         .encode(), np.uint8)

    def write(p: Path) -> None:
        with open(p, "wb") as f:
            np.savez(f, __meta__=meta, **arrays)

    io.atomic_write(Path(path), write)
    return arrays



# ----------------------------------------------------------------------------------------------
# v4.x: numpy_ref objects <-> the JAX pytrees of spec §2.11 (npz files = those pytrees)


def v4_tree(layer: Any) -> dict[str, Any]:
    """A numpy_ref layer's state as the §2.11 pytree (float64; histories as ring buffers laid
    out chronologically, so hist_head = hist_len mod capacity); HebbianCore adds `hparams`."""
    from twinframe.torch_ref import gaia_v4 as tv

    if isinstance(layer, tv.ReactiveLayer):
        return {"W": np.array(layer.weights), "b": np.array(layer.bias, np.float64)}
    if isinstance(layer, tv.HebbianCore):
        n, cap = len(layer.activity_history), tv.HIST_MAX
        hp_, hq = np.zeros((cap, layer.input_size)), np.zeros((cap, layer.output_size))
        for k, (p, q) in enumerate(layer.activity_history):
            hp_[k], hq[k] = p, q
        return {"W": np.array(layer.weights), "pre": np.asarray(layer.pre_synaptic, np.float64),
                "post": np.asarray(layer.post_synaptic, np.float64), "hist_pre": hp_,
                "hist_post": hq, "hist_len": np.int32(n), "hist_head": np.int32(n % cap),
                "hparams": {k: np.float64(v) for k, v in layer.hparams.items()}}
    if isinstance(layer, tv.TemporalLayer):
        n, tw = len(layer.state_history), layer.time_window
        hist = np.zeros((tw, layer.hidden_size))
        for k, h in enumerate(layer.state_history):
            hist[k] = h
        return {"W": np.array(layer.weights), "W_rec": np.array(layer.recurrent_weights),
                "h": np.array(layer.hidden_state), "hist": hist, "hist_len": np.int32(n),
                "hist_head": np.int32(n % tw)}
    raise TypeError(f"no v4.x pytree for {type(layer).__name__}")


def v4_load(layer: Any, tree: dict[str, Any]) -> Any:
    """Set a numpy_ref layer from its §2.11 pytree (ring buffers unrolled chronologically)."""
    from twinframe.functional.gaia_v4 import unroll
    from twinframe.torch_ref import gaia_v4 as tv

    t = {k: (v if isinstance(v, dict) else np.asarray(v)) for k, v in tree.items()}
    if isinstance(layer, tv.ReactiveLayer):
        layer.weights, layer.bias = np.array(t["W"], np.float64), np.array(t["b"])
    elif isinstance(layer, tv.HebbianCore):
        layer.weights = np.array(t["W"], np.float64)
        layer.pre_synaptic, layer.post_synaptic = np.array(t["pre"]), np.array(t["post"])
        pre = unroll(t["hist_pre"], t["hist_len"], t["hist_head"])
        post = unroll(t["hist_post"], t["hist_len"], t["hist_head"])
        layer.activity_history = [(a.copy(), b.copy()) for a, b in zip(pre, post, strict=True)]
        layer.hparams = {k: float(np.asarray(v)) for k, v in t["hparams"].items()}
    elif isinstance(layer, tv.TemporalLayer):
        layer.weights, layer.recurrent_weights = np.array(t["W"]), np.array(t["W_rec"])
        layer.hidden_state = np.array(t["h"])
        layer.state_history = [h.copy() for h in unroll(t["hist"], t["hist_len"],
                                                        t["hist_head"])]
    else:
        raise TypeError(f"no v4.x pytree for {type(layer).__name__}")
    return layer


def write_v4_npz(path: Path, layers: dict[str, Any]) -> None:
    """{name: numpy_ref layer} -> one npz of their §2.11 pytrees (keys `name/leaf`)."""
    io.write_jax(Path(path), {k: v4_tree(v) for k, v in layers.items()}, "gaia-v4",
                 {"layers": {k: type(v).__name__ for k, v in layers.items()}})


def read_v4_npz(path: Path) -> dict[str, Any]:
    """npz written by `write_v4_npz` -> {name: §2.11 pytree} (NumPy leaves)."""
    tree, _ = io.read_jax(Path(path))
    return tree
