"""AIME-core, framework-neutral part (NumPy only): configs and presets (aime.md §1), the tensor
table and layout (aime.md §3), the canonical init (aime.md §2.7), recognition of state dicts,
the trainability check, parameter counts (aime.md §9) and the host noise (aime.md §4)."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping

import numpy as np

from twinframe.errors import ConfigError
from twinframe.models.aime.config import (
    DEFAULT,
    FOURIER_BANDS,
    MICRO,
    PRESETS,
    TINY,
    AIMEConfig,
    AIMERun,
    check_trainable,
)
from twinframe.models.aime.tree import NEVER_REACHED, Leaf, leaves, path_and_rule
from twinframe.models.layout import CarryRow, Layout, Row, Table

__all__ = ["DEFAULT", "EMA_PREFIX", "MICRO", "NEVER_REACHED", "PRESETS", "RGB_D_PREFIX", "TINY",
           "AIMEConfig", "AIMERun", "canonical_init", "carry_rows", "check_trainable", "layout",
           "leaves", "param_counts", "recognise", "trained_keys"]


# ----------------------------------------------------------------------------------------------
# Layout


def _rows(cfg: AIMEConfig) -> tuple[Row, ...]:
    by_key = {leaf.key: leaf for leaf in leaves(cfg)}
    rows = []
    for leaf in by_key.values():
        base = by_key[leaf.alias_of] if leaf.alias_of else leaf
        path, rule = path_and_rule(base, cfg.train_lazy_perceiver_projs)
        rows.append(Row(leaf.key, path, rule, base.shape, base.dtype))
    return tuple(rows)


def trained_keys(cfg: AIMEConfig) -> tuple[str, ...]:
    """torch keys of the tensors the optimiser manages (no aliases, no frozen projections)."""
    return tuple(r.torch_key for r, leaf in zip(_rows(cfg), leaves(cfg), strict=True)
                 if r.path[0] == "params" and leaf.alias_of is None)


def ema_keys(cfg: AIMEConfig) -> tuple[str, ...]:
    """Encoder tensors the EMA teacher shadows (aime.md §2.3.5)."""
    return tuple(k for k in trained_keys(cfg) if k.startswith("encoder."))


EMA_PREFIX = "ema."     # carry row of the EMA teacher's copy of encoder tensor <key>: ema.<key>
RGB_D_PREFIX = "rgb_d."  # carry row of the RGB consensus direction of trained tensor <key>


def carry_rows(cfg: AIMEConfig, run: AIMERun | None = None) -> tuple[CarryRow, ...]:
    """Train-state tensors besides model and optimizer moments (aime.md §3.3): the EMA teacher
    (`ema.<key>` in torch orientation, `ema_n`) and the RGB state (`rgb_d.<key>`, `rgb_alpha`,
    `rgb_count`). Flat names without '/' (the checkpoint stores split tree paths on '/')."""
    rule = {r.torch_key: r.rule for r in _rows(cfg)}
    rows = [CarryRow(f"{EMA_PREFIX}{k}", rule[k]) for k in ema_keys(cfg)]
    rows.append(CarryRow("ema_n", dtype="int32"))
    rows += [CarryRow(f"{RGB_D_PREFIX}{k}", rule[k]) for k in trained_keys(cfg)]
    rows += [CarryRow("rgb_alpha"), CarryRow("rgb_count", dtype="int32")]
    return tuple(rows)


@functools.lru_cache(maxsize=16)
def layout(cfg: AIMEConfig) -> Layout:
    """Table (every torch key, aliases included), carry rows, AdamW moments."""
    return Layout(Table(_rows(cfg)), carry=carry_rows(cfg))


# ----------------------------------------------------------------------------------------------
# Canonical init (aime.md §2.7)


def fourier_position_encoding(t: int, h: int, w: int, bands: int = FOURIER_BANDS) -> np.ndarray:
    """FourierPE(T, Ht, Wt) of aime.md §2.1: [T*Ht*Wt, 3 + 6*bands] (float32)."""
    sizes = (t, h, w)
    coords = [np.array([-1.0]) if s == 1 else np.linspace(-1.0, 1.0, s) for s in sizes]
    grid = np.stack(np.meshgrid(*coords, indexing="ij"), axis=-1).reshape(-1, 3)
    freqs = [np.linspace(1.0, s / 2.0, bands) for s in sizes]
    ang = [np.pi * grid[:, k:k + 1] * freqs[k][None] for k in range(3)]
    out = np.concatenate([grid] + [np.sin(a) for a in ang] + [np.cos(a) for a in ang], axis=-1)
    return out.astype(np.float32)


def relative_position_index(r: int) -> np.ndarray:
    """[R², R², 2] int64 (aime.md §2.5.3, unused by the model)."""
    coords = np.stack(np.meshgrid(np.arange(r), np.arange(r), indexing="ij")).reshape(2, -1)
    rel = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0) + (r - 1)
    return rel.astype(np.int64)


def _orthogonal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    rows, cols = shape[0], int(np.prod(shape[1:]))
    flat = rng.standard_normal((rows, cols))
    if rows < cols:
        flat = flat.T
    q, r = np.linalg.qr(flat)
    q = q * np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return q.reshape(shape)


def _draw(leaf: Leaf, rng: np.random.Generator, cfg: AIMEConfig, state: dict) -> np.ndarray:
    kind, *a = leaf.init
    shape = leaf.shape
    if kind == "normal":
        return np.clip(rng.standard_normal(shape) * a[0], -2.0, 2.0)
    if kind == "uniform":
        return rng.uniform(-a[0], a[0], shape)
    if kind == "zeros":
        return np.zeros(shape)
    if kind == "ones":
        return np.ones(shape)
    if kind == "const":
        return np.full(shape, a[0])
    if kind == "kaiming_out":
        fan_out = shape[0] * int(np.prod(shape[2:]))
        return rng.standard_normal(shape) * math.sqrt(2.0 / fan_out)
    if kind == "xavier":
        rec = int(np.prod(shape[2:]))
        bound = a[0] * math.sqrt(6.0 / (shape[1] * rec + shape[0] * rec))
        return rng.uniform(-bound, bound, shape)
    if kind == "orthogonal":
        return _orthogonal(rng, shape)
    if kind == "unit":
        x = rng.standard_normal(shape)
        return x / max(float(np.linalg.norm(x)), 1e-12)
    if kind == "copy":
        return state[a[0]]
    if kind == "fourier":
        return fourier_position_encoding(cfg.token_frames_past, cfg.token_grid, cfg.token_grid)
    if kind == "relidx":
        return relative_position_index(cfg.attention_resolution)
    raise ValueError(f"unknown init {kind!r}")


def canonical_init(cfg: AIMEConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Framework-neutral init: torch-layout state_dict (float32; int64 counters/indices).

    Stream `default_rng([seed, 12])`, leaves drawn in `leaves(cfg)` order (`embed` before
    `embed_avg`, which copies it); aliases copy their target."""
    rng = np.random.default_rng([seed, 12])
    all_leaves = leaves(cfg)
    order = sorted(range(len(all_leaves)), key=lambda i: all_leaves[i].init[:1] == ("copy",))
    state: dict[str, np.ndarray] = {}
    for i in order:
        leaf = all_leaves[i]
        if leaf.alias_of is not None:
            continue
        x = _draw(leaf, rng, cfg, state)
        state[leaf.key] = np.asarray(x, leaf.dtype if leaf.dtype != "float32" else np.float32)
    out = {}
    for leaf in all_leaves:
        out[leaf.key] = state[leaf.alias_of or leaf.key].copy()
    return out


