"""Flax NNX faces (`twinframe.flax`), checked for every registered model that declares a
`jax_face`: outputs bit for bit against the pure functions (eager and under `nnx.jit`),
`nnx.split` -> pure params -> `nnx.merge`, and an `nnx.Optimizer` step with the model's optax
transformation against its jitted `make_train_step`. Models without a `jax_face` are skipped
with that reason.

Each model runs at its `check_preset` with its run's batch size (the shapes the rest of the
suite compiles, so compiled steps come from the persistent cache), under the parity precision
the other training tests set. For a model whose whole step compiles slowly (a `check_preset`
other than tiny: AIME, whose step compiles for 1.5-5 min and forward for 25-50 s on 2 cores,
beyond the suite's budget) the two cases that compile the model again under `nnx.jit` (the
forward, the nnx.Optimizer step) are opt-in, marked `slow`:
`python -m pytest -m slow tests/test_flax_nnx.py -p no:cacheprovider`; the suite runs its
eager forward (one compilation of the face's jitted forward) and every other case."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from twinframe import flax as tf_flax
from twinframe import registry
from twinframe.errors import TwinframeError
from twinframe.models.layout import flatten_tree, normalize_tree_keys, path_str
from twinframe.parity import checks

SEED = 5


@pytest.fixture(autouse=True, scope="module")
def _parity_precision():
    checks.configure_jax_for_parity()  # as the training tests: their compiled steps are shared


def _case(name: str):
    spec = registry.get(name)
    if spec.jax_face is None:
        pytest.skip(f"{name}: ModelSpec.jax_face is not declared (no Flax NNX face yet)")
    return _built(name)


def _batch(name: str) -> int:
    spec = registry.get(name)
    return spec.run_config(spec.check_preset).batch_size


@functools.cache
def _built(name: str):
    spec = registry.get(name)
    cfg, run = spec.config(spec.check_preset), spec.run_config(spec.check_preset)
    tree = spec.layout(cfg).table.torch_to_tree(spec.canonical_init(cfg, run.seed))
    tree = jax.tree.map(jnp.asarray, normalize_tree_keys(tree))
    face = spec.jax_face(cfg)
    inputs, batch = face.example(_batch(name), SEED)
    return spec, cfg, run, tree, face, inputs, batch


def _extra(tree, face):
    """The face's `extra` roots built from the weights, as the module builds them."""
    frozen = {k: v for k, v in tree.items() if k != "params"}
    return {root: init(tree["params"], frozen) for root, init in face.extra.items()}


def _pure_frozen(tree, face, batch_size):
    """The pure side's `frozen`: non-params roots, `extra` roots, the initial carry (if any)."""
    frozen = {k: v for k, v in tree.items() if k != "params"}
    frozen.update(_extra(tree, face))
    if face.init_carry is not None:
        frozen["carry"] = face.init_carry(dict(frozen), batch_size)
    return frozen


def _jit(fn):
    """`jax.jit(fn)`; a face function compiled already is its own jit."""
    return fn if isinstance(fn, jax.stages.Wrapped) else jax.jit(fn)


def _copy(tree):
    return jax.tree.map(jnp.copy, tree)


def _bits(tree) -> dict[str, tuple[str, tuple, bytes]]:
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return {jax.tree_util.keystr(p): (np.asarray(v).dtype.str, np.shape(v),
                                      np.asarray(v).tobytes()) for p, v in leaves}


def _assert_same(a, b, what: str) -> None:
    fa, fb = _bits(a), _bits(b)
    assert fa.keys() == fb.keys(), what
    bad = [k for k in fa if fa[k] != fb[k]]
    assert not bad, f"{what}: {len(bad)} leaves differ, first {bad[:3]}"


def _by_path(tree) -> dict[str, np.ndarray]:
    return {path_str(k): np.asarray(v) for k, v in flatten_tree(tree).items()}


def _module(name, tree, **kw):
    return tf_flax.module(name, registry.get(name).check_preset, tree, rngs=nnx.Rngs(0), **kw)


