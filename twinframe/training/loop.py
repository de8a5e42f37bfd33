"""The generic training driver behind `twinframe train`: resume (converting a checkpoint written
by the other framework), step, log JSONL, show progress, checkpoint every K steps."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from twinframe.errors import CheckpointError
from twinframe.parity.files import convert_train_state
from twinframe.training import checkpoint

log = logging.getLogger(__name__)


def resume_state(spec, cfg, framework: str, ckpt_dir: str | Path) -> dict[str, Any]:
    """Latest train state in ckpt_dir, converted to `framework`; config must match."""
    state = checkpoint.load(checkpoint.latest(ckpt_dir))
    if state["model_name"] != spec.name:
        raise CheckpointError(f"checkpoint is for model '{state['model_name']}', not '{spec.name}'")
    saved = spec.config_cls.from_dict(state["config"])
    if saved != cfg:
        diff = next(k for k, v in cfg.to_dict().items() if saved.to_dict()[k] != v)
        raise CheckpointError(f"config mismatch on resume: checkpoint has {diff}="
                              f"{saved.to_dict()[diff]!r}, run has {cfg.to_dict()[diff]!r}")
    return convert_train_state(state, spec.table(cfg), framework)


def train(
    spec,
    cfg,
    framework: str,
    steps: int,
    ckpt_dir: str | Path | None = None,
    every: int | None = None,
    keep: int = 3,
    resume: str | Path | None = None,
    show_progress: bool = True,
):
    """Run `steps` more steps; returns (trainer, records of this invocation)."""
    if spec.trainer is None:
        raise CheckpointError(f"model '{spec.name}' has no trainer yet")
    trainer = spec.trainer(cfg, framework)
    if resume:
        trainer.import_state(resume_state(spec, cfg, framework, resume))
        log.info("resumed at step %d from %s", trainer.t, resume)
    every = every or getattr(cfg, "checkpoint_every", 0) or steps
    ckpt = Path(ckpt_dir) if ckpt_dir else None
    if ckpt:
        ckpt.mkdir(parents=True, exist_ok=True)
    metrics_file = (ckpt / "metrics.jsonl").open("a") if ckpt else None
    bar = _progress(steps, trainer.t, spec.name, framework, show_progress)
    records = []
    t_start = time.perf_counter()
    try:
        for _ in range(steps):
            rec = trainer.train_step()
            records.append(rec)
            log.debug("step %s", rec)
            if metrics_file:
                metrics_file.write(json.dumps(rec, allow_nan=False, default=_json_default) + "\n")
            if ckpt and (trainer.t == 1 or trainer.t % every == 0):
                checkpoint.save(ckpt, trainer.export_state(), keep)
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(_postfix(rec))
        if ckpt and records and not (trainer.t == 1 or trainer.t % every == 0):
            checkpoint.save(ckpt, trainer.export_state(), keep)
    finally:
        if bar is not None:
            bar.close()
        if metrics_file:
            metrics_file.close()
    log.info("%d steps in %.1fs", len(records), time.perf_counter() - t_start)
    return trainer, records


def _json_default(x: Any) -> Any:
    return None if isinstance(x, float) and not math.isfinite(x) else str(x)


def _postfix(rec: dict[str, Any]) -> str:
    """Progress-bar text: loss plus the model's own headline metrics when present."""
    parts = [f"loss {rec['loss']:.4f}"]
    if "cell_acc_with_givens" in rec:
        parts.append(f"acc {rec['cell_acc_with_givens']:.3f}")
        parts.append(f"stage {rec['curriculum_stage']}")
    if "mean_reward" in rec:
        parts.append(f"reward {rec['mean_reward']:.3f}")
        parts.append(f"success {rec['success_rate']:.2f} ({rec['cumulative_successes']} total)")
    if rec.get("episodes_per_s"):
        parts.append(f"{rec['episodes_per_s']:.1f} episodes/s")
    elif rec.get("step_time_s"):
        parts.append(f"{1.0 / rec['step_time_s']:.1f} step/s")
    return ", ".join(parts)


def _progress(steps: int, start: int, name: str, fw: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=steps, desc=f"{name}/{fw} from step {start}", unit="step",
                dynamic_ncols=True)
