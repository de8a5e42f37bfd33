"""`twinframe train altlas` and the sandbox (issue 10 item 2): without OS isolation it refuses
with one line, unless `--unsafe-no-sandbox`, which is logged, shown in the progress bar and
recorded (every record, the checkpoint's host state and run config). Hosts that never run a
program (the parity toy-reward host) need no sandbox."""

import json
import logging

import numpy as np
import pytest

from twinframe import cli, registry
from twinframe.parity.altlas import ToyRewardHost
from twinframe.store import checkpoint
from twinframe.tasks.altlas import SandboxUnavailable, sandbox
from twinframe.training import altlas as tr_alt
from twinframe.training.loop import postfix
from twinframe.training.runner import make_engine

SPEC = registry.get("altlas")
CFG = SPEC.config("tiny").replace(max_gen_len=8)
RUN = SPEC.run_config("tiny").replace(batch_size=2)
REASON = "bwrap not found (test)"


@pytest.fixture()
def no_sandbox(monkeypatch):
    monkeypatch.setattr(sandbox, "_layout", lambda refresh=False: (None, REASON))


def _train(tmp_path, *extra):
    return cli.main(["train", "altlas", "--framework", "torch", "--steps", "2", "--out",
                     str(tmp_path), "--no-progress", *extra])


def test_train_refuses_without_sandbox(no_sandbox, tmp_path, capsys):
    assert _train(tmp_path / "run") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"twinframe train: error: AltLAS sandbox unavailable: {REASON}; "
                   "--unsafe-no-sandbox runs programs without isolation (unsafe)"]
    assert not (tmp_path / "run").exists()
    with pytest.raises(SandboxUnavailable):
        tr_alt.make_host(CFG, RUN)


def test_unsafe_no_sandbox_is_logged_shown_and_recorded(no_sandbox, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert _train(tmp_path, "--unsafe-no-sandbox") == 0
    assert any("WITHOUT a sandbox" in r.getMessage() for r in caplog.records)
    recs = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["sandbox"] for r in recs] == ["NONE (unsafe)"] * 2
    assert "sandbox NONE (unsafe)" in postfix(SPEC, recs[-1])
    state = checkpoint.load(checkpoint.latest(tmp_path))
    assert state["host"]["sandbox"] == "none" and state["run"]["unsafe_no_sandbox"] is True


def test_records_say_bwrap_when_sandboxed():
    if sandbox.sandbox_status() is not None:
        pytest.skip(f"no sandbox here: {sandbox.sandbox_status()}")
    host = tr_alt.make_host(CFG, RUN)
    eng = make_engine(SPEC, CFG, RUN, "torch")
    try:
        rec = host.step([eng]).records[0]
    finally:
        host.close()
    assert rec["sandbox"] == "bwrap" and "sandbox bwrap" in postfix(SPEC, rec)
    assert host.state_dict()["sandbox"] == "bwrap"


def test_hosts_that_run_no_program_need_no_sandbox(no_sandbox):
    host = ToyRewardHost(CFG, RUN)
    eng = make_engine(SPEC, CFG, RUN, "torch")
    rec = host.step([eng]).records[0]
    host.close()
    assert rec["sandbox"] is None and np.isfinite(rec["loss"])


def test_flag_is_refused_for_models_without_programs(tmp_path, capsys):
    assert cli.main(["train", "hrm", "--steps", "1", "--out", str(tmp_path),
                     "--unsafe-no-sandbox"]) == 2
    assert capsys.readouterr().err.strip() == (
        "twinframe train: error: model 'hrm' runs no generated programs: --unsafe-no-sandbox "
        "does not apply")
