"""AIME-core parity (aime.md §7): L0 primitives and golden values, L1 module forwards on
`tiny`, and L2-L5 from the whole training step on `micro` (the one whole-step compilation of
the session, shared with the engines and the contract suite)."""

from __future__ import annotations

import pytest

from twinframe import registry
from twinframe.parity import aime as p_aime
from twinframe.parity import checks
from twinframe.parity.compare import score


def _failing(records) -> list[str]:
    return [f"{r.level} {r.name}: max|d| {r.max_abs:.2e} rel {r.max_rel:.2e} ({r.tolerance}) "
            f"{r.note}" for r in records if not r.passed]


def _scored(comps):
    return [score("aime", c) for c in comps]


@pytest.fixture(autouse=True)
def _torch_threads():
    """The run config's torch thread count (the engines and `levels()` use it too)."""
    from twinframe.models.aime import AIMERun
    from twinframe.torch_ref.aime.prims import torch_threads

    with torch_threads(AIMERun().torch_threads):
        yield


@pytest.fixture(scope="session")
def aime_spec():
    checks.configure_jax_for_parity()
    return registry.get("aime")


@pytest.fixture(scope="session")
def whole_step(aime_spec):
    """One training step of both frameworks from the canonical init (micro)."""
    cfg, run = aime_spec.config("micro"), aime_spec.run_config("micro")
    return _scored(p_aime.level_step(cfg, run))


def test_l0_golden_values(aime_spec):
    """Every golden value of aime.md §8 and §6.3, in both frameworks: 5 Kumaraswamy inverse-CDF
    triples, 7 Kumaraswamy->Beta KLs, 3 Gamma KLs, 2 stick-breakings, 2 MDL NLLs, Softplus(+-1)
    and 8 RGB outputs = 28 values x 2 (the data checksums of §5.1 are in tests/tasks, the robust
    init-loss checks of §8 in the whole-step levels)."""
    recs = _scored(p_aime.level_l0_goldens(aime_spec.run_config("tiny")))
    assert len(recs) == 56
    assert {r.name.rsplit(".", 1)[1] for r in recs} == {"torch", "jax"}
    assert not _failing(recs)


def test_l0_primitives(aime_spec):
    recs = _scored(p_aime.level_l0_primitives(aime_spec.config("tiny")))
    assert any("conv_transpose3d(temporal=False)" in r.name for r in recs)
    assert not _failing(recs)


def test_l1_module_forwards_tiny(aime_spec):
    cfg, run = aime_spec.config("tiny"), aime_spec.run_config("tiny")
    recs = _scored(p_aime.level_l1(cfg, run))
    names = {r.name for r in recs}
    assert {"context.context", "decoder.mdl", "posterior.map", "dpgmm.pi",
            "attention_prior.map", "lstm.h"} <= names
    assert not _failing(recs)


def test_l4_adamw_groups_and_rgb_on_identical_inputs(aime_spec):
    cfg, run = aime_spec.config("micro"), aime_spec.run_config("micro")
    recs = _scored(p_aime.level_l4_optim(cfg, run))
    assert not _failing(recs)


@pytest.mark.parametrize("level", ["L1", "L2", "L3", "L4"])
def test_whole_step_levels(whole_step, level):
    recs = [r for r in whole_step if r.level == level]
    assert recs
    assert not _failing(recs)


def test_robust_init_checks_in_both_frameworks(whole_step):
    got = {r.name for r in whole_step if r.name.startswith("init.")}
    assert got == {f"init.{k}.{fw}" for k, _, _ in p_aime.INIT_CHECKS for fw in ("torch", "jax")}


def test_l2_covers_every_reached_leaf_of_every_task(aime_spec, whole_step):
    cfg = aime_spec.config("micro")
    from twinframe.models.aime import NEVER_REACHED, trained_keys

    reached = [k for k in trained_keys(cfg) if k not in NEVER_REACHED]
    for task in ("elbo", "perceiver", "predictive"):
        got = {r.name for r in whole_step if r.name.startswith(f"grad.{task}.")}
        assert {f"grad.{task}.{k}" for k in reached} <= got


def test_l5_lockstep_curve_micro(aime_spec, whole_step):
    cfg, run = aime_spec.config("micro"), aime_spec.run_config("micro")
    res = checks.run_curve(aime_spec, cfg, run, 20)
    assert not _failing(res.records)


def test_rgb_task_count_mismatch_is_a_one_line_error():
    """RGB for n tasks given gradients of another count (e.g. an NNX face's three task
    gradients with an `rgb_zero_adv_task` run's four-task optimizer): TwinframeError."""
    import jax.numpy as jnp

    from twinframe.errors import TwinframeError
    from twinframe.functional.rgb import rgb

    tx = rgb(4)
    params = {"w": jnp.zeros((2, 3))}
    state = tx.init(params)
    tx.update({"w": jnp.ones((4, 2, 3))}, state, params)  # the right count works
    with pytest.raises(TwinframeError, match="RGB balances 4 task gradients.*got leading axes"
                                             r" \[3\]"):
        tx.update({"w": jnp.ones((3, 2, 3))}, state, params)
