"""GAIA v3.1 training (spec gaia.md §1.7, §1.9): the agent loop on LeakyReach. A framework-
neutral host (the §3 parity noise stream, the environment, episodes, returns) drives a torch
eager or a JAX jit engine, or both in lockstep.

One env step (host.t = steps done so far):
1. noise (eps (P, A), u, xi (1, S)) = the next draw of `NoiseStream(cfg, run.noise_seed)`;
2. every engine: select_action(s, eps, u) (its world model's traces see the P planning rows);
   engines[0]'s action a drives the environment: s' = (0.9 s + M a) + sigma xi on the host
   (NumPy f32), reward -mean s'^2;
3. every engine: learn(s, a, s') (second trace update, wm AdamW step, gated policy step);
4. one record per engine; a differing action index is a mismatch (`action_mismatches`).
After `run.episode_len` steps the episode ends (its return is recorded) and s restarts at s0.

Train states follow `models.gaia.layout`: the model includes the traces, histories and step
counters (the `state` rows) and g (`consts`); the optimizer state has two step counters (wm,
am: the policy step is gated, so they differ); no carry (the env state is host state).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from twinframe.contract import StepResult
from twinframe.errors import CheckpointError
from twinframe.models.gaia import GaiaConfig, GaiaRun, NoiseStream, start_state
from twinframe.tasks.leaky_reach import env_step, reward
from twinframe.training.engine import JaxEngine, TorchEngine

if TYPE_CHECKING:
    from twinframe.contract import ModelSpec

EVAL_STREAM = 0xE7A1  # evaluation episodes: NoiseStream(noise_seed + EVAL_STREAM + index)


class GaiaHost:
    """Env state, episode bookkeeping and the parity noise stream (JSON-able, resumable)."""

    def __init__(self, cfg: GaiaConfig, run: GaiaRun) -> None:
        self.cfg, self.run = cfg, run
        self.noise = NoiseStream(cfg, run.noise_seed)
        self.t, self.episode, self.ep_t, self.ep_return = 0, 0, 0, 0.0
        self.s = start_state(cfg, run, 0)
        self.returns: list[float] = []

    def step(self, engines: Sequence[GaiaTorchEngine | GaiaJaxEngine]) -> StepResult:
        t0 = time.perf_counter()
        n = self.noise.next()
        sels = [e.select(self.s, n.eps, n.u) for e in engines]
        a = sels[0]["action"]
        s_next = np.asarray(env_step(self.s, a, n.xi, np.float32(self.run.sigma_env)),
                            np.float32)
        r = float(reward(s_next)[0])
        learns = [e.learn(self.s, a, s_next) for e in engines]
        self.t += 1
        self.ep_t += 1
        self.ep_return += r
        ended = None
        if self.ep_t >= self.run.episode_len:
            ended = self.ep_return
            self.returns.append(ended)
            self.episode += 1
            self.ep_t, self.ep_return = 0, 0.0
            s_next = start_state(self.cfg, self.run, self.episode)
        self.s = s_next
        dt = time.perf_counter() - t0
        bad = sum(int(x["idx"] != sels[0]["idx"]) for x in sels[1:])
        records = [{
            "step": self.t, "episode": self.episode - (ended is not None), "loss": lo["wm_loss"],
            **lo, "idx": sel["idx"], "tie": sel["tie"], "free_energy": sel["free_energy"],
            "action": [float(x) for x in np.ravel(a)], "reward": r,
            "state": [float(x) for x in np.ravel(s_next)], "episode_return": ended,
            "step_time_s": dt, "steps_per_s": 1.0 / dt if dt > 0 else None,
        } for sel, lo in zip(sels, learns, strict=True)]
        note = f"action index differs ({[x['idx'] for x in sels]})" if bad else ""
        return StepResult(records, bad, note)

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t, "episode": self.episode, "ep_t": self.ep_t,
                "ep_return": self.ep_return, "s": [float(x) for x in np.ravel(self.s)],
                "returns": list(self.returns), "noise": self.noise.state(),
                "noise_seed": self.run.noise_seed}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        if st["noise_seed"] != self.run.noise_seed:
            raise CheckpointError(f"checkpoint drew noise from noise_seed {st['noise_seed']}, "
                                  f"this run has {self.run.noise_seed}")
        self.t, self.episode, self.ep_t = int(st["t"]), int(st["episode"]), int(st["ep_t"])
        self.ep_return = float(st["ep_return"])
        self.s = np.asarray(st["s"], np.float32).reshape(1, self.cfg.state_dim)
        self.returns = [float(x) for x in st["returns"]]
        self.noise.set_state(st["noise"])

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------
# Engines


class GaiaTorchEngine(TorchEngine):
    """Eager PyTorch on the CPU (batch-1 agent loop): `torch_ref.gaia` module + one AdamW with
    the wm and am parameter groups (= the reference's two AdamW)."""

    CPU_ONLY = True

    def __init__(self, spec: ModelSpec, cfg: GaiaConfig, run: GaiaRun,
                 state: dict[str, np.ndarray] | None = None) -> None:
        super().__init__(spec, cfg, run, state)
        from twinframe.torch_ref import gaia as tg

        self.tg = tg

    def select(self, s: np.ndarray, eps: np.ndarray, u: np.float32) -> dict[str, Any]:
        with self.tg.torch_threads(self.run.torch_threads):
            sel = self.tg.select_action(self.model, self.dev(np.asarray(s, np.float32)),
                                        self.dev(np.asarray(eps, np.float32)), float(u))
        return {"action": sel.action.numpy().copy(), "idx": sel.idx, "tie": sel.tie,
                "free_energy": float(sel.efe[sel.idx])}

    def learn(self, s: np.ndarray, a: np.ndarray, s_next: np.ndarray) -> dict[str, Any]:
        with self.tg.torch_threads(self.run.torch_threads):
            lo = self.tg.learn(self.model, self.opt, self.opt, self.dev(s), self.dev(a),
                               self.dev(s_next),
                               grad_clip_norm=self.run.grad_clip_norm)
        m0 = self.model.wm.models[0]
        return {"wm_loss": lo.wm_loss, "uncertainty": lo.uncertainty,
                "improvement": lo.improvement, "policy_updated": lo.policy_updated,
                "policy_loss": lo.policy_loss, "wm_grad_norm": lo.wm_grad_norm,
                "l1_fast_norm": m0.l1.fast_trace.norm().item(),
                "l2_fast_norm": m0.l2.fast_trace.norm().item()}


class GaiaJaxEngine(JaxEngine):
    """JAX: jitted select (wm state donated) and the jitted, donated train step (learn)."""

    def __init__(self, spec: ModelSpec, cfg: GaiaConfig, run: GaiaRun,
                 state: dict[str, np.ndarray] | None = None) -> None:
        super().__init__(spec, cfg, run, state)
        from twinframe.functional import gaia as fg

        self.fg = fg
        self._select = fg.jit_select(cfg)
        self._step = _train_step(spec, cfg, run)

    def select(self, s: np.ndarray, eps: np.ndarray, u: np.float32) -> dict[str, Any]:
        jnp = self.jnp
        sel, st = self._select(self.params, self.frozen["state"], self.frozen["consts"],
                               jnp.asarray(s), jnp.asarray(eps), jnp.asarray(u, jnp.float32))
        self.frozen = {**self.frozen, "state": st}
        sel = self.jax.device_get(sel)
        idx = int(sel.idx)
        return {"action": np.asarray(sel.action), "idx": idx, "tie": bool(sel.tie),
                "free_energy": float(sel.efe[idx])}

    def learn(self, s: np.ndarray, a: np.ndarray, s_next: np.ndarray) -> dict[str, Any]:
        jnp = self.jnp
        self.params, st, self.opt_state, lo = self._step(
            self.params, self.frozen["state"], self.frozen["consts"], self.opt_state,
            jnp.asarray(s), jnp.asarray(a), jnp.asarray(s_next))
        self.frozen = {**self.frozen, "state": st}
        lo, f1, f2 = self.jax.device_get((lo, st["wm"]["l1"]["fast_trace"][0],
                                          st["wm"]["l2"]["fast_trace"][0]))
        return {"wm_loss": float(lo.wm_loss), "uncertainty": float(lo.uncertainty),
                "improvement": float(lo.improvement), "policy_updated": bool(lo.policy_updated),
                "policy_loss": float(lo.policy_loss), "wm_grad_norm": float(lo.wm_grad_norm),
                "l1_fast_norm": float(np.linalg.norm(f1)),
                "l2_fast_norm": float(np.linalg.norm(f2))}


@functools.lru_cache(maxsize=8)
def _train_step(spec: ModelSpec, cfg: GaiaConfig, run: GaiaRun) -> Any:
    """One compiled train step per (spec, config pair), shared by every engine of the process."""
    return spec.make_train_step(cfg, spec.jax_optimizer(run))


# ---------------------------------------------------------------------------------------------
# Evaluation and inference: an episode without learning, in JAX (any checkpoint converts)


def jax_agent_from_state(cfg: GaiaConfig, state: dict[str, np.ndarray]) -> tuple[Any, Any, Any]:
    import jax
    import jax.numpy as jnp

    from twinframe.models.gaia import layout

    tree = layout(cfg).table.torch_to_tree(state)
    return tuple(jax.tree_util.tree_map(jnp.asarray, tree[k])
                 for k in ("params", "state", "consts"))


def episode(cfg: GaiaConfig, run: GaiaRun, state: dict[str, np.ndarray], index: int = 0,
            steps: int | None = None) -> dict[str, Any]:
    """One LeakyReach episode acting with the agent (select only: traces still adapt, no
    optimizer step), noise from NoiseStream(noise_seed + EVAL_STREAM + index), s0 of that
    episode. Returns actions, states, rewards, EFE of the chosen actions and the return."""
    import jax.numpy as jnp

    from twinframe.functional import gaia as fg

    T = run.episode_len if steps is None else steps
    params, st, consts = jax_agent_from_state(cfg, state)
    ns = NoiseStream(cfg, run.noise_seed + EVAL_STREAM + index).take(T)
    s0 = jnp.asarray(start_state(cfg, run, index))
    out = fg.jit_act(cfg, run.sigma_env)(params, st, consts, s0,
                                         fg.StepNoise(*(jnp.asarray(x) for x in
                                                        (ns.eps, ns.u, ns.xi))))
    out = {k: np.asarray(v) for k, v in out._asdict().items()}
    return {**out, "return": float(out["reward"].sum(dtype=np.float64))}


def evaluate(engine: GaiaTorchEngine | GaiaJaxEngine, cfg: GaiaConfig, run: GaiaRun, n: int
             ) -> dict[str, Any]:
    """Mean return (and its spread) of n evaluation episodes with the engine's current state."""
    model = engine.export_state()["model"]
    if engine.framework == "jax":
        from twinframe.models.gaia import layout

        model = layout(cfg).table.tree_to_torch(model)
    rets = [episode(cfg, run, model, i)["return"] for i in range(max(n, 1))]
    return {"mean_return": float(np.mean(rets)), "std_return": float(np.std(rets)),
            "returns": rets, "episode_len": run.episode_len}


def infer(cfg: GaiaConfig, run: GaiaRun, state: dict[str, np.ndarray], subset: str = "",
          index: int = 0) -> str:
    """Run evaluation episode `index` and describe it: return, final state, first actions."""
    del subset
    ep = episode(cfg, run, state, index)
    T = len(ep["reward"])
    first = ", ".join(f"{float(np.ravel(a)[0]):+.3f}" for a in ep["action"][:5])
    s_abs = np.abs(ep["s_next"]).mean(-1)
    return "\n".join([
        f"GAIA agent on LeakyReach (S={cfg.state_dim}, A={cfg.action_dim}, sigma "
        f"{run.sigma_env:g}), evaluation episode {index}, {T} steps:",
        f"  return {ep['return']:.6f} (mean reward {ep['return'] / T:.6f})",
        f"  mean |s| first/last 10 steps: {s_abs[:10].mean():.4f} / {s_abs[-10:].mean():.4f}",
        f"  mean EFE of chosen actions {float(np.mean(ep['efe'])):.4f}",
        f"  first actions: {first}"])



# ---------------------------------------------------------------------------------------------
# Throughput: the agent loop in torch eager vs JAX jit, one agent and N independent agents


def bench_agents(cfg: GaiaConfig, run: GaiaRun, agents: int = 64, steps: int = 50,
                 repeats: int = 3) -> dict[str, Any]:
    """Env steps/s in one process, side by side (compile excluded, best of `repeats`):
    - torch eager, one agent (`torch_ref.gaia.run_validation`, parity noise);
    - JAX jit, one agent (`functional.gaia.jit_rollout`: lax.scan of select-env-learn);
    - `agents` independent agents (seeds 0..N-1): torch one after another vs JAX vmapped.
    Steps/s for N agents count every agent's env steps."""
    import jax
    import jax.numpy as jnp
    import torch

    from twinframe.functional import gaia as fg
    from twinframe.models import gaia as mg
    from twinframe.torch_ref import gaia as tg

    def torch_agents(n: int) -> float:
        t0 = time.perf_counter()
        for k in range(n):
            ag = tg.GaiaAgent(cfg, run, mg.canonical_init(cfg, k))
            with tg.torch_threads(run.torch_threads):
                tg.run_validation(ag, steps, noise=NoiseStream(cfg, run.noise_seed + k),
                                  sigma=run.sigma_env)
        return n * steps / (time.perf_counter() - t0)

    tx = fg.make_optimizer(run)

    def jax_inputs(n: int) -> tuple[Any, Any, Any]:
        ags, noises = [], []
        for k in range(n):
            tree = mg.layout(cfg).table.torch_to_tree(mg.canonical_init(cfg, k))
            p = jax.tree_util.tree_map(jnp.asarray, tree["params"])
            ags.append(fg.Agent(p, jax.tree_util.tree_map(jnp.asarray, tree["state"]),
                                jax.tree_util.tree_map(jnp.asarray, tree["consts"]),
                                tx.init(p)))
            ns = NoiseStream(cfg, run.noise_seed + k).take(steps)
            noises.append(fg.StepNoise(*(jnp.asarray(x) for x in (ns.eps, ns.u, ns.xi))))
        if n == 1:
            return ags[0], jnp.zeros((1, cfg.state_dim)), noises[0]
        stack = functools.partial(jax.tree_util.tree_map, lambda *x: jnp.stack(x))
        return stack(*ags), jnp.zeros((n, 1, cfg.state_dim)), stack(*noises)

    def jax_agents(n: int) -> float:
        f = fg.jit_rollout(cfg, run, vmapped=n > 1)
        best = 0.0
        for _ in range(repeats + 1):  # the first call compiles
            args = jax_inputs(n)
            jax.block_until_ready(args)
            t0 = time.perf_counter()
            jax.block_until_ready(f(*args))
            best = max(best, n * steps / (time.perf_counter() - t0))
        return best

    res = {"config": cfg.to_dict(), "steps": steps, "agents": agents,
           "torch_threads": run.torch_threads, "jax_device": str(jax.devices()[0]),
           "torch_version": torch.__version__, "jax_version": jax.__version__}
    res["torch_1_agent_steps_per_s"] = max(torch_agents(1) for _ in range(repeats))
    res["jax_1_agent_steps_per_s"] = jax_agents(1)
    res[f"torch_{agents}_sequential_steps_per_s"] = torch_agents(agents)
    res[f"jax_{agents}_vmapped_steps_per_s"] = jax_agents(agents)
    return res
