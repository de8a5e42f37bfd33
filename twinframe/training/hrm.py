"""HRM-ACT training (hrm.md §6.1-§6.4): a framework-neutral host (Sudoku stream,
curriculum, slot replacement, exploration noise) driving one engine, or both in lockstep.

Engines hold params, optimizer state and the z carry on their device; the host holds inputs,
targets, segment counters and slot ids as NumPy, so both frameworks see identical data. The
train state layout (model table, carry z_H/z_L, MLX AdamW moments) is `models.hrm.layout`.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from twinframe.contract import StepResult
from twinframe.functional import sharding
from twinframe.models.hrm import Dot, HRMConfig, HRMRun, step_dots, train_step_flops
from twinframe.tasks import sudoku
from twinframe.tasks.prefetch import PuzzlePrefetch
from twinframe.training import guard
from twinframe.training.engine import BenchStep, JaxEngine, TorchEngine

if TYPE_CHECKING:
    from twinframe.contract import ModelSpec


class HRMHost:
    """Slots, Sudoku stream and curriculum of one run (framework-neutral). Puzzles come from
    `PuzzlePrefetch`: generated ahead in worker processes, the same as generated inline."""

    def __init__(self, cfg: HRMConfig, run: HRMRun) -> None:
        B, S = run.batch_size, cfg.seq_len
        self.cfg, self.run = cfg, run
        self.t = 0
        self.stream = sudoku.SudokuStream(run.seed)
        self.curriculum = sudoku.Curriculum()
        self.prefetch = PuzzlePrefetch(run.seed, B)
        self.inputs = np.zeros((B, S), np.int32)
        self.targets = np.zeros((B, S), np.int32)
        self.segments = np.zeros(B, np.int32)
        self.slot_ids = np.zeros((B, 2), np.int64)  # (d_index, j) per slot
        self.prefetch.plan(self.curriculum.stage, self.stream.counters)
        for b in range(B):
            self.replace(b)
        self.prefetch.plan(self.curriculum.stage, self.stream.counters)

    def replace(self, b: int) -> None:
        """hrm.md §6.1 replacement of slot b (the engine resets its z carry separately)."""
        d, j = self.stream.next_id(self.curriculum.stage)
        self.inputs[b], self.targets[b] = self.prefetch.get(d, j)
        self.segments[b] = 0
        self.slot_ids[b] = (d, j)
        self.curriculum.total_puzzles += 1

    def begin_step(self) -> dict[str, np.ndarray]:
        """Items (1)-(2) of hrm.md §6.1: returns the step's injected noise."""
        self.t += 1
        self.curriculum.begin_step()
        run = self.run
        return sudoku.exploration_noise(run.seed, self.t, run.batch_size, self.cfg.halt_max_steps)

    def end_step(self, halted: np.ndarray, cell_acc: float) -> None:
        """Items (4)-(5): advance segments, replace halted slots (ascending), curriculum."""
        self.segments += 1
        for b in np.flatnonzero(halted):
            self.replace(int(b))
        self.curriculum.end_step(cell_acc)
        self.prefetch.plan(self.curriculum.stage, self.stream.counters)  # next step's, ahead

    def step(self, engines: Sequence[HRMTorchEngine | HRMJaxEngine]) -> StepResult:
        """hrm.md §6.1 items 1-5 on every engine; engines[0]'s halted mask replaces slots for
        all."""
        noise = self.begin_step()
        outs, times = [], []
        for e in engines:
            t0 = time.perf_counter()
            outs.append(e.step(self, noise))  # device_get / .item() synchronise
            times.append(time.perf_counter() - t0)
        m0, h0 = outs[0]
        mismatches = sum(int((h != h0).sum()) for _, h in outs[1:])
        for e in engines:
            e.reset(h0)
        self.end_step(h0, m0["cell_acc_with_givens"])
        records = [log_record(self, m, h0, dt, self.run.lr) for (m, _), dt in
                   zip(outs, times, strict=True)]
        note = f"{mismatches} halted-mask mismatch(es)" if mismatches else ""
        return StepResult(records, mismatches, note)

    def state_dict(self) -> dict[str, Any]:
        return {
            "t": self.t,
            "stream": self.stream.state_dict(),
            "curriculum": self.curriculum.state_dict(),
            "inputs": self.inputs.tolist(),
            "targets": self.targets.tolist(),
            "segments": self.segments.tolist(),
            "slot_ids": self.slot_ids.tolist(),
        }

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.t = int(s["t"])
        self.stream.load_state_dict(s["stream"])
        self.curriculum.load_state_dict(s["curriculum"])
        self.inputs = np.asarray(s["inputs"], np.int32)
        self.targets = np.asarray(s["targets"], np.int32)
        self.segments = np.asarray(s["segments"], np.int32)
        self.slot_ids = np.asarray(s["slot_ids"], np.int64)
        self.prefetch.plan(self.curriculum.stage, self.stream.counters)

    def close(self) -> None:
        """Drop the puzzles queued ahead (the worker pool is shared and stays)."""
        self.prefetch.close()


