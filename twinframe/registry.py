"""name -> ModelSpec; the only place that knows every model. Adding a model = its own files plus
one factory here (see docs/architecture.md, "Adding a model")."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from twinframe.contract import Curve, JaxFace, ModelSpec, Preset, ProgressField, Refusal
from twinframe.errors import TwinframeError


def _hrm() -> ModelSpec:
    from twinframe.functional import hrm as f_hrm
    from twinframe.models import hrm
    from twinframe.parity import hrm as p_hrm
    from twinframe.torch_ref import hrm as t_hrm
    from twinframe.training import hrm as tr_hrm

    return ModelSpec(
        name="hrm", config_cls=hrm.HRMConfig, run_cls=hrm.HRMRun,
        presets={k: Preset(m, r) for k, (m, r) in hrm.PRESETS.items()},
        layout=hrm.layout, canonical_init=hrm.canonical_init, recognise=hrm.recognise,
        check_trainable=hrm.check_trainable, make_torch=t_hrm.HRM,
        torch_optimizer=t_hrm.make_optimizer, jax_optimizer=f_hrm.make_optimizer,
        make_train_step=f_hrm.make_train_step, make_host=tr_hrm.HRMHost,
        engines={"torch": tr_hrm.HRMTorchEngine,
                 "jax": tr_hrm.HRMJaxEngine},
        parity_levels=p_hrm.levels,
        curve=Curve(metrics=("loss", "output_loss", "q_act_loss", "cell_acc_with_givens"),
                    mismatch_label="halted_mask_mismatches", accuracy="cell_acc_with_givens",
                    extra_lrs=(1e-3,)),
        progress=(ProgressField("loss", "loss", ".4f"),
                  ProgressField("cell_acc_with_givens", "acc"),
                  ProgressField("curriculum_stage", "stage", "d"),
                  ProgressField("steps_per_s", "step/s", ".1f")),
        refused=(Refusal(run={"bias_correction": True}), Refusal(run={"noise_source": "native"})),
        infer=tr_hrm.infer, evaluate=tr_hrm.evaluate, jax_face=_hrm_face,
        layout_size=hrm.layout_size,
    )


@functools.cache
def _hrm_face(cfg: Any) -> JaxFace:
    """HRM-ACT in the JaxFace convention: the carry is z_H/z_L; a call is one ACT segment."""
    import jax.numpy as jnp
    import numpy as np

    from twinframe.functional import hrm as f

    def full(frozen, segments, inputs, targets):
        return f.HRMCarry(frozen["carry"]["z_H"], frozen["carry"]["z_L"], segments, inputs,
                          targets)

    def zs(out):
        return {"carry": {"z_H": out.z_H, "z_L": out.z_L}}

    def apply(params, frozen, inputs):
        out = f.segment(params, frozen["consts"], frozen["carry"]["z_H"], frozen["carry"]["z_L"],
                        inputs, cfg)
        return out, zs(out)

    def loss(params, frozen, segments, inputs, targets, noise):
        value, out = f.act_loss(params, frozen["consts"], full(frozen, segments, inputs, targets),
                                noise, cfg)
        return value, (out, zs(out.carry))

    def train(step, params, opt_state, frozen, segments, inputs, targets, noise):
        params, opt_state, out = step(params, opt_state, frozen["consts"],
                                      full(frozen, segments, inputs, targets), noise)
        return params, opt_state, out.metrics["loss"], zs(out.carry)

    def init_carry(frozen, batch_size):
        empty = jnp.zeros((batch_size, cfg.seq_len), jnp.int32)
        c = f.initial_carry(frozen["consts"], empty, empty, cfg)
        return {"z_H": c.z_H, "z_L": c.z_L}

    def example(batch_size, seed):
        rng, shape = np.random.default_rng(seed), (batch_size, cfg.seq_len)
        targets = rng.integers(1, cfg.vocab_size, shape).astype(np.int32)
        inputs = np.where(rng.random(shape) < 0.5, targets, 0).astype(np.int32)
        noise = {"explore_u": rng.random(batch_size, np.float32),
                 "min_halt_draw": rng.integers(2, cfg.halt_max_steps + 1, batch_size, np.int32)}
        return (inputs,), (np.zeros(batch_size, np.int32), inputs, targets, noise)

    def evaluate(params, frozen, inputs):
        return f.evaluate(params, frozen["consts"], inputs, cfg), {}

    return JaxFace(apply, loss, train, example, init_carry, {"evaluate": evaluate}, outside=(
        "the training host stays outside: drawing puzzles and exploration noise, advancing "
        "segment counters, replacing halted slots (reset_carry(mask)) and the curriculum"),
        method_args=lambda batch_size, seed: {"evaluate": example(batch_size, seed)[0]})


@functools.cache
def _altlas_face(cfg: Any) -> JaxFace:
    """AltLAS in the JaxFace convention: no carry (the RNN state starts at zero per episode)."""
    import numpy as np

    from twinframe.functional import altlas as f

    def apply(params, frozen, x, state=None):
        return f.forward(params, x, cfg, state), {}

    def loss(params, frozen, batch):
        value, aux = f.reinforce_loss(params, batch.tokens, batch.valid, batch.advantages,
                                      batch.weights, batch.beta, cfg, batch.dropout_mask)
        return value, (aux, {})

    def train(step, params, opt_state, frozen, batch):
        params, opt_state, out = step(params, opt_state, batch)
        return params, opt_state, out.loss, {}

    def example(batch_size, seed):
        rng, shape = np.random.default_rng(seed), (batch_size, cfg.max_gen_len)
        tokens = rng.integers(0, cfg.vocab_size, shape).astype(np.int32)
        batch = f.LearnBatch(tokens, rng.random(shape) < 0.9,
                             rng.standard_normal(batch_size).astype(np.float32),
                             np.ones(batch_size, np.float32), np.float32(0.01))
        return (np.asarray(f.teacher_inputs(tokens)),), (batch,)

    def generate(params, frozen, noise):
        return f.generate(params, noise, cfg), {}

    def step(params, frozen, tok, state):
        return f.step(params, tok, state, cfg), {}

    def method_args(batch_size, seed):
        rng = np.random.default_rng(seed)
        noise = rng.gumbel(size=(batch_size, cfg.max_gen_len, cfg.vocab_size))
        tok = rng.integers(0, cfg.vocab_size, batch_size).astype(np.int32)
        return {"generate": (noise.astype(np.float32),),
                "step": (tok, f.zero_state(cfg, batch_size))}

    return JaxFace(apply, loss, train, example, None, {"generate": generate, "step": step},
                   outside=(
        "the episode loop stays outside: drawing Gumbel noise, decoding, safety checks, "
        "sandboxed execution and scoring, the reward baseline and advantages, and skipping an "
        "update whose weights sum to 0 (make_train_step's lax.cond)"), method_args=method_args)


def _altlas() -> ModelSpec:
    from twinframe.functional import altlas as f_alt
    from twinframe.models import altlas
    from twinframe.parity import altlas as p_alt
    from twinframe.torch_ref import altlas as t_alt
    from twinframe.training import altlas as tr_alt

    return ModelSpec(
        name="altlas", config_cls=altlas.AltLASConfig, run_cls=altlas.AltLASRun,
        presets={k: Preset(m, r) for k, (m, r) in altlas.PRESETS.items()},
        layout=altlas.layout, canonical_init=altlas.canonical_init, recognise=altlas.recognise,
        check_trainable=altlas.check_trainable, make_torch=t_alt.AltLAS_RNN,
        torch_optimizer=t_alt.make_optimizer, jax_optimizer=f_alt.make_optimizer,
        make_train_step=f_alt.make_train_step, make_host=tr_alt.make_host,
        engines={"torch": tr_alt.AltLASTorchEngine,
                 "jax": tr_alt.AltLASJaxEngine},
        parity_levels=p_alt.levels,
        curve=Curve(metrics=("loss", "policy_term", "entropy_term", "grad_norm", "mean_logp",
                             "mean_entropy", "mean_length"),
                    mismatch_label="token_mismatch_episodes", accuracy="mean_reward"),
        progress=(ProgressField("loss", "loss", ".4f"),
                  ProgressField("mean_reward", "reward"),
                  ProgressField("success_rate", "success", ".2f"),
                  ProgressField("cumulative_successes", "total", "d"),
                  ProgressField("episodes_per_s", "episodes/s", ".1f"),
                  ProgressField("sandbox", "sandbox", "s")),
        refused=(Refusal(model={"dropout": 0.5}), Refusal(model={"initial_grammar_boost": 2.2})),
        evaluate=tr_alt.evaluate, jax_face=_altlas_face,
        layout_size=altlas.layout_size,
    )


@functools.cache
def _gaia_face(cfg: Any) -> JaxFace:
    """GAIA v3.1 in the JaxFace convention: no carry (the plastic state is the layout's `state`
    root: traces are `Trace`, histories and counters `Diagnostic` variables); a call is
    select_action on one state (1, S) with injected noise; `loss` is wm_loss + policy_loss
    (disjoint parameter groups). The agent acts on one row: `example` ignores batch_size."""
    import numpy as np

    from twinframe.functional import gaia as f
    from twinframe.models.gaia import HISTORY_BUFFERS, PLASTIC_BUFFERS

    def upd(state):
        return {"state": state}

    def apply(params, frozen, s, eps, u):
        sel, state = f.select_action(params, frozen["state"], frozen["consts"], s, eps, u, cfg)
        return sel, upd(state)

    def loss(params, frozen, s, a, s_next):
        value, (aux, state) = f.agent_loss(params, frozen["state"], frozen["consts"], s, a,
                                           s_next, cfg)
        return value, (aux, upd(state))

    def train(step, params, opt_state, frozen, s, a, s_next):
        params, state, opt_state, out = step(params, frozen["state"], frozen["consts"],
                                             opt_state, s, a, s_next)
        return params, opt_state, out.objective, upd(state)

    def example(batch_size, seed):
        del batch_size  # one agent acts on one state row
        rng = np.random.default_rng(seed)
        S, A, P = cfg.state_dim, cfg.action_dim, cfg.planning_samples
        s = rng.uniform(0.5, 1.0, (1, S)).astype(np.float32) * rng.choice([-1, 1], (1, S))
        eps = rng.standard_normal((P, A)).astype(np.float32)
        a = np.tanh(rng.standard_normal((1, A))).astype(np.float32)
        s_next = (s * np.float32(0.5)).astype(np.float32)  # |s'| < |s|: improvement > 0 at g = 0
        return (s, eps, np.float32(rng.random())), (s, a, s_next)

    def world_model(params, frozen, s, a):
        preds, wm = f.ensemble_apply(params["wm"], frozen["state"]["wm"], s, a, cfg)
        return f.ensemble_stats(preds), upd({**frozen["state"], "wm": wm})

    def action_model(params, frozen, s):
        return f.action_model(params["am"], s, cfg.action_dim), {}

    def act(params, frozen, s0, noise, sigma):
        state, out = f.act_episode(params, frozen["state"], frozen["consts"], s0, noise, cfg,
                                   sigma)
        return out, upd(state)

    def method_args(batch_size, seed):
        rng = np.random.default_rng(seed)
        S, A, P, T = cfg.state_dim, cfg.action_dim, cfg.planning_samples, 4
        s = rng.standard_normal((batch_size, S)).astype(np.float32)
        a = np.tanh(rng.standard_normal((batch_size, A))).astype(np.float32)
        noise = f.StepNoise(rng.standard_normal((T, P, A)).astype(np.float32),
                            rng.random(T).astype(np.float32),
                            rng.standard_normal((T, 1, S)).astype(np.float32))
        return {"world_model": (s, a), "action_model": (s,),
                "act": (s[:1], noise, np.float32(0.01))}

    kinds = {**dict.fromkeys(PLASTIC_BUFFERS, "trace"),
             **dict.fromkeys((*HISTORY_BUFFERS, "step_counter"), "diagnostic")}
    return JaxFace(apply, loss, train, example, None,
                   {"world_model": world_model, "action_model": action_model, "act": act},
                   outside=(
        "the agent loop stays outside: drawing the parity noise (NoiseStream), the LeakyReach "
        "step between select and learn, episode resets and returns (training.gaia.GaiaHost; "
        "act runs an episode without learning, functional.gaia.rollout one with learning); and "
        "the policy gate: learn skips the action model's AdamW step (params and optimizer "
        "state) where the improvement (loss aux 'improvement') is <= 0, which one "
        "nnx.Optimizer.update cannot express (make_train_step does)"),
                   method_args=method_args, kinds=kinds)


def _gaia() -> ModelSpec:
    from twinframe.contract import ReferenceForm
    from twinframe.functional import gaia as f_gaia
    from twinframe.models import gaia
    from twinframe.parity import gaia as p_gaia
    from twinframe.torch_ref import gaia as t_gaia
    from twinframe.training import gaia as tr_gaia

    return ModelSpec(
        name="gaia", config_cls=gaia.GaiaConfig, run_cls=gaia.GaiaRun,
        presets={k: Preset(m, r) for k, (m, r) in gaia.PRESETS.items()},
        layout=gaia.layout, canonical_init=gaia.canonical_init, recognise=gaia.recognise,
        check_trainable=gaia.check_trainable, make_torch=t_gaia.make_module,
        torch_optimizer=t_gaia.make_optimizer, jax_optimizer=f_gaia.make_optimizer,
        make_train_step=f_gaia.make_train_step, make_host=tr_gaia.GaiaHost,
        engines={"torch": tr_gaia.GaiaTorchEngine, "jax": tr_gaia.GaiaJaxEngine},
        parity_levels=p_gaia.levels,
        curve=Curve(metrics=("loss", "uncertainty", "free_energy", "l1_fast_norm",
                             "l2_fast_norm"),
                    mismatch_label="action_mismatches", accuracy="reward"),
        progress=(ProgressField("reward", "reward", ".4f"),
                  ProgressField("free_energy", "free energy", ".4f"),
                  ProgressField("loss", "wm loss", ".4f"),
                  ProgressField("steps_per_s", "step/s", ".1f")),
        refused=(Refusal(run={"noise": "torch"}), Refusal(run={"noise": "native"})),
        infer=tr_gaia.infer, evaluate=tr_gaia.evaluate, jax_face=_gaia_face,
        layout_size=gaia.layout_size,
        reference=ReferenceForm(gaia.reference_fill, gaia.reference_saves),
    )


@functools.cache
def _aime_face(cfg: Any) -> JaxFace:
    """AIME-core in the JaxFace convention. A call is the training forward over one clip
    (`functional.aime.model.forward`: the task losses, their parts, metrics and discrete
    decisions; writes the spectral-norm vectors, BatchNorm statistics and VQ codebook of the
    `state` root). The EMA teacher is the `extra` root `teacher` ({'encoder': the EMA copy of
    the encoder, 'n': its update count}, `Ema` variables), which `after_update` averages after
    each optimizer step; the RGB state lives in the optimizer state. `grads` are the per-task
    gradients (the three tasks of a run without `rgb_zero_adv_task`) that RGB balances.
    The functions are `jax.jit`-compiled (the forward runs op by op for ~20 s on a CPU)."""
    import jax
    import jax.numpy as jnp

    from twinframe.functional.aime import model as fm
    from twinframe.functional.aime import train as ft
    from twinframe.models.aime import AIMERun
    from twinframe.training import aime as tr

    n_tasks = AIMERun().num_tasks  # tasks of a run without rgb_zero_adv_task

    def layout_frozen(frozen):
        return {k: v for k, v in frozen.items() if k != "teacher"}

    def outputs(tasks, aux):
        return {"tasks": tasks, **{k: v for k, v in aux.items() if k != "state"}}

    @jax.jit
    def apply(params, frozen, batch):
        tasks, aux = fm.forward(params, layout_frozen(frozen), frozen["teacher"]["encoder"],
                                batch, cfg, n_tasks)
        return outputs(tasks, aux), {"state": aux["state"]}

    @jax.jit
    def loss(params, frozen, batch):
        out, updates = apply(params, frozen, batch)
        return jnp.sum(out["tasks"]), (out, updates)  # the host's logged 'loss'

    @jax.jit
    def grads(params, frozen, batch):
        tasks, g, aux = ft.task_grads(cfg, n_tasks, params, layout_frozen(frozen),
                                      frozen["teacher"]["encoder"], batch)
        return tasks, g, (outputs(tasks, aux), {"state": aux["state"]})

    @jax.jit
    def after_update(params, frozen, batch):
        t = frozen["teacher"]
        ema, n = ft.ema_update(params["encoder"], t["encoder"], t["n"],
                               batch["hyper"]["ema_decay"])
        return {"teacher": {"encoder": ema, "n": n}}

    def train(step, params, opt_state, frozen, batch):
        fz, t = layout_frozen(frozen), frozen["teacher"]
        static = {k: v for k, v in fz.items() if k != "state"}
        params, opt_state, state, carry, out = step(
            params, opt_state, fz["state"], {"ema": t["encoder"], "ema_n": t["n"]}, static,
            batch)
        return params, opt_state, out["tasks"], {
            "state": state, "teacher": {"encoder": carry["ema"], "n": carry["ema_n"]}}

    def teacher(params, frozen):
        del frozen
        return {"encoder": jax.tree.map(jnp.copy, params["encoder"]),
                "n": jnp.zeros([], jnp.int32)}

    def example(batch_size, seed):
        inp = tr.StepInputs(cfg, AIMERun(seed=seed, batch_size=batch_size), 0)
        batch = tr.step_batch(cfg, batch_size, inp, None)
        return (batch,), (batch,)

    return JaxFace(apply, loss, train, example, outside=(
        "the training host stays outside: the sprite stream, the per-step host noise "
        "(aime.md §4), beta and the loss weights (batch['hyper']), lockstep decision overrides; "
        "and runs with rgb_zero_adv_task (RGB over a fourth, all-zero task: their optimizer "
        "refuses the face's three task gradients with a one-line error)"),
        kinds={"teacher": "ema"}, grads=grads, after_update=after_update,
        extra={"teacher": teacher})


def _aime() -> ModelSpec:
    from twinframe.contract import ReferenceForm
    from twinframe.functional.aime import optim as f_aime_opt
    from twinframe.functional.aime import train as f_aime
    from twinframe.models import aime
    from twinframe.parity import aime as p_aime
    from twinframe.torch_ref.aime import model as t_aime
    from twinframe.torch_ref.aime import train as t_aime_train
    from twinframe.training import aime as tr_aime

    return ModelSpec(
        name="aime", config_cls=aime.AIMEConfig, run_cls=aime.AIMERun,
        presets={k: Preset(m, r) for k, (m, r) in aime.PRESETS.items()},
        layout=aime.layout, canonical_init=aime.canonical_init, recognise=aime.recognise,
        check_trainable=aime.check_trainable, make_torch=t_aime.make_model,
        torch_optimizer=t_aime_train.make_optimizer, jax_optimizer=f_aime_opt.make_optimizer,
        make_train_step=f_aime.make_train_step, make_host=tr_aime.AIMEHost,
        engines={"torch": tr_aime.AIMETorchEngine, "jax": tr_aime.AIMEJaxEngine},
        parity_levels=p_aime.levels,
        curve=Curve(metrics=("loss", "elbo", "perceiver", "predictive"),
                    mismatch_label="decision_mismatches", accuracy="token_acc",
                    judge_params=p_aime.judge_l5_params, steps=20),  # aime.md §7 L5
        progress=(ProgressField("elbo", "elbo", ".3f"),
                  ProgressField("perceiver", "perc", ".3f"),
                  ProgressField("predictive", "pred", ".4f"),
                  ProgressField("beta", "beta", ".3f"),
                  ProgressField("steps_per_s", "step/s", ".2f")),
        refused=(Refusal(model={"dropout": 0.1}), Refusal(model={"adversarial": True}),
                 Refusal(model={"ema_alias_bug": True}), Refusal(run={"noise_source": "native"})),
        infer=tr_aime.infer, evaluate=tr_aime.evaluate, check_preset="micro", jax_face=_aime_face,
        visualize=tr_aime.visualize,
        reference=ReferenceForm(aime.reference_fill, aime.reference_saves,
                                aime.reference_ignores),
    )


_FACTORIES: dict[str, Callable[[], ModelSpec]] = {"hrm": _hrm, "altlas": _altlas,
                                                  "gaia": _gaia, "aime": _aime}
MODELS = tuple(_FACTORIES)


@functools.cache
def get(name: str) -> ModelSpec:
    """The one ModelSpec of `name` (cached: per-spec compile caches are shared)."""
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise TwinframeError(f"unknown model '{name}' (have {', '.join(MODELS)})") from None
    return factory()