def _nnx_jit_cases():
    """The models; the case is opt-in (`-m slow`) where the whole step compiles slowly."""
    return [pytest.param(n, marks=pytest.mark.slow) if registry.get(n).check_preset != "tiny"
            else n for n in registry.MODELS]


@pytest.mark.parametrize("name", registry.MODELS)
def test_params_are_the_pure_leaves(name):
    spec, cfg, _, tree, face, _, _ = _case(name)
    model = _module(name, tree)
    state = nnx.state(model, nnx.Param)
    got = _by_path(nnx.to_pure_dict(state))
    want = _by_path(tree["params"])
    assert got.keys() == want.keys()
    for k in want:
        assert got[k].shape == want[k].shape and got[k].dtype == want[k].dtype, k
    # no copies: the Params hold the very arrays they were given
    held = {path_str(k): v for k, v in flatten_tree(model.params()).items()}
    given = {path_str(k): v for k, v in flatten_tree(tree["params"]).items()}
    assert all(held[k] is given[k] for k in given)
    # non-trainable roots are not Params; the state is the layout tree's leaves and the
    # face's `extra` roots
    rest = _by_path(nnx.to_pure_dict(nnx.state(model, nnx.Not(nnx.Param))))
    extra = set(_by_path(_extra(tree, face)))
    assert {f"params/{k}" for k in got} | set(rest) == {path_str(r.path) for r in
                                                        spec.layout(cfg).table.rows} | extra
    assert type(model).__doc__ and "Not covered" in type(model).__doc__


@pytest.mark.parametrize("name", registry.MODELS)
def test_state_variable_kinds(name):
    """Leaves a face names in `JaxFace.kinds` (by leaf name, or a whole `extra` root) are
    variables of that kind (`Trace`, `Diagnostic`, `Ema`: all `nnx.BatchStat`s, never
    `nnx.Param`), the others of their root keep the root's type; each type's filter selects
    exactly its leaves, and split/merge by those filters is exact."""
    spec, cfg, _, tree, face, inputs, _ = _case(name)
    if not face.kinds:
        pytest.skip(f"{name}: no leaves of a named kind")
    model = _module(name, tree, batch_size=_batch(name))
    kinds = {k: cls for k, cls in tf_flax.KINDS.items() if cls is not tf_flax.Buffer}
    want: dict[str, set[str]] = {k: set() for k in kinds}
    for r in spec.layout(cfg).table.rows:
        if r.path[0] != "params" and r.path[-1] in face.kinds:
            want[face.kinds[r.path[-1]]].add(path_str(r.path))
    for root, sub in _extra(tree, face).items():
        for k in _by_path(sub):
            kind = face.kinds.get(root) or face.kinds.get(k.rsplit("/", 1)[-1])
            if kind in want:
                want[kind].add(f"{root}/{k}")
    assert any(want.values())
    for kind, cls in kinds.items():
        assert set(_by_path(nnx.to_pure_dict(nnx.state(model, cls)))) == want[kind], kind
    stats = set(_by_path(nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))))
    assert set().union(*want.values()) <= stats
    assert not stats & {f"params/{k}" for k in
                        _by_path(nnx.to_pure_dict(nnx.state(model, nnx.Param)))}
    graphdef, params, *by_kind, rest = nnx.split(model, nnx.Param, *kinds.values(), ...)
    merged = nnx.merge(graphdef, params, *by_kind, rest)
    _assert_same(nnx.to_pure_dict(nnx.state(merged)), nnx.to_pure_dict(nnx.state(model)),
                 f"{name}: split/merge by kind")
    if want["trace"]:
        before = _bits(nnx.to_pure_dict(nnx.state(model, tf_flax.Trace)))
        model(*inputs)  # a call rewrites the traces in place
        assert _bits(nnx.to_pure_dict(nnx.state(model, tf_flax.Trace))) != before, name


