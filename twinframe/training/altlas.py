"""AltLAS training (spec altlas §6 runner loop, §4 learning, §5 tasks): a framework-neutral host
(task, tokenizer, safety filter, duplicate tracker, sandbox executor, scorer, baseline/reward
bookkeeping, parity-mode Gumbel noise) driving a torch or JAX engine.

One update k (0-based; `host.t` = updates done so far):
1. host noise g = `gumbel_noise(cfg.seed, k, B, T, V)` (§3.3 parity mode) -> engine `generate`
   (B episodes, tokens int32 [B, T], valid bool [B, T]);
2. host: decode -> safety -> fingerprint / duplicate policy -> sandbox (cached) -> scorer
   (score f64 [B], NaN where not scored) -> `prepare_update` (advantages, weights, beta, new
   baseline / reward statistics / attempts / successes);
3. engine `learn` (teacher-forced REINFORCE, clip, Adam; skipped on the host when B_eff = 0);
4. host bookkeeping (successes, distinct successful fingerprints, stop condition) and one log
   record (§6 item 5).
Both frameworks receive the same noise array, so with equal weights they sample equal tokens
and the sandbox runs each distinct program once (result cache keyed by SHA-256 of the code).

Train states follow `training.checkpoint` / `parity.files.convert_train_state`:
- torch: model = state_dict {name: [out, in] f32}; opt = {"step": float, "exp_avg": {name: m},
  "exp_avg_sq": {name: v}} keyed by state-dict names (= `named_parameters()` order);
- JAX:   model = {"params": tree} (the parity table's 'params' root); opt = {"count": int32,
  "mu": tree, "nu": tree} (the `optax.adam`-shaped state of `functional.altlas.torch_adam`);
- carry = {"update_index": int32 scalar} in both (the RNN state is zero at the start of every
  episode, so nothing else needs carrying; the entry exists because orbax drops empty dicts and
  `checkpoint.load` expects a "carry" tree) — checked against host["t"] on import;
- host = `AltLASHost.state_dict()` (JSON): t, task name, learner state, fingerprints, ...

Choices where the spec is silent (ours):
- Default task `benchmark_add_two_numbers` (expected stdout "8"; shortest `v1_63` solution
  `print ( 8 )`, 4 tokens + EOS, spec §5.1 table) — the easiest solvable published task.
- Executor wall timeout = min(cfg.timeout, 2 s) (§5.3 recommends 2 s for training); the result
  cache is not saved (results are deterministic; a program running close to the timeout could in
  principle flip between `success` and `timeout` after a resume — a cache miss re-runs it).
- The stop condition (`cfg.stop_on`, `cfg.max_attempts`, §6 item 4) is evaluated and reported
  as `stop` in every record, but training is not halted: the generic driver runs the requested
  number of steps.
- The torch engine runs on CPU (`torch_ref.altlas.generate` builds its per-step tensors on the
  CPU); JAX uses its default device.
- An update with B_eff = 0 is skipped on the host in both frameworks (no engine call); its
  record has loss = policy_term = entropy_term = grad_norm = 0.0 and `update_skipped` = True.
- Rewards in records are the raw scorer outputs r (not r~); `mean_reward` / `max_reward` are
  over the scored episodes of the batch (None when none was scored). `success_rate` is the
  fraction of the B episodes of the batch with score >= success_threshold (skipped episodes are
  never successes).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import time
from typing import Any

import numpy as np

from twinframe.errors import CheckpointError, ConfigError
from twinframe.models.altlas import (
    AltLASConfig,
    LearnerState,
    UpdateInputs,
    canonical_init,
    gumbel_noise,
    prepare_update,
)
from twinframe.tasks import altlas as tasks

log = logging.getLogger(__name__)

DEFAULT_TASK = "benchmark_add_two_numbers"
TRAIN_TIMEOUT_CAP_S = 2.0
EVAL_STREAM = 0xE7A1  # SeedSequence([seed, EVAL_STREAM]) for `evaluate` noise (ours)
SAMPLE_CODE_CHARS = 200


# ---------------------------------------------------------------------------------------------
# Host side


@dataclasses.dataclass
class EpisodeBatch:
    """Host view of B episodes after §6 item 2.

    codes: decoded (surface-mapped) programs [B]; safe, duplicate (skipped by the duplicate
    policy), scored: bool [B]; scores: f64 [B] (NaN where not scored); statuses: sandbox status
    or None [B]; fingerprints: MD5 hex or None (unsafe episodes are not fingerprinted) [B]."""

    codes: list[str]
    safe: np.ndarray
    duplicate: np.ndarray
    scored: np.ndarray
    scores: np.ndarray
    statuses: list[str | None]
    fingerprints: list[str | None]

    @property
    def keep(self) -> np.ndarray:
        """bool [B]: neither unsafe nor a skipped duplicate (input to `prepare_update`)."""
        return self.safe & ~self.duplicate


@dataclasses.dataclass
class HostRollout:
    """A generated batch as NumPy: tokens int32 [B, T] (PAD after the end); valid bool [B, T]
    (EOS step included); hit_eos bool [B]; length int32 [B] (EOS excluded); logp_model,
    entropy f32 [B, T] (meaningful under `valid`)."""

    tokens: np.ndarray
    valid: np.ndarray
    hit_eos: np.ndarray
    length: np.ndarray
    logp_model: np.ndarray
    entropy: np.ndarray

    def stats(self) -> dict[str, float]:
        """mean_length, frac_max_len (episodes that reached T without EOS), mean_logp and
        mean_entropy over valid steps."""
        v = self.valid
        n = max(int(v.sum()), 1)
        return {
            "mean_length": float(self.length.mean()),
            "frac_max_len": float((~self.hit_eos).mean()),
            "mean_logp": float(np.where(v, self.logp_model, 0.0).sum(dtype=np.float64) / n),
            "mean_entropy": float(np.where(v, self.entropy, 0.0).sum(dtype=np.float64) / n),
        }


class AltLASHost:
    """Framework-neutral §6 runner state: task, tokenizer, safety, duplicates, sandbox, scorer,
    learner bookkeeping (baseline EMA, reward statistics, attempts, successes) and update index.

    Args:
        cfg: the run config (batch size B = cfg.batch_size, T = cfg.max_gen_len).
        task: task name from the bundled task file (default `benchmark_add_two_numbers`).
        timeout: sandbox wall timeout in s (default min(cfg.timeout, 2.0)).
        workers: sandbox worker threads (default: one per CPU core).
    """

    def __init__(self, cfg: AltLASConfig, task: str = DEFAULT_TASK, timeout: float | None = None,
                 workers: int | None = None) -> None:
        self.cfg = cfg
        self.task = tasks.load_task(task)
        if not self.task.is_python:
            raise ConfigError(f"task {task!r} targets {self.task.target_language}; the sandbox "
                              "runs Python only")
        self.tokenizer = tasks.Tokenizer(cfg.vocab, cfg.indent_mode)
        if self.tokenizer.vocab_size != cfg.vocab_size:
            raise ConfigError(f"vocab {cfg.vocab} has {self.tokenizer.vocab_size} tokens, config "
                              f"says {cfg.vocab_size}")
        self.scorer = tasks.get_scorer(cfg.scorer)
        self.tracker = tasks.DuplicateTracker(cfg.duplicate_policy)
        t_out = min(cfg.timeout, TRAIN_TIMEOUT_CAP_S) if timeout is None else float(timeout)
        self.executor = tasks.Executor(timeout=t_out, workers=workers)
        self.t = 0
        self.learner = LearnerState()
        self.best_score = -math.inf
        self.success_fps: list[str] = []

    # -- item 1: noise ---------------------------------------------------------------------

    def noise(self) -> np.ndarray:
        """Gumbel noise of update k = self.t: f32 [B, T, V] (§3.3 parity mode)."""
        c = self.cfg
        return gumbel_noise(c.seed, self.t, c.batch_size, c.max_gen_len, c.vocab_size)

    # -- item 2: decode, safety, duplicates, sandbox, scorer --------------------------------

    def decode(self, tokens: np.ndarray) -> list[str]:
        """tokens int [B, T] -> B programs (PAD/EOS skipped, surface map applied, §1.3)."""
        return [self.tokenizer.decode(row.tolist()) for row in np.asarray(tokens)]

    def score_codes(self, codes: list[str]) -> tuple[np.ndarray, list[str]]:
        """Pure scoring (no safety, no duplicate tracking): scores f64 [N] and statuses [N].
        Runs the sandbox through the cache."""
        results = self.executor.run_many(codes)
        scores = np.array([self.scorer(c, r, self.task) for c, r in zip(codes, results,
                                                                        strict=True)], np.float64)
        return scores, [r.status for r in results]

    def assess(self, tokens: np.ndarray) -> EpisodeBatch:
        """§6 item 2 for one batch, in index order: safety (unsafe -> not fingerprinted, not
        run) -> fingerprint (records it; skip per policy) -> execute (cache) -> score."""
        codes = self.decode(tokens)
        B = len(codes)
        safe = np.zeros(B, bool)
        dup = np.zeros(B, bool)
        fps: list[str | None] = [None] * B
        for b, code in enumerate(codes):
            safe[b] = bool(tasks.check_safety(code))
            if not safe[b]:
                continue
            fps[b], seen = self.tracker.observe(code)
            dup[b] = seen and self.tracker.policy is tasks.DuplicatePolicy.SKIP
        run = np.flatnonzero(safe & ~dup)
        scores = np.full(B, np.nan)
        statuses: list[str | None] = [None] * B
        if run.size:
            s, st = self.score_codes([codes[b] for b in run])
            scores[run] = s
            for b, x in zip(run, st, strict=True):
                statuses[b] = x
        return EpisodeBatch(codes, safe, dup, safe & ~dup, scores, statuses, fps)

    def prepare(self, batch: EpisodeBatch, tokens: np.ndarray, valid: np.ndarray
                ) -> UpdateInputs:
        """§4.1/§4.3 host side from tokens int [B, T], valid bool [B, T]: advantages, weights,
        beta and the learner state after update k."""
        return prepare_update(batch.scores, batch.keep, tokens, valid, self.learner, self.cfg)

    # -- item 4: bookkeeping ---------------------------------------------------------------

    def finish(self, batch: EpisodeBatch, upd: UpdateInputs) -> int:
        """Adopt the new learner state, record successes, advance k. Returns the batch's
        success count."""
        self.learner = upd.state
        ok = np.nan_to_num(batch.scores, nan=-math.inf) >= self.cfg.success_threshold
        for b in np.flatnonzero(ok):
            fp = batch.fingerprints[b]
            if fp is not None and fp not in self.success_fps:
                self.success_fps.append(fp)
        if batch.scored.any():
            self.best_score = max(self.best_score, float(np.nanmax(batch.scores)))
        self.t += 1
        return int(ok.sum())

    @property
    def stop_reached(self) -> bool:
        """`cfg.stop_on` satisfied or attempts >= `cfg.max_attempts` (§6 item 4)."""
        c, ls = self.cfg, self.learner
        if ls.attempts >= c.max_attempts:
            return True
        if c.stop_on == "first_success":
            return ls.successes > 0
        if c.stop_on.startswith("converge:"):
            return len(self.success_fps) >= int(c.stop_on.partition(":")[2])
        return False

    # -- persistence -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """JSON-able host state (the executor cache is not saved)."""
        return {
            "t": self.t,
            "task": self.task.name,
            "learner": dataclasses.asdict(self.learner),
            "fingerprints": self.tracker.to_list(),
            "success_fingerprints": list(self.success_fps),
            "best_score": None if self.best_score == -math.inf else self.best_score,
        }

    def load_state_dict(self, s: dict[str, Any]) -> None:
        if s["task"] != self.task.name:
            raise CheckpointError(f"checkpoint was trained on task '{s['task']}', this run uses "
                                  f"'{self.task.name}'")
        self.t = int(s["t"])
        self.learner = LearnerState(**s["learner"])
        self.tracker = tasks.DuplicateTracker(self.cfg.duplicate_policy, seen=s["fingerprints"])
        self.success_fps = list(s["success_fingerprints"])
        self.best_score = -math.inf if s["best_score"] is None else float(s["best_score"])

    def close(self) -> None:
        self.executor.close()


# ---------------------------------------------------------------------------------------------
# Engines


def _learn_metrics(loss: float, pol: float, ent: float, norm: float, skipped: bool
                   ) -> dict[str, Any]:
    return {"loss": loss, "policy_term": pol, "entropy_term": ent, "grad_norm": norm,
            "update_skipped": skipped}


SKIPPED = _learn_metrics(0.0, 0.0, 0.0, 0.0, True)


class TorchEngine:
    """Eager PyTorch (CPU): `AltLAS_RNN` + torch Adam (§4.2)."""

    framework = "torch"

    def __init__(self, cfg: AltLASConfig, state: dict[str, np.ndarray] | None = None) -> None:
        import torch

        from twinframe.torch_ref import altlas as t_alt

        self.cfg, self.torch, self.t_alt = cfg, torch, t_alt
        self.model = t_alt.AltLAS_RNN(cfg, canonical_init(cfg) if state is None else state)
        self.opt = t_alt.make_optimizer(self.model, cfg)
        self.names = [k for k, _ in self.model.named_parameters()]

    def generate(self, noise: np.ndarray) -> HostRollout:
        """noise f32 [B, T, V] -> B episodes (eval mode, no grad)."""
        r = self.t_alt.generate(self.model, self.torch.from_numpy(np.ascontiguousarray(noise)))
        return HostRollout(r.tokens.numpy(), r.valid.numpy(), r.hit_eos.numpy(),
                           r.length.numpy(), r.logp_model.numpy(), r.entropy.numpy())

    def learn(self, tokens: np.ndarray, valid: np.ndarray, upd: UpdateInputs) -> dict[str, Any]:
        """One REINFORCE + clip + Adam update on tokens int32 [B, T], valid bool [B, T]."""
        if upd.skip:
            return dict(SKIPPED)
        torch = self.torch
        lo = self.t_alt.learn_step(
            self.model, self.opt, torch.from_numpy(np.ascontiguousarray(tokens)),
            torch.from_numpy(np.ascontiguousarray(valid)), torch.from_numpy(upd.advantages),
            torch.from_numpy(upd.weights), torch.tensor(upd.beta))
        return _learn_metrics(lo.loss, lo.policy_term, lo.entropy_term, lo.grad_norm, lo.skipped)

    def export_state(self) -> dict[str, Any]:
        """{'model': state_dict, 'opt': {'step', 'exp_avg': {name: m}, 'exp_avg_sq': {...}}}:
        torch layout, NumPy float32 leaves; zeros and step 0 before the first update."""
        named = dict(self.model.named_parameters())
        model = {k: v.detach().numpy().copy() for k, v in self.model.state_dict().items()}
        states = [self.opt.state.get(named[n], {}) for n in self.names]
        step = float(states[0]["step"]) if states[0] else 0.0
        opt: dict[str, Any] = {"step": step, "exp_avg": {}, "exp_avg_sq": {}}
        for n, st in zip(self.names, states, strict=True):
            for slot in ("exp_avg", "exp_avg_sq"):
                opt[slot][n] = (st[slot].detach().numpy().copy() if st else
                                np.zeros(tuple(named[n].shape), np.float32))
        return {"model": model, "opt": opt}

    def import_state(self, s: dict[str, Any]) -> None:
        from twinframe.torch_ref.layers import load_numpy_state

        torch = self.torch
        load_numpy_state(self.model, {k: np.asarray(v, np.float32) for k, v in
                                      s["model"].items()})
        self.opt = self.t_alt.make_optimizer(self.model, self.cfg)
        o = s["opt"]
        step = float(np.asarray(o["step"]))
        if step > 0:
            named = dict(self.model.named_parameters())
            for n in self.names:
                self.opt.state[named[n]] = {
                    "step": torch.tensor(step, dtype=torch.float32),
                    "exp_avg": torch.from_numpy(np.array(o["exp_avg"][n], np.float32)),
                    "exp_avg_sq": torch.from_numpy(np.array(o["exp_avg_sq"][n], np.float32)),
                }

    def params_torch_layout(self) -> dict[str, np.ndarray]:
        return {k: v.detach().numpy().copy() for k, v in self.model.state_dict().items()}


class JaxEngine:
    """JAX: jitted `generate` (lax.scan) and jitted `train_step` (loss, grads, clip, Adam)."""

    framework = "jax"

    def __init__(self, cfg: AltLASConfig, state: dict[str, np.ndarray] | None = None) -> None:
        import jax
        import jax.numpy as jnp

        from twinframe.functional import altlas as f_alt
        from twinframe.parity import altlas as p_alt

        self.cfg, self.jax, self.jnp, self.f_alt, self.p_alt = cfg, jax, jnp, f_alt, p_alt
        self.fns = f_alt.jitted(cfg)
        self.params = p_alt.params_to_jax(canonical_init(cfg) if state is None else state, cfg)
        self.opt_state = f_alt.make_optimizer(cfg).init(self.params)

    def generate(self, noise: np.ndarray) -> HostRollout:
        """noise f32 [B, T, V] -> B episodes."""
        r = self.jax.device_get(self.fns.generate(self.params, self.jnp.asarray(noise)))
        return HostRollout(*(np.asarray(x) for x in (r.tokens, r.valid, r.hit_eos, r.length,
                                                      r.logp_model, r.entropy)))

    def learn(self, tokens: np.ndarray, valid: np.ndarray, upd: UpdateInputs) -> dict[str, Any]:
        """One update (jitted train_step) on tokens int32 [B, T], valid bool [B, T]."""
        if upd.skip:
            return dict(SKIPPED)
        jnp = self.jnp
        self.params, self.opt_state, lo = self.fns.train_step(
            self.params, self.opt_state, jnp.asarray(tokens, jnp.int32), jnp.asarray(valid),
            jnp.asarray(upd.advantages), jnp.asarray(upd.weights), jnp.float32(upd.beta))
        lo = self.jax.device_get(lo)
        return _learn_metrics(float(lo.loss), float(lo.policy_term), float(lo.entropy_term),
                              float(lo.grad_norm), bool(lo.skipped))

    def export_state(self) -> dict[str, Any]:
        """{'model': {'params': tree}, 'opt': {'count', 'mu', 'nu'}} (NumPy leaves)."""
        get = self.jax.device_get
        adam = self.opt_state[0]
        return {"model": {"params": get(self.params)},
                "opt": {"count": np.asarray(get(adam.count), np.int32), "mu": get(adam.mu),
                        "nu": get(adam.nu)}}

    def import_state(self, s: dict[str, Any]) -> None:
        import optax

        from twinframe.parity.convert import normalize_tree_keys

        jax, jnp = self.jax, self.jnp

        def dev(tree: Any) -> Any:
            return jax.tree_util.tree_map(lambda x: jnp.array(x, jnp.float32),
                                          normalize_tree_keys(tree))

        self.params = dev(s["model"]["params"])
        o = s["opt"]
        count = jnp.asarray(int(np.asarray(o["count"])), jnp.int32)
        self.opt_state = (optax.ScaleByAdamState(count=count, mu=dev(o["mu"]), nu=dev(o["nu"])),
                          optax.EmptyState())

    def params_torch_layout(self) -> dict[str, np.ndarray]:
        return self.p_alt.params_to_torch(self.jax.device_get(self.params), self.cfg)


ENGINES = {"torch": TorchEngine, "jax": JaxEngine}


# ---------------------------------------------------------------------------------------------
# Trainer (`twinframe train altlas`) and lockstep driver (`checks.run_curve`)


def log_record(host: AltLASHost, batch: EpisodeBatch, rollout: HostRollout,
               upd: UpdateInputs, learn: dict[str, Any], n_success: int,
               times: dict[str, float]) -> dict[str, Any]:
    """One §6 item-5 record, after update k (`step` = k + 1). JSON-safe (no NaN)."""
    B = len(batch.codes)
    scored = batch.scores[batch.scored]
    dt = times["step_time_s"]
    best = int(np.nanargmax(batch.scores)) if scored.size else None
    statuses = [s for s in batch.statuses if s is not None]
    ls = host.learner
    return {
        "step": host.t, "attempts": ls.attempts, "updates": ls.updates,
        "update_skipped": learn["update_skipped"],
        "loss": learn["loss"], "policy_term": learn["policy_term"],
        "entropy_term": learn["entropy_term"], "grad_norm": learn["grad_norm"],
        "baseline": ls.baseline, "beta": float(upd.beta),
        "mean_reward": float(scored.mean()) if scored.size else None,
        "max_reward": float(scored.max()) if scored.size else None,
        "best_score": None if host.best_score == -math.inf else host.best_score,
        "successes": n_success, "success_rate": n_success / B,
        "cumulative_successes": ls.successes, "distinct_successes": len(host.success_fps),
        **rollout.stats(),
        "unsafe": int((~batch.safe).sum()), "duplicates": int(batch.duplicate.sum()),
        "executed": int(batch.scored.sum()),
        "status_success": statuses.count("success"), "status_error": statuses.count("error"),
        "status_timeout": statuses.count("timeout"),
        "distinct_programs": len(host.tracker), "cache_size": host.executor.cache_size(),
        "sample_code": batch.codes[best][:SAMPLE_CODE_CHARS] if best is not None else None,
        "stop": host.stop_reached,
        **times, "episodes_per_s": B / dt if dt > 0 else None,
    }


class AltLASTrainer:
    """Host loop + one engine. `train_step()` runs §6 items 1-5 and returns the log record.

    Args:
        cfg: run config; framework: 'torch' or 'jax'.
        task: task name (default `benchmark_add_two_numbers`, stdout "8", solution
            `print ( 8 )`); timeout / workers: sandbox settings (see `AltLASHost`).
    """

    model_name = "altlas"

    def __init__(self, cfg: AltLASConfig, framework: str, task: str = DEFAULT_TASK,
                 timeout: float | None = None, workers: int | None = None) -> None:
        self.cfg = cfg
        self.framework = framework
        self.host = AltLASHost(cfg, task, timeout, workers)
        self.engine = ENGINES[framework](cfg)

    @property
    def t(self) -> int:
        return self.host.t

    def train_step(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        rollout = self.engine.generate(self.host.noise())
        t1 = time.perf_counter()
        batch = self.host.assess(rollout.tokens)
        upd = self.host.prepare(batch, rollout.tokens, rollout.valid)
        t2 = time.perf_counter()
        learn = self.engine.learn(rollout.tokens, rollout.valid, upd)
        t3 = time.perf_counter()
        n_ok = self.host.finish(batch, upd)
        times = {"generate_s": t1 - t0, "execute_s": t2 - t1, "learn_s": t3 - t2,
                 "step_time_s": time.perf_counter() - t0}
        return log_record(self.host, batch, rollout, upd, learn, n_ok, times)

    def export_state(self) -> dict[str, Any]:
        """Full train state in this framework's layout (+ carry, host state and config)."""
        return {**self.engine.export_state(),
                "carry": {"update_index": np.asarray(self.host.t, np.int32)},
                "host": json.loads(json.dumps(self.host.state_dict())),
                "config": self.cfg.to_dict(), "framework": self.framework,
                "model_name": self.model_name}

    def import_state(self, s: dict[str, Any]) -> None:
        k = int(round(float(np.asarray(s["carry"]["update_index"]))))
        if k != int(s["host"]["t"]):
            raise CheckpointError(f"train state is inconsistent: carry update_index {k}, host t "
                                  f"{s['host']['t']}")
        self.engine.import_state(s)
        self.host.load_state_dict(s["host"])

    def params_torch_layout(self) -> dict[str, np.ndarray]:
        return self.engine.params_torch_layout()

    def evaluate(self, n: int) -> dict[str, dict[str, Any]]:
        """Current policy on the task, no learning, no duplicate tracking: n sampled episodes
        (noise from SeedSequence([seed, EVAL_STREAM]), the same every call) and the greedy
        (zero-noise, argmax) episode."""
        c = self.cfg
        T, V = c.max_gen_len, c.vocab_size
        gen = np.random.Generator(np.random.PCG64(np.random.SeedSequence([c.seed, EVAL_STREAM])))
        u = np.maximum(gen.uniform(size=(n, T, V)), np.finfo(np.float32).tiny)
        noise = (-np.log(-np.log(u))).astype(np.float32)
        out: dict[str, dict[str, Any]] = {}
        for name, g in (("sampled", noise), ("greedy", np.zeros((1, T, V), np.float32))):
            r = self.engine.generate(g)
            codes = self.host.decode(r.tokens)
            safe = [bool(tasks.check_safety(x)) for x in codes]
            scores = np.zeros(len(codes))
            idx = [i for i, s in enumerate(safe) if s]
            if idx:
                scores[idx] = self.host.score_codes([codes[i] for i in idx])[0]
            out[name] = {"success_rate": float(np.mean(scores >= c.success_threshold)),
                         "mean_reward": float(scores.mean()), "max_reward": float(scores.max()),
                         "distinct_programs": float(len(set(codes))),
                         "mean_length": float(r.length.mean()),
                         "program": codes[int(np.argmax(scores))][:SAMPLE_CODE_CHARS]}
        return out

    def close(self) -> None:
        self.host.close()


