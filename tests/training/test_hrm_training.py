"""HRM training: resume is bit-identical, checkpoints rotate, torch checkpoints continue in JAX."""


import numpy as np
import pytest

from twinframe import registry
from twinframe.errors import CheckpointError
from twinframe.store import checkpoint
from twinframe.training.loop import train

SPEC = registry.get("hrm")
CFG, RUN = SPEC.config("tiny"), SPEC.run_config("tiny")
N = 6


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_resume_is_bit_identical(tmp_path, framework, resume_bit_identical):
    resume_bit_identical(SPEC, CFG, RUN, framework, N, tmp_path)


def test_checkpoints_rotate_and_record_everything(tmp_path):
    train(SPEC, CFG, RUN, "torch", 7, tmp_path, every=2, keep=2, show_progress=False)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint-6.pt", "checkpoint-6.safetensors", "checkpoint-7.pt",
                     "checkpoint-7.safetensors", "metrics.jsonl"]
    s = checkpoint.load(tmp_path / "checkpoint-7.pt")
    assert s["host"]["t"] == 7 and s["opt"]["step"] == 7.0
    assert set(s["opt"]["exp_avg"]) == {k for k in s["model"] if "rotary" not in k
                                         and not k.startswith("initial_")}
    assert s["carry"]["z_H"].shape == (RUN.batch_size, 82, CFG.hidden_size)


def test_torch_checkpoint_continues_in_jax(tmp_path):
    """Mid-training switch through files: torch N steps -> JAX N steps == torch 2N steps."""
    train(SPEC, CFG, RUN, "torch", N, tmp_path / "t", every=N, show_progress=False)
    ref, recs_ref = train(SPEC, CFG, RUN, "torch", N, resume=tmp_path / "t", show_progress=False)
    sw, recs_sw = train(SPEC, CFG, RUN, "jax", N, tmp_path / "j", resume=tmp_path / "t",
                        show_progress=False)
    np.testing.assert_allclose([r["loss"] for r in recs_sw], [r["loss"] for r in recs_ref],
                               rtol=1e-4)
    hs, hr = sw.host.state_dict(), ref.host.state_dict()
    # the curriculum FIFO holds each framework's own f32 cell accuracy (ulp-level differences)
    np.testing.assert_allclose(hs["curriculum"].pop("fifo"), hr["curriculum"].pop("fifo"),
                               rtol=1e-6)
    assert hs == hr
    # and the JAX checkpoint goes back to torch
    back, _ = train(SPEC, CFG, RUN, "torch", 1, resume=tmp_path / "j", show_progress=False)
    assert back.t == 2 * N + 1


def test_resume_errors_are_one_line(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train(SPEC, CFG, RUN, "jax", 1, resume=tmp_path, show_progress=False)
    train(SPEC, CFG, RUN, "torch", 1, tmp_path, show_progress=False)
    with pytest.raises(CheckpointError, match="model config mismatch on resume: checkpoint has "
                                              "hidden_size"):
        train(SPEC, CFG.replace(hidden_size=16), RUN, "torch", 1, resume=tmp_path,
              show_progress=False)
    # a different run config (here the lr) resumes: only the architecture must match
    other, _ = train(SPEC, CFG, RUN.replace(lr=1e-3), "torch", 1, resume=tmp_path,
                     show_progress=False)
    assert other.t == 2
    (tmp_path / "checkpoint-9.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"checkpoint-9\.pt: not a "):
        train(SPEC, CFG, RUN, "torch", 1, resume=tmp_path, show_progress=False)


def test_lockstep_curve_and_switch_pass():
    from twinframe.parity import checks

    res = checks.run_curve(SPEC, CFG, RUN, 8)
    assert all(r.passed for r in res.records)
    loss = next(r for r in res.records if r.name.startswith("curve.loss"))
    assert loss.max_abs < 1e-5
    sw = checks.run_switch(SPEC, CFG, RUN, 4, "jax", "torch")
    assert all(r.passed for r in sw.records)
