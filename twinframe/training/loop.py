"""The generic training driver behind `twinframe train`: resume (converting a checkpoint written
by the other framework), step, log JSONL, show progress, checkpoint every K steps."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from twinframe.contract import ModelSpec, Record, TrainState
from twinframe.errors import CheckpointError
from twinframe.models.layout import convert_train_state
from twinframe.store import checkpoint
from twinframe.training.runner import Trainer

log = logging.getLogger(__name__)


def _first_difference(a: dict[str, Any], b: dict[str, Any]) -> str:
    return next(k for k in a if a[k] != b.get(k))


def resume_state(spec: ModelSpec, cfg: Any, run: Any, framework: str, ckpt_dir: str | Path
                 ) -> TrainState:
    """Latest train state in ckpt_dir, converted to `framework`. The model config must match;
    a different run config (say another lr) is allowed and logged."""
    state = checkpoint.load(checkpoint.latest(ckpt_dir))
    if state["model_name"] != spec.name:
        raise CheckpointError(f"checkpoint is for model '{state['model_name']}', not '{spec.name}'")
    saved = spec.config_cls.from_dict(state["config"])
    if saved != cfg:
        k = _first_difference(cfg.to_dict(), saved.to_dict())
        raise CheckpointError(f"model config mismatch on resume: checkpoint has {k}="
                              f"{saved.to_dict()[k]!r}, run has {cfg.to_dict()[k]!r}")
    if state.get("run") and state["run"] != run.to_dict():
        k = _first_difference(run.to_dict(), state["run"])
        log.warning("resuming with a different run config: %s=%r (checkpoint %r)", k,
                    run.to_dict()[k], state["run"].get(k))
    return convert_train_state(state, spec.layout(cfg), framework)


def train(
    spec: ModelSpec,
    cfg: Any,
    run: Any,
    framework: str,
    steps: int,
    ckpt_dir: str | Path | None = None,
    every: int | None = None,
    keep: int = 3,
    resume: str | Path | None = None,
    show_progress: bool = True,
) -> tuple[Trainer, list[Record]]:
    """Run `steps` more steps; returns (trainer, records of this invocation)."""
    trainer = Trainer(spec, cfg, run, framework)
    if resume:
        trainer.import_state(resume_state(spec, cfg, run, framework, resume))
        log.info("resumed at step %d from %s", trainer.t, resume)
    every = every or run.checkpoint_every or steps
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
                bar.set_postfix_str(postfix(spec, rec))
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


def postfix(spec: ModelSpec, rec: Record) -> str:
    """Progress-bar text: the model's declared progress fields present in `rec`."""
    return ", ".join(t for f in spec.progress if (t := f.render(rec)) is not None)


def _progress(steps: int, start: int, name: str, fw: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=steps, desc=f"{name}/{fw} from step {start}", unit="step",
                dynamic_ncols=True)