@pytest.mark.parametrize("name", registry.MODELS)
def test_outputs_bit_exact(name):
    """An eager call equals the pure apply (eager): outputs, state and carry."""
    _, _, _, tree, face, inputs, _ = _case(name)
    B = _batch(name)
    frozen = _pure_frozen(tree, face, B)
    want, want_upd = face.apply(tree["params"], frozen, *inputs)
    model = _module(name, tree, batch_size=B)
    _assert_same(model(*inputs), want, f"{name}: eager outputs")
    _assert_same(model.frozen(), {**frozen, **want_upd}, f"{name}: state and carry after the "
                 "call")


@pytest.mark.parametrize("name", _nnx_jit_cases())
def test_outputs_bit_exact_under_nnx_jit(name):
    """An `nnx.jit` call equals the pure apply under jit: outputs, state and carry."""
    _, _, _, tree, face, inputs, _ = _case(name)
    B = _batch(name)
    frozen = _pure_frozen(tree, face, B)
    jit_want, jit_upd = _jit(face.apply)(tree["params"], frozen, *inputs)
    model = _module(name, tree, batch_size=B)
    call = nnx.jit(lambda m, *x: m(*x))
    _assert_same(call(model, *inputs), jit_want, f"{name}: nnx.jit outputs")
    _assert_same(model.frozen(), {**frozen, **jit_upd}, f"{name}: state and carry after the "
                 "nnx.jit call")


@pytest.mark.parametrize("name", registry.MODELS)
def test_methods_bit_exact(name):
    """Every further entry point (`JaxFace.methods`: the jittable core beside the forward),
    called in turn on one module: outputs, and the state each call writes (the pure side
    threads its `updates` the same way)."""
    _, _, _, tree, face, _, _ = _case(name)
    if not face.methods:
        pytest.skip(f"{name}: no methods besides apply and loss")
    B = _batch(name)
    args = face.method_args(B, SEED) if face.method_args else {}
    missing = sorted(set(face.methods) - set(args))
    assert not missing, f"{name}: no method_args for {missing}"
    frozen = _pure_frozen(tree, face, B)
    model = _module(name, tree, batch_size=B)
    assert type(model).__doc__.count(", ".join(face.methods)) == 1
    for m, fn in face.methods.items():
        want, upd = _jit(fn)(tree["params"], frozen, *args[m])
        got = nnx.jit(lambda model, *a, m=m: getattr(model, m)(*a))(model, *args[m])
        _assert_same(got, want, f"{name}.{m} under nnx.jit")
        frozen = {**frozen, **upd}
        _assert_same(model.frozen(), frozen, f"{name}.{m}: state written under nnx.jit")


@pytest.mark.parametrize("name", registry.MODELS)
def test_split_pure_merge_roundtrip(name):
    _, _, _, tree, face, inputs, _ = _case(name)
    B = _batch(name)
    model = _module(name, tree, batch_size=B)
    before = _bits(nnx.to_pure_dict(nnx.state(model)))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    pure = normalize_tree_keys(nnx.to_pure_dict(params))  # the pure pytree: lists as lists
    _assert_same(pure, tree["params"], f"{name}: pure params from nnx.split")
    want, _ = face.apply(pure, _pure_frozen(tree, face, B), *inputs)
    params2 = nnx.state(nnx.merge(graphdef, params, rest), nnx.Param)
    nnx.replace_by_pure_dict(params2, jax.tree.map(jnp.copy, nnx.to_pure_dict(params)))
    merged = nnx.merge(graphdef, params2, rest)
    assert _bits(nnx.to_pure_dict(nnx.state(merged))) == before
    _assert_same(merged(*inputs), want, f"{name}: merged module outputs")


