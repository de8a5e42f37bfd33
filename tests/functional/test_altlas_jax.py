"""AltLAS functional (JAX) (altlas.md §2-§4): golden numbers, padding-row gradient, clipping,
the B_eff = 0 skip, the donating train step, generation semantics, init distributions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from twinframe.functional import altlas as f_alt
from twinframe.models import altlas as m_alt
from twinframe.models.altlas import EOS_ID, PAD_ID, PRESETS

CFG = {name: model for name, (model, _) in PRESETS.items()}  # model configs of the presets

GOLDEN = CFG["golden"]
TINY, TINY_RUN = PRESETS["tiny"]
GOLDEN_TOKENS = [4, 46, 33, 13, 31, 47, 2]



def to_params(state: dict[str, np.ndarray], cfg: m_alt.AltLASConfig) -> dict:
    """torch-layout state_dict -> JAX params through the model's layout."""
    return f_alt.to_jax(m_alt.layout(cfg).params.torch_to_tree(state))


@pytest.fixture(scope="module")
def golden_params() -> dict:
    return to_params(m_alt.golden_state(GOLDEN), GOLDEN)


def _golden_args(tokens=GOLDEN_TOKENS, w=1.0):
    T = len(tokens)
    return (jnp.asarray([tokens], jnp.int32), jnp.ones((1, T), bool), jnp.asarray([0.9]),
            jnp.asarray([w], jnp.float32), jnp.float32(0.01))


def test_golden_jax(golden_params):
    fns = f_alt.jitted(GOLDEN)
    loss, aux, grads = fns.loss_and_grads(golden_params, *_golden_args())
    assert abs(float(loss) - 27.639887) < 1e-5
    np.testing.assert_allclose(np.asarray(aux.logits)[0, 0, :4],
                               [-0.21689522, -0.14227600, -0.04846872, 0.05197503], atol=1e-5)
    np.testing.assert_allclose(np.asarray(aux.entropy)[0, :2], [4.1248670, 4.1169438], atol=1e-5)
    n = f_alt.global_norm_torch(grads)
    assert abs(float(n) - 3.7587539) < 1e-5 * 3.7587539
    for k in ("layer_0", "layer_1"):  # both LSTM biases get bitwise-identical gradients
        g = grads["rnn"][k]
        assert np.array_equal(np.asarray(g["b_ih"]), np.asarray(g["b_hh"]))


def test_padding_row_gets_no_gradient(golden_params):
    fns = f_alt.jitted(GOLDEN)
    tokens = [PAD_ID, 4, PAD_ID, 46, 33, PAD_ID, 2]  # PAD is fed back as an input
    _, _, grads = fns.loss_and_grads(golden_params, *_golden_args(tokens))
    emb = np.asarray(grads["embedding"]["embedding"])
    assert not emb[PAD_ID].any() and emb[4].any()


def test_clip_semantics():
    cfg = GOLDEN
    grads = jax.tree_util.tree_map(jnp.ones_like, to_params(m_alt.golden_state(cfg), cfg))
    n_elems = m_alt.param_count(cfg)
    clipped, n = f_alt.clip_grads(grads, 1.0)
    assert abs(float(n) - np.sqrt(n_elems)) < 1e-3
    coef = np.float32(1.0) / (np.float32(n) + np.float32(1e-6))
    assert np.allclose(np.asarray(clipped["fc"]["bias"]), coef, rtol=1e-6)
    small = jax.tree_util.tree_map(lambda g: g * 1e-4, grads)
    out, _ = f_alt.clip_grads(small, 1.0)  # factor min(1, c/(n+eps)) = 1 still applied
    assert np.array_equal(np.asarray(out["fc"]["bias"]), np.asarray(small["fc"]["bias"]))
    off, _ = f_alt.clip_grads(grads, 0.0)
    assert np.array_equal(np.asarray(off["fc"]["bias"]), np.asarray(grads["fc"]["bias"]))


@pytest.fixture(scope="module")
def tiny_params() -> dict:
    return to_params(m_alt.canonical_init(TINY), TINY)


def _tiny_batch(weights: np.ndarray) -> f_alt.LearnBatch:
    """B=4 episodes of T=16 tokens with lengths 16, 11, 6, 1 and advantages in [-1, 1)."""
    rng = np.random.default_rng(11)
    B, T = 4, TINY.max_gen_len
    valid = np.arange(T)[None, :] < np.array([T, 11, 6, 1])[:, None]
    tokens = np.where(valid, rng.integers(4, TINY.vocab_size, (B, T)), PAD_ID)
    return f_alt.LearnBatch(jnp.asarray(tokens, jnp.int32), jnp.asarray(valid),
                            jnp.asarray(rng.uniform(-1, 1, B), jnp.float32),
                            jnp.asarray(weights, jnp.float32), jnp.float32(0.01))


def _copy(tree):  # noqa: ANN001, ANN202 - a fresh buffer per leaf (the step donates its inputs)
    return jax.tree_util.tree_map(jnp.array, tree)


