"""AltLAS reference checkpoint files (spec altlas §7): the bare `model_state.pth` state_dict and
the torch Adam `optimizer_state.pth`, both read with `torch.load(weights_only=True)`; validation
with one-line `CheckpointError`s that name the file and the key; R0 (46-token) / R1 (63-token) /
RH (53-token) recognition by vocabulary size; export in the same layout.

Choices where the spec is silent (ours):
- The release is decided by V alone (46 -> R0/v0_46, 63 -> R1/v1_63, 53 -> RH/abstract_53); the
  inferred config starts from that release's preset (`r0`, `r1`, `rh`) with E, H, L and the cell
  read from the tensor shapes. `init_hint` ('altlas' when every LSTM bias_ih == bias_hh and
  embedding row 0 is non-zero, 'torch_default' when row 0 is exactly zero) is informational.
- Variant B files (`positional_encoding` key) are recognised and refused (not implemented).
- Optimizer param-group keys other than lr/betas/eps/params are ignored; lr/betas/eps that differ
  from the config only log a warning.
- Writers go through a sibling temp file and `os.replace` (atomic).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from twinframe.errors import CheckpointError
from twinframe.models.altlas import (
    CELLS,
    PAD_ID,
    PRESETS,
    VOCAB_SIZES,
    AltLASConfig,
    torch_shapes,
)
from twinframe.parity import io
from twinframe.parity.altlas import AdamSnapshot, adam_snapshot_from_torch, adam_snapshot_to_torch

log = logging.getLogger(__name__)

RELEASE_BY_V: dict[int, tuple[str, str, str]] = {
    46: ("R0", "v0_46", "r0"),
    63: ("R1", "v1_63", "r1"),
    53: ("RH", "abstract_53", "rh"),
}


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
    """(config, release, vocab name) implied by a reference state_dict."""
    cell, V, E, H, L = _layout(state, path)
    if V not in RELEASE_BY_V:
        known = ", ".join(f"{n} ({v})" for n, v in VOCAB_SIZES.items())
        raise CheckpointError(f"{path}: vocabulary size V={V} matches none of {known}")
    release, vocab, preset = RELEASE_BY_V[V]
    cfg = PRESETS[preset].replace(embed_dim=E, hidden_dim=H, num_layers=L, cell=cell)
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
    missing = [k for k in shapes if k not in state]
    extra = [k for k in state if k not in shapes]
    if missing:
        raise CheckpointError(f"{path}: missing key '{missing[0]}' ({len(missing)} missing in all)")
    if extra:
        raise CheckpointError(f"{path}: unexpected key '{extra[0]}' ({len(extra)} in all)")
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


def _torch_load(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling/zip error becomes one line
        raise CheckpointError(f"{path}: not a loadable torch file ({_first_line(e)})") from None


def read_reference_optimizer(path: str | Path, cfg: AltLASConfig) -> AdamSnapshot:
    """Read a torch Adam `optimizer_state.pth` for the model of `cfg` (empty state = fresh)."""
    path = Path(path)
    return adam_snapshot_from_torch(_torch_load(path), cfg, str(path))


def read_reference_pair(
    model_path: str | Path, optimizer_path: str | Path | None = None,
    cfg: AltLASConfig | None = None,
) -> tuple[ReferenceModel, AdamSnapshot | None]:
    """model_state.pth (+ optimizer_state.pth): model first, its config validates the optimizer."""
    ref = read_reference_model(model_path, cfg)
    opt = None if optimizer_path is None else read_reference_optimizer(optimizer_path, ref.cfg)
    return ref, opt


def _atomic_torch_save(obj: Any, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_reference_model(path: str | Path, state: Mapping[str, np.ndarray],
                          cfg: AltLASConfig) -> None:
    """Bare state_dict (reference keys, float32) via torch.save, atomically."""
    import torch

    state = validate_model_state(state, cfg, path)
    _atomic_torch_save({k: torch.from_numpy(v.copy()) for k, v in state.items()}, Path(path))


def write_reference_optimizer(path: str | Path, snap: AdamSnapshot, cfg: AltLASConfig) -> None:
    """torch Adam state_dict (loadable by `torch.optim.Adam.load_state_dict`), atomically."""
    _atomic_torch_save(adam_snapshot_to_torch(snap, cfg), Path(path))


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]
