"""AltLAS reference checkpoint files (altlas.md §7): the bare `model_state.pth` state_dict
and the torch Adam `optimizer_state.pth`, both read with `torch.load(weights_only=True)`;
validation with one-line `CheckpointError`s that name the file and the key; R0 (46-token) / R1
(63-token) / RH (53-token) recognition by vocabulary size (`models.altlas.recognise`); export in
the same layout. The optimizer comes back in the torch train-state layout of `models.layout`,
so `convert_train_state` takes it to JAX like any other train state.

Choices where the spec is silent (ours):
- The release is decided by V alone (46 -> R0/v0_46, 63 -> R1/v1_63, 53 -> RH/abstract_53); the
  inferred config starts from that release's preset (`r0`, `r1`, `rh`) with E, H, L and the cell
  read from the tensor shapes. `init_hint` ('altlas' when every LSTM bias_ih == bias_hh and
  embedding row 0 is non-zero, 'torch_default' when row 0 is exactly zero) is informational.
- Variant B files (`positional_encoding` key) are recognised and refused (not implemented).
- Optimizer param-group keys other than lr/betas/eps/params are ignored; lr/betas/eps that differ
  from the config only log a warning.
- Writers go through `store.io.atomic_write`.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from twinframe.errors import CheckpointError
from twinframe.models.altlas import (
    CELLS,
    PAD_ID,
    RELEASE_BY_V,
    VOCAB_SIZES,
    AltLASConfig,
    AltLASRun,
    recognise,
    torch_shapes,
)
from twinframe.models.layout import check_key_sets
from twinframe.store import io

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ReferenceModel:
    """A validated reference state_dict: torch-layout float32 arrays, the config it implies."""

    path: Path
    state: dict[str, np.ndarray]
    cfg: AltLASConfig
    release: str
    vocab: str
    init_hint: str


def _layout(state: Mapping[str, np.ndarray], path: Path) -> tuple[str, int, int, int, int]:
    """(cell, V, E, H, L) read from the keys and shapes of a Variant A state_dict."""
    if "positional_encoding" in state:
        raise CheckpointError(f"{path}: Variant B (RH attention) checkpoints are not supported")
    if "embedding.weight" not in state:
        raise CheckpointError(f"{path}: missing key 'embedding.weight'")
    cells = sorted({k.split(".")[0] for k in state if k.startswith(("lstm.", "gru."))})
    if len(cells) != 1:
        raise CheckpointError(f"{path}: expected lstm.* or gru.* keys (one kind), found {cells}")
    cell = cells[0]
    pattern = re.compile(rf"{cell}\.weight_ih_l(\d+)")
    layers = {int(m.group(1)) for k in state if (m := pattern.fullmatch(k))}
    if not layers or layers != set(range(len(layers))):
        raise CheckpointError(f"{path}: {cell}.weight_ih_l* keys are not l0..l(L-1): {layers}")
    for key in ("embedding.weight", f"{cell}.weight_ih_l0", f"{cell}.weight_hh_l0"):
        if key not in state:
            raise CheckpointError(f"{path}: missing key '{key}'")
        if np.ndim(state[key]) != 2:
            shape = tuple(np.shape(state[key]))
            raise CheckpointError(f"{path}: {key} has shape {shape}, want 2-D")
    V, E = state["embedding.weight"].shape
    H = state[f"{cell}.weight_ih_l0"].shape[0] // CELLS[cell]
    return cell, int(V), int(E), int(H), len(layers)


def _check_values(state: Mapping[str, Any], path: Path, what: str = "") -> None:
    for k, v in state.items():
        x = np.asarray(v)
        if x.dtype != np.float32:
            raise CheckpointError(f"{path}: {what}{k} has dtype {x.dtype.name}, want float32")
        if not np.all(np.isfinite(x)):
            raise CheckpointError(f"{path}: {what}{k} contains NaN or Inf")


def infer_config(state: Mapping[str, np.ndarray], path: Path) -> tuple[AltLASConfig, str, str]:
    """(config, release, vocab name) implied by a reference state_dict (`models.altlas.recognise`
    after the layout checks that give a precise error)."""
    _, V, _, _, _ = _layout(state, path)
    cfg = recognise(state)
    if cfg is None:
        known = ", ".join(f"{n} ({v})" for n, v in VOCAB_SIZES.items())
        raise CheckpointError(f"{path}: vocabulary size V={V} matches none of {known}")
    release, vocab, _ = RELEASE_BY_V[V]
    return cfg, release, vocab


def validate_model_state(
    state: Mapping[str, np.ndarray], cfg: AltLASConfig, path: Path | str
) -> dict[str, np.ndarray]:
    """Exact key set, shapes, float32, finite; V must equal cfg.vocab_size. Returns a copy."""
    path = Path(path)
    if "embedding.weight" in state and np.ndim(state["embedding.weight"]) == 2:
        V = state["embedding.weight"].shape[0]
        if V != cfg.vocab_size:
            hint = RELEASE_BY_V.get(V)
            extra = f" (a {hint[0]} checkpoint: use vocab {hint[1]})" if hint else ""
            raise CheckpointError(
                f"{path}: embedding.weight has V={V} rows but vocab {cfg.vocab} has "
                f"{cfg.vocab_size} tokens{extra}"
            )
    shapes = torch_shapes(cfg)
    try:
        check_key_sets(set(state), set(shapes), "key")
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    for k, shape in shapes.items():
        if tuple(np.shape(state[k])) != shape:
            raise CheckpointError(
                f"{path}: {k} has shape {tuple(np.shape(state[k]))}, expected {shape}")
    _check_values(state, path)
    return {k: np.array(state[k], np.float32) for k in shapes}


def _init_hint(state: Mapping[str, np.ndarray], cfg: AltLASConfig) -> str:
    if not np.any(state["embedding.weight"][PAD_ID]):
        return "torch_default"
    if cfg.cell == "lstm":
        same = all(np.array_equal(state[f"lstm.bias_ih_l{k}"], state[f"lstm.bias_hh_l{k}"])
                   for k in range(cfg.num_layers))
        return "altlas" if same else "unknown"
    return "altlas"


def read_reference_model(path: str | Path, cfg: AltLASConfig | None = None) -> ReferenceModel:
    """Read `model_state.pth` (or any Variant A state_dict file io.read_torch accepts).

    Without `cfg` the config is inferred (R0/R1/RH by V); with `cfg` every key, shape and V must
    match it."""
    path = Path(path)
    state, _ = io.read_torch(path)
    if cfg is None:
        cfg, release, vocab = infer_config(state, path)
    else:
        release, vocab = cfg.release, cfg.vocab
    state = validate_model_state(state, cfg, path)
    return ReferenceModel(path, state, cfg, release, vocab, _init_hint(state, cfg))


@dataclasses.dataclass(frozen=True)
class ReferenceOptimizer:
    """A validated torch Adam file: `opt` in the torch train-state layout of `models.layout`
    ({step, exp_avg: {key: m}, exp_avg_sq: {key: v}}; step 0 = fresh, zero moments) and the
    group's lr / betas / eps."""

    opt: dict[str, Any]
    lr: float
    betas: tuple[float, float]
    eps: float

    @property
    def step(self) -> int:
        return int(self.opt["step"])


