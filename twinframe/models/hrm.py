"""HRM-ACT, framework-neutral part: config (hrm.md §1), torch-layout shapes (hrm.md §3.1), canonical
NumPy init (hrm.md §4), RoPE tables (hrm.md §2.2).

Choices where the spec leaves room (recorded here and in the issue note):
- `ffn_rounding="ceil"` (ZT/SA, default) or `"swift"` (SW's truncating division, I=512 at full).
- `compute_dtype` is a string ("float32" | "bfloat16") so the config stays JSON-serialisable.
- `eval_halting` is "q" (first segment with q_h > q_c) or "max_steps" (SA).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from twinframe.errors import ConfigError
from twinframe.models.base import FrozenConfig, draw_trunc_normal
from twinframe.models.layout import CarryRow, Layout, Row, Rule, Table

DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class HRMConfig(FrozenConfig):
    """HRM-ACT model config (hrm.md §1): architecture, ACT semantics and compute dtype;
    what the layout, the init and the modules consume. Default values are the tiny config."""

    seq_len: int = 81
    vocab_size: int = 10
    high_level_cycles: int = 2
    low_level_cycles: int = 2
    num_layers: int = 2
    hidden_size: int = 32
    num_heads: int = 2
    expansion: float = 4.0
    ffn_multiple: int = 16
    ffn_rounding: str = "ceil"
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    halt_max_steps: int = 4
    halt_exploration_prob: float = 0.1
    q_head_bias_init: float = -5.0
    act_last_strict: bool = False
    act_explore_strict: bool = False
    compute_dtype: str = "float32"
    eval_halting: str = "q"

    def validate(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ConfigError("hidden_size must be divisible by num_heads")
        if self.head_dim % 2:
            raise ConfigError("head dim hidden_size/num_heads must be even (RoPE)")
        if self.ffn_rounding not in ("ceil", "swift"):
            raise ConfigError(f"ffn_rounding must be 'ceil' or 'swift', got {self.ffn_rounding!r}")
        if self.ffn_dim <= 0:
            raise ConfigError(f"FFN width I={self.ffn_dim} must be > 0")
        if self.halt_max_steps < 2:
            raise ConfigError("halt_max_steps must be >= 2")
        if self.high_level_cycles < 1 or self.low_level_cycles < 1:
            raise ConfigError("high_level_cycles and low_level_cycles must be >= 1")
        if not 0.0 <= self.halt_exploration_prob <= 1.0:
            raise ConfigError("halt_exploration_prob must lie in [0, 1]")
        if self.compute_dtype not in DTYPES:
            raise ConfigError(f"compute_dtype must be one of {DTYPES}")
        if self.eval_halting not in ("q", "max_steps"):
            raise ConfigError("eval_halting must be 'q' or 'max_steps'")
        if self.num_layers < 1:
            raise ConfigError("num_layers must be >= 1")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def num_positions(self) -> int:
        """P = S + 1 (position 0 is the CLS token)."""
        return self.seq_len + 1

    @property
    def ffn_dim(self) -> int:
        """I of hrm.md §2.2: int(expansion*H*2.0/3.0) evaluated left to right, then rounded."""
        a = int(self.expansion * self.hidden_size * 2.0 / 3.0)
        m = self.ffn_multiple
        if self.ffn_rounding == "ceil":
            return -(-a // m) * m
        return (a // m) * m


@dataclasses.dataclass(frozen=True)
class HRMRun(FrozenConfig):
    """HRM-ACT run config (hrm.md §6): seeds, batch, optimizer, checkpointing."""

    seed: int = 0
    eval_seed: int = 0
    noise_source: str = "host"
    batch_size: int = 8
    lr: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.01
    bias_correction: bool = False
    checkpoint_every: int = 250

    def validate(self) -> None:
        for name in ("seed", "eval_seed"):
            if not 0 <= getattr(self, name) < 2**32:
                raise ConfigError(f"{name} must lie in [0, 2**32)")
        if self.noise_source not in ("host", "native"):
            raise ConfigError("noise_source must be 'host' or 'native'")
        if self.batch_size < 1:
            raise ConfigError("batch_size must be >= 1")


def check_trainable(cfg: HRMConfig, run: HRMRun) -> None:
    """Refuse (one line) what neither engine implements."""
    del cfg
    if run.bias_correction:
        raise ConfigError("bias_correction=True (torch/optax AdamW) is not implemented; only the "
                          "reference MLX AdamW without bias correction is")
    if run.noise_source != "host":
        raise ConfigError("noise_source='native' is not implemented; use 'host'")


TINY = HRMConfig()
FULL = HRMConfig(
    num_layers=4,
    hidden_size=256,
    num_heads=4,
    ffn_multiple=256,
    halt_max_steps=16,
    compute_dtype="bfloat16",
)
MICRO = HRMConfig(hidden_size=16, num_heads=2, num_layers=1, ffn_multiple=16)
PRESETS: dict[str, tuple[HRMConfig, HRMRun]] = {
    "tiny": (TINY, HRMRun()),
    "full": (FULL, HRMRun(batch_size=512)),
    "micro": (MICRO, HRMRun(batch_size=2)),
}

LEVELS = ("high", "low")
BLOCK_LEAVES = (
    "self_attn.qkv_proj.weight",
    "self_attn.out_proj.weight",
    "mlp.gate_up_proj.weight",
    "mlp.down_proj.weight",
)
FROZEN_KEYS = ("rotary_emb.cos", "rotary_emb.sin", "initial_high_level", "initial_low_level")


def block_shapes(cfg: HRMConfig) -> dict[str, tuple[int, ...]]:
    """torch-orientation shapes of one block's four weights."""
    H, I = cfg.hidden_size, cfg.ffn_dim
    return dict(zip(BLOCK_LEAVES, [(3 * H, H), (H, H), (2 * I, H), (H, I)], strict=True))


