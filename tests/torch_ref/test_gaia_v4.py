"""The NumPy v4.x reference (spec gaia.md §2) against goldens N1-N8 (§5.4, P11: rtol 1e-9) and
the NumPy traps of §4.3 (18-23)."""

import numpy as np
import pytest

from twinframe.torch_ref import gaia_v4 as v

R = 1e-9  # §5.4: N1-N8 at rtol 1e-9 (values printed to 10-12 digits: atol 5e-11)


def close(a, b):
    np.testing.assert_allclose(a, b, rtol=R, atol=5e-11)  # printed to 10 decimals


@pytest.mark.parametrize("rule,total", [("hebbian", 3.802825742685), ("oja", 3.750085984707),
                                        ("bcm", 3.708127083451)])
def test_n1_hebbian_core(rule, total):
    np.random.seed(0)
    h = v.HebbianCore(4, 3, rule)
    close(h.weights.sum(), 7.330954384982)
    X = np.random.randn(20, 5, 4)
    for t in range(20):
        h.forward(X[t])
        h.update()
    close(h.weights.sum(), total)
    if rule == "hebbian":
        close(h.weights[0], [0.5826257697, 0.1505409308, 0.3217222109, 0.7310126131])
    if rule == "bcm":
        close(h.hparams["bcm_theta"], 0.093444420044)


def test_n2_standalone_rules_and_bcm_order():
    np.random.seed(0)
    W, pre, post = np.random.randn(5, 10), np.random.randn(10), np.random.randn(5)
    for name, total in (("hebbian", 7.110367817104), ("oja", 6.853596799409),
                        ("bcm", 6.856104148446), ("stdp", 7.037610230327)):
        r = v.make_rule(name.upper())
        close(r.apply(W, pre, post).sum(), total)
    bcm = v.BCMRule()
    bcm.apply(W, pre, post)
    close(bcm.theta, 0.8321196730)
    # trap 18: HebbianCore uses the old theta, then updates it
    h = v.HebbianCore(10, 5, "bcm", weights=W)
    h.pre_synaptic, h.post_synaptic = pre, post
    h.update()
    Wd = (W + 0.01 * np.outer(post * (post - 1.0), pre)) * (1 - 0.001)
    Wd = Wd * (1 + 0.1 * (0.5 - post.mean()))
    close(h.weights, Wd / (np.linalg.norm(Wd, axis=1, keepdims=True) + 1e-8))


def test_n3_temporal_layer():
    np.random.seed(0)
    t = v.TemporalLayer(4, 6, 3)
    X = np.random.randn(10, 2, 4)
    for i in range(10):
        y = t.forward(X[i])
    close(y.sum(), -0.577586405260)
    close(t.hidden_state, [0.0956379576, 0.0949349613, 0.3950315566, -0.6756076552,
                           -0.4101934626, 0.2114034397])
    assert t.get_temporal_context().shape == (3, 6)
    close(t.get_temporal_context().sum(), -0.109795306729)
    t.reset_state()
    assert not t.get_temporal_context().any()  # empty context: zeros (ours)


def build_n4():
    np.random.seed(0)
    l0 = v.HierarchicalLevel(0, 10, 20, 1)
    l0.add_layer(v.ReactiveLayer(10, 20, "relu"))
    l1 = v.HierarchicalLevel(1, 20, 40, 2)
    l1.add_layer(v.HebbianCore(20, 40))
    l2 = v.HierarchicalLevel(2, 40, 80, 4)
    l2.add_layer(v.TemporalLayer(40, 80, 5))
    m = v.HierarchyManager()
    for lv in (l2, l0, l1):
        m.add_level(lv)
    return m, np.random.randn(16, 10)


def test_n4_hierarchy():
    m, X = build_n4()
    out = m.process_hierarchy(X, 16)
    assert [len(out[i]) for i in range(3)] == [16, 16, 16]
    close([out[i][-1].sum() for i in range(3)], [8.1915730976, 2.2233730130, 5.2210221067])
    close([sum(r.sum() for r in out[i]) for i in range(3)],
          [203.0129251795, -146.8141262745, -87.6194619223])
    close(m.levels[0].buffer["child_1"]["energy"], 17.2048873834)
    with pytest.raises(ValueError, match="width"):
        m.levels[0].process_time_step(np.zeros(3), 0)