def _group(sd: Any, n_keys: int, source: str) -> Mapping[str, Any]:
    if not isinstance(sd, Mapping) or "state" not in sd or "param_groups" not in sd:
        raise CheckpointError(f"{source}: not a torch optimizer state_dict "
                              "(need 'state' and 'param_groups')")
    groups = sd["param_groups"]
    if not isinstance(groups, list | tuple) or len(groups) != 1 \
            or not isinstance(groups[0], Mapping):
        raise CheckpointError(f"{source}: expected exactly one param group")
    ids = groups[0].get("params")
    if not isinstance(ids, list | tuple):
        raise CheckpointError(f"{source}: param_groups[0] has no 'params' list")
    if len(ids) != n_keys:
        raise CheckpointError(f"{source}: param_groups[0].params has {len(ids)} entries, the model "
                              f"has {n_keys} parameters")
    if not isinstance(sd["state"], Mapping):
        raise CheckpointError(f"{source}: 'state' is not a dict")
    return groups[0]


def _moment(entry: Mapping[str, Any], slot: str, key: str, pid: Any,
            shape: tuple[int, ...], source: str) -> np.ndarray:
    if slot not in entry:
        raise CheckpointError(f"{source}: state[{pid}] ({key}) has no '{slot}'")
    x = io.to_numpy(entry[slot])
    if x.dtype != np.float32:
        raise CheckpointError(f"{source}: state[{pid}].{slot} ({key}) has dtype "
                              f"{x.dtype.name}, want float32")
    if tuple(x.shape) != shape:
        raise CheckpointError(f"{source}: state[{pid}].{slot} ({key}) has shape "
                              f"{tuple(x.shape)}, expected {shape}")
    if not np.all(np.isfinite(x)):
        raise CheckpointError(f"{source}: state[{pid}].{slot} ({key}) has NaN or Inf")
    return np.array(x, np.float32)


