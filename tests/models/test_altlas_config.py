"""AltLAS framework-neutral part (altlas.md §3.3, §4.1, §4.3, §6, §10): config validation,
presets, host-side noise and learner bookkeeping."""

from __future__ import annotations

import math

import numpy as np
import pytest

from twinframe.errors import ConfigError
from twinframe.models import altlas as m_alt
from twinframe.models.altlas import EOS_ID, PRESETS, AltLASConfig, AltLASRun


def test_defaults_are_r1_model_and_optimizer():
    c, r = AltLASConfig(), AltLASRun()
    assert (c.vocab, c.vocab_size, c.embed_dim, c.hidden_dim, c.num_layers, c.cell) == (
        "v1_63", 63, 64, 128, 1, "lstm")
    assert (r.lr, r.entropy_coef, r.grad_clip_norm, r.baseline_ema_alpha, c.max_gen_len) == (
        1e-3, 0.01, 1.0, 0.1, 50)
    assert (r.beta1, r.beta2, r.eps, c.credit_eos, c.indent_mode) == (
        0.9, 0.999, 1e-8, True, "structural")
    r1 = PRESETS["r1"][0]
    assert (r1.credit_eos, r1.indent_mode) == (False, "literal")


def test_config_validation():
    with pytest.raises(ConfigError, match="unknown field"):
        AltLASConfig.from_dict({"hidden": 3})
    with pytest.raises(ConfigError, match="does not match vocab"):
        AltLASConfig(vocab_size=46)
    with pytest.raises(ConfigError, match="cell"):
        AltLASConfig(cell="rnn")
    with pytest.raises(ConfigError, match="stop_on"):
        AltLASRun(stop_on="converge:x")
    with pytest.raises(ConfigError, match="unknown field"):
        AltLASConfig.from_dict({"lr": 1e-3})  # run settings are not model fields
    assert AltLASRun(stop_on="converge:5").stop_on == "converge:5"
    rh, rh_run = PRESETS["rh"]
    assert AltLASConfig.from_json(rh.to_json()) == rh
    assert AltLASRun.from_json(rh_run.to_json()) == rh_run
    assert PRESETS["r0"][0].release == "R0" and rh.release == "RH"


@pytest.mark.parametrize("change", [{"dropout": 0.5}, {"initial_grammar_boost": 2.2}])
def test_untrainable_options_are_refused(change):
    """dropout (torch's global RNG vs no JAX mask) and the grammar boost reach no engine."""
    with pytest.raises(ConfigError, match="not implemented"):
        m_alt.check_trainable(AltLASConfig(**change), AltLASRun())
    m_alt.check_trainable(AltLASConfig(), AltLASRun())


def test_parity_noise_schedule():
    g = m_alt.gumbel_noise(5, 2, 2, 3, 7)
    gen = np.random.Generator(np.random.PCG64(np.random.SeedSequence([5, 2])))
    u = np.maximum(gen.uniform(size=(2, 3, 7)), np.finfo(np.float32).tiny)
    assert g.dtype == np.float32
    assert np.array_equal(g, (-np.log(-np.log(u))).astype(np.float32))
    assert not np.array_equal(g, m_alt.gumbel_noise(5, 3, 2, 3, 7))


def test_grammar_tables():
    cfg = AltLASConfig(max_gen_len=3, initial_grammar_boost=2.2, grammar_boost_decay=0.985)
    np.testing.assert_allclose(m_alt.grammar_boost_table(cfg),
                               [math.log(2.2 * 0.985**t) for t in range(3)], rtol=1e-6)
    G = m_alt.grammar_matrix(["<PAD>", "a", "b", "c"], {"a": ["b", "zz"], "q": ["a"]})
    assert G.tolist() == [[0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]


def _tokens(lengths, T=4, eos=True):
    tok = np.full((len(lengths), T), 5, np.int32)
    valid = np.arange(T)[None, :] < np.array(lengths)[:, None]
    for b, n in enumerate(lengths):
        if eos and n:
            tok[b, n - 1] = EOS_ID
        tok[b, n:] = 0
    return tok, valid


def test_prepare_update_baseline_and_weights():
    cfg, run = AltLASConfig(), AltLASRun(batch_size=3)
    tok, valid = _tokens([2, 3, 1])
    st = m_alt.LearnerState()
    upd = m_alt.prepare_update(np.array([0.5, 1.0, np.nan]), np.array([True, True, False]),
                               tok, valid, st, cfg, run)
    assert upd.weights.tolist() == [1.0, 1.0, 0.0]
    np.testing.assert_allclose(upd.advantages, [0.5, 1.0, 0.0])
    assert upd.state.baseline == pytest.approx(0.1 * 0.75)
    assert (upd.state.attempts, upd.state.successes) == (3, 1)
    upd2 = m_alt.prepare_update(np.array([0.2, 0.2, 0.2]), np.ones(3, bool), tok, valid,
                                upd.state, cfg, run)
    np.testing.assert_allclose(upd2.advantages, np.float32(0.2 - 0.075))


def test_prepare_update_no_target_skips():
    """credit_eos=false and EOS at step 0: no target, w = 0; an all-zero batch is skipped."""
    cfg, run = PRESETS["r1"]
    tok, valid = _tokens([1, 1])
    st = m_alt.LearnerState(baseline=0.3, attempts=4)
    upd = m_alt.prepare_update(np.array([0.1, 0.1]), np.ones(2, bool), tok, valid, st, cfg, run)
    assert upd.skip and upd.state.baseline == 0.3 and upd.state.attempts == 6
    assert upd.state.reward_n == 0


def test_reward_normalisation_and_annealing():
    cfg = AltLASConfig()
    run = AltLASRun(reward_normalization=True, entropy_coef=0.2, min_entropy_coef=0.05,
                    success_threshold=0.9)
    tok, valid = _tokens([2])
    st = m_alt.LearnerState()
    first = m_alt.prepare_update(np.array([0.7]), np.ones(1, bool), tok, valid, st, cfg, run)
    assert first.r_tilde[0] == 0.0  # first reward -> 0
    assert first.beta == np.float32(0.2)
    second = m_alt.prepare_update(np.array([1.0]), np.ones(1, bool), tok, valid, first.state,
                                  cfg, run)
    mu, sigma = 0.85, 0.15
    assert second.r_tilde[0] == pytest.approx((1.0 - mu) / sigma)
    assert second.beta == np.float32(0.05 + 0.15 * (1 - 0.5))
