"""Puzzles generated ahead in worker processes are the puzzles generated inline."""

import numpy as np

from twinframe.tasks import sudoku
from twinframe.tasks.prefetch import PuzzlePrefetch


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_prefetched_equal_inline_in_stream_order():
    stream, pre = sudoku.SudokuStream(5), PuzzlePrefetch(5, batch=3, workers=1)
    pre.plan(2, stream.counters)
    assert pre.pending  # queued ahead
    for _ in range(6):
        d, j = stream.next_id(2)
        assert _same(pre.get(d, j), sudoku.train_puzzle(5, d, j))
        pre.plan(2, stream.counters)
    assert all(j >= stream.counters[d] for d, j in pre.pending)  # nothing stale kept
    pre.close()
    assert not pre.pending


def test_inline_without_workers():
    pre = PuzzlePrefetch(5, batch=3, workers=0)
    pre.plan(4, [0] * 5)
    assert not pre.pending and _same(pre.get(4, 1), sudoku.train_puzzle(5, 4, 1))
