"""HRM-ACT parity levels (hrm.md §7): each level is a thunk returning Comparisons
(torch = reference, JAX = candidate). The layout lives in `models.hrm.layout`."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

from twinframe.functional import hrm as f_hrm
from twinframe.functional import layers as f_layers
from twinframe.models.base import trunc_normal_bounds, trunc_normal_from_uniform_np
from twinframe.models.hrm import FULL, HRMConfig, HRMRun, canonical_init, rope_tables
from twinframe.parity import tolerances
from twinframe.parity.compare import Comparison
from twinframe.parity.optim_inputs import grads_and_moments, prime_torch_optimizer
from twinframe.parity.twins import Twins
from twinframe.tasks import sudoku
from twinframe.torch_ref import hrm as t_hrm
from twinframe.torch_ref import layers as t_layers


def _spec():
    from twinframe import registry

    return registry.get("hrm")


def _twins(cfg: HRMConfig, state: dict[str, np.ndarray] | None = None, seed: int = 0) -> Twins:
    return Twins.build(_spec(), cfg, state, seed)


def _batch(seed: int, n: int, difficulty: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """n training puzzles of one difficulty from the run's stream: inputs, targets [n, 81]."""
    pairs = [sudoku.train_puzzle(seed, difficulty, j) for j in range(n)]
    return (np.stack([p for p, _ in pairs]).astype(np.int32),
            np.stack([s for _, s in pairs]).astype(np.int32))


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(x))


def _cmp(level: str, name: str, ref: Any, cand: Any, tol: str, note: str = "") -> Comparison:
    ref = ref.detach().numpy() if isinstance(ref, torch.Tensor) else np.asarray(ref)
    return Comparison(level, name, ref, np.asarray(cand), tol, "float32", note)


def level_l0(cfg: HRMConfig, seed: int = 0) -> list[Comparison]:
    """Primitives on random inputs of the config's sizes (same arrays to both frameworks)."""
    rng = np.random.default_rng([seed, 100])
    H, n_h, P = cfg.hidden_size, cfg.num_heads, cfg.num_positions
    a, b = trunc_normal_bounds()
    u = rng.uniform(a, b, size=(64, 64)).astype(np.float32)
    std = 1.0 / np.sqrt(H)
    out = [
        _cmp("L0", "trunc_normal(torch)", trunc_normal_from_uniform_np(u, std),
             t_layers.trunc_normal_from_uniform(_t(u), std), "L0.trunc_normal"),
        _cmp("L0", "trunc_normal(jax)", trunc_normal_from_uniform_np(u, std),
             f_layers.trunc_normal_from_uniform(jnp.asarray(u), std), "L0.trunc_normal"),
    ]
    x = rng.standard_normal((2, P, H)).astype(np.float32)
    out.append(_cmp("L0", "rms_norm", t_layers.rms_norm(_t(x), cfg.norm_eps),
                    f_layers.rms_norm(jnp.asarray(x), cfg.norm_eps), "L0.primitive"))
    cos, sin = rope_tables(cfg)
    q = rng.standard_normal((2, P, n_h, cfg.head_dim)).astype(np.float32)
    out.append(_cmp("L0", "rope", t_layers.apply_rope(_t(q), _t(cos), _t(sin)),
                    f_layers.apply_rope(jnp.asarray(q), jnp.asarray(cos), jnp.asarray(sin)),
                    "L0.primitive"))
    tw = _twins(cfg, seed=seed)
    blk_t = tw.torch_model.high_level_reasoner.layers[0]
    blk_j = tw.params["high_level_reasoner"]["layers"][0]
    ct, st = tw.torch_model.rotary_emb.cos, tw.torch_model.rotary_emb.sin
    cj, sj = tw.consts["rotary_emb"]["cos"], tw.consts["rotary_emb"]["sin"]
    xj = jnp.asarray(x)
    with torch.no_grad():
        out += [
            _cmp("L0", "attention", blk_t.self_attn(_t(x), ct, st),
                 f_layers.attention(blk_j["self_attn"], xj, cj, sj, n_h), "L0.primitive"),
            _cmp("L0", "swiglu", blk_t.mlp(_t(x)), f_layers.swiglu(blk_j["mlp"], xj),
                 "L0.primitive"),
            _cmp("L0", "post_norm_block", blk_t(_t(x), ct, st),
                 f_layers.post_norm_block(blk_j, xj, cj, sj, n_h, cfg.norm_eps), "L0.primitive"),
        ]
    return out


