"""The generic training driver behind `twinframe train`: resume (converting a checkpoint written
by the other framework), step, log JSONL, show progress, checkpoint every K steps.

Faults (ours):
- `metrics.jsonl` gets one line per step, flushed as it is written (and fsynced before each
  checkpoint). On resume it is rewound to the checkpoint's step: the history is read from the
  resumed directory's `metrics.jsonl` (records after the checkpoint, repeated steps and a torn
  last line dropped) and rewritten atomically, so the log holds each step once, in order.
- A full or read-only disk ends the run with one line (`CheckpointWriteError`, exit 2); the
  checkpoints written before stay.
- Temp files of interrupted checkpoint writes are removed from the output (and resumed)
  directory before the run starts.
- A non-finite loss or gradient (an engine reports it under the record key `nonfinite`, with
  its state left as before the step) stops the run (`NonFiniteError`, naming the step and the
  first non-finite tensor) unless `on_nonfinite="skip"`: then the step's update is dropped,
  its record (with `nonfinite`) is logged and training goes on.
- An output directory holding checkpoints newer than the run's start step is refused (their
  rotation would delete the new run's checkpoints, and a resume would pick the old run).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import IO, Any

from twinframe.contract import ModelSpec, Record, TrainState
from twinframe.errors import CheckpointError, ConfigError
from twinframe.models.layout import convert_train_state
from twinframe.store import checkpoint, io
from twinframe.store.checkpoint import CheckpointWriteError
from twinframe.training.guard import NONFINITE_KEY, NonFiniteError
from twinframe.training.runner import Trainer

log = logging.getLogger(__name__)

METRICS = "metrics.jsonl"
ON_NONFINITE = ("stop", "skip")


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
    on_nonfinite: str = "stop",
) -> tuple[Trainer, list[Record]]:
    """Run `steps` more steps; returns (trainer, records of this invocation)."""
    if on_nonfinite not in ON_NONFINITE:
        raise ConfigError(f"on_nonfinite must be one of {', '.join(ON_NONFINITE)}")
    ckpt = Path(ckpt_dir) if ckpt_dir else None
    if resume:
        _remove_stale(Path(resume))
    if ckpt and ckpt != (Path(resume) if resume else None):
        _remove_stale(ckpt)
    trainer = Trainer(spec, cfg, run, framework)
    try:
        if resume:
            state = resume_state(spec, cfg, run, framework, resume)
            _compare_runtime(state, framework, trainer.runtime())
            trainer.import_state(state)
            log.info("resumed at step %d from %s", trainer.t, resume)
        every = every or run.checkpoint_every or steps
        metrics = _MetricsLog(ckpt, trainer.t, Path(resume) if resume else None) if ckpt else None
        records = _run(spec, trainer, framework, steps, ckpt, every, keep, metrics,
                       show_progress, on_nonfinite)
    except CheckpointWriteError as e:
        trainer.close()
        raise CheckpointWriteError(f"{e}; {_last_good(ckpt)}") from None
    except BaseException:
        trainer.close()
        raise
    return trainer, records


def _compare_runtime(state: TrainState, framework: str, now: dict[str, Any]) -> None:
    """Warn when the checkpoint was written by the same framework under another runtime (torch
    CPU: another thread count, MKL path or torch build): the resumed run is then not bitwise
    the run that would have continued (ulp-level differences that grow)."""
    was = state.get("runtime") or {}
    if framework not in was:  # written by the other framework (or before runtimes were kept)
        return
    diff = {k: (was.get(k), now.get(k)) for k in sorted(set(was) | set(now))
            if was.get(k) != now.get(k)}
    if diff:
        log.warning("resuming under another runtime (%s): results will differ at the ulp level "
                    "from an uninterrupted run", ", ".join(f"{k} {a} -> {b}" for k, (a, b) in
                                                          diff.items()))


def _run(spec: ModelSpec, trainer: Trainer, framework: str, steps: int, ckpt: Path | None,
         every: int, keep: int, metrics: _MetricsLog | None, show_progress: bool,
         on_nonfinite: str) -> list[Record]:
    bar = _progress(steps, trainer.t, spec.name, framework, show_progress)
    records: list[Record] = []
    t_start = time.perf_counter()
    try:
        for _ in range(steps):
            rec = trainer.train_step()
            bad = rec.get(NONFINITE_KEY)
            if bad and on_nonfinite == "stop":
                raise NonFiniteError(
                    f"step {rec['step']}: non-finite {bad}; stopped, nothing of this step "
                    f"saved ({_last_good(ckpt)}; --on-nonfinite skip drops such updates)")
            if bad:
                log.warning("step %s: non-finite %s: update skipped", rec["step"], bad)
            records.append(rec)
            log.debug("step %s", rec)
            if metrics:
                metrics.write(rec)
            if ckpt and (trainer.t == 1 or trainer.t % every == 0):
                _save(ckpt, trainer, keep, metrics)
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(postfix(spec, rec))
        if ckpt and records and not (trainer.t == 1 or trainer.t % every == 0):
            _save(ckpt, trainer, keep, metrics)
    finally:
        if bar is not None:
            bar.close()
        if metrics:
            metrics.close()
    log.info("%d steps in %.1fs", len(records), time.perf_counter() - t_start)
    return records


def _save(ckpt: Path, trainer: Trainer, keep: int, metrics: _MetricsLog | None) -> None:
    if metrics:
        metrics.sync()
    checkpoint.save(ckpt, trainer.export_state(), keep)


def _last_good(ckpt: Path | None) -> str:
    if ckpt is None:
        return "no checkpoint directory"
    try:
        return f"last good checkpoint {checkpoint.latest(ckpt)}"
    except CheckpointError:
        return f"no checkpoint in {ckpt}"


def _remove_stale(d: Path) -> None:
    try:
        checkpoint.remove_stale(d)
    except OSError as e:  # a read-only resume directory, say: nothing to clean there
        log.debug("not cleaning %s: %s", d, e)


class _MetricsLog:
    """`ckpt/metrics.jsonl`: rewound to step `t0` on open (history from `source`/metrics.jsonl,
    default `ckpt`'s own), then one flushed line per record."""

    def __init__(self, ckpt: Path, t0: int, source: Path | None) -> None:
        self.path = ckpt / METRICS
        try:
            ckpt.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise checkpoint.write_failure(ckpt, e) from None
        newer = [t for t in checkpoint.steps(ckpt) if t > t0]
        if newer:
            raise CheckpointError(
                f"{ckpt} holds checkpoints of a later step (newest checkpoint-{max(newer)}) than "
                f"this run's start (step {t0}): pass --resume {ckpt} to continue that run, or "
                "use another output directory")
        self._rewind((source or ckpt) / METRICS, t0)
        try:
            self.file: IO[str] | None = self.path.open("a", encoding="utf-8")
        except OSError as e:
            raise checkpoint.write_failure(self.path, e) from None

    def _rewind(self, src: Path, t0: int) -> None:
        lines, dropped = _history(src, t0) if src.is_file() else ([], 0)
        same = src == self.path
        if same and not dropped:
            return  # already exactly the history up to t0
        if not lines and not self.path.exists():
            return
        if dropped:
            log.info("%s: %d record(s) after step %d dropped (resuming from step %d)", src,
                     dropped, t0, t0)
        if lines and json.loads(lines[-1])["step"] != t0:
            log.warning("%s: history ends at step %s, the run resumes at step %d",
                        src, json.loads(lines[-1])["step"], t0)
        data = "".join(x + "\n" for x in lines).encode()

        def write(p: Path) -> None:
            with open(p, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())

        try:
            io.atomic_write(self.path, write)
        except (OSError, CheckpointError) as e:
            raise checkpoint.write_failure(self.path, e) from None

    def write(self, rec: Record) -> None:
        line = json.dumps(_json_safe(rec), allow_nan=False, default=_json_default) + "\n"
        try:
            assert self.file is not None
            self.file.write(line)
            self.file.flush()
        except OSError as e:
            raise checkpoint.write_failure(self.path, e) from None

    def sync(self) -> None:
        """Make the records so far durable (before a checkpoint refers to them)."""
        try:
            assert self.file is not None
            self.file.flush()
            os.fsync(self.file.fileno())
        except OSError as e:
            raise checkpoint.write_failure(self.path, e) from None

    def close(self) -> None:
        f, self.file = self.file, None
        if f is not None:
            try:
                f.close()
            except OSError as e:  # the error that stopped the run was reported already
                log.debug("closing %s: %s", self.path, e)


def _history(src: Path, t0: int) -> tuple[list[str], int]:
    """The lines of steps 1..t0 of a metrics log as it stands after its last rewind: a step
    that goes back replaces what came after it; torn or foreign lines are dropped. Returns
    (lines, number of lines dropped)."""
    kept: list[tuple[int, str]] = []
    raw = src.read_text(encoding="utf-8", errors="replace").splitlines()
    for x in raw:
        try:
            step = json.loads(x)["step"]
        except (ValueError, KeyError, TypeError):
            continue
        if not isinstance(step, int):
            continue
        while kept and kept[-1][0] >= step:
            kept.pop()
        kept.append((step, x))
    lines = [x for s, x in kept if s <= t0]
    return lines, len(raw) - len(lines)


def _json_safe(rec: Record) -> Record:
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v
            for k, v in rec.items()}


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
