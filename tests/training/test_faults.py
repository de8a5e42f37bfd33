"""Training under faults (issue 10 item 5): metrics.jsonl flushed per record and rewound on
resume; a full or read-only disk ends the run with one line (exit 2) and keeps the last good
checkpoint; temp files of killed writes are removed on resume; one file mode for all outputs.

The disk tests mount a small tmpfs (real ENOSPC / EROFS from the kernel); they are skipped
where `mount` is not permitted."""

import json
import os
import stat
import subprocess
import uuid

import numpy as np
import pytest

from twinframe import cli, registry
from twinframe.errors import CheckpointError
from twinframe.store import checkpoint
from twinframe.training.loop import train

HRM = registry.get("hrm")
CFG, RUN = HRM.config("tiny"), HRM.run_config("tiny")


def _steps(d):
    return [json.loads(x)["step"] for x in (d / "metrics.jsonl").read_text().splitlines()]


def _one_mode(d):
    """Every file (every directory) under d has the mode of a plain open (mkdir)."""
    mask = os.umask(0)
    os.umask(mask)
    files = {stat.S_IMODE(p.lstat().st_mode) for p in d.rglob("*") if p.is_file()}
    dirs = {stat.S_IMODE(p.lstat().st_mode) for p in d.rglob("*") if p.is_dir()}
    assert files == {0o666 & ~mask} and dirs <= {0o777 & ~mask}, (files, dirs)


def test_metrics_flushed_rewound_on_resume_stale_temps_removed(tmp_path, monkeypatch):
    """Each record is on disk before the checkpoint of its step. A killed run left records
    after its last checkpoint, a torn line and temp files of a checkpoint write and a rotation:
    the resumed log holds steps 1..N once, the temps are gone, all outputs have one mode."""
    seen = {}
    save = checkpoint.save

    def spy(d, state, keep=3):
        seen[state["host"]["t"]] = _steps(tmp_path)  # what another reader sees now
        return save(d, state, keep)

    monkeypatch.setattr(checkpoint, "save", spy)
    train(HRM, CFG, RUN, "torch", 4, tmp_path, every=2, show_progress=False)
    assert seen == {1: [1], 2: [1, 2], 4: [1, 2, 3, 4]}
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 5, "stale": True}) + "\n")
        f.write('{"step": 6, "lo')
    stale = [tmp_path / ".tf-abcd1234", tmp_path / ".checkpoint-6.pt.x1y2z3",
             tmp_path / ".tf-del-checkpoint-2"]
    stale[0].mkdir()
    (stale[0] / "o").write_bytes(b"partial")
    stale[1].write_bytes(b"partial")
    stale[2].mkdir()
    _, recs = train(HRM, CFG, RUN, "torch", 2, tmp_path, every=2, resume=tmp_path,
                    show_progress=False)
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4, 5, 6]
    assert [x["loss"] for x in lines[4:]] == [r["loss"] for r in recs]
    assert not any("stale" in x for x in lines)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    _one_mode(tmp_path)


def test_resume_under_another_torch_thread_count_is_stated(tmp_path, caplog):
    import torch

    train(HRM, CFG, RUN, "torch", 1, tmp_path, show_progress=False)
    state = checkpoint.load(checkpoint.latest(tmp_path))
    n = torch.get_num_threads()
    assert state["runtime"]["threads"] == n and state["runtime"]["device"] == "cpu"
    torch.set_num_threads(n + 1)
    try:
        train(HRM, CFG, RUN, "torch", 1, resume=tmp_path, show_progress=False)
    finally:
        torch.set_num_threads(n)
    assert any(f"threads {n} -> {n + 1}" in r.getMessage() and "ulp level" in r.getMessage()
               for r in caplog.records)


def test_output_dir_with_a_later_run_is_refused(tmp_path):
    train(HRM, CFG, RUN, "torch", 2, tmp_path, every=1, show_progress=False)
    with pytest.raises(CheckpointError, match=r"newest checkpoint-2\) than this run's start "
                                              r"\(step 0\): pass --resume"):
        train(HRM, CFG, RUN, "torch", 1, tmp_path, show_progress=False)
    assert checkpoint.steps(tmp_path) == [1, 2] and _steps(tmp_path) == [1, 2]


@pytest.fixture()
def tmpfs(tmp_path):
    """mount(size) -> a fresh tmpfs directory of that size; remount(ro=True)."""
    mounted = []

    def mount(size: str):
        d = tmp_path / f"fs-{uuid.uuid4().hex[:6]}"
        d.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=755", "tmpfs",
                            str(d)], capture_output=True)
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
        mounted.append(d)
        return d

    yield mount
    for d in mounted:
        subprocess.run(["umount", "-l", str(d)], check=False)


def _cli(capsys, *argv):
    rc = cli.main(["train", "hrm", "--no-progress", *argv])
    return rc, capsys.readouterr().err.strip().splitlines()


# orbax's background writer may leave an "Event loop is closed" behind on a failed write
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_disk_full_is_one_line_and_keeps_the_last_checkpoint(tmpfs, capsys, framework):
    d = tmpfs("2300k") / "run"  # two checkpoints fit, the third does not
    rc, err = _cli(capsys, "--framework", framework, "--steps", "4", "--every", "1", "--out",
                   str(d))
    assert rc == 2
    assert err == [f"twinframe train: error: cannot write {d}/checkpoint-3: no space left on "
                   f"device (ENOSPC); last good checkpoint {checkpoint.latest(d)}"]
    assert checkpoint.steps(d) == [1, 2] and _steps(d) == [1, 2, 3]
    assert sorted(p.name for p in d.iterdir() if p.name.startswith(".")) == []
    _one_mode(d)
    state = checkpoint.load(checkpoint.latest(d))
    assert state["host"]["t"] == 2 and all(np.isfinite(v).all() for v in
                                           checkpoint.load(checkpoint.latest(d))["carry"].values())


def test_read_only_output_is_one_line(tmpfs, capsys):
    fs = tmpfs("20m")
    d = fs / "run"
    train(HRM, CFG, RUN, "torch", 2, d, every=1, show_progress=False)
    subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
    rc, err = _cli(capsys, "--framework", "torch", "--steps", "2", "--out", str(d), "--resume",
                   str(d))
    assert rc == 2
    assert err == [f"twinframe train: error: cannot write {d}/metrics.jsonl: read-only file "
                   f"system (EROFS); last good checkpoint {d}/checkpoint-2.pt"]
    rc, err = _cli(capsys, "--framework", "torch", "--steps", "1", "--out", str(fs / "new"))
    assert rc == 2 and len(err) == 1 and "read-only file system (EROFS)" in err[0], err
