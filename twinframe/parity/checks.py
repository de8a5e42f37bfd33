"""Run a model's parity levels and the generic checkpoint round trip (L6); score every tensor.

Nothing here knows which model it runs: a `ModelSpec` supplies the table, the canonical init
and the per-level comparison thunks.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from twinframe.parity import io
from twinframe.parity.compare import Comparison, Record, score

if TYPE_CHECKING:
    from twinframe.registry import ModelSpec

log = logging.getLogger(__name__)


def configure_jax_for_parity() -> None:
    """f32 parity needs full-precision matmuls (TF32 is JAX's GPU default, spec trap 8)."""
    import jax

    jax.config.update("jax_default_matmul_precision", "highest")


def roundtrip(spec: ModelSpec, cfg, workdir: Path) -> list[Comparison]:
    """L6: torch -> .safetensors -> JAX -> orbax -> JAX -> .npz -> JAX -> .pt -> torch."""
    state = spec.canonical_init(cfg)
    tab = spec.table(cfg)
    cfgd = cfg.to_dict()
    io.write_torch(workdir / "a.safetensors", state, spec.name, cfgd)
    s1, _ = io.read_torch(workdir / "a.safetensors")
    io.write_jax(workdir / "b.orbax", tab.torch_to_tree(s1), spec.name, cfgd)
    t2, _ = io.read_jax(workdir / "b.orbax")
    io.write_jax(workdir / "c.npz", t2, spec.name, cfgd)
    t3, _ = io.read_jax(workdir / "c.npz")
    io.write_torch(workdir / "d.pt", tab.tree_to_torch(t3), spec.name, cfgd)
    s4, _ = io.read_torch(workdir / "d.pt")
    bits = {k: (state[k].view(np.uint32), s4[k].view(np.uint32)) for k in state}
    return [Comparison("L6", f"roundtrip.{k}", a, b, "L6.roundtrip") for k, (a, b) in bits.items()]


def run(
    spec: ModelSpec,
    cfg,
    only: set[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Record]:
    """Every level of `spec` at `cfg` (or the subset `only`), plus L6. Returns scored records."""
    configure_jax_for_parity()
    thunks = dict(spec.parity_levels(cfg))
    with tempfile.TemporaryDirectory() as d:
        thunks["L6"] = lambda: roundtrip(spec, cfg, Path(d))
        records: list[Record] = []
        for level, thunk in thunks.items():
            if only and level not in only:
                continue
            t0 = time.perf_counter()
            comps = thunk()
            records += [score(spec.name, c) for c in comps]
            msg = f"{spec.name} {level}: {len(comps)} tensors in {time.perf_counter() - t0:.1f}s"
            log.info(msg)
            if progress:
                progress(msg)
    return records