def test_n5_evolution_strategy():
    np.random.seed(0)
    es = v.EvolutionaryStrategy(10, 0.1)
    m = np.array([0.1, 0.2, 0.3])
    pop = es.generate_population(m)
    f = np.random.random(10)
    es.update_mean(m, pop, f)
    close(es.mean, [0.1012625450, 0.2002609161, 0.3007113006])
    assert np.argsort(f, kind="stable")[-2:].tolist() == [4, 0]


def controller():
    h, t = v.HebbianCore(20, 40), v.TemporalLayer(40, 80)
    return h, t, v.PlasticityController([h, t])


def test_n6_controller_equal_fitness_stable_elites():
    np.random.seed(0)
    h, _, c = controller()
    for _ in range(3):
        h.forward(np.random.randn(5, 20))
    for _ in range(3):
        c.adapt_plasticity(0.7)
    close(c.theta, [0.0091687507, 0.0096126164, 0.0098434420, 0.0098525493, 0.0099985646,
                    0.0098512533, 0.0102525970, 0.0101186338])
    close(c.es.fitness_history, [0.4154881190] * 3)
    assert h.learning_rate == c.theta[0]  # trap 21/23: the controller writes into the copy


def test_n7_meta_scalar_tasks():
    np.random.seed(0)
    _, _, c = controller()
    mo = v.MetaOptimizer(c)
    tasks = [lambda step: 0.5 + 0.01 * step + 0.05 * np.random.randn() for _ in range(3)]
    mo.meta_train(5, tasks)
    assert mo.learning_history == [0.5] * 5  # trap 22: scalar task data evaluate to 0.5
    close(mo.meta["adaptation_rate"], 0.012762815625)
    close([mo.meta["exploration_noise"], c.es.sigma], [0.161051, 0.161051])
    close(c.theta[:3], [0.0113091549, 0.0104197330, 0.0087051014])
    assert len(c.es.fitness_history) == 10


def test_n8_meta_array_tasks():
    np.random.seed(0)
    _, _, c = controller()
    mo = v.MetaOptimizer(c)

    def task(k):
        return lambda step: np.abs(np.random.randn(3)) * (k + 1)

    mo.meta_train(4, [task(0), task(1)])
    close(mo.learning_history, [1.5602475821, 0.7263292311, 0.8098414854, 1.1243293900])
    close([mo.meta["adaptation_rate"], mo.meta["exploration_noise"]], [0.0101881395, 0.09431125])


def test_numpy_traps_init_and_normalisation():
    """Trap 19: He uses sqrt(2/out) for Hebbian/Temporal but sqrt(2/in) for Reactive; trap 20:
    f < 0 flips the rows; trap 23: the caller's hparams dict is copied."""
    rs = np.random.RandomState(0)
    h = v.HebbianCore(2, 50, rng=np.random.RandomState(0))
    np.testing.assert_allclose(h.weights, rs.randn(50, 2) * np.sqrt(2 / 50))
    r = v.ReactiveLayer(2, 50, rng=np.random.RandomState(0))
    np.testing.assert_allclose(r.weights, np.random.RandomState(0).randn(50, 2) * np.sqrt(1.0))
    hp = dict(v.HEBBIAN_DEFAULTS, homeostatic_strength=10.0, bcm_theta=0.0)
    core = v.HebbianCore(2, 2, "bcm", params=hp, weights=np.eye(2))
    core.forward(np.array([[3.0, 3.0]]))  # mean(post) = 3 -> f = 1 + 10*(0.5 - 3) < 0
    core.update()
    assert (core.weights.diagonal() < 0).all()
    assert hp["bcm_theta"] == 0.0 and core.hparams["bcm_theta"] != 0.0


def test_metrics():
    h = v.HebbianCore(2, 2, weights=np.eye(2))
    assert v.plasticity_efficiency(h) == 0.5 and v.adaptation_speed(h) == 0.5
    for x in ([1.0, 0.0], [0.0, 1.0], [1.0, 1.0]):
        h.forward(np.array(x))
    close(v.adaptation_speed(h), (np.sqrt(2) + 1) / 2)
    assert v.stability_plasticity_tradeoff(h) == 0.5
    curve = v.evaluate_meta_learning_curve([1.0, 2.0, 1.5])
    assert curve["improvement"] == 0.5 and curve["consistency"] == 0.5
