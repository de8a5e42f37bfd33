"""AltLAS parity levels (altlas.md §7, §8): P0-P9 (torch = reference, JAX = candidate).
The layout lives in `models.altlas.layout`, the reference file formats in `parity.altlas_io`.

Levels (each a thunk returning `Comparison`s; tolerance keys `altlas.P*` in `tolerances`):
- P0 round trips torch -> JAX -> torch and JAX -> torch -> JAX of params + Adam state through the
  generic train-state conversion and the reference optimizer file format (bitwise).
- P1 step mode == sequence mode, in each framework.
- P2 teacher-forced logits, target log-probs, entropies on random tokens (PAD inputs included,
  ragged masks).
- P3 batched sampling under shared Gumbel noise: tokens exact, log-probs / entropies close.
- P4 REINFORCE loss and every gradient (fixed advantages, one episode with w = 0); embedding
  row-0 gradient exactly zero in both.
- P5 one clip + Adam update from P4 (params, moments, step), plus an Adam-only update from
  identical gradients and non-zero moments.
- P6 N-step lockstep training: the generic lockstep runner and L5 judgement (`parity.checks`)
  on a host whose reward is the deterministic `toy_reward` instead of sandbox + scorer (no
  programs run), plus the spec's per-leaf relative-L2 bound on the final params.
- P7 resume across frameworks: N torch steps, written as reference `.pth` files, read back,
  converted (generic train-state conversion), then M steps of both engines in lockstep.
- P8 Appendix A golden numbers (LSTM and GRU), both frameworks against the printed values.
- P9 invariants after P6: LSTM bias_ih == bias_hh bitwise, embedding row 0 unchanged.

Choices where the spec is silent (ours):
- Batch sizes: P1 B=4, P2/P4 B=16, P3 B=256, P5/P6/P7 B = run.batch_size; T = cfg.max_gen_len.
  Random inputs come from `default_rng([run.seed, 200 + level])`.
- P3 tokens: an episode whose first mismatch falls on a torch top-2 gap < 1e-5 of z + g is
  excluded and reported in the note.
- P4's per-leaf relative-L2 criterion is reported as its own comparison (`grad_rel_l2.*`):
  reference 0, candidate ||dg|| / ||g||.
- P5 splits parameters by the clipped gradient the optimizer saw: |g| >= 1e-6 -> params atol
  1e-6; |g| < 1e-6 -> the step divided by lr, atol 1 (the first Adam step is +-lr*sign(g)).
- P6/P9 default to N = 20 steps at B = run.batch_size. In lockstep the host consumes torch's
  tokens (both engines learn on them), so P6 counts token mismatches instead of following two
  diverging streams.
- P8 composes the JAX clip + Adam step eagerly from the transforms the train step chains.
"""

from __future__ import annotations

import functools
import logging
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

from twinframe.functional import altlas as f_alt
from twinframe.models import altlas as m_alt
from twinframe.models.altlas import PAD_ID, PRESETS, AltLASConfig, AltLASRun, torch_shapes
from twinframe.models.layout import convert_train_state, flatten_tree, path_str
from twinframe.parity import altlas_io, checks
from twinframe.parity.compare import Comparison
from twinframe.parity.optim_inputs import grads_and_moments, prime_torch_optimizer
from twinframe.parity.twins import Twins
from twinframe.torch_ref import altlas as t_alt
from twinframe.training.altlas import AltLASHost, EpisodeBatch
from twinframe.training.runner import Lockstep, make_engine

log = logging.getLogger(__name__)
NEAR_TIE = 1e-5


def _spec():
    from twinframe import registry

    return registry.get("altlas")


def _twins(cfg: AltLASConfig, state: dict[str, np.ndarray] | None = None, seed: int = 0
           ) -> Twins:
    return Twins.build(_spec(), cfg, state, seed)


def _t(x: Any) -> torch.Tensor:
    return torch.from_numpy(np.array(x))


def _cmp(level: str, name: str, ref: Any, cand: Any, tol: str, note: str = "") -> Comparison:
    ref = ref.detach().numpy() if isinstance(ref, torch.Tensor) else np.asarray(ref)
    cand = cand.detach().numpy() if isinstance(cand, torch.Tensor) else np.asarray(cand)
    return Comparison(level, name, ref, cand, f"altlas.{tol}", "float32", note)


