"""HRM parity levels at the tiny config, and proof that the checks can fail."""

import dataclasses

import numpy as np
import pytest

from twinframe import registry
from twinframe.parity import checks
from twinframe.parity.compare import score


@pytest.fixture(scope="module")
def records():
    spec = registry.get("hrm")
    return checks.run(spec, spec.config("tiny"), spec.run_config("tiny"))


def test_every_level_present_and_passing(records):
    levels = {r.level for r in records}
    assert levels == {"L0", "L1", "L2", "L3", "L4", "L6"}
    bf16 = [r for r in records if ".bf16." in f".{r.name}"]
    assert len(bf16) == 6 and all(r.passed for r in bf16)
    full = [r for r in records if r.name.startswith("full.segment")]
    assert len(full) == 15 and all(r.tolerance.startswith("|d|<=5e-05") for r in full)
    failed = [(r.name, r.max_abs, r.tolerance) for r in records if not r.passed]
    assert not failed


def test_every_trainable_leaf_has_a_gradient_check(records):
    grads = {r.name for r in records if r.level == "L2" and r.name.startswith("grad.")}
    assert len(grads) == 9 + 8 * 2 - 4  # all keys minus rope cos/sin and the initial states
    zero_bias = {r.name for r in records if r.level == "L2" and r.name.startswith("q-bias0.")}
    assert "q-bias0.grad.q_act_head.bias" in zero_bias


def test_roundtrip_is_bit_exact(records):
    rt = [r for r in records if r.level == "L6"]
    assert len(rt) == 25 and all(r.max_abs == 0 for r in rt)


def test_a_wrong_model_fails_l1():
    """Swap q and k heads in JAX: a plausible porting bug must be caught at L1."""
    from twinframe.models.hrm import TINY
    from twinframe.parity import hrm as ph

    orig = ph._twins

    def broken(cfg, state=None, seed=0):
        tw = orig(cfg, state, seed)
        k = tw.params["low_level_reasoner"]["layers"][0]["self_attn"]["qkv_proj"]["kernel"]
        H = cfg.hidden_size
        k = np.concatenate([k[:, H:2 * H], k[:, :H], k[:, 2 * H:]], axis=1)
        tw.params["low_level_reasoner"]["layers"][0]["self_attn"]["qkv_proj"]["kernel"] = k
        return tw

    ph._twins = broken
    try:
        comps = ph.level_l1(TINY, segments=(1,))
    finally:
        ph._twins = orig
    assert not all(score("hrm", c).passed for c in comps)


def test_tolerance_kinds_can_fail():
    from twinframe.parity.compare import Comparison

    ref = np.ones(4, np.float32)
    bad = ref + 1e-3
    c = Comparison("L1", "x", ref, bad, "L1.forward")
    assert not score("hrm", c).passed
    assert score("hrm", dataclasses.replace(c, candidate=ref)).passed
    b = Comparison("L3", "b", np.array([True, False]), np.array([True, True]), "L3.decision")
    assert not score("hrm", b).passed
