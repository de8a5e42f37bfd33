"""AltLAS training: host reward path, log records, bit-identical resume, torch -> JAX switch
through checkpoint files, and the L5 lockstep curve."""

import json

import numpy as np
import pytest

from twinframe import registry
from twinframe.models.altlas import EOS_ID, PAD_ID
from twinframe.store import checkpoint
from twinframe.training.altlas import AltLASHost, solution_tokens
from twinframe.training.loop import train

SPEC = registry.get("altlas")
CFG = SPEC.config("tiny").replace(max_gen_len=8)  # E = 16, H = 32
RUN = SPEC.run_config("tiny").replace(batch_size=2)
DEFAULT_TASK = RUN.task
N = 3
RECORD_FIELDS = (
    "step", "attempts", "loss", "policy_term", "entropy_term", "grad_norm", "baseline", "beta",
    "mean_reward", "max_reward", "success_rate", "successes", "cumulative_successes",
    "distinct_successes", "mean_length", "frac_max_len", "distinct_programs", "unsafe",
    "duplicates", "generate_s", "execute_s", "learn_s", "step_time_s", "episodes_per_s", "stop",
)


def _scripted(host: AltLASHost, rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    T = host.cfg.max_gen_len
    tokens = np.full((len(rows), T), PAD_ID, np.int32)
    valid = np.zeros((len(rows), T), bool)
    for b, r in enumerate(rows):
        tokens[b, :len(r)] = r
        valid[b, :len(r)] = True
    return tokens, valid


@pytest.mark.parametrize("scorer", ["exact", "shaped"])
def test_host_reward_path_scripted(scorer):
    """decode -> safety -> duplicates -> sandbox -> scorer on scripted token arrays."""
    host = AltLASHost(CFG, RUN.replace(scorer=scorer, duplicate_policy="skip"), workers=2)
    try:
        enc = host.tokenizer.encode
        sol = list(solution_tokens(DEFAULT_TASK))
        assert host.tokenizer.decode(sol) == "print ( 8 )"
        junk = enc('"a" 7 else')[1:]
        wrong = enc("print(8,8)")[1:]
        tokens, valid = _scripted(host, [sol, junk, wrong, sol])
        batch = host.assess(tokens)
        assert batch.scores[0] == 1.0
        assert batch.scores[1] < 1.0 and batch.scores[2] < 1.0
        if scorer == "exact":
            assert batch.scores[1] == pytest.approx(0.1) and batch.scores[2] == pytest.approx(0.5)
        assert batch.duplicate.tolist() == [False, False, False, True]  # 2nd copy is skipped
        assert np.isnan(batch.scores[3]) and batch.statuses[3] is None
        upd = host.prepare(batch, tokens, valid)
        assert upd.weights.tolist() == [1.0, 1.0, 1.0, 0.0]
        assert host.finish(batch, upd) == 1
        assert host.learner.successes == 1 and len(host.success_fps) == 1 and host.stop_reached
        # host state is JSON and restores the fingerprints
        s = json.loads(json.dumps(host.state_dict()))
        other = AltLASHost(host.cfg, host.run, workers=1)
        other.load_state_dict(s)
        assert other.state_dict() == host.state_dict()
        assert other.assess(tokens[:1]).duplicate.tolist() == [True]
        other.close()
    finally:
        host.close()
    assert sol[-1] == EOS_ID


def test_train_records_have_the_runner_fields():
    _, recs = train(SPEC, CFG, RUN, "torch", 2, show_progress=False)
    for i, r in enumerate(recs, 1):
        assert set(RECORD_FIELDS) <= set(r)
        assert r["step"] == i and r["attempts"] == i * RUN.batch_size
        assert 0.0 <= r["success_rate"] <= 1.0 and r["episodes_per_s"] > 0
        json.dumps(r, allow_nan=False)


def test_lockstep_curve_passes():
    # first JAX user in this file: run_curve switches JAX to "highest" matmul precision for the
    # process, so running it first saves a recompilation in the tests below
    from twinframe.parity import checks

    res = checks.run_curve(SPEC, CFG, RUN, 5)
    assert all(r.passed for r in res.records), [r.name for r in res.records if not r.passed]
    loss = next(r for r in res.records if r.name.startswith("curve.loss"))
    assert loss.max_abs < 1e-5
    mism = next(r for r in res.records if r.name.endswith("token_mismatch_episodes"))
    assert mism.max_abs == 0


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_resume_is_bit_identical(tmp_path, framework, resume_bit_identical):
    resume_bit_identical(SPEC, CFG, RUN, framework, N, tmp_path)


def test_torch_checkpoint_continues_in_jax(tmp_path):
    """torch N steps -> checkpoint -> JAX N steps vs torch continuing N steps."""
    train(SPEC, CFG, RUN, "torch", N, tmp_path / "t", every=N, show_progress=False)
    s = checkpoint.load(checkpoint.latest(tmp_path / "t"))
    assert s["opt"]["step"] == N and set(s["opt"]["exp_avg"]) == set(s["model"])
    ref, recs_ref = train(SPEC, CFG, RUN, "torch", N, resume=tmp_path / "t", show_progress=False)
    sw, recs_sw = train(SPEC, CFG, RUN, "jax", N, tmp_path / "j", resume=tmp_path / "t",
                        show_progress=False)
    np.testing.assert_allclose([r["loss"] for r in recs_sw], [r["loss"] for r in recs_ref],
                               rtol=1e-4)
    assert sw.host.state_dict() == ref.host.state_dict()
    pr, ps = ref.params_torch_layout(), sw.params_torch_layout()
    for k in pr:
        np.testing.assert_allclose(ps[k], pr[k], rtol=0, atol=1e-5)
    back, _ = train(SPEC, CFG, RUN, "torch", 1, resume=tmp_path / "j", show_progress=False)
    assert back.t == 2 * N + 1
