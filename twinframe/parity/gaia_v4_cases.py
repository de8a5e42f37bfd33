"""The P10 cases (spec gaia.md §4.2): the N1-N8 setups of §5.4 run by numpy_ref (float64) and
by the JAX port (`functional.gaia_v4`) on the same injected arrays. JAX computes in its default
float: float64 under `jax.enable_x64(True)`, else float32 (inputs cast).

Each side draws from its own `np.random.RandomState(0)` in the reference's program order
(§2.12), so the numpy side reproduces the goldens and the JAX side gets the same arrays. The
controller and the meta-optimizer are host-side (§2.11): `JaxController` has the
`PlasticityController` interface over JAX Hebbian state and the jitted ES pieces, and the
numpy_ref `MetaOptimizer` drives it unchanged.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from twinframe.functional import gaia_v4 as fv
from twinframe.torch_ref import gaia_v4 as tv

HEBBIAN_KEYS = tuple(tv.HEBBIAN_DEFAULTS)


def _f(x: Any) -> jax.Array:
    return jnp.asarray(np.asarray(x), jnp.result_type(float))


@functools.lru_cache(maxsize=16)
def _hebbian_step(rule: str, x64: bool) -> Any:
    del x64  # part of the cache key: one compile per precision

    def step(st, hp, x):
        _, st = fv.hebbian_forward(st, x)
        return fv.hebbian_update(st, hp, rule)

    return jax.jit(step)


def _x64() -> bool:
    return jnp.result_type(float) == jnp.float64


def n1(rule: str, steps: int) -> dict[str, tuple[Any, Any]]:
    rs = np.random.RandomState(0)
    h = tv.HebbianCore(4, 3, rule, rng=rs)
    W0 = h.weights.copy()
    X = rs.randn(20, 5, 4)
    for t in range(steps):
        h.forward(X[t])
        h.update()
    st, hp = fv.hebbian_init(_f(W0)), fv.hebbian_hparams(jnp.result_type(float))
    step = _hebbian_step(rule, _x64())
    for t in range(steps):
        st, hp = step(st, hp, _f(X[t]))
    return {f"N1.{rule}.W": (h.weights, st["W"]), f"N1.{rule}.post": (h.post_synaptic,
                                                                      st["post"]),
            f"N1.{rule}.theta": (h.hparams["bcm_theta"], hp["bcm_theta"])}


def n2() -> dict[str, tuple[Any, Any]]:
    rs = np.random.RandomState(0)
    W, pre, post = rs.randn(5, 10), rs.randn(10), rs.randn(5)
    Wj, pj, qj = _f(W), _f(pre), _f(post)
    bcm = tv.BCMRule()
    b_ref = bcm.apply(W, pre, post)
    b_j, th_j = fv.bcm_rule(Wj, pj, qj)
    return {"N2.hebbian": (tv.HebbianRule().apply(W, pre, post), fv.hebbian_rule(Wj, pj, qj)),
            "N2.oja": (tv.OjasRule().apply(W, pre, post), fv.oja_rule(Wj, pj, qj)),
            "N2.bcm": (b_ref, b_j), "N2.bcm_theta": (bcm.theta, th_j),
            "N2.stdp": (tv.STDPRule().apply(W, pre, post), fv.stdp_rule(Wj, pj, qj))}


def n3(steps: int) -> dict[str, tuple[Any, Any]]:
    rs = np.random.RandomState(0)
    t = tv.TemporalLayer(4, 6, 3, rng=rs)
    X = rs.randn(10, 2, 4)
    st = fv.temporal_init(_f(t.weights), _f(t.recurrent_weights), 3)
    n = min(steps, 10)
    for i in range(n):
        y = t.forward(X[i])
        yj, st = fv.temporal_forward(st, _f(X[i]))
    return {"N3.y_last": (y, yj), "N3.h": (t.hidden_state, st["h"]),
            "N3.context": (t.get_temporal_context(), fv.temporal_context(st))}


def n4(steps: int) -> dict[str, tuple[Any, Any]]:
    rs = np.random.RandomState(0)
    r0 = tv.ReactiveLayer(10, 20, "relu", rng=rs)
    h1 = tv.HebbianCore(20, 40, rng=rs)
    t2 = tv.TemporalLayer(40, 80, 5, rng=rs)
    X = rs.randn(16, 10)
    specs = (fv.LevelSpec((fv.LayerSpec("reactive", "relu"),), 1),
             fv.LevelSpec((fv.LayerSpec("hebbian"),), 2),
             fv.LevelSpec((fv.LayerSpec("temporal", "tanh"),), 4))
    dt = jnp.result_type(float)
    states = [fv.level_init([{"W": _f(r0.weights), "b": _f(r0.bias)}], 20, dt),
              fv.level_init([fv.hebbian_init(_f(h1.weights))], 40, dt),
              fv.level_init([fv.temporal_init(_f(t2.weights), _f(t2.recurrent_weights), 5)],
                            80, dt)]
    levels = []
    for i, (layer, r) in enumerate(((r0, 1), (h1, 2), (t2, 4))):
        lv = tv.HierarchicalLevel(i, layer.input_size, _out(layer), r)
        lv.add_layer(layer)
        levels.append(lv)
    m = tv.HierarchyManager()
    for lv in levels:
        m.add_level(lv)
    n = min(steps, 16)
    out = m.process_hierarchy(X, n)
    reps, _, energy = jax.jit(lambda s, x: fv.hierarchy_scan(specs, s, x))(states, _f(X[:n]))
    res = {f"N4.level{i}.reps": (np.stack(out[i]), reps[i]) for i in range(3)}
    res["N4.child_1_energy"] = (m.levels[0].buffer["child_1"]["energy"], energy[1][-1])
    return res


def _out(layer: Any) -> int:
    return layer.hidden_size if isinstance(layer, tv.TemporalLayer) else layer.output_size


def n5() -> dict[str, tuple[Any, Any]]:
    rs = np.random.RandomState(0)
    es = tv.EvolutionaryStrategy(10, 0.1, rng=rs)
    m = np.array([0.1, 0.2, 0.3])
    pop = es.generate_population(m)
    f = rs.random_sample(10)
    es.update_mean(m, pop, f)
    eps = np.random.RandomState(0).randn(10, 3)
    pj = fv.es_generate(_f(m), _f(eps), 0.1)
    mj = fv.es_update(_f(m), pj, _f(f), 0.01, es.n_elites())
    return {"N5.population": (pop, pj), "N5.mean": (es.mean, mj)}


class JaxModule:
    """A Hebbian (JAX state) or temporal module seen by the controller: `hparams` (a dict the
    controller writes) and an efficiency (temporal layers: 0.5, §2.10)."""

    def __init__(self, keys: tuple[str, ...], state: Any = None) -> None:
        self.hparams = {k: 0.0 for k in keys}
        self.state = state

    def efficiency(self) -> jax.Array:
        if self.state is None:
            return jnp.asarray(0.5, jnp.result_type(float))
        return _efficiency(self.state)


@jax.jit
def _efficiency(st: Any) -> jax.Array:
    return fv.plasticity_efficiency(st)


@functools.partial(jax.jit, static_argnums=(4,))
def _es_step(theta: jax.Array, eps: jax.Array, sigma: Any, f: jax.Array, K: int, lr: Any
             ) -> tuple[jax.Array, jax.Array]:
    pop = fv.es_generate(theta, eps, sigma)
    return pop, fv.es_update(theta, pop, f, lr, K)


class JaxController:
    """`PlasticityController` (§2.8) over JAX pieces: eps drawn from `rng` in the reference's
    order (N x randn(d) at generation), fitness = mean module efficiency (independent of the
    candidate), the jitted ES update."""

    def __init__(self, modules: list[JaxModule], rng: np.random.RandomState) -> None:
        self.modules, self.rng = modules, rng
        self.es = tv.EvolutionaryStrategy(rng=rng)
        self.sizes = [len(m.hparams) for m in modules]
        self.theta0 = 0.01 * np.ones(sum(self.sizes))
        self.theta = _f(self.theta0)

    def _write(self, theta: Any) -> None:
        i = 0
        for m, n in zip(self.modules, self.sizes, strict=True):
            for k, v in zip(list(m.hparams), np.asarray(theta)[i:i + n], strict=True):
                m.hparams[k] = float(v)
            i += n

    def adapt_plasticity(self, performance: Any) -> None:
        del performance
        es = self.es
        eps = self.rng.randn(es.population_size, len(self.theta0))
        f = jnp.mean(jnp.stack([m.efficiency() for m in self.modules]))
        fit = jnp.full((es.population_size,), f)
        _, self.theta = _es_step(self.theta, _f(eps), es.sigma, fit, es.n_elites(),
                                 es.learning_rate)
        es.fitness_history.append(float(f))
        self._write(self.theta)

    def set_adaptation_rate(self, x: float) -> None:
        self.es.learning_rate = x

    def set_exploration_noise(self, x: float) -> None:
        self.es.sigma = x

    def reset_state(self) -> None:
        self.theta = _f(self.theta0)
        self._write(self.theta)


def _controllers(with_forwards: bool) -> tuple[tv.PlasticityController, JaxController,
                                               np.random.RandomState, np.random.RandomState]:
    rs, rj = np.random.RandomState(0), np.random.RandomState(0)
    h = tv.HebbianCore(20, 40, rng=rs)
    t = tv.TemporalLayer(40, 80, rng=rs)
    c = tv.PlasticityController([h, t], rng=rs)
    h2 = tv.HebbianCore(20, 40, rng=rj)
    tv.TemporalLayer(40, 80, rng=rj)
    st = fv.hebbian_init(_f(h2.weights))
    if with_forwards:
        for _ in range(3):
            x = rs.randn(5, 20)
            h.forward(x)
            _, st = fv.hebbian_forward(st, _f(rj.randn(5, 20)))
    jc = JaxController([JaxModule(HEBBIAN_KEYS, st), JaxModule(tuple(tv.TEMPORAL_DEFAULTS))],
                       rj)
    return c, jc, rs, rj


def n6() -> dict[str, tuple[Any, Any]]:
    c, jc, _, _ = _controllers(True)
    for _ in range(3):
        c.adapt_plasticity(0.7)
        jc.adapt_plasticity(0.7)
    return {"N6.theta": (c.theta, jc.theta),
            "N6.fitness_history": (c.es.fitness_history, jc.es.fitness_history)}


def n78(case: str) -> dict[str, tuple[Any, Any]]:
    c, jc, rs, rj = _controllers(False)
    out = {}
    for side, ctrl, rng in (("ref", c, rs), ("jax", jc, rj)):
        mo = tv.MetaOptimizer(ctrl, rng=rng)
        if case == "N7":
            tasks = [lambda step, r=rng: 0.5 + 0.01 * step + 0.05 * r.randn()
                     for _ in range(3)]
            mo.meta_train(5, tasks)
        else:
            tasks = [lambda step, r=rng, k=k: np.abs(r.randn(3)) * (k + 1) for k in range(2)]
            mo.meta_train(4, tasks)
        out[side] = (mo.learning_history, [mo.meta["adaptation_rate"],
                                           mo.meta["exploration_noise"]], ctrl.theta)
    return {f"{case}.learning_history": (out["ref"][0], out["jax"][0]),
            f"{case}.meta": (out["ref"][1], out["jax"][1]),
            f"{case}.theta": (out["ref"][2], out["jax"][2])}


def cases(steps: int = 20) -> dict[str, tuple[Any, Any]]:
    res: dict[str, tuple[Any, Any]] = {}
    for rule in tv.RULES:
        res.update(n1(rule, steps))
    res.update(n2())
    res.update(n3(steps))
    res.update(n4(steps))
    res.update(n5())
    res.update(n6())
    res.update(n78("N7"))
    res.update(n78("N8"))
    return {k: (np.asarray(a, np.float64), np.asarray(jax.device_get(b), np.float64))
            for k, (a, b) in res.items()}
