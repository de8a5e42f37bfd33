"""The model contract, checked for every registered model: a new model is covered by registering
it. Layout = torch keys = JAX tree paths; file round trip; train-state conversion both ways;
preset recognition; declared fields; refusals; and mutations that the parity levels and the L5
curve must catch."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from twinframe import registry
from twinframe.errors import ConfigError
from twinframe.models.layout import convert_train_state, flatten_tree, path_str
from twinframe.parity import checks
from twinframe.parity.compare import score
from twinframe.parity.twins import Twins
from twinframe.store import checkpoint
from twinframe.training.runner import Trainer, make_engine

MODELS = registry.MODELS


def _setup(name: str):
    """The model's `check_preset` (tiny unless it declares a smaller one)."""
    spec = registry.get(name)
    return spec, spec.config(spec.check_preset), spec.run_config(spec.check_preset)


def _bits(tree) -> dict[str, tuple[str, bytes]]:
    return {path_str(k): (np.asarray(v).dtype.str, np.asarray(v).tobytes())
            for k, v in flatten_tree(tree).items()}


def _assert_same_bits(a, b, what: str) -> None:
    fa, fb = _bits(a), _bits(b)
    assert fa.keys() == fb.keys(), what
    bad = [k for k in fa if fa[k] != fb[k]]
    assert not bad, f"{what}: {bad[:5]}"


@pytest.mark.parametrize("name", MODELS)
def test_layout_is_torch_keys_and_jax_paths(name):
    spec, cfg, run = _setup(name)
    lay = spec.layout(cfg)
    init = spec.canonical_init(cfg, run.seed)
    module = spec.make_torch(cfg, init)
    sd = module.state_dict()
    assert set(sd) == {r.torch_key for r in lay.table.rows}
    assert {k: tuple(v.shape) for k, v in sd.items()} == {r.torch_key: r.shape
                                                          for r in lay.table.rows}
    trained = {k for k, p in module.named_parameters() if p.requires_grad}
    assert trained == set(lay.trainable_keys())
    model = make_engine(spec, cfg, run, "jax").export_state()["model"]
    flat = flatten_tree(model)
    assert {path_str(k) for k in flat} == {path_str(r.path) for r in lay.table.rows}
    for r in lay.table.rows:
        assert tuple(np.shape(flat[r.path])) == r.jax_shape, r.torch_key


@pytest.mark.parametrize("name", MODELS)
def test_layout_size_counts_the_layout_rows(name):
    """`ModelSpec.layout_size` (bounds configs read from files before a layout is built) is
    the row count of the layout, for every preset."""
    spec = registry.get(name)
    if spec.layout_size is None:
        pytest.skip(f"{name}: no layout_size (file configs bounded field by field)")
    for preset, p in spec.presets.items():
        assert spec.layout_size(p.model) == len(spec.layout(p.model).table.rows), preset


@pytest.mark.parametrize("name", MODELS)
def test_file_roundtrip_is_bit_exact(name, tmp_path):
    spec, cfg, run = _setup(name)
    comps = checks.roundtrip(spec, cfg, run.seed, tmp_path)
    assert comps and all(score(name, c).passed for c in comps)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("src", ["torch", "jax"])
def test_train_state_converts_both_ways_bit_exact(name, src, tmp_path):
    """src trains 2 steps -> checkpoint on disk -> other framework imports it -> its export
    converts back to src bit for bit (model, every optimizer slot, step, carry)."""
    spec, cfg, run = _setup(name)
    dst = "jax" if src == "torch" else "torch"
    lay = spec.layout(cfg)
    a = Trainer(spec, cfg, run, src)
    b = Trainer(spec, cfg, run, dst)
    try:
        for _ in range(2):
            a.train_step()
        before = a.export_state()
        loaded = checkpoint.load(checkpoint.save(tmp_path, before, keep=1))
        b.import_state(convert_train_state(loaded, lay, dst))
        assert b.t == a.t
        back = convert_train_state(b.export_state() | {"framework": dst}, lay, src)
    finally:
        a.close()
        b.close()
    for part in ("model", "opt", "carry"):
        _assert_same_bits(before[part], back[part], part)


@pytest.mark.parametrize("name", MODELS)
def test_every_preset_is_recognised(name):
    spec = registry.get(name)
    for preset, p in spec.presets.items():
        table = spec.layout(p.model).table
        found = spec.recognise({r.torch_key: np.zeros(r.shape, np.float32) for r in table.rows})
        assert found is not None, preset
        assert spec.layout(found).table == table, preset
    assert spec.recognise({"unrelated.weight": np.zeros((2, 2), np.float32)}) is None


