"""Sudoku training puzzles generated ahead of need in worker processes (off the training
step's critical path).

A training puzzle is a pure function of (seed, d_index, j) (`sudoku.train_puzzle`), so
generating it early, elsewhere, changes nothing: the stream still draws (d, j) in the main
process from its curriculum Generator, and `get` returns exactly what `train_puzzle` returns.
Nothing here is saved: after a resume, `plan` continues from the restored counters.

Workers: one process pool per Python process (spawned on first use, shared by every stream,
shut down at exit), `TWINFRAME_DATA_WORKERS` processes (default: half the CPU cores, at least
one; 0 generates inline). Workers hold none of the parent's stdio and exit when the parent is
gone (a SIGKILLed trainer leaves no process behind and no pipe open). Work is bounded: per
difficulty the curriculum can draw at the current stage, at most `ceil(p * batch) + 2` puzzles
are queued ahead of its counter.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

import numpy as np

from twinframe.tasks import sudoku

log = logging.getLogger(__name__)

_POOL: list[ProcessPoolExecutor | None] = [None]


def default_workers() -> int:
    env = os.environ.get("TWINFRAME_DATA_WORKERS")
    if env is not None and env.strip():
        return max(int(env), 0)
    return max((os.cpu_count() or 2) // 2, 1)


def _worker_init(parent: int) -> None:
    """In each worker: let go of the parent's stdout/stderr (a reader of the parent's pipes must
    see EOF when the parent ends, even by SIGKILL) and exit when the parent is gone."""
    import threading
    import time

    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def _pool(workers: int) -> ProcessPoolExecutor | None:
    """The process-wide pool (spawned processes: no fork of a process running JAX threads)."""
    if workers <= 0:
        return None
    if _POOL[0] is None:
        import multiprocessing

        _POOL[0] = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_worker_init, initargs=(os.getpid(),))
        atexit.register(shutdown)
    return _POOL[0]


def shutdown() -> None:
    pool, _POOL[0] = _POOL[0], None
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)


class PuzzlePrefetch:
    """Puzzles (d, j) of one seed queued ahead in the pool; `get` falls back to generating
    inline for what was not queued (or when the pool is unavailable)."""

    def __init__(self, seed: int, batch: int, workers: int | None = None) -> None:
        self.seed, self.batch = seed, batch
        self.workers = default_workers() if workers is None else workers
        self.pending: dict[tuple[int, int], Future] = {}

    def plan(self, stage: int, counters: list[int]) -> None:
        """Queue the next puzzles of every difficulty drawable at `stage`; drop stale ones."""
        pool = self._pool_or_none()
        if pool is None:
            return
        for key in [k for k in self.pending if k[1] < counters[k[0]]]:
            self.pending.pop(key).cancel()
        for col, p in enumerate(sudoku.STAGE_PROBABILITIES[stage]):
            if p <= 0.0:
                continue
            d = sudoku.DIFFICULTIES.index(sudoku.CURRICULUM_DIFFICULTIES[col])
            for j in range(counters[d], counters[d] + math.ceil(p * self.batch) + 2):
                if (d, j) not in self.pending:
                    try:
                        self.pending[(d, j)] = pool.submit(sudoku.train_puzzle, self.seed, d, j)
                    except Exception as e:  # a broken or shut-down pool: inline from now on
                        self._disable(e)
                        return

    def get(self, d: int, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Training puzzle j of difficulty d: (puzzle, solution), as `sudoku.train_puzzle`. A
        queued one not yet started is taken back and generated here (the main process works
        too)."""
        fut = self.pending.pop((d, j), None)
        if fut is not None and not fut.cancel():
            try:
                return fut.result()
            except Exception as e:
                self._disable(e)
        return sudoku.train_puzzle(self.seed, d, j)

    def _pool_or_none(self) -> Any:
        return _pool(self.workers) if self.workers > 0 else None

    def _disable(self, e: BaseException) -> None:
        log.warning("puzzle workers unavailable (%s); generating inline", e)
        self.workers = 0
        self.pending.clear()

    def close(self) -> None:
        for fut in self.pending.values():
            fut.cancel()
        self.pending.clear()