def torch_shapes(cfg: HRMConfig) -> dict[str, tuple[int, ...]]:
    """Every state_dict key (hrm.md §3.1) -> torch shape, in the canonical init order of hrm.md
    §4."""
    H, V, P, d = cfg.hidden_size, cfg.vocab_size, cfg.num_positions, cfg.head_dim
    shapes: dict[str, tuple[int, ...]] = {
        "cls_token": (H,),
        "input_embedding.weight": (V, H),
        "output_head.weight": (V, H),
    }
    for lv in LEVELS:
        for i in range(cfg.num_layers):
            for leaf, shape in block_shapes(cfg).items():
                shapes[f"{lv}_level_reasoner.layers.{i}.{leaf}"] = shape
    shapes.update(
        {
            "initial_high_level": (H,),
            "initial_low_level": (H,),
            "q_act_head.weight": (2, H),
            "q_act_head.bias": (2,),
            "rotary_emb.cos": (P, 1, d),
            "rotary_emb.sin": (P, 1, d),
        }
    )
    return shapes


def init_std(key: str, cfg: HRMConfig) -> float:
    """Trunc-normal std of a leaf (hrm.md §2.4): 1/sqrt(fan_in); 1.0 for the initial states."""
    if key.startswith("initial_"):
        return 1.0
    if key.endswith("down_proj.weight"):
        return 1.0 / math.sqrt(cfg.ffn_dim)
    return 1.0 / math.sqrt(cfg.hidden_size)


def rope_tables(cfg: HRMConfig) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin: [P, 1, d] float32, computed in float64 (hrm.md §2.2, our choice)."""
    d = cfg.head_dim
    inv = 1.0 / cfg.rope_theta ** (np.arange(0, d, 2, dtype=np.float64) / d)
    phi = np.outer(np.arange(cfg.num_positions, dtype=np.float64), inv)
    emb = np.concatenate([phi, phi], axis=-1)[:, None, :]
    return np.cos(emb).astype(np.float32), np.sin(emb).astype(np.float32)


def canonical_init(cfg: HRMConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Framework-neutral init (hrm.md §4): torch-layout state_dict of float32 NumPy arrays.

    Stream `default_rng([seed, 1])`; trunc-normal leaves drawn in the canonical order.
    """
    rng = np.random.default_rng([seed, 1])
    state: dict[str, np.ndarray] = {}
    for key, shape in torch_shapes(cfg).items():
        if key.startswith(("q_act_head", "rotary_emb")):
            continue
        state[key] = draw_trunc_normal(rng, shape, init_std(key, cfg))
    state["q_act_head.weight"] = np.zeros((2, cfg.hidden_size), np.float32)
    state["q_act_head.bias"] = np.full((2,), cfg.q_head_bias_init, np.float32)
    state["rotary_emb.cos"], state["rotary_emb.sin"] = rope_tables(cfg)
    return state