# ----------------------------------------------------------------------------------------------
# Sizes (aime.md §9) and recognition


def param_counts(cfg: AIMEConfig) -> dict[str, int]:
    """Core parameters (each tensor once), split as in aime.md §9, and buffer elements."""
    ls = [leaf for leaf in leaves(cfg) if leaf.alias_of is None]
    lay = {r.torch_key: r for r in layout(cfg).table.rows}

    def n(leaf: Leaf) -> int:
        return int(np.prod(leaf.shape))

    params = [x for x in ls if lay[x.key].path[0] in ("params", "fixed")]
    trained = [x for x in params if lay[x.key].path[0] == "params"]
    return {
        "core": sum(map(n, params)),
        "in_optimizer": sum(map(n, trained)),
        "updated": sum(n(x) for x in trained if x.key not in NEVER_REACHED),
        "frozen_lazy": sum(n(x) for x in params if lay[x.key].path[0] == "fixed"),
        "never_reached": sum(n(x) for x in trained if x.key in NEVER_REACHED),
        "buffers": sum(n(x) for x in ls if lay[x.key].path[0] in ("state", "consts")),
        "keys": len(leaves(cfg)),
    }


def _shape(state: Mapping[str, np.ndarray], key: str) -> tuple[int, ...]:
    return tuple(int(s) for s in np.shape(state[key]))


# parts of the reference's state_dict outside the core (aime.md §0, §3.2): import ignores them
EXCLUDED_PREFIXES = ("image_discriminator.", "perceiver_model.model.lpips_loss.")


def reference_ignores(key: str) -> bool:
    """Whether a reference state_dict key belongs to an excluded part (discriminator, LPIPS)."""
    return key.startswith(EXCLUDED_PREFIXES)


