"""GAIA model/run configs, presets, the §1.11 layout (stacked member rows, int counters, two
step groups), canonical init, recognition, the §3 noise stream and the inverse CDF."""

import numpy as np
import pytest

from twinframe.errors import CheckpointError, ConfigError
from twinframe.models import gaia as mg
from twinframe.models.layout import Layout, Row, Rule, Table, convert_train_state


def test_config_validation():
    with pytest.raises(ConfigError, match="n_ensemble"):
        mg.GaiaConfig(n_ensemble=1)
    with pytest.raises(ConfigError, match="noise"):
        mg.GaiaRun(noise="global")
    with pytest.raises(ConfigError, match="batch_size"):
        mg.GaiaRun(batch_size=2)
    with pytest.raises(ConfigError, match="noise='parity'"):
        mg.check_trainable(mg.TINY, mg.GaiaRun(noise="torch"))


@pytest.mark.parametrize("preset", ["tiny", "tiny_nometrics", "default"])
def test_layout_keys_and_counts(preset):
    cfg = mg.PRESETS[preset][0]
    rows = mg.layout(cfg).table.rows
    E = cfg.n_ensemble
    per_member = 8 + (4 + 6 if cfg.track_metrics else 4)  # params + buffers (+ counters)
    assert len(rows) == 1 + E * per_member + 4
    if preset == "default":  # §1.11: 90 wm keys for E = 5 (80 + 10 counters)
        assert sum(r.torch_key.startswith("wm.") for r in rows) == 90
    lay = mg.layout(cfg)
    assert lay.step_groups == ("wm", "am")
    assert lay.trainable_keys()[:8] == tuple(
        f"wm.models.0.{k}" for k in ("l1.weight", "l2.weight", "l3.weight", "l3.bias",
                                     "ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias"))


def test_layout_roundtrip_stacks_members_and_keeps_int_counters():
    cfg = mg.TINY
    st = mg.canonical_init(cfg, 3)
    st["wm.models.1.l1.step_counter"] = np.asarray(7, np.int64)
    tab = mg.layout(cfg).table
    tree = tab.torch_to_tree(st)
    w = tree["params"]["wm"]["l1"]["weight"]
    assert w.shape == (3, 8, 2)  # (E, H, D), no transpose
    np.testing.assert_array_equal(w[2], st["wm.models.2.l1.weight"])
    k = tree["params"]["wm"]["l3"]["kernel"]
    np.testing.assert_array_equal(k[1], st["wm.models.1.l3.weight"].T)
    c = tree["state"]["wm"]["l1"]["step_counter"]
    assert c.dtype == np.int32 and c.tolist() == [0, 7, 0]
    assert tree["params"]["wm"]["ln1"]["scale"].shape == (3, 8)
    back = tab.tree_to_torch(tree)
    for key, v in st.items():
        assert back[key].dtype == v.dtype and back[key].shape == v.shape, key
        np.testing.assert_array_equal(back[key], v)


def test_int_rows_refuse_fractional_values_and_bad_stacks():
    tab = Table((Row("c", ("state", "c"), Rule.IDENTITY, (), dtype="int64", stack=(0, 2)),
                 Row("d", ("state", "c"), Rule.IDENTITY, (), dtype="int64", stack=(1, 2))))
    tree = tab.torch_to_tree({"c": np.float32(3.0), "d": np.int64(4)})
    assert tree["state"]["c"].tolist() == [3, 4]
    with pytest.raises(CheckpointError, match="integer"):
        tab.torch_to_tree({"c": np.float32(3.5), "d": np.int64(4)})
    with pytest.raises(CheckpointError, match="shape"):
        tab.tree_to_torch({"state": {"c": np.zeros(3, np.int32)}})


def test_group_steps_convert_both_ways():
    lay = Layout(Table((Row("a.w", ("params", "a", "w"), Rule.IDENTITY, (2,)),
                        Row("b.w", ("params", "b", "w"), Rule.IDENTITY, (2,)))),
                 step_groups=("a", "b"))
    z = {"a.w": np.ones(2, np.float32), "b.w": np.ones(2, np.float32)}
    ts = {"framework": "torch", "model": z, "opt": {"a.step": 3.0, "b.step": 0.0,
                                                   "exp_avg": z, "exp_avg_sq": z}}
    j = convert_train_state(ts, lay, "jax")
    assert int(j["opt"]["a.count"]) == 3 and int(j["opt"]["b.count"]) == 0
    t = convert_train_state(j, lay, "torch")
    assert t["opt"]["a.step"] == 3.0 and t["opt"]["b.step"] == 0.0


def test_every_preset_recognised_and_foreign_refused():
    for name, (cfg, _) in mg.PRESETS.items():
        shapes = mg.torch_shapes(cfg)
        found = mg.recognise({k: np.zeros(s, np.float32) for k, s in shapes.items()})
        assert found is not None and mg.torch_shapes(found) == shapes, name
    odd = mg.TINY.replace(hidden_dim=5, n_ensemble=4)
    assert mg.recognise(mg.canonical_init(odd, 0)) == mg.DEFAULT.replace(
        hidden_dim=5, n_ensemble=4, trace_history_len=5)
    assert mg.recognise({"cls_token": np.zeros(3)}) is None


def test_canonical_init_is_seeded_and_distributed():
    a, b = mg.canonical_init(mg.TINY, 0), mg.canonical_init(mg.TINY, 0)
    c = mg.canonical_init(mg.TINY, 1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["wm.models.0.l1.weight"], c["wm.models.0.l1.weight"])
    assert np.abs(a["am.net.0.weight"]).max() <= 1.0  # U(+-1/sqrt(S)), S = 1
    assert np.abs(a["am.net.2.weight"]).max() <= 1 / 8
    assert (a["wm.models.0.ln1.weight"] == 1).all() and (a["wm.models.0.l1.fast_trace"] == 0).all()
    assert a["wm.models.0.l1.step_counter"].dtype == np.int64


def test_noise_stream_order_and_resume():
    ns = mg.NoiseStream(mg.TINY, 123)
    rng = np.random.default_rng(123)
    n = ns.next()
    np.testing.assert_array_equal(n.eps, rng.standard_normal((6, 1)).astype(np.float32))
    assert n.u == np.float32(rng.random())
    np.testing.assert_array_equal(n.xi, rng.standard_normal((1, 1)).astype(np.float32))
    saved = ns.state()
    a = ns.next()
    ns2 = mg.NoiseStream(mg.TINY, 0)
    ns2.set_state(saved)
    np.testing.assert_array_equal(ns2.next().eps, a.eps)


def test_inverse_cdf():
    p = np.array([0.25, 0.25, 0.5], np.float32)
    assert mg.inverse_cdf(p, 0.0)[0] == 0
    assert mg.inverse_cdf(p, 0.3)[0] == 1
    assert mg.inverse_cdf(p, 0.5) == (2, True)  # thr == c_1 exactly: side right, a tie
    assert mg.inverse_cdf(p, np.float32(1.0))[0] == 2  # u rounding up to 1: last index