def _rel_l2(level: str, name: str, ref: np.ndarray, cand: np.ndarray, tol: str) -> Comparison:
    """Reference 0 vs candidate ||cand - ref|| / ||ref|| (0 when both are 0)."""
    ref64, cand64 = np.asarray(ref, np.float64), np.asarray(cand, np.float64)
    den = np.linalg.norm(ref64)
    num = np.linalg.norm(cand64 - ref64)
    rel = num / den if den > 0 else (0.0 if num == 0 else math.inf)
    return _cmp(level, name, np.zeros(1), np.array([rel]), tol)


def _bits(x: Any) -> np.ndarray:
    return np.asarray(x, np.float32).view(np.uint32)


def random_batch(cfg: AltLASConfig, seed: int, batch: int, steps: int, stream: int
                 ) -> dict[str, np.ndarray]:
    """tokens int32 [B, T] over all ids (PAD and EOS inside episodes, PAD after the end), ragged
    valid bool [B, T], advantages f32 [B], weights f32 [B] (last episode w = 0 when B > 1)."""
    rng = np.random.default_rng([seed, stream])
    V = cfg.vocab_size
    tokens = rng.integers(0, V, size=(batch, steps)).astype(np.int32)
    lengths = rng.integers(1, steps + 1, size=batch)
    lengths[0] = steps
    valid = np.arange(steps)[None, :] < lengths[:, None]
    if steps > 3:
        tokens[0, 1] = PAD_ID
        tokens[0, 3] = m_alt.EOS_ID
    tokens[~valid] = PAD_ID
    adv = rng.standard_normal(batch).astype(np.float32)
    w = np.ones(batch, np.float32)
    if batch > 1:
        w[-1] = 0.0
    return {"tokens": tokens, "valid": valid, "adv": adv, "w": w}


