"""HRM-ACT training (spec hrm §6.1-§6.4): a framework-neutral host loop (Sudoku stream,
curriculum, slot replacement, exploration noise) driving a torch or JAX engine.

Engines hold params, optimizer state and the z carry on their device; the host holds inputs,
targets, segment counters and slot ids as NumPy, so both frameworks see identical data and the
lockstep driver can feed one host to two engines. Train states are plain dicts in each
framework's own layout (see `export_state`); `parity.files.convert_train_state` maps them.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from typing import Any

import numpy as np

from twinframe.functional import sharding
from twinframe.models.hrm import FROZEN_KEYS, HRMConfig, canonical_init
from twinframe.tasks import sudoku

log = logging.getLogger(__name__)


class HRMHost:
    """Slots, Sudoku stream and curriculum of one run (framework-neutral)."""

    def __init__(self, cfg: HRMConfig) -> None:
        B, S = cfg.batch_size, cfg.seq_len
        self.cfg = cfg
        self.t = 0
        self.stream = sudoku.SudokuStream(cfg.seed)
        self.curriculum = sudoku.Curriculum()
        self.inputs = np.zeros((B, S), np.int32)
        self.targets = np.zeros((B, S), np.int32)
        self.segments = np.zeros(B, np.int32)
        self.slot_ids = np.zeros((B, 2), np.int64)  # (d_index, j) per slot
        for b in range(B):
            self.replace(b)

    def replace(self, b: int) -> None:
        """§6.1 replacement of slot b (the engine resets its z carry separately)."""
        d, j, puzzle, solution = self.stream.next_puzzle(self.curriculum.stage)
        self.inputs[b], self.targets[b] = puzzle, solution
        self.segments[b] = 0
        self.slot_ids[b] = (d, j)
        self.curriculum.total_puzzles += 1

    def begin_step(self) -> dict[str, np.ndarray]:
        """Items (1)-(2) of §6.1: returns the step's injected noise."""
        self.t += 1
        self.curriculum.begin_step()
        cfg = self.cfg
        return sudoku.exploration_noise(cfg.seed, self.t, cfg.batch_size, cfg.halt_max_steps)

    def end_step(self, halted: np.ndarray, cell_acc: float) -> None:
        """Items (4)-(5): advance segments, replace halted slots (ascending), curriculum."""
        self.segments += 1
        for b in np.flatnonzero(halted):
            self.replace(int(b))
        self.curriculum.end_step(cell_acc)

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


# ---------------------------------------------------------------------------------------------
# Engines


