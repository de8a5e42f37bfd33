"""Kill `twinframe train` (SIGKILL) at named points of checkpoint writes, resume, and compare with
an uninterrupted run (issue 10 item 8).

One chain per framework: each `twinframe train` subprocess is killed at one point of the write
of one checkpoint (`TWINFRAME_CKPT_FAULT=POINT@STEP`: the hook in `store/checkpoint.py` sends
SIGKILL to its own process there), the next resumes from the directory, and the last runs to
the end. Both frameworks together cover every point of `checkpoint.FAULT_POINTS`. After the
chain: the final parameters, optimizer state and carry are bitwise those of an uninterrupted
run, metrics.jsonl holds each step once with the uninterrupted run's losses, and no temp file
is left."""

import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from twinframe import registry
from twinframe.models.layout import flatten_tree
from twinframe.store import checkpoint
from twinframe.training.loop import train

SPEC = registry.get("hrm")
CFG, RUN = SPEC.config("tiny"), SPEC.run_config("tiny")
STEPS = 6
# (point, step of the checkpoint being written when the process is killed); --every 1, keep 2
CHAINS = {
    "torch": [("weights", 2), ("temp", 3), ("rotating", 4), ("done", 5)],
    "jax": [("start", 2), ("temp", 3), ("renamed", 4), ("rotating", 5)],
}


def _cli(framework, out, steps, resume, fault, env):
    argv = [sys.executable, "-m", "twinframe.cli", "train", "hrm", "--framework", framework,
            "--steps", str(steps),
            "--every", "1", "--keep", "2", "--out", str(out), "--no-progress"]
    if resume:
        argv += ["--resume", str(out)]
    return subprocess.run(argv, env={**env, checkpoint.FAULT_ENV: fault or ""},
                          capture_output=True, text=True, timeout=300)


def _chain(framework, out):
    """Run the kill chain of `framework` into `out`; returns None, or what went wrong."""
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    done = 0
    for point, step in CHAINS[framework]:
        r = _cli(framework, out, STEPS - done, done > 0, f"{point}@{step}", env)
        if r.returncode != -signal.SIGKILL:
            return f"{point}@{step}: exit {r.returncode}, not SIGKILL\n{r.stderr[-2000:]}"
        done = max(checkpoint.steps(out), default=0)
    r = _cli(framework, out, STEPS - done, done > 0, None, env)
    return None if r.returncode == 0 else f"final resume: exit {r.returncode}\n{r.stderr[-2000:]}"


@pytest.fixture(scope="module")
def chains(tmp_path_factory):
    """Both frameworks' chains, run concurrently (most of their time is process start-up)."""
    outs = {fw: tmp_path_factory.mktemp(f"kill-{fw}") / "run" for fw in CHAINS}
    with ThreadPoolExecutor(len(CHAINS)) as pool:
        errors = dict(zip(outs, pool.map(_chain, outs, outs.values()), strict=True))
    return outs, errors


def test_every_point_is_declared():
    assert {p for chain in CHAINS.values() for p, _ in chain} == set(checkpoint.FAULT_POINTS)


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_kill_at_checkpoint_points_and_resume(chains, framework):
    outs, errors = chains
    out = outs[framework]
    assert errors[framework] is None, errors[framework]
    ref, recs = train(SPEC, CFG, RUN, framework, STEPS, show_progress=False)
    got = checkpoint.load(checkpoint.latest(out))
    want = {**ref.export_state(), "framework": framework}
    assert got["host"]["t"] == STEPS
    for part in ("model", "opt", "carry"):
        a, b = flatten_tree(got[part]), flatten_tree(want[part])
        assert a.keys() == b.keys(), part
        bad = [k for k in a if not np.array_equal(np.asarray(a[k]), np.asarray(b[k]))]
        assert not bad, (part, bad[:3])
    assert got["host"] == json.loads(json.dumps(ref.host.state_dict()))
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == list(range(1, STEPS + 1))
    assert [x["loss"] for x in lines] == [r["loss"] for r in recs]
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    assert checkpoint.steps(out) == [STEPS - 1, STEPS]
    ref.close()
