"""AltLAS training (altlas.md §6 runner loop, altlas.md §4 learning, altlas.md §5 tasks): a
framework-neutral host
(task, tokenizer, safety filter, duplicate tracker, sandbox executor, scorer, baseline/reward
bookkeeping, parity-mode Gumbel noise) driving a torch or JAX engine.

One update k (0-based; `host.t` = updates done so far):
1. host noise g = `gumbel_noise(run.seed, k, B, T, V)` (altlas.md §3.3 parity mode) -> engine
   `generate`
   (B episodes, tokens int32 [B, T], valid bool [B, T]);
2. host: decode -> safety -> fingerprint / duplicate policy -> sandbox (cached) -> scorer
   (score f64 [B], NaN where not scored) -> `prepare_update` (advantages, weights, beta, new
   baseline / reward statistics / attempts / successes);
3. engine `learn` (teacher-forced REINFORCE, clip, Adam; skipped on the host when B_eff = 0);
4. host bookkeeping (successes, distinct successful fingerprints, stop condition) and one log
   record (altlas.md §6 item 5).
Both frameworks receive the same noise array, so with equal weights they sample equal tokens
and the sandbox runs each distinct program once (result cache keyed by SHA-256 of the code).

Train states follow the declared layout (`models.altlas.layout`): torch model = state_dict,
opt = torch Adam's exp_avg / exp_avg_sq by state-dict key + step; JAX model = {"params": tree},
opt = {count, mu, nu} read from the optax state by field name; no carry (the RNN state is zero
at the start of every episode); host = `AltLASHost.state_dict()` (JSON): t, task name, learner
state, fingerprints, ...

Choices where the spec is silent (ours):
- Default task (`AltLASRun.task`) `benchmark_add_two_numbers` (expected stdout "8"; shortest
  `v1_63` solution `print ( 8 )`, 4 tokens + EOS, altlas.md §5.1 table): the easiest solvable task.
- Executor wall timeout = min(run.timeout, 2 s) (altlas.md §5.3 recommends 2 s for training); the
  result
  cache is not saved (results are deterministic; a program running close to the timeout could in
  principle flip between `success` and `timeout` after a resume — a cache miss re-runs it).
- The stop condition (`run.stop_on`, `run.max_attempts`, altlas.md §6 item 4) is evaluated and
  reported
  as `stop` in every record, but training is not halted: the generic driver runs the requested
  number of steps.
- The torch engine runs on CPU (`torch_ref.altlas.generate` builds its per-step tensors on the
  CPU); JAX uses its default device.
- Lockstep (both engines on one host, `training.runner.Lockstep`): the host consumes the
  first engine's (torch's) tokens; both engines learn on them with the same host-prepared
  advantages, weights and beta, so the stream stays aligned after a token mismatch; a
  mismatch counts the episodes whose token rows differ.
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
import logging
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from twinframe.contract import StepResult
from twinframe.errors import CheckpointError, ConfigError
from twinframe.models.altlas import (
    AltLASConfig,
    AltLASRun,
    LearnerState,
    UpdateInputs,
    gumbel_noise,
    prepare_update,
)
from twinframe.tasks import altlas as tasks
from twinframe.training import guard
from twinframe.training.engine import BenchStep, JaxEngine, TorchEngine

if TYPE_CHECKING:
    from twinframe.contract import ModelSpec

log = logging.getLogger(__name__)

TRAIN_TIMEOUT_CAP_S = 2.0
EVAL_STREAM = 0xE7A1  # SeedSequence([seed, EVAL_STREAM]) for `evaluate` noise (ours)
SAMPLE_CODE_CHARS = 200


# ---------------------------------------------------------------------------------------------
# Host side


@dataclasses.dataclass
class EpisodeBatch:
    """Host view of B episodes after altlas.md §6 item 2.

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
    """Framework-neutral altlas.md §6 runner state: task, tokenizer, safety, duplicates, sandbox,
    scorer,
    learner bookkeeping (baseline EMA, reward statistics, attempts, successes) and update index.

    Args:
        cfg, run: model and run configs (B = run.batch_size, T = cfg.max_gen_len, task =
            run.task, a name from the bundled task file).
        timeout: sandbox wall timeout in s (default min(run.timeout, 2.0)).
        workers: sandboxes in flight (default `tasks.altlas.sandbox.default_workers()`: the
            usable CPU cores + 2).

    The sandbox executor is created on first use (the first program run), so a host that never
    runs a program (one overriding `assess`) needs no sandbox; `make_host` creates it at once.
    Without OS isolation it raises `SandboxUnavailable` unless `run.unsafe_no_sandbox`.
    """

    def __init__(self, cfg: AltLASConfig, run: AltLASRun, timeout: float | None = None,
                 workers: int | None = None) -> None:
        self.cfg, self.run = cfg, run
        task = run.task
        self.task = tasks.load_task(task)
        if not self.task.is_python:
            raise ConfigError(f"task {task!r} targets {self.task.target_language}; the sandbox "
                              "runs Python only")
        self.tokenizer = tasks.Tokenizer(cfg.vocab, cfg.indent_mode)
        if self.tokenizer.vocab_size != cfg.vocab_size:
            raise ConfigError(f"vocab {cfg.vocab} has {self.tokenizer.vocab_size} tokens, config "
                              f"says {cfg.vocab_size}")
        self.scorer = tasks.get_scorer(run.scorer)
        self.tracker = tasks.DuplicateTracker(run.duplicate_policy)
        self._timeout = min(run.timeout, TRAIN_TIMEOUT_CAP_S) if timeout is None else float(
            timeout)
        self._workers = workers
        self._executor: tasks.Executor | None = None
        self.t = 0
        self.learner = LearnerState()
        self.best_score = -math.inf
        self.success_fps: list[str] = []

    @property
    def executor(self) -> tasks.Executor:
        """The sandbox executor, created on first use (raises `SandboxUnavailable` when OS
        isolation is missing, unless `run.unsafe_no_sandbox`)."""
        if self._executor is None:
            self._executor = tasks.Executor(timeout=self._timeout, workers=self._workers,
                                            unsafe_no_sandbox=self.run.unsafe_no_sandbox)
        return self._executor

    @property
    def isolation(self) -> str | None:
        """"bwrap", "none" (unsafe_no_sandbox), or None while no program has run."""
        return None if self._executor is None else self._executor.isolation

    # -- item 1: noise ---------------------------------------------------------------------

    def noise(self) -> np.ndarray:
        """Gumbel noise of update k = self.t: f32 [B, T, V] (altlas.md §3.3 parity mode)."""
        c, r = self.cfg, self.run
        return gumbel_noise(r.seed, self.t, r.batch_size, c.max_gen_len, c.vocab_size)

    # -- item 2: decode, safety, duplicates, sandbox, scorer --------------------------------

    def decode(self, tokens: np.ndarray) -> list[str]:
        """tokens int [B, T] -> B programs (PAD/EOS skipped, surface map applied, altlas.md
        §1.3)."""
        return [self.tokenizer.decode(row.tolist()) for row in np.asarray(tokens)]

    def score_codes(self, codes: list[str]) -> tuple[np.ndarray, list[str]]:
        """Pure scoring (no safety, no duplicate tracking): scores f64 [N] and statuses [N].
        Runs the sandbox through the cache."""
        results = self.executor.run_many(codes)
        scores = np.array([self.scorer(c, r, self.task) for c, r in zip(codes, results,
                                                                        strict=True)], np.float64)
        return scores, [r.status for r in results]

    def assess(self, tokens: np.ndarray) -> EpisodeBatch:
        """altlas.md §6 item 2 for one batch, in index order: safety (unsafe -> not fingerprinted,
        not
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
        """altlas.md §4.1/§4.3 host side from tokens int [B, T], valid bool [B, T]: advantages,
        weights,
        beta and the learner state after update k."""
        return prepare_update(batch.scores, batch.keep, tokens, valid, self.learner, self.cfg,
                              self.run)

    # -- item 4: bookkeeping ---------------------------------------------------------------

    def finish(self, batch: EpisodeBatch, upd: UpdateInputs) -> int:
        """Adopt the new learner state, record successes, advance k. Returns the batch's
        success count."""
        self.learner = upd.state
        ok = np.nan_to_num(batch.scores, nan=-math.inf) >= self.run.success_threshold
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
        """`run.stop_on` satisfied or attempts >= `run.max_attempts` (altlas.md §6 item 4)."""
        c, ls = self.run, self.learner
        if ls.attempts >= c.max_attempts:
            return True
        if c.stop_on == "first_success":
            return ls.successes > 0
        if c.stop_on.startswith("converge:"):
            return len(self.success_fps) >= int(c.stop_on.partition(":")[2])
        return False

    # -- one step over one or more engines -------------------------------------------------

    def step(self, engines: Sequence[AltLASTorchEngine | AltLASJaxEngine]) -> StepResult:
        """altlas.md §6 items 1-5. engines[0]'s tokens are executed, scored and learned on by
        all."""
        t0 = time.perf_counter()
        noise = self.noise()
        rolls = [e.generate(noise) for e in engines]
        r0 = rolls[0]
        t1 = time.perf_counter()
        batch = self.assess(r0.tokens)
        upd = self.prepare(batch, r0.tokens, r0.valid)
        t2 = time.perf_counter()
        learns = [e.learn(r0.tokens, r0.valid, upd) for e in engines]
        t3 = time.perf_counter()
        n_ok = self.finish(batch, upd)
        times = {"generate_s": t1 - t0, "execute_s": t2 - t1, "learn_s": t3 - t2,
                 "step_time_s": time.perf_counter() - t0}
        bad = sum(int((r.tokens != r0.tokens).any(axis=1).sum()) for r in rolls[1:])
        records = [log_record(self, batch, r, upd, lo, n_ok, times)
                   for r, lo in zip(rolls, learns, strict=True)]
        note = f"{bad} episode(s) with token mismatches" if bad else ""
        return StepResult(records, bad, note)

    # -- persistence -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """JSON-able host state (the executor cache is not saved; `sandbox` says whether the
        run's programs ran under bwrap or, with `unsafe_no_sandbox`, without isolation)."""
        return {
            "t": self.t,
            "task": self.task.name,
            "learner": dataclasses.asdict(self.learner),
            "fingerprints": self.tracker.to_list(),
            "success_fingerprints": list(self.success_fps),
            "best_score": None if self.best_score == -math.inf else self.best_score,
            "sandbox": "none" if self.run.unsafe_no_sandbox else "bwrap",
        }

    def load_state_dict(self, s: dict[str, Any]) -> None:
        if s["task"] != self.task.name:
            raise CheckpointError(f"checkpoint was trained on task '{s['task']}', this run uses "
                                  f"'{self.task.name}'")
        self.t = int(s["t"])
        self.learner = LearnerState(**s["learner"])
        self.tracker = tasks.DuplicateTracker(self.run.duplicate_policy, seen=s["fingerprints"])
        self.success_fps = list(s["success_fingerprints"])
        self.best_score = -math.inf if s["best_score"] is None else float(s["best_score"])

    def close(self) -> None:
        if self._executor is not None:
            self._executor.close()


def make_host(cfg: AltLASConfig, run: AltLASRun) -> AltLASHost:
    """The training host (`spec.make_host`), its sandbox set up now: a run without OS isolation
    is refused before any step (`SandboxUnavailable`, one line) unless `run.unsafe_no_sandbox`,
    which is logged and recorded (`sandbox` in every record, `isolation` in the host state)."""
    host = AltLASHost(cfg, run)
    host.executor  # noqa: B018 - created now: refuses here, or logs the unsafe mode
    return host


# ---------------------------------------------------------------------------------------------
# Engines


def _learn_metrics(loss: float, pol: float, ent: float, norm: float, skipped: bool,
                   nonfinite: str | None = None) -> dict[str, Any]:
    return {"loss": loss, "policy_term": pol, "entropy_term": ent, "grad_norm": norm,
            "update_skipped": skipped, guard.NONFINITE_KEY: nonfinite}


SKIPPED = _learn_metrics(0.0, 0.0, 0.0, 0.0, True)


def check_generate_inputs(cfg: AltLASConfig, noise: np.ndarray) -> np.ndarray:
    """Gumbel noise f32 [B, T, V], finite (`guard.BadInput` before either framework sees it)."""
    return guard.check_floats("noise", noise, (None, cfg.max_gen_len, cfg.vocab_size))


def check_learn_inputs(cfg: AltLASConfig, tokens: np.ndarray, valid: np.ndarray,
                       upd: UpdateInputs) -> None:
    """tokens int [B, T] in [0, V), valid bool [B, T], advantages and weights finite [B] (weights
    >= 0), beta finite."""
    tokens = guard.check_ints("tokens", tokens, (None, cfg.max_gen_len), 0, cfg.vocab_size)
    B = tokens.shape[0]
    guard.check_bools("valid", valid, (B, cfg.max_gen_len))
    guard.check_floats("advantages", upd.advantages, (B,))
    guard.check_floats("weights", upd.weights, (B,), 0.0)
    guard.check_floats("beta", np.asarray(upd.beta), ())


def _loss_terms(loss: float, pol: float, ent: float) -> dict[str, float]:
    return {"policy_term": pol, "entropy_term": ent, "loss": loss}


class _NonFiniteGrads(Exception):
    """Raised by the torch optimizer's pre-step hook: the update is not applied."""


def bench_inputs(host: AltLASHost) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """`twinframe bench`'s fixed step inputs: host's next noise f32 [B, T, V], advantages f32
    [B] (spread around 0), weights f32 [B] (1/B) and beta."""
    B = host.run.batch_size
    adv = np.linspace(-1.0, 1.0, B, dtype=np.float32)
    return host.noise(), adv, np.full(B, 1.0 / B, np.float32), 0.01


class AltLASTorchEngine(TorchEngine):
    """Eager PyTorch (CPU): `AltLAS_RNN` + torch Adam (altlas.md §4.2)."""

    CPU_ONLY = True

    def __init__(self, spec: ModelSpec, cfg: AltLASConfig, run: AltLASRun,
                 state: dict[str, np.ndarray] | None = None) -> None:
        super().__init__(spec, cfg, run, state)
        from twinframe.torch_ref import altlas as t_alt

        self.t_alt = t_alt
        self._guard_optimizer()

    def import_state(self, state: dict[str, Any]) -> None:
        super().import_state(state)
        self._guard_optimizer()

    def _guard_optimizer(self) -> None:
        """A pre-step hook on the (new) optimizer: non-finite gradients (after clipping, which
        spreads a NaN to every tensor) abort `optimizer.step()` before anything changes."""
        torch = self.torch

        def check(opt: Any, args: Any, kwargs: Any) -> None:
            del args, kwargs
            grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
            if grads and not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()):
                raise _NonFiniteGrads

        self.opt.register_step_pre_hook(check)

    def generate(self, noise: np.ndarray) -> HostRollout:
        """noise f32 [B, T, V] -> B episodes (eval mode, no grad)."""
        noise = check_generate_inputs(self.cfg, noise)
        r = self.t_alt.generate(self.model, self.dev(noise))
        return HostRollout(r.tokens.numpy(), r.valid.numpy(), r.hit_eos.numpy(),
                           r.length.numpy(), r.logp_model.numpy(), r.entropy.numpy())

    def learn(self, tokens: np.ndarray, valid: np.ndarray, upd: UpdateInputs) -> dict[str, Any]:
        """One REINFORCE + clip + Adam update on tokens int32 [B, T], valid bool [B, T]; with a
        non-finite gradient nothing changes and the first non-finite tensor is named."""
        check_learn_inputs(self.cfg, tokens, valid, upd)
        if upd.skip:
            return dict(SKIPPED)
        torch = self.torch
        args = (self.dev(tokens), self.dev(valid), self.dev(upd.advantages),
                self.dev(upd.weights), torch.tensor(upd.beta))
        try:
            lo = self.t_alt.learn_step(self.model, self.opt, *args,
                                       grad_clip_norm=self.run.grad_clip_norm)
        except _NonFiniteGrads:
            return self._nonfinite(args)
        return _learn_metrics(lo.loss, lo.policy_term, lo.entropy_term, lo.grad_norm, lo.skipped)

    def bench_step(self, host: AltLASHost) -> BenchStep:
        """`twinframe bench`: generation + one update on the rollout's tokens, inputs made
        once (`bench_inputs`); no metric fetch beyond what `learn_step` does itself."""
        noise, adv, w, beta = (self.dev(x) if isinstance(x, np.ndarray) else x
                               for x in bench_inputs(host))

        def run() -> None:
            r = self.t_alt.generate(self.model, noise)
            self.t_alt.learn_step(self.model, self.opt, r.tokens, r.valid, adv, w, beta,
                                  grad_clip_norm=self.run.grad_clip_norm)

        return BenchStep(run)

    def _nonfinite(self, args: tuple) -> dict[str, Any]:
        """After an aborted update: loss and raw (unclipped) gradients recomputed."""
        from twinframe.store.io import to_numpy

        self.opt.zero_grad(set_to_none=True)
        out = self.t_alt.reinforce_loss(self.model, *args)
        out.loss.backward()
        named = dict(self.model.named_parameters())
        grads = {n: to_numpy(named[n].grad) for n in self.names if named[n].grad is not None}
        self.opt.zero_grad(set_to_none=True)
        loss, pol, ent = (float(x.detach() if hasattr(x, "detach") else x)
                          for x in (out.loss, out.policy_term, out.entropy_term))
        norm = float(np.sqrt(sum(np.sum(np.square(g, dtype=np.float64)) for g in grads.values())))
        what = guard.nonfinite_report(
            [("parameter", {n: to_numpy(named[n]) for n in self.names}),
             ("loss term", _loss_terms(loss, pol, ent)), ("gradient", grads)], norm)
        return _learn_metrics(loss, pol, ent, norm, False, what)