def toy_reward(tokens: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Deterministic host reward f64 [B] in [0, 1.25]: fraction of generated (non-EOS) tokens
    whose id is a multiple of 4, plus 0.25 for stopping with EOS. Stands in for sandbox + scorer."""
    tokens, valid = np.asarray(tokens), np.asarray(valid, bool)
    gen = valid & (tokens != m_alt.EOS_ID)
    hits = (gen & (tokens % 4 == 0)).sum(1)
    frac = hits / np.maximum(gen.sum(1), 1)
    return frac + 0.25 * (valid & (tokens == m_alt.EOS_ID)).any(1)


def episode_valid(tokens: np.ndarray) -> np.ndarray:
    """valid bool [B, T] of generated tokens: every step up to and including the first EOS."""
    tokens = np.asarray(tokens)
    is_eos = tokens == m_alt.EOS_ID
    ended_before = np.cumsum(is_eos, axis=1) - is_eos
    return ended_before == 0


class ToyRewardHost(AltLASHost):
    """The AltLAS host with `toy_reward` instead of safety + sandbox + scorer: every episode is
    kept and scored, no program runs (so lockstep levels need no sandbox)."""

    def assess(self, tokens: np.ndarray) -> EpisodeBatch:
        tokens = np.asarray(tokens)
        B = tokens.shape[0]
        ones = np.ones(B, bool)
        return EpisodeBatch([""] * B, ones, ~ones, ones,
                            toy_reward(tokens, episode_valid(tokens)), [None] * B, [None] * B)


def _lockstep(cfg: AltLASConfig, run: AltLASRun, steps: int, state=None) -> checks.LockstepRun:
    return checks.lockstep(_spec(), cfg, run, steps, state, host=ToyRewardHost(cfg, run))


@functools.lru_cache(maxsize=8)
def lockstep_pair(cfg: AltLASConfig, run: AltLASRun, steps: int
                  ) -> tuple[checks.LockstepRun, checks.LockstepRun]:
    """The P6 toy-reward lockstep run and its 1-ulp-perturbed twin (cached for P9)."""
    return (_lockstep(cfg, run, steps),
            _lockstep(cfg, run, steps, checks.perturbed_start(_spec(), cfg, run)))


# ----------------------------------------------------------------------------------------------
# P0-P5


def _roundtrip_cmps(prefix: str, a: dict[str, Any], b: dict[str, Any]) -> list[Comparison]:
    """Bitwise comparisons of two train states' model and optimizer leaves (same layout)."""
    fa, fb = flatten_tree({"model": a["model"], "opt": a["opt"]}), \
        flatten_tree({"model": b["model"], "opt": b["opt"]})
    return [_cmp("P0", f"{prefix}.{path_str(k)}", _bits(fa[k]), _bits(fb.get(k, np.nan)),
                 "P0.roundtrip") for k in fa]


def level_p0(cfg: AltLASConfig, run: AltLASRun, steps: int = 2) -> list[Comparison]:
    """Round trips of params + Adam state after `steps` updates, bitwise: torch -> reference
    optimizer file layout -> JAX -> torch, and JAX -> torch -> JAX; a fresh optax state exports
    as an empty torch Adam state."""
    spec, lay = _spec(), m_alt.layout(cfg)
    res = []
    for fw in ("torch", "jax"):
        host = ToyRewardHost(cfg, run)
        eng = make_engine(spec, cfg, run, fw)
        for _ in range(steps):
            host.step([eng])
        st = {**eng.export_state(), "framework": fw}
        torch_side = st if fw == "torch" else convert_train_state(st, lay, "torch")
        sd = altlas_io.optimizer_to_torch(torch_side["opt"], cfg, run)
        via_file = {**torch_side, "opt": altlas_io.optimizer_from_torch(sd, cfg, run).opt}
        back = convert_train_state(via_file, lay, "jax")
        if fw == "torch":
            back = convert_train_state(back, lay, "torch")
        other = "jax" if fw == "torch" else "torch"
        res += _roundtrip_cmps(f"{fw}->{other}->{fw}", st, back)
    fresh = make_engine(spec, cfg, run, "jax").export_state()
    t_opt = convert_train_state({**fresh, "framework": "jax"}, lay, "torch")["opt"]
    n = len(altlas_io.optimizer_to_torch(t_opt, cfg, run)["state"])
    res.append(_cmp("P0", "fresh_optimizer.state_entries", np.array(0), np.array(n),
                    "P0.roundtrip", "optax count 0 exports as torch state == {}"))
    return res


def level_p1(cfg: AltLASConfig, run: AltLASRun, batch: int = 4) -> list[Comparison]:
    """Step mode (T calls with a carried state) == sequence mode, each framework."""
    tw = _twins(cfg, seed=run.seed)
    T = cfg.max_gen_len
    x = random_batch(cfg, run.seed, batch, T, 201)["tokens"]
    fns = f_alt.jitted(cfg)
    with torch.no_grad():
        seq_t, _ = tw.torch_model(_t(x))
        st: t_alt.State = None
        steps_t = []
        for t in range(T):
            lt, st = tw.torch_model.step(_t(x[:, t]), st)
            steps_t.append(lt)
    seq_j, _ = fns.forward(tw.params, jnp.asarray(x))
    sj = f_alt.zero_state(cfg, batch)
    steps_j = []
    for t in range(T):
        lj, sj = fns.step(tw.params, jnp.asarray(x[:, t]), sj)
        steps_j.append(np.asarray(lj))
    return [
        _cmp("P1", "torch.step_vs_sequence", seq_t, torch.stack(steps_t, 1), "P1.step_vs_seq"),
        _cmp("P1", "jax.step_vs_sequence", seq_j, np.stack(steps_j, 1), "P1.step_vs_seq"),
    ]


def _loss_both(cfg: AltLASConfig, tw: Twins, b: dict, beta: float):
    out_t = t_alt.reinforce_loss(tw.torch_model, _t(b["tokens"]), _t(b["valid"]), _t(b["adv"]),
                                 _t(b["w"]), torch.tensor(np.float32(beta)))
    loss_j, aux_j, grads_j = f_alt.jitted(cfg).loss_and_grads(
        tw.params, jnp.asarray(b["tokens"]), jnp.asarray(b["valid"]), jnp.asarray(b["adv"]),
        jnp.asarray(b["w"]), jnp.float32(beta))
    return out_t, (loss_j, aux_j, grads_j)


def level_p2(cfg: AltLASConfig, run: AltLASRun, batch: int = 16) -> list[Comparison]:
    """Teacher-forced logits, target log-probs and entropies (altlas.md §4.1 formula)."""
    tw = _twins(cfg, seed=run.seed)
    b = random_batch(cfg, run.seed, batch, cfg.max_gen_len, 202)
    tw.torch_model.train()
    out_t, (_, aux_j, _) = _loss_both(cfg, tw, b, 0.01)
    return [_cmp("P2", name, getattr(out_t, name), getattr(aux_j, name), "P2.forward")
            for name in ("logits", "logp", "entropy")]


def level_p3(
    cfg: AltLASConfig, run: AltLASRun, batch: int = 256, grammar: np.ndarray | None = None
) -> list[Comparison]:
    """Sampling with shared Gumbel noise (and the config's altlas.md §3.4 modifiers; `grammar`: the
    [V, V] 0/1 table when the grammar boost is on): tokens identical, log-probs close."""
    tw = _twins(cfg, seed=run.seed)
    T, V = cfg.max_gen_len, cfg.vocab_size
    g = m_alt.gumbel_noise(run.seed, 0, batch, T, V)
    rt = t_alt.generate(tw.torch_model, _t(g), grammar)
    G = None if grammar is None else jnp.asarray(grammar, jnp.float32)
    rj = f_alt.jitted(cfg).generate(tw.params, jnp.asarray(g), G)
    tok_t, tok_j = rt.tokens.numpy(), np.asarray(rj.tokens)
    keep, note = _excuse_ties(tok_t, tok_j, rt.top2_gap.numpy())
    valid = rt.valid.numpy()[keep]
    res = [_cmp("P3", "tokens", tok_t[keep], tok_j[keep], "P3.tokens", note)]
    for name in ("valid", "hit_eos", "length"):
        res.append(_cmp("P3", name, getattr(rt, name).numpy()[keep],
                        np.asarray(getattr(rj, name))[keep], "P3.tokens"))
    for name in ("logp_model", "logp_behav", "entropy"):
        a = np.where(valid, getattr(rt, name).numpy()[keep], 0.0)
        c = np.where(valid, np.asarray(getattr(rj, name))[keep], 0.0)
        res.append(_cmp("P3", name, a, c, "P3.logp", "compared under valid"))
    return res


def _excuse_ties(tok_t: np.ndarray, tok_j: np.ndarray, gap: np.ndarray) -> tuple[np.ndarray, str]:
    """Episodes to keep (all but those whose first mismatch is at a near tie) and a note."""
    keep = np.ones(tok_t.shape[0], bool)
    notes = []
    for b in np.nonzero((tok_t != tok_j).any(1))[0]:
        t = int(np.argmax(tok_t[b] != tok_j[b]))
        if gap[b, t] < NEAR_TIE:
            keep[b] = False
            notes.append(f"episode {b} step {t} gap {gap[b, t]:.1e}")
    return keep, ("near-tie mismatches excluded: " + "; ".join(notes)) if notes else ""


def level_p4(cfg: AltLASConfig, run: AltLASRun, batch: int = 16, beta: float = 0.01
             ) -> list[Comparison]:
    """REINFORCE loss, policy/entropy terms and every gradient; PAD-row gradient exactly 0."""
    tw = _twins(cfg, seed=run.seed)
    b = random_batch(cfg, run.seed, batch, cfg.max_gen_len, 202)
    tw.torch_model.train()
    tw.torch_model.zero_grad(set_to_none=True)
    out_t, (loss_j, aux_j, grads_j) = _loss_both(cfg, tw, b, beta)
    out_t.loss.backward()
    res = [_cmp("P4", "loss", out_t.loss, loss_j, "P4.loss"),
           _cmp("P4", "policy_term", out_t.policy_term, aux_j.policy_term, "P4.loss"),
           _cmp("P4", "entropy_term", out_t.entropy_term, aux_j.entropy_term, "P4.loss")]
    gt, gj = tw.torch_grads(), tw.jax_to_torch_layout(grads_j)
    for k in gt:
        res.append(_cmp("P4", f"grad.{k}", gt[k], gj[k], "P4.grad"))
        res.append(_rel_l2("P4", f"grad_rel_l2.{k}", gt[k], gj[k], "P4.grad_rel_l2"))
    zero = np.zeros(cfg.embed_dim, np.float32)
    res.append(_cmp("P4", "torch.grad.embedding.row0", zero, gt["embedding.weight"][PAD_ID],
                    "P4.pad_grad"))
    res.append(_cmp("P4", "jax.grad.embedding.row0", zero, gj["embedding.weight"][PAD_ID],
                    "P4.pad_grad"))
    return res


def _jax_update(cfg: AltLASConfig, run: AltLASRun, params: Any, opt_state: Any,
                b: dict[str, np.ndarray], beta: np.float32):
    """One call of the model's jitted, donated train step (on copies of params/opt_state)."""
    spec = _spec()
    step = spec.make_train_step(cfg, spec.jax_optimizer(run))
    copy = functools.partial(jax.tree_util.tree_map, jnp.array)
    batch = f_alt.LearnBatch(jnp.asarray(b["tokens"]), jnp.asarray(b["valid"]),
                             jnp.asarray(b["adv"]), jnp.asarray(b["w"]), jnp.float32(beta))
    return step(copy(params), copy(opt_state), batch)


def level_p5(cfg: AltLASConfig, run: AltLASRun, batch: int | None = None) -> list[Comparison]:
    """One clip + Adam step on a P4-style batch (B = run.batch_size by default) from fresh
    optimizers, and an Adam-only step."""
    batch = run.batch_size if batch is None else batch
    tw = _twins(cfg, seed=run.seed)
    b = random_batch(cfg, run.seed, batch, cfg.max_gen_len, 202)
    opt = t_alt.make_optimizer(tw.torch_model, run)
    beta = np.float32(0.01)
    out_t = t_alt.learn_step(tw.torch_model, opt, _t(b["tokens"]), _t(b["valid"]), _t(b["adv"]),
                             _t(b["w"]), torch.tensor(beta), grad_clip_norm=run.grad_clip_norm)
    g_clip = tw.torch_grads()
    p_t = tw.torch_state()
    tx = f_alt.make_optimizer(run)
    p_j, s_j, out_j = _jax_update(cfg, run, tw.params, tx.init(tw.params), b, beta)
    p_jt = tw.jax_to_torch_layout(p_j)
    adam = f_alt.adam_state(s_j)
    mu, nu = tw.jax_to_torch_layout(adam.mu), tw.jax_to_torch_layout(adam.nu)
    res = [_cmp("P5", "loss", np.float32(out_t.loss), out_j.loss, "P4.loss"),
           _cmp("P5", "grad_norm", np.float32(out_t.grad_norm), out_j.grad_norm, "P4.loss"),
           _cmp("P5", "step", np.array(1), np.asarray(adam.count), "P0.roundtrip")]
    sd = opt.state_dict()["state"]
    for i, k in enumerate(p_t):
        big = np.abs(g_clip[k]) >= 1e-6
        res.append(_cmp("P5", f"param.{k}", p_t[k][big], p_jt[k][big], "P5.params",
                        f"{int(big.sum())}/{big.size} elements with |g| >= 1e-6"))
        step_t = (p_t[k][~big].astype(np.float64) - tw.state[k][~big]) / run.lr
        step_j = (p_jt[k][~big].astype(np.float64) - tw.state[k][~big]) / run.lr
        res.append(_cmp("P5", f"small_grad_step.{k}", step_t, step_j, "P5.small_grad_step",
                        f"{int((~big).sum())} elements with |g| < 1e-6, step/lr"))
        res.append(_cmp("P5", f"exp_avg.{k}", sd[i]["exp_avg"], mu[k], "P5.moments"))
        res.append(_cmp("P5", f"exp_avg_sq.{k}", sd[i]["exp_avg_sq"], nu[k], "P5.moments"))
    return res + _adam_only(cfg, run, tw)


def _adam_only(cfg: AltLASConfig, run: AltLASRun, tw: Twins) -> list[Comparison]:
    """torch Adam vs the JAX Adam (`make_optimizer` without clipping) from identical grads,
    moments at step 3."""
    rng = np.random.default_rng([run.seed, 205])
    shapes = torch_shapes(cfg)
    g, m, v = grads_and_moments(rng, shapes)
    model = t_alt.AltLAS_RNN(cfg, tw.state)
    opt = t_alt.make_optimizer(model, run)
    named = dict(model.named_parameters())
    prime_torch_optimizer(opt, named, g, m, v, step=3)
    opt.step()
    lay = m_alt.layout(cfg)
    tx = f_alt.make_optimizer(run.replace(grad_clip_norm=0.0))
    to_tree = lambda d: f_alt.to_jax(lay.params.torch_to_tree(d))  # noqa: E731
    state = optax.tree_utils.tree_set(tx.init(tw.params), count=jnp.asarray(3, jnp.int32),
                                      mu=to_tree(m), nu=to_tree(v))
    updates, new_state = tx.update(to_tree(g), state, tw.params)
    new_p = tw.jax_to_torch_layout(optax.apply_updates(tw.params, updates))
    adam = f_alt.adam_state(new_state)
    mu, nu = tw.jax_to_torch_layout(adam.mu), tw.jax_to_torch_layout(adam.nu)
    res = []
    for k in shapes:
        res.append(_cmp("P5", f"adam_only.param.{k}", named[k], new_p[k], "P5.adam"))
        res.append(_cmp("P5", f"adam_only.exp_avg.{k}", opt.state[named[k]]["exp_avg"],
                        mu[k], "P5.adam"))
        res.append(_cmp("P5", f"adam_only.exp_avg_sq.{k}", opt.state[named[k]]["exp_avg_sq"],
                        nu[k], "P5.adam"))
    return res


# ----------------------------------------------------------------------------------------------
# P6, P7, P9: lockstep training (the generic runner on the toy-reward host)


def level_p6(cfg: AltLASConfig, run: AltLASRun, n_steps: int = 20) -> list[Comparison]:
    """N-step lockstep training under shared noise and the deterministic toy reward, judged as
    L5 is (`checks.curve_comparisons`), plus the spec's per-leaf rel-L2 bound."""
    main, pert = lockstep_pair(cfg, run, n_steps)
    res = checks.curve_comparisons(_spec(), "P6", "lockstep", main, pert)
    pt, pj = main.params
    return res + [_rel_l2("P6", f"final_rel_l2.{k}", pt[k], pj[k], "P6.params_rel_l2")
                  for k in pt]


def level_p7(cfg: AltLASConfig, run: AltLASRun, n: int = 5, m: int = 5) -> list[Comparison]:
    """Resume across frameworks via reference-layout files: N torch steps -> model_state.pth +
    optimizer_state.pth -> read, convert to JAX -> M lockstep steps of both engines (torch
    continuing from its own state) on the continued host."""
    spec = _spec()
    host = ToyRewardHost(cfg, run)
    eng = make_engine(spec, cfg, run, "torch")
    for _ in range(n):
        host.step([eng])
    with tempfile.TemporaryDirectory() as d:
        mp, op = Path(d) / "model_state.pth", Path(d) / "optimizer_state.pth"
        torch.save(eng.model.state_dict(), mp)
        torch.save(eng.opt.state_dict(), op)
        ref, ropt = altlas_io.read_reference_pair(mp, op, cfg, run)
    assert ropt is not None
    ts = {"framework": "torch", "model": ref.state, "opt": ropt.opt}
    lock = Lockstep(spec, cfg, run, host=host)
    lock.engines[0].import_state(eng.export_state())
    lock.engines[1].import_state(convert_train_state(ts, m_alt.layout(cfg), "jax"))
    series: dict[str, list[float]] = {"t_loss": [], "j_loss": [], "t_norm": [], "j_norm": []}
    for _ in range(m):
        rt, rj, _ = lock.step()
        series["t_loss"].append(rt["loss"])
        series["j_loss"].append(rj["loss"])
        series["t_norm"].append(rt["grad_norm"])
        series["j_norm"].append(rj["grad_norm"])
    pt, pj = lock.params()
    res = [Comparison("P7", "token_mismatch_episodes", np.zeros(1), np.array([lock.mismatches]),
                      "L5.mismatches"),
           Comparison("P7", f"loss[{n + 1}..{n + m}]", np.asarray(series["t_loss"]),
                      np.asarray(series["j_loss"]), "L5.loss"),
           Comparison("P7", f"grad_norm[{n + 1}..{n + m}]", np.asarray(series["t_norm"]),
                      np.asarray(series["j_norm"]), "L5.loss")]
    res += [Comparison("P7", f"final.{k}", pt[k], pj[k], "L5.params") for k in pt]
    return res


def level_p9(cfg: AltLASConfig, run: AltLASRun, n_steps: int = 20) -> list[Comparison]:
    """Invariants after the P6 run: LSTM bias_ih == bias_hh bitwise; embedding row 0 unchanged."""
    init = m_alt.canonical_init(cfg, run.seed)
    main, _ = lockstep_pair(cfg, run, n_steps)
    res = []
    for fw, final in zip(("torch", "jax"), main.params, strict=True):
        if cfg.cell == "lstm" and cfg.init == "altlas":
            for k in range(cfg.num_layers):
                res.append(_cmp("P9", f"{fw}.bias_ih_l{k}==bias_hh_l{k}",
                                final[f"lstm.bias_hh_l{k}"], final[f"lstm.bias_ih_l{k}"],
                                "P9.invariant"))
        res.append(_cmp("P9", f"{fw}.embedding.row0_unchanged", init["embedding.weight"][PAD_ID],
                        final["embedding.weight"][PAD_ID], "P9.invariant"))
    return res


# ----------------------------------------------------------------------------------------------
# P8: Appendix A golden numbers

GOLDEN_TOKENS = [4, 46, 33, 13, 31, 47, 2]
GOLDEN: dict[str, dict[str, list[float]]] = {
    "lstm": {
        "logits[0,0,0:4]": [-0.21689522, -0.14227600, -0.04846872, 0.05197503],
        "logits[0,6,0:4]": [-0.31508106, -0.14182056, 0.05056858, 0.23667379],
        "sum_logits": [13.305736],
        "logp": [-4.0337243, -4.3189163, -4.5700283, -4.5745277, -4.6974268, -4.6345816,
                 -4.2006884],
        "entropy": [4.1248670, 4.1169438, 4.1083093, 4.0992017, 4.0907269, 4.0836945, 4.0779786],
        "loss": [27.639887],
        "grad_norm": [3.7587539],
        "tensor_grad_norms": [0.06814861, 0.1325179, 0.1942037, 0.7743961, 0.7743961, 0.5369876,
                              0.4542516, 1.671943, 1.671943, 1.195554, 2.313892],
        "grad_fc.bias[0:4]": [0.070910931, 0.080878928, -0.80592799, 0.10934106],
        "grad_embedding_row0": [0.0] * 8,
        "fc.bias_after[0:4]": [-0.17609043, -0.12928751, -0.06312147, 0.00772311],
    },
    "gru": {
        "logits[0,0,0:4]": [-0.17585137, -0.09998704, -0.01045170, 0.08076043],
        "logits[0,6,0:4]": [-0.11783028, 0.15664552, 0.41131210, 0.61263210],
        "sum_logits": [17.742916],
        "logp": [-4.0155053, -4.4264603, -4.5134511, -4.7931347, -4.9392290, -5.0301938,
                 -3.9307733],
        "entropy": [4.1272187, 4.1181664, 4.0991297, 4.0755548, 4.0512342, 4.0330071, 4.0166454],
        "loss": [28.198662],
        "grad_norm": [7.1088989],
        "tensor_grad_norms": [0.3177402, 0.6109723, 0.7137877, 3.718291, 1.860001, 1.894329,
                              0.7653556, 3.908061, 1.967581, 1.886292, 2.3218],
        "grad_fc.bias[0:4]": [0.080103204, 0.096347123, -0.78480458, 0.13339072],
        "grad_embedding_row0": [0.0] * 8,
        "fc.bias_after[0:4]": [-0.17609043, -0.12928751, -0.06312147, 0.00772311],
    },
}
GOLDEN_NORMS = ("grad_norm", "tensor_grad_norms")


def golden_values(cell: str) -> dict[str, dict[str, np.ndarray]]:
    """Appendix A quantities computed by torch_ref and by functional: {framework: {name: value}}."""
    cfg, run = PRESETS["golden"]
    cfg = cfg.replace(cell=cell)
    state = m_alt.golden_state(cfg)
    T = len(GOLDEN_TOKENS)
    tok = np.array([GOLDEN_TOKENS], np.int32)
    valid, adv, w, beta = np.ones((1, T), bool), np.float32([0.9]), np.float32([1.0]), 0.01
    model = t_alt.AltLAS_RNN(cfg, state)
    out = t_alt.reinforce_loss(model, _t(tok), _t(valid), _t(adv), _t(w),
                               torch.tensor(np.float32(beta)))
    out.loss.backward()
    grads_t = {k: p.grad.numpy().copy() for k, p in model.named_parameters()}
    opt = t_alt.make_optimizer(model, run)
    n_t = t_alt.clip_grads(model, run.grad_clip_norm)
    opt.step()
    lay = m_alt.layout(cfg)
    params = f_alt.to_jax(lay.params.torch_to_tree(state))
    fns = f_alt.jitted(cfg)
    args = (jnp.asarray(tok), jnp.asarray(valid), jnp.asarray(adv), jnp.asarray(w),
            jnp.float32(beta))
    loss_j, aux_j, grads = fns.loss_and_grads(params, *args)
    grads_j = lay.params.tree_to_torch(jax.tree_util.tree_map(np.asarray, grads))
    # The update is applied eagerly with the transform the train step chains (saves two
    # compiles; the train step itself is checked by P5-P7).
    n_j = f_alt.global_norm_torch(grads)
    opt_j = f_alt.make_optimizer(run)
    updates, _ = opt_j.update(grads, opt_j.init(params), params)
    p_j = optax.apply_updates(params, updates)

    def pack(logits, logp, ent, loss, n, g, fc_after) -> dict[str, np.ndarray]:
        logits = np.asarray(logits)[0]
        return {
            "logits[0,0,0:4]": logits[0, :4], "logits[0,6,0:4]": logits[6, :4],
            "sum_logits": np.array([logits.sum(dtype=np.float32)]),
            "logp": np.asarray(logp)[0], "entropy": np.asarray(ent)[0],
            "loss": np.array([loss], np.float32), "grad_norm": np.array([n], np.float32),
            "tensor_grad_norms": np.array([np.linalg.norm(g[k]) for k in g], np.float32),
            "grad_fc.bias[0:4]": g["fc.bias"][:4],
            "grad_embedding_row0": g["embedding.weight"][PAD_ID],
            "fc.bias_after[0:4]": np.asarray(fc_after)[:4],
            **{f"bias_grad_equal_l{k}": g[f"{cell}.bias_hh_l{k}"] for k in range(cfg.num_layers)},
            **{f"bias_grad_ih_l{k}": g[f"{cell}.bias_ih_l{k}"] for k in range(cfg.num_layers)},
        }

    return {
        "torch": pack(out.logits.detach(), out.logp.detach(), out.entropy.detach(),
                      out.loss.item(), float(n_t), grads_t, model.fc.bias.detach().numpy()),
        "jax": pack(aux_j.logits, aux_j.logp, aux_j.entropy, float(loss_j), float(n_j),
                    grads_j, p_j["fc"]["bias"]),
    }


def level_p8() -> list[Comparison]:
    """Appendix A golden numbers (both cells, both frameworks) against the printed values."""
    res = []
    for cell, table_ in GOLDEN.items():
        vals = golden_values(cell)
        for fw, got in vals.items():
            for name, ref in table_.items():
                tol = "P8.golden_norm" if name in GOLDEN_NORMS else "P8.golden"
                res.append(_cmp("P8", f"{cell}.{fw}.{name}", np.array(ref, np.float64),
                                np.asarray(got[name], np.float64), tol))
            if cell == "lstm":
                for k in range(2):
                    res.append(_cmp("P8", f"{cell}.{fw}.bias_grad_ih_l{k}==hh_l{k}",
                                    got[f"bias_grad_equal_l{k}"], got[f"bias_grad_ih_l{k}"],
                                    "P9.invariant"))
    return res


def levels(cfg: AltLASConfig, run: AltLASRun) -> dict[str, Callable[[], list[Comparison]]]:
    """Level name -> thunk, in report order (the generic L6 file round trip is added by checks)."""
    return {
        "P0": lambda: level_p0(cfg, run),
        "P1": lambda: level_p1(cfg, run),
        "P2": lambda: level_p2(cfg, run),
        "P3": lambda: level_p3(cfg, run),
        "P4": lambda: level_p4(cfg, run),
        "P5": lambda: level_p5(cfg, run),
        "P6": lambda: level_p6(cfg, run),
        "P7": lambda: level_p7(cfg, run),
        "P8": level_p8,
        "P9": lambda: level_p9(cfg, run),
    }