@functools.lru_cache(maxsize=8)
def _jit_segment(cfg: HRMConfig) -> Callable:
    return jax.jit(lambda p, c, zh, zl, xi: f_hrm.segment(p, c, zh, zl, xi, cfg))


@functools.lru_cache(maxsize=8)
def _jit_loss_and_grads(cfg: HRMConfig) -> Callable:
    return jax.jit(lambda p, c, ca, n: f_hrm.loss_and_grads(p, c, ca, n, cfg))


SEGMENT_FIELDS = ("z_H", "z_L", "logits", "q_halt", "q_continue")


def _ulp_up(z: Any) -> Any:
    """Every element moved one f32 ulp toward +inf (a minimal, framework-native perturbation)."""
    if isinstance(z, torch.Tensor):
        return torch.nextafter(z, torch.full_like(z, float("inf")))
    return jnp.nextafter(z, jnp.inf)


def _chain(step: Callable, z_H: Any, z_L: Any, n: int) -> list:
    """Run `n` segments feeding the carry back; the SegmentOut of every segment."""
    outs = []
    for _ in range(n):
        o = step(z_H, z_L)
        outs.append(o)
        z_H, z_L = o.z_H, o.z_L
    return outs


def _max_diff(a: Any, b: Any) -> float:
    a = a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    b = b.numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
    return float(np.abs(a.astype(np.float64) - b).max())


def level_l1(cfg: HRMConfig, segments: tuple[int, ...] = (), batch: int = 4, seed: int = 0
             ) -> list[Comparison]:
    """Segment forward at `segments` (default 1, M and 16), each field judged strictly
    (L1.forward) while the model's own 1-ulp sensitivity there is below the L1 atol, else
    against that sensitivity (L1.chained).

    Finding: the carry recursion of an untrained HRM is chaotic. A 1-ulp perturbation of z_H
    grows ~x3 per segment at the full config (4e-6 after 1 segment, O(1) after 11), so
    chained-segment comparisons at full size are only meaningful for the first few segments."""
    segments = segments or (1, cfg.halt_max_steps, 16)
    tw = _twins(cfg, seed=seed)
    x, y = _batch(seed, batch)
    tc = tw.torch_model.initial_carry(_t(x), _t(y))
    jc = f_hrm.initial_carry(tw.consts, jnp.asarray(x), jnp.asarray(y), cfg)
    seg = _jit_segment(cfg)
    xj = jnp.asarray(x)

    def step_t(zh, zl):
        with torch.no_grad():
            return tw.torch_model(zh, zl, tc.inputs)

    def step_j(zh, zl):
        return seg(tw.params, tw.consts, zh, zl, xj)

    n = max(segments)
    ot, oj = _chain(step_t, tc.z_H, tc.z_L, n), _chain(step_j, jc.z_H, jc.z_L, n)
    pt = _chain(step_t, _ulp_up(tc.z_H), tc.z_L, n)
    pj = _chain(step_j, _ulp_up(jc.z_H), jc.z_L, n)
    strict_atol = tolerances.get("L1.forward").atol
    out: list[Comparison] = []
    for k in sorted(set(segments)):
        for f in SEGMENT_FIELDS:
            ref, cand = getattr(ot[k - 1], f), getattr(oj[k - 1], f)
            sens = max(_max_diff(getattr(pt[k - 1], f), ref),
                       _max_diff(getattr(pj[k - 1], f), cand))
            note = f"1-ulp self-sensitivity {sens:.2e}"
            if sens <= strict_atol:
                out.append(_cmp("L1", f"segment{k}.{f}", ref, cand, "L1.forward", note))
            else:
                out.append(dataclasses.replace(
                    _cmp("L1", f"segment{k}.{f}", ref, cand, "L1.chained", note), scale=sens))
    return out


