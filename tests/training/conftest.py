"""Shared assertions of the training tests (one copy for every model)."""

import json

import numpy as np
import pytest

from twinframe.training.loop import train


def _bits(state):
    return {k: np.asarray(v, np.float32).view(np.uint32).copy() for k, v in state.items()}


def check_resume_bit_identical(spec, cfg, run, framework, n, tmp_path):
    """2n uninterrupted steps == n steps + checkpoint + resume + n steps, bit for bit."""
    full, recs_full = train(spec, cfg, run, framework, 2 * n, show_progress=False)
    _, recs_a = train(spec, cfg, run, framework, n, tmp_path, every=n, show_progress=False)
    resumed, recs_b = train(spec, cfg, run, framework, n, tmp_path, every=n, resume=tmp_path,
                            show_progress=False)
    assert resumed.t == 2 * n
    a, b = _bits(full.params_torch_layout()), _bits(resumed.params_torch_layout())
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in recs_full] == [r["loss"] for r in recs_a + recs_b]
    assert full.host.state_dict() == resumed.host.state_dict()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == list(range(1, 2 * n + 1))
    return full, resumed


@pytest.fixture()
def resume_bit_identical():
    return check_resume_bit_identical
