"""Bad input at the model boundary (issue 10 item 7): the engines of both frameworks refuse host
arrays with wrong shapes, dtypes, out-of-range tokens or NaN, with the same one-line error,
before either framework sees them (JAX would clamp an out-of-range gather silently)."""

import copy

import numpy as np
import pytest

from twinframe import registry
from twinframe.errors import TwinframeError
from twinframe.models.altlas import UpdateInputs
from twinframe.tasks import sudoku
from twinframe.training import hrm as tr_hrm
from twinframe.training.guard import BadInput
from twinframe.training.runner import make_engine

HRM = registry.get("hrm")
H_CFG, H_RUN = HRM.config("tiny"), HRM.run_config("tiny")
ALT = registry.get("altlas")
A_CFG = ALT.config("tiny").replace(max_gen_len=8)
A_RUN = ALT.run_config("tiny").replace(batch_size=2)
B, S = H_RUN.batch_size, H_CFG.seq_len


def _hrm_cases():
    def token(h, n):
        h.inputs[1, 5] = H_CFG.vocab_size

    def negative(h, n):
        h.targets[0, 2] = -1

    def shape(h, n):
        h.inputs = h.inputs[:, :-1]

    def dtype(h, n):
        h.targets = h.targets.astype(np.float32)

    def nan(h, n):
        n["explore_u"][1] = np.nan

    def segments(h, n):
        h.segments[0] = 99

    return [
        (token, f"inputs: value {H_CFG.vocab_size} at [1, 5] outside [0, {H_CFG.vocab_size})"),
        (negative, f"targets: value -1 at [0, 2] outside [0, {H_CFG.vocab_size})"),
        (shape, f"inputs: shape ({B}, {S - 1}), expected ({B}, {S})"),
        (dtype, "targets: dtype float32, expected an integer type"),
        (nan, "noise explore_u: nan at [1] (inputs must be finite)"),
        (segments, f"segments: value 99 at [0] outside [0, {H_CFG.halt_max_steps + 1})"),
    ]


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_hrm_engines_refuse_bad_host_arrays(framework):
    eng = make_engine(HRM, H_CFG, H_RUN, framework)
    before = eng.params_torch_layout()
    clean = HRM.make_host(H_CFG, H_RUN)
    for corrupt, message in _hrm_cases():
        host = copy.copy(clean)
        for k in ("inputs", "targets", "segments"):
            setattr(host, k, getattr(clean, k).copy())
        noise = sudoku.exploration_noise(H_RUN.seed, 1, B, H_CFG.halt_max_steps)
        corrupt(host, noise)
        with pytest.raises(BadInput) as e:
            eng.step(host, noise)
        assert str(e.value) == message
        assert isinstance(e.value, TwinframeError)
    after = eng.params_torch_layout()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_hrm_evaluation_refuses_out_of_range_puzzles():
    params, consts = tr_hrm.jax_model_from_state(H_CFG, HRM.canonical_init(H_CFG, 0))
    bad = np.zeros((2, S), np.int32)
    bad[1, 80] = 11
    with pytest.raises(BadInput, match=r"^puzzles: value 11 at \[1, 80\] outside \[0, 10\)$"):
        tr_hrm.solve_batch(H_CFG, params, consts, bad)


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_altlas_engines_refuse_bad_host_arrays(framework):
    eng = make_engine(ALT, A_CFG, A_RUN, framework)
    T, V = A_CFG.max_gen_len, A_CFG.vocab_size
    noise = np.zeros((2, T, V), np.float32)
    noise[1, 3, 4] = np.inf
    with pytest.raises(BadInput, match=r"^noise: inf at \[1, 3, 4\] \(inputs must be finite\)$"):
        eng.generate(noise)
    with pytest.raises(BadInput, match=rf"^noise: shape \(2, {T}, {V - 1}\), expected "
                                       rf"\(\*, {T}, {V}\)$"):
        eng.generate(np.zeros((2, T, V - 1), np.float32))
    tokens = np.ones((2, T), np.int32)
    valid = np.ones((2, T), bool)
    upd = UpdateInputs(np.ones(2, np.float32), np.ones(2, np.float32), np.float32(0.01),
                       np.ones(2), None)
    bad = tokens.copy()
    bad[0, 7] = V
    with pytest.raises(BadInput, match=rf"^tokens: value {V} at \[0, 7\] outside \[0, {V}\)$"):
        eng.learn(bad, valid, upd)
    with pytest.raises(BadInput, match=r"^valid: dtype int32, expected bool$"):
        eng.learn(tokens, valid.astype(np.int32), upd)
    nan_adv = UpdateInputs(np.array([0.5, np.nan], np.float32), upd.weights, upd.beta,
                           upd.r_tilde, None)
    with pytest.raises(BadInput, match=r"^advantages: nan at \[1\] \(inputs must be finite\)$"):
        eng.learn(tokens, valid, nan_adv)
