"""GAIA v3.1 torch_ref against the reference figures (spec gaia.md §5.4 G1, G1c, G2, G3: P12)
and the torch side of the §4.3 traps (1-4, 6, 13, 14)."""

import numpy as np
import pytest
import torch

from twinframe.models import gaia as mg
from twinframe.torch_ref import gaia as tg

RTOL = 1e-6  # §5.4: G1, G1c, G3 at rtol 1e-6 (torch_ref)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Batch-1 agent steps: one intra-op thread (restored after this module)."""
    with tg.torch_threads(1):
        yield


def _g1_layer(L=8):
    cfg = mg.GaiaConfig(trace_history_len=L)
    g = torch.Generator().manual_seed(0)
    layer = tg.DiagnosticPlasticLinear(3, 4, cfg)
    with torch.no_grad():
        layer.weight.copy_(tg.plastic_weight(4, 3, g))
        for b in layer.buffers():
            b.zero_()
    return cfg, g, layer


def test_g1_single_plastic_layer():
    cfg, g, layer = _g1_layer()
    np.testing.assert_allclose(layer.weight[0].detach().numpy(),
                               [0.030819921, -0.005868578, -0.043575786], rtol=RTOL)
    q = tg.bitnet_quantize(layer.weight).detach().numpy()
    np.testing.assert_allclose(q, [[0.02675476, -0, -0.02675476],
                                   [0.02034366, -0.02034366, -0.02034366],
                                   [0.01307087, 0.01307087, -0.01307087],
                                   [-0.00788010, -0.00788010, 0]], rtol=RTOL, atol=1e-8)
    xs = torch.randn(12, 5, 3, generator=g) * 20
    ys = [layer(xs[t]) for t in range(12)]
    np.testing.assert_allclose(ys[0][0].detach().numpy(),
                               [-0.52201951, -0.33276176, -0.29625815, -0.04891714], rtol=RTOL)
    np.testing.assert_allclose(ys[-1].sum().item(), 4.60757589, rtol=RTOL)
    np.testing.assert_allclose(layer.fast_trace.norm().item(), 5.0, rtol=RTOL)
    np.testing.assert_allclose(layer.slow_trace.norm().item(), 0.41215226, rtol=RTOL)
    assert int(layer.step_counter) == 12
    np.testing.assert_allclose(layer.trace_norm_history.numpy(), [
        14.764032, 8.387664, 6.832857, 7.488846, 9.788650, 11.840093, 5.874995, 12.045330],
        rtol=RTOL)
    np.testing.assert_allclose(layer.update_magnitude_history.numpy(), [
        227.24080, 87.06466, 62.12062, 74.11555, 112.02679, 152.85051, 39.89079, 163.64754],
        rtol=RTOL)
    # G1c: a second layer (its init draw consumed, then overwritten with W0), plasticity off.
    w0 = layer.weight.detach().clone()
    l2 = tg.DiagnosticPlasticLinear(3, 4, cfg)
    with torch.no_grad():
        l2.weight.copy_(tg.plastic_weight(4, 3, g))
        l2.weight.copy_(w0)
        for b in l2.buffers():
            b.zero_()
    l2.plasticity_enabled = False
    x = torch.randn(5, 3, generator=g)
    (l2(x) ** 2).sum().backward()
    grad = l2.weight.grad.numpy()
    np.testing.assert_allclose(np.abs(grad), np.repeat(
        np.array([[0.0371051], [0.0331941], [0.1010543], [0.0727268]]), 3, 1), rtol=2e-6)
    np.testing.assert_array_equal(np.sign(grad), [[1, -1, -1], [1, -1, -1], [1, 1, -1],
                                                  [-1, -1, 1]])
    assert int(l2.step_counter) == 0  # plasticity off: no update, no counter