class AltLASJaxEngine(JaxEngine):
    """JAX: jitted `generate` (lax.scan) and the jitted, donated train step (loss, grads,
    clip + Adam as one optax chain)."""

    def __init__(self, spec: ModelSpec, cfg: AltLASConfig, run: AltLASRun,
                 state: dict[str, np.ndarray] | None = None) -> None:
        super().__init__(spec, cfg, run, state)
        from twinframe.functional import altlas as f_alt

        self.f_alt = f_alt
        self.fns = f_alt.jitted(cfg)
        self._step = _train_step(spec, cfg, run)

    def generate(self, noise: np.ndarray) -> HostRollout:
        """noise f32 [B, T, V] -> B episodes."""
        noise = check_generate_inputs(self.cfg, noise)
        r = self.jax.device_get(self.fns.generate(self.params, self.jnp.asarray(noise)))
        return HostRollout(*(np.asarray(x) for x in (r.tokens, r.valid, r.hit_eos, r.length,
                                                      r.logp_model, r.entropy)))

    def learn(self, tokens: np.ndarray, valid: np.ndarray, upd: UpdateInputs) -> dict[str, Any]:
        """One update (jitted, donated train step) on tokens int32 [B, T], valid bool [B, T];
        with a non-finite loss or gradient norm nothing changes (see `_train_step`) and the
        first non-finite tensor is named."""
        check_learn_inputs(self.cfg, tokens, valid, upd)
        if upd.skip:
            return dict(SKIPPED)
        jnp = self.jnp
        batch = self.f_alt.LearnBatch(jnp.asarray(tokens, jnp.int32), jnp.asarray(valid),
                                      jnp.asarray(upd.advantages), jnp.asarray(upd.weights),
                                      jnp.float32(upd.beta))
        self.params, self.opt_state, lo, ok = self._step(self.params, self.opt_state, batch)
        lo, ok = self.jax.device_get((lo, ok))
        m = (float(lo.loss), float(lo.policy_term), float(lo.entropy_term))
        what = None
        if not ok:
            what = self._nonfinite(batch, m, float(lo.grad_norm))
        return _learn_metrics(*m, float(lo.grad_norm), bool(lo.skipped), what)

    def bench_step(self, host: AltLASHost) -> BenchStep:
        """`twinframe bench`: jitted generation + the compiled update on the rollout's tokens
        (device to device), inputs made once (`bench_inputs`); returns the loss to sync on."""
        jnp = self.jnp
        noise, adv, w, beta = bench_inputs(host)
        noise, adv, w = jnp.asarray(noise), jnp.asarray(adv), jnp.asarray(w)

        def run() -> Any:
            r = self.fns.generate(self.params, noise)
            batch = self.f_alt.LearnBatch(r.tokens, r.valid, adv, w, jnp.float32(beta))
            self.params, self.opt_state, lo, ok = self._step(self.params, self.opt_state, batch)
            return lo, ok

        return BenchStep(run)

    def _nonfinite(self, batch: Any, terms: tuple[float, float, float], norm: float) -> str:
        """Only after a failed update: its raw gradients recomputed from the kept params
        (params + grads from `guard.identity_step`), when params and loss are finite."""
        tab = self.layout.params

        def grads() -> dict[str, np.ndarray]:
            import optax

            moved, _, _ = guard.identity_step(self.spec, self.cfg)(
                guard.jax_copy(self.params), optax.EmptyState(), batch)
            return tab.tree_to_torch(self.jax.device_get(moved))

        return guard.nonfinite_report(
            [("parameter", tab.tree_to_torch(self.jax.device_get(self.params))),
             ("loss term", _loss_terms(*terms)), ("gradient", grads)], norm)


