"""Run a model's parity levels and the generic ones: the checkpoint round trip (L6), the L5
lockstep curve (with its measured noise floor) and the mid-training framework switch.

Nothing here knows which model it runs: the `ModelSpec` supplies the layout, the canonical init,
the engines, the host, the per-level comparison thunks and the curve's declared metrics.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from twinframe.contract import Host, ModelSpec, StateDict
from twinframe.models.layout import convert_train_state
from twinframe.parity import tolerances
from twinframe.parity.compare import Comparison, Record, score
from twinframe.store import checkpoint, io
from twinframe.training.runner import Lockstep, Trainer

log = logging.getLogger(__name__)


def configure_jax_for_parity() -> None:
    """f32 parity needs full-precision matmuls (TF32 is JAX's default on GPUs)."""
    import jax

    jax.config.update("jax_default_matmul_precision", "highest")


def roundtrip(spec: ModelSpec, cfg: Any, seed: int, workdir: Path) -> list[Comparison]:
    """L6: torch -> .safetensors -> JAX -> orbax -> JAX -> .npz -> JAX -> .pt -> torch."""
    state = spec.canonical_init(cfg, seed)
    tab = spec.layout(cfg).table
    cfgd = cfg.to_dict()
    io.write_torch(workdir / "a.safetensors", state, spec.name, cfgd)
    s1, _ = io.read_torch(workdir / "a.safetensors")
    io.write_jax(workdir / "b.orbax", tab.torch_to_tree(s1), spec.name, cfgd)
    t2, _ = io.read_jax(workdir / "b.orbax")
    io.write_jax(workdir / "c.npz", t2, spec.name, cfgd)
    t3, _ = io.read_jax(workdir / "c.npz")
    io.write_torch(workdir / "d.pt", tab.tree_to_torch(t3), spec.name, cfgd)
    s4, _ = io.read_torch(workdir / "d.pt")
    bits = {k: (state[k].reshape(-1).view(np.uint32), s4[k].reshape(-1).view(np.uint32))
            for k in state}  # reshape: 0-d int64 counters view as 2 words
    return [Comparison("L6", f"roundtrip.{k}", a, b, "L6.roundtrip") for k, (a, b) in bits.items()]


def run(
    spec: ModelSpec,
    cfg: Any,
    run_cfg: Any,
    only: set[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Record]:
    """Every level of `spec` at `cfg` (or the subset `only`), plus L6. Returns scored records."""
    configure_jax_for_parity()
    thunks = dict(spec.parity_levels(cfg, run_cfg))
    with tempfile.TemporaryDirectory() as d:
        thunks["L6"] = lambda: roundtrip(spec, cfg, run_cfg.seed, Path(d))
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
    # {framework: torch-layout model state at the end of the main run}, for models with
    # `visualize` (the report's pictures)
    states: dict[str, StateDict] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class LockstepRun:
    """Per-step series of the declared curve metrics of both engines, final params, notes."""

    torch: dict[str, list[float]]
    jax: dict[str, list[float]]
    params: tuple[StateDict, StateDict]
    mismatches: int
    notes: list[str]
    states: dict[str, StateDict] = dataclasses.field(default_factory=dict)
    start: StateDict = dataclasses.field(default_factory=dict)  # trained params at step 0
    run: Any = None  # the run config it ran with
    steps_total: int | None = None  # steps from `start` to `params` (default: the series length)

    @property
    def steps(self) -> int:
        return self.steps_total or len(next(iter(self.torch.values()), []))


def ulp_up(state: StateDict, keys: tuple[str, ...]) -> StateDict:
    """`state` with every element of `keys` moved one ulp toward +inf (a minimal perturbation)."""
    out = dict(state)
    for k in keys:
        x = np.asarray(state[k])
        out[k] = np.asarray(np.nextafter(x, np.array(np.inf, x.dtype)))  # 0-d stays an array
    return out


def perturbed_start(spec: ModelSpec, cfg: Any, run: Any) -> StateDict:
    """The canonical init with every trained tensor moved by one ulp (the noise-floor start);
    a tensor registered under two keys (an alias row: same path) moves under both."""
    rows = spec.layout(cfg).table.rows
    return ulp_up(spec.canonical_init(cfg, run.seed),
                  tuple(r.torch_key for r in rows if r.path[0] == "params"))


def lockstep(spec: ModelSpec, cfg: Any, run: Any, steps: int, state: StateDict | None = None,
             progress: Callable[[int], None] | None = None, host: Host | None = None,
             keep_states: bool = False) -> LockstepRun:
    """Both engines on one host (default: the model's own) for `steps` steps from `state`
    (default: canonical init); `keep_states`: also each engine's whole model state at the end
    (torch layout)."""
    lock = Lockstep(spec, cfg, run, host=host, state=state)
    metrics = spec.curve.metrics
    series: tuple[dict[str, list[float]], dict[str, list[float]]] = (
        {k: [] for k in metrics}, {k: [] for k in metrics})
    notes: list[str] = []
    try:
        start = lock.params()[0]
        for i in range(steps):
            mt, mj, note = lock.step()
            for k in metrics:
                series[0][k].append(float(mt[k]))
                series[1][k].append(float(mj[k]))
            if note:
                notes.append(f"step {i + 1}: {note}")
            if progress:
                progress(i + 1)
        states = {}
        for e in lock.engines if keep_states else ():
            model = e.export_state()["model"]
            states[e.framework] = (model if e.framework == "torch" else
                                   spec.layout(cfg).table.tree_to_torch(model))
        return LockstepRun(series[0], series[1], lock.params(), lock.mismatches, notes, states,
                           start, run)
    finally:
        lock.close()


def _first_exceeding(ref: np.ndarray, cand: np.ndarray, tol_key: str) -> np.ndarray:
    tol = tolerances.get(tol_key)
    return np.flatnonzero(np.abs(cand - ref) > tol.atol + tol.rtol * np.abs(ref))


def params_against_floor(level: str, tag: str, main: LockstepRun, pert: LockstepRun
                         ) -> list[Comparison]:
    """L5 params: strict (L5.params) where each framework's own 1-ulp-start sensitivity after
    the same steps is below the strict bound, else judged against 2x that noise floor."""
    (pt, pj), (qt, qj) = main.params, pert.params
    strict = tolerances.get("L5.params")
    out = []
    for k in pt:
        floor = max(float(np.abs(qt[k].astype(np.float64) - pt[k]).max(initial=0.0)),
                    float(np.abs(qj[k].astype(np.float64) - pj[k]).max(initial=0.0)))
        bound = strict.rtol * float(np.abs(pt[k]).max(initial=0.0)) + strict.atol
        note = f"1-ulp-start noise floor {floor:.2e}"
        name = f"{tag}.params.{k}"
        if floor <= bound:
            out.append(Comparison(level, name, pt[k], pj[k], "L5.params", note=note))
        else:
            out.append(Comparison(level, name, pt[k], pj[k], "L5.params_floor", note=note,
                                  scale=floor))
    return out


def curve_comparisons(spec: ModelSpec, level: str, tag: str, main: LockstepRun,
                      pert: LockstepRun | None) -> list[Comparison]:
    """The L5 judgement of a lockstep run: every declared metric series (L5.loss), the count
    of decision mismatches (exactly 0), final params against the 1-ulp-start floor."""
    comps = []
    for k in spec.curve.metrics:
        ref, cand = np.asarray(main.torch[k]), np.asarray(main.jax[k])
        bad = _first_exceeding(ref, cand, "L5.loss")
        note = f"first exceeds at step {bad[0] + 1}" if bad.size else f"{ref.size} steps"
        comps.append(Comparison(level, f"{tag}.{k}[1..{ref.size}]", ref, cand, "L5.loss",
                                note=note))
    comps.append(Comparison(level, f"{tag}.{spec.curve.mismatch_label}", np.zeros(1),
                            np.array([main.mismatches]), "L5.mismatches",
                            note="; ".join(main.notes[:3])))
    judge = spec.curve.judge_params or params_against_floor
    return comps + judge(level, tag, main, pert)


def run_curve(spec: ModelSpec, cfg: Any, run: Any, steps: int, label: str = "",
              progress: Callable[[str], None] | None = None) -> CurveResult:
    """L5: both frameworks in lockstep for `steps` steps on identical batches and noise, and
    again from a start perturbed by one ulp (the noise floor of the final parameters).

    Per-step series of the declared metrics are compared as a whole (L5.loss); the note names
    the first step at which a series left its tolerance. Decision mismatches (the model's
    `mismatch_label`) must be zero. Final parameters: `params_against_floor`."""
    configure_jax_for_parity()
    t0 = time.perf_counter()

    def tick(i: int) -> None:
        if progress and i % 10 == 0:
            progress(f"{spec.name} L5{label}: step {i}/{steps}")

    main = lockstep(spec, cfg, run, steps, progress=tick, keep_states=spec.visualize is not None)
    # the 1-ulp-start run is the default judgement's noise floor; a model's own rule needs none
    pert = (lockstep(spec, cfg, run, steps, perturbed_start(spec, cfg, run))
            if spec.curve.judge_params is None else None)
    comps = curve_comparisons(spec, "L5", f"curve{label}", main, pert)
    records = [score(spec.name, c) for c in comps]
    loss_t, loss_j = main.torch["loss"], main.jax["loss"]
    failing = [r.name for r in records if not r.passed]
    summary = (f"{steps} lockstep steps in {time.perf_counter() - t0:.1f}s, lr {run.lr:g}; "
               f"max |loss diff| {np.abs(np.subtract(loss_t, loss_j)).max():.2e}; "
               f"{spec.curve.mismatch_label} {main.mismatches}; "
               + ("all within tolerance" if not failing else f"FAILING: {', '.join(failing[:3])}"))
    acc = spec.curve.accuracy
    curves = {f"{spec.name}{label}": {
        "torch_loss": loss_t, "jax_loss": loss_j,
        "abs_diff": [abs(a - b) for a, b in zip(loss_t, loss_j, strict=True)],
        "accuracy_name": acc or "",
        "torch_acc": main.torch.get(acc, []) if acc else [],
        "jax_acc": main.jax.get(acc, []) if acc else [],
        "series": {k: {"torch": main.torch[k], "jax": main.jax[k]}
                   for k in spec.curve.metrics if k != "loss"},
        "summary": summary}}
    return CurveResult(records, curves, main.states)


def run_switch(spec: ModelSpec, cfg: Any, run: Any, steps: int, src: str, dst: str
               ) -> CurveResult:
    """Mid-training switch: `steps` steps in `src`, checkpoint to disk, convert model + optimizer
    + carry + host state to `dst`, continue `steps` steps there; compare with `src`
    continuing the same steps (L5 tolerances)."""
    configure_jax_for_parity()
    a = Trainer(spec, cfg, run, src)
    b = Trainer(spec, cfg, run, dst)
    try:
        start = a.params_torch_layout()
        for _ in range(steps):
            a.train_step()
        with tempfile.TemporaryDirectory() as d:
            path = checkpoint.save(d, a.export_state(), keep=1)
            state = convert_train_state(checkpoint.load(path), spec.layout(cfg), dst)
        b.import_state(state)
        ref = [a.train_step()["loss"] for _ in range(steps)]
        cand = [b.train_step()["loss"] for _ in range(steps)]
        pa, pb = a.params_torch_layout(), b.params_torch_layout()
    finally:
        a.close()
        b.close()
    r, c = np.asarray(ref), np.asarray(cand)
    bad = _first_exceeding(r, c, "L5.loss")
    note = f"first exceeds at step {steps + bad[0] + 1}" if bad.size else ""
    tag = f"switch.{src}->{dst}"
    comps = [Comparison("L5", f"{tag}.loss[{steps + 1}..{2 * steps}]", r, c, "L5.loss",
                        note=note)]
    if spec.curve.judge_params is not None:  # the model's own rule for final parameters
        both = LockstepRun({"loss": ref}, {"loss": cand}, (pa, pb), 0, [], start=start, run=run,
                           steps_total=2 * steps)
        comps += spec.curve.judge_params("L5", tag, both, None)
    else:
        comps += [Comparison("L5", f"{tag}.params.{k}", pa[k], pb[k], "L5.params") for k in pa]
    records = [score(spec.name, x) for x in comps]
    summary = (f"{steps} steps in {src}, checkpoint converted to {dst}, {steps} more steps; "
               f"max |loss diff| vs {src} continuing: {float(np.abs(c - r).max()):.2e}")
    curves = {f"{spec.name} switch {src}->{dst}": {
        "torch_loss" if src == "torch" else "jax_loss": ref,
        "jax_loss" if src == "torch" else "torch_loss": cand,
        "abs_diff": np.abs(c - r).tolist(), "x_start": steps + 1, "summary": summary}}
    return CurveResult(records, curves)
