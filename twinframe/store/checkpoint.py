"""Train-state checkpoints, written atomically, the last K kept.

torch: `checkpoint-{t}.pt` (full train state: model state_dict, the optimizer's own
`state_dict()` with `param_names`, carry, host state, config; loadable with
`torch.load(weights_only=True)`) plus `checkpoint-{t}.safetensors` (model weights only).
JAX: orbax directory `checkpoint-{t}/` with `tree/` = {model, opt, carry} and `twinframe.json`
= {model, config, host, framework}.

A checkpoint is complete once its train state (`.pt` file or orbax directory) has its final
name: torch writes the weights-only `.safetensors` first, the `.pt` last. Every file goes
through a temp path + rename (`io.atomic_write`); a write that fails for lack of space or
permission is a one-line `CheckpointWriteError`, and the older checkpoints stay (rotation runs
only after a complete write). Temp files left by a killed write are removed by `remove_stale`.

Fault injection for tests (`TWINFRAME_CKPT_FAULT=POINT@STEP[,POINT@STEP...]`): the process
SIGKILLs itself at POINT of the write of checkpoint STEP, one of `FAULT_POINTS`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import signal
from pathlib import Path
from typing import Any

import numpy as np

from twinframe.errors import CheckpointError
from twinframe.store import io

log = logging.getLogger(__name__)

PATTERN = re.compile(r"^checkpoint-(\d+)(\.pt|\.safetensors)?$")
FORMAT = "twinframe-train/1"
# temp entries of interrupted writes: io.atomic_write's (".tf-...", earlier ".<name>.XXXX")
# and this module's rotation (".tf-del-checkpoint-N")
STALE = re.compile(r"^\.(tf-|checkpoint-\d+|metrics\.jsonl\.)")
FAULT_ENV = "TWINFRAME_CKPT_FAULT"
FAULT_POINTS = (
    "start",      # save entered, nothing of step t written
    "weights",    # torch: checkpoint-t.safetensors in place, the .pt not begun (jax: as start)
    "temp",       # the train state complete under its temp name, not renamed
    "renamed",    # the train state in place, rotation not begun
    "rotating",   # rotation: the oldest checkpoint's train state removed, its other files not
    "done",       # rotation finished
)


class CheckpointWriteError(CheckpointError):
    """A checkpoint (or the metrics log) could not be written: disk full, read-only, no
    permission. One line; the previous checkpoints are untouched."""


@contextlib.contextmanager
def _library_logs_held() -> Any:
    """orbax reports a failed background write by logging it at ERROR with tracebacks (the
    `absl` logger, ~200 lines) before the exception reaches us. Hold those records: on success
    they are passed on; on failure the one-line error says it all and they go to DEBUG."""
    logger = logging.getLogger("absl")
    held: list[logging.LogRecord] = []

    class Hold(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            held.append(record)
            return False

    hold = Hold()
    logger.addFilter(hold)
    ok = False
    try:
        yield
        ok = True
    finally:
        logger.removeFilter(hold)
        for r in held:
            if ok:
                logger.handle(r)
            else:
                log.debug("during the failed write: %s", r.getMessage().splitlines()[0][:300])


def _fault(point: str, t: int) -> None:
    """SIGKILL this process at `point` of the write of checkpoint t when TWINFRAME_CKPT_FAULT
    asks for it (tests of kill + resume)."""
    spec = os.environ.get(FAULT_ENV)
    if spec and f"{point}@{t}" in spec.split(","):
        os.kill(os.getpid(), signal.SIGKILL)


def write_failure(what: str | Path, e: BaseException) -> CheckpointWriteError:
    """One line for a failed write: the reason (errno name) without the library's traceback."""
    code = _errno_of(e)
    if code is not None:
        reason = f"{os.strerror(code).lower()} ({errno.errorcode.get(code, code)})"
    else:
        reason = io.first_line(e)
    return CheckpointWriteError(f"cannot write {what}: {reason}")


_ERRNO_TEXT = {errno.ENOSPC: "No space left on device", errno.EROFS: "Read-only file system",
               errno.EACCES: "Permission denied", errno.EDQUOT: "Disk quota exceeded",
               errno.EPERM: "Operation not permitted"}