class TorchEngine:
    """Eager PyTorch: HRM module + MLXAdamW + z carry."""

    framework = "torch"

    def __init__(self, cfg: HRMConfig, state: dict[str, np.ndarray] | None = None) -> None:
        import torch

        from twinframe.torch_ref import hrm as t_hrm
        from twinframe.torch_ref.optim import MLXAdamW

        self.cfg, self.torch, self.t_hrm = cfg, torch, t_hrm
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = t_hrm.HRM(cfg, canonical_init(cfg) if state is None else state)
        self.model.to(self.device)
        self.names = [k for k, p in self.model.named_parameters() if p.requires_grad]
        self.opt = MLXAdamW([p for p in self.model.parameters() if p.requires_grad], lr=cfg.lr,
                            betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                            weight_decay=cfg.weight_decay)
        B = cfg.batch_size
        empty = torch.zeros(B, cfg.seq_len, dtype=torch.int32, device=self.device)
        c = self.model.initial_carry(empty, empty)
        self.z_H, self.z_L = c.z_H, c.z_L

    def step(self, host: HRMHost, noise: dict) -> tuple[dict[str, float], np.ndarray]:
        torch = self.torch
        carry = self.t_hrm.HRMCarry(self.z_H, self.z_L, self._dev(host.segments),
                                    self._dev(host.inputs), self._dev(host.targets))
        self.opt.zero_grad(set_to_none=True)
        out = self.t_hrm.act_loss(self.model, carry, {k: self._dev(v) for k, v in noise.items()})
        out.loss.backward()
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        gnorm = torch.sqrt(sum((g.float() ** 2).sum() for g in grads))
        self.opt.step()
        self.z_H, self.z_L = out.carry.z_H, out.carry.z_L
        metrics = {k: float(v) for k, v in out.metrics.items()}
        metrics["grad_global_norm"] = float(gnorm)
        return metrics, out.halted.cpu().numpy().copy()

    def _dev(self, x: np.ndarray):
        return self.torch.from_numpy(np.array(x)).to(self.device)

    def reset(self, mask: np.ndarray) -> None:
        """z_H, z_L of masked slots <- the (T-rounded) initial states."""
        if not mask.any():
            return
        m = self._dev(mask)
        self.z_H[m] = self.model.initial_high_level.detach().to(self.z_H.dtype)
        self.z_L[m] = self.model.initial_low_level.detach().to(self.z_L.dtype)

    def export_state(self) -> dict[str, Any]:
        """{'model': state_dict, 'opt': {'step', 'exp_avg': {name: m}, 'exp_avg_sq': {name: v}},
        'carry': {z_H, z_L}}: torch layout, NumPy leaves, moments keyed by parameter name."""
        from twinframe.parity.io import to_numpy

        model = {k: to_numpy(v) for k, v in self.model.state_dict().items()}
        named = dict(self.model.named_parameters())
        states = [self.opt.state.get(named[n], {}) for n in self.names]
        step = float(states[0]["step"]) if states[0] else 0.0
        opt: dict[str, Any] = {"step": step, "exp_avg": {}, "exp_avg_sq": {}}
        for n, st in zip(self.names, states, strict=True):
            for slot in ("exp_avg", "exp_avg_sq"):
                opt[slot][n] = (to_numpy(st[slot]) if st else
                                np.zeros(named[n].shape, np.float32))
        carry = {"z_H": to_numpy(self.z_H), "z_L": to_numpy(self.z_L)}
        return {"model": model, "opt": opt, "carry": carry}

    def import_state(self, s: dict[str, Any]) -> None:
        from twinframe.torch_ref.layers import load_numpy_state

        torch = self.torch
        load_numpy_state(self.model, s["model"])
        opt = s["opt"]
        named = dict(self.model.named_parameters())
        for n in self.names:
            self.opt.state[named[n]] = {
                "step": torch.tensor(float(opt["step"])),
                "exp_avg": self._dev(np.asarray(opt["exp_avg"][n], np.float32)),
                "exp_avg_sq": self._dev(np.asarray(opt["exp_avg_sq"][n], np.float32)),
            }
        dt = self.z_H.dtype
        self.z_H = self._dev(np.asarray(s["carry"]["z_H"], np.float32)).to(dt)
        self.z_L = self._dev(np.asarray(s["carry"]["z_L"], np.float32)).to(dt)

    def params_torch_layout(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy().copy() for k, v in self.model.state_dict().items()
                if k not in FROZEN_KEYS}


@functools.lru_cache(maxsize=8)
def _jax_functions(cfg: HRMConfig):
    """(optimizer, jitted train step, jitted slot reset) per config, so every engine of one
    config in a process shares one compilation."""
    import jax
    import jax.numpy as jnp

    from twinframe.functional import hrm as f_hrm
    from twinframe.functional.optim import adamw_mlx

    optimizer = adamw_mlx(cfg.lr, cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay)

    def reset(z_H, z_L, mask, consts):
        m = mask[:, None, None]
        return (jnp.where(m, consts["initial_high_level"].astype(z_H.dtype), z_H),
                jnp.where(m, consts["initial_low_level"].astype(z_L.dtype), z_L))

    return (optimizer, f_hrm.make_train_step(cfg, optimizer),
            jax.jit(reset, donate_argnums=(0, 1)))


