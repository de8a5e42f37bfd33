"""GAIA parity levels (spec gaia.md §4.2; torch v3.1 / numpy_ref = reference, JAX = candidate;
tolerance keys `gaia.*` in `tolerances`):

- P1 Q(W): random W with planted exact ties and the model's plastic weights, exact except
  entries with ||W|/s - 0.5| < 1e-5 (reported).
- P2 one plastic-layer forward (member 0, l1; non-zero traces, counter mid-ring): y, F, Sl,
  histories, counter.
- P3 100 online forwards of l2 (inputs x20: homeostasis triggered), no weight update.
- P4 ensemble forward + traces on a planning batch: preds, mean, unbiased std, new state.
- P5 gradients of the wm loss (every wm leaf) and of the policy loss from one state, plus the
  quantizer's closed-form gradient (§1.2) in both frameworks.
- P6 two full `learn` calls (I > 0, then I <= 0): params, Adam moments, counts, the gate.
- P7 closed loop (independent trajectories, faithful torch init of run.seed, §3 noise of
  run.noise_seed): identical indices, |ds|, params, traces/histories, counters
  (`steps`: 12 at tiny sizes; 50 at the reference config as the spec pins it).
- P9 the agent checkpoint files of §1.11 (`parity.gaia_io`): torch train state -> safetensors
  -> JAX -> orbax -> JAX -> torch, bit for bit (weights, traces, histories, counters, both
  optimizers, an empty act_opt included).
- P10 numpy_ref v4.x vs the JAX port in float64 (x64 enabled only inside the level) and in
  float32: N1-N8 setups (HebbianCore x3 rules, standalone rules, TemporalLayer, hierarchy,
  ES, controller, meta-optimizer with a JAX-driven controller).
The trap tests and the golden values are tests (tests/**/test_gaia*.py).
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch

from twinframe.functional import gaia as fg
from twinframe.models import gaia as mg
from twinframe.models.gaia import GaiaConfig, GaiaRun
from twinframe.parity.compare import Comparison
from twinframe.parity.twins import Twins
from twinframe.torch_ref import gaia as tg

NEAR_TIE = 1e-5
P7_STEPS_TINY = 12
P7_STEPS_REFERENCE = 50


def _spec():
    from twinframe import registry

    return registry.get("gaia")


def _np(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy().copy()
    return np.asarray(x)


def _cmp(level: str, name: str, ref: Any, cand: Any, tol: str, note: str = "",
         dtype: str = "float32") -> Comparison:
    return Comparison(level, name, _np(ref), _np(cand), f"gaia.{tol}", dtype, note)


def _t(x: Any) -> torch.Tensor:
    return torch.from_numpy(np.array(x))


def _twins(cfg: GaiaConfig, run: GaiaRun, state: dict | None = None) -> Twins:
    return Twins.build(_spec(), cfg, state, run.seed)


def _rng(run: GaiaRun, level: int) -> np.random.Generator:
    return np.random.default_rng([run.seed, 300 + level])


def _member(tree: Any, i: int) -> Any:
    return jax.tree_util.tree_map(lambda x: x[i], tree)


# ----------------------------------------------------------------------------------------------
# jitted JAX sides (one compile per config; eager op-by-op dispatch is slow on CPU)


_jq = jax.jit(fg.bitnet_quantize)
_js = jax.jit(fg.absmean_scale)


@functools.lru_cache(maxsize=32)
def _jit(cfg: GaiaConfig, which: str) -> Any:
    fn = {"select": fg.select_action, "ensemble": fg.ensemble_apply, "grads": fg.grads}[which]
    return jax.jit(functools.partial(fn, cfg=cfg))


@functools.lru_cache(maxsize=8)
def _jit_learn(cfg: GaiaConfig, run: GaiaRun) -> Any:
    return jax.jit(functools.partial(fg.learn, cfg=cfg, tx=fg.make_optimizer(run)))


# ----------------------------------------------------------------------------------------------
# P1


def _quant_cmps(name: str, w_t: torch.Tensor, w_j: jax.Array) -> list[Comparison]:
    """Q(W) = q*s split in its two factors: the ternary q exactly (near ties excluded and
    counted), the row scale s to 2 ulps (mean|W|'s summation order: torch's vectorised cascade
    vs XLA's reduction)."""
    with torch.no_grad():
        s_t = w_t.abs().mean(dim=-1, keepdim=True).clamp(min=1e-5)
        q_t = (tg.bitnet_quantize(w_t) / s_t).numpy()
    s_j = np.asarray(_js(w_j))
    q_j = np.asarray(_jq(w_j)) / s_j
    w = w_t.detach().numpy().astype(np.float64)
    near = np.abs(np.abs(w) / np.maximum(np.abs(w).mean(-1, keepdims=True), 1e-5) - 0.5) \
        < NEAR_TIE
    agree = int((q_t[near] == q_j[near]).sum())
    q_j = np.where(near, q_t, q_j)
    note = f"{int(near.sum())} near-tie entries excluded ({agree} agree)" if near.any() else ""
    return [_cmp("P1", f"{name}.q", q_t, q_j, "P1.quant", note),
            _cmp("P1", f"{name}.scale", s_t, s_j, "P1.scale")]


def level_p1(cfg: GaiaConfig, run: GaiaRun) -> list[Comparison]:
    rng = _rng(run, 1)
    w = (rng.standard_normal((20, 7)) * 0.02).astype(np.float32)
    unit = np.float32(2.0 ** -6)
    w[0] = np.array([8, 8, 6, 2, 2, 2, 0], np.float32) * unit  # s = 4u: 2u/s = 0.5, a tie
    w[1] = np.array([-8, 8, -6, -2, 2, -2, 0], np.float32) * unit  # (-> 0); 6u/s = 1.5 -> 1
    w[2] = 1e-7  # floor active
    out = _quant_cmps("random_with_ties", _t(w), jnp.asarray(w))
    tw = _twins(cfg, run)
    for i, m in enumerate(tw.torch_model.wm.models):
        for name in ("l1", "l2"):
            out += _quant_cmps(f"member{i}.{name}", getattr(m, name).weight,
                               tw.params["wm"][name]["weight"][i])
    return out


# ----------------------------------------------------------------------------------------------
# P2, P3: one plastic layer


def _layer_pair(cfg: GaiaConfig, run: GaiaRun, name: str, rng: np.random.Generator,
                counter: int) -> tuple[tg.DiagnosticPlasticLinear, dict, dict]:
    """Member 0's layer `name` from the twins, with random traces (and histories) set in both."""
    tw = _twins(cfg, run)
    m = getattr(tw.torch_model.wm.models[0], name)
    p = {"weight": tw.params["wm"][name]["weight"][0]}
    st_np = {"fast_trace": (rng.standard_normal(m.fast_trace.shape) * 0.1).astype(np.float32),
             "slow_trace": (rng.standard_normal(m.fast_trace.shape) * 0.1).astype(np.float32)}
    if cfg.track_metrics:
        L = cfg.trace_history_len
        st_np["trace_norm_history"] = rng.random(L).astype(np.float32)
        st_np["update_magnitude_history"] = rng.random(L).astype(np.float32)
        st_np["step_counter"] = np.int32(counter)
    with torch.no_grad():
        for k, v in st_np.items():
            getattr(m, k).copy_(torch.as_tensor(np.asarray(v, np.int64 if k == "step_counter"
                                                            else np.float32)))
    return m, p, {k: jnp.asarray(v) for k, v in st_np.items()}


def _state_cmps(level: str, prefix: str, m: tg.DiagnosticPlasticLinear, st: dict, tol: str
                ) -> list[Comparison]:
    out = []
    for k, v in st.items():
        ref = getattr(m, k)
        if k == "step_counter":
            out.append(_cmp(level, f"{prefix}.{k}", ref.numpy().astype(np.int64),
                            np.asarray(v).astype(np.int64), "exact"))
        else:
            out.append(_cmp(level, f"{prefix}.{k}", ref, v, tol))
    return out


def level_p2(cfg: GaiaConfig, run: GaiaRun) -> list[Comparison]:
    rng = _rng(run, 2)
    m, p, st = _layer_pair(cfg, run, "l1", rng, counter=2 * cfg.trace_history_len - 1)
    x = rng.standard_normal((4, cfg.in_dim)).astype(np.float32)
    y_t = m(_t(x))
    y_j, st_j = fg.plastic_linear(p, st, jnp.asarray(x), cfg)
    return [_cmp("P2", "l1.y", y_t, y_j, "P2.y")] + _state_cmps("P2", "l1", m, st_j,
                                                                 "P2.traces")


@functools.lru_cache(maxsize=8)
def _jit_online(cfg: GaiaConfig) -> Any:
    def run_(p, st, xs):
        def body(s, x):
            return fg.plastic_linear(p, s, x, cfg)[1], None

        return jax.lax.scan(body, st, xs)[0]

    return jax.jit(run_)


def level_p3(cfg: GaiaConfig, run: GaiaRun, n: int = 100) -> list[Comparison]:
    rng = _rng(run, 3)
    m, p, st = _layer_pair(cfg, run, "l2", rng, counter=0)
    xs = (rng.standard_normal((n, 5, cfg.hidden_dim)) * 20).astype(np.float32)
    peak = 0.0
    with torch.no_grad():
        for x in xs:
            m(_t(x))
            peak = max(peak, float(m.fast_trace.norm()))
    st_j = _jit_online(cfg)(p, st, jnp.asarray(xs))
    note = "homeostasis active" if cfg.track_metrics and float(
        m.trace_norm_history.max()) > cfg.homeostatic_target else "homeostasis NOT triggered"
    out = _state_cmps("P3", f"l2x{n}", m, st_j, "P3.traces")
    return [Comparison(c.level, c.name, c.reference, c.candidate, c.tol_key, c.dtype, note)
            for c in out]


# ----------------------------------------------------------------------------------------------
# P4 - P6: ensemble, gradients, learn


def _state_from_torch(module: tg.GaiaAgentModule, cfg: GaiaConfig) -> dict:
    sd = {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}
    tree = mg.layout(cfg).table.torch_to_tree(sd)
    return jax.tree_util.tree_map(jnp.asarray, tree["state"])


def _tree_cmps(level: str, prefix: str, ref: dict, cand: dict, tol: str) -> list[Comparison]:
    """Trees with stacked members: float leaves with `tol`, integer leaves exactly."""
    from twinframe.models.layout import flatten_tree, path_str

    fr, fc = flatten_tree(ref), flatten_tree(cand)
    out = []
    for k in fr:
        a, b = np.asarray(fr[k]), np.asarray(fc[k])
        if np.issubdtype(a.dtype, np.integer):
            out.append(_cmp(level, f"{prefix}{path_str(k)}", a.astype(np.int64),
                            b.astype(np.int64), "exact"))
        else:
            out.append(_cmp(level, f"{prefix}{path_str(k)}", a, b, tol))
    return out


def _warm(cfg: GaiaConfig, run: GaiaRun, tw: Twins, rng: np.random.Generator
          ) -> tuple[dict, np.ndarray]:
    """One planning call in both frameworks (non-zero traces), same inputs: JAX wm state."""
    s = (rng.standard_normal((1, cfg.state_dim)) * 0.5).astype(np.float32)
    eps = rng.standard_normal((cfg.planning_samples, cfg.action_dim)).astype(np.float32)
    tg.select_action(tw.torch_model, _t(s), _t(eps), 0.5)
    _, st = _jit(cfg, "select")(tw.params, tw.frozen["state"], tw.consts, jnp.asarray(s),
                                jnp.asarray(eps), jnp.float32(0.5))
    return st, s


def level_p4(cfg: GaiaConfig, run: GaiaRun) -> list[Comparison]:
    rng = _rng(run, 4)
    tw = _twins(cfg, run)
    P = cfg.planning_samples
    s = rng.standard_normal((P, cfg.state_dim)).astype(np.float32)
    a = np.tanh(rng.standard_normal((P, cfg.action_dim))).astype(np.float32)
    with torch.no_grad():
        preds_t = torch.stack([m(_t(s), _t(a)) for m in tw.torch_model.wm.models])
    preds_j, st_j = _jit(cfg, "ensemble")(tw.params["wm"], tw.frozen["state"]["wm"],
                                          jnp.asarray(s), jnp.asarray(a))
    m_j, sd_j = fg.ensemble_stats(preds_j)
    out = [_cmp("P4", "preds", preds_t, preds_j, "P4.preds"),
           _cmp("P4", "mean", preds_t.mean(0), m_j, "P4.preds"),
           _cmp("P4", "std_ddof1", preds_t.std(0), sd_j, "P4.preds")]
    return out + _tree_cmps("P4", "state.", _state_from_torch(tw.torch_model, cfg)["wm"],
                            st_j, "P4.state")


def _transition(cfg: GaiaConfig, rng: np.random.Generator, s: np.ndarray, improve: bool
                ) -> tuple[np.ndarray, np.ndarray]:
    a = np.tanh(rng.standard_normal((1, cfg.action_dim))).astype(np.float32)
    scale = np.float32(0.5 if improve else 2.0)
    return a, (s * scale).astype(np.float32)


def level_p5(cfg: GaiaConfig, run: GaiaRun) -> list[Comparison]:
    rng = _rng(run, 5)
    tw = _twins(cfg, run)
    st, s = _warm(cfg, run, tw, rng)
    a, s_next = _transition(cfg, rng, s, improve=True)
    module = tw.torch_model
    preds = torch.stack([m(_t(s), _t(a)) for m in module.wm.models])
    torch.nn.functional.mse_loss(preds, _t(s_next).unsqueeze(0).expand_as(preds)).backward()
    imp = float(((_t(s) ** 2).mean() - (_t(s_next) ** 2).mean()).item())
    w = torch.sigmoid(torch.tensor(cfg.weight_scale * imp))
    (-(w * module.am.log_prob(_t(s), _t(a))).mean()).backward()
    g_torch = {k: p.grad.numpy().copy() for k, p in module.named_parameters()}
    g_j, _, _ = _jit(cfg, "grads")(tw.params, st, tw.consts, jnp.asarray(s), jnp.asarray(a),
                                   jnp.asarray(s_next))
    g_j_t = tw.jax_to_torch_layout(g_j)
    out = [_cmp("P5", f"grad.{k}", g_torch[k], g_j_t[k], "P5.grad") for k in g_torch]
    # §1.2 closed form of the quantizer gradient, both frameworks (G random, rows floored too)
    w0 = (rng.standard_normal((6, 5)) * 0.02).astype(np.float32)
    w0[5] = 1e-7
    G = rng.standard_normal((6, 5)).astype(np.float32)
    wt = _t(w0).requires_grad_()
    (tg.bitnet_quantize(wt) * _t(G)).sum().backward()
    gj = jax.grad(lambda x: jnp.sum(fg.bitnet_quantize(x) * G))(jnp.asarray(w0))
    s_ = np.maximum(np.abs(w0).mean(1, keepdims=True), np.float32(1e-5))
    q = np.clip(np.round(w0 / s_), -1, 1)
    closed = (np.sign(w0) / 5 * (G * q).sum(1, keepdims=True)).astype(np.float32)
    closed[5] = 0
    out += [_cmp("P5", "quant_grad_closed_form.torch", closed, wt.grad, "P5.grad"),
            _cmp("P5", "quant_grad_closed_form.jax", closed, gj, "P5.grad")]
    return out


def level_p6(cfg: GaiaConfig, run: GaiaRun) -> list[Comparison]:
    rng = _rng(run, 6)
    tw = _twins(cfg, run)
    st, s = _warm(cfg, run, tw, rng)
    state = {"wm": st["wm"]}
    opt_t = tg.make_optimizer(tw.torch_model, run)
    tx = fg.make_optimizer(run)
    params, opt_j = tw.params, tx.init(tw.params)
    lay = mg.layout(cfg)
    out = []
    for k, improve in enumerate((True, False)):
        a, s_next = _transition(cfg, rng, s, improve)
        lo = tg.learn(tw.torch_model, opt_t, opt_t, _t(s), _t(a), _t(s_next),
                      grad_clip_norm=run.grad_clip_norm)
        params, state, opt_j, lj = _jit_learn(cfg, run)(
            params, state, tw.consts, opt_j, jnp.asarray(s), jnp.asarray(a), jnp.asarray(s_next))
        tag = f"learn{k}"
        out.append(_cmp("P6", f"{tag}.policy_gate", np.array(lo.policy_updated),
                        np.array(bool(lj.policy_updated)), "exact",
                        f"I = {lo.improvement:+.3g}"))
        out.append(_cmp("P6", f"{tag}.wm_loss", np.array(lo.wm_loss), np.asarray(lj.wm_loss),
                        "P6.params"))
        named = dict(tw.torch_model.named_parameters())
        pj = tw.jax_to_torch_layout(params)
        out += [_cmp("P6", f"{tag}.param.{n}", named[n], pj[n], "P6.params")
                for n in lay.trainable_keys()]
        adams = {g: fg.adam_state(opt_j, g) for g in ("wm", "am")}
        moments = {slot: lay.params.tree_to_torch({g: getattr(adams[g], f) for g in adams})
                   for slot, f in (("exp_avg", "mu"), ("exp_avg_sq", "nu"))}
        for g, adam in adams.items():
            steps = {float(opt_t.state[named[n]]["step"]) for n in lay.trainable_keys()
                     if lay.group_of(n) == g and named[n] in opt_t.state} or {0.0}
            out.append(_cmp("P6", f"{tag}.{g}.count", np.array(max(steps)),
                            np.array(float(adam.count)), "exact"))
        for slot, mj in moments.items():
            for n in lay.trainable_keys():
                ref = opt_t.state[named[n]][slot] if named[n] in opt_t.state else \
                    torch.zeros_like(named[n])
                out.append(_cmp("P6", f"{tag}.{slot}.{n}", ref, mj[n], "P6.moments"))
    return out


# ----------------------------------------------------------------------------------------------
# P7 closed loop


def closed_loop(cfg: GaiaConfig, run: GaiaRun, steps: int, state: dict | None = None
                ) -> tuple[dict, dict]:
    """Independent trajectories of both frameworks from one init (default: the faithful torch
    init of run.seed) under the §3 noise of run.noise_seed. -> (torch, jax) dicts of idx,
    states, ties, and the final torch-layout state."""
    state = tg.faithful_state(cfg, run.seed) if state is None else state
    agent = tg.GaiaAgent(cfg, run, state)
    with tg.torch_threads(run.torch_threads):
        out_t = tg.run_validation(agent, steps, noise=mg.NoiseStream(cfg, run.noise_seed),
                                  sigma=run.sigma_env)
    out_t["final"] = {k: v.detach().numpy().copy()
                      for k, v in agent.module.state_dict().items()}
    tree = mg.layout(cfg).table.torch_to_tree(state)
    tx = fg.make_optimizer(run)
    params = jax.tree_util.tree_map(jnp.asarray, tree["params"])
    ag = fg.Agent(params, jax.tree_util.tree_map(jnp.asarray, tree["state"]),
                  jax.tree_util.tree_map(jnp.asarray, tree["consts"]), tx.init(params))
    ns = mg.NoiseStream(cfg, run.noise_seed).take(steps)
    noise = fg.StepNoise(jnp.asarray(ns.eps), jnp.asarray(ns.u), jnp.asarray(ns.xi))
    ag, _, outs = fg.jit_rollout(cfg, run)(ag, jnp.zeros((1, cfg.state_dim)), noise)
    final = {"params": jax.device_get(ag.params), "state": jax.device_get(ag.state),
             "consts": jax.device_get(ag.consts)}
    out_j = {"idx": np.asarray(outs.idx).tolist(), "states": np.asarray(outs.s_next),
             "ties": np.asarray(outs.tie).tolist(), "wm_loss": np.asarray(outs.learn.wm_loss),
             "final": mg.layout(cfg).table.tree_to_torch(final)}
    out_t["wm_loss"] = np.asarray(agent.metrics["wm_loss"])
    return out_t, out_j


def level_p7(cfg: GaiaConfig, run: GaiaRun, steps: int | None = None) -> list[Comparison]:
    if steps is None:
        steps = P7_STEPS_REFERENCE if cfg == mg.DEFAULT else P7_STEPS_TINY
    ref, cand = closed_loop(cfg, run, steps)
    ties = [i for i, (a, b) in enumerate(zip(ref["ties"], cand["ties"], strict=True)) if a or b]
    n = ties[0] if ties else steps  # §4.2: a flagged tie stops the comparison there
    note = f"tie at step {n}: compared steps 0..{n - 1}" if ties else f"{steps} steps"
    out = [_cmp("P7", f"idx[0..{n - 1}]", np.array(ref["idx"][:n]), np.array(cand["idx"][:n]),
                "exact", note),
           _cmp("P7", f"s[0..{n - 1}]", ref["states"][:n], cand["states"][:n], "P7.s", note),
           _cmp("P7", f"wm_loss[0..{n - 1}]", ref["wm_loss"][:n], cand["wm_loss"][:n],
                "P7.loss", note)]
    if ties:
        return out
    lay = mg.layout(cfg)
    for r in lay.table.rows:
        a, b = ref["final"][r.torch_key], cand["final"][r.torch_key]
        if r.dtype != "float32":
            out.append(_cmp("P7", f"final.{r.torch_key}", a, b, "exact"))
        elif r.path[0] == "params":
            out.append(_cmp("P7", f"final.{r.torch_key}", a, b, "P7.params"))
        elif r.path[0] == "state":
            out.append(_cmp("P7", f"final.{r.torch_key}", a, b, "P7.traces"))
    return out


# ----------------------------------------------------------------------------------------------
# P8 learning curves (slow; not a `twinframe check` level: tests marked `slow`, one paired seed
# in the default test run)


def window_means(loss: Any, window: int = 50) -> np.ndarray:
    x = np.asarray(loss, np.float64)
    return x[: len(x) // window * window].reshape(-1, window).mean(1)


def p8a(seeds: Any, steps: int = 200, cfg: GaiaConfig = mg.DEFAULT,
        run: GaiaRun | None = None) -> dict[str, Any]:
    """P8a (paired): parity mode on both sides, torch init seed s, noise_seed 123 + s. Returns
    per-seed window means, the per-window ratio of the medians over seeds, and stability."""
    run = run or mg.GaiaRun()
    wt, wj, stable = [], [], []
    for s in seeds:
        r = run.replace(seed=int(s), noise_seed=123 + int(s))
        ref, cand = closed_loop(cfg, r, steps)
        wt.append(window_means(ref["wm_loss"]))
        wj.append(window_means(cand["wm_loss"]))
        stable.append(bool(ref["stable"]) and _stable(cfg, cand["final"]))
    mt, mj = np.median(wt, 0), np.median(wj, 0)
    ratio = np.maximum(mt / mj, mj / mt)
    return {"torch_windows": np.asarray(wt), "jax_windows": np.asarray(wj),
            "median_ratio": ratio, "stable": stable}


def _stable(cfg: GaiaConfig, state: dict) -> bool:
    f = float(np.linalg.norm(state["wm.models.0.l1.fast_trace"]))
    return 0 < f < 1.1 * cfg.homeostatic_target


def p8b(seeds: Any, steps: int = 200, cfg: GaiaConfig = mg.DEFAULT,
        run: GaiaRun | None = None) -> dict[str, Any]:
    """P8b (native, one-sided bands): torch with its own generator (init + R4-R6) per seed; JAX
    with native keys (init and §1.10 noise), all seeds vmapped in one rollout. Returns per side
    the steps 150-199 window mean of wm_loss, final member-0 ||l2.F|| and stability."""
    run = run or mg.GaiaRun()
    out: dict[str, Any] = {"torch": {"late_loss": [], "l2_fast": [], "stable": []}}
    for s in seeds:
        g = torch.Generator().manual_seed(int(s))
        agent = tg.GaiaAgent(cfg, run, tg.faithful_state(cfg, 0))
        tg.faithful_init(agent.module, g)
        with tg.torch_threads(run.torch_threads):
            res = tg.run_validation(agent, steps, generator=g, sigma=run.sigma_env)
        out["torch"]["late_loss"].append(float(np.mean(agent.metrics["wm_loss"][-50:])))
        out["torch"]["l2_fast"].append(float(agent.module.wm.models[0].l2.fast_trace.norm()))
        out["torch"]["stable"].append(bool(res["stable"]))
    keys = jax.random.split(jax.random.key(1000), len(seeds))
    tx = fg.make_optimizer(run)

    def one(k):
        ki, kn = jax.random.split(k)
        p, st, c = fg.native_init(ki, cfg)
        return fg.Agent(p, st, c, tx.init(p)), fg.native_noise(kn, steps, cfg)

    agents, noise = jax.vmap(one)(keys)
    ag, _, outs = fg.jit_rollout(cfg, run, vmapped=True)(
        agents, jnp.zeros((len(seeds), 1, cfg.state_dim)), noise)
    loss = np.asarray(outs.learn.wm_loss)
    f1 = np.linalg.norm(np.asarray(ag.state["wm"]["l1"]["fast_trace"][:, 0]), axis=(1, 2))
    f2 = np.linalg.norm(np.asarray(ag.state["wm"]["l2"]["fast_trace"][:, 0]), axis=(1, 2))
    out["jax"] = {"late_loss": loss[:, -50:].mean(1).tolist(), "l2_fast": f2.tolist(),
                  "stable": [bool(0 < x < 1.1 * cfg.homeostatic_target) for x in f1]}
    return out


# ----------------------------------------------------------------------------------------------
# P9 agent checkpoint files


def level_p9(cfg: GaiaConfig, run: GaiaRun, steps: int = 3) -> list[Comparison]:
    from twinframe.parity import gaia_io

    out = []
    for fw in ("torch", "jax"):
        from twinframe.training.runner import Trainer

        tr = Trainer(_spec(), cfg, run, fw)
        try:
            for _ in range(steps):
                tr.train_step()
            st = tr.export_state()
        finally:
            tr.close()
        with tempfile.TemporaryDirectory() as d:
            back = gaia_io.roundtrip(st, cfg, Path(d))
        for k, (a, b) in gaia_io.leaf_pairs(st, back).items():
            out.append(_cmp("P9", f"{fw}.{k}", a, b, "exact"))
    return out


# ----------------------------------------------------------------------------------------------
# P10 numpy_ref v4.x vs JAX (x64 and f32)


def v4_cases(steps: int = 20) -> dict[str, tuple[Any, Any]]:
    """{name: (numpy_ref value, JAX value)} for the N1-N8 setups, computed under the current
    x64 setting (float64 inputs are cast to the JAX default float)."""
    from twinframe.parity import gaia_v4_cases

    return gaia_v4_cases.cases(steps)


def level_p10(cfg: GaiaConfig, run: GaiaRun) -> list[Comparison]:
    del cfg, run
    out = []
    with jax.enable_x64(True):
        for name, (a, b) in v4_cases(20).items():
            out.append(_cmp("P10", f"x64.{name}", np.asarray(a, np.float64),
                            np.asarray(b, np.float64), "P10", dtype="float64"))
    for name, (a, b) in v4_cases(20).items():
        out.append(_cmp("P10", f"f32.{name}", np.asarray(a, np.float64),
                        np.asarray(b, np.float64), "P10", dtype="float32"))
    return out


LEVELS = {"P1": level_p1, "P2": level_p2, "P3": level_p3, "P4": level_p4, "P5": level_p5,
          "P6": level_p6, "P7": level_p7, "P9": level_p9, "P10": level_p10}


def levels(cfg: GaiaConfig, run: GaiaRun) -> dict[str, Any]:
    """Level thunks; torch runs with `run.torch_threads` intra-op threads inside each."""

    def thunk(fn: Any) -> Any:
        def go() -> list[Comparison]:
            with tg.torch_threads(run.torch_threads):
                return fn(cfg, run)

        return go

    return {name: thunk(fn) for name, fn in LEVELS.items()}