@pytest.fixture(scope="module")
def tiny_step():
    tx = f_alt.make_optimizer(TINY_RUN)
    return tx, f_alt.make_train_step(TINY, tx)


def test_train_step_skips_when_no_episode_counts(tiny_params, tiny_step):
    tx, step = tiny_step
    p, s, out = step(_copy(tiny_params), tx.init(tiny_params), _tiny_batch(np.zeros(4)))
    assert bool(out.skipped) and int(f_alt.adam_state(s).count) == 0
    assert float(out.grad_norm) == 0.0
    leaves = zip(jax.tree_util.tree_leaves(p), jax.tree_util.tree_leaves(tiny_params), strict=True)
    assert all(np.array_equal(a, c) for a, c in leaves)
    assert not any(np.asarray(m).any() for m in jax.tree_util.tree_leaves(f_alt.adam_state(s).mu))
    p, s, out = step(p, s, _tiny_batch(np.ones(4)))
    assert not bool(out.skipped) and int(f_alt.adam_state(s).count) == 1
    assert not np.array_equal(np.asarray(p["fc"]["kernel"]),
                              np.asarray(tiny_params["fc"]["kernel"]))


def test_train_step_donates_and_equals_clip_then_adam(tiny_params, tiny_step):
    """One update = loss_and_grads -> torch clip -> torch Adam; the inputs are donated."""
    tx, step = tiny_step
    batch = _tiny_batch(np.float32([1, 0, 1, 1]))
    params, opt_state = _copy(tiny_params), tx.init(tiny_params)
    p1, s1, out = step(params, opt_state, batch)
    donated = jax.tree_util.tree_leaves((params, opt_state))
    assert all(x.is_deleted() for x in donated if isinstance(x, jax.Array))
    loss, _, grads = f_alt.jitted(TINY).loss_and_grads(tiny_params, *batch[:5])
    clipped, n = f_alt.clip_grads(grads, TINY_RUN.grad_clip_norm)
    adam = f_alt.torch_adam(TINY_RUN.lr, TINY_RUN.beta1, TINY_RUN.beta2, TINY_RUN.eps)
    updates, adam_s = adam.update(clipped, adam.init(tiny_params))
    want = optax.apply_updates(tiny_params, updates)
    assert float(out.loss) == pytest.approx(float(loss), rel=1e-6)
    assert float(out.grad_norm) == pytest.approx(float(n), rel=1e-6)
    assert float(n) > TINY_RUN.grad_clip_norm  # the clip was active
    for a, b in zip(jax.tree_util.tree_leaves(p1), jax.tree_util.tree_leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-7)
    np.testing.assert_allclose(np.asarray(f_alt.adam_state(s1).nu["fc"]["bias"]),
                               np.asarray(adam_s[0].nu["fc"]["bias"]), rtol=1e-5, atol=0)


def test_train_step_takes_the_dropout_mask(tiny_params, tiny_step):
    """LearnBatch.dropout_mask [B, T, H] reaches the loss as in `loss_and_grads`."""
    tx, step = tiny_step
    batch = _tiny_batch(np.ones(4))
    keep = np.random.default_rng(5).random((4, TINY.max_gen_len, TINY.hidden_dim)) > 0.25
    batch = batch._replace(dropout_mask=jnp.asarray(keep / 0.75, jnp.float32))
    _, _, out = step(_copy(tiny_params), tx.init(tiny_params), batch)
    loss, _, _ = f_alt.jitted(TINY).loss_and_grads(tiny_params, *batch)
    plain, _, _ = f_alt.jitted(TINY).loss_and_grads(tiny_params, *batch[:5])
    assert float(out.loss) == pytest.approx(float(loss), rel=1e-6)
    assert float(loss) != pytest.approx(float(plain), rel=1e-3)


def test_generate_semantics(tiny_params):
    T = TINY.max_gen_len
    g = m_alt.gumbel_noise(0, 0, 4, T, 63)
    g[0, 2, EOS_ID] = 1e4
    g[1, 0, EOS_ID] = 1e4
    g[2, :, EOS_ID] = -1e4
    r = f_alt.jitted(TINY).generate(tiny_params, jnp.asarray(g))
    tokens = np.asarray(r.tokens)
    assert tokens.dtype == np.int32
    assert tokens[0, 2] == EOS_ID and np.all(tokens[0, 3:] == PAD_ID)
    assert np.asarray(r.valid)[0].tolist() == [True] * 3 + [False] * (T - 3)
    assert np.asarray(r.hit_eos)[:3].tolist() == [True, True, False]
    assert np.asarray(r.length)[:3].tolist() == [2, 0, T]


def test_step_mode_equals_sequence_mode(tiny_params):
    fns = f_alt.jitted(TINY)
    T = TINY.max_gen_len
    x = jnp.asarray(np.random.default_rng(0).integers(0, 63, (4, T)), jnp.int32)
    seq, _ = fns.forward(tiny_params, x)
    state, steps = f_alt.zero_state(TINY, 4), []
    for t in range(T):
        lt, state = fns.step(tiny_params, x[:, t], state)
        steps.append(np.asarray(lt))
    np.testing.assert_allclose(np.stack(steps, 1), np.asarray(seq), atol=1e-6, rtol=0)