class JaxEngine:
    """JAX: one jitted train step (donated params/opt state/carry) + jitted slot reset."""

    framework = "jax"

    def __init__(self, cfg: HRMConfig, state: dict[str, np.ndarray] | None = None) -> None:
        import jax
        import jax.numpy as jnp

        from twinframe.functional import hrm as f_hrm
        from twinframe.parity.hrm import table

        self.cfg, self.jax, self.jnp, self.f_hrm = cfg, jax, jnp, f_hrm
        self.table = table(cfg)
        tree = self.table.torch_to_tree(canonical_init(cfg) if state is None else state)
        self.params = jax.tree_util.tree_map(jnp.asarray, tree["params"])
        self.consts = jax.tree_util.tree_map(jnp.asarray, tree["consts"])
        self.optimizer, self._step, self._reset = _jax_functions(cfg)
        self.opt_state = self.optimizer.init(self.params)
        B = cfg.batch_size
        empty = jnp.zeros((B, cfg.seq_len), jnp.int32)
        c = f_hrm.initial_carry(self.consts, empty, empty, cfg)
        self.z_H, self.z_L = jnp.array(c.z_H), jnp.array(c.z_L)
        self.mesh = sharding.data_mesh(B)
        self._place()

    def _place(self) -> None:
        """Replicate params/opt state/consts and split the carry over the data mesh (if any)."""
        self.params, self.opt_state, self.consts = sharding.replicate(
            (self.params, self.opt_state, self.consts), self.mesh)
        self.z_H, self.z_L = sharding.shard_batch((self.z_H, self.z_L), self.mesh)

    def step(self, host: HRMHost, noise: dict) -> tuple[dict[str, float], np.ndarray]:
        jnp = self.jnp
        batch = sharding.shard_batch(
            (jnp.asarray(host.segments), jnp.asarray(host.inputs), jnp.asarray(host.targets),
             {k: jnp.asarray(v) for k, v in noise.items()}), self.mesh)
        carry = self.f_hrm.HRMCarry(self.z_H, self.z_L, *batch[:3])
        self.params, self.opt_state, out = self._step(
            self.params, self.opt_state, self.consts, carry, batch[3])
        self.z_H, self.z_L = out.carry.z_H, out.carry.z_L
        metrics, halted = self.jax.device_get((out.metrics, out.halted))
        return {k: float(v) for k, v in metrics.items()}, np.asarray(halted)

    def reset(self, mask: np.ndarray) -> None:
        if mask.any():
            m = sharding.shard_batch(self.jnp.asarray(mask), self.mesh)
            self.z_H, self.z_L = self._reset(self.z_H, self.z_L, m, self.consts)

    def export_state(self) -> dict[str, Any]:
        """{'model': {'params', 'consts'}, 'opt': {'count', 'mu', 'nu'}, 'carry': {z_H, z_L}}."""
        get = self.jax.device_get
        st = self.opt_state
        return {
            "model": {"params": get(self.params), "consts": get(self.consts)},
            "opt": {"count": np.asarray(get(st.count)), "mu": get(st.mu), "nu": get(st.nu)},
            "carry": {"z_H": np.asarray(get(self.z_H)), "z_L": np.asarray(get(self.z_L))},
        }

    def import_state(self, s: dict[str, Any]) -> None:
        from twinframe.functional.optim import ScaleByAdamNoBCState
        from twinframe.parity.convert import normalize_tree_keys

        jax, jnp = self.jax, self.jnp

        def dev(tree):
            return jax.tree_util.tree_map(lambda x: jnp.array(x, jnp.float32),
                                          normalize_tree_keys(tree))

        self.params, self.consts = dev(s["model"]["params"]), dev(s["model"]["consts"])
        o = s["opt"]
        self.opt_state = ScaleByAdamNoBCState(jnp.asarray(int(np.asarray(o["count"])), jnp.int32),
                                              dev(o["mu"]), dev(o["nu"]))
        T = self.f_hrm.compute_dtype(self.cfg)
        self.z_H = jnp.asarray(np.asarray(s["carry"]["z_H"], np.float32)).astype(T)
        self.z_L = jnp.asarray(np.asarray(s["carry"]["z_L"], np.float32)).astype(T)
        self._place()

    def params_torch_layout(self) -> dict[str, np.ndarray]:
        full = self.table.tree_to_torch({"params": self.jax.device_get(self.params),
                                         "consts": self.jax.device_get(self.consts)})
        return {k: v for k, v in full.items() if k not in FROZEN_KEYS}


ENGINES = {"torch": TorchEngine, "jax": JaxEngine}


# ---------------------------------------------------------------------------------------------
# Trainer (what `twinframe train` runs) and lockstep driver (what `check --curve` runs)


def log_record(host: HRMHost, m: dict[str, float], halted: np.ndarray, dt: float,
               lr: float) -> dict[str, Any]:
    """One §6.4 record (after the replacements and the curriculum update of step t)."""
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
        "grad_global_norm": m["grad_global_norm"], "step_time_s": dt,
        "puzzles_per_s": n_halt / dt if dt > 0 else math.nan,
    }