@functools.lru_cache(maxsize=8)
def _train_step(spec: ModelSpec, cfg: AltLASConfig, run: AltLASRun) -> Any:
    """One compiled train step per config pair, shared by every engine of the process:
    `spec.make_train_step` plus a finite flag (loss and gradient norm) computed on the device and
    fetched with the step's outputs (no extra host sync); where it is False, params and
    optimizer state keep their values from before the step."""
    import jax
    import jax.numpy as jnp

    inner = spec.make_train_step(cfg, spec.jax_optimizer(run))

    def guarded(params, opt_state, batch):
        new_p, new_s, lo = inner(params, opt_state, batch)
        ok = jnp.isfinite(lo.loss) & jnp.isfinite(lo.grad_norm)

        def keep(new, old):
            return jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, old)

        return keep(new_p, params), keep(new_s, opt_state), lo, ok

    return jax.jit(guarded, donate_argnums=(0, 1))


# ---------------------------------------------------------------------------------------------
# Trainer (`twinframe train altlas`) and lockstep driver (`checks.run_curve`)


def log_record(host: AltLASHost, batch: EpisodeBatch, rollout: HostRollout,
               upd: UpdateInputs, learn: dict[str, Any], n_success: int,
               times: dict[str, float]) -> dict[str, Any]:
    """One altlas.md §6 item-5 record, after update k (`step` = k + 1). JSON-safe (no NaN)."""
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
        "distinct_programs": len(host.tracker),
        "cache_size": 0 if host.isolation is None else host.executor.cache_size(),
        "sandbox": _SANDBOX_SHOWN.get(host.isolation, host.isolation),
        "sample_code": batch.codes[best][:SAMPLE_CODE_CHARS] if best is not None else None,
        "stop": host.stop_reached, guard.NONFINITE_KEY: learn.get(guard.NONFINITE_KEY),
        **times, "episodes_per_s": B / dt if dt > 0 else None,
    }