def _errno_of(e: BaseException) -> int | None:
    """The errno of an OSError in e's chain, else one recognised in its text (tensorstore and
    orbax report disk errors as their own exception types)."""
    seen: set[int] = set()
    x: BaseException | None = e
    while x is not None and id(x) not in seen:
        seen.add(id(x))
        if isinstance(x, OSError) and x.errno in _ERRNO_TEXT:
            return x.errno
        x = x.__cause__ or x.__context__
    text = str(e)
    return next((c for c, m in _ERRNO_TEXT.items() if m in text), None)


def _contiguous(x: Any) -> np.ndarray:
    """C-contiguous copy that keeps 0-d arrays 0-d (np.ascontiguousarray makes them 1-d)."""
    return np.ascontiguousarray(x).reshape(np.shape(x))


def _torch_optimizer_dict(opt: dict[str, Any]) -> dict[str, Any]:
    """Named optimizer state {scalar counters, slot: {name: moment}} -> torch's own optimizer
    state_dict layout (index-keyed state, one param group) + `param_names`."""
    import torch

    slots = {k: v for k, v in opt.items() if isinstance(v, dict)}
    scalars = {k: v for k, v in opt.items() if not isinstance(v, dict)}
    names = list(next(iter(slots.values()), {}))
    state = {i: {**{k: torch.tensor(float(v)) for k, v in scalars.items()},
                 **{k: torch.from_numpy(_contiguous(slots[k][n])) for k in slots}}
             for i, n in enumerate(names)}
    return {"state": state, "param_groups": [{"params": list(range(len(names)))}],
            "param_names": names, "scalars": sorted(scalars)}


def _named_optimizer(sd: dict[str, Any]) -> dict[str, Any]:
    """torch optimizer state_dict (index-keyed, with param_names) -> named state."""
    names, scalars = sd.get("param_names"), sd.get("scalars", [])
    if not names:
        raise CheckpointError("optimizer state has no param_names: cannot map moments")
    out: dict[str, Any] = {k: 0.0 for k in scalars}
    for i, n in enumerate(names):
        st = sd["state"].get(i) or sd["state"].get(str(i))
        if st is None:
            raise CheckpointError(f"optimizer state missing for parameter '{n}'")
        for k, v in st.items():
            if k in scalars:
                out[k] = float(v)
            else:
                out.setdefault(k, {})[n] = io.to_numpy(v).astype(np.float32)
    return out


def save(ckpt_dir: str | Path, state: dict[str, Any], keep: int = 3) -> Path:
    """Write the train state of step t and drop all but the newest `keep` checkpoints.
    Raises `CheckpointWriteError` (one line) when the disk refuses the write."""
    ckpt_dir = Path(ckpt_dir)
    t = state["host"]["t"]
    _fault("start", t)
    try:
        with _library_logs_held():
            path = _write(ckpt_dir, state, t)
    except CheckpointWriteError:
        raise
    except Exception as e:  # noqa: BLE001 - OSError, or tensorstore/orbax wrapping one
        if isinstance(e, CheckpointError) and _errno_of(e) is None:
            raise
        raise write_failure(ckpt_dir / f"checkpoint-{t}", e) from None
    _fault("renamed", t)
    try:
        _rotate(ckpt_dir, keep, t)
    except OSError as e:
        log.warning("checkpoint rotation in %s failed: %s", ckpt_dir, io.first_line(e))
    _fault("done", t)
    return path


def _write(ckpt_dir: Path, state: dict[str, Any], t: int) -> Path:
    fw, name = state["framework"], state["model_name"]
    host_json = json.dumps(state["host"])
    if fw == "torch":
        import torch

        path = ckpt_dir / f"checkpoint-{t}.pt"
        obj = {
            "format": FORMAT, "model_name": name, "framework": fw,
            "config": json.dumps(state["config"]), "host": host_json,
            "model": {k: io.from_numpy(v, "float32") for k, v in state["model"].items()},
            "run": json.dumps(state.get("run", {})),
            "runtime": json.dumps(state.get("runtime", {})),
            "optimizer": _torch_optimizer_dict(state["opt"]),
            "carry": {k: torch.from_numpy(np.array(v, np.float32)) for k, v in
                      state["carry"].items()},
        }
        io.write_torch(ckpt_dir / f"checkpoint-{t}.safetensors", state["model"], name,
                       state["config"])
        _fault("weights", t)

        def write_pt(p: Path) -> None:
            torch.save(obj, str(p))
            _fault("temp", t)

        io.atomic_write(path, write_pt)
    else:
        _fault("weights", t)
        path = ckpt_dir / f"checkpoint-{t}"
        tree = {"model": state["model"], "opt": state["opt"], "carry": state["carry"]}
        meta = {"format": FORMAT, "framework": fw, "host": state["host"],
                "run": state.get("run", {}), "runtime": state.get("runtime", {})}

        def write_dir(p: Path) -> None:  # an atomic orbax write into this write's temp path
            io.write_jax(p, tree, name, state["config"], meta)
            _fault("temp", t)

        io.atomic_write(path, write_dir, is_dir=True)
    return path


