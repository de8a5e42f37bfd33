"""Run a model's parity levels and the generic checkpoint round trip (L6); score every tensor.

Nothing here knows which model it runs: a `ModelSpec` supplies the table, the canonical init
and the per-level comparison thunks.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from twinframe.parity import io, tolerances
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


@dataclasses.dataclass
class CurveResult:
    records: list[Record]
    curves: dict[str, dict]


CURVE_METRICS = ("loss", "output_loss", "q_act_loss", "cell_acc_with_givens")


def run_curve(spec: ModelSpec, cfg, steps: int, label: str = "",
              progress: Callable[[str], None] | None = None) -> CurveResult:
    """L5: both frameworks in lockstep for `steps` steps on identical batches and noise.

    Per-step metric series are compared as a whole (L5.loss); the note names the first step at
    which a series left its tolerance. Final parameters are compared per leaf (L5.params)."""
    configure_jax_for_parity()
    lock = spec.curve(cfg)
    metrics = getattr(lock, "CURVE_METRICS", CURVE_METRICS)
    tol = tolerances.get("L5.loss")
    series_t: dict[str, list[float]] = {k: [] for k in metrics}
    series_j: dict[str, list[float]] = {k: [] for k in metrics}
    notes: list[str] = []
    t0 = time.perf_counter()
    for i in range(steps):
        mt, mj, note = lock.step()
        for k in metrics:
            series_t[k].append(mt[k])
            series_j[k].append(mj[k])
        if note:
            notes.append(f"step {i + 1}: {note}")
        if progress and (i + 1) % 10 == 0:
            progress(f"{spec.name} L5{label}: step {i + 1}/{steps}")
    tag = f"curve{label}"
    comps = []
    for k in metrics:
        ref, cand = np.asarray(series_t[k]), np.asarray(series_j[k])
        bad = np.flatnonzero(np.abs(cand - ref) > tol.atol + tol.rtol * np.abs(ref))
        note = f"first exceeds at step {bad[0] + 1}" if bad.size else f"{steps} steps"
        comps.append(Comparison("L5", f"{tag}.{k}[1..{steps}]", ref, cand, "L5.loss",
                                note=note))
    mis = getattr(lock, "halt_mismatches", 0)
    comps.append(Comparison("L5", f"{tag}.halted_mask_mismatches", np.zeros(1), np.array([mis]),
                            "L3.decision", note="; ".join(notes[:3])))
    pt, pj = lock.params()
    comps += [Comparison("L5", f"{tag}.params.{k}", pt[k], pj[k], "L5.params") for k in pt]
    records = [score(spec.name, c) for c in comps]
    loss_t, loss_j = series_t["loss"], series_j["loss"]
    failing = [r.name for r in records if not r.passed]
    summary = (f"{steps} lockstep steps in {time.perf_counter() - t0:.1f}s, lr {cfg.lr:g}; "
               f"max |loss diff| {np.abs(np.subtract(loss_t, loss_j)).max():.2e}; "
               f"halted-mask mismatches {mis}; "
               + ("all within tolerance" if not failing else f"FAILING: {', '.join(failing[:3])}"))
    curves = {f"{spec.name}{label}": {
        "torch_loss": loss_t, "jax_loss": loss_j,
        "abs_diff": [abs(a - b) for a, b in zip(loss_t, loss_j, strict=True)],
        "torch_cell_acc": series_t.get("cell_acc_with_givens", []),
        "jax_cell_acc": series_j.get("cell_acc_with_givens", []), "summary": summary}}
    return CurveResult(records, curves)


def run_switch(spec: ModelSpec, cfg, steps: int, src: str, dst: str) -> CurveResult:
    """Mid-training switch: `steps` steps in `src`, checkpoint to disk, convert model + optimizer
    + carry + data-stream state to `dst`, continue `steps` steps there; compare with `src`
    continuing the same steps (L5 tolerances)."""
    from twinframe.parity.files import convert_train_state
    from twinframe.training import checkpoint

    configure_jax_for_parity()
    a = spec.trainer(cfg, src)
    for _ in range(steps):
        a.train_step()
    with tempfile.TemporaryDirectory() as d:
        path = checkpoint.save(d, a.export_state(), keep=1)
        state = convert_train_state(checkpoint.load(path), spec.table(cfg), dst)
    b = spec.trainer(cfg, dst)
    b.import_state(state)
    ref = [a.train_step()["loss"] for _ in range(steps)]
    cand = [b.train_step()["loss"] for _ in range(steps)]
    tol = tolerances.get("L5.loss")
    r, c = np.asarray(ref), np.asarray(cand)
    bad = np.flatnonzero(np.abs(c - r) > tol.atol + tol.rtol * np.abs(r))
    note = f"first exceeds at step {steps + bad[0] + 1}" if bad.size else ""
    tag = f"switch.{src}->{dst}"
    comps = [Comparison("L5", f"{tag}.loss[{steps + 1}..{2 * steps}]", r, c, "L5.loss",
                        note=note)]
    pa, pb = a.params_torch_layout(), b.params_torch_layout()
    comps += [Comparison("L5", f"{tag}.params.{k}", pa[k], pb[k], "L5.params") for k in pa]
    records = [score(spec.name, x) for x in comps]
    summary = (f"{steps} steps in {src}, checkpoint converted to {dst}, {steps} more steps; "
               f"max |loss diff| vs {src} continuing: {float(np.abs(c - r).max()):.2e}")
    curves = {f"{spec.name} switch {src}->{dst}": {
        "torch_loss" if src == "torch" else "jax_loss": ref,
        "jax_loss" if src == "torch" else "torch_loss": cand,
        "abs_diff": np.abs(c - r).tolist(), "x_start": steps + 1, "summary": summary}}
    return CurveResult(records, curves)