class AltLASLockstep:
    """Both engines on one host (L5 lockstep curve): the same injected noise, so equal weights
    sample equal tokens and the host scores each program once (sandbox cache). The host consumes
    torch's tokens; both engines learn on torch's tokens with the same host-prepared advantages,
    weights and beta, so the stream stays aligned even after a token mismatch.

    `halt_mismatches` (name kept for the generic curve code) counts TOKEN mismatches: the number
    of episodes, summed over steps, whose JAX token row differs from torch's.
    `CURVE_METRICS` names the per-step series `checks.run_curve` compares (rtol 1e-4): the
    update's loss / policy term / entropy term / pre-clip grad norm, and each engine's own
    rollout statistics (mean target log-prob and entropy over valid steps, mean length)."""

    CURVE_METRICS = ("loss", "policy_term", "entropy_term", "grad_norm", "mean_logp",
                     "mean_entropy", "mean_length")

    def __init__(self, cfg: AltLASConfig, task: str = DEFAULT_TASK) -> None:
        self.cfg = cfg
        self.host = AltLASHost(cfg, task)
        self.torch, self.jax = TorchEngine(cfg), JaxEngine(cfg)
        self.halt_mismatches = 0

    def step(self) -> tuple[dict[str, Any], dict[str, Any], str]:
        noise = self.host.noise()
        rt, rj = self.torch.generate(noise), self.jax.generate(noise)
        bad = np.flatnonzero((rt.tokens != rj.tokens).any(axis=1))
        self.halt_mismatches += int(bad.size)
        batch = self.host.assess(rt.tokens)
        upd = self.host.prepare(batch, rt.tokens, rt.valid)
        mt = self.torch.learn(rt.tokens, rt.valid, upd)
        mj = self.jax.learn(rt.tokens, rt.valid, upd)
        self.host.finish(batch, upd)
        scored = batch.scores[batch.scored]
        shared = {"mean_reward": float(scored.mean()) if scored.size else 0.0,
                  "baseline": self.host.learner.baseline}
        note = f"{bad.size} episode(s) with token mismatches" if bad.size else ""
        return {**mt, **rt.stats(), **shared}, {**mj, **rj.stats(), **shared}, note

    def params(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        return self.torch.params_torch_layout(), self.jax.params_torch_layout()

    def close(self) -> None:
        self.host.close()


@functools.lru_cache(maxsize=1)
def solution_tokens(task: str = DEFAULT_TASK, vocab: str = "v1_63") -> tuple[int, ...]:
    """Token ids (EOS included, SOS excluded) of a known shortest solution of `task` (for
    tests and sanity checks; only the tasks of the spec §5.1 table with a `v1_63` solution)."""
    known = {"benchmark_add_two_numbers": "print(8)", "benchmark_list_operations": "print(8)",
             "hello_world": 'print("hello","world")', "benchmark_basic_loop": "print(9+6)",
             "benchmark_concatenate_strings": 'print("hello""world")',
             "benchmark_function_with_return": "print(3*5/1)"}
    return tuple(tasks.Tokenizer(vocab, "structural").encode(known[task])[1:])