def optimizer_from_torch(sd: Any, cfg: AltLASConfig, run: AltLASRun,
                         source: str = "optimizer") -> ReferenceOptimizer:
    """Validate a torch Adam `state_dict()` for the model of `cfg` (altlas.md §7)."""
    shapes = torch_shapes(cfg)
    keys = list(shapes)
    group = _group(sd, len(keys), source)
    lr = float(group.get("lr", run.lr))
    betas_raw = group.get("betas", (run.beta1, run.beta2))
    betas = (float(betas_raw[0]), float(betas_raw[1]))
    eps = float(group.get("eps", run.eps))
    if (lr, betas, eps) != (run.lr, (run.beta1, run.beta2), run.eps):
        log.warning("%s: Adam lr/betas/eps %s differ from the config %s", source,
                    (lr, betas, eps), (run.lr, (run.beta1, run.beta2), run.eps))
    state = sd["state"]
    opt: dict[str, Any] = {"step": 0.0, "exp_avg": {}, "exp_avg_sq": {}}
    if len(state) == 0:
        for slot in ("exp_avg", "exp_avg_sq"):
            opt[slot] = {k: np.zeros(s, np.float32) for k, s in shapes.items()}
        return ReferenceOptimizer(opt, lr, betas, eps)
    if len(state) != len(keys):
        raise CheckpointError(f"{source}: optimizer state has {len(state)} entries, the model has "
                              f"{len(keys)} parameters")
    steps = {}
    for pid, key in zip(group["params"], keys, strict=True):
        entry = state.get(pid)
        if not isinstance(entry, Mapping):
            raise CheckpointError(f"{source}: state entry {pid} ({key}) missing")
        for slot in ("exp_avg", "exp_avg_sq"):
            opt[slot][key] = _moment(entry, slot, key, pid, shapes[key], source)
        if "step" not in entry:
            raise CheckpointError(f"{source}: state[{pid}] ({key}) has no 'step'")
        steps[key] = float(np.asarray(entry["step"].item() if hasattr(entry["step"], "item")
                                      else entry["step"]))
    distinct = sorted(set(steps.values()))
    if len(distinct) != 1:
        raise CheckpointError(f"{source}: Adam step counts differ between parameters {distinct}")
    if distinct[0] != int(distinct[0]) or distinct[0] < 1:
        raise CheckpointError(f"{source}: Adam step {distinct[0]} is not a positive integer")
    opt["step"] = float(distinct[0])
    return ReferenceOptimizer(opt, lr, betas, eps)


def optimizer_to_torch(opt: Mapping[str, Any], cfg: AltLASConfig, run: AltLASRun
                       ) -> dict[str, Any]:
    """Named Adam state -> torch `Adam.state_dict()` form (step 0 -> empty state, as torch
    before its first step), loadable by `torch.optim.Adam.load_state_dict`."""
    import torch

    keys = list(torch_shapes(cfg))
    group = {"lr": run.lr, "betas": (run.beta1, run.beta2), "eps": run.eps, "weight_decay": 0,
             "amsgrad": False, "maximize": False, "foreach": None, "capturable": False,
             "differentiable": False, "fused": None, "decoupled_weight_decay": False,
             "params": list(range(len(keys)))}
    state = {}
    step = float(np.asarray(opt["step"]))
    if step > 0:
        for i, k in enumerate(keys):
            state[i] = {"step": torch.tensor(step, dtype=torch.float32),
                        "exp_avg": torch.from_numpy(np.array(opt["exp_avg"][k], np.float32)),
                        "exp_avg_sq": torch.from_numpy(np.array(opt["exp_avg_sq"][k],
                                                                np.float32))}
    return {"state": state, "param_groups": [group]}


def read_reference_optimizer(path: str | Path, cfg: AltLASConfig, run: AltLASRun | None = None
                             ) -> ReferenceOptimizer:
    """Read a torch Adam `optimizer_state.pth` for the model of `cfg` (empty state = fresh)."""
    path = Path(path)
    return optimizer_from_torch(io.torch_load(path), cfg, run or AltLASRun(), str(path))


def read_reference_pair(
    model_path: str | Path, optimizer_path: str | Path | None = None,
    cfg: AltLASConfig | None = None, run: AltLASRun | None = None,
) -> tuple[ReferenceModel, ReferenceOptimizer | None]:
    """model_state.pth (+ optimizer_state.pth): model first, its config validates the optimizer."""
    ref = read_reference_model(model_path, cfg)
    opt = (None if optimizer_path is None else
           read_reference_optimizer(optimizer_path, ref.cfg, run))
    return ref, opt


def _atomic_torch_save(obj: Any, path: Path) -> None:
    import torch

    io.atomic_write(path, lambda p: torch.save(obj, str(p)))


def write_reference_model(path: str | Path, state: Mapping[str, np.ndarray],
                          cfg: AltLASConfig) -> None:
    """Bare state_dict (reference keys, float32) via torch.save, atomically."""
    import torch

    state = validate_model_state(state, cfg, path)
    _atomic_torch_save({k: torch.from_numpy(v.copy()) for k, v in state.items()}, Path(path))


def write_reference_optimizer(path: str | Path, opt: Mapping[str, Any], cfg: AltLASConfig,
                              run: AltLASRun) -> None:
    """torch Adam state_dict (loadable by `torch.optim.Adam.load_state_dict`), atomically."""
    _atomic_torch_save(optimizer_to_torch(opt, cfg, run), Path(path))
