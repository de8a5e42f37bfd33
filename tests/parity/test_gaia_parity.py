"""GAIA parity levels (spec gaia.md §4.2) at the tiny sizes: every level passes (P1-P7, P9,
P10, L6); the S = 3, A = 2 variant (coupling matrix M) through the agent levels; the §1.11
agent files; a JAX port with the policy gate reversed fails P6."""

import dataclasses

import numpy as np
import pytest

from twinframe import registry
from twinframe.functional import gaia as fg
from twinframe.parity import checks, gaia, gaia_io
from twinframe.parity.compare import score
from twinframe.training.runner import Trainer


def _run(preset, only=None):
    spec = registry.get("gaia")
    recs = checks.run(spec, spec.config(preset), spec.run_config(preset), only=only)
    bad = [(r.level, r.name, r.max_abs, r.note) for r in recs if not r.passed]
    assert recs and not bad, bad
    return recs


def test_every_level_passes_at_tiny():
    recs = _run("tiny")
    levels = {r.level for r in recs}
    assert levels == {"P1", "P2", "P3", "P4", "P5", "P6", "P7", "P9", "P10", "L6"}
    p3 = [r for r in recs if r.level == "P3"]
    assert all("homeostasis active" in r.note for r in p3)
    p10 = {r.name for r in recs if r.level == "P10"}
    assert {"x64.N4.level2.reps", "f32.N8.theta", "x64.N6.theta"} <= p10


def test_agent_levels_with_coupling_matrix():
    _run("tiny_m", only={"P4", "P6", "P7"})


def test_without_metrics_no_history_leaves():
    spec = registry.get("gaia")
    cfg = spec.config("tiny_nometrics")
    assert not any("history" in r.torch_key or "counter" in r.torch_key
                   for r in spec.layout(cfg).table.rows)
    _run("tiny_nometrics", only={"P2", "P6"})


def test_reversed_policy_gate_fails_p6(monkeypatch):
    real = fg.learn

    def wrong(params, state, consts, opt_state, s, a, s_next, cfg, tx):
        return real(params, state, consts, opt_state, s_next, a, s, cfg, tx)  # I -> -I

    monkeypatch.setattr(fg, "learn", wrong)
    gaia._jit_learn.cache_clear()
    try:
        spec = registry.get("gaia")
        comps = gaia.level_p6(spec.config("tiny"), spec.run_config("tiny"))
        assert not all(score("gaia", c).passed for c in comps)
    finally:
        gaia._jit_learn.cache_clear()


@pytest.mark.parametrize("fw", ["torch", "jax"])
def test_agent_files_roundtrip_with_lazy_act_opt(fw, tmp_path):
    """§1.11 files: an act_opt that never stepped writes no am_opt keys and reads back as
    count 0 / zero moments; after a policy step it is there, bit for bit."""
    spec = registry.get("gaia")
    cfg, run = spec.config("tiny"), spec.run_config("tiny")
    tr = Trainer(spec, cfg, run, fw)
    try:
        st0 = tr.export_state()
        tensors = gaia_io.to_agent_file(st0, cfg)
        assert not any(k.startswith(("wm_opt.", "am_opt.")) for k in tensors)
        assert tensors["wm.models.0.l1.step_counter"].dtype == np.int64
        while not any(tr.train_step()["policy_updated"] for _ in range(1)):
            pass
        st = tr.export_state()
    finally:
        tr.close()
    tensors = gaia_io.to_agent_file(st, cfg, {"wm_loss": [0.5, 0.25]})
    assert "am_opt.3.step" in tensors and "wm_opt.23.exp_avg_sq" in tensors
    gaia_io.write_torch(tmp_path / "a.safetensors", st, cfg, {"wm_loss": [0.5]})
    back, cfg2 = gaia_io.read_torch(tmp_path / "a.safetensors")
    assert cfg2 == cfg and back["metrics"] == {"wm_loss": [0.5]}
    again = gaia_io.roundtrip(st, cfg, tmp_path)
    for k, (a, b) in gaia_io.leaf_pairs(st, again).items():
        assert np.array_equal(a, b), k


def test_p7_reference_closed_loop_first_steps():
    """§4.4 setup (torch seed 0, noise_seed 123, default cfg), shortened to 6 steps here (the
    50-step P7 runs in `twinframe check gaia --config default --levels P7`)."""
    spec = registry.get("gaia")
    cfg, run = spec.config("default"), spec.run_config("default")
    comps = gaia.level_p7(cfg, run, steps=6)
    bad = [c.name for c in comps if not score("gaia", c).passed]
    assert not bad, bad


def test_curve_metrics_are_declared():
    spec = registry.get("gaia")
    assert dataclasses.asdict(spec.curve)["mismatch_label"] == "action_mismatches"