def param_counts(cfg: HRMConfig) -> tuple[int, int]:
    """(trainable, frozen initial states) parameter counts; RoPE tables not counted (hrm.md §8)."""
    shapes = torch_shapes(cfg)
    trainable = sum(int(np.prod(s)) for k, s in shapes.items() if k not in FROZEN_KEYS)
    return trainable, 2 * cfg.hidden_size


# ----------------------------------------------------------------------------------------------
# Layout (hrm.md §3.1-§3.2), as data: torch key -> pytree path, rule.

I, T = Rule.IDENTITY, Rule.TRANSPOSE
TOP_ROWS: dict[str, tuple[tuple[str, ...], Rule]] = {
    "cls_token": (("params", "cls_token"), I),
    "input_embedding.weight": (("params", "input_embedding", "embedding"), I),
    "output_head.weight": (("params", "output_head", "kernel"), T),
    "initial_high_level": (("consts", "initial_high_level"), I),
    "initial_low_level": (("consts", "initial_low_level"), I),
    "q_act_head.weight": (("params", "q_act_head", "kernel"), T),
    "q_act_head.bias": (("params", "q_act_head", "bias"), I),
    "rotary_emb.cos": (("consts", "rotary_emb", "cos"), I),
    "rotary_emb.sin": (("consts", "rotary_emb", "sin"), I),
}
BLOCK_ROWS: dict[str, tuple[tuple[str, ...], Rule]] = {
    "self_attn.qkv_proj.weight": (("self_attn", "qkv_proj", "kernel"), T),
    "self_attn.out_proj.weight": (("self_attn", "out_proj", "kernel"), T),
    "mlp.gate_up_proj.weight": (("mlp", "gate_up_proj", "kernel"), T),
    "mlp.down_proj.weight": (("mlp", "down_proj", "kernel"), T),
}
CARRY = (CarryRow("z_H"), CarryRow("z_L"))  # [B, P, H] each, stored as float32


def _row(key: str, shape: tuple[int, ...]) -> Row:
    if key in TOP_ROWS:
        path, rule = TOP_ROWS[key]
        return Row(key, path, rule, shape)
    lv, _, i, leaf = key.split(".", 3)
    sub, rule = BLOCK_ROWS[leaf]
    return Row(key, ("params", lv, "layers", int(i), *sub), rule, shape)


def layout(cfg: HRMConfig) -> Layout:
    """Table (9 + 8N rows), carry z_H/z_L, Adam moments (MLX AdamW: exp_avg/exp_avg_sq)."""
    table = Table(tuple(_row(k, s) for k, s in torch_shapes(cfg).items()))
    return Layout(table, carry=CARRY)


def layout_size(cfg: HRMConfig) -> int:
    """Rows of `layout(cfg)` (9 + 8N), without building it: bounds configs read from files."""
    return len(TOP_ROWS) + len(LEVELS) * cfg.num_layers * len(BLOCK_ROWS)


