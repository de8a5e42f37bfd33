import math

import numpy as np
import pytest

from twinframe.errors import ConfigError
from twinframe.models import hrm
from twinframe.models.base import trunc_normal_compensation, trunc_normal_from_uniform_np


def test_param_counts_match_spec_section_9():
    assert hrm.param_counts(hrm.TINY) == (53_986, 64)
    assert hrm.param_counts(hrm.FULL) == (6_821_634, 512)
    assert hrm.param_counts(hrm.FULL.replace(ffn_rounding="swift")) == (5_248_770, 512)


def test_ffn_width_rounding():
    assert hrm.FULL.ffn_dim == 768 and hrm.TINY.ffn_dim == 96
    assert hrm.FULL.replace(ffn_rounding="swift").ffn_dim == 512
    assert hrm.MICRO.ffn_dim == 48


@pytest.mark.parametrize(
    "change",
    [
        {"num_heads": 3},
        {"hidden_size": 30, "num_heads": 2},  # d = 15 is odd
        {"halt_max_steps": 1},
        {"halt_exploration_prob": 1.5},
        {"ffn_rounding": "banker"},
    ],
)
def test_invalid_configs_raise(change):
    with pytest.raises(ConfigError):
        hrm.TINY.replace(**change)


def test_invalid_run_config_raises():
    with pytest.raises(ConfigError, match="seed"):
        hrm.HRMRun(seed=2**32)


def test_swift_rounding_with_zero_width_raises():
    with pytest.raises(ConfigError, match="FFN width"):
        hrm.TINY.replace(ffn_rounding="swift", ffn_multiple=256)


@pytest.mark.parametrize("change", [{"bias_correction": True}, {"noise_source": "native"}])
def test_unimplemented_options_are_refused(change):
    with pytest.raises(ConfigError, match="not implemented"):
        hrm.check_trainable(hrm.TINY, hrm.HRMRun(**change))


def test_unknown_field_rejected():
    with pytest.raises(ConfigError, match="unknown field"):
        hrm.HRMConfig.from_dict({"hidden_size": 32, "dropout": 0.1})


def test_trunc_normal_constants_and_statistics():
    assert trunc_normal_compensation() == pytest.approx(0.8796256610342398, abs=1e-15)
    a = math.erf(-2 / math.sqrt(2))
    assert a == pytest.approx(-0.9544997361036416, abs=1e-15)
    w = trunc_normal_from_uniform_np(np.random.default_rng(0).uniform(a, -a, 200_000), 0.5)
    assert w.std() == pytest.approx(0.5, rel=5e-3)
    assert np.abs(w).max() <= 2 * 0.5 / 0.8796256610342398 + 1e-12
    # u = 0 maps to 0, the upper bound maps to the clip value 2*c
    edge = trunc_normal_from_uniform_np(np.array([0.0, -a]), 1.0)
    assert edge[0] == 0.0 and edge[1] == pytest.approx(2 / 0.8796256610342398)


def test_canonical_init_is_deterministic_and_seeded():
    a, b = hrm.canonical_init(hrm.TINY), hrm.canonical_init(hrm.TINY)
    c = hrm.canonical_init(hrm.TINY, seed=1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["cls_token"], c["cls_token"])
    assert list(a) and set(a) == set(hrm.torch_shapes(hrm.TINY))
    assert np.all(a["q_act_head.weight"] == 0) and np.all(a["q_act_head.bias"] == -5)
    # std of a 1/sqrt(H) leaf and of the initial states (std 1)
    assert a["output_head.weight"].std() * math.sqrt(32) == pytest.approx(1.0, rel=0.15)


def test_rope_tables_match_formula():
    cos, sin = hrm.rope_tables(hrm.TINY)
    d = hrm.TINY.head_dim
    t, j = 5, 3
    angle = t * 10000.0 ** (-2 * j / d)
    assert cos.shape == (82, 1, d)
    assert cos[t, 0, j] == pytest.approx(math.cos(angle), abs=1e-7)
    assert cos[t, 0, j + d // 2] == cos[t, 0, j]
    assert sin[t, 0, j] == pytest.approx(math.sin(angle), abs=1e-7)