def level_l1_bf16(cfg: HRMConfig, batch: int = 2, seed: int = 0) -> list[Comparison]:
    """One segment with T = bf16 in both frameworks: logits rel-L2 (hrm.md §7) and the robust
    criterion for logits and z_H (cross error <= 2x each framework's own bf16-vs-f32 error)."""
    outs = {}
    for dt in ("float32", "bfloat16"):
        c = cfg.replace(compute_dtype=dt)
        tw = _twins(c, seed=seed)
        x, y = _batch(seed, batch)
        tc = tw.torch_model.initial_carry(_t(x), _t(y))
        jc = f_hrm.initial_carry(tw.consts, jnp.asarray(x), jnp.asarray(y), c)
        with torch.no_grad():
            ot = tw.torch_model(tc.z_H, tc.z_L, tc.inputs)
        oj = _jit_segment(c)(tw.params, tw.consts, jc.z_H, jc.z_L, jnp.asarray(x))
        outs[dt] = {"logits": (ot.logits.numpy(), np.asarray(oj.logits)),
                    "z_H": (ot.z_H.float().numpy(), np.asarray(oj.z_H.astype(jnp.float32)))}
    res = []
    for f in ("logits", "z_H"):
        (t32, j32), (t16, j16) = outs["float32"][f], outs["bfloat16"][f]
        own = max(_max_diff(t16, t32), _max_diff(j16, j32))
        res.append(Comparison("L1", f"bf16.{f}", t16, j16, "L1.bf16_robust", "bfloat16",
                              f"own bf16-vs-f32 error {own:.2e}", scale=own))
    t16, j16 = outs["bfloat16"]["logits"]
    res.append(Comparison("L1", "bf16.logits.rel_l2", t16, j16, "L1.logits", "bfloat16"))
    return res


def _act_step_both(cfg: HRMConfig, run: HRMRun, tw: Twins, t: int = 1):
    x, y = _batch(run.seed, run.batch_size)
    noise = sudoku.exploration_noise(run.seed, t, run.batch_size, cfg.halt_max_steps)
    tc = tw.torch_model.initial_carry(_t(x), _t(y))
    tw.torch_model.zero_grad(set_to_none=True)
    out_t = t_hrm.act_loss(tw.torch_model, tc, {k: _t(v) for k, v in noise.items()})
    out_t.loss.backward()
    jc = f_hrm.initial_carry(tw.consts, jnp.asarray(x), jnp.asarray(y), cfg)
    fn = _jit_loss_and_grads(cfg)
    loss_j, out_j, grads_j = fn(tw.params, tw.consts, jc,
                                {k: jnp.asarray(v) for k, v in noise.items()})
    return out_t, (loss_j, out_j, grads_j)


def _decision_cmp(name: str, ref: np.ndarray, cand: np.ndarray, ties: np.ndarray | None,
                  prefix: str) -> Comparison:
    """Exact boolean comparison; a mismatch on a near-tie slot is tolerated and reported."""
    note = ""
    if ties is not None and ties.any():
        n_mis = int(((ref != cand) & ties).sum())
        note = f"{int(ties.sum())} near-tie slot(s), {n_mis} of them differ"
        cand = np.where(ties, ref, cand)
    return _cmp("L3", f"{prefix}{name}", ref, cand, "L3.decision", note)


def level_l2_l3(cfg: HRMConfig, run: HRMRun, q_head_scale: float = 0.0) -> list[Comparison]:
    """Loss, every trainable gradient (L2) and the ACT decisions (L3) of one train step.

    q_head_scale > 0 replaces the zero-initialised q-head weight by a random one of that std,
    so q_h != q_c and the halting decisions are exercised (at init they tie exactly)."""
    state = canonical_init(cfg, run.seed)
    prefix = "q-bias0." if cfg.q_head_bias_init == 0 else ""
    if q_head_scale > 0:
        rng = np.random.default_rng([run.seed, 102])
        w = rng.standard_normal(state["q_act_head.weight"].shape) * q_head_scale
        state["q_act_head.weight"] = w.astype(np.float32)
        state["q_act_head.bias"] = np.zeros(2, np.float32)
        prefix = "q-random."
    tw = _twins(cfg, state)
    out_t, (loss_j, out_j, grads_j) = _act_step_both(cfg, run, tw)
    res = [_cmp("L2", f"{prefix}loss", out_t.loss, loss_j, "L2.loss")]
    for name in ("output_loss", "q_act_loss"):
        res.append(_cmp("L2", f"{prefix}{name}", out_t.metrics[name], out_j.metrics[name],
                        "L2.loss"))
    gt, gj = tw.torch_grads(), tw.jax_to_torch_layout(grads_j)
    res += [_cmp("L2", f"{prefix}grad.{k}", gt[k], gj[k], "L2.grad") for k in gt]
    inputs = out_t.carry.inputs
    with torch.no_grad():
        o = tw.torch_model(*tw.torch_model.initial_carry(inputs, inputs)[:2], inputs)
    q_gap = (o.q_halt - o.q_continue).abs().numpy()
    top2 = np.sort(o.logits.numpy(), axis=-1)[..., -2:]
    logit_gap = (top2[..., 1] - top2[..., 0]).min(-1)
    ties = {"halted": (q_gap < 1e-4) & (q_gap > 0), "seq_correct": logit_gap < 1e-4}
    for name in ("halted", "seq_correct", "is_last"):
        ref, cand = getattr(out_t, name).numpy(), np.asarray(getattr(out_j, name))
        res.append(_decision_cmp(name, ref, cand, ties.get(name), prefix))
    res.append(_cmp("L3", f"{prefix}target_c", out_t.target_c, out_j.target_c, "L3.target"))
    return res