_SANDBOX_SHOWN = {"none": "NONE (unsafe)"}


def evaluate(engine: AltLASTorchEngine | AltLASJaxEngine, cfg: AltLASConfig, run: AltLASRun,
             n: int) -> dict[str, dict[str, Any]]:
    """The engine's current policy on the run's task, no learning, no duplicate tracking: n
    sampled episodes (noise from SeedSequence([seed, EVAL_STREAM]), the same every call) and
    the greedy (zero-noise, argmax) episode."""
    host = AltLASHost(cfg, run)
    try:
        T, V = cfg.max_gen_len, cfg.vocab_size
        gen = np.random.Generator(np.random.PCG64(np.random.SeedSequence([run.seed,
                                                                          EVAL_STREAM])))
        u = np.maximum(gen.uniform(size=(n, T, V)), np.finfo(np.float32).tiny)
        noise = (-np.log(-np.log(u))).astype(np.float32)
        out: dict[str, dict[str, Any]] = {}
        for name, g in (("sampled", noise), ("greedy", np.zeros((1, T, V), np.float32))):
            r = engine.generate(g)
            codes = host.decode(r.tokens)
            safe = [bool(tasks.check_safety(x)) for x in codes]
            scores = np.zeros(len(codes))
            idx = [i for i, s in enumerate(safe) if s]
            if idx:
                scores[idx] = host.score_codes([codes[i] for i in idx])[0]
            out[name] = {"success_rate": float(np.mean(scores >= run.success_threshold)),
                         "mean_reward": float(scores.mean()), "max_reward": float(scores.max()),
                         "distinct_programs": float(len(set(codes))),
                         "mean_length": float(r.length.mean()),
                         "program": codes[int(np.argmax(scores))][:SAMPLE_CODE_CHARS]}
        return out
    finally:
        host.close()


@functools.lru_cache(maxsize=1)
def solution_tokens(task: str = "benchmark_add_two_numbers", vocab: str = "v1_63"
                    ) -> tuple[int, ...]:
    """Token ids (EOS included, SOS excluded) of a known shortest solution of `task` (for
    tests and sanity checks; only the tasks of the altlas.md §5.1 table with a `v1_63` solution)."""
    known = {"benchmark_add_two_numbers": "print(8)", "benchmark_list_operations": "print(8)",
             "hello_world": 'print("hello","world")', "benchmark_basic_loop": "print(9+6)",
             "benchmark_concatenate_strings": 'print("hello""world")',
             "benchmark_function_with_return": "print(3*5/1)"}
    return tuple(tasks.Tokenizer(vocab, "structural").encode(known[task])[1:])