def log_record(host: HRMHost, m: dict[str, float], halted: np.ndarray, dt: float,
               lr: float) -> dict[str, Any]:
    """One hrm.md §6.4 record (after the replacements and the curriculum update of step t)."""
    n_halt = int(halted.sum())
    cur = host.curriculum
    return {
        "step": host.t, "loss": m["loss"], "output_loss": m["output_loss"],
        "q_act_loss": m["q_act_loss"], "q_halt_loss": m["q_halt_loss"],
        "q_continue_loss": m["q_continue_loss"],
        "cell_acc_with_givens": m["cell_acc_with_givens"],
        "blank_cell_acc": m["blank_cell_acc"], "seq_exact_acc": m["seq_exact_acc"],
        "halted_count": n_halt,
        "halted_exact_acc": m["halted_correct_sum"] / n_halt if n_halt else None,
        "mean_segments_at_halt": m["halted_segments_sum"] / n_halt if n_halt else None,
        "q_halt_acc": m["q_halt_acc"], "total_puzzles": cur.total_puzzles,
        "curriculum_stage": cur.stage, "rolling_acc": cur.rolling_acc,
        "steps_since_graduation": cur.steps_since_graduation, "lr": lr,
        "grad_global_norm": m["grad_global_norm"], guard.NONFINITE_KEY: m.get(guard.NONFINITE_KEY),
        "step_time_s": dt,
        "steps_per_s": 1.0 / dt if dt > 0 else None,
        "puzzles_per_s": n_halt / dt if dt > 0 else math.nan,
    }


# ---------------------------------------------------------------------------------------------
# Engines

NOISE_KEYS = ("explore_u", "min_halt_draw")


def host_noise(host: HRMHost) -> dict[str, np.ndarray]:
    """Exploration noise of step 1 of host's run (what `bench_step` feeds every step)."""
    return sudoku.exploration_noise(host.run.seed, 1, host.run.batch_size,
                                    host.cfg.halt_max_steps)


def check_step_inputs(cfg: HRMConfig, run: HRMRun, host: HRMHost, noise: dict) -> None:
    """The host arrays of one step, before either framework sees them (`guard.BadInput`)."""
    B, S, M, V = run.batch_size, cfg.seq_len, cfg.halt_max_steps, cfg.vocab_size
    guard.check_ints("inputs", host.inputs, (B, S), 0, V)
    guard.check_ints("targets", host.targets, (B, S), 0, V)
    guard.check_ints("segments", host.segments, (B,), 0, M + 1)
    if sorted(noise) != sorted(NOISE_KEYS):
        raise guard.BadInput(f"noise: keys {sorted(noise)}, expected {list(NOISE_KEYS)}")
    guard.check_floats("noise explore_u", noise["explore_u"], (B,), 0.0, 1.0)
    guard.check_ints("noise min_halt_draw", noise["min_halt_draw"], (B,), 0, M + 1)


def _loss_terms(m: dict[str, float]) -> dict[str, float]:
    """The step's loss terms, components before the total."""
    terms = {k: v for k, v in m.items() if k.endswith("_loss")}
    return {**terms, "loss": m["loss"]}


class BenchDots:
    """`twinframe bench`'s optional `bench_dots()`: the step's matmul shapes (both engines)."""

    cfg: HRMConfig
    run: HRMRun

    def bench_dots(self) -> list[Dot]:
        return step_dots(self.cfg, self.run.batch_size)