def _steps(ckpt_dir: Path) -> dict[int, list[Path]]:
    found: dict[int, list[Path]] = {}
    for p in ckpt_dir.iterdir() if ckpt_dir.is_dir() else []:
        m = PATTERN.match(p.name)
        if m:
            found.setdefault(int(m.group(1)), []).append(p)
    return found


def _complete(paths: list[Path]) -> bool:
    return any(p.suffix == ".pt" or p.is_dir() for p in paths)


def steps(ckpt_dir: str | Path) -> list[int]:
    """Steps with a complete checkpoint (a train state) in ckpt_dir, ascending."""
    return sorted(t for t, ps in _steps(Path(ckpt_dir)).items() if _complete(ps))


def _rotate(ckpt_dir: Path, keep: int, t_now: int = 0) -> None:
    """Keep the newest `keep` complete checkpoints; drop every older step (with the files of
    incomplete ones): the train state first (a step without one is no longer a checkpoint), a
    directory renamed to a temp name before it is deleted."""
    found = _steps(ckpt_dir)
    complete = sorted(t for t, ps in found.items() if _complete(ps))
    if keep <= 0 or len(complete) <= keep:
        return
    oldest_kept = complete[-keep]
    for t in sorted(t for t in found if t < oldest_kept):
        for p in sorted(found[t], key=lambda q: q.suffix != ".pt"):
            if p.is_dir():
                doomed = p.with_name(f".tf-del-{p.name}")
                os.rename(p, doomed)
                _fault("rotating", t_now)
                shutil.rmtree(doomed, ignore_errors=True)
            else:
                p.unlink()
                _fault("rotating", t_now)


def remove_stale(ckpt_dir: str | Path) -> list[str]:
    """Remove the temp files and directories of interrupted writes and rotations (names
    matching `STALE`) from a run directory; returns their names. Only for a directory no other
    process is writing to."""
    removed = []
    d = Path(ckpt_dir)
    for p in sorted(d.iterdir()) if d.is_dir() else []:
        if STALE.match(p.name):
            try:
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            except OSError as e:
                log.warning("cannot remove %s: %s", p, io.first_line(e))
                continue
            removed.append(p.name)
    if removed:
        log.info("removed %d stale temp file(s) of interrupted writes in %s: %s", len(removed),
                 d, ", ".join(removed))
    return removed


def latest(ckpt_dir: str | Path) -> Path:
    """Newest full train state in a directory (a `.pt` file or an orbax directory)."""
    found = _steps(Path(ckpt_dir))
    for t in sorted(found, reverse=True):
        for p in sorted(found[t]):
            if p.suffix == ".pt" or p.is_dir():
                return p
    raise CheckpointError(f"{ckpt_dir}: no checkpoint-N.pt or checkpoint-N/ to resume from")


def load(path: str | Path) -> dict[str, Any]:
    """Read a train state written by `save` (either framework), validated to one line."""
    path = Path(path)
    if path.suffix == ".pt":
        model, extras = io.read_torch(path)
        if extras.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not a twinframe train state (model weights only?)")
        try:
            return {"framework": "torch", "model_name": extras["model"],
                    "config": extras["config"], "run": json.loads(extras.get("run", "{}")),
                    "runtime": json.loads(extras.get("runtime", "{}")),
                    "host": json.loads(extras["host"]),
                    "model": model, "opt": _named_optimizer(extras["optimizer"]),
                    "carry": {k: io.to_numpy(v) for k, v in extras["carry"].items()}}
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: incomplete train state ({e})") from None
    tree, meta = io.read_jax(path)
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a twinframe train state")
    return {"framework": "jax", "model_name": meta["model"], "config": meta["config"],
            "run": meta.get("run", {}), "runtime": meta.get("runtime", {}),
            "host": meta["host"], "model": tree["model"],
            "opt": tree["opt"], "carry": tree.get("carry", {})}
