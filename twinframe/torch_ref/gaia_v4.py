"""GAIA v4.x, the NumPy reference (spec gaia.md §2), float64: initializers and activations
(§2.1), ReactiveLayer (§2.2), HebbianCore with hebbian / oja / bcm (§2.3), the standalone rules
(§2.4), TemporalLayer (§2.5), HierarchicalLevel / HierarchyManager (§2.6), EvolutionaryStrategy
(§2.7), PlasticityController (§2.8), MetaOptimizer (§2.9) and the metrics (§2.10).

It lives in the reference tree beside the torch v3.1 system although it imports no torch. Every
constructor takes `rng` (a `np.random.RandomState`, default the global legacy stream, as the
reference uses) and optionally explicit initial arrays; the ES takes injected `eps` and
`meta_train` injected task indices (§3). CPU only (no CuPy dispatch).

numpy_ref choices (spec §7 item 8): 1-D input is promoted to a batch of 1; a caller's hparams
dict is copied; an empty temporal context is zeros; ReactiveLayer is usable (fan-in He init);
TemporalLayer.update is a no-op; the ES elites use a stable argsort.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

HIST_MAX = 100
HEBBIAN_DEFAULTS = {"learning_rate": 0.01, "decay_rate": 0.001, "ltp_coefficient": 1.0,
                    "ltd_coefficient": 0.8, "homeostatic_strength": 0.1, "bcm_theta": 1.0}
TEMPORAL_DEFAULTS = {"learning_rate": 0.01, "decay_rate": 0.001}
RULES = ("hebbian", "oja", "bcm")


def _rng(rng: np.random.RandomState | None) -> np.random.RandomState:
    return np.random.mtrand._rand if rng is None else rng


def _batch(x: Any) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x[None] if x.ndim == 1 else x


# ----------------------------------------------------------------------------------------------
# §2.1


def initialize_weights(shape: tuple[int, ...], kind: str = "he",
                       rng: np.random.RandomState | None = None) -> np.ndarray:
    """f0 = shape[0] (the out dim: a quirk): he randn*sqrt(2/f0); xavier randn*sqrt(1/f0);
    normal randn*0.01; uniform U(-0.01, 0.01)."""
    rng, f0 = _rng(rng), shape[0]
    if kind == "he":
        return rng.randn(*shape) * np.sqrt(2.0 / f0)
    if kind == "xavier":
        return rng.randn(*shape) * np.sqrt(1.0 / f0)
    if kind == "normal":
        return rng.randn(*shape) * 0.01
    if kind == "uniform":
        return rng.uniform(-0.01, 0.01, shape)
    raise ValueError(f"unknown init {kind!r}")


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda z: np.maximum(0, z),
    "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
    "tanh": np.tanh,
    "linear": lambda z: z,
}
DERIVATIVES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "relu": lambda z: (z > 0).astype(np.float64),
    "sigmoid": lambda z: ACTIVATIONS["sigmoid"](z) * (1 - ACTIVATIONS["sigmoid"](z)),
    "tanh": lambda z: 1 - np.tanh(z) ** 2,
    "linear": lambda z: np.ones_like(z),
}


# ----------------------------------------------------------------------------------------------
# §2.2 - §2.5: layers


class ReactiveLayer:
    """Fixed weights: y = act(x W^T + b); He/Xavier with fan-in (unlike §2.1), b = 0 (f32)."""

    def __init__(self, input_size: int, output_size: int, activation: str = "relu",
                 init_type: str = "he", rng: np.random.RandomState | None = None,
                 weights: np.ndarray | None = None) -> None:
        rng = _rng(rng)
        self.input_size, self.output_size = input_size, output_size
        self.activation_name = activation
        shape = (output_size, input_size)
        if weights is not None:
            self.weights = np.array(weights, np.float64)
        elif init_type == "he":
            self.weights = rng.randn(*shape) * np.sqrt(2.0 / input_size)
        elif init_type == "xavier":
            self.weights = rng.randn(*shape) * np.sqrt(1.0 / input_size)
        elif init_type == "normal":
            self.weights = rng.randn(*shape) * 0.01
        else:
            self.weights = rng.uniform(-0.01, 0.01, shape)
        self.bias = np.zeros(output_size, np.float32)

    def forward(self, x: Any) -> np.ndarray:
        x = _batch(x)
        self.last_input = x
        return ACTIVATIONS[self.activation_name](x @ self.weights.T + self.bias)

    def update(self, lr: float | None = None) -> None:
        del lr

    def reset_state(self) -> None:
        pass


class HebbianCore:
    """§2.3: y = x W^T; pre/post = batch means; update with hebbian / oja / bcm, then decay,
    homeostatic scaling and row normalisation."""

    def __init__(self, input_size: int, output_size: int, plasticity_rule: str = "hebbian",
                 params: dict | None = None, rng: np.random.RandomState | None = None,
                 weights: np.ndarray | None = None) -> None:
        if plasticity_rule not in RULES:
            raise ValueError(f"plasticity_rule must be one of {RULES}")
        self.input_size, self.output_size = input_size, output_size
        self.plasticity_rule = plasticity_rule
        self.weights = (initialize_weights((output_size, input_size), "he", rng)
                        if weights is None else np.array(weights, np.float64))
        self.pre_synaptic = np.zeros(input_size, np.float32)
        self.post_synaptic = np.zeros(output_size, np.float32)
        self.activity_history: list[tuple[np.ndarray, np.ndarray]] = []
        self.hparams = copy.deepcopy(params) if params else dict(HEBBIAN_DEFAULTS)

    @property
    def learning_rate(self) -> float:
        return self.hparams["learning_rate"]

    def forward(self, x: Any) -> np.ndarray:
        x = _batch(x)
        self.pre_synaptic = x.mean(axis=0)
        y = x @ self.weights.T
        self.post_synaptic = y.mean(axis=0)
        self.activity_history.append((self.pre_synaptic.copy(), self.post_synaptic.copy()))
        if len(self.activity_history) > HIST_MAX:
            self.activity_history.pop(0)
        return y

    def update(self, lr: float | None = None) -> None:
        hp = self.hparams
        eta = hp["learning_rate"] if lr is None else lr
        pre, post, W = self.pre_synaptic, self.post_synaptic, self.weights
        if self.plasticity_rule == "hebbian":
            dW = eta * np.outer(post, pre)
        elif self.plasticity_rule == "oja":
            dW = eta * np.outer(post, pre - W.T @ post)
        else:
            theta = hp["bcm_theta"]
            dW = eta * np.outer(post * (post - theta), pre)
            hp["bcm_theta"] = 0.9 * theta + 0.1 * np.mean(post)
        W = W + dW
        W = W * (1 - hp["decay_rate"])
        f = 1 + hp["homeostatic_strength"] * (0.5 - np.mean(post))
        W = W * f
        self.weights = W / (np.linalg.norm(W, axis=1, keepdims=True) + 1e-8)

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return grad @ self.weights

    def reset_state(self) -> None:
        self.pre_synaptic = np.zeros(self.input_size, np.float32)
        self.post_synaptic = np.zeros(self.output_size, np.float32)
        self.activity_history = []


class TemporalLayer:
    """§2.5: z = x W^T + h W_rec^T; y = act(z); h = mean_B y; history of h (<= time_window)."""

    def __init__(self, input_size: int, hidden_size: int, time_window: int = 10,
                 activation: str = "tanh", rng: np.random.RandomState | None = None,
                 weights: np.ndarray | None = None, recurrent_weights: np.ndarray | None = None
                 ) -> None:
        rng = _rng(rng)
        self.input_size, self.hidden_size, self.time_window = input_size, hidden_size, time_window
        self.activation = activation  # the name (shadows a method in the reference)
        H = hidden_size
        self.weights = (rng.randn(H, input_size) * np.sqrt(2.0 / H) if weights is None
                        else np.array(weights, np.float64))
        self.recurrent_weights = (rng.randn(H, H) * np.sqrt(2.0 / H) if recurrent_weights is None
                                  else np.array(recurrent_weights, np.float64))
        self.hidden_state = np.zeros(H)
        self.state_history: list[np.ndarray] = []
        self.hparams = dict(TEMPORAL_DEFAULTS)

    def forward(self, x: Any) -> np.ndarray:
        x = _batch(x)
        z = x @ self.weights.T + self.hidden_state @ self.recurrent_weights.T
        self.last_input, self.last_pre_activation = x, z
        y = ACTIVATIONS[self.activation](z)
        self.hidden_state = y.mean(axis=0)
        self.state_history.append(self.hidden_state.copy())
        if len(self.state_history) > self.time_window:
            self.state_history.pop(0)
        return y

    def update(self, lr: float | None = None) -> None:
        del lr

    def backward(self, grad: np.ndarray) -> np.ndarray:
        return (grad * DERIVATIVES[self.activation](self.last_pre_activation)) @ self.weights

    def get_temporal_context(self) -> np.ndarray:
        ctx = np.zeros((self.time_window, self.hidden_size))
        n = len(self.state_history)
        if n:
            ctx[self.time_window - n:] = np.array(self.state_history)
        return ctx

    def reset_state(self) -> None:
        self.hidden_state = np.zeros(self.hidden_size)
        self.state_history = []


# ----------------------------------------------------------------------------------------------
# §2.4 standalone rules (pure W -> W')


class HebbianRule:
    def __init__(self, learning_rate: float = 0.01) -> None:
        self.learning_rate = learning_rate

    def apply(self, W: np.ndarray, pre: np.ndarray, post: np.ndarray) -> np.ndarray:
        return W + self.learning_rate * np.outer(post, pre)


class OjasRule(HebbianRule):
    def apply(self, W: np.ndarray, pre: np.ndarray, post: np.ndarray) -> np.ndarray:
        return W + self.learning_rate * np.outer(post, pre - W.T @ post)


class BCMRule(HebbianRule):
    def __init__(self, learning_rate: float = 0.01, theta: float = 1.0) -> None:
        super().__init__(learning_rate)
        self.theta = theta

    def apply(self, W: np.ndarray, pre: np.ndarray, post: np.ndarray) -> np.ndarray:
        self.theta = 0.9 * self.theta + 0.1 * np.mean(post)  # first (trap 18)
        return W + self.learning_rate * np.outer(post * (post - self.theta), pre)


class STDPRule(HebbianRule):
    def __init__(self, learning_rate: float = 0.01, tau: float = 20.0) -> None:
        super().__init__(learning_rate)
        self.tau = tau  # unused by the reference

    def apply(self, W: np.ndarray, pre: np.ndarray, post: np.ndarray) -> np.ndarray:
        return W + self.learning_rate * (np.outer(post, pre)
                                         - 0.5 * np.outer(post ** 2, pre ** 2))


def make_rule(name: str, **kw: Any) -> HebbianRule:
    rules = {"hebbian": HebbianRule, "oja": OjasRule, "bcm": BCMRule, "stdp": STDPRule}
    try:
        return rules[name.lower()](**kw)
    except KeyError:
        raise ValueError(f"unknown rule {name!r}") from None


# ----------------------------------------------------------------------------------------------
# §2.6 hierarchy


class HierarchicalLevel:
    def __init__(self, level_id: int, input_size: int, output_size: int,
                 temporal_resolution: int = 1) -> None:
        self.level_id, self.input_size, self.output_size = level_id, input_size, output_size
        self.temporal_resolution = temporal_resolution
        self.layers: list[Any] = []
        self.representation: np.ndarray | None = None
        self.last_time_step: int | None = None
        self.buffer: dict[str, Any] = {}

    def add_layer(self, layer: Any) -> None:
        want = self.input_size if not self.layers else _out_size(self.layers[-1])
        got = layer.input_size
        if got != want:
            raise ValueError(f"layer input {got} does not match {want}")
        self.layers.append(layer)
        self.output_size = _out_size(layer)

    def process_time_step(self, x: Any, t: int) -> np.ndarray:
        x = _batch(x)
        if x.shape[1] != self.input_size:
            raise ValueError(f"level {self.level_id}: input width {x.shape[1]} != "
                             f"{self.input_size}")
        if t % self.temporal_resolution != 0:
            return self.representation if self.representation is not None else x
        out = x
        for layer in self.layers:
            out = layer.forward(out)
        self.representation, self.last_time_step = out, t
        return out


def _out_size(layer: Any) -> int:
    return layer.hidden_size if isinstance(layer, TemporalLayer) else layer.output_size



class HierarchyManager:
    def __init__(self) -> None:
        self.levels: list[HierarchicalLevel] = []

    def add_level(self, level: HierarchicalLevel) -> None:
        self.levels.append(level)
        self.levels.sort(key=lambda lv: lv.level_id)

    def _by_id(self, i: int) -> HierarchicalLevel | None:
        return next((lv for lv in self.levels if lv.level_id == i), None)

    def process_hierarchy(self, X: Any, time_steps: int) -> dict[int, list[np.ndarray]]:
        """Level 0 gets X[t]; each later level the output of the level before it (ZOH)."""
        X = np.asarray(X, np.float64)
        out: dict[int, list[np.ndarray]] = {lv.level_id: [] for lv in self.levels}
        for t in range(time_steps):
            current = None
            for lv in self.levels:
                if lv.level_id == 0:
                    current = lv.process_time_step(X[t], t)
                elif current is not None:
                    current = lv.process_time_step(current, t)
                else:
                    continue
                out[lv.level_id].append(current)
            self._communicate(t)
        return out

    def _communicate(self, t: int) -> None:
        """Diagnostics only: bottom-up child messages with energies, top-down context."""
        for lv in reversed(self.levels):
            parent = self._by_id(lv.level_id - 1)
            if lv.level_id >= 1 and parent is not None and lv.representation is not None:
                rep = lv.representation
                parent.buffer[f"child_{lv.level_id}"] = {
                    "level_id": lv.level_id, "representation": rep,
                    "time_step": lv.last_time_step, "energy": float(np.sum(rep ** 2))}
        for lv in self.levels[:-1]:
            child = self._by_id(lv.level_id + 1)
            if child is None or lv.representation is None:
                continue
            msg = {"level_id": lv.level_id, "representation": lv.representation,
                   "time_step": t}
            lv.buffer.update(msg)
            child.buffer.update(msg)


# ----------------------------------------------------------------------------------------------
# §2.7 - §2.9: evolution, controller, meta-optimizer


class EvolutionaryStrategy:
    def __init__(self, population_size: int = 50, sigma: float = 0.1,
                 learning_rate: float = 0.01, elite_fraction: float = 0.2,
                 rng: np.random.RandomState | None = None) -> None:
        self.population_size, self.sigma = population_size, sigma
        self.learning_rate, self.elite_fraction = learning_rate, elite_fraction
        self.rng = rng
        self.mean: np.ndarray | None = None
        self.fitness_history: list[float] = []

    def generate_population(self, mean: Any, eps: np.ndarray | None = None) -> np.ndarray:
        mean = np.asarray(mean, np.float64)
        if mean.ndim != 1:
            raise ValueError("mean must be 1-D")
        self.mean = mean.copy()
        rng = _rng(self.rng)
        rows = []
        for k in range(self.population_size):
            e = rng.randn(mean.shape[0]) if eps is None else eps[k]
            rows.append(mean + self.sigma * e)
        return np.array(rows)

    def n_elites(self) -> int:
        return max(1, int(self.population_size * self.elite_fraction))

    def update_mean(self, mean: Any, population: np.ndarray, fitness: Any) -> None:
        fitness = np.asarray(fitness, np.float64)
        if len(population) != len(fitness):
            raise ValueError("population and fitness lengths differ")
        if len(population) == 0:
            return
        mean = np.asarray(mean, np.float64)
        elites = np.argsort(fitness, kind="stable")[-self.n_elites():]
        self.mean = mean + self.learning_rate * np.mean(population[elites] - mean, axis=0)
        self.fitness_history.append(float(np.mean(fitness)))

    def get_mean(self) -> np.ndarray:
        if self.mean is None:
            raise ValueError("mean not set")
        return self.mean.copy()

    def adapt_sigma(self, delta: float) -> None:
        self.sigma = float(np.clip(self.sigma * (1.1 if delta > 0 else 0.9), 0.001, 1.0))

    def reset_state(self) -> None:
        self.mean, self.fitness_history = None, []


def plasticity_efficiency(module: Any) -> float:
    h = getattr(module, "activity_history", None)
    if not h or len(h) <= 1:
        return 0.5
    post = np.array([p for _, p in h])
    return float(np.mean(np.std(post, axis=0)))


def adaptation_speed(module: Any) -> float:
    h = getattr(module, "activity_history", None)
    if not h or len(h) <= 2:
        return 0.5
    post = np.array([p for _, p in h])
    return float(np.mean(np.linalg.norm(np.diff(post, axis=0), axis=1)))


def stability_plasticity_tradeoff(module: Any) -> float:
    h = getattr(module, "activity_history", None)
    if not h or len(h) <= 5:
        return 0.5
    sp = adaptation_speed(module)
    post = np.array([p for _, p in h[-5:]])
    st = 1.0 / (np.mean(np.std(post, axis=0)) + 1e-8)
    return float(2 * sp * st / (sp + st + 1e-8))


def evaluate_meta_learning_curve(history: Sequence[float]) -> dict[str, float]:
    h = np.asarray(history, np.float64)
    if len(h) < 2:
        return {}
    n = len(h)
    return {"final": float(h[-1]), "initial": float(h[0]), "improvement": float(h[-1] - h[0]),
            "convergence_rate": float((h[-1] - h[0]) / n),
            "stability": float(np.std(h[-min(10, n):])),
            "consistency": float(np.mean(np.diff(h) > 0)), "average": float(np.mean(h))}


class PlasticityController:
    def __init__(self, modules: Sequence[Any], adaptation_rate: float = 0.01,
                 exploration_noise: float = 0.1, rng: np.random.RandomState | None = None
                 ) -> None:
        self.modules = list(modules)
        self.adaptation_rate, self.exploration_noise = adaptation_rate, exploration_noise
        self.es = EvolutionaryStrategy(rng=rng)
        self.sizes = [len(m.hparams) for m in self.modules]
        self.theta0 = 0.01 * np.ones(sum(self.sizes))
        self.theta = self.theta0.copy()
        self.param_history: list[np.ndarray] = []
        self.performance_history: list[Any] = []

    def _write(self, theta: np.ndarray) -> None:
        i = 0
        for m, n in zip(self.modules, self.sizes, strict=True):
            for key, v in zip(list(m.hparams), theta[i:i + n], strict=True):
                m.hparams[key] = float(v)
            i += n

    def adapt_plasticity(self, performance: Any, eps: np.ndarray | None = None) -> None:
        self.performance_history.append(performance)
        pop = self.es.generate_population(self.theta, eps)
        fitness = []
        for cand in pop:
            self._write(cand)
            fitness.append(np.mean([plasticity_efficiency(m) for m in self.modules]))
        self.es.update_mean(self.theta, pop, fitness)
        self.theta = self.es.get_mean()
        self.param_history.append(self.theta.copy())
        self._write(self.theta)

    def set_adaptation_rate(self, x: float) -> None:
        self.adaptation_rate = x
        self.es.learning_rate = x

    def set_exploration_noise(self, x: float) -> None:
        self.exploration_noise = x
        self.es.sigma = x

    def reset_state(self) -> None:
        self.param_history, self.performance_history = [], []
        self.theta = self.theta0.copy()
        self._write(self.theta)


def evaluate_task_data(d: Any) -> float:
    """mean|d| for arrays and lists; d['performance'] for such a dict; 0.5 otherwise."""
    if isinstance(d, np.ndarray | list):
        return float(np.mean(np.abs(d)))
    if isinstance(d, dict) and "performance" in d:
        return float(d["performance"])
    return 0.5


class MetaOptimizer:
    def __init__(self, controller: PlasticityController, outer_optimizer: str = "adam",
                 rng: np.random.RandomState | None = None) -> None:
        self.controller, self.outer_optimizer, self.rng = controller, outer_optimizer, rng
        self.meta = {"adaptation_rate": 0.01, "exploration_noise": 0.1,
                     "task_switch_frequency": 10, "performance_threshold": 0.8}
        self.learning_history: list[float] = []

    def inner(self, task: Callable[[int], Any]) -> float:
        self.controller.reset_state()
        acc, prev, steps = 0.0, 0.0, 0
        for step in range(10):
            d = task(step)
            cur = evaluate_task_data(d)
            acc += cur
            steps += 1
            self.controller.adapt_plasticity(d)
            if step > 0 and abs(cur - prev) < 1e-4:
                break
            prev = cur
        return acc / steps

    def outer(self, p: float) -> None:
        m = self.meta
        if p >= m["performance_threshold"]:
            m["adaptation_rate"] *= 0.99
            m["exploration_noise"] *= 0.95
        else:
            m["adaptation_rate"] *= 1.05
            m["exploration_noise"] *= 1.1
        m["adaptation_rate"] = float(np.clip(m["adaptation_rate"], 1e-4, 0.5))
        m["exploration_noise"] = float(np.clip(m["exploration_noise"], 0.01, 1.0))
        self.controller.set_adaptation_rate(m["adaptation_rate"])
        self.controller.set_exploration_noise(m["exploration_noise"])

    def meta_train(self, n_episodes: int, tasks: Sequence[Callable[[int], Any]],
                   task_indices: Sequence[int] | None = None) -> list[float]:
        rng = _rng(self.rng)
        for ep in range(n_episodes):
            k = rng.randint(0, len(tasks)) if task_indices is None else task_indices[ep]
            p = self.inner(tasks[k])
            self.outer(p)
            self.learning_history.append(p)
        return self.learning_history

    def evaluate_meta_performance(self) -> dict[str, float]:
        h = np.asarray(self.learning_history, np.float64)
        if not len(h):
            return {"average": 0.0, "improvement": 0.0, "stability": 0.0,
                    "convergence_rate": 0.0}
        return {"average": float(h.mean()), "improvement": float(h[-1] - h[0]),
                "stability": float(np.std(h[-10:])) if len(h) >= 10 else 0.0,
                "convergence_rate": float((h[-1] - h[0]) / len(h))}
