"""AltLAS torch_ref (altlas.md §2-§4): reference state_dict layout, canonical init, golden
numbers, generation semantics, REINFORCE update."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from twinframe.models import altlas as m_alt
from twinframe.models.altlas import EOS_ID, PAD_ID, PRESETS
from twinframe.torch_ref import altlas as t_alt

CFG = {name: model for name, (model, _) in PRESETS.items()}  # model configs of the presets

TINY, TINY_RUN = PRESETS["tiny"]
GOLDEN_TOKENS = [4, 46, 33, 13, 31, 47, 2]


class ReferenceRNN(nn.Module):
    """The reference module layout (AltLAS_RNN at R1): embedding, lstm, fc."""

    def __init__(self, V: int, E: int, H: int, L: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(V, E, padding_idx=0)
        self.lstm = nn.LSTM(E, H, L, batch_first=True)
        self.fc = nn.Linear(H, V)


def test_state_dict_keys_and_shapes_r1():
    model = t_alt.AltLAS_RNN(CFG["r1"])
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == [
        ("embedding.weight", (63, 64)),
        ("lstm.weight_ih_l0", (512, 64)),
        ("lstm.weight_hh_l0", (512, 128)),
        ("lstm.bias_ih_l0", (512,)),
        ("lstm.bias_hh_l0", (512,)),
        ("fc.weight", (63, 128)),
        ("fc.bias", (63,)),
    ]
    assert [k for k, _ in model.named_parameters()] == list(model.state_dict())
    assert all(v.dtype == torch.float32 for v in model.state_dict().values())


@pytest.mark.parametrize("L", [1, 2])
def test_strict_load_reference_layout(L):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        ref = ReferenceRNN(63, 16, 32, L)
    model = t_alt.AltLAS_RNN(TINY.replace(num_layers=L))
    model.load_state_dict(ref.state_dict(), strict=True)
    ref.load_state_dict(model.state_dict(), strict=True)
    assert list(ref.state_dict()) == list(model.state_dict())
    x = torch.randint(0, 63, (2, 5))
    with torch.no_grad():
        y_ref = ref.fc(ref.lstm(ref.embedding(x))[0])
        assert torch.equal(model(x)[0], y_ref)


def test_gru_keys():
    model = t_alt.AltLAS_RNN(CFG["tiny_gru"].replace(num_layers=2))
    assert list(model.state_dict())[1:9] == [
        f"gru.{n}_l{k}" for k in (0, 1)
        for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    assert model.state_dict()["gru.weight_ih_l0"].shape == (96, 16)


@pytest.mark.parametrize(("preset", "lstm", "gru"), [
    ("tiny", 9487, 7887), ("small", 31199, 24927), ("r1", 111487, 86655),
    ("bench", 13728575, 10316607)])
def test_param_counts(preset, lstm, gru):
    cfg = CFG[preset]
    assert m_alt.param_count(cfg) == lstm
    assert m_alt.param_count(cfg.replace(cell="gru")) == gru
    if preset in ("tiny", "small"):
        assert sum(p.numel() for p in t_alt.AltLAS_RNN(cfg).parameters()) == lstm


def test_param_counts_rh_and_xl():
    assert m_alt.param_count(CFG["rh"]) == 534485
    assert m_alt.param_count(CFG["bench-xl"]) == 54720063


def test_construction_uses_no_global_rng():
    before = torch.get_rng_state()
    t_alt.AltLAS_RNN(TINY)
    assert torch.equal(before, torch.get_rng_state())


def test_xavier_bounds_r1():
    shapes = m_alt.torch_shapes(CFG["r1"].replace(num_layers=2))
    for key, bound in (("embedding.weight", 0.2174), ("lstm.weight_ih_l0", 0.1021),
                       ("lstm.weight_ih_l1", 0.0968), ("fc.weight", 0.1772)):
        assert abs(m_alt.xavier_bound(shapes[key]) - bound) < 5e-5


def test_canonical_init_altlas():
    cfg = TINY
    s = m_alt.canonical_init(cfg)
    H = cfg.hidden_dim
    shapes = m_alt.torch_shapes(cfg)
    for key in ("embedding.weight", "lstm.weight_ih_l0", "fc.weight"):
        bound = m_alt.xavier_bound(shapes[key])
        assert bound * 0.9 < np.abs(s[key]).max() <= bound
    w = s["lstm.weight_hh_l0"].astype(np.float64)
    np.testing.assert_allclose(w.T @ w, np.eye(H), atol=1e-5)
    for b in ("lstm.bias_ih_l0", "lstm.bias_hh_l0"):
        assert np.all(s[b][H:2 * H] == 1) and not np.any(s[b][:H]) and not np.any(s[b][2 * H:])
    assert not np.any(s["fc.bias"])
    assert np.any(s["embedding.weight"][PAD_ID])  # row 0 not zeroed (altlas.md §2.2)
    again = m_alt.canonical_init(cfg)
    assert all(np.array_equal(s[k], again[k]) for k in s)
    other = m_alt.canonical_init(cfg, seed=1)
    assert not np.array_equal(s["fc.weight"], other["fc.weight"])
    u = m_alt.canonical_init(cfg.replace(fc_bias_init="uniform"))
    assert 0 < np.abs(u["fc.bias"]).max() <= 0.1 and np.array_equal(u["fc.weight"], s["fc.weight"])


def test_canonical_init_torch_default_and_gru():
    cfg = CFG["r0"]
    s = m_alt.canonical_init(cfg)
    assert not np.any(s["embedding.weight"][PAD_ID])
    b = 1 / np.sqrt(cfg.hidden_dim)
    for k, v in s.items():
        if k != "embedding.weight":
            assert np.abs(v).max() <= b
    g = m_alt.canonical_init(CFG["tiny_gru"])
    assert not np.any(g["gru.bias_ih_l0"]) and not np.any(g["gru.bias_hh_l0"])


def _golden_loss(cell: str):
    cfg = CFG["golden"].replace(cell=cell)
    model = t_alt.AltLAS_RNN(cfg, m_alt.golden_state(cfg))
    tok = torch.tensor([GOLDEN_TOKENS])
    out = t_alt.reinforce_loss(model, tok, torch.ones(1, 7, dtype=torch.bool),
                               torch.tensor([0.9]), torch.tensor([1.0]), 0.01)
    out.loss.backward()
    return model, out


@pytest.mark.parametrize(("cell", "loss", "norm", "sum_logits"), [
    ("lstm", 27.639887, 3.7587539, 13.305736), ("gru", 28.198662, 7.1088989, 17.742916)])
def test_golden_torch(cell, loss, norm, sum_logits):
    model, out = _golden_loss(cell)
    assert abs(out.loss.item() - loss) < 1e-5
    assert abs(out.logits.sum().item() - sum_logits) < 1e-5
    n = t_alt.clip_grads(model, 1.0)
    assert abs(n.item() - norm) < 1e-5 * norm
    assert not model.embedding.weight.grad[PAD_ID].any()
    b_ih, b_hh = model.rnn.bias_ih_l0.grad, model.rnn.bias_hh_l0.grad
    assert torch.equal(b_ih, b_hh) == (cell == "lstm")


def test_step_mode_equals_sequence_mode():
    model = t_alt.AltLAS_RNN(TINY.replace(num_layers=2))
    x = torch.randint(0, 63, (4, 12))
    with torch.no_grad():
        seq, _ = model(x)
        state, steps = None, []
        for t in range(12):
            lt, state = model.step(x[:, t], state)
            steps.append(lt)
    torch.testing.assert_close(torch.stack(steps, 1), seq, atol=1e-6, rtol=0)


def test_generate_semantics():
    cfg = TINY
    model = t_alt.AltLAS_RNN(cfg)
    g = torch.from_numpy(m_alt.gumbel_noise(0, 0, 3, cfg.max_gen_len, 63))
    g[0, 2, EOS_ID] = 1e4  # episode 0 stops at step 2
    g[1, 0, EOS_ID] = 1e4  # episode 1 stops immediately
    g[2, :, EOS_ID] = -1e4  # episode 2 never stops
    r = t_alt.generate(model, g)
    assert r.tokens.dtype == torch.int32
    assert r.tokens[0, 2] == EOS_ID and torch.all(r.tokens[0, 3:] == PAD_ID)
    assert r.valid[0].tolist() == [True] * 3 + [False] * (cfg.max_gen_len - 3)
    assert r.hit_eos.tolist() == [True, True, False]
    assert r.length.tolist() == [2, 0, cfg.max_gen_len]
    assert model.training  # restored


def test_learn_step_skips_empty_batch_and_clips():
    cfg = TINY
    model = t_alt.AltLAS_RNN(cfg)
    opt = t_alt.make_optimizer(model, TINY_RUN)
    clip = TINY_RUN.grad_clip_norm
    assert clip == 1.0
    tok = torch.randint(0, 63, (2, cfg.max_gen_len), dtype=torch.int32)
    valid = torch.ones(2, cfg.max_gen_len, dtype=torch.bool)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = t_alt.learn_step(model, opt, tok, valid, torch.ones(2), torch.zeros(2), 0.01,
                           grad_clip_norm=clip)
    assert out.skipped and opt.state_dict()["state"] == {}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    out = t_alt.learn_step(model, opt, tok, valid, torch.full((2,), 5.0), torch.ones(2), 0.01,
                           grad_clip_norm=clip)
    assert not out.skipped and out.grad_norm > 1.0
    total = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert abs(total.item() - 1.0 / (out.grad_norm + 1e-6) * out.grad_norm) < 1e-5


def test_torch_gumbel_normal_mode():
    gen = torch.Generator().manual_seed(1)
    g = t_alt.torch_gumbel(gen, 2, 3, 63)
    assert g.shape == (2, 3, 63) and torch.isfinite(g).all()


def test_dropout_only_through_an_explicit_mask():
    """p > 0: no nn.Dropout, no global RNG; the mask multiplies the last RNN layer's output
    before fc (like functional.altlas.forward); no mask = no dropout, in train mode too."""
    cfg = TINY.replace(dropout=0.5, num_layers=2)
    model = t_alt.AltLAS_RNN(cfg).train()
    assert model.rnn.dropout == 0.0  # no torch inter-layer dropout (altlas.md §2.1)
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())
    x = torch.randint(0, 63, (2, 5))
    before = torch.get_rng_state()
    with torch.no_grad():
        plain, _ = model(x)
        eval_out, _ = model.eval()(x)
        torch.testing.assert_close(plain, eval_out, atol=0, rtol=0)
        keep = torch.tensor([0.0, 2.0]).repeat(2, 5, cfg.hidden_dim // 2)  # 0 or 1/(1-p)
        masked, _ = model.train()(x, None, keep)
        y, _ = model.rnn(model.embedding(x))
        torch.testing.assert_close(masked, model.fc(y * keep), atol=0, rtol=0)
    assert torch.equal(before, torch.get_rng_state())
    assert not torch.allclose(masked, plain)
