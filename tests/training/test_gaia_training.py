"""GAIA training: the agent loop on LeakyReach (host + torch eager / JAX jit engines): records,
lockstep (no action mismatches, L5 within tolerance), resume bit-identical on CPU, a mid-run
switch of framework, evaluation / inference, and the CLI."""

import json

import numpy as np
import pytest

from twinframe import registry
from twinframe.cli import main
from twinframe.parity import checks
from twinframe.training.loop import train
from twinframe.training.runner import Lockstep, Trainer

SPEC = registry.get("gaia")
CFG, RUN = SPEC.config("tiny"), SPEC.run_config("tiny")


def test_records_and_episode_bookkeeping():
    tr = Trainer(SPEC, CFG, RUN.replace(episode_len=3), "torch")
    try:
        recs = [tr.train_step() for _ in range(4)]
    finally:
        tr.close()
    assert [r["step"] for r in recs] == [1, 2, 3, 4]
    assert recs[2]["episode_return"] == pytest.approx(sum(r["reward"] for r in recs[:3]))
    assert recs[3]["episode"] == 1 and recs[3]["episode_return"] is None
    assert tr.host.state_dict()["returns"] == [recs[2]["episode_return"]]
    assert {"loss", "free_energy", "reward", "steps_per_s", "idx"} <= set(recs[0])


def test_lockstep_has_no_action_mismatch_and_l5_passes():
    lock = Lockstep(SPEC, CFG, RUN)
    try:
        for _ in range(12):
            lock.step()
        assert lock.mismatches == 0
    finally:
        lock.close()
    res = checks.run_curve(SPEC, CFG, RUN, 12)
    bad = [(r.name, r.max_rel) for r in res.records if not r.passed]
    assert not bad, bad


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_resume_is_bit_identical(tmp_path, framework, resume_bit_identical):
    full, resumed = resume_bit_identical(SPEC, CFG, RUN, framework, 3, tmp_path)
    a, b = full.engine.export_state()["model"], resumed.engine.export_state()["model"]
    if framework == "torch":  # traces, histories and counters too
        assert all(np.array_equal(a[k], b[k]) for k in a)


def test_switch_torch_to_jax_mid_run():
    res = checks.run_switch(SPEC, CFG, RUN, 4, "torch", "jax")
    bad = [(r.name, r.max_rel) for r in res.records if not r.passed]
    assert not bad, bad


def test_evaluate_and_infer():
    tr = Trainer(SPEC, CFG, RUN, "jax")
    try:
        ev = tr.evaluate(2)
    finally:
        tr.close()
    assert len(ev["returns"]) == 2 and ev["mean_return"] <= 0
    text = SPEC.infer(CFG, RUN, SPEC.canonical_init(CFG, 0), "", 1)
    assert "return" in text and "episode 1" in text


def test_cli_train_infer_convert(tmp_path, capsys):
    out = tmp_path / "ckpt"
    assert main(["train", "gaia", "--steps", "2", "--framework", "torch", "--out", str(out),
                 "--no-progress"]) == 0
    assert main(["train", "gaia", "--steps", "1", "--framework", "jax", "--out", str(out),
                 "--resume", str(out), "--no-progress"]) == 0
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3]
    capsys.readouterr()
    assert main(["infer", "gaia", str(out)]) == 0
    assert "return" in capsys.readouterr().out
    # a bare GAIA state dict (no metadata) is recognised by `convert` without flags
    from safetensors.numpy import save_file

    sd = SPEC.canonical_init(CFG, 0)
    save_file({k: np.array(v) for k, v in sd.items()}, str(tmp_path / "bare.st"))
    (tmp_path / "bare.st").rename(tmp_path / "bare.safetensors")
    assert main(["convert", str(tmp_path / "bare.safetensors"), str(tmp_path / "b.npz")]) == 0
    assert "gaia" in capsys.readouterr().out


def test_train_loop_progress_fields():
    _, recs = train(SPEC, CFG, RUN, "jax", 2, show_progress=False)
    from twinframe.training.loop import postfix

    text = postfix(SPEC, recs[-1])
    assert "reward" in text and "free energy" in text and "step/s" in text