class HRMTorchEngine(BenchDots, TorchEngine):
    """Eager PyTorch: HRM module + MLX AdamW + z carry."""

    def __init__(self, spec: ModelSpec, cfg: HRMConfig, run: HRMRun,
                 state: dict[str, np.ndarray] | None = None) -> None:
        super().__init__(spec, cfg, run, state)
        from twinframe.torch_ref import hrm as t_hrm

        self.t_hrm = t_hrm
        empty = self.torch.zeros(run.batch_size, cfg.seq_len, dtype=self.torch.int32,
                                 device=self.device)
        c = self.model.initial_carry(empty, empty)
        self.z_H, self.z_L = c.z_H, c.z_L

    def step(self, host: HRMHost, noise: dict) -> tuple[dict[str, float], np.ndarray]:
        """One step; a non-finite loss or gradient norm leaves params, optimizer state and
        carry as they were and names the first non-finite tensor (metrics['nonfinite'])."""
        check_step_inputs(self.cfg, self.run, host, noise)
        torch = self.torch
        carry = self.t_hrm.HRMCarry(self.z_H, self.z_L, self.dev(host.segments),
                                    self.dev(host.inputs), self.dev(host.targets))
        self.opt.zero_grad(set_to_none=True)
        out = self.t_hrm.act_loss(self.model, carry, {k: self.dev(v) for k, v in noise.items()})
        out.loss.backward()
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        gnorm = torch.sqrt(sum((g.float() ** 2).sum() for g in grads))
        metrics: dict[str, Any] = {k: float(v) for k, v in out.metrics.items()}
        metrics["grad_global_norm"] = float(gnorm)
        if guard.finite_scalars(metrics["loss"], metrics["grad_global_norm"]):
            self.opt.step()
            self.z_H, self.z_L = out.carry.z_H, out.carry.z_L
            metrics[guard.NONFINITE_KEY] = None
        else:
            metrics[guard.NONFINITE_KEY] = self._nonfinite(metrics)
        return metrics, out.halted.cpu().numpy().copy()

    def bench_step(self, host: HRMHost) -> BenchStep:
        """`twinframe bench`: one step (forward, target forward, backward, optimizer update) on
        host's current batch and step-1 noise, copied to the device once; no metric fetch."""
        noise = {k: self.dev(v) for k, v in host_noise(host).items()}
        batch = (self.dev(host.segments), self.dev(host.inputs), self.dev(host.targets))

        def run() -> None:
            carry = self.t_hrm.HRMCarry(self.z_H, self.z_L, *batch)
            self.opt.zero_grad(set_to_none=True)
            out = self.t_hrm.act_loss(self.model, carry, noise)
            out.loss.backward()
            self.opt.step()
            self.z_H, self.z_L = out.carry.z_H, out.carry.z_L

        return BenchStep(run, train_step_flops(self.cfg, self.run.batch_size))

    def _nonfinite(self, metrics: dict[str, float]) -> str:
        from twinframe.store.io import to_numpy

        named = dict(self.model.named_parameters())
        grads = {n: to_numpy(named[n].grad) for n in self.names if named[n].grad is not None}
        return guard.nonfinite_report(
            [("parameter", {n: to_numpy(named[n]) for n in self.names}),
             ("carry", self.export_carry()), ("loss term", _loss_terms(metrics)),
             ("gradient", grads)], metrics["grad_global_norm"])

    def reset(self, mask: np.ndarray) -> None:
        """z_H, z_L of masked slots <- the (T-rounded) initial states."""
        if not mask.any():
            return
        m = self.dev(mask)
        self.z_H[m] = self.model.initial_high_level.detach().to(self.z_H.dtype)
        self.z_L[m] = self.model.initial_low_level.detach().to(self.z_L.dtype)

    def export_carry(self) -> dict[str, np.ndarray]:
        from twinframe.store.io import to_numpy

        return {"z_H": to_numpy(self.z_H.float()), "z_L": to_numpy(self.z_L.float())}

    def import_carry(self, carry: dict[str, np.ndarray]) -> None:
        dt = self.z_H.dtype
        self.z_H = self.dev(np.asarray(carry["z_H"], np.float32)).to(dt)
        self.z_L = self.dev(np.asarray(carry["z_L"], np.float32)).to(dt)