def _ffn_fields(H: int, width: int) -> dict[str, object] | None:
    """(expansion, multiple, rounding) giving FFN width `width` at hidden size H (ours: the
    published variants first)."""
    for mult in (16, 256, 64, 32, 128, 8, 1):
        for rounding in ("ceil", "swift"):
            c = dict(expansion=4.0, ffn_multiple=mult, ffn_rounding=rounding)
            a = int(4.0 * H * 2.0 / 3.0)
            got = -(-a // mult) * mult if rounding == "ceil" else (a // mult) * mult
            if got == width:
                return c
    return None


def recognise(state: Mapping[str, np.ndarray]) -> HRMConfig | None:
    """The config implied by an HRM-ACT state_dict's keys and shapes, or None if it is not one.

    Read from shapes: H, V, N (layers), S (from the RoPE table, else 81), heads (head dim of
    the RoPE table, else the preset's), FFN width. Not in the weights, taken from the preset of
    the same hidden size (tiny otherwise): cycles, halt_max_steps, ACT flags, norm eps, RoPE
    theta, compute dtype (bf16 weights -> bfloat16)."""
    if "cls_token" not in state or "high_level_reasoner.layers.0.mlp.down_proj.weight" not in state:
        return None
    try:
        H = int(np.shape(state["cls_token"])[0])
        V = int(np.shape(state["input_embedding.weight"])[0])
        width = int(np.shape(state["high_level_reasoner.layers.0.mlp.down_proj.weight"])[1])
    except (KeyError, IndexError):
        return None
    n = 0
    while f"high_level_reasoner.layers.{n}.mlp.down_proj.weight" in state:
        n += 1
    base = next((m for m, _ in PRESETS.values() if m.hidden_size == H), TINY)
    fields: dict[str, object] = {"hidden_size": H, "vocab_size": V, "num_layers": n}
    ffn = _ffn_fields(H, width)
    if ffn is None:
        return None
    fields.update(ffn)
    cos = state.get("rotary_emb.cos")
    if cos is not None and np.ndim(cos) == 3 and np.shape(cos)[2] > 0:
        P, _, d = np.shape(cos)
        fields.update(seq_len=int(P) - 1, num_heads=max(H // int(d), 1))
    if np.asarray(state["cls_token"]).dtype.name == "bfloat16":
        fields["compute_dtype"] = "bfloat16"
    try:
        return base.replace(**fields)
    except ConfigError:
        return None


class Dot(NamedTuple):
    """One matmul shape of a train step: `batch` independent [m, k] x [k, n] products, done
    `count` times per step; `names` says which products have this shape."""

    names: tuple[str, ...]
    batch: int
    m: int
    k: int
    n: int
    count: int

    @property
    def flops(self) -> float:
        """FLOPs of one occurrence (multiply-add = 2)."""
        return 2.0 * self.batch * self.m * self.k * self.n


def step_dots(cfg: HRMConfig, batch: int) -> list[Dot]:
    """Every matmul of one ACT train step as distinct shapes with their counts (products of
    equal shape merged): the forward products of each reasoner block and of the heads, run in
    the segment (H*L L-calls + H H-calls) and again in the target forward; the backward of the
    last L and H calls and of the heads, where [m, k] x [k, n] costs dX = [m, n] x [n, k] and
    dW = [k, m] x [m, n]. Attention products are batched over B*heads."""
    H, P, S, V, I = cfg.hidden_size, cfg.num_positions, cfg.seq_len, cfg.vocab_size, cfg.ffn_dim
    h, d, T = cfg.num_heads, cfg.head_dim, batch * cfg.num_positions
    calls = cfg.high_level_cycles * cfg.low_level_cycles + cfg.high_level_cycles
    fwd_layer = 2 * calls * cfg.num_layers  # segment + target forward
    bwd_layer = 2 * cfg.num_layers  # the last L-call and H-call
    prods = [("qkv", 1, T, H, 3 * H, fwd_layer, bwd_layer),
             ("out", 1, T, H, H, fwd_layer, bwd_layer),
             ("gate_up", 1, T, H, 2 * I, fwd_layer, bwd_layer),
             ("down", 1, T, I, H, fwd_layer, bwd_layer),
             ("scores", batch * h, P, d, P, fwd_layer, bwd_layer),
             ("prob_v", batch * h, P, P, d, fwd_layer, bwd_layer),
             ("output_head", 1, batch * S, H, V, 2, 1),
             ("q_head", 1, batch, H, 2, 2, 1)]
    merged: dict[tuple[int, int, int, int], tuple[list[str], int]] = {}

    def add(name: str, b: int, m: int, k: int, n: int, count: int) -> None:
        names, c = merged.get((b, m, k, n), ([], 0))
        merged[(b, m, k, n)] = (names + [name], c + count)

    for name, b, m, k, n, fwd, bwd in prods:
        add(name, b, m, k, n, fwd)
        add(f"{name} dX", b, m, n, k, bwd)
        add(f"{name} dW", b, k, m, n, bwd)
    return [Dot(tuple(names), *key, count) for key, (names, count) in merged.items()]


def train_step_flops(cfg: HRMConfig, batch: int) -> float:
    """Analytic FLOPs of one ACT train step: the sum over `step_dots` (the segment's forward,
    the target forward, the backward of the last L and H calls and the heads). Matmuls and
    attention only; norms, RoPE, softmax and the optimizer are a few percent at most and are
    not counted."""
    return float(sum(dot.flops * dot.count for dot in step_dots(cfg, batch)))
