"""AltLAS parity (altlas.md §8): every level passes at `tiny` (LSTM and GRU), golden numbers,
conversion round trips, reference checkpoint files and their error messages."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from twinframe.errors import CheckpointError
from twinframe.functional import altlas as f_alt
from twinframe.models import altlas as m_alt
from twinframe.models.altlas import PRESETS
from twinframe.models.layout import convert_train_state
from twinframe.parity import altlas as pa
from twinframe.parity import altlas_io
from twinframe.parity.compare import Record, score
from twinframe.torch_ref import altlas as t_alt

TINY, RUN = PRESETS["tiny"]
TINY_GRU = PRESETS["tiny_gru"][0]


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Tiny models: one intra-op thread is faster and keeps timings stable on 2 cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _scored(comps) -> list[Record]:
    return [score("altlas", c) for c in comps]


def _assert_pass(records: list[Record]) -> None:
    assert records, "no comparisons"
    bad = [r for r in records if not r.passed]
    assert not bad, "\n".join(f"{r.level} {r.name}: max_abs {r.max_abs:.3g} vs {r.tolerance} "
                              f"{r.note}" for r in bad[:10])


@pytest.fixture(scope="module")
def tiny_levels() -> dict:
    return pa.levels(TINY, RUN)


@pytest.mark.parametrize("level", ["P0", "P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "P9"])
def test_levels_tiny_lstm(tiny_levels, level):
    records = _scored(tiny_levels[level]())
    _assert_pass(records)
    logging.getLogger(__name__).info("%s worst %.3g", level, max(r.max_abs for r in records))


GRU_LEVELS = {  # batch sizes shared between levels so each JAX function compiles once
    "P2": lambda: pa.level_p2(TINY_GRU, RUN),
    "P3": lambda: pa.level_p3(TINY_GRU, RUN, batch=RUN.batch_size),
    "P4": lambda: pa.level_p4(TINY_GRU, RUN),
    "P5": lambda: pa.level_p5(TINY_GRU, RUN),
    "P6": lambda: pa.level_p6(TINY_GRU, RUN),
    "P9": lambda: pa.level_p9(TINY_GRU, RUN),
}


@pytest.mark.parametrize("level", list(GRU_LEVELS))
def test_levels_tiny_gru(level):
    _assert_pass(_scored(GRU_LEVELS[level]()))


def test_two_layers_forward_and_grads():
    cfg = TINY.replace(num_layers=2)
    _assert_pass(_scored(pa.level_p2(cfg, RUN) + pa.level_p4(cfg, RUN)))


def test_sampling_modifiers_match():
    """Temperature, grammar boost, repetition penalty, special mask and top-k (altlas.md §3.4)."""
    cfg = TINY.replace(temperature=0.7, top_k=10, mask_special_tokens=True,
                       repetition_penalty=0.85, initial_grammar_boost=2.2,
                       grammar_boost_decay=0.985)
    G = (np.random.default_rng(7).random((63, 63)) < 0.2).astype(np.float32)
    records = _scored(pa.level_p3(cfg, RUN, batch=64, grammar=G))
    _assert_pass(records)
    tw = pa._twins(cfg)
    r = t_alt.generate(tw.torch_model, torch.from_numpy(m_alt.gumbel_noise(0, 0, 64, 16, 63)), G)
    sampled = r.tokens.numpy()[r.valid.numpy()]
    assert not np.isin(sampled, m_alt.SPECIAL_IDS).any()


def test_golden_numbers_printed():
    """Appendix A, both frameworks and cells (also part of P8)."""
    for cell, want in pa.GOLDEN.items():
        vals = pa.golden_values(cell)
        for fw in ("torch", "jax"):
            got = vals[fw]
            np.testing.assert_allclose(got["loss"], want["loss"], atol=1e-5)
            np.testing.assert_allclose(got["grad_norm"], want["grad_norm"], rtol=1e-5)
            np.testing.assert_allclose(got["tensor_grad_norms"], want["tensor_grad_norms"],
                                       rtol=1e-5)
            np.testing.assert_allclose(got["logp"], want["logp"], atol=1e-5)
            np.testing.assert_allclose(got["fc.bias_after[0:4]"], want["fc.bias_after[0:4]"],
                                       atol=1e-7)
            assert not np.any(got["grad_embedding_row0"])


# ---------------------------------------------------------------------------------------------
# Conversion


def test_table_rows_exact():
    tab = m_alt.layout(PRESETS["rh"][0]).table
    assert [(r.torch_key, r.path, r.rule.value, r.shape) for r in tab.rows] == [
        ("embedding.weight", ("params", "embedding", "embedding"), "identity", (53, 96)),
        ("lstm.weight_ih_l0", ("params", "rnn", "layer_0", "w_ih"), "transpose", (768, 96)),
        ("lstm.weight_hh_l0", ("params", "rnn", "layer_0", "w_hh"), "transpose", (768, 192)),
        ("lstm.bias_ih_l0", ("params", "rnn", "layer_0", "b_ih"), "identity", (768,)),
        ("lstm.bias_hh_l0", ("params", "rnn", "layer_0", "b_hh"), "identity", (768,)),
        ("lstm.weight_ih_l1", ("params", "rnn", "layer_1", "w_ih"), "transpose", (768, 192)),
        ("lstm.weight_hh_l1", ("params", "rnn", "layer_1", "w_hh"), "transpose", (768, 192)),
        ("lstm.bias_ih_l1", ("params", "rnn", "layer_1", "b_ih"), "identity", (768,)),
        ("lstm.bias_hh_l1", ("params", "rnn", "layer_1", "b_hh"), "identity", (768,)),
        ("fc.weight", ("params", "fc", "kernel"), "transpose", (53, 192)),
        ("fc.bias", ("params", "fc", "bias"), "identity", (53,)),
    ]
    gru = m_alt.layout(TINY_GRU).table
    assert gru.rows[1].torch_key == "gru.weight_ih_l0" and gru.rows[1].shape == (96, 16)


def _trained(cfg, steps: int = 3):
    model = t_alt.AltLAS_RNN(cfg)
    opt = t_alt.make_optimizer(model, RUN)
    b = pa.random_batch(cfg, 0, 4, cfg.max_gen_len, 9)
    for _ in range(steps):
        t_alt.learn_step(model, opt, torch.from_numpy(b["tokens"]), torch.from_numpy(b["valid"]),
                         torch.from_numpy(b["adv"]), torch.from_numpy(b["w"]), 0.01,
                         grad_clip_norm=RUN.grad_clip_norm)
    return model, opt, b


def test_roundtrip_bit_exact_with_adam_state():
    """torch Adam file -> generic train state -> JAX -> torch Adam file: bit-exact, and torch
    continues exactly like the original optimizer."""
    cfg = TINY
    lay = m_alt.layout(cfg)
    model, opt, b = _trained(cfg)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    ropt = altlas_io.optimizer_from_torch(opt.state_dict(), cfg, RUN)
    assert ropt.step == 3
    jax_state = convert_train_state({"framework": "torch", "model": state, "opt": ropt.opt},
                                    lay, "jax")
    assert jax_state["model"]["params"]["rnn"]["layer_0"]["w_ih"].shape == (16, 128)
    assert int(jax_state["opt"]["count"]) == 3 and jax_state["opt"]["count"].dtype == np.int32
    back_state = convert_train_state(jax_state, lay, "torch")
    back = back_state["model"]
    for k in state:
        assert np.array_equal(state[k].view(np.uint32), back[k].view(np.uint32)), k
    sd = altlas_io.optimizer_to_torch(back_state["opt"], cfg, RUN)
    for i, entry in opt.state_dict()["state"].items():
        for slot in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(entry[slot], sd["state"][i][slot]), (i, slot)
    model2 = t_alt.AltLAS_RNN(cfg, back)
    opt2 = t_alt.make_optimizer(model2, RUN)
    opt2.load_state_dict(sd)
    args = [torch.from_numpy(b[k]) for k in ("tokens", "valid", "adv", "w")]
    t_alt.learn_step(model, opt, *args, 0.01, grad_clip_norm=RUN.grad_clip_norm)
    t_alt.learn_step(model2, opt2, *args, 0.01, grad_clip_norm=RUN.grad_clip_norm)
    for (k, p), p2 in zip(model.state_dict().items(), model2.state_dict().values(), strict=True):
        assert torch.equal(p, p2), k


def test_fresh_optimizer_exports_empty_state():
    from twinframe import registry
    from twinframe.training.runner import make_engine

    lay = m_alt.layout(TINY)
    fresh = make_engine(registry.get("altlas"), TINY, RUN, "jax").export_state()
    t_opt = convert_train_state({**fresh, "framework": "jax"}, lay, "torch")["opt"]
    sd = altlas_io.optimizer_to_torch(t_opt, TINY, RUN)
    assert sd["state"] == {} and sd["param_groups"][0]["params"] == list(range(7))
    back = altlas_io.optimizer_from_torch(sd, TINY, RUN)
    assert back.step == 0 and all(not v.any() for v in back.opt["exp_avg"].values())


def test_vocab_sizes_match_bundle():
    vocab = pytest.importorskip("twinframe.tasks.altlas.vocab")
    for name, size in m_alt.VOCAB_SIZES.items():
        assert vocab.load_vocab(name).size == size


# ---------------------------------------------------------------------------------------------
# Reference checkpoint files (altlas.md §7)

SMALL_R1 = PRESETS["r1"][0].replace(embed_dim=8, hidden_dim=16)
SMALL_R0 = PRESETS["r0"][0].replace(embed_dim=8, hidden_dim=16)


def _write_pair(d: Path, cfg, steps: int = 2) -> tuple[Path, Path, t_alt.AltLAS_RNN]:
    model = t_alt.AltLAS_RNN(cfg)
    opt = t_alt.make_optimizer(model, RUN)
    b = pa.random_batch(cfg, 0, 2, 6, 3)
    for _ in range(steps):
        t_alt.learn_step(model, opt, *(torch.from_numpy(b[k]) for k in ("tokens", "valid", "adv")),
                         torch.ones(2), 0.01, grad_clip_norm=RUN.grad_clip_norm)
    mp, op = d / "model_state.pth", d / "optimizer_state.pth"
    torch.save(model.state_dict(), mp)
    torch.save(opt.state_dict(), op)
    return mp, op, model


def test_read_r1_pair(tmp_path):
    mp, op, model = _write_pair(tmp_path, SMALL_R1)
    ref, snap = altlas_io.read_reference_pair(mp, op)
    assert (ref.release, ref.vocab, ref.init_hint) == ("R1", "v1_63", "altlas")
    assert ref.cfg == SMALL_R1
    assert snap is not None and snap.step == 2
    for k, v in model.state_dict().items():
        assert np.array_equal(ref.state[k], v.numpy())
    assert np.array_equal(ref.state["lstm.bias_ih_l0"], ref.state["lstm.bias_hh_l0"])


def test_read_r0_checkpoint_by_vocab_size(tmp_path):
    model = t_alt.AltLAS_RNN(SMALL_R0)
    torch.save(model.state_dict(), tmp_path / "m.pth")
    ref = altlas_io.read_reference_model(tmp_path / "m.pth")
    assert (ref.release, ref.vocab, ref.cfg.vocab_size) == ("R0", "v0_46", 46)
    assert ref.init_hint == "torch_default"
    assert not np.any(ref.state["embedding.weight"][0])
    # an optimizer file that never stepped (ef8b100): fresh state
    opt = t_alt.make_optimizer(model, PRESETS["r0"][1])
    torch.save(opt.state_dict(), tmp_path / "o.pth")
    snap = altlas_io.read_reference_optimizer(tmp_path / "o.pth", ref.cfg)
    assert snap.step == 0


def test_write_reference_files_roundtrip(tmp_path):
    mp, op, _ = _write_pair(tmp_path, SMALL_R1)
    ref, snap = altlas_io.read_reference_pair(mp, op)
    altlas_io.write_reference_model(tmp_path / "w.pth", ref.state, ref.cfg)
    altlas_io.write_reference_optimizer(tmp_path / "wo.pth", snap.opt, ref.cfg, RUN)
    ref2, snap2 = altlas_io.read_reference_pair(tmp_path / "w.pth", tmp_path / "wo.pth")
    assert all(np.array_equal(ref.state[k], ref2.state[k]) for k in ref.state)
    assert snap2.step == snap.step
    assert all(np.array_equal(snap.opt["exp_avg"][k], snap2.opt["exp_avg"][k])
               for k in snap.opt["exp_avg"])


def _model_error(tmp_path: Path, state: dict, cfg=None) -> str:
    p = tmp_path / "bad.pth"
    torch.save(state, p)
    with pytest.raises(CheckpointError) as e:
        altlas_io.read_reference_model(p, cfg)
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg
    return msg


def test_model_file_errors(tmp_path):
    good = t_alt.AltLAS_RNN(SMALL_R1).state_dict()
    missing = {k: v for k, v in good.items() if k != "fc.bias"}
    assert "missing key 'fc.bias'" in _model_error(tmp_path, missing)
    assert "unexpected key 'extra'" in _model_error(tmp_path, {**good, "extra": torch.zeros(1)})
    wrong = {**good, "lstm.weight_hh_l0": torch.zeros(64, 15)}
    msg = _model_error(tmp_path, wrong)
    assert "lstm.weight_hh_l0" in msg and "(64, 15)" in msg and "(64, 16)" in msg
    r0 = t_alt.AltLAS_RNN(SMALL_R0).state_dict()
    msg = _model_error(tmp_path, r0, SMALL_R1)
    assert "V=46" in msg and "v0_46" in msg
    assert "V=50" in _model_error(tmp_path, {**good, "embedding.weight": torch.zeros(50, 8),
                                             "fc.weight": torch.zeros(50, 16),
                                             "fc.bias": torch.zeros(50)})
    assert "float64" in _model_error(tmp_path, {**good, "fc.bias": torch.zeros(63).double()})
    nan = good["fc.weight"].clone()
    nan[0, 0] = float("nan")
    assert "NaN" in _model_error(tmp_path, {**good, "fc.weight": nan})
    assert "Variant B" in _model_error(tmp_path, {"positional_encoding": torch.zeros(1, 512, 8),
                                                  **good})
    p = tmp_path / "garbage.pth"
    p.write_bytes(b"\x00not a torch file" * 10)
    with pytest.raises(CheckpointError, match="not a loadable torch file"):
        altlas_io.read_reference_model(p)
    with pytest.raises(CheckpointError, match="no such file"):
        altlas_io.read_reference_model(tmp_path / "absent.pth")


def _opt_error(tmp_path: Path, sd) -> str:
    p = tmp_path / "bad_opt.pth"
    torch.save(sd, p)
    with pytest.raises(CheckpointError) as e:
        altlas_io.read_reference_optimizer(p, SMALL_R1)
    assert str(p) in str(e.value) and "\n" not in str(e.value)
    return str(e.value)


def test_optimizer_file_errors(tmp_path, caplog):
    _, op, _ = _write_pair(tmp_path, SMALL_R1)
    sd = torch.load(op, weights_only=True)
    short = {"state": {i: sd["state"][i] for i in range(6)}, "param_groups": sd["param_groups"]}
    assert "6 entries" in _opt_error(tmp_path, short)
    groups = [{**sd["param_groups"][0], "params": list(range(5))}]
    assert "params has 5 entries" in _opt_error(tmp_path, {**sd, "param_groups": groups})
    st = {i: dict(e) for i, e in sd["state"].items()}
    st[3]["step"] = torch.tensor(7.0)
    assert "step counts differ" in _opt_error(tmp_path, {**sd, "state": st})
    st = {i: dict(e) for i, e in sd["state"].items()}
    st[0]["exp_avg"] = torch.zeros(3, 3)
    msg = _opt_error(tmp_path, {**sd, "state": st})
    assert "embedding.weight" in msg and "(3, 3)" in msg
    assert "not a torch optimizer" in _opt_error(tmp_path, {"foo": torch.zeros(1)})
    p = tmp_path / "garbage_opt.pth"
    p.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(CheckpointError, match="not a loadable torch file"):
        altlas_io.read_reference_optimizer(p, SMALL_R1)
    # differing hyper-parameters only warn
    groups = [{**sd["param_groups"][0], "lr": 0.5}]
    torch.save({**sd, "param_groups": groups}, tmp_path / "lr.pth")
    with caplog.at_level(logging.WARNING):
        assert altlas_io.read_reference_optimizer(tmp_path / "lr.pth", SMALL_R1).lr == 0.5
    assert "differ from the config" in caplog.text


def test_injected_dropout_masks_match():
    """p > 0: the same keep-mask [B, T, H] (0 or 1/(1-p)) in both frameworks (altlas.md §3.3)."""
    cfg = PRESETS["golden"][0].replace(dropout=0.25)
    state = m_alt.golden_state(cfg)
    tok = np.array([[4, 46, 33, 13, 31, 47, 2]], np.int32)
    valid, adv, w = np.ones((1, 7), bool), np.float32([0.9]), np.float32([1.0])
    rng = np.random.default_rng(0)
    mask = ((rng.random((1, 7, cfg.hidden_dim)) > 0.25) / 0.75).astype(np.float32)
    model = t_alt.AltLAS_RNN(cfg, state)
    out = t_alt.reinforce_loss(model, torch.from_numpy(tok), torch.from_numpy(valid),
                               torch.from_numpy(adv), torch.from_numpy(w), 0.01,
                               torch.from_numpy(mask))
    out.loss.backward()
    lay = m_alt.layout(cfg)
    loss_j, _, grads_j = f_alt.jitted(cfg).loss_and_grads(
        f_alt.to_jax(lay.params.torch_to_tree(state)), tok, valid, adv, w, np.float32(0.01),
        mask)
    assert abs(out.loss.item() - float(loss_j)) < 1e-5
    assert abs(out.loss.item() - 27.639887) > 1e-3  # the mask changed the loss
    gj = lay.params.tree_to_torch({k: np.asarray(v) if not isinstance(v, dict) else v
                                   for k, v in grads_j.items()})
    for k, p in model.named_parameters():
        np.testing.assert_allclose(gj[k], p.grad.numpy(), atol=1e-5, err_msg=k)


# ---------------------------------------------------------------------------------------------
# Published reference checkpoints (altlas.md §9 item 3, Appendix B): optional, needs
# ALTLAS_REF_CKPT =
# a directory holding <commit>/model_state.pth and <commit>/optimizer_state.pth.

REF_FILES = {  # commit: (V, model sha256, optimizer sha256, Adam step or 0 for an empty state)
    "ef8b100": (46, "090f0f865d422a9bcaf58c7f7a8ab8d8bf285a36672f63633ac8317864aa991e",
                "2462e39935b62f79df4341929598eca64fc91cc04f075f35b538d260f836a488", 0),
    "ac2951c": (46, "57891ab2fa03e40f830920a0708352a1416ecd205a9498fc248cfa2bd65f0112",
                "f03063770f91440a9516bf3f0139f8ecc5ae5393509e643360f487c4ad3c3f76", 1911),
    "2a60755": (46, "830a455f5f28228deb18565dc25a8174e693998b82b276dc4803a99c5a4acee6",
                "7d19c2edab7acb380ef90fc9f2db69af629019515e2f9dd89ab7bc33fdf98b49", 2692),
    "2654721": (46, "d32f4405783e84a1691d00618383b6d1cf19f08e4c6f2c4428ce01e25f7ecbdb",
                "36dad3c57771950f8c74c0bbb3176202b2f5e66886ea8f4926fa530ef778f351", 2858),
    "9626666": (63, "0feb6aca4d9fb7e390ce37154d83a246436d33ec424545ddc8ab62bfe56f3833",
                "da4119ec8cff2751950e2d4f64b2a680b4972ae28d3e1b00f75b0cb43ad9bb6a", 1740),
}


@pytest.mark.parametrize("commit", list(REF_FILES))
def test_published_reference_checkpoints(commit):
    import hashlib
    import os

    root = os.environ.get("ALTLAS_REF_CKPT")
    if not root:
        pytest.skip("ALTLAS_REF_CKPT not set (published reference checkpoints absent)")
    d = Path(root) / commit
    mp, op = d / "model_state.pth", d / "optimizer_state.pth"
    if not (mp.is_file() and op.is_file()):
        pytest.skip(f"{d}: model_state.pth / optimizer_state.pth absent")
    V, sha_m, sha_o, step = REF_FILES[commit]
    assert hashlib.sha256(mp.read_bytes()).hexdigest() == sha_m
    assert hashlib.sha256(op.read_bytes()).hexdigest() == sha_o
    ref, snap = altlas_io.read_reference_pair(mp, op)
    assert ref.cfg.vocab_size == V and ref.release == ("R1" if V == 63 else "R0")
    assert snap is not None and snap.step == step
    row0 = ref.state["embedding.weight"][0]
    same_bias = np.array_equal(ref.state["lstm.bias_ih_l0"], ref.state["lstm.bias_hh_l0"])
    if V == 63:
        assert same_bias and 0 < np.abs(row0).max() <= 0.2174
    else:
        assert not same_bias and not row0.any()
    # importable and convertible: torch Adam accepts the state, JAX gets the same numbers
    model = t_alt.AltLAS_RNN(ref.cfg, ref.state)
    run = PRESETS["r1" if V == 63 else "r0"][1]
    t_alt.make_optimizer(model, run).load_state_dict(
        altlas_io.optimizer_to_torch(snap.opt, ref.cfg, run))
    lay = m_alt.layout(ref.cfg)
    back = lay.table.tree_to_torch(lay.table.torch_to_tree(ref.state))
    assert all(np.array_equal(back[k], ref.state[k]) for k in back)
