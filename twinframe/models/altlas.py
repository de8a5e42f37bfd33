"""AltLAS, framework-neutral part: config (altlas.md §6, §10), torch-layout shapes (altlas.md §2.3),
canonical NumPy init (altlas.md §2.2), the Appendix-A golden parameters, host-side Gumbel noise
(altlas.md §3.3),
sampling-modifier tables (altlas.md §3.4) and the host-side learner bookkeeping of altlas.md
§4.1/§4.3 (baseline EMA,
reward normalisation, entropy annealing). Imports neither torch nor jax.

Choices where the spec is silent (ours):
- Only Variant A (altlas.md §2.1) exists; Variant B (RH attention layout, altlas.md §2.4) is not
  implemented.
- `vocab` names one of the bundled vocabularies; `vocab_size` must equal its size (a custom vocab
  name skips that check). Special ids are fixed: PAD 0, SOS 1, EOS 2, UNK 3 (altlas.md §1.1).
- Canonical init draws every tensor from its own stream `default_rng([seed, 1, k])`, k = the
  tensor's state-dict index, in float64, then casts to float32 (so changing one tensor's scheme,
  e.g. `fc_bias_init`, leaves the others unchanged). `seed` comes from the run config.
- Orthogonal init: QR of a float64 Gaussian drawn in torch layout `[G*H, H]`, columns
  sign-corrected by sign(diag(R)) (torch's `orthogonal_` recipe); a zero diagonal entry keeps +.
- Parity noise (altlas.md §3.3): `PCG64(SeedSequence([seed, k]))`, exactly as specified.
- Grammar boost (altlas.md §3.4) enters both frameworks as a host-computed float32 table
  `log(g0) + t*log(delta)` (float64, then cast), so both add the identical constant at step t.
- `LearnerState.successes` counts scores >= `success_threshold`; unscored (skipped) episodes are
  passed as NaN and never count. Attempts count every generated episode.
- `stop_on` is validated as 'first_success' | 'never' | 'converge:N'.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

from twinframe.errors import ConfigError
from twinframe.models.base import FrozenConfig
from twinframe.models.layout import Layout, Row, Rule, Table

PAD_ID, SOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
SPECIAL_IDS = (PAD_ID, SOS_ID, UNK_ID)  # masked by `mask_special_tokens` (EOS never is)
VOCAB_SIZES: dict[str, int] = {"v0_46": 46, "v1_63": 63, "abstract_53": 53}
RELEASE_OF_VOCAB: dict[str, str] = {"v0_46": "R0", "v1_63": "R1", "abstract_53": "RH"}
CELLS = {"lstm": 4, "gru": 3}
INIT_SCHEMES = ("altlas", "torch_default")
FC_BIAS_INITS = ("zeros", "uniform")
ENTROPY_EPS = 1e-9
CLIP_EPS = 1e-6
STREAM_INIT = 1


@dataclasses.dataclass(frozen=True)
class AltLASConfig(FrozenConfig):
    """AltLAS model config (altlas.md §1-§4): tokenizer, architecture, init scheme, the
    generator's logit modifiers and the loss's EOS credit; what the layout, the init and the
    modules consume. Defaults: the R1 model ('ours default' of altlas.md §6)."""

    vocab: str = "v1_63"
    vocab_size: int = 63
    indent_mode: str = "structural"
    embed_dim: int = 64
    hidden_dim: int = 128
    num_layers: int = 1
    cell: str = "lstm"
    dropout: float = 0.0
    init: str = "altlas"
    fc_bias_init: str = "zeros"
    max_gen_len: int = 50
    temperature: float = 1.0
    top_k: int = 0
    mask_special_tokens: bool = False
    repetition_penalty: float = 1.0
    initial_grammar_boost: float = 1.0
    grammar_boost_decay: float = 1.0
    credit_eos: bool = True

    def validate(self) -> None:
        if self.vocab in VOCAB_SIZES and self.vocab_size != VOCAB_SIZES[self.vocab]:
            raise ConfigError(
                f"vocab_size {self.vocab_size} does not match vocab {self.vocab} "
                f"({VOCAB_SIZES[self.vocab]} tokens)"
            )
        if self.vocab_size < 4:
            raise ConfigError("vocab_size must be >= 4 (PAD, SOS, EOS, UNK)")
        if self.cell not in CELLS:
            raise ConfigError(f"cell must be one of {tuple(CELLS)}, got {self.cell!r}")
        if self.init not in INIT_SCHEMES:
            raise ConfigError(f"init must be one of {INIT_SCHEMES}, got {self.init!r}")
        if self.fc_bias_init not in FC_BIAS_INITS:
            raise ConfigError(f"fc_bias_init must be one of {FC_BIAS_INITS}")
        if self.indent_mode not in ("literal", "structural"):
            raise ConfigError("indent_mode must be 'literal' or 'structural'")
        for name in ("embed_dim", "hidden_dim", "num_layers", "max_gen_len"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("dropout must lie in [0, 1)")
        if self.temperature <= 0:
            raise ConfigError("temperature must be > 0")
        if not 0 <= self.top_k <= self.vocab_size:
            raise ConfigError("top_k must lie in [0, vocab_size]")
        for name in ("repetition_penalty", "initial_grammar_boost", "grammar_boost_decay"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0 (1.0 = off)")

    @property
    def gates(self) -> int:
        """G = 4 (LSTM) or 3 (GRU)."""
        return CELLS[self.cell]

    @property
    def release(self) -> str:
        """'R0' / 'R1' / 'RH' by vocabulary (custom vocabularies: 'custom')."""
        return RELEASE_OF_VOCAB.get(self.vocab, "custom")


@dataclasses.dataclass(frozen=True)
class AltLASRun(FrozenConfig):
    """AltLAS run config (altlas.md §4-§6): optimizer, learner bookkeeping, batch, runner,
    task, executor and scorer."""

    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    entropy_coef: float = 0.01
    min_entropy_coef: float | None = None
    grad_clip_norm: float = 1.0
    baseline_ema_alpha: float = 0.1
    reward_normalization: bool = False
    batch_size: int = 1
    max_attempts: int = 10000
    stop_on: str = "first_success"
    duplicate_policy: str = "skip"
    seed: int = 0
    checkpoint_every: int = 0
    task: str = "benchmark_add_two_numbers"
    timeout: float = 5.0
    success_threshold: float = 0.99
    scorer: str = "exact"
    unsafe_no_sandbox: bool = False  # run programs without OS isolation (`--unsafe-no-sandbox`)

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ConfigError("batch_size must be >= 1")
        if not 0.0 <= self.baseline_ema_alpha <= 1.0:
            raise ConfigError("baseline_ema_alpha must lie in [0, 1]")
        if self.lr <= 0 or self.eps <= 0 or not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError("need lr > 0, eps > 0, 0 <= beta1, beta2 < 1")
        if self.min_entropy_coef is not None and self.min_entropy_coef > self.entropy_coef:
            raise ConfigError("min_entropy_coef must be <= entropy_coef (the maximum)")
        if not 0 <= self.seed < 2**32:
            raise ConfigError("seed must lie in [0, 2**32)")
        if self.duplicate_policy not in ("skip", "off"):
            raise ConfigError("duplicate_policy must be 'skip' or 'off'")
        if self.scorer not in ("exact", "shaped"):
            raise ConfigError("scorer must be 'exact' or 'shaped'")
        if self.stop_on not in ("first_success", "never"):
            head, _, n = self.stop_on.partition(":")
            if head != "converge" or not n.isdigit() or int(n) < 1:
                raise ConfigError("stop_on must be 'first_success', 'never' or 'converge:N'")
        if self.max_attempts < 1 or self.checkpoint_every < 0 or self.timeout <= 0:
            raise ConfigError("need max_attempts >= 1, checkpoint_every >= 0, timeout > 0")


def check_trainable(cfg: AltLASConfig, run: AltLASRun) -> None:
    """Refuse (one line) what the engines do not implement: dropout (needs injected masks from
    the host in both frameworks; not wired) and the grammar boost (needs the grammar table of
    the task's vocabulary in both generators; not wired)."""
    del run
    if cfg.dropout > 0:
        raise ConfigError(f"dropout={cfg.dropout:g} is not implemented by the trainers (no "
                          "injected dropout masks); use dropout=0")
    if uses_grammar(cfg):
        raise ConfigError("initial_grammar_boost != 1 (grammar-boosted sampling) is not "
                          "implemented by the trainers; use 1.0")


_TINY = AltLASConfig(embed_dim=16, hidden_dim=32, max_gen_len=16)
_GOLDEN = AltLASConfig(embed_dim=8, hidden_dim=16, num_layers=2, max_gen_len=7)
_RH = AltLASConfig(vocab="abstract_53", vocab_size=53, indent_mode="literal", embed_dim=96,
                   hidden_dim=192, num_layers=2, fc_bias_init="uniform", max_gen_len=200,
                   top_k=10, repetition_penalty=0.85, initial_grammar_boost=2.2,
                   grammar_boost_decay=0.985, credit_eos=True)
DEFAULT = AltLASConfig()
PRESETS: dict[str, tuple[AltLASConfig, AltLASRun]] = {
    "tiny": (_TINY, AltLASRun(batch_size=4)),
    "tiny_gru": (_TINY.replace(cell="gru"), AltLASRun(batch_size=4)),
    "small": (AltLASConfig(embed_dim=32, hidden_dim=64, max_gen_len=24), AltLASRun(batch_size=8)),
    "default": (DEFAULT, AltLASRun()),
    "r1": (AltLASConfig(indent_mode="literal", credit_eos=False), AltLASRun()),
    "r0": (AltLASConfig(vocab="v0_46", vocab_size=46, indent_mode="literal", init="torch_default",
                        credit_eos=False),
           AltLASRun(entropy_coef=0.0, grad_clip_norm=0.0, baseline_ema_alpha=0.0)),
    "rh": (_RH, AltLASRun(entropy_coef=0.20, min_entropy_coef=0.05, grad_clip_norm=2.5,
                          baseline_ema_alpha=0.25, reward_normalization=True,
                          max_attempts=100000, stop_on="converge:5", duplicate_policy="off",
                          success_threshold=0.92, scorer="shaped")),
    "bench": (AltLASConfig(embed_dim=256, hidden_dim=1024, num_layers=2, max_gen_len=64),
              AltLASRun(batch_size=1024, duplicate_policy="off")),
    "bench-xl": (AltLASConfig(embed_dim=512, hidden_dim=2048, num_layers=2, max_gen_len=64),
                 AltLASRun(batch_size=512, duplicate_policy="off")),
    # Appendix A model (golden numbers): V=63, E=8, H=16, L=2.
    "golden": (_GOLDEN, AltLASRun()),
    "golden_gru": (_GOLDEN.replace(cell="gru"), AltLASRun()),
}


# ----------------------------------------------------------------------------------------------
# Shapes and init


def rnn_prefix(cfg: AltLASConfig) -> str:
    """'lstm' or 'gru' (the torch submodule name, altlas.md §2.3)."""
    return cfg.cell


def torch_shapes(cfg: AltLASConfig) -> dict[str, tuple[int, ...]]:
    """state_dict key -> torch shape, in `named_parameters()` order (= Adam state index)."""
    V, E, H, G = cfg.vocab_size, cfg.embed_dim, cfg.hidden_dim, cfg.gates
    p = rnn_prefix(cfg)
    shapes: dict[str, tuple[int, ...]] = {"embedding.weight": (V, E)}
    for k in range(cfg.num_layers):
        fan_in = E if k == 0 else H
        shapes[f"{p}.weight_ih_l{k}"] = (G * H, fan_in)
        shapes[f"{p}.weight_hh_l{k}"] = (G * H, H)
        shapes[f"{p}.bias_ih_l{k}"] = (G * H,)
        shapes[f"{p}.bias_hh_l{k}"] = (G * H,)
    shapes["fc.weight"] = (V, H)
    shapes["fc.bias"] = (V,)
    return shapes


def param_count(cfg: AltLASConfig) -> int:
    """V*E + sum_k G*H*(in_k + H + 2) + H*V + V (altlas.md §2.3)."""
    return sum(int(np.prod(s)) for s in torch_shapes(cfg).values())


def xavier_bound(shape: tuple[int, ...]) -> float:
    """sqrt(6 / (fan_in + fan_out)) of a torch-layout [out, in] matrix."""
    fan_out, fan_in = shape
    return math.sqrt(6.0 / (fan_in + fan_out))


def orthogonal_np(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """torch `orthogonal_` recipe in float64: QR of N(0,1) [rows, cols], sign-corrected."""
    rows, cols = shape
    a = rng.standard_normal((rows, cols))
    if rows < cols:
        a = a.T
    q, r = np.linalg.qr(a)
    d = np.sign(np.diag(r))
    q = q * np.where(d == 0, 1.0, d)[None, :]
    return q.T if rows < cols else q


def _init_tensor(
    key: str, shape: tuple[int, ...], rng: np.random.Generator, cfg: AltLASConfig
) -> np.ndarray:
    """One tensor of the chosen scheme (altlas.md §2.2), float64."""
    H = cfg.hidden_dim
    leaf = key.split(".")[-1]
    if cfg.init == "torch_default":
        if key == "embedding.weight":
            w = rng.standard_normal(shape)
            w[PAD_ID] = 0.0
            return w
        b = 1.0 / math.sqrt(H)
        return rng.uniform(-b, b, size=shape)
    if key in ("embedding.weight", "fc.weight") or leaf.startswith("weight_ih"):
        b = xavier_bound(shape)
        return rng.uniform(-b, b, size=shape)
    if leaf.startswith("weight_hh"):
        return orthogonal_np(rng, shape)  # type: ignore[arg-type]
    if leaf.startswith("bias_"):
        w = np.zeros(shape)
        if cfg.cell == "lstm":
            w[H:2 * H] = 1.0
        return w
    if key == "fc.bias":
        return np.zeros(shape) if cfg.fc_bias_init == "zeros" else rng.uniform(-0.1, 0.1, shape)
    raise KeyError(key)


def canonical_init(cfg: AltLASConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Framework-neutral init (altlas.md §2.2): torch-layout state_dict of float32 NumPy arrays."""
    state = {}
    for k, (key, shape) in enumerate(torch_shapes(cfg).items()):
        rng = np.random.default_rng([seed, STREAM_INIT, k])
        state[key] = _init_tensor(key, shape, rng, cfg).astype(np.float32)
    return state


def golden_state(cfg: AltLASConfig) -> dict[str, np.ndarray]:
    """Appendix A parameters: element j of tensor k = 0.2*sin(0.37*j + 1.1*k + 0.5) (f64 -> f32)."""
    state = {}
    for k, (key, shape) in enumerate(torch_shapes(cfg).items()):
        j = np.arange(int(np.prod(shape)), dtype=np.float64)
        state[key] = (0.2 * np.sin(0.37 * j + 1.1 * k + 0.5)).reshape(shape).astype(np.float32)
    return state


# ----------------------------------------------------------------------------------------------
# Injected randomness and sampling modifiers (altlas.md §3.3, §3.4)


def gumbel_noise(seed: int, k: int, batch: int, steps: int, vocab: int) -> np.ndarray:
    """Parity-mode Gumbel noise g: float32 [B, T, V] for update k (altlas.md §3.3), made in
    float64."""
    gen = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, k])))
    u = gen.uniform(size=(batch, steps, vocab))
    u = np.maximum(u, np.finfo(np.float32).tiny)
    return (-np.log(-np.log(u))).astype(np.float32)


def grammar_boost_table(cfg: AltLASConfig) -> np.ndarray:
    """bias_t = log(g0 * delta**t) for t = 0..T-1: float32 [T] (float64 maths, our choice)."""
    t = np.arange(cfg.max_gen_len, dtype=np.float64)
    g0, d = cfg.initial_grammar_boost, cfg.grammar_boost_decay
    return (math.log(g0) + t * math.log(d)).astype(np.float32)


def grammar_matrix(tokens: Sequence[str], rules: Mapping[str, Sequence[str]]) -> np.ndarray:
    """G[prev, v] in {0, 1}: float32 [V, V] from a rule table keyed by token text (altlas.md
    §3.4)."""
    ids = {t: i for i, t in enumerate(tokens)}
    G = np.zeros((len(tokens), len(tokens)), np.float32)
    for prev, nxts in rules.items():
        if prev in ids:
            for nxt in nxts:
                if nxt in ids:
                    G[ids[prev], ids[nxt]] = 1.0
    return G


def uses_grammar(cfg: AltLASConfig) -> bool:
    return cfg.initial_grammar_boost != 1.0


def teacher_inputs(tokens: np.ndarray) -> np.ndarray:
    """x[:, 0] = SOS, x[:, t] = tokens[:, t-1] (altlas.md §4.1). tokens: int [B, T] -> int32 [B,
    T]."""
    tokens = np.asarray(tokens, np.int32)
    return np.concatenate([np.full((tokens.shape[0], 1), SOS_ID, np.int32), tokens[:, :-1]], 1)


# ----------------------------------------------------------------------------------------------
# Host-side learner bookkeeping (altlas.md §4.1, §4.3): shared by both frameworks, float64 scalars.


@dataclasses.dataclass(frozen=True)
class LearnerState:
    """Baseline b (float64), reward statistics (n, sum r, sum r^2), attempts and successes."""

    baseline: float = 0.0
    reward_n: int = 0
    reward_sum: float = 0.0
    reward_sq: float = 0.0
    attempts: int = 0
    successes: int = 0
    updates: int = 0


@dataclasses.dataclass(frozen=True)
class UpdateInputs:
    """What one learn call needs: advantages A [B] f32, weights w [B] f32, beta (f32 scalar),
    normalised rewards r~ [B] f64 (NaN where w = 0), and the state after the update."""

    advantages: np.ndarray
    weights: np.ndarray
    beta: np.float32
    r_tilde: np.ndarray
    state: LearnerState

    @property
    def skip(self) -> bool:
        """B_eff = 0: no optimizer step at all (altlas.md §4.1)."""
        return not bool(self.weights.any())


def target_mask(tokens: np.ndarray, valid: np.ndarray, credit_eos: bool) -> np.ndarray:
    """m_bt = valid ∧ (credit_eos ∨ token != EOS): bool [B, T] (altlas.md §4.1)."""
    valid = np.asarray(valid, bool)
    return valid if credit_eos else valid & (np.asarray(tokens) != EOS_ID)


def prepare_update(
    scores: np.ndarray,
    keep: np.ndarray,
    tokens: np.ndarray,
    valid: np.ndarray,
    state: LearnerState,
    cfg: AltLASConfig,
    run: AltLASRun,
) -> UpdateInputs:
    """altlas.md §4.1/§4.3 host side. scores: f64 [B] (NaN = not scored); keep: bool [B] (False =
    unsafe or
    duplicate); tokens, valid: [B, T]. w_b = keep_b ∧ (episode has a target)."""
    scores = np.asarray(scores, np.float64)
    has_target = target_mask(tokens, valid, cfg.credit_eos).any(axis=1)
    w = np.asarray(keep, bool) & has_target & ~np.isnan(scores)
    attempts = state.attempts + len(scores)
    successes = state.successes + int(np.sum(scores >= run.success_threshold))
    if run.min_entropy_coef is None:
        beta = run.entropy_coef
    else:
        s_k = successes / attempts
        beta = run.min_entropy_coef + (run.entropy_coef - run.min_entropy_coef) * (1.0 - s_k)
    n, s1, s2 = state.reward_n, state.reward_sum, state.reward_sq
    r_tilde = np.full(len(scores), np.nan)
    baseline = state.baseline
    if w.any():
        r = scores[w]
        if run.reward_normalization:
            for x in r:
                n, s1, s2 = n + 1, s1 + float(x), s2 + float(x) * float(x)
            mu = s1 / n
            sigma = max(math.sqrt(max(0.0, s2 / n - mu * mu)), 1e-8)
            r_tilde[w] = (r - mu) / sigma
        else:
            r_tilde[w] = r
        adv = np.where(w, r_tilde - state.baseline, 0.0)
        a = run.baseline_ema_alpha
        baseline = a * float(np.mean(r_tilde[w])) + (1.0 - a) * state.baseline
    else:
        adv = np.zeros(len(scores))
    new = LearnerState(baseline, n, s1, s2, attempts, successes,
                       state.updates + (1 if w.any() else 0))
    return UpdateInputs(adv.astype(np.float32), w.astype(np.float32), np.float32(beta), r_tilde,
                        new)


# ----------------------------------------------------------------------------------------------
# Layout (altlas.md §2.3), as data, and recognition of reference state_dicts


RNN_ROWS: dict[str, tuple[str, Rule]] = {
    "weight_ih": ("w_ih", Rule.TRANSPOSE),
    "weight_hh": ("w_hh", Rule.TRANSPOSE),
    "bias_ih": ("b_ih", Rule.IDENTITY),
    "bias_hh": ("b_hh", Rule.IDENTITY),
}
TOP_ROWS: dict[str, tuple[tuple[str, ...], Rule]] = {
    "embedding.weight": (("params", "embedding", "embedding"), Rule.IDENTITY),
    "fc.weight": (("params", "fc", "kernel"), Rule.TRANSPOSE),
    "fc.bias": (("params", "fc", "bias"), Rule.IDENTITY),
}


def layer_name(k: int) -> str:
    """JAX node of RNN layer k ('layer_0', ...)."""
    return f"layer_{k}"


def _row(key: str, shape: tuple[int, ...]) -> Row:
    if key in TOP_ROWS:
        path, rule = TOP_ROWS[key]
        return Row(key, path, rule, shape)
    leaf = key.split(".")[1]
    kind, _, k = leaf.rpartition("_l")
    name, rule = RNN_ROWS[kind]
    return Row(key, ("params", "rnn", layer_name(int(k)), name), rule, shape)


def layout(cfg: AltLASConfig) -> Layout:
    """4L + 3 rows in state-dict order (= torch Adam state index order); no carry (the RNN state
    starts at zero every episode); torch Adam moments.

    Why not flax.linen LSTMCell/GRUCell layouts: flax's LSTM carry is (c, h) where torch's is
    (h, c); flax keeps one bias per gate (fusing b_ih + b_hh is not invertible and changes Adam
    training: both torch biases get the same gradient, so torch moves their sum twice as far);
    flax's GRU puts the r/z biases on the input side; flax's default inits differ. Here gate
    blocks stay in torch order along the last JAX axis and the conversion is transposes only."""
    return Layout(Table(tuple(_row(k, s) for k, s in torch_shapes(cfg).items())))


def layout_size(cfg: AltLASConfig) -> int:
    """Rows of `layout(cfg)` (4L + 3), without building it: bounds configs read from files."""
    return 4 * cfg.num_layers + 3


RELEASE_BY_V: dict[int, tuple[str, str, str]] = {
    46: ("R0", "v0_46", "r0"),
    63: ("R1", "v1_63", "r1"),
    53: ("RH", "abstract_53", "rh"),
}


def recognise(state: Mapping[str, np.ndarray]) -> AltLASConfig | None:
    """The config implied by a Variant A state_dict (altlas.md §7), or None.

    The release is decided by V alone (46 -> R0, 63 -> R1, 53 -> RH). The result is that
    release's preset if its layout matches, else the first preset whose layout matches, else
    the release preset with E, H, L and the cell read from the tensor shapes (fields not in
    the weights, such as max_gen_len, come from the preset). Variant B files (a
    `positional_encoding` key) are not recognised (not implemented)."""
    if "positional_encoding" in state or "embedding.weight" not in state:
        return None
    cells = {k.split(".")[0] for k in state if k.startswith(("lstm.", "gru."))}
    if len(cells) != 1:
        return None
    cell = cells.pop()
    n = 0
    while f"{cell}.weight_ih_l{n}" in state:
        n += 1
    emb, w_ih = np.shape(state["embedding.weight"]), np.shape(state.get(f"{cell}.weight_ih_l0"))
    if n == 0 or len(emb) != 2 or len(w_ih) != 2 or emb[0] not in RELEASE_BY_V:
        return None
    base = PRESETS[RELEASE_BY_V[emb[0]][2]][0]
    try:
        implied = base.replace(embed_dim=int(emb[1]), hidden_dim=int(w_ih[0]) // CELLS[cell],
                               num_layers=n, cell=cell)
    except ConfigError:
        return None
    want = torch_shapes(implied)
    for cand in (base, *(m for m, _ in PRESETS.values())):
        if torch_shapes(cand) == want:
            return cand
    return implied
