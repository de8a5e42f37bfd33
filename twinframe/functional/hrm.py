"""HRM-ACT as pure JAX functions (hrm.md §2-§3.2, §6.2).

Trees: `params` (trainable; names mirror torch_ref.hrm, kernels `[in, out]`) and `consts`
(`rotary_emb/{cos,sin}`, `initial_high_level`, `initial_low_level`; never differentiated).
The ACT carry is the NamedTuple `HRMCarry`. Randomness enters only as the injected `noise`
arrays (explore_u [B] f32, min_halt_draw [B] int32).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from twinframe.functional.layers import (
    F32,
    binary_cross_entropy_with_logits,
    global_norm,
    linear_f32,
    post_norm_block,
)
from twinframe.functional.optim import adamw_mlx
from twinframe.models.hrm import HRMConfig, HRMRun

JAX_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
sg = jax.lax.stop_gradient
_UNROLL = [False]  # loops fully unrolled while tracing (`unrolled_loops`)


@contextlib.contextmanager
def unrolled_loops() -> Iterator[None]:
    """Trace with every layer/cycle loop fully unrolled: the same computation, for XLA's cost
    analysis (which counts a loop body once). Functions traced inside must be jitted anew."""
    _UNROLL[0] = True
    try:
        yield
    finally:
        _UNROLL[0] = False


class HRMCarry(NamedTuple):
    """z_H, z_L: [B, P, H] (T); segments: [B] int32; inputs, targets: [B, S] int32."""

    z_H: jax.Array
    z_L: jax.Array
    segments: jax.Array
    inputs: jax.Array
    targets: jax.Array


class SegmentOut(NamedTuple):
    """New z_H, z_L (stop-gradient, T); logits [B, S, V] f32; q_halt, q_continue [B] f32."""

    z_H: jax.Array
    z_L: jax.Array
    logits: jax.Array
    q_halt: jax.Array
    q_continue: jax.Array


class StepOut(NamedTuple):
    """One ACT train step before replacement: decisions, new carry, metrics (f32 scalars)."""

    carry: HRMCarry
    halted: jax.Array
    seq_correct: jax.Array
    is_last: jax.Array
    target_c: jax.Array
    metrics: dict


def compute_dtype(cfg: HRMConfig) -> jnp.dtype:
    return JAX_DTYPES[cfg.compute_dtype]


def initial_carry(consts: dict, inputs: jax.Array, targets: jax.Array, cfg: HRMConfig) -> HRMCarry:
    """Fresh carry: every position holds the (T-rounded) initial states. inputs: [B, S]."""
    B, P, H = inputs.shape[0], cfg.num_positions, cfg.hidden_size
    T = compute_dtype(cfg)
    z_H = jnp.broadcast_to(consts["initial_high_level"].astype(T), (B, P, H))
    z_L = jnp.broadcast_to(consts["initial_low_level"].astype(T), (B, P, H))
    return HRMCarry(z_H, z_L, jnp.zeros(B, jnp.int32), inputs, targets)


def embed(params: dict, inputs: jax.Array, cfg: HRMConfig) -> jax.Array:
    """inputs: [B, S] int (validated on the host) -> sqrt(H)*[cls || E[x]]: [B, P, H] (T)."""
    B, H = inputs.shape[0], cfg.hidden_size
    tokens = params["input_embedding"]["embedding"][inputs]
    cls = jnp.broadcast_to(params["cls_token"][None, None, :], (B, 1, H))
    return (math.sqrt(H) * jnp.concatenate([cls, tokens], axis=1)).astype(compute_dtype(cfg))


def stack_layers(p: dict) -> dict:
    """A reasoner's `layers` list -> one tree whose leaves have a leading layer axis [N, ...]."""
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *p["layers"])


def run_layers(
    stacked: dict, z: jax.Array, inj: jax.Array, consts: dict, cfg: HRMConfig
) -> jax.Array:
    """R(z, inj) over stacked layer weights: z <- z + inj, then the N post-norm blocks as one
    `lax.scan` (one compiled block body instead of N). z, inj: [B, P, H] (T)."""
    cos, sin = consts["rotary_emb"]["cos"], consts["rotary_emb"]["sin"]

    def block(x: jax.Array, layer: dict) -> tuple[jax.Array, None]:
        return post_norm_block(layer, x, cos, sin, cfg.num_heads, cfg.norm_eps), None

    return jax.lax.scan(block, z + inj, stacked, unroll=_UNROLL[0])[0]


