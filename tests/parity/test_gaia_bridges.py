"""The user's-guide bridges (seed §3-§7): unified config -> v4.x and v3.1 configs and back;
HebbianCore <-> DiagnosticPlasticLinear weight transfer both ways (orientation, shapes); the
hybrid hierarchy (v4.x levels with a plastic v3.1 core) in JAX against the NumPy manager with
the torch layer; the analysis export to npz from either framework."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from twinframe import registry
from twinframe.errors import ConfigError
from twinframe.functional import gaia_v4 as fv
from twinframe.models import gaia as mg
from twinframe.models import gaia_bridge as mb
from twinframe.parity import gaia_io
from twinframe.torch_ref import gaia as tg
from twinframe.torch_ref import gaia_bridge as tb
from twinframe.torch_ref import gaia_v4 as tv
from twinframe.training.runner import Trainer


def test_unified_config_both_ways():
    u = mb.UnifiedGaiaConfig(hidden_dim=32, learning_rate=0.02, fast_decay=0.9)
    hp = u.to_numpy_config()
    assert hp["decay_rate"] == pytest.approx(0.1) and hp["learning_rate"] == 0.02
    assert set(hp) == set(tv.HEBBIAN_DEFAULTS)  # all six keys: update() needs them
    cfg = u.to_pytorch_config()
    assert (cfg.hidden_dim, cfg.fast_trace_decay, cfg.fast_trace_lr, cfg.slow_trace_decay,
            cfg.homeostatic_target) == (32, 0.9, 0.02, 0.99, 5.0)
    core = tv.HebbianCore(10, 32, params=hp, rng=np.random.RandomState(0))
    core.forward(np.ones((2, 10)))
    core.update()  # the produced hparams drive the v4.x layer
    assert mb.UnifiedGaiaConfig.from_configs(hp, cfg, 10, 10) == u
    with pytest.raises(ConfigError, match="fast_trace_lr"):
        mb.UnifiedGaiaConfig.from_configs(hp, cfg.replace(fast_trace_lr=0.5))


def test_weight_transfer_both_directions():
    cfg = mg.GaiaConfig(trace_history_len=4)
    core = tv.HebbianCore(3, 5, "oja", rng=np.random.RandomState(1))
    layer = tb.hebbian_to_plastic(core, cfg=cfg)
    assert tuple(layer.weight.shape) == (5, 3)  # (out, in) both: no transpose
    np.testing.assert_array_equal(layer.weight.detach().numpy(),
                                  core.weights.astype(np.float32))
    assert not layer.fast_trace.any() and int(layer.step_counter) == 0
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    y = layer(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(y, x @ mb.quantize_np(layer.weight.detach().numpy()).T,
                               rtol=1e-5, atol=1e-7)  # the first call uses zero traces
    back = tb.plastic_to_hebbian(layer, rule="bcm")
    np.testing.assert_array_equal(back.weights, layer.weight.detach().numpy().astype(np.float64))
    assert back.plasticity_rule == "bcm" and not back.activity_history
    again = tb.hebbian_to_plastic(back, tg.DiagnosticPlasticLinear(3, 5, cfg))
    assert torch.equal(again.weight, layer.weight)  # torch -> NumPy -> torch is exact
    eff = tb.plastic_to_hebbian(layer, effective=True).weights  # traces now non-zero
    w_eff = tg.bitnet_quantize(layer.weight) + 0.1 * layer.fast_trace + 0.05 * layer.slow_trace
    np.testing.assert_allclose(eff, w_eff.detach().numpy(), rtol=1e-6, atol=1e-8)
    with pytest.raises(ConfigError, match="no transpose"):
        tb.hebbian_to_plastic(tv.HebbianCore(5, 3), tg.DiagnosticPlasticLinear(3, 5, cfg))
    with pytest.raises(ValueError):
        tb.plastic_to_hebbian(layer, tv.HebbianCore(5, 3))


def test_hybrid_hierarchy_jax_matches_numpy_with_torch_core():
    cfg = mg.GaiaConfig(trace_history_len=6, homeostatic_target=2.0)
    rs = np.random.RandomState(0)
    r0 = tv.ReactiveLayer(6, 8, "relu", rng=rs)
    w1 = rs.randn(12, 8) * 0.1
    X = rs.randn(10, 6)
    lv0 = tv.HierarchicalLevel(0, 6, 8, 1)
    lv0.add_layer(r0)
    lv1 = tb.hybrid_level(1, 8, 12, cfg, w1, temporal_resolution=2)
    m = tv.HierarchyManager()
    m.add_level(lv0)
    m.add_level(lv1)
    ref = m.process_hierarchy(X.astype(np.float32).astype(np.float64), 10)
    specs = (fv.LevelSpec((fv.LayerSpec("reactive", "relu"),), 1),
             fv.LevelSpec((fv.LayerSpec("plastic", extra=cfg),), 2))
    f32 = jnp.float32
    states = [fv.level_init([{"W": jnp.asarray(r0.weights, f32), "b": jnp.asarray(r0.bias)}],
                            8, f32),
              fv.level_init([fv.plastic_init(jnp.asarray(w1, f32), cfg)], 12, f32)]
    reps, st, _ = jax.jit(lambda s, x: fv.hierarchy_scan(specs, s, x))(states,
                                                                      jnp.asarray(X, f32))
    np.testing.assert_allclose(np.asarray(reps[1]), np.stack(ref[1]), rtol=1e-4, atol=1e-5)
    core = lv1.layers[0].layer
    tr = st[1]["layers"][0]["traces"]
    assert int(tr["step_counter"]) == int(core.step_counter) == 5  # t = 0, 2, 4, 6, 8
    np.testing.assert_allclose(tr["fast_trace"], core.fast_trace.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("fw", ["torch", "jax"])
def test_analysis_export_same_from_either_framework(fw, tmp_path):
    spec = registry.get("gaia")
    cfg, run = spec.config("tiny"), spec.run_config("tiny")
    tr = Trainer(spec, cfg, run, fw)
    try:
        recs = [tr.train_step() for _ in range(4)]  # 8 trace updates: the L = 5 ring wraps
        st = tr.export_state()
    finally:
        tr.close()
    arrays = gaia_io.write_analysis(tmp_path / "a.npz", cfg, st, recs)
    with np.load(tmp_path / "a.npz") as z:
        assert set(z.files) == set(arrays) | {"__meta__"}
        h = z["m0.l2.trace_norm_history"]
        assert h.shape == (5,) and int(z["m0.l2.step_counter"]) == 8
        assert z["series.free_energy"].shape == (4,)
    torch_state = st["model"] if fw == "torch" else \
        mg.layout(cfg).table.tree_to_torch(st["model"])
    m0 = torch_state["wm.models.0.l2.trace_norm_history"]
    np.testing.assert_array_equal(h, np.concatenate([m0[3:], m0[:3]]))  # slot 8 mod 5 = 3
    np.testing.assert_allclose(np.linalg.norm(arrays["m0.l1.fast_trace"]),
                               recs[-1]["l1_fast_norm"], rtol=1e-6)
    assert 0 <= mb.sparsity(arrays["m0.l2.weights"]) <= 1
    assert mb.correlation_matrix(arrays["m0.l2.weights"]).shape == (8, 8)


def test_v4_npz_is_the_jax_pytree_both_ways(tmp_path):
    """§2.11: numpy_ref npz export = the JAX pytree: export -> npz -> JAX steps -> load back
    into a numpy_ref object, equal to numpy_ref doing the same steps (x64)."""
    rs = np.random.RandomState(4)
    h = tv.HebbianCore(4, 3, "bcm", rng=rs)
    t = tv.TemporalLayer(3, 5, 2, rng=rs)
    r = tv.ReactiveLayer(2, 4, rng=rs)
    xs = rs.randn(3, 2, 4)
    for x in xs[:2]:
        t.forward(h.forward(x))
    gaia_io.write_v4_npz(tmp_path / "v4.npz", {"h": h, "t": t, "r": r})
    tree = gaia_io.read_v4_npz(tmp_path / "v4.npz")
    assert int(tree["h"]["hist_len"]) == 2 and tree["t"]["hist"].shape == (2, 5)
    with jax.enable_x64(True):
        hj = {k: jnp.asarray(v) for k, v in tree["h"].items() if k != "hparams"}
        hp = {k: jnp.asarray(v) for k, v in tree["h"]["hparams"].items()}
        y, hj = fv.hebbian_forward(hj, jnp.asarray(xs[2]))
        hj, hp = fv.hebbian_update(hj, hp, "bcm")
        _, tj = fv.temporal_forward({k: jnp.asarray(v) for k, v in tree["t"].items()}, y)
        back_h = gaia_io.v4_load(tv.HebbianCore(4, 3, "bcm"), {
            **jax.tree_util.tree_map(np.asarray, hj), "hparams": hp})
        back_t = gaia_io.v4_load(tv.TemporalLayer(3, 5, 2), jax.tree_util.tree_map(
            np.asarray, tj))
    t.forward(h.forward(xs[2]))
    h.update()
    np.testing.assert_allclose(back_h.weights, h.weights, rtol=1e-12)
    assert back_h.hparams["bcm_theta"] == pytest.approx(h.hparams["bcm_theta"], rel=1e-12)
    assert len(back_h.activity_history) == 3
    np.testing.assert_allclose(back_t.get_temporal_context(), t.get_temporal_context(),
                               rtol=1e-12)
    again = gaia_io.v4_load(tv.ReactiveLayer(2, 4), tree["r"])
    np.testing.assert_array_equal(again.weights, r.weights)