class HRMTrainer:
    """Host loop + one engine. `train_step()` runs §6.1 items 1-5 and returns the log record."""

    model_name = "hrm"

    def __init__(self, cfg: HRMConfig, framework: str) -> None:
        self.cfg = cfg
        self.framework = framework
        self.host = HRMHost(cfg)
        self.engine = ENGINES[framework](cfg)

    @property
    def t(self) -> int:
        return self.host.t

    def train_step(self) -> dict[str, Any]:
        noise = self.host.begin_step()
        t0 = time.perf_counter()
        m, halted = self.engine.step(self.host, noise)  # device_get/.item() synchronise
        dt = time.perf_counter() - t0
        self.engine.reset(halted)
        self.host.end_step(halted, m["cell_acc_with_givens"])
        return log_record(self.host, m, halted, dt, self.cfg.lr)

    def export_state(self) -> dict[str, Any]:
        """Full train state in this framework's layout (+ host state and config)."""
        return {**self.engine.export_state(), "host": json.loads(json.dumps(
            self.host.state_dict())), "config": self.cfg.to_dict(),
            "framework": self.framework, "model_name": self.model_name}

    def import_state(self, s: dict[str, Any]) -> None:
        self.engine.import_state(s)
        self.host.load_state_dict(s["host"])

    def params_torch_layout(self) -> dict[str, np.ndarray]:
        return self.engine.params_torch_layout()

    def evaluate(self, n: int) -> dict[str, Any]:
        """§5.6 metrics on n evaluation puzzles per difficulty (JAX eval of the current
        weights, whichever framework trains)."""
        from twinframe.parity.hrm import table

        model = self.engine.export_state()["model"]
        if self.framework == "jax":
            model = table(self.cfg).tree_to_torch(model)
        params, consts = jax_model_from_state(self.cfg, model)
        return evaluate_difficulties(self.cfg, params, consts, n)


class HRMLockstep:
    """Both engines on one host (spec §7 lockstep driver): same batches, same noise; on a halted
    mismatch the torch mask is used for both so the data stream stays aligned."""

    def __init__(self, cfg: HRMConfig) -> None:
        self.cfg = cfg
        self.host = HRMHost(cfg)
        self.torch, self.jax = TorchEngine(cfg), JaxEngine(cfg)
        self.halt_mismatches = 0

    def step(self) -> tuple[dict[str, float], dict[str, float], str]:
        noise = self.host.begin_step()
        mt, ht = self.torch.step(self.host, noise)
        mj, hj = self.jax.step(self.host, noise)
        n_mis = int((ht != hj).sum())
        self.halt_mismatches += n_mis
        self.torch.reset(ht)
        self.jax.reset(ht)
        self.host.end_step(ht, mt["cell_acc_with_givens"])
        note = f"{n_mis} halted-mask mismatch(es)" if n_mis else ""
        return mt, mj, note

    def params(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        return self.torch.params_torch_layout(), self.jax.params_torch_layout()


# ---------------------------------------------------------------------------------------------
# Evaluation (§5.6) and inference, on the JAX side (any checkpoint converts to it).


def jax_model_from_state(cfg: HRMConfig, state: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """torch-layout state -> (params, consts) device trees."""
    import jax
    import jax.numpy as jnp

    from twinframe.parity.hrm import table

    tree = table(cfg).torch_to_tree(state)
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

    out = jax.device_get(_jit_evaluate(cfg)(params, consts, np.asarray(puzzles, np.int32)))
    return {"boards": sudoku.solved_board(puzzles, np.asarray(out.preds)),
            "segments": np.asarray(out.segments), "q_halt": np.asarray(out.q_halt),
            "all_boards": sudoku.solved_board(puzzles[None], np.asarray(out.all_preds))}


def evaluate_difficulties(cfg: HRMConfig, params: dict, consts: dict, n: int,
                          difficulties: tuple[str, ...] = sudoku.DIFFICULTIES) -> dict:
    """§5.6 metrics per difficulty on n puzzles of the evaluation stream."""
    results = {}
    for name in difficulties:
        x, y = sudoku.eval_batch(cfg.eval_seed, name, n)
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
