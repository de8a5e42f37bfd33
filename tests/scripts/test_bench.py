"""`twinframe bench`'s code path on the micro HRM config, one round of one call: the result's
structure, the table and the JSON file. Nothing here is timed or compared for speed."""

import json
import time

import pytest

from twinframe import cli, registry
from twinframe.bench import BenchOptions, bench, table
from twinframe.bench.timing import TimeLimit, time_limit


def test_bench_result_and_table():
    opts = BenchOptions(config="micro", batch=2, steps=1, rounds=1, warmup=0,
                        torch_compile=False, matmul_n=64, dot_reps=1)
    r = bench(registry.get("hrm"), opts)
    kinds = {(v["framework"], v["kind"]) for v in r["variants"]}
    assert {("torch eager", "step"), ("torch eager", "e2e"), ("jax jit", "step"),
            ("jax jit", "e2e"), ("torch", "matmul"), ("jax", "matmul")} <= kinds
    assert all(len(v["round_s_per_call"]) == 1 for v in r["variants"])
    assert 0.8 < r["flops"]["xla_over_analytic"] < 1.5  # XLA counted the unrolled loops
    assert set(r["host_share"]) == {"torch eager", "jax jit"}
    assert r["notes"]["torch.compile"].startswith("not run")
    assert set(r["dot_ceiling"]) == {"torch", "jax"}  # the step's own dot shapes were timed
    assert 0.9 < r["dot_ceiling"]["jax"]["share_of_step_dot_flops_timed"] <= 1.0
    assert r["environment"]["versions"]["jax"] and r["jax_compile_s"] > 0
    text = table.render(r)
    assert "jax jit step" in text and "FLOPs per step" in text and "host share" in text
    json.dumps(r)


def test_cli_writes_json(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert cli.main(["bench", "hrm", "--config", "micro", "--rounds", "1", "--steps", "1",
                     "--warmup", "0", "--no-compile", "--no-matmul", "--no-dots",
                     "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["model"] == "hrm" and r["batch"] == 2 and "jax jit e2e" in capsys.readouterr().out


def test_time_limit_interrupts():
    with pytest.raises(TimeLimit):
        with time_limit(0.2):
            time.sleep(5)