@functools.lru_cache(maxsize=8)
def _jax_functions(spec: ModelSpec, cfg: HRMConfig, run: HRMRun):
    """(jitted guarded train step, jitted slot reset, the guarded step unjitted with its inner
    step's jit bypassed: for tracing it afresh, e.g. with loops unrolled) per config pair, so
    every engine of one config in a process shares one compilation.

    The guarded step is `spec.make_train_step` plus a finite flag (loss and gradient norm),
    computed on the device and fetched with the metrics (no extra host sync); where it is
    False, params, optimizer state and carry keep their values from before the step. It also
    returns `packed` f32 [n_metrics + 1 + B]: the metrics (sorted by name), the flag and the
    halted mask, so the host fetches one array per step."""
    import jax
    import jax.numpy as jnp

    jitted_inner = spec.make_train_step(cfg, spec.jax_optimizer(run))

    def guarded(params, opt_state, consts, carry, noise, inner=jitted_inner):
        new_p, new_s, out = inner(params, opt_state, consts, carry, noise)
        ok = jnp.isfinite(out.metrics["loss"]) & jnp.isfinite(out.metrics["grad_global_norm"])

        def keep(new, old):
            return jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, old)

        c = out.carry._replace(z_H=keep(out.carry.z_H, carry.z_H),
                               z_L=keep(out.carry.z_L, carry.z_L))
        f32 = jnp.float32
        packed = jnp.concatenate([jnp.stack([out.metrics[k].astype(f32)
                                             for k in sorted(out.metrics)]),
                                  ok.astype(f32)[None], out.halted.astype(f32)])
        return keep(new_p, params), keep(new_s, opt_state), out._replace(carry=c), ok, packed

    def reset(z_H, z_L, mask, consts):
        m = mask[:, None, None]
        return (jnp.where(m, consts["initial_high_level"].astype(z_H.dtype), z_H),
                jnp.where(m, consts["initial_low_level"].astype(z_L.dtype), z_L))

    def traced_anew(*args):  # the same step, its inner jit bypassed (re-traced every time)
        return guarded(*args, inner=getattr(jitted_inner, "__wrapped__", jitted_inner))

    return (jax.jit(guarded, donate_argnums=(0, 1, 3)), jax.jit(reset, donate_argnums=(0, 1)),
            traced_anew)


