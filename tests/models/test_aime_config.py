"""AIME-core framework-neutral part: presets, the tensor table against aime.md §3.2/§9, the
canonical init, recognition, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from twinframe.errors import ConfigError
from twinframe.models import aime
from twinframe.models.aime import AIMEConfig, AIMERun

SIZES = {  # aime.md §9 (buffers: our count is one element lower, see the module test below)
    "default": dict(core=14_071_316, in_optimizer=13_988_372, updated=13_853_196,
                    frozen_lazy=82_944, never_reached=135_176, keys=697),
    "tiny": dict(core=565_232, in_optimizer=550_640, updated=548_520, frozen_lazy=14_592,
                 never_reached=2_120, keys=529),
    "micro": dict(core=362_983, in_optimizer=356_199, updated=355_583, frozen_lazy=6_784,
                  never_reached=616, keys=504),
}


@pytest.mark.parametrize("name", list(SIZES))
def test_parameter_counts_match_the_spec(name):
    got = aime.param_counts(aime.PRESETS[name][0])
    assert {k: got[k] for k in SIZES[name]} == SIZES[name]


def test_distinctive_shapes():
    lay = {r.torch_key: r for r in aime.layout(aime.DEFAULT).table.rows}
    P = "perceiver_model.model."
    assert lay["h0"].shape == (3, 1, 32)
    assert lay["perceiver_model.tokenizer.encoder.to_code.weight"].shape == (256, 128, 3, 3, 3)
    assert lay["perceiver_model.tokenizer.decoder.ups.0.up.weight"].shape == (256, 64, 4, 4, 4)
    assert lay[P + "input_proj.weight"].shape == (128, 323)
    assert lay["_rnn.lstm.weight_ih_l0"].shape == (128, 217)
    assert lay["decoder.post_concat_adapters.cat_256->64@64x64.weight"].shape == (64, 256, 1, 1)
    assert lay["encoder.mlp.1.weight"].shape == (32, 3072)
    assert lay["prior.component_nn.3.weight"].shape == (1080, 160)
    assert lay["attention_prior_posterior.prior_net.relative_position_index"].dtype == "int64"
    micro = {r.torch_key: r.shape for r in aime.layout(aime.MICRO).table.rows}
    assert micro[P + "input_proj.weight"] == (16, 211)
    assert micro["decoder.decoder_blocks.2.blocks.0.skip.weight_orig"] == (8, 16, 1, 1)
    assert "decoder.post_concat_adapters.cat_24->16@8x8.weight" in micro


def test_aliases_share_one_leaf_and_one_value():
    cfg = aime.TINY
    rows = {r.torch_key: r for r in aime.layout(cfg).table.rows}
    a, b = rows["prior.stick_breaking.gamma_a"], rows["prior.stick_breaking.gamma_prior_a"]
    assert a.path == b.path
    t1 = rows["perceiver_model.tokenizer.encoder.to_code.weight"]
    t2 = rows["perceiver_model.model.tokenizer.encoder.to_code.weight"]
    assert t1.path == t2.path
    init = aime.canonical_init(cfg, 0)
    np.testing.assert_array_equal(init[t1.torch_key], init[t2.torch_key])
    assert float(init["prior.stick_breaking.gamma_prior_b"]) == 2.0
    keys = aime.trained_keys(cfg)
    assert "prior.stick_breaking.gamma_prior_a" not in keys
    assert not any(k.startswith("perceiver_model.model.tokenizer.") for k in keys)


def test_canonical_init_is_deterministic_and_follows_the_recipe():
    cfg = aime.MICRO
    a, b = aime.canonical_init(cfg, 0), aime.canonical_init(cfg, 0)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    c = aime.canonical_init(cfg, 1)
    assert not np.array_equal(a["encoder.proj.weight"], c["encoder.proj.weight"])
    e = a["perceiver_model.tokenizer.vq._codebook.embed"]
    assert np.abs(e).max() <= 0.216506 + 1e-6
    np.testing.assert_array_equal(e, a["perceiver_model.tokenizer.vq._codebook.embed_avg"])
    u = a["encoder.stem.0.weight_u"]
    assert np.linalg.norm(u) == pytest.approx(1.0, abs=1e-6)
    hh = a["_rnn.lstm.weight_hh_l0"].astype(np.float64)
    np.testing.assert_allclose(hh.T @ hh, np.eye(hh.shape[1]), atol=1e-5)
    assert a["encoder.final_norm.num_batches_tracked"].dtype == np.int64


def test_presets_are_recognised_and_others_are_not():
    for name, (cfg, _) in aime.PRESETS.items():
        state = {r.torch_key: np.zeros(r.shape, np.float32)
                 for r in aime.layout(cfg).table.rows}
        found = aime.recognise(state)
        assert found is not None and aime.layout(found).table == aime.layout(cfg).table, name
        state["image_discriminator.x.weight"] = np.zeros(3, np.float32)  # excluded part: ignored
        assert aime.recognise(state) is not None
    assert aime.recognise({"h0": np.zeros((3, 1, 8), np.float32)}) is None


def test_configs_round_trip_and_refusals():
    assert AIMEConfig.from_json(aime.DEFAULT.to_json()) == aime.DEFAULT
    assert AIMERun.from_json(AIMERun().to_json()) == AIMERun()
    with pytest.raises(ConfigError, match="unknown field"):
        AIMEConfig.from_dict({"lr": 1.0})
    with pytest.raises(ConfigError, match="too short"):
        AIMEConfig(perceiver_downsample=4)
    for change in ({"dropout": 0.1}, {"adversarial": True}, {"ema_alias_bug": True},
                   {"perceiver_perceptual": "lpips"}):
        with pytest.raises(ConfigError, match="not implemented"):
            aime.check_trainable(aime.TINY.replace(**change), AIMERun())
    assert aime.TINY.token_frames == 2 and aime.DEFAULT.token_frames == 2
    assert aime.DEFAULT.context_frames == 9 and aime.TINY.context_frames == 3