@pytest.mark.parametrize("name", _nnx_jit_cases())
def test_optimizer_step_equals_train_step(name):
    """Two steps of nnx.Optimizer(model, spec.jax_optimizer(run)) under nnx.jit
    (`model.train_step`: the face's gradients, `opt.update`, the after-update hook) equal two
    calls of spec.make_train_step(cfg, tx): parameters, optimizer state, loss, the state and
    carry the steps write."""
    spec, cfg, run, tree, face, _, batch = _case(name)
    tx = spec.jax_optimizer(run)
    B = _batch(name)

    model = _module(name, _copy(tree), batch_size=B)
    opt = nnx.Optimizer(model, tx, wrt=nnx.Param)

    @nnx.jit
    def nnx_step(model, opt, *batch):
        return model.train_step(opt, *batch)[0]

    step = spec.make_train_step(cfg, tx)
    params, frozen = _copy(tree["params"]), _pure_frozen(tree, face, B)
    opt_state = tx.init(params)
    for k in range(2):
        loss = nnx_step(model, opt, *batch)
        params, opt_state, want_loss, upd = face.train(step, params, opt_state, _copy(frozen),
                                                       *_copy(batch))
        frozen = {**frozen, **upd}
        _assert_same(loss, want_loss, f"{name}: loss of step {k + 1}")
        _assert_same(model.params(), params, f"{name}: params after step {k + 1}")
        got_opt = jax.tree.leaves(nnx.as_pure(opt.opt_state))
        want_opt = jax.tree.leaves(opt_state)
        assert len(got_opt) == len(want_opt)
        _assert_same(got_opt, want_opt, f"{name}: optimizer state after step {k + 1}")
        _assert_same(model.frozen(), frozen, f"{name}: state and carry after step {k + 1}")
    assert int(opt.step[...]) == 2


@pytest.mark.parametrize("name", registry.MODELS)
def test_weights_from_torch_state_and_canonical_init(name):
    spec, cfg, run, tree, _, _, _ = _case(name)
    state = spec.canonical_init(cfg, run.seed)
    a = _module(name, state)
    _assert_same(a.tree(), tree, f"{name}: module from a torch-layout state")
    assert spec.layout(cfg).table.tree_to_torch(jax.device_get(a.tree())).keys() == state.keys()
    b = tf_flax.module(name, cfg, rngs=nnx.Rngs(3))
    c = tf_flax.module(name, cfg, rngs=nnx.Rngs(3))
    _assert_same(b.tree(), c.tree(), f"{name}: canonical init from rngs")
    abstract = tf_flax.abstract_module(name, cfg)
    shapes = jax.tree.map(lambda x: (x.shape, x.dtype), nnx.to_pure_dict(nnx.state(abstract)))
    assert shapes == jax.tree.map(lambda x: (x.shape, x.dtype), nnx.to_pure_dict(nnx.state(a)))


def test_bad_weights_and_missing_carry_are_one_line_errors():
    name = next((n for n in registry.MODELS if registry.get(n).jax_face is not None), None)
    if name is None:
        pytest.skip("no registered model declares a jax_face")
    spec, cfg, run, tree, face, inputs, _ = _built(name)
    state = spec.canonical_init(cfg, run.seed)
    key = next(iter(state))
    with pytest.raises(TwinframeError, match=key):
        _module(name, {k: v for k, v in state.items() if k != key})
    bad = dict(tree)
    bad["params"] = jax.tree.map(lambda x: x, tree["params"])
    first = next(iter(flatten_tree(bad["params"])))
    node = bad["params"]
    for p in first[:-1]:
        node = node[p]
    node[first[-1]] = jnp.zeros((7, 7))
    with pytest.raises(TwinframeError, match="shape"):
        _module(name, bad)
    if face.init_carry is not None:
        with pytest.raises(TwinframeError, match="init_carry"):
            _module(name, tree)(*inputs)


def test_reset_carry_rows():
    name = next((n for n in registry.MODELS if registry.get(n).jax_face is not None
                 and _built(n)[4].init_carry is not None), None)
    if name is None:
        pytest.skip("no registered model with a jax_face has carry rows")
    _, _, _, tree, face, inputs, _ = _built(name)
    B = _batch(name)
    model = _module(name, tree, batch_size=B)
    fresh = tf_flax.values(model.carry)
    model(*inputs)
    moved = tf_flax.values(model.carry)
    mask = np.zeros(B, bool)
    mask[1] = True
    model.reset_carry(mask)
    now = tf_flax.values(model.carry)
    for k in fresh:
        assert np.array_equal(now[k][1], fresh[k][1]) and np.array_equal(now[k][0], moved[k][0])
    model.reset_carry()
    _assert_same(tf_flax.values(model.carry), fresh, "reset_carry()")
