"""AIME-core training (aime.md §5.1, §6): a framework-neutral host (the moving-sprites stream,
the per-step noise of aime.md §4, beta and the loss weights of the step) driving one engine, or
both in lockstep, and the two engines.

Lockstep: engines[0] (torch) decides; its discrete decisions (VQ ids of both encodes, predicted
tokens) are passed to the later engines, which use them and report their own; every differing
id is a counted mismatch (aime.md §7).

Train state besides model and AdamW moments (carry rows, `models.aime.carry_rows`): the EMA
teacher (`ema.<key>`, `ema_n`) and the RGB state (`rgb_d.<key>`, `rgb_alpha`, `rgb_count`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from twinframe.contract import StepResult
from twinframe.models.aime import (
    EMA_PREFIX,
    NEVER_REACHED,
    RGB_D_PREFIX,
    AIMEConfig,
    AIMERun,
    ema_keys,
    trained_keys,
)
from twinframe.models.aime import noise as aime_noise
from twinframe.models.aime.schedule import hyper as step_hyper
from twinframe.models.aime.schedule import lr_at
from twinframe.tasks import sprites
from twinframe.training.engine import JaxEngine, TorchEngine

if TYPE_CHECKING:
    from twinframe.contract import ModelSpec

DECISIONS = ("ids_full", "ids_past", "pred")
PART_NAMES = ("recon", "kl_z", "hier", "ent", "gram", "att_kl", "dyn", "div", "perc", "ce", "vq")


def decision_shapes(cfg: AIMEConfig, batch: int) -> dict[str, tuple[int, ...]]:
    g = cfg.token_grid
    Tq, Tp = cfg.token_frames, cfg.token_frames_past
    T_c = min(int(cfg.context_frames / (cfg.sequence_length / Tq)), Tq - 1)
    return {"ids_full": (batch, Tq, g, g), "ids_past": (batch, Tp, g, g),
            "pred": (batch, Tq - T_c, g, g)}


class StepInputs:
    """Everything one training step consumes (identical for both frameworks)."""

    def __init__(self, cfg: AIMEConfig, run: AIMERun, step: int) -> None:
        self.step = step  # 0-based
        frames, actions = sprites.batch(run.seed, step, run.batch_size, cfg.image_size,
                                        cfg.sequence_length, cfg.action_dim)
        self.frames = frames
        self.x = sprites.model_input(frames)
        self.actions = actions
        self.noise = aime_noise.step_noise(cfg, run.batch_size, run.seed, step + 1)
        self.hyper = {**step_hyper(step, run), "ema_decay": run.ema_decay}
        self.lr = lr_at(step, run.lr, run)


class AIMEHost:
    """Data stream position and step counter of one run (framework-neutral)."""

    def __init__(self, cfg: AIMEConfig, run: AIMERun) -> None:
        self.cfg, self.run = cfg, run
        self.t = 0

    def inputs(self) -> StepInputs:
        return StepInputs(self.cfg, self.run, self.t)

    def step(self, engines: Sequence[Any]) -> StepResult:
        inp = self.inputs()
        outs, times = [], []
        reference: dict[str, np.ndarray] | None = None
        for e in engines:
            t0 = time.perf_counter()
            metrics, decisions = e.step(inp, reference)
            times.append(time.perf_counter() - t0)
            outs.append((metrics, decisions))
            if reference is None:
                reference = decisions
        d0 = outs[0][1]
        mismatches, notes = 0, []
        for _, d in outs[1:]:
            for k in DECISIONS:
                n = int(np.sum(np.asarray(d[k]) != np.asarray(d0[k])))
                if n:
                    notes.append(f"{n} {k}")
                mismatches += n
        self.t += 1
        records = [self.record(m, dt, inp) for (m, _), dt in zip(outs, times, strict=True)]
        note = f"{mismatches} decision mismatch(es): {', '.join(notes)}" if mismatches else ""
        return StepResult(records, mismatches, note)

    def record(self, m: dict[str, Any], dt: float, inp: StepInputs) -> dict[str, Any]:
        rec = {"step": self.t, "epoch": inp.step // self.run.steps_per_epoch,
               "beta": inp.hyper["beta"], "lr": inp.lr, **m, "step_time_s": dt,
               "steps_per_s": 1.0 / dt if dt > 0 else None}
        rec["loss"] = rec["elbo"] + rec["perceiver"] + rec["predictive"]
        return rec

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.t = int(s["t"])

    def close(self) -> None:
        """Nothing to release."""


def _metrics(tasks: Sequence[float], parts: dict, metrics: dict, grad_norms: Sequence[float],
             G_norm: float, alpha: Sequence[float]) -> dict[str, Any]:
    out = {"elbo": float(tasks[0]), "perceiver": float(tasks[1]), "predictive": float(tasks[2])}
    out.update({k: float(parts[k]) for k in PART_NAMES})
    out.update({k: float(v) for k, v in metrics.items()})
    out["grad_norms"] = [float(g) for g in grad_norms]
    out["G_norm"] = float(G_norm)
    out["alpha"] = [float(a) for a in alpha]
    return out


# ---------------------------------------------------------------------------------------------
# Engines


class AIMETorchEngine(TorchEngine):
    """Eager PyTorch: the module, AdamW groups, EMA teacher and RGB state (CPU)."""

    CPU_ONLY = True

    def __init__(self, spec: ModelSpec, cfg: AIMEConfig, run: AIMERun,
                 state: dict[str, np.ndarray] | None = None) -> None:
        super().__init__(spec, cfg, run, state)
        from twinframe.torch_ref.aime import train as tt

        self.tt = tt
        self.shadow = tt.ema_init(self.model)
        self.ema_n = 0
        named = dict(self.model.named_parameters())
        self.n_reached = sum(named[k].numel() for k in trained_keys(cfg) if k not in NEVER_REACHED)
        self.rgb = tt.rgb_init(self.n_reached, run.num_tasks)
        self.last = None

    def step(self, inp: StepInputs, reference: dict | None = None,
             keep_grads: bool = False) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        del reference  # the reference decides
        from twinframe.torch_ref.aime.prims import torch_threads

        noise = {k: self.dev(v) for k, v in inp.noise.items()}
        with torch_threads(self.run.torch_threads):
            res, self.shadow, self.ema_n = self.tt.train_step(
                self.model, self.opt, self.dev(inp.x), self.dev(inp.actions),
                noise, inp.hyper, self.shadow, self.ema_n, self.rgb, inp.step, self.run,
                keep_grads)
        self.rgb = res.rgb
        self.last = res
        o = res.out
        m = _metrics([float(t.detach()) for t in o.tasks],
                     {k: float(v.detach()) for k, v in o.parts.items()},
                     {k: float(v.detach()) for k, v in o.metrics.items()}, res.grad_norms,
                     res.G_norm, res.rgb.alpha.tolist())
        return m, o.decisions

    def runtime(self) -> dict[str, Any]:
        out = super().runtime()
        if self.run.torch_threads > 0 and "threads" in out:
            out["threads"] = self.run.torch_threads  # what the steps run with
        return out

    def export_carry(self) -> dict[str, np.ndarray]:
        out = {f"{EMA_PREFIX}encoder.{k}": v.detach().cpu().numpy().copy()
               for k, v in self.shadow.items()}
        out["ema_n"] = np.asarray(self.ema_n, np.int32)
        out.update({f"{RGB_D_PREFIX}{k}": v
                    for k, v in self.tt.rgb_d_by_key(self.rgb, self.model).items()})
        out["rgb_alpha"] = self.rgb.alpha.detach().cpu().numpy().astype(np.float32)
        out["rgb_count"] = np.asarray(self.rgb.count, np.int32)
        return out

    def import_carry(self, carry: dict[str, np.ndarray]) -> None:
        if not carry:
            return
        torch = self.torch
        pre = f"{EMA_PREFIX}encoder."
        self.shadow = {k[len(pre):]: torch.from_numpy(np.array(v, np.float32))
                       for k, v in carry.items() if k.startswith(pre)}
        self.ema_n = int(np.asarray(carry["ema_n"]))
        d = self.tt.rgb_d_from_keys({k[len(RGB_D_PREFIX):]: v for k, v in carry.items()
                                     if k.startswith(RGB_D_PREFIX)}, self.model)
        self.rgb = self.tt.RGBState(d, torch.from_numpy(np.array(carry["rgb_alpha"], np.float32)),
                                    int(np.asarray(carry["rgb_count"])))


def step_batch(cfg: AIMEConfig, batch_size: int, inp: StepInputs, reference: dict | None
               ) -> dict:
    """The JAX step's `batch` (`functional.aime.model.forward`) of one step's inputs; with
    `reference` decisions (lockstep), the step uses them."""
    import jax.numpy as jnp

    shapes = decision_shapes(cfg, batch_size)
    ov = {k: jnp.asarray(reference[k] if reference is not None else np.zeros(s, np.int32),
                         jnp.int32) for k, s in shapes.items()}
    return {"x": jnp.asarray(inp.x), "actions": jnp.asarray(inp.actions),
            "noise": {k: jnp.asarray(v) for k, v in inp.noise.items()},
            "hyper": {k: jnp.float32(v) for k, v in inp.hyper.items()},
            "override": ov, "use_override": jnp.asarray(reference is not None)}


def jax_step(spec: ModelSpec, cfg: AIMEConfig, run: AIMERun):
    """The jitted step of `spec` at `cfg` with `spec.jax_optimizer`. A whole AIME step takes
    1.5-2 minutes to compile on 2 CPU cores (aime.md §9), so one jitted function is shared by
    every engine whose optimiser has the same `key` (what its update reads; the base learning
    rate is optimiser state): runs differing in seed, learning rate, loss weights or
    checkpointing, and specs with a replaced optimiser that keeps the key (the contract suite's
    10%-larger learning rate), reuse one compilation per process. An optimiser without a key
    gets its own."""
    tx = spec.jax_optimizer(run)
    key = getattr(tx, "key", None)
    if key is None:
        return spec.make_train_step(cfg, tx)
    cache_key = (spec.make_train_step, cfg, key)
    if cache_key not in _STEPS:
        _STEPS[cache_key] = spec.make_train_step(cfg, tx)
    return _STEPS[cache_key]


_STEPS: dict[tuple, Any] = {}  # (make_train_step, model config, optimiser key) -> jitted step


def _enc_rows(cfg: AIMEConfig) -> list[tuple[str, tuple]]:
    from twinframe.models.aime import layout

    rows = {r.torch_key: r for r in layout(cfg).table.rows}
    return [(k, rows[k].path[2:]) for k in ema_keys(cfg)]


def _get(tree: Any, path: tuple) -> Any:
    for p in path:
        tree = tree[p]
    return tree


class AIMEJaxEngine(JaxEngine):
    """JAX: one jitted, donated step; EMA teacher in `self.carry`; RGB state in the optimiser
    state (exported as carry rows)."""

    def __init__(self, spec: ModelSpec, cfg: AIMEConfig, run: AIMERun,
                 state: dict[str, np.ndarray] | None = None) -> None:
        super().__init__(spec, cfg, run, state)
        self._step = jax_step(spec, cfg, run)
        self.carry = {"ema": self.jax.tree_util.tree_map(self.jnp.array, self.params["encoder"]),
                      "ema_n": self.jnp.zeros([], self.jnp.int32)}
        self.last_out = None

    def batch(self, inp: StepInputs, reference: dict | None) -> dict:
        return step_batch(self.cfg, self.run.batch_size, inp, reference)

    def step(self, inp: StepInputs, reference: dict | None = None
             ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        static = {k: v for k, v in self.frozen.items() if k != "state"}
        self.params, self.opt_state, st, self.carry, out = self._step(
            self.params, self.opt_state, self.frozen["state"], self.carry, static,
            self.batch(inp, reference))
        self.frozen = {**self.frozen, "state": st}
        self.last_out = out
        small = self.jax.device_get({k: out[k] for k in ("tasks", "parts", "metrics", "decisions",
                                                         "grad_norms", "G_norm", "alpha")})
        m = _metrics(small["tasks"], small["parts"], small["metrics"], small["grad_norms"],
                     small["G_norm"], small["alpha"])
        return m, {k: np.asarray(v) for k, v in small["decisions"].items()}

    def export_carry(self) -> dict[str, np.ndarray]:
        get = self.jax.device_get
        ema = get(self.carry["ema"])
        out = {f"{EMA_PREFIX}{k}": np.asarray(_get(ema, p)) for k, p in _enc_rows(self.cfg)}
        out["ema_n"] = np.asarray(get(self.carry["ema_n"]), np.int32)
        rgb = self.opt_state[0]
        d = self.layout.params.tree_to_torch(get(rgb.rgb_d))
        rows = {r.torch_key: r for r in self.layout.params.rows}
        from twinframe.models.layout import apply_rule

        out.update({f"{RGB_D_PREFIX}{k}": apply_rule(rows[k].rule, v) for k, v in d.items()})
        out["rgb_alpha"] = np.asarray(get(rgb.rgb_alpha), np.float32)
        out["rgb_count"] = np.asarray(get(rgb.rgb_count), np.int32)
        return out

    def import_carry(self, carry: dict[str, np.ndarray]) -> None:
        if not carry:
            return
        jnp = self.jnp
        from twinframe.models.layout import apply_rule, unflatten_tree

        enc = {p: jnp.asarray(np.asarray(carry[f"{EMA_PREFIX}{k}"], np.float32))
               for k, p in _enc_rows(self.cfg)}
        self.carry = {"ema": self.to_device(unflatten_tree(enc)),
                      "ema_n": jnp.asarray(int(np.asarray(carry["ema_n"])), jnp.int32)}
        rows = {r.torch_key: r for r in self.layout.params.rows}
        n = len(RGB_D_PREFIX)
        d_torch = {k[n:]: apply_rule(rows[k[n:]].rule, np.asarray(v))
                   for k, v in carry.items() if k.startswith(RGB_D_PREFIX)}
        d = self.to_device(self.layout.params.torch_to_tree(d_torch))
        rgb = self.opt_state[0]._replace(
            rgb_d=d, rgb_alpha=jnp.asarray(np.asarray(carry["rgb_alpha"], np.float32)),
            rgb_count=jnp.asarray(int(np.asarray(carry["rgb_count"])), jnp.int32))
        self.opt_state = (rgb, self.opt_state[1])


# ---------------------------------------------------------------------------------------------
# Reconstructions, rollouts, evaluation (JAX side; any checkpoint converts to it)


def write_png(path: Any, rgb: np.ndarray) -> None:
    """uint8 [H, W, 3] -> PNG file, written atomically."""
    from pathlib import Path

    from twinframe.store.io import atomic_write

    blob = png_bytes(rgb)
    atomic_write(Path(path), lambda p: p.write_bytes(blob))


def png_bytes(rgb: np.ndarray) -> bytes:
    """uint8 [H, W, 3] -> PNG bytes (zlib, no dependencies)."""
    import struct
    import zlib

    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + np.ascontiguousarray(rgb[y]).tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def frames_grid(rows: Sequence[np.ndarray], scale: int = 4, pad: int = 2) -> np.ndarray:
    """rows of [T, 3, H, W] images in [-1, 1] -> one uint8 [H', W', 3] grid (upscaled)."""
    T, _, H, W = rows[0].shape
    Hs, Ws = H * scale, W * scale
    out = np.full((len(rows) * (Hs + pad) + pad, T * (Ws + pad) + pad, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for t in range(T):
            img = np.clip((np.asarray(row[t]) + 1) * 127.5, 0, 255).round().astype(np.uint8)
            img = img.transpose(1, 2, 0).repeat(scale, 0).repeat(scale, 1)
            y, x = pad + r * (Hs + pad), pad + t * (Ws + pad)
            out[y:y + Hs, x:x + Ws] = img
    return out


def rollout(cfg: AIMEConfig, run: AIMERun, state: dict[str, np.ndarray], split: int, index: int,
            observe: int | None = None) -> dict[str, np.ndarray]:
    """Ground truth, reconstruction and open-loop prediction of clip `index` of `split` with
    torch-layout weights `state` (`torch_ref.aime.model.rollout`, eager: no compilation)
    -> {'truth', 'recon', 'pred'}: [T, 3, H, W] in [-1, 1], and 'observe'."""
    import torch

    from twinframe.torch_ref.aime.model import make_model
    from twinframe.torch_ref.aime.model import rollout as torch_rollout

    observe = cfg.sequence_length // 2 if observe is None else observe
    frames, actions = (a[:1] for a in sprites.batch(run.seed, index, 1, cfg.image_size,
                                                    cfg.sequence_length, cfg.action_dim, split))
    x = sprites.model_input(frames)
    noise = aime_noise.step_noise(cfg, 1, run.seed, 10**6 + index)
    from twinframe.torch_ref.aime.prims import torch_threads

    model = make_model(cfg, state)
    with torch_threads(run.torch_threads):
        rec, pred = torch_rollout(model, torch.from_numpy(x), torch.from_numpy(actions),
                                  {k: torch.from_numpy(v) for k, v in noise.items()},
                                  step_hyper(0, run), observe)
    return {"truth": x[0], "recon": rec.numpy()[0], "pred": pred.numpy()[0],
            "observe": np.asarray(observe)}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """20 log10(2 / sqrt(MSE)) for images in [-1, 1]."""
    mse = float(np.mean((np.asarray(a, np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 20 * np.log10(2 / np.sqrt(mse))


def _torch_layout(engine: Any, cfg: AIMEConfig) -> dict[str, np.ndarray]:
    from twinframe.models.aime import layout

    model = engine.export_state()["model"]
    return model if engine.framework == "torch" else layout(cfg).table.tree_to_torch(model)


def evaluate(engine: Any, cfg: AIMEConfig, run: AIMERun, n: int) -> dict[str, Any]:
    """Reconstruction PSNR (MDL mode of the posterior mean) and open-loop prediction PSNR on n
    evaluation clips (split 1)."""
    state = _torch_layout(engine, cfg)
    rec, pred = [], []
    for i in range(max(n, 1)):
        r = rollout(cfg, run, state, 1, i)
        o = int(r["observe"])
        rec.append(psnr(r["recon"], r["truth"]))
        pred.append(psnr(r["pred"][o:], r["truth"][o:]))
    return {"eval": {"recon_psnr_db": float(np.mean(rec)), "pred_psnr_db": float(np.mean(pred)),
                     "clips": max(n, 1)}}


def write_strip(path: Any, r: dict[str, np.ndarray]) -> None:
    write_png(path, frames_grid([r["truth"], r["recon"], r["pred"]]))


def visualize(cfg: AIMEConfig, run: AIMERun, state: dict[str, np.ndarray]) -> dict[str, bytes]:
    """PNG of evaluation clip 0 at torch-layout weights `state`: rows ground truth,
    reconstruction, open-loop prediction from the middle of the clip (what `twinframe train`
    writes next to its checkpoints and `twinframe report` shows)."""
    r = rollout(cfg, run, state, 1, 0)
    name = f"eval clip 0: truth, reconstruction, prediction from frame {int(r['observe'])}"
    return {name: png_bytes(frames_grid([r["truth"], r["recon"], r["pred"]]))}


def infer(cfg: AIMEConfig, run: AIMERun, state: dict[str, np.ndarray], subset: str = "eval",
          index: int = 0) -> str:
    """Roll clip `index` of the evaluation split (`subset` 'eval') or the training stream
    ('train') through the model; write the strip `aime_rollout_<subset><index>.png` (rows:
    ground truth, reconstruction, open-loop prediction after half the clip)."""
    from twinframe.errors import ConfigError

    split = {"eval": 1, "train": 0, "medium": 1}.get(subset)
    if split is None:
        raise ConfigError(f"unknown subset {subset!r} (have eval, train)")
    r = rollout(cfg, run, state, split, index)
    o = int(r["observe"])
    path = f"aime_rollout_{'eval' if split else 'train'}{index}.png"
    write_strip(path, r)
    per = [psnr(r["recon"][t], r["truth"][t]) for t in range(len(r["truth"]))]
    pre = [psnr(r["pred"][t], r["truth"][t]) for t in range(o, len(r["truth"]))]
    return "\n".join([
        f"wrote {path}: {len(r['truth'])} frames; rows: ground truth, reconstruction, "
        f"open-loop prediction from frame {o}",
        "reconstruction PSNR per frame (dB): " + " ".join(f"{v:.1f}" for v in per),
        "prediction PSNR per frame (dB):     " + " ".join(f"{v:.1f}" for v in pre)])