def run_layer_list(
    layers: list, z: jax.Array, inj: jax.Array, consts: dict, cfg: HRMConfig
) -> jax.Array:
    """R(z, inj) over a list of layer trees, as a Python loop: for the calls that carry the
    gradient, so that no residual or weight gradient is stacked and unstacked per layer (a
    scan's backward zero-fills [N, ...] buffers and slices them per layer). z, inj: [B, P, H]
    (T)."""
    cos, sin = consts["rotary_emb"]["cos"], consts["rotary_emb"]["sin"]
    z = z + inj
    for layer in layers:
        z = post_norm_block(layer, z, cos, sin, cfg.num_heads, cfg.norm_eps)
    return z


def reasoner(
    p: dict, z: jax.Array, inj: jax.Array, consts: dict, cfg: HRMConfig
) -> jax.Array:
    """R(z, inj): z <- z + inj, then N post-norm blocks. z, inj: [B, P, H] (T)."""
    return run_layers(stack_layers(p), z, inj, consts, cfg)


def segment(
    params: dict, consts: dict, z_H: jax.Array, z_L: jax.Array, inputs: jax.Array, cfg: HRMConfig
) -> SegmentOut:
    """One ACT segment of the inner model (hrm.md §2.3), 1-step gradient through the last L and
    H.

    The H*L - 1 cycles without gradient run as loops (`fori_loop`: H-1 cycles of L L-calls and
    one H-call, then L-1 L-calls; layers as a `lax.scan`) on stop-gradient weights and
    embedding, so no tangent or residual of them is ever formed; the last L-call and H-call
    carry the gradient (layers as a Python loop, `run_layer_list`)."""
    R_H = stack_layers(params["high_level_reasoner"])
    R_L = stack_layers(params["low_level_reasoner"])
    e = embed(params, inputs, cfg)
    ng_H, ng_L, ng_e = sg(R_H), sg(R_L), sg(e)

    def l_calls(n: int, z_L: jax.Array, z_H: jax.Array) -> jax.Array:
        return jax.lax.fori_loop(
            0, n, lambda _, zl: run_layers(ng_L, zl, z_H + ng_e, consts, cfg), z_L,
            unroll=_UNROLL[0])

    def cycle(_: jax.Array, zs: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        zh, zl = zs
        zl = l_calls(cfg.low_level_cycles, zl, zh)
        return run_layers(ng_H, zh, zl, consts, cfg), zl

    z_H, z_L = jax.lax.fori_loop(0, cfg.high_level_cycles - 1, cycle, (sg(z_H), sg(z_L)),
                                 unroll=_UNROLL[0])
    z_L = l_calls(cfg.low_level_cycles - 1, z_L, z_H)
    z_L, z_H = sg(z_L), sg(z_H)
    z_L = run_layer_list(params["low_level_reasoner"]["layers"], z_L, z_H + e, consts, cfg)
    z_H = run_layer_list(params["high_level_reasoner"]["layers"], z_H, z_L, consts, cfg)
    logits = linear_f32(params["output_head"], z_H[:, 1:])
    q = linear_f32(params["q_act_head"], z_H[:, 0])
    return SegmentOut(sg(z_H), sg(z_L), logits, q[:, 0], q[:, 1])


def act_loss(
    params: dict, consts: dict, carry: HRMCarry, noise: dict, cfg: HRMConfig
) -> tuple[jax.Array, StepOut]:
    """One ACT training step's loss (hrm.md §2.6 items 1-7, hrm.md §6.2) and metrics (hrm.md
    §6.4)."""
    M = cfg.halt_max_steps
    out = segment(params, consts, carry.z_H, carry.z_L, carry.inputs, cfg)
    given = carry.inputs != 0
    pred = jnp.argmax(out.logits, axis=-1)
    cell_ok = (pred == carry.targets) | given
    seq_correct = jnp.all(cell_ok, axis=-1)
    nxt = carry.segments + 1
    is_last = nxt > M if cfg.act_last_strict else nxt >= M
    explore = noise["explore_u"] < jnp.float32(cfg.halt_exploration_prob)
    min_halt = jnp.where(explore, noise["min_halt_draw"], 0)
    long_enough = nxt > min_halt if cfg.act_explore_strict else nxt >= min_halt
    halted = (is_last | (out.q_halt > out.q_continue)) & long_enough
    nxt_out = segment(params, consts, out.z_H, out.z_L, carry.inputs, cfg)
    q_h2, q_c2 = sg(nxt_out.q_halt), sg(nxt_out.q_continue)
    target_c = jnp.where(is_last, jax.nn.sigmoid(q_h2), jax.nn.sigmoid(jnp.maximum(q_h2, q_c2)))
    mask = (~given).astype(F32)
    lse = jax.nn.logsumexp(out.logits, axis=-1)
    ce = lse - jnp.take_along_axis(out.logits, carry.targets[..., None], axis=-1)[..., 0]
    n_blank = jnp.maximum(mask.sum(), 1.0)
    output_loss = (mask * ce).sum() / n_blank
    seq_f = seq_correct.astype(F32)
    bce_h = binary_cross_entropy_with_logits(out.q_halt, seq_f)
    bce_c = binary_cross_entropy_with_logits(out.q_continue, target_c)
    q_act_loss = (bce_h + bce_c).mean() / 2
    loss = output_loss + q_act_loss
    halted_f = halted.astype(F32)
    metrics = {
        "loss": loss,
        "output_loss": output_loss,
        "q_act_loss": q_act_loss,
        "q_halt_loss": bce_h.mean(),
        "q_continue_loss": bce_c.mean(),
        "cell_acc_with_givens": cell_ok.astype(F32).mean(),
        "blank_cell_acc": (mask * (pred == carry.targets)).sum() / n_blank,
        "seq_exact_acc": seq_f.mean(),
        "halted_count": halted_f.sum(),
        "halted_correct_sum": (halted_f * seq_f).sum(),
        "halted_segments_sum": (halted_f * nxt.astype(F32)).sum(),
        "q_halt_acc": ((out.q_halt >= 0) == seq_correct).astype(F32).mean(),
    }
    new_carry = HRMCarry(out.z_H, out.z_L, nxt, carry.inputs, carry.targets)
    return loss, StepOut(new_carry, halted, seq_correct, is_last, target_c, metrics)


def loss_and_grads(
    params: dict, consts: dict, carry: HRMCarry, noise: dict, cfg: HRMConfig
) -> tuple[jax.Array, StepOut, dict]:
    """(loss, step outputs, grads w.r.t. params)."""
    (loss, out), grads = jax.value_and_grad(act_loss, has_aux=True)(
        params, consts, carry, noise, cfg
    )
    return loss, out, grads


def train_step(
    params: dict,
    opt_state: optax.OptState,
    consts: dict,
    carry: HRMCarry,
    noise: dict,
    cfg: HRMConfig,
    optimizer: optax.GradientTransformation,
) -> tuple[dict, optax.OptState, StepOut]:
    """Forward, target forward, loss, grads, optimizer update (hrm.md §6.1 item 3). Pure; jit it."""
    _, out, grads = loss_and_grads(params, consts, carry, noise, cfg)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    metrics = {**out.metrics, "grad_global_norm": global_norm(grads)}
    return params, opt_state, out._replace(metrics=metrics)


def make_train_step(cfg: HRMConfig, optimizer: optax.GradientTransformation) -> Callable:
    """jit(train_step) with cfg/optimizer bound and params/opt_state/carry buffers donated."""

    def step(params, opt_state, consts, carry, noise):
        return train_step(params, opt_state, consts, carry, noise, cfg, optimizer)

    return jax.jit(step, donate_argnums=(0, 1, 3))


class EvalOut(NamedTuple):
    """Per puzzle: preds [B, S] int32 at the halting segment, segments used [B], q_halt [B], and
    per-segment predictions [M, B, S]."""

    preds: jax.Array
    segments: jax.Array
    q_halt: jax.Array
    q_continue: jax.Array
    all_preds: jax.Array


def evaluate(params: dict, consts: dict, inputs: jax.Array, cfg: HRMConfig) -> EvalOut:
    """Eval halting (hrm.md §2.6): M segments from the initial carry, answer at the first q_h >
    q_c."""
    M = cfg.halt_max_steps
    carry = initial_carry(consts, inputs, inputs, cfg)

    def body(zs, _):
        out = segment(params, consts, zs[0], zs[1], inputs, cfg)
        return (out.z_H, out.z_L), (jnp.argmax(out.logits, -1), out.q_halt, out.q_continue)

    _, (preds, q_h, q_c) = jax.lax.scan(body, (carry.z_H, carry.z_L), None, length=M)
    halts = q_h > q_c  # [M, B]
    if cfg.eval_halting == "max_steps":
        k = jnp.full(inputs.shape[0], M - 1)
    else:
        k = jnp.where(halts.any(0), jnp.argmax(halts, axis=0), M - 1)
    b = jnp.arange(inputs.shape[0])
    return EvalOut(preds[k, b], (k + 1).astype(jnp.int32), q_h[k, b], q_c[k, b], preds)


def make_optimizer(run: HRMRun) -> optax.GradientTransformation:
    """MLX AdamW of hrm.md §6.3 (no bias correction), hyper-parameters from the run."""
    return adamw_mlx(run.lr, run.beta1, run.beta2, run.eps, run.weight_decay)