def test_quantizer_gradient_closed_form():
    """§1.2: dL/dW_ik = sign(W_ik)/n * sum_j G_ij q_ij; a floored row gets 0."""
    g = torch.Generator().manual_seed(1)
    w = (torch.randn(5, 7, generator=g) * 0.02).requires_grad_()
    with torch.no_grad():
        w[4] = 1e-7  # mean|W| < 1e-5: floor active
    G = torch.randn(5, 7, generator=g)
    (tg.bitnet_quantize(w) * G).sum().backward()
    s = w.detach().abs().mean(1, keepdim=True).clamp(min=1e-5)
    q = torch.round(w.detach() / s).clamp(-1, 1)
    closed = torch.sign(w.detach()) / 7 * (G * q).sum(1, keepdim=True)
    closed[4] = 0
    np.testing.assert_allclose(w.grad.numpy(), closed.numpy(), rtol=1e-6, atol=1e-12)


def test_g2_first_steps_faithful_loop():
    """G2 with the reference's draws: its first 3 steps (rtol 1e-5); the 200-step facts that do
    not depend on rounding are in the next test."""
    cfg = mg.DEFAULT
    agent = tg.GaiaAgent(cfg)
    g = torch.Generator().manual_seed(0)
    tg.faithful_init(agent.module, g)
    tg.run_validation(agent, 3, generator=g)
    np.testing.assert_allclose(agent.metrics["wm_loss"], [0.22792356, 0.46698889, 0.26339778],
                               rtol=1e-5)
    np.testing.assert_allclose(agent.metrics["epistemic_uncertainty"],
                               [0.42305332, 0.75649095, 0.57334751], rtol=1e-5)
    np.testing.assert_allclose(agent.metrics["policy_improvement"],
                               [-0.06854206, -0.01117621, -0.00324318], rtol=1e-5)
    assert int(agent.module.wm.models[0].l1.step_counter) == 6  # trap 1: 2 updates per step


G2_FINAL = {"l1_fast_trace_norm": 0.00480065, "l1_slow_trace_norm": 0.00830070,
            "l1_mean_trace_norm": 0.01523854, "l1_mean_update_mag": 0.02370369,
            "l1_weight_static_norm": 0.26614025, "l2_fast_trace_norm": 4.99999952,
            "l2_slow_trace_norm": 4.58530331, "l2_mean_trace_norm": 4.95398664,
            "l2_mean_update_mag": 13.51299286, "l2_weight_static_norm": 1.35456014}


def test_g2_full_run():
    agent = tg.GaiaAgent(mg.DEFAULT)
    g = torch.Generator().manual_seed(0)
    tg.faithful_init(agent.module, g)
    out = tg.run_validation(agent, 200, generator=g)
    assert int(agent.module.wm.models[0].l1.step_counter) == 400
    assert agent.metrics["wm_loss"][199] < 0.02
    for k, v in G2_FINAL.items():
        assert np.isfinite(out["diagnostics"][k]) and abs(out["diagnostics"][k] / v - 1) < 0.05
    assert out["stable"]


G3_IDX = [27, 14, 22, 16, 12, 16, 5, 26, 11, 0]
G3_LOSS = [0.924740, 0.854945, 0.381910, 0.275387, 0.130897, 0.273277, 0.695120, 1.841532,
           2.517550, 4.144808]
G3_S = [0.8537602, 0.8261037, 0.2249056, 0.1064594, 0.0174528, -0.1991910, -0.8145324,
        -1.0049989, -1.4686055, -1.8108824]


def test_g3_parity_mode_loop():
    agent = tg.GaiaAgent(mg.DEFAULT, state=tg.faithful_state(mg.DEFAULT, 0))
    out = tg.run_validation(agent, 10, noise=mg.NoiseStream(mg.DEFAULT, 123))
    assert out["idx"] == G3_IDX and not any(out["ties"])
    np.testing.assert_allclose(agent.metrics["wm_loss"], G3_LOSS, rtol=1e-6, atol=5e-7)  # 6 dp
    np.testing.assert_allclose(out["states"][:, 0], G3_S, rtol=1e-6, atol=1e-7)


