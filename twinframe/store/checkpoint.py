"""Train-state checkpoints, written atomically, the last K kept.

torch: `checkpoint-{t}.pt` (full train state: model state_dict, the optimizer's own
`state_dict()` with `param_names`, carry, host state, config; loadable with
`torch.load(weights_only=True)`) plus `checkpoint-{t}.safetensors` (model weights only).
JAX: orbax directory `checkpoint-{t}/` with `tree/` = {model, opt, carry} and `twinframe.json`
= {model, config, host, framework}.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from twinframe.errors import CheckpointError
from twinframe.store import io

PATTERN = re.compile(r"^checkpoint-(\d+)(\.pt|\.safetensors)?$")
FORMAT = "twinframe-train/1"


def _torch_optimizer_dict(opt: dict[str, Any]) -> dict[str, Any]:
    """Named optimizer state {scalar counters, slot: {name: moment}} -> torch's own optimizer
    state_dict layout (index-keyed state, one param group) + `param_names`."""
    import torch

    slots = {k: v for k, v in opt.items() if isinstance(v, dict)}
    scalars = {k: v for k, v in opt.items() if not isinstance(v, dict)}
    names = list(next(iter(slots.values()), {}))
    state = {i: {**{k: torch.tensor(float(v)) for k, v in scalars.items()},
                 **{k: torch.from_numpy(np.ascontiguousarray(slots[k][n])) for k in slots}}
             for i, n in enumerate(names)}
    return {"state": state, "param_groups": [{"params": list(range(len(names)))}],
            "param_names": names, "scalars": sorted(scalars)}


def _named_optimizer(sd: dict[str, Any]) -> dict[str, Any]:
    """torch optimizer state_dict (index-keyed, with param_names) -> named state."""
    names, scalars = sd.get("param_names"), sd.get("scalars", [])
    if not names:
        raise CheckpointError("optimizer state has no param_names: cannot map moments")
    out: dict[str, Any] = {k: 0.0 for k in scalars}
    for i, n in enumerate(names):
        st = sd["state"].get(i) or sd["state"].get(str(i))
        if st is None:
            raise CheckpointError(f"optimizer state missing for parameter '{n}'")
        for k, v in st.items():
            if k in scalars:
                out[k] = float(v)
            else:
                out.setdefault(k, {})[n] = io.to_numpy(v).astype(np.float32)
    return out


def save(ckpt_dir: str | Path, state: dict[str, Any], keep: int = 3) -> Path:
    """Write the train state of step t and drop all but the newest `keep` checkpoints."""
    ckpt_dir = Path(ckpt_dir)
    t, fw, name = state["host"]["t"], state["framework"], state["model_name"]
    host_json = json.dumps(state["host"])
    if fw == "torch":
        import torch

        path = ckpt_dir / f"checkpoint-{t}.pt"
        obj = {
            "format": FORMAT, "model_name": name, "framework": fw,
            "config": json.dumps(state["config"]), "host": host_json,
            "model": {k: io.from_numpy(v, "float32") for k, v in state["model"].items()},
            "run": json.dumps(state.get("run", {})),
            "optimizer": _torch_optimizer_dict(state["opt"]),
            "carry": {k: torch.from_numpy(np.array(v, np.float32)) for k, v in
                      state["carry"].items()},
        }
        io.atomic_write(path, lambda p: torch.save(obj, str(p)))
        io.write_torch(ckpt_dir / f"checkpoint-{t}.safetensors", state["model"], name,
                       state["config"])
    else:
        path = ckpt_dir / f"checkpoint-{t}"
        tree = {"model": state["model"], "opt": state["opt"], "carry": state["carry"]}
        io.write_jax(path, tree, name, state["config"],
                     {"format": FORMAT, "framework": fw, "host": state["host"],
                      "run": state.get("run", {})})
    _rotate(ckpt_dir, keep)
    return path


def _steps(ckpt_dir: Path) -> dict[int, list[Path]]:
    found: dict[int, list[Path]] = {}
    for p in ckpt_dir.iterdir() if ckpt_dir.is_dir() else []:
        m = PATTERN.match(p.name)
        if m:
            found.setdefault(int(m.group(1)), []).append(p)
    return found


def _rotate(ckpt_dir: Path, keep: int) -> None:
    found = _steps(ckpt_dir)
    for t in sorted(found)[:-keep] if keep > 0 else []:
        for p in found[t]:
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def latest(ckpt_dir: str | Path) -> Path:
    """Newest full train state in a directory (a `.pt` file or an orbax directory)."""
    found = _steps(Path(ckpt_dir))
    for t in sorted(found, reverse=True):
        for p in found[t]:
            if p.suffix == ".pt" or p.is_dir():
                return p
    raise CheckpointError(f"{ckpt_dir}: no checkpoint-N.pt or checkpoint-N/ to resume from")


def load(path: str | Path) -> dict[str, Any]:
    """Read a train state written by `save` (either framework), validated to one line."""
    path = Path(path)
    if path.suffix == ".pt":
        model, extras = io.read_torch(path)
        if extras.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not a twinframe train state (model weights only?)")
        try:
            return {"framework": "torch", "model_name": extras["model"],
                    "config": extras["config"], "run": json.loads(extras.get("run", "{}")),
                    "host": json.loads(extras["host"]),
                    "model": model, "opt": _named_optimizer(extras["optimizer"]),
                    "carry": {k: io.to_numpy(v) for k, v in extras["carry"].items()}}
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: incomplete train state ({e})") from None
    tree, meta = io.read_jax(path)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a twinframe train state")
    return {"framework": "jax", "model_name": meta["model"], "config": meta["config"],
            "run": meta.get("run", {}), "host": meta["host"], "model": tree["model"],
            "opt": tree["opt"], "carry": tree.get("carry", {})}