def test_init_params_distributions():
    cfg = CFG["tiny"]
    p = f_alt.init_params(jax.random.PRNGKey(0), cfg)
    H = cfg.hidden_dim
    lay = p["rnn"]["layer_0"]
    assert lay["w_ih"].shape == (16, 128) and lay["w_hh"].shape == (32, 128)
    w_hh = np.asarray(lay["w_hh"], np.float64)  # [H, 4H] = torch [4H, H] transposed
    np.testing.assert_allclose(w_hh @ w_hh.T, np.eye(H), atol=1e-5)
    assert float(jnp.abs(lay["w_ih"]).max()) <= np.sqrt(6 / (16 + 128))
    assert float(jnp.abs(p["embedding"]["embedding"]).max()) <= np.sqrt(6 / (63 + 16))
    b = np.asarray(lay["b_ih"])
    assert np.all(b[H:2 * H] == 1) and not b[:H].any() and not np.asarray(p["fc"]["bias"]).any()
    r0 = f_alt.init_params(jax.random.PRNGKey(0), CFG["r0"].replace(embed_dim=8,
                                                                      hidden_dim=16))
    assert not np.asarray(r0["embedding"]["embedding"])[PAD_ID].any()
    torch_layout = m_alt.layout(cfg).params.tree_to_torch(jax.tree_util.tree_map(np.asarray, p))
    assert set(torch_layout) == set(m_alt.torch_shapes(cfg))


def test_sample_noise():
    key = jax.random.PRNGKey(3)
    a = f_alt.sample_noise(key, 0, (2, 4, 63))
    b = f_alt.sample_noise(key, 1, (2, 4, 63))
    assert a.dtype == jnp.float32 and a.shape == (2, 4, 63)
    assert not np.array_equal(np.asarray(a), np.asarray(b))


def test_adam_flavours_share_optax_state_layout(tiny_params):
    """(clip EmptyState, (ScaleByAdamState(count, mu, nu), EmptyState)) for both flavours."""
    a = f_alt.make_optimizer(TINY_RUN).init(tiny_params)
    b = f_alt.make_optimizer(TINY_RUN, "optax").init(tiny_params)
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    assert isinstance(a[0], optax.EmptyState) and isinstance(a[1][1], optax.EmptyState)
    adam = f_alt.adam_state(a)
    assert isinstance(adam, optax.ScaleByAdamState)
    assert adam.count.dtype == f_alt.adam_state(b).count.dtype == jnp.int32
    assert jax.tree_util.tree_structure(adam.mu) == jax.tree_util.tree_structure(tiny_params)
    rebuilt = f_alt.opt_state_from_adam(adam)
    assert jax.tree_util.tree_structure(rebuilt) == jax.tree_util.tree_structure(a)
    with pytest.raises(ValueError, match="flavour"):
        f_alt.make_optimizer(TINY_RUN, "sgd")


def test_lstm_sequence_backward_equals_autodiff():
    """The hand-written LSTM backward (`lstm_sequence`) against autodiff of a plain scan of
    `lstm_cell`: same outputs (P1 tolerance), gradients of every input (non-zero h0, c0 and
    cotangents on y, hT and cT) within the P4 gradient tolerance."""
    from twinframe.parity import tolerances

    rng = np.random.default_rng(3)
    T, B, I, H = 7, 3, 5, 4
    args = [jnp.asarray(rng.standard_normal(s) * 0.5, jnp.float32)
            for s in ((T, B, I), (I, 4 * H), (B, H), (B, H), (H, 4 * H), (4 * H,))]
    cts = [jnp.asarray(rng.standard_normal(s), jnp.float32) for s in ((T, B, H), (B, H), (B, H))]

    def plain(x, w_ih, h0, c0, w_hh, b):
        def body(carry, xw_t):
            h, c = f_alt.lstm_cell(xw_t, carry[0], carry[1], w_hh, b)
            return (h, c), h

        (h, c), y = jax.lax.scan(body, (h0, c0), jnp.einsum("tbi,ig->tbg", x, w_ih))
        return y, h, c

    outs = {}
    for name, fn in (("plain", plain), ("custom", f_alt.lstm_sequence)):
        out, vjp = jax.vjp(fn, *args)
        outs[name] = (out, vjp(tuple(cts)))
    same, tol = tolerances.get("altlas.P1.step_vs_seq"), tolerances.get("altlas.P4.grad")
    for a, b in zip(outs["custom"][0], outs["plain"][0], strict=True):
        assert same.evaluate(np.asarray(a), np.asarray(b))[2]
    for i, (a, b) in enumerate(zip(outs["custom"][1], outs["plain"][1], strict=True)):
        assert tol.evaluate(np.asarray(a), np.asarray(b))[2], i