def test_traps_trace_update_order_and_homeostasis():
    """Traps 2-4: y uses the old traces; relu only inside the update; homeostasis strict >,
    factor tau/(nu + 1e-6), history holds the pre-rescale norm and ||delta|| before lr."""
    cfg = mg.GaiaConfig(trace_history_len=3, homeostatic_target=0.3)
    layer = tg.DiagnosticPlasticLinear(2, 3, cfg)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.1, -0.2], [0.3, 0.05], [-0.1, -0.1]]))
        for b in layer.buffers():
            b.zero_()
        layer.fast_trace.fill_(0.2)
    x = torch.tensor([[1.0, 2.0], [-3.0, 0.5]])
    f_old, s_old = layer.fast_trace.clone(), layer.slow_trace.clone()
    y = layer(x)
    w_eff = tg.bitnet_quantize(layer.weight) + 0.1 * f_old + 0.05 * s_old
    torch.testing.assert_close(y, x @ w_eff.T, rtol=0, atol=1e-7)
    delta = torch.relu(y).T @ x / 2
    f = 0.95 * f_old + 0.05 * delta
    nu = f.norm()
    assert nu > 0.3
    torch.testing.assert_close(layer.fast_trace, f * (0.3 / (nu + 1e-6)))
    torch.testing.assert_close(layer.slow_trace, 0.01 * layer.fast_trace)
    torch.testing.assert_close(layer.trace_norm_history[0], nu)
    torch.testing.assert_close(layer.update_magnitude_history[0], delta.norm())
    for _ in range(3):
        layer(x)
    assert int(layer.step_counter) == 4 and layer.trace_norm_history[0] != nu  # slot 4 mod 3 = 1
    with pytest.raises(ValueError, match="2-D"):
        layer(torch.zeros(2))


def test_policy_gate_leaves_am_optimizer_untouched():
    """Trap 13: I <= 0 -> no policy step (no act_opt state at all, torch's lazy creation);
    trap 14: log pi at the squashed action, w a constant."""
    cfg, run = mg.TINY, mg.GaiaRun()
    agent = tg.GaiaAgent(cfg, run)
    s = torch.zeros(1, 1)
    before = {k: v.clone() for k, v in agent.module.am.state_dict().items()}
    out = agent.learn(s, torch.full((1, 1), 0.3), torch.full((1, 1), 0.5))  # I = -0.25
    assert not out.policy_updated and len(agent.act_opt.state) == 0
    assert all(torch.equal(before[k], v) for k, v in agent.module.am.state_dict().items())
    out = agent.learn(torch.full((1, 1), 0.5), torch.full((1, 1), 0.3), s)  # I = 0.25
    assert out.policy_updated and len(agent.act_opt.state) == 4
    mu, std = agent.module.am(torch.full((1, 1), 0.5))
    lp = agent.module.am.log_prob(torch.full((1, 1), 0.5), torch.full((1, 1), 0.3))
    manual = -(0.3 - mu) ** 2 / (2 * std ** 2) - std.log() - 0.9189385332046727
    torch.testing.assert_close(lp, manual.sum(-1))


def test_faithful_init_leaves_global_rng_alone():
    torch.manual_seed(5)
    a = torch.rand(3)
    torch.manual_seed(5)
    tg.faithful_state(mg.TINY, 0)
    tg.GaiaAgentModule(mg.TINY)
    assert torch.equal(torch.rand(3), a)


def test_reference_world_model_state_dict_loads_with_counters():
    """§1.11: a reference wm.state_dict (80 keys for E = 5, no counters) loads with
    strict=False; counters come from the reference object's attributes, else 0."""
    src = tg.GaiaAgentModule(mg.DEFAULT, mg.canonical_init(mg.DEFAULT, 3))
    ref = {k: v.numpy() for k, v in src.wm.state_dict().items() if "step_counter" not in k}
    assert len(ref) == 80
    dst = tg.GaiaAgentModule(mg.DEFAULT, mg.canonical_init(mg.DEFAULT, 0))
    tg.load_reference_wm(dst, ref, {"models.0.l1.step_counter": 7})
    assert int(dst.wm.models[0].l1.step_counter) == 7 and int(dst.wm.models[1].l2.step_counter) == 0
    assert torch.equal(dst.wm.models[4].l2.weight, src.wm.models[4].l2.weight)
    with pytest.raises(KeyError):
        tg.load_reference_wm(dst, {"models.0.l1.weight": ref["models.0.l1.weight"]})