def reference_fill(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The reference saves every core key (no fill needed)."""
    del state
    return {}


def reference_saves(key: str) -> bool:
    """The reference saves every core key; the excluded parts cannot be produced (§3.2: load
    an exported file into the reference with strict=False)."""
    del key
    return True


def recognise(state: Mapping[str, np.ndarray]) -> AIMEConfig | None:
    """The AIME-core config implied by a state_dict's keys and shapes, or None.

    Read from shapes: image size, T-independent widths (D, Hd, Cc, K, R, A), perceiver sizes,
    codebook, tokenizer depth and base, NVAE channel lists. T is taken from the preset with the
    same image size (sequence_length does not shape any tensor); the reference's excluded parts
    (discriminator, LPIPS) are ignored."""
    need = ("h0", "encoder.stem.0.weight_orig", "perceiver_model.tokenizer.vq._codebook.embed",
            "prior.component_nn.3.weight", "_rnn.lstm.weight_ih_l0")
    if any(k not in state for k in need):
        return None
    core = {k: v for k, v in state.items() if not reference_ignores(k)}
    try:
        L, _, Hd = _shape(core, "h0")
        _, V, Dc = _shape(core, "perceiver_model.tokenizer.vq._codebook.embed")
        P = "perceiver_model.model."
        C = _shape(core, P + "token_embedding.weight")[1]
        lat = _shape(core, P + "latent_queries")[0]
        W = _shape(core, P + "time_queries._query")[0]
        dh = _shape(core, P + "time_pe_proj.weight")[1]
        layers = len({k.split(".")[3] for k in core if k.startswith(P + "encoder_self_attn.")})
        grid = int(round(math.sqrt(_shape(core, P + "pos_encoding.position_encoding")[0])))
        base = _shape(core, "perceiver_model.tokenizer.encoder.stem.conv1.block.0.weight")[0] // 2
        depth = len({k.split(".")[4] for k in core
                     if k.startswith("perceiver_model.tokenizer.encoder.downs.")})
        ds = 2 ** depth
        stem = _shape(core, "encoder.stem.0.weight_orig")[0]
        K = _shape(core, "prior.stick_breaking.kumar_net.net_a.kumar_a_out.weight_orig")[0] + 1
        D = _shape(core, "decoder.mlp.0.weight")[1]
        R = _shape(core, "attention_prior_posterior.posterior_net.row_embed")[0]
        A = _shape(core, "_rnn.lstm.weight_ih_l0")[1] - D - C - Hd
        enc = _blocks(core, "encoder.encoder_blocks.")
        dec = _blocks(core, "decoder.decoder_blocks.")
    except (KeyError, IndexError, ValueError):
        return None
    image = grid * ds
    enc_ch = tuple(o for o, _ in enc)
    dec_ch = tuple(o for o, _ in dec)
    n_down = sum(f"decoder.decoder_blocks.{i}.blocks.1.weight_orig" in core
                 for i in range(len(dec)))
    resolutions = _resolutions(core, len(dec))
    preset = next((m for m, _ in PRESETS.values() if m.image_size == image), TINY)
    try:
        cfg = preset.replace(
            image_size=image, action_dim=A, latent_dim=D, hidden_dim=Hd, context_dim=C,
            max_components=K, attention_resolution=R, lstm_layers=L, context_window=W,
            perceiver_latents=lat, perceiver_heads=C // dh, perceiver_layers=layers,
            num_codes=V, code_dim=Dc, perceiver_downsample=ds, perceiver_base_channels=base,
            enc_channels=enc_ch, enc_layers_per_block=tuple(n for _, n in enc),
            dec_channels=dec_ch, dec_layers_per_block=tuple(n for _, n in dec),
            num_layers_per_resolution=resolutions, nvae_stem_channels=stem,
            nvae_downsample=n_down,
            train_lazy_perceiver_projs=False)
    except ConfigError:
        return None
    want = {r.torch_key: r.shape for r in layout(cfg).table.rows}
    if set(want) != set(core) or any(_shape(core, k) != s for k, s in want.items()):
        return None
    return cfg


def _blocks(state: Mapping[str, np.ndarray], prefix: str) -> list[tuple[int, int]]:
    """(out channels, residual blocks) per NVAE block."""
    out, i = [], 0
    while any(k.startswith(f"{prefix}{i}.") for k in state):
        js = {int(k[len(f"{prefix}{i}.blocks."):].split(".")[0]) for k in state
              if k.startswith(f"{prefix}{i}.blocks.")}
        res = sorted(j for j in js if f"{prefix}{i}.blocks.{j}.gate" in state)
        o = _shape(state, f"{prefix}{i}.blocks.{res[-1]}.conv2.weight_orig")[0]
        out.append((o, len(res)))
        i += 1
    return out


def _resolutions(state: Mapping[str, np.ndarray], n: int) -> tuple[int, ...]:
    """num_layers_per_resolution from the decoder: a new resolution starts at each upsampling
    block (blocks.1 is the upsampling conv)."""
    out: list[int] = []
    for i in range(n):
        up = f"decoder.decoder_blocks.{i}.blocks.1.weight_orig" in state
        if up or not out:
            out.append(1)
        else:
            out[-1] += 1
    return tuple(out)


# ----------------------------------------------------------------------------------------------
# Static tables shared by both frameworks


def rope_angles(start: int, n: int, head_dim: int) -> np.ndarray:
    """RoPE-P / FreqPE angles (aime.md §2.1): theta[p, 2i] = theta[p, 2i+1] =
    (start+p) * 10000^(-2i/dh), float64 -> float32, [n, dh]."""
    inv = 10000.0 ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    ang = np.outer(np.arange(start, start + n, dtype=np.float64), inv)
    return np.repeat(ang, 2, axis=1).astype(np.float32)
