"""The moving-sprites generator against the golden checksums of aime.md §5.1."""

from __future__ import annotations

import numpy as np
import pytest

from twinframe.tasks import sprites


@pytest.mark.parametrize("size,steps,adim,total,frame0,pix,value", [
    (32, 4, 4, 531_056, 154_186, (3, 0, 16, 16), 26),
    (64, 10, 21, 6_591_861, 617_220, (9, 0, 32, 32), 36),
    (16, 4, 4, 133_766, 38_671, (3, 0, 8, 8), 26),
])
def test_golden_checksums(size, steps, adim, total, frame0, pix, value):
    f, a = sprites.sample(0, 0, 0, size, steps, adim)
    assert f.dtype == np.uint8 and f.shape == (steps, 3, size, size)
    assert int(f.astype(np.int64).sum()) == total
    assert int(f[0].astype(np.int64).sum()) == frame0
    assert int(f[pix]) == value


def test_golden_actions_and_batch_means():
    _, a = sprites.sample(0, 0, 0, 32, 4, 4)
    assert a.sum() == pytest.approx(-5.675800, abs=1e-6)
    np.testing.assert_allclose(a[0, :2], [-0.15462556, -0.94336066], atol=1e-8)
    _, a = sprites.sample(0, 0, 0, 64, 10, 21)
    assert a.sum() == pytest.approx(17.044055, abs=1e-6)
    for (size, steps, adim), mean in (((32, 4, 4), 0.175362), ((64, 10, 21), 0.203549),
                                      ((16, 4, 4), 0.176525)):
        frames, actions = sprites.batch(0, 0, 2, size, steps, adim)
        assert frames.dtype == np.float32 and actions.dtype == np.float32
        assert float(frames.mean()) == pytest.approx(mean, abs=1e-6)


def test_eval_split_and_stream():
    f, _ = sprites.sample(0, 1, 0, 32, 4, 4)
    assert int(f.astype(np.int64).sum()) == 654_553
    b1, _ = sprites.batch(0, 1, 2, 16, 4, 4)
    s2, _ = sprites.sample(0, 0, 2, 16, 4, 4)
    np.testing.assert_array_equal(b1[0], s2.astype(np.float32) / 255)
    x = sprites.model_input(b1)
    assert x.min() >= -1 and x.max() <= 1