class HRMJaxEngine(BenchDots, JaxEngine):
    """JAX: one jitted train step (donated params/opt state/carry) + jitted slot reset; the
    batch is split over a device mesh when there are several devices."""

    def __init__(self, spec: ModelSpec, cfg: HRMConfig, run: HRMRun,
                 state: dict[str, np.ndarray] | None = None) -> None:
        from twinframe.functional import hrm as f_hrm

        self.f_hrm = f_hrm
        self.mesh = sharding.data_mesh(run.batch_size)
        self.z_H = self.z_L = None
        super().__init__(spec, cfg, run, state)
        self._step, self._reset, self._step_fn = _jax_functions(spec, cfg, run)
        jnp = self.jnp
        empty = jnp.zeros((run.batch_size, cfg.seq_len), jnp.int32)
        c = f_hrm.initial_carry(self.consts, empty, empty, cfg)
        self.z_H, self.z_L = jnp.array(c.z_H), jnp.array(c.z_L)
        self.place()

    @property
    def consts(self) -> dict:
        return self.frozen["consts"]

    def place(self) -> None:
        """Replicate params/opt state/consts and split the carry over the data mesh (if any)."""
        self.params, self.opt_state, self.frozen = sharding.replicate(
            (self.params, self.opt_state, self.frozen), self.mesh)
        if self.z_H is not None:
            self.z_H, self.z_L = sharding.shard_batch((self.z_H, self.z_L), self.mesh)

    def step(self, host: HRMHost, noise: dict) -> tuple[dict[str, float], np.ndarray]:
        """One step (see `_jax_functions`: a non-finite step leaves params, optimizer state and
        carry unchanged and names the first non-finite tensor in metrics['nonfinite'])."""
        check_step_inputs(self.cfg, self.run, host, noise)
        jnp = self.jnp
        batch = sharding.shard_batch(
            (jnp.asarray(host.segments), jnp.asarray(host.inputs), jnp.asarray(host.targets),
             {k: jnp.asarray(v) for k, v in noise.items()}), self.mesh)
        carry = self.f_hrm.HRMCarry(self.z_H, self.z_L, *batch[:3])
        self.params, self.opt_state, out, _, packed = self._step(
            self.params, self.opt_state, self.consts, carry, batch[3])
        self.z_H, self.z_L = out.carry.z_H, out.carry.z_L
        vals = np.asarray(self.jax.device_get(packed))  # the step's one host sync
        n = len(out.metrics)
        m: dict[str, Any] = {k: float(v) for k, v in zip(sorted(out.metrics), vals[:n],
                                                          strict=True)}
        m[guard.NONFINITE_KEY] = None if vals[n] else self._nonfinite(m, host, noise)
        return m, vals[n + 1:] > 0.5

    def bench_step(self, host: HRMHost) -> BenchStep:
        """`twinframe bench`: the engine's compiled step on host's current batch and step-1
        noise, placed on the device once; no metric fetch (returns the metrics to sync on)."""
        jnp = self.jnp
        seg, inp, tgt, noise = sharding.shard_batch(
            (jnp.asarray(host.segments), jnp.asarray(host.inputs), jnp.asarray(host.targets),
             {k: jnp.asarray(v) for k, v in host_noise(host).items()}), self.mesh)

        def args() -> tuple:  # the carry is donated: fresh copies of its small int arrays
            carry = self.f_hrm.HRMCarry(self.z_H, self.z_L, *(jnp.copy(x) for x in (seg, inp,
                                                                                   tgt)))
            return self.params, self.opt_state, self.consts, carry, noise

        def run() -> Any:
            self.params, self.opt_state, out, _, packed = self._step(*args())
            self.z_H, self.z_L = out.carry.z_H, out.carry.z_L
            return packed

        def lower_for_cost() -> Any:
            with self.f_hrm.unrolled_loops():
                return self.jax.jit(self._step_fn).lower(*args())

        return BenchStep(run, train_step_flops(self.cfg, self.run.batch_size),
                         lambda: self._step.lower(*args()), lower_for_cost)

    def _nonfinite(self, metrics: dict[str, float], host: HRMHost, noise: dict) -> str:
        """Only after a failed step: its gradients recomputed from the kept state (params +
        grads from `guard.identity_step`), when params, carry and loss are finite."""
        jnp, tab = self.jnp, self.layout.params

        def grads() -> dict[str, np.ndarray]:
            import optax

            batch = sharding.shard_batch(
                (jnp.asarray(host.segments), jnp.asarray(host.inputs),
                 jnp.asarray(host.targets), {k: jnp.asarray(v) for k, v in noise.items()}),
                self.mesh)
            carry = self.f_hrm.HRMCarry(jnp.copy(self.z_H), jnp.copy(self.z_L), *batch[:3])
            moved, _, _ = guard.identity_step(self.spec, self.cfg)(
                guard.jax_copy(self.params), optax.EmptyState(), self.consts, carry, batch[3])
            return tab.tree_to_torch(self.jax.device_get(moved))

        return guard.nonfinite_report(
            [("parameter", tab.tree_to_torch(self.jax.device_get(self.params))),
             ("carry", self.export_carry()), ("loss term", _loss_terms(metrics)),
             ("gradient", grads)], metrics["grad_global_norm"])

    def reset(self, mask: np.ndarray) -> None:
        if mask.any():
            m = sharding.shard_batch(self.jnp.asarray(mask), self.mesh)
            self.z_H, self.z_L = self._reset(self.z_H, self.z_L, m, self.consts)

    def export_carry(self) -> dict[str, np.ndarray]:
        get, jnp = self.jax.device_get, self.jnp
        return {"z_H": np.asarray(get(self.z_H.astype(jnp.float32))),
                "z_L": np.asarray(get(self.z_L.astype(jnp.float32)))}

    def import_carry(self, carry: dict[str, np.ndarray]) -> None:
        T = self.f_hrm.compute_dtype(self.cfg)
        self.z_H = self.jnp.asarray(np.asarray(carry["z_H"], np.float32)).astype(T)
        self.z_L = self.jnp.asarray(np.asarray(carry["z_L"], np.float32)).astype(T)


def evaluate(engine: TorchEngine | JaxEngine, cfg: HRMConfig, run: HRMRun, n: int
             ) -> dict[str, Any]:
    """hrm.md §5.6 metrics on n evaluation puzzles per difficulty (JAX eval of the engine's current
    weights, whichever framework trains)."""
    from twinframe.models.hrm import layout

    model = engine.export_state()["model"]
    if engine.framework == "jax":
        model = layout(cfg).table.tree_to_torch(model)
    params, consts = jax_model_from_state(cfg, model)
    return evaluate_difficulties(cfg, run.eval_seed, params, consts, n)