@pytest.mark.parametrize("name", MODELS)
def test_declared_fields_are_in_every_record(name):
    spec, cfg, run = _setup(name)
    tr = Trainer(spec, cfg, run, "jax")
    try:
        rec = tr.train_step()
    finally:
        tr.close()
    assert set(spec.curve.metrics) <= set(rec)
    assert {f.key for f in spec.progress} <= set(rec)
    assert spec.curve.accuracy is None or spec.curve.accuracy in rec


@pytest.mark.parametrize("name", MODELS)
def test_unsupported_options_are_refused(name):
    spec, cfg, run = _setup(name)
    assert spec.refused, "declare what the engines refuse (or an empty tuple on purpose)"
    for r in spec.refused:
        with pytest.raises(ConfigError) as e:
            Trainer(spec, cfg.replace(**r.model), run.replace(**r.run), "jax")
        assert "\n" not in str(e.value)
    for cls in (spec.config_cls, spec.run_cls):
        with pytest.raises(ConfigError, match="unknown field"):
            cls.from_dict({"no_such_field": 1})


def _swap_rows(tree):
    """A porting bug: the first two rows of every matrix exchanged (JAX side only)."""
    import jax

    def swap(x):
        x = np.array(x)
        if x.ndim >= 2 and x.shape[0] >= 2:
            x[[0, 1]] = x[[1, 0]]
        return x

    return jax.tree_util.tree_map(swap, tree)


@pytest.mark.parametrize("name", MODELS)
def test_a_mutated_jax_model_fails_the_parity_levels(name, monkeypatch):
    """Every Twins-built JAX model gets swapped rows: some level must fail (levels run in
    report order until the first failure)."""
    spec, cfg, run = _setup(name)
    build = Twins.build.__func__

    def broken(cls, *args, **kwargs):
        tw = build(cls, *args, **kwargs)
        tw.params = _swap_rows(tw.params)
        return tw

    monkeypatch.setattr(Twins, "build", classmethod(broken))
    checks.configure_jax_for_parity()
    tried = []
    for level, thunk in spec.parity_levels(cfg, run).items():
        tried.append(level)
        if not all(score(name, c).passed for c in thunk()):
            return
    pytest.fail(f"no parity level of {name} caught swapped rows (tried {', '.join(tried)})")


@pytest.mark.parametrize("name", MODELS)
def test_a_mutated_jax_optimizer_fails_l5(name):
    """A JAX optimizer with a 10% larger learning rate (a schedule applied twice, say) must fail
    the L5 curve although the noise floor is measured: the floor does not hide real bugs."""
    spec, cfg, run = _setup(name)
    mutated = dataclasses.replace(
        spec, jax_optimizer=lambda r: spec.jax_optimizer(r.replace(lr=r.lr * 1.1)))
    res = checks.run_curve(mutated, cfg, run, 4)
    failed = [r.name for r in res.records if not r.passed]
    assert any(".params." in n for n in failed), failed


@pytest.mark.parametrize("name", MODELS)
def test_nnx_checkpoint_roundtrip_is_bit_exact(name, tmp_path):
    """torch-layout weights -> orbax checkpoint of the Flax NNX state (`twinframe.flax`,
    `convert --format nnx`) -> torch layout again, bit for bit, with the model and config."""
    from twinframe.flax import checkpoint as nnx_checkpoint

    spec, cfg, run = _setup(name)
    init = spec.canonical_init(cfg, run.seed)
    nnx_checkpoint.write_nnx(tmp_path / "nnx", spec, cfg, init)
    got_name, got_cfg, state = nnx_checkpoint.read_nnx(tmp_path / "nnx")
    assert (got_name, got_cfg) == (name, cfg.to_dict())
    _assert_same_bits(state, init, f"{name}: NNX checkpoint round trip")


@pytest.mark.parametrize("name", MODELS)
def test_convert_format_nnx_cli_round_trip(name, tmp_path, capsys):
    """`twinframe convert public.safetensors out --format nnx` (no metadata: the model and
    config recognised) -> `twinframe convert out back.safetensors`: the same tensors, bit for
    bit, and the NNX checkpoint loads as the model's module."""
    from safetensors.numpy import save_file

    from twinframe import cli
    from twinframe.flax import checkpoint as nnx_checkpoint
    from twinframe.store import io

    spec, cfg, run = _setup(name)
    init = spec.canonical_init(cfg, run.seed)
    src, out, back = tmp_path / "public.safetensors", tmp_path / "nnx", tmp_path / "b.safetensors"
    save_file(init, str(src))
    assert cli.main(["convert", str(src), str(out), "--format", "nnx"]) == 0
    assert cli.main(["convert", str(out), str(back)]) == 0, capsys.readouterr().err
    _assert_same_bits(io.read_torch(back)[0], init, f"{name}: convert --format nnx and back")
    model = nnx_checkpoint.load(out)
    assert type(model).__name__.lower() == f"{name}module"
