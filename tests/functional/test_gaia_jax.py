"""GAIA JAX port (functional/gaia.py, gaia_v4.py): goldens G1/G3 in JAX (§5.4 with the §4.2
tolerances), the JAX side of the §4.3 traps, lax.scan rollouts, jit, donation and vmap."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from twinframe.functional import gaia as fg
from twinframe.functional import gaia_v4 as fv
from twinframe.models import gaia as mg
from twinframe.torch_ref import gaia as tg

jax.config.update("jax_default_matmul_precision", "highest")  # trap 16 (TF32 on GPUs)
CFG, RUN = mg.TINY, mg.PRESETS["tiny"][1]


def _agent(cfg, run, state):
    tree = mg.layout(cfg).table.torch_to_tree(state)
    params = jax.tree_util.tree_map(jnp.asarray, tree["params"])
    return fg.Agent(params, jax.tree_util.tree_map(jnp.asarray, tree["state"]),
                    jax.tree_util.tree_map(jnp.asarray, tree["consts"]),
                    fg.make_optimizer(run).init(params))


def _noise(cfg, seed, steps):
    ns = mg.NoiseStream(cfg, seed).take(steps)
    return fg.StepNoise(jnp.asarray(ns.eps), jnp.asarray(ns.u), jnp.asarray(ns.xi))


def test_g1_in_jax():
    cfg = mg.GaiaConfig(trace_history_len=8)
    g = torch.Generator().manual_seed(0)
    w = tg.plastic_weight(4, 3, g).numpy()
    xs = (torch.randn(12, 5, 3, generator=g) * 20).numpy()
    z = jnp.zeros((4, 3))
    st = {"fast_trace": z, "slow_trace": z, "trace_norm_history": jnp.zeros(8),
          "update_magnitude_history": jnp.zeros(8), "step_counter": jnp.int32(0)}
    step = jax.jit(functools.partial(fg.plastic_linear, cfg=cfg))
    ys = []
    for t in range(12):
        y, st = step({"weight": jnp.asarray(w)}, st, jnp.asarray(xs[t]))
        ys.append(np.asarray(y))
    np.testing.assert_allclose(ys[0][0], [-0.52201951, -0.33276176, -0.29625815, -0.04891714],
                               atol=1e-6, rtol=1e-5)  # P2 tolerance
    np.testing.assert_allclose(ys[-1].sum(), 4.60757589, rtol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(st["slow_trace"]), 0.41215226, rtol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(st["fast_trace"]), 5.0, rtol=1e-6)
    assert int(st["step_counter"]) == 12
    np.testing.assert_allclose(st["trace_norm_history"], [14.764032, 8.387664, 6.832857,
                               7.488846, 9.788650, 11.840093, 5.874995, 12.045330], rtol=1e-4)
    np.testing.assert_allclose(st["update_magnitude_history"], [227.24080, 87.06466, 62.12062,
                               74.11555, 112.02679, 152.85051, 39.89079, 163.64754], rtol=1e-4)


def test_g3_in_jax():
    """§5.4 G3: same idx exactly; wm_loss and s within atol 2e-5."""
    cfg, run = mg.DEFAULT, mg.GaiaRun()
    ag = _agent(cfg, run, tg.faithful_state(cfg, 0))
    _, _, out = fg.jit_rollout(cfg, run)(ag, jnp.zeros((1, 1)), _noise(cfg, 123, 10))
    assert np.asarray(out.idx).tolist() == [27, 14, 22, 16, 12, 16, 5, 26, 11, 0]
    assert not np.asarray(out.tie).any()
    np.testing.assert_allclose(out.learn.wm_loss, [0.924740, 0.854945, 0.381910, 0.275387,
                               0.130897, 0.273277, 0.695120, 1.841532, 2.517550, 4.144808],
                               atol=2e-5)
    np.testing.assert_allclose(np.asarray(out.s_next)[:, 0], [
        0.8537602, 0.8261037, 0.2249056, 0.1064594, 0.0174528, -0.1991910, -0.8145324,
        -1.0049989, -1.4686055, -1.8108824], atol=2e-5)


def test_trap1_two_trace_updates_per_step_and_donated_rollout():
    ag = _agent(CFG, RUN, mg.canonical_init(CFG, 0))
    ag2, _, out = fg.jit_rollout(CFG, RUN)(ag, jnp.zeros((1, 1)), _noise(CFG, 1, 4))
    assert np.asarray(ag2.state["wm"]["l1"]["step_counter"]).tolist() == [8, 8, 8]
    assert ag2.state["wm"]["l2"]["step_counter"].dtype == jnp.int32  # trap 25
    assert ag.params["wm"]["l1"]["weight"].is_deleted()  # the agent was donated
    assert np.isfinite(np.asarray(out.learn.wm_loss)).all()


def test_traps_2_5_output_uses_old_traces_and_no_feedback():
    rng = np.random.default_rng(0)
    p = {"weight": jnp.asarray(rng.standard_normal((3, 2)) * 0.1, jnp.float32)}
    st = {"fast_trace": jnp.full((3, 2), 0.2), "slow_trace": jnp.full((3, 2), -0.1),
          "trace_norm_history": jnp.zeros(5), "update_magnitude_history": jnp.zeros(5),
          "step_counter": jnp.int32(4)}
    x = jnp.asarray(rng.standard_normal((4, 2)), jnp.float32)
    y, new = fg.plastic_linear(p, st, x, CFG)
    w_eff = fg.bitnet_quantize(p["weight"]) + (0.1 * st["fast_trace"] + 0.05 * st["slow_trace"])
    np.testing.assert_allclose(y, x @ w_eff.T, atol=1e-7)
    dx = jax.grad(lambda x_: jnp.sum(fg.plastic_linear(p, st, x_, CFG)[0]))(x)
    np.testing.assert_allclose(dx, jnp.ones((4, 3)) @ w_eff, atol=1e-7)  # no path via traces
    g_st = jax.grad(lambda x_: jnp.sum(fg.plastic_linear(p, st, x_, CFG)[1]["fast_trace"]))(x)
    assert not np.asarray(g_st).any()  # the update sees stop_gradient(x), stop_gradient(y)
    assert int(new["step_counter"]) == 5
    assert float(new["trace_norm_history"][4]) > 0 and float(new["trace_norm_history"][0]) == 0


def test_trap6_no_ste_and_zero_weight_gradient():
    """d|w|/dw at 0 is 0 (as torch), the gradient reaches W only via the scale."""
    w = jnp.asarray([[0.0, 0.02, -0.01, 0.005]])
    G = jnp.asarray([[1.0, 2.0, -1.0, 0.5]])
    g = jax.grad(lambda x: jnp.sum(fg.bitnet_quantize(x) * G))(w)
    s = np.abs(np.asarray(w)).mean()
    q = np.clip(np.round(np.asarray(w) / s), -1, 1)
    np.testing.assert_allclose(g, np.sign(w) / 4 * (np.asarray(G) * q).sum(), rtol=1e-6)
    assert float(g[0, 0]) == 0.0
    g_ste = jax.grad(lambda x: jnp.sum(fg.bitnet_quantize(x, ste=True) * G))(w)
    np.testing.assert_array_equal(g_ste, G)  # the optional STE flag


def test_trap15_clamp_boundary_gradient_is_zero():
    """lax.clamp: strict boundary (gradient 0) for the scale floor and the std clamp."""
    w = jnp.full((1, 4), 1e-5)  # mean|W| == 1e-5 exactly
    g = jax.grad(lambda x: jnp.sum(fg.absmean_scale(x)))(w)
    assert not np.asarray(g).any()
    p = {"dense0": {"kernel": jnp.zeros((1, 64)), "bias": jnp.zeros(64)},
         "dense1": {"kernel": jnp.zeros((64, 2)), "bias": jnp.zeros(2)}}  # exp(0) = 1.0 = max
    gb = jax.grad(lambda q: jnp.sum(fg.action_model(q, jnp.ones((1, 1)), 1)[1]))(p)
    assert float(gb["dense1"]["bias"][1]) == 0.0


def test_traps_8_11_14_ensemble_std_layernorm_logprob():
    preds = jnp.asarray([[[1.0]], [[2.0]], [[4.0]]])
    np.testing.assert_allclose(fg.ensemble_stats(preds)[1], [[np.std([1, 2, 4], ddof=1)]])
    h = jnp.asarray([[1.0, 2.0, 3.0, 10.0]])
    ln = torch.nn.LayerNorm(4)
    np.testing.assert_allclose(fg.layer_norm({"scale": jnp.ones(4), "bias": jnp.zeros(4)}, h),
                               ln(torch.tensor([[1.0, 2.0, 3.0, 10.0]])).detach(), atol=1e-6)
    rng = np.random.default_rng(1)
    p = {"dense0": {"kernel": jnp.asarray(rng.standard_normal((2, 64)), jnp.float32),
                    "bias": jnp.zeros(64)},
         "dense1": {"kernel": jnp.asarray(rng.standard_normal((64, 4)) * 0.1, jnp.float32),
                    "bias": jnp.zeros(4)}}
    s, a = jnp.asarray([[0.3, -0.2]]), jnp.asarray([[0.5, -0.9]])
    mu, std = fg.action_model(p, s, 2)
    manual = (-(a - mu) ** 2 / (2 * std ** 2) - jnp.log(std) - 0.9189385332046727).sum(-1)
    np.testing.assert_allclose(fg.log_prob(p, s, a, 2), manual, rtol=1e-6)


def test_traps_9_10_adamw_and_clip_match_torch():
    rng = np.random.default_rng(2)
    w0 = rng.standard_normal((3, 4)).astype(np.float32)
    grads = [(rng.standard_normal((3, 4)) * 3).astype(np.float32) for _ in range(3)]
    pt = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    opt = torch.optim.AdamW([pt], lr=1e-2)  # torch defaults: weight_decay 0.01
    run = mg.GaiaRun(lr=1e-2)
    tx = fg.group_optimizer(1e-2, run, lambda t: [t])
    pj = jnp.asarray(w0)
    sj = tx.init(pj)
    for g in grads:
        pt.grad = torch.from_numpy(g.copy())
        torch.nn.utils.clip_grad_norm_([pt], 1.0)
        opt.step()
        u, sj = tx.update(jnp.asarray(g), sj, pj)
        pj = optax.apply_updates(pj, u)
    np.testing.assert_allclose(pj, pt.detach().numpy(), atol=2e-7)
    assert int(sj[1][0].count) == 3  # the moments sit at opt_state[1][0]
    np.testing.assert_allclose(sj[1][0].mu, opt.state[pt]["exp_avg"], rtol=1e-5)


def test_trap13_gate_keeps_am_params_and_optimizer_state():
    ag = _agent(CFG, RUN, mg.canonical_init(CFG, 0))
    tx = fg.make_optimizer(RUN)
    learn = jax.jit(functools.partial(fg.learn, cfg=CFG, tx=tx))
    s, a = jnp.full((1, 1), 0.1), jnp.full((1, 1), 0.3)
    p1, st1, o1, lo = learn(ag.params, ag.state, ag.consts, ag.opt_state, s, a,
                            jnp.full((1, 1), 0.5))
    assert not bool(lo.policy_updated) and float(lo.policy_loss) == 0.0
    for x, y in zip(jax.tree_util.tree_leaves((p1["am"], o1["am"])),
                    jax.tree_util.tree_leaves((ag.params["am"], ag.opt_state["am"])),
                    strict=True):
        np.testing.assert_array_equal(x, y)
    assert int(o1["wm"][1][0].count) == 1 and int(o1["am"][1][0].count) == 0
    p2, _, o2, lo = learn(p1, st1, ag.consts, o1, jnp.full((1, 1), 0.5), a, s)
    assert bool(lo.policy_updated) and int(o2["am"][1][0].count) == 1
    assert not np.array_equal(p2["am"]["dense0"]["kernel"], p1["am"]["dense0"]["kernel"])


def test_trap17_inverse_cdf_matches_host_and_flags_ties():
    probs = jnp.asarray([0.25, 0.25, 0.5])
    for u in (0.0, 0.3, 0.5, 0.9999999, 1.0):
        idx, tie = fg.inverse_cdf(probs, jnp.float32(u))
        assert (int(idx), bool(tie)) == mg.inverse_cdf(np.asarray(probs), u)


def test_vmap_over_agents_equals_sequential():
    """64 agents in the benchmark; 3 here: vmapped rollout == one rollout per agent."""
    n, T = 3, 4
    agents = [_agent(CFG, RUN, mg.canonical_init(CFG, k)) for k in range(n)]
    noises = [_noise(CFG, 100 + k, T) for k in range(n)]
    batched = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *agents)
    nb = jax.tree_util.tree_map(lambda *x: jnp.stack(x), *noises)
    _, sv, outv = fg.jit_rollout(CFG, RUN, vmapped=True)(batched, jnp.zeros((n, 1, 1)), nb)
    for k in range(n):
        ag = _agent(CFG, RUN, mg.canonical_init(CFG, k))
        _, s, out = fg.jit_rollout(CFG, RUN)(ag, jnp.zeros((1, 1)), noises[k])
        np.testing.assert_array_equal(outv.idx[k], out.idx)
        np.testing.assert_allclose(sv[k], s, atol=1e-6)
        np.testing.assert_allclose(outv.learn.wm_loss[k], out.learn.wm_loss, rtol=1e-5)


def test_native_noise_shapes():
    n = fg.native_noise(jax.random.key(0), 5, CFG)
    assert n.eps.shape == (5, 6, 1) and n.u.shape == (5,) and n.xi.shape == (5, 1, 1)
    assert n.eps.dtype == jnp.float32


def test_v4_hierarchy_holds_state_between_processing_steps():
    """§2.6: on a non-processing step the level's rep and its layer state stay untouched."""
    W = jnp.asarray(np.random.default_rng(0).standard_normal((3, 2)))
    spec = fv.LevelSpec((fv.LayerSpec("hebbian"),), resolution=3)
    st = fv.level_init([fv.hebbian_init(W)], 3, W.dtype)
    X = jnp.asarray(np.random.default_rng(1).standard_normal((7, 2)), jnp.float32)
    reps, states, energy = fv.hierarchy_scan((spec,), [st], X)
    r = np.asarray(reps[0])
    np.testing.assert_array_equal(r[1], r[0])
    np.testing.assert_array_equal(r[2], r[0])
    assert not np.array_equal(r[3], r[0])
    assert int(states[0]["layers"][0]["hist_len"]) == 3  # t = 0, 3, 6
    np.testing.assert_allclose(energy[0], (r ** 2).sum((1, 2)), rtol=1e-6)


@pytest.mark.parametrize("rule", fv.RULES)
def test_v4_hebbian_update_x64_matches_numpy(rule):
    from twinframe.torch_ref import gaia_v4 as tv

    with jax.enable_x64(True):
        rs = np.random.RandomState(3)
        h = tv.HebbianCore(4, 3, rule, rng=rs)
        st, hp = fv.hebbian_init(jnp.asarray(h.weights)), fv.hebbian_hparams(jnp.float64)
        for _ in range(3):
            x = rs.randn(5, 4)
            h.forward(x)
            h.update()
            _, st = fv.hebbian_forward(st, jnp.asarray(x))
            st, hp = fv.hebbian_update(st, hp, rule)
        np.testing.assert_allclose(st["W"], h.weights, rtol=1e-12)
        np.testing.assert_allclose(hp["bcm_theta"], h.hparams["bcm_theta"], rtol=1e-12)
    assert jnp.ones(1).dtype == jnp.float32  # x64 restored after the context
