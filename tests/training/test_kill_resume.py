"""Kill `twinframe train` (SIGKILL) at named points of checkpoint writes, resume, and compare with
an uninterrupted run (issue 10 item 8).

A chain per framework: each `twinframe train` subprocess is killed at one point of the write of
one checkpoint (`TWINFRAME_CKPT_FAULT=POINT@STEP`: the hook in `store/checkpoint.py` sends
SIGKILL to its own process there) and the next resumes from the directory; the last resume runs
to the end in the test process. Then the final parameters, optimizer state and carry are
bitwise those of an uninterrupted run, metrics.jsonl holds each step once with the
uninterrupted run's losses, no temp file is left and the rotation kept the newest two.

Default run: four kills (before the train state's temp write with the torch weights file
written, after it, after its rename, during rotation), split over the two frameworks whose
chains run concurrently (most of their time is process start-up). `pytest -m slow`: every
point of `checkpoint.FAULT_POINTS` in both frameworks.
"""

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
# (point, step of the checkpoint being written when the process is killed); --every 1, keep 2
FAST = {"torch": [("weights", 2), ("temp", 3)], "jax": [("renamed", 2), ("rotating", 3)]}
EVERY = [(p, i + 2) for i, p in enumerate(checkpoint.FAULT_POINTS)]
FULL = {"torch": EVERY, "jax": EVERY}


def _cli(framework, out, steps, resume, fault):
    argv = [sys.executable, "-m", "twinframe.cli", "train", "hrm", "--framework", framework,
            "--steps", str(steps), "--every", "1", "--keep", "2", "--out", str(out),
            "--no-progress"]
    if resume:
        argv += ["--resume", str(out)]
    env = {**os.environ, "PYTHONPATH": os.getcwd(), checkpoint.FAULT_ENV: fault}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)


def _chain(framework, chain, out):
    """Run one kill chain into `out`; returns None, or what went wrong."""
    done, last = 0, chain[-1][1] + 1
    for point, step in chain:
        r = _cli(framework, out, last - done, done > 0, f"{point}@{step}")
        if r.returncode != -signal.SIGKILL:
            return f"{point}@{step}: exit {r.returncode}, not SIGKILL\n{r.stderr[-2000:]}"
        done = max(checkpoint.steps(out), default=0)
    return None


def _run_chains(chains, tmp_path_factory):
    outs = {fw: tmp_path_factory.mktemp(f"kill-{fw}") / "run" for fw in chains}
    with ThreadPoolExecutor(len(chains)) as pool:
        errors = list(pool.map(_chain, chains, chains.values(), outs.values()))
    return {fw: (outs[fw], err) for fw, err in zip(chains, errors, strict=True)}


@pytest.fixture(scope="module")
def fast_chains(tmp_path_factory):
    return _run_chains(FAST, tmp_path_factory)


@pytest.fixture(scope="module")
def full_chains(tmp_path_factory):
    return _run_chains(FULL, tmp_path_factory)


def _check(framework, out, error, steps):
    assert error is None, error
    done = checkpoint.steps(out)[-1]
    assert 0 < done < steps
    last, _ = train(SPEC, CFG, RUN, framework, steps - done, out, every=1, keep=2, resume=out,
                    show_progress=False)
    last.close()
    ref, recs = train(SPEC, CFG, RUN, framework, steps, show_progress=False)
    got = checkpoint.load(checkpoint.latest(out))
    want = {**ref.export_state(), "framework": framework}
    assert got["host"]["t"] == steps
    for part in ("model", "opt", "carry"):
        a, b = flatten_tree(got[part]), flatten_tree(want[part])
        assert a.keys() == b.keys(), part
        bad = [k for k in a if not np.array_equal(np.asarray(a[k]), np.asarray(b[k]))]
        assert not bad, (part, bad[:3])
    assert got["host"] == json.loads(json.dumps(ref.host.state_dict()))
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == list(range(1, steps + 1))
    assert [x["loss"] for x in lines] == [r["loss"] for r in recs]
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    assert checkpoint.steps(out) == [steps - 1, steps]
    ref.close()


def test_the_chains_use_declared_points():
    for chains in (FAST, FULL):
        assert {p for c in chains.values() for p, _ in c} <= set(checkpoint.FAULT_POINTS)
    assert {p for c in FULL.values() for p, _ in c} == set(checkpoint.FAULT_POINTS)


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_kill_at_checkpoint_points_and_resume(fast_chains, framework):
    out, error = fast_chains[framework]
    _check(framework, out, error, FAST[framework][-1][1] + 1)


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_kill_at_every_point_and_resume(full_chains, framework):
    out, error = full_chains[framework]
    _check(framework, out, error, FULL[framework][-1][1] + 1)
