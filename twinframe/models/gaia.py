"""GAIA v3.1, framework-neutral part (spec gaia.md §1): model config (architecture and agent
dynamics, §1.1), run config (optimizers, environment, noise), presets (§6), the layout of §1.11
as data, the canonical NumPy init, `recognise` and `check_trainable`; plus the parity noise
stream of §3 and the inverse-CDF categorical. Imports neither torch nor jax.

Choices where the spec is silent (ours):
- The agent is one torch module with children `wm` (ensemble) and `am` (action model) and a
  buffer `preferred_state` (1, S); its state_dict keys are therefore `wm.models.{i}.*`,
  `am.net.*` and `preferred_state` (the spec's `agent.preferred_state`).
- Canonical init: tensor k of the state-dict order draws from `default_rng([seed, 7, k])` in
  float64 (plastic W ~ N(0, 1)*0.02, nn.Linear weights and biases ~ U(+-1/sqrt(fan_in))), then
  cast to float32; LayerNorm 1/0, traces, histories, counters and g are zero. A faithful torch
  init (the reference's global-generator order, §1.8) lives in `torch_ref.gaia.faithful_state`.
- `run.lr` is the world-model learning rate (wm_lr; the contract's `lr`), `run.policy_lr` the
  action model's. `run.noise` is "parity" (§3 stream: the only one both engines can share),
  "torch" (the reference's torch generator, R4-R6) or "native" (JAX keys, §1.10); the trainers
  implement "parity" and refuse the others.
- `run.torch_threads` (default 1): intra-op threads of the torch engine's agent steps (0 =
  torch's setting); the results do not depend on it, the speed does (batch-1 steps).
- Episodes: the host runs LeakyReach episodes of `run.episode_len` steps; at each reset the state
  is s0 = 0, or U[-r, r]^S drawn from `default_rng([noise_seed, 1, episode])` when
  `run.start_radius` = r > 0.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np

from twinframe.errors import ConfigError
from twinframe.models.base import FrozenConfig
from twinframe.models.layout import Layout, Row, Rule, Table

# Hard-coded constants of the reference (spec §1.1).
ALPHA_FAST = 0.1
ALPHA_SLOW = 0.05
HOMEO_EPS = 1e-6
Q_FLOOR = 1e-5
AM_HIDDEN = 64
STD_MIN, STD_MAX = 0.01, 1.0
CLIP_NORM = 1.0
LOG_SQRT_2PI = 0.9189385332046727
LN_EPS = 1e-5
STREAM_INIT = 7
STREAM_START = 1
TIE_EPS = 1e-6
NOISES = ("parity", "torch", "native")


@dataclasses.dataclass(frozen=True)
class GaiaConfig(FrozenConfig):
    """GaiaConfigEnhanced (spec §1.1) minus the optimizer learning rates (run config): sizes,
    plastic-trace dynamics, homeostasis, EFE weights. Defaults are the reference values."""

    state_dim: int = 1
    action_dim: int = 1
    hidden_dim: int = 64
    n_ensemble: int = 5
    fast_trace_decay: float = 0.95
    fast_trace_lr: float = 0.05
    slow_trace_decay: float = 0.99
    slow_trace_lr: float = 0.01
    homeostatic_target: float = 5.0
    planning_samples: int = 30
    exploration_weight: float = 0.5
    temperature: float = 0.1
    weight_scale: float = 5.0
    track_metrics: bool = True
    trace_history_len: int = 1000
    plasticity_enabled: bool = True
    ste: bool = False

    def validate(self) -> None:
        for name in ("state_dim", "action_dim", "hidden_dim", "planning_samples",
                     "trace_history_len"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1")
        if self.n_ensemble < 2:
            raise ConfigError("n_ensemble must be >= 2 (the unbiased ensemble std of one member "
                              "is NaN; spec gaia.md §1.5)")
        if self.temperature <= 0 or self.homeostatic_target <= 0:
            raise ConfigError("temperature and homeostatic_target must be > 0")

    @property
    def in_dim(self) -> int:
        """D = S + A, the world-model input width."""
        return self.state_dim + self.action_dim


@dataclasses.dataclass(frozen=True)
class GaiaRun(FrozenConfig):
    """Run config: seed of the init, AdamW of both optimizers (torch defaults, spec §1.7), the
    LeakyReach environment (§1.9) and the noise source (§3)."""

    seed: int = 0
    lr: float = 1e-3
    policy_lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.01
    grad_clip_norm: float = CLIP_NORM
    batch_size: int = 1
    checkpoint_every: int = 0
    noise: str = "parity"
    noise_seed: int = 123
    sigma_env: float = 0.01
    start_radius: float = 0.0
    episode_len: int = 200
    torch_threads: int = 1

    def validate(self) -> None:
        if self.torch_threads < 0:
            raise ConfigError("torch_threads must be >= 0 (0: torch's own setting)")
        if self.noise not in NOISES:
            raise ConfigError(f"noise must be one of {NOISES}, got {self.noise!r}")
        if self.lr <= 0 or self.policy_lr <= 0 or self.eps <= 0:
            raise ConfigError("need lr > 0, policy_lr > 0, eps > 0")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError("need 0 <= beta1, beta2 < 1")
        if self.batch_size != 1:
            raise ConfigError("batch_size must be 1 (the agent learns from one transition)")
        if self.episode_len < 1 or self.checkpoint_every < 0 or self.start_radius < 0:
            raise ConfigError("need episode_len >= 1, checkpoint_every >= 0, start_radius >= 0")
        if not 0 <= self.seed < 2**32 or not 0 <= self.noise_seed < 2**63:
            raise ConfigError("seed and noise_seed must be non-negative")


def check_trainable(cfg: GaiaConfig, run: GaiaRun) -> None:
    """Refuse (one line) what the engines do not implement: a noise source only one framework
    can draw (torch's generator, JAX keys)."""
    del cfg
    if run.noise != "parity":
        raise ConfigError(f"noise={run.noise!r} is not implemented by the trainers (only one "
                          "framework can draw it); use noise='parity'")


TINY = GaiaConfig(hidden_dim=8, n_ensemble=3, planning_samples=6, trace_history_len=5)
DEFAULT = GaiaConfig()
PRESETS: dict[str, tuple[GaiaConfig, GaiaRun]] = {
    "tiny": (TINY, GaiaRun(episode_len=12)),
    "tiny_m": (TINY.replace(state_dim=3, action_dim=2), GaiaRun(episode_len=12)),
    "tiny_nometrics": (TINY.replace(track_metrics=False), GaiaRun(episode_len=12)),
    "default": (DEFAULT, GaiaRun()),
    "stability": (DEFAULT, GaiaRun(sigma_env=0.1)),
    "bench": (GaiaConfig(state_dim=16, action_dim=8, hidden_dim=1024, n_ensemble=16,
                         planning_samples=4096), GaiaRun(episode_len=1000)),
}


# ----------------------------------------------------------------------------------------------
# Layout (spec §1.11)


PLASTIC_BUFFERS = ("fast_trace", "slow_trace")
HISTORY_BUFFERS = ("trace_norm_history", "update_magnitude_history")
AM_ROWS = (("net.0.weight", "dense0", "kernel", Rule.TRANSPOSE),
           ("net.0.bias", "dense0", "bias", Rule.IDENTITY),
           ("net.2.weight", "dense1", "kernel", Rule.TRANSPOSE),
           ("net.2.bias", "dense1", "bias", Rule.IDENTITY))


def member_rows(cfg: GaiaConfig, i: int) -> list[Row]:
    """Rows of member i in its state-dict order (params, then buffers, per child)."""
    H, D, S, L, E = cfg.hidden_dim, cfg.in_dim, cfg.state_dim, cfg.trace_history_len, \
        cfg.n_ensemble
    st = (i, E)
    rows: list[Row] = []
    p = f"wm.models.{i}"
    for name, shape in (("l1", (H, D)), ("l2", (H, H))):
        rows.append(Row(f"{p}.{name}.weight", ("params", "wm", name, "weight"), Rule.IDENTITY,
                        shape, stack=st))
        for b in PLASTIC_BUFFERS:
            rows.append(Row(f"{p}.{name}.{b}", ("state", "wm", name, b), Rule.IDENTITY, shape,
                            stack=st))
        if cfg.track_metrics:
            for b in HISTORY_BUFFERS:
                rows.append(Row(f"{p}.{name}.{b}", ("state", "wm", name, b), Rule.IDENTITY,
                                (L,), stack=st))
            rows.append(Row(f"{p}.{name}.step_counter", ("state", "wm", name, "step_counter"),
                            Rule.IDENTITY, (), dtype="int64", stack=st))
    rows.append(Row(f"{p}.l3.weight", ("params", "wm", "l3", "kernel"), Rule.TRANSPOSE, (S, H),
                    stack=st))
    rows.append(Row(f"{p}.l3.bias", ("params", "wm", "l3", "bias"), Rule.IDENTITY, (S,),
                    stack=st))
    for ln in ("ln1", "ln2"):
        rows.append(Row(f"{p}.{ln}.weight", ("params", "wm", ln, "scale"), Rule.IDENTITY, (H,),
                        stack=st))
        rows.append(Row(f"{p}.{ln}.bias", ("params", "wm", ln, "bias"), Rule.IDENTITY, (H,),
                        stack=st))
    return rows


def torch_shapes(cfg: GaiaConfig) -> dict[str, tuple[int, ...]]:
    """state_dict key -> shape, in the agent module's state-dict order."""
    return {r.torch_key: r.shape for r in layout(cfg).table.rows}


def layout(cfg: GaiaConfig) -> Layout:
    """Rows of §1.11: plastic weights stay (out, in) and stack over members on axis 0; traces,
    histories and counters (int64 torch / int32 JAX) are `state` rows; l3 and the action
    model's Linear weights transpose to kernels; LayerNorm weight -> scale; g is a `consts`
    row. Two optimizers (world model, action model: the policy step is gated) -> two step
    counters (`step_groups`), torch AdamW moments <-> optax mu/nu."""
    S, A = cfg.state_dim, cfg.action_dim
    rows = [Row("preferred_state", ("consts", "preferred_state"), Rule.IDENTITY, (1, S))]
    for i in range(cfg.n_ensemble):
        rows += member_rows(cfg, i)
    shapes = {"net.0.weight": (AM_HIDDEN, S), "net.0.bias": (AM_HIDDEN,),
              "net.2.weight": (2 * A, AM_HIDDEN), "net.2.bias": (2 * A,)}
    for key, node, leaf, rule in AM_ROWS:
        rows.append(Row(f"am.{key}", ("params", "am", node, leaf), rule, shapes[key]))
    return Layout(Table(tuple(rows)), step_groups=("wm", "am"))


def layout_size(cfg: GaiaConfig) -> int:
    """Rows of `layout(cfg)`, without building it (bounds configs read from files): g, then per
    member two plastic layers (weight, traces; histories and counter with track_metrics) and
    l3/ln1/ln2 (2 rows each), then the action model's rows."""
    plastic = 1 + len(PLASTIC_BUFFERS) + (len(HISTORY_BUFFERS) + 1) * cfg.track_metrics
    return 1 + cfg.n_ensemble * (2 * plastic + 6) + len(AM_ROWS)


# ----------------------------------------------------------------------------------------------
# Canonical init


def canonical_init(cfg: GaiaConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Framework-neutral init: torch-layout state of float32 arrays (int64 counters)."""
    shapes = torch_shapes(cfg)
    fan_in = {"l3": cfg.hidden_dim, "0": cfg.state_dim, "2": AM_HIDDEN}
    state: dict[str, np.ndarray] = {}
    for k, (key, shape) in enumerate(shapes.items()):
        if key.endswith("step_counter"):
            state[key] = np.zeros(shape, np.int64)
            continue
        rng = np.random.default_rng([seed, STREAM_INIT, k])
        parent = (key.split(".")[-2:] + [""])[0]
        if key.endswith(("l3.bias", "net.0.bias", "net.2.bias")):
            b = 1.0 / math.sqrt(fan_in[parent])
            x = rng.uniform(-b, b, size=shape)
        elif key.endswith(("l3.weight", "net.0.weight", "net.2.weight")):
            b = 1.0 / math.sqrt(shape[1])
            x = rng.uniform(-b, b, size=shape)
        elif key.endswith(("l1.weight", "l2.weight")):
            x = rng.standard_normal(shape) * 0.02
        elif key.endswith(("ln1.weight", "ln2.weight")):
            x = np.ones(shape)
        else:
            x = np.zeros(shape)
        state[key] = x.astype(np.float32)
    return state


def recognise(state: Mapping[str, np.ndarray]) -> GaiaConfig | None:
    """The config implied by a GAIA agent state_dict (keys `wm.models.{i}.*`, `am.net.*`), or
    None. From shapes: E, H, S, A, L (or track_metrics = False when there are no histories).
    Not in the weights (P, trace dynamics, EFE weights): the first preset with the same layout,
    else the default preset's."""
    if "wm.models.0.l1.weight" not in state or "am.net.2.weight" not in state:
        return None
    try:
        E = 0
        while f"wm.models.{E}.l1.weight" in state:
            E += 1
        H, D = (int(x) for x in np.shape(state["wm.models.0.l1.weight"]))
        S = int(np.shape(state["wm.models.0.l3.weight"])[0])
        A2 = int(np.shape(state["am.net.2.weight"])[0])
        track = "wm.models.0.l1.trace_norm_history" in state
        fields: dict[str, object] = {"n_ensemble": E, "hidden_dim": H, "state_dim": S,
                                     "action_dim": A2 // 2, "track_metrics": track}
        if track:
            fields["trace_history_len"] = int(np.shape(
                state["wm.models.0.l1.trace_norm_history"])[0])
        if A2 % 2 or D != S + A2 // 2:
            return None
        implied = DEFAULT.replace(**fields)
    except (KeyError, IndexError, ValueError, ConfigError):
        return None
    want = {k: tuple(np.shape(v)) for k, v in state.items()}
    for cand in (m for m, _ in PRESETS.values()):
        if torch_shapes(cand) == want:
            return cand
    return implied if torch_shapes(implied) == want else None


def reference_saves(key: str) -> bool:
    """Whether the reference code's state_dicts hold this agent key: not the step counters
    (Python attributes there) nor g (an attribute, zeros) (§1.11)."""
    return not key.endswith(".step_counter") and key != "preferred_state"


def reference_fill(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The agent keys a reference v3.1 file lacks, filled as §1.11 loads it: counters 0 (int64,
    one per plastic layer with histories), g = zeros (1, S) (the reference's value). The
    reference agent is no nn.Module: its users save `{'wm': agent.wm.state_dict(), 'am':
    agent.am.state_dict()}` (or those keys prefixed `wm.`/`am.` in one dict). {} unless `state`
    has the agent's keys and none of the keys the reference does not save."""
    if "wm.models.0.l1.weight" not in state or "am.net.2.weight" not in state or \
            not all(reference_saves(k) for k in state):
        return {}
    fill = {k.rsplit(".", 1)[0] + ".step_counter": np.zeros((), np.int64)
            for k in state if k.endswith(".update_magnitude_history")}
    S = int(np.shape(state.get("wm.models.0.l3.weight", np.zeros((1, 1))))[0])
    fill["preferred_state"] = np.zeros((1, S), np.float32)
    return fill


# ----------------------------------------------------------------------------------------------
# Noise (spec §3) and the inverse-CDF categorical


@dataclasses.dataclass(frozen=True)
class StepNoise:
    """Parity noise of one env step: eps f32 (P, A), u f32 scalar, xi f32 (1, S)."""

    eps: np.ndarray
    u: np.float32
    xi: np.ndarray


class NoiseStream:
    """§3 parity stream: rng = default_rng(noise_seed); per env step eps_t = standard_normal(
    (P, A)), u_t = random(), xi_t = standard_normal((1, S)), each cast to float32. Resumable:
    `state()` / `NoiseStream.from_state` carry the bit generator's state (JSON-able)."""

    def __init__(self, cfg: GaiaConfig, noise_seed: int) -> None:
        self.P, self.A, self.S = cfg.planning_samples, cfg.action_dim, cfg.state_dim
        self.rng = np.random.default_rng(noise_seed)

    def next(self) -> StepNoise:
        eps = self.rng.standard_normal((self.P, self.A)).astype(np.float32)
        u = np.float32(self.rng.random())
        xi = self.rng.standard_normal((1, self.S)).astype(np.float32)
        return StepNoise(eps, u, xi)

    def take(self, n: int) -> StepNoise:
        """n steps stacked: eps (n, P, A), u (n,), xi (n, 1, S)."""
        steps = [self.next() for _ in range(n)]
        return StepNoise(np.stack([s.eps for s in steps]),
                         np.array([s.u for s in steps], np.float32),
                         np.stack([s.xi for s in steps]))

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state


def inverse_cdf(probs: np.ndarray, u: float) -> tuple[int, bool]:
    """§3: c = cumsum(pi) (f32), thr = f32(u)*c[-1] (f32), idx = min(#{c_k <= thr}, P-1);
    tie flag = min |c_k - thr| < 1e-6. NumPy float32 (host-side reference of both engines)."""
    c = np.cumsum(np.asarray(probs, np.float32), dtype=np.float32)
    thr = np.float32(np.float32(u) * c[-1])
    idx = min(int(np.searchsorted(c, thr, side="right")), len(c) - 1)
    return idx, bool(np.min(np.abs(c - thr)) < TIE_EPS)


def start_state(cfg: GaiaConfig, run: GaiaRun, episode: int) -> np.ndarray:
    """s0 of an episode (1, S) f32: zeros, or U[-r, r]^S from default_rng([noise_seed, 1, ep])."""
    if run.start_radius <= 0:
        return np.zeros((1, cfg.state_dim), np.float32)
    rng = np.random.default_rng([run.noise_seed, STREAM_START, episode])
    r = run.start_radius
    return rng.uniform(-r, r, (1, cfg.state_dim)).astype(np.float32)