# ---------------------------------------------------------------------------------------------
# Evaluation (hrm.md §5.6) and inference, on the JAX side (any checkpoint converts to it).


def jax_model_from_state(cfg: HRMConfig, state: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """torch-layout state -> (params, consts) device trees."""
    import jax
    import jax.numpy as jnp

    from twinframe.models.hrm import layout

    tree = layout(cfg).table.torch_to_tree(state)
    return (jax.tree_util.tree_map(jnp.asarray, tree["params"]),
            jax.tree_util.tree_map(jnp.asarray, tree["consts"]))


@functools.lru_cache(maxsize=8)
def _jit_evaluate(cfg: HRMConfig):
    import jax

    from twinframe.functional import hrm as f_hrm

    return jax.jit(lambda p, c, x: f_hrm.evaluate(p, c, x, cfg))


def solve_batch(cfg: HRMConfig, params: dict, consts: dict, puzzles: np.ndarray) -> dict:
    """Eval halting on a batch of puzzles [N, 81] -> boards (givens copied), segments, q, per-
    segment predictions (NumPy)."""
    import jax

    puzzles = guard.check_ints("puzzles", puzzles, (None, cfg.seq_len), 0, cfg.vocab_size)
    out = jax.device_get(_jit_evaluate(cfg)(params, consts, np.asarray(puzzles, np.int32)))
    return {"boards": sudoku.solved_board(puzzles, np.asarray(out.preds)),
            "segments": np.asarray(out.segments), "q_halt": np.asarray(out.q_halt),
            "all_boards": sudoku.solved_board(puzzles[None], np.asarray(out.all_preds))}


def evaluate_difficulties(cfg: HRMConfig, eval_seed: int, params: dict, consts: dict, n: int,
                          difficulties: tuple[str, ...] = sudoku.DIFFICULTIES) -> dict:
    """hrm.md §5.6 metrics per difficulty on n puzzles of the evaluation stream."""
    results = {}
    for name in difficulties:
        x, y = sudoku.eval_batch(eval_seed, name, n)
        out = solve_batch(cfg, params, consts, x)
        blank = x == 0
        ok = (out["boards"] == y) | ~blank
        exact = ok.all(-1)
        seg_exact = ((out["all_boards"] == y[None]) | ~blank[None]).all(-1).mean(-1)
        last = out["all_boards"][-1]
        results[name] = {
            "blank_cell_acc": float((ok & blank).sum() / max(blank.sum(), 1)),
            "exact_acc": float(exact.mean()),
            "mean_segments": float(out["segments"].mean()),
            "q_halt_acc": float(((out["q_halt"] >= 0) == exact).mean()),
            "max_steps_exact_acc": float(((last == y) | ~blank).all(-1).mean()),
            "exact_acc_per_segment": [float(v) for v in seg_exact],
        }
    return results


def infer(cfg: HRMConfig, run: HRMRun, state: dict[str, np.ndarray], subset: str = "medium",
          index: int = 0) -> str:
    """Solve evaluation puzzle `index` of difficulty `subset` with torch-layout weights `state`:
    the puzzle, the model's answer, ACT segments used and the verdict, as text."""
    if subset not in sudoku.DIFFICULTIES:
        from twinframe.errors import ConfigError

        raise ConfigError(f"unknown difficulty {subset!r} (have {', '.join(sudoku.DIFFICULTIES)})")
    params, consts = jax_model_from_state(cfg, state)
    x, y = sudoku.eval_puzzle(run.eval_seed, sudoku.difficulty_index(subset), index)
    out = solve_batch(cfg, params, consts, x[None])
    board, seg = out["boards"][0], int(out["segments"][0])
    blanks = x == 0
    n_ok = int(((board == y) & blanks).sum())
    verdict = "CORRECT" if bool(np.all(board == y)) else "WRONG"
    return "\n".join([
        f"puzzle ({subset} #{index}, {int((~blanks).sum())} clues):", sudoku.format_board(x),
        f"\nmodel answer ({seg} ACT segment(s) of max {cfg.halt_max_steps}, "
        f"q_halt {float(out['q_halt'][0]):+.3f}):", sudoku.format_board(board),
        f"\n{verdict}: {n_ok}/{int(blanks.sum())} blank cells right"])
