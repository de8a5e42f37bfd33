"""Primitives against hand-computed values and the spec's golden numbers (both frameworks)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from twinframe.functional import layers as fl
from twinframe.models.hrm import PRESETS, TINY
from twinframe.parity.hrm import _act_step_both, _twins
from twinframe.torch_ref import layers as tl


def test_rms_norm_hand_computed():
    x = np.array([[3.0, 4.0]], np.float32)
    expected = x / math.sqrt((9 + 16) / 2 + 1e-5)
    np.testing.assert_allclose(tl.rms_norm(torch.from_numpy(x), 1e-5).numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(fl.rms_norm(jnp.asarray(x), 1e-5)), expected, rtol=1e-6)


def test_rope_rotate_half_convention():
    # d = 4: lanes (0, 2) and (1, 3) rotate together (half split, not interleaved)
    x = np.array([1.0, 2.0, 3.0, 4.0], np.float32).reshape(1, 1, 1, 4)
    ang = np.array([0.5, 0.25, 0.5, 0.25], np.float32)
    cos, sin = np.cos(ang).reshape(1, 1, 4), np.sin(ang).reshape(1, 1, 4)
    c, s = math.cos(0.5), math.sin(0.5)
    want0 = 1.0 * c - 3.0 * s
    want2 = 3.0 * c + 1.0 * s
    for out in (
        tl.apply_rope(torch.from_numpy(x), torch.from_numpy(cos), torch.from_numpy(sin)).numpy(),
        np.asarray(fl.apply_rope(jnp.asarray(x), jnp.asarray(cos), jnp.asarray(sin))),
    ):
        assert out[0, 0, 0, 0] == pytest.approx(want0, abs=1e-6)
        assert out[0, 0, 0, 2] == pytest.approx(want2, abs=1e-6)


def test_swiglu_hand_computed():
    # H=1, I=1: gate_up kernel [1, 2] = (g, u) weights, down [1, 1]
    x = np.array([[2.0]], np.float32)
    p = {"gate_up_proj": {"kernel": jnp.array([[0.5, 3.0]])},
         "down_proj": {"kernel": jnp.array([[2.0]])}}
    g, u = 1.0, 6.0
    want = (g / (1 + math.exp(-g))) * u * 2.0
    assert float(fl.swiglu(p, jnp.asarray(x))[0, 0]) == pytest.approx(want, rel=1e-6)
    m = tl.SwiGLU(1, 1)
    m.gate_up_proj.weight.data = torch.tensor([[0.5], [3.0]])
    m.down_proj.weight.data = torch.tensor([[2.0]])
    with torch.no_grad():
        assert float(m(torch.from_numpy(x))[0, 0]) == pytest.approx(want, rel=1e-6)


def test_bce_formula():
    l, t = np.array([-5.0, 0.0, 3.0], np.float32), np.array([0.0, 1.0, 0.25], np.float32)
    want = [math.log1p(math.exp(v)) - v * w for v, w in zip(l, t, strict=True)]
    got_t = tl.binary_cross_entropy_with_logits(torch.from_numpy(l), torch.from_numpy(t)).numpy()
    got_j = np.asarray(fl.binary_cross_entropy_with_logits(jnp.asarray(l), jnp.asarray(t)))
    np.testing.assert_allclose(got_t, want, rtol=1e-6)
    np.testing.assert_allclose(got_j, want, rtol=1e-6)


@pytest.mark.parametrize("t", [0.0, 0.3, 1.0])
def test_bce_gradient_at_zero_logit(t):
    """hrm.md §6.2 / trap 13: dBCE/dl = sigmoid(l) - t at l = 0 exactly, i.e. 0.5 - t."""
    l_t = torch.zeros(3, requires_grad=True)
    tl.binary_cross_entropy_with_logits(l_t, torch.full((3,), t)).sum().backward()
    g_j = jax.grad(lambda x: fl.binary_cross_entropy_with_logits(x, jnp.full(3, t)).sum())(
        jnp.zeros(3))
    want = np.full(3, np.float32(0.5) - np.float32(t))
    np.testing.assert_array_equal(l_t.grad.numpy(), want)
    np.testing.assert_array_equal(np.asarray(g_j), want)


def test_golden_q_loss_and_step1_numbers():
    """hrm.md §6.2: L_q = 0.02344748 at init, q_halt_acc = 1, cell acc ~0.55 at stage 0."""
    tw = _twins(TINY)
    out_t, (_, out_j, _) = _act_step_both(TINY, PRESETS["tiny"][1], tw)
    golden = 0.5 * (math.log1p(math.exp(-5)) + 5 / (1 + math.exp(5)) + math.log1p(math.exp(-5)))
    assert golden == pytest.approx(0.02344748, abs=5e-9)
    for m in (out_t.metrics, out_j.metrics):
        assert float(m["q_act_loss"]) == pytest.approx(0.02344748, rel=1e-5)
        assert float(m["q_halt_acc"]) == 1.0
        assert 0.45 < float(m["cell_acc_with_givens"]) < 0.65
    # nothing q-halts at init (q_h == q_c exactly) and M=4 is not reached at step 1
    assert not out_t.halted.any() and not np.asarray(out_j.halted).any()


def test_mlx_adamw_first_step():
    """hrm.md §6.3: p1 = p0(1 - 1e-6) - 1e-4*0.1g/(sqrt(0.05)|g| + 1e-8) ~ p0 - 4.472e-5 sign(g)."""
    from twinframe.torch_ref.optim import MLXAdamW

    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    p.grad = torch.tensor([0.3, -0.7])
    MLXAdamW([p]).step()
    want = np.array([1.0, -2.0]) * (1 - 1e-6) - 4.472136e-5 * np.array([1, -1])
    np.testing.assert_allclose(p.detach().numpy(), want, rtol=1e-6)