def level_l4(cfg: HRMConfig, run: HRMRun) -> list[Comparison]:
    """One optimizer update from identical grads and non-zero moments (both frameworks)."""
    spec = _spec()
    tw = _twins(cfg, seed=run.seed)
    rng = np.random.default_rng([run.seed, 101])
    keys = [k for k, p in tw.torch_model.named_parameters() if p.requires_grad]
    g, m, v = grads_and_moments(rng, {k: tw.state[k].shape for k in keys})
    model = tw.torch_model
    opt = spec.torch_optimizer(model, run)
    named = dict(model.named_parameters())
    prime_torch_optimizer(opt, named, g, m, v, step=3)
    opt.step()
    sub = spec.layout(cfg).params

    def to_tree(d: dict) -> dict:
        return jax.tree_util.tree_map(jnp.asarray, sub.torch_to_tree(d))

    jopt = spec.jax_optimizer(run)
    state = optax.tree_utils.tree_set(jopt.init(tw.params), count=jnp.asarray(3, jnp.int32),
                                      mu=to_tree(m), nu=to_tree(v))
    updates, new_state = jopt.update(to_tree(g), state, tw.params)
    new_params = optax.apply_updates(tw.params, updates)
    res = []
    back = {"param": tw.jax_to_torch_layout(new_params),
            "exp_avg": sub.tree_to_torch(new_state.mu),
            "exp_avg_sq": sub.tree_to_torch(new_state.nu)}
    for k in keys:
        res.append(_cmp("L4", f"param.{k}", named[k].detach(), back["param"][k], "L4.optimizer"))
        for slot in ("exp_avg", "exp_avg_sq"):
            res.append(_cmp("L4", f"{slot}.{k}", opt.state[named[k]][slot], back[slot][k],
                            "L4.optimizer"))
    return res


def levels(cfg: HRMConfig, run: HRMRun) -> dict[str, Callable[[], list[Comparison]]]:
    """Level name -> thunk, in report order (L5 and L6 are generic: `parity.checks`).

    L2/L3 run three starts: the canonical init, a random q head (halting decisions exercised),
    and a zero q-head bias (every q logit exactly 0 at step 1: BCE's gradient at l = 0)."""
    full = FULL.replace(compute_dtype="float32")
    seed = run.seed
    return {
        "L0": lambda: level_l0(cfg, seed),
        "L1": lambda: level_l1(cfg, seed=seed),
        "L1-full": lambda: [dataclasses.replace(c, name=f"full.{c.name}")
                            for c in level_l1(full, segments=(1, 2, 3), batch=2, seed=seed)],
        "L1-bf16": lambda: level_l1_bf16(cfg, seed=seed) + [
            dataclasses.replace(c, name=f"full.{c.name}") for c in level_l1_bf16(full, seed=seed)],
        "L2/L3": lambda: (level_l2_l3(cfg, run) + level_l2_l3(cfg, run, q_head_scale=0.5)
                          + level_l2_l3(cfg.replace(q_head_bias_init=0.0), run)),
        "L4": lambda: level_l4(cfg, run),
    }
