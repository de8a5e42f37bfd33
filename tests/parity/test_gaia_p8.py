"""P8 learning curves (spec gaia.md §4.2), 200 steps at the reference config. P8a paired: the
per-50-step-window medians over seeds of the window-mean wm_loss agree within x1.5 (one paired
seed here; the spec's 8 seeds behind the `slow` marker). P8b native, one-sided bands (slow)."""

import numpy as np
import pytest

from twinframe.parity import gaia


def _check_p8a(res):
    assert (res["median_ratio"] <= 1.5).all(), res["median_ratio"]
    assert all(res["stable"])


def test_p8a_one_paired_seed():
    res = gaia.p8a([0])
    _check_p8a(res)
    # §4.4: windows 0.75490 / 0.03258 / 0.01678 / 0.01324 (torch, this CPU path may drift)
    np.testing.assert_allclose(res["torch_windows"][0][:2], [0.75490, 0.03258], rtol=0.05)


@pytest.mark.slow
def test_p8a_eight_paired_seeds():
    _check_p8a(gaia.p8a(range(8)))


@pytest.mark.slow
def test_p8b_native_bands():
    res = gaia.p8b(range(8))
    for side in ("torch", "jax"):
        r = res[side]
        assert np.median(r["late_loss"]) <= 0.08, (side, r["late_loss"])
        assert np.median(r["l2_fast"]) >= 4.4, (side, r["l2_fast"])
        assert max(r["l2_fast"]) <= 5.0 + 1e-5, (side, r["l2_fast"])
        assert all(r["stable"]), side
