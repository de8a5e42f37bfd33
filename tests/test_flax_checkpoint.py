"""NNX checkpoints (`twinframe.flax.checkpoint`): torch-layout weights -> orbax NNX state ->
back bit for bit; Flax's own restore recipe (`nnx.split` of the abstract module, restore,
`nnx.merge`) loads it, state outside the layout table (`JaxFace.extra`: AIME's EMA teacher)
included; a bad directory is one CheckpointError line and nothing is written."""

from __future__ import annotations

import json
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from twinframe import flax as tf_flax
from twinframe import registry
from twinframe.errors import CheckpointError
from twinframe.flax import checkpoint as ck
from twinframe.models.layout import flatten_tree, path_str
from twinframe.store import io


def _setup(name):
    """The model at its `check_preset` (tiny unless it declares a smaller one)."""
    spec = registry.get(name)
    cfg, run = spec.config(spec.check_preset), spec.run_config(spec.check_preset)
    return spec, cfg, spec.canonical_init(cfg, run.seed)


def _same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert a[k].tobytes() == b[k].tobytes(), k


@pytest.mark.parametrize("name", registry.MODELS)
def test_write_read_and_flax_recipe(name, tmp_path):
    spec, cfg, state = _setup(name)
    dst = tmp_path / "ckpt"
    ck.write_nnx(dst, spec, cfg, state)
    assert ck.is_nnx(dst) and not ck.is_nnx(tmp_path)
    got_name, got_cfg, got = ck.read_nnx(dst)
    assert (got_name, got_cfg) == (name, cfg.to_dict())
    _same_state(got, state)

    # Flax's own recipe: abstract module -> graphdef + target -> restore -> nnx.merge
    graphdef, abstract = nnx.split(tf_flax.abstract_module(name, cfg))
    with ocp.StandardCheckpointer() as ckptr:
        restored = ckptr.restore((dst / ck.STATE_DIR).absolute(), abstract)
    model = nnx.merge(graphdef, restored)
    want = tf_flax.module(name, cfg, state, rngs=None)
    a = flatten_tree(nnx.to_pure_dict(nnx.state(model)))
    b = flatten_tree(nnx.to_pure_dict(nnx.state(want)))
    assert a.keys() == b.keys()
    assert all(np.asarray(a[k]).tobytes() == np.asarray(b[k]).tobytes() for k in a)
    loaded = ck.load(dst)
    assert spec.layout(cfg).table.tree_to_torch(jax.device_get(loaded.tree())).keys() == \
        state.keys()


# a restore that fails on corrupt data leaves orbax background callbacks that report "Event
# loop is closed" as unraisable exceptions; the read itself fails cleanly
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_bad_directories_are_one_line_errors(tmp_path):
    name = registry.MODELS[0]
    spec, cfg, state = _setup(name)
    good = tmp_path / "good"
    ck.write_nnx(good, spec, cfg, state)

    def variant(tag, meta=None, tree=None):
        d = tmp_path / tag
        shutil.copytree(good, d)
        if meta is not None:
            (d / io.META_FILE).write_text(meta if isinstance(meta, str) else json.dumps(meta))
        if tree is not None:
            shutil.rmtree(d / ck.STATE_DIR)
            with ocp.StandardCheckpointer() as ckptr:
                ckptr.save((d / ck.STATE_DIR).absolute(), tree)
                ckptr.wait_until_finished()
        return d

    meta = json.loads((good / io.META_FILE).read_text())
    pure = {path_str(k): np.asarray(v) for k, v in
            flatten_tree(nnx.to_pure_dict(nnx.state(tf_flax.module(name, cfg, state,
                                                                   rngs=None)))).items()}

    def tree_without(key=None, **changed):
        flat = {k: v for k, v in pure.items() if k != key}
        flat.update(changed)
        out: dict = {}
        for k, v in flat.items():
            node = out
            *head, last = k.split("/")
            for p in head:
                node = node.setdefault(p, {})
            node[last] = v
        return out

    first = next(iter(pure))
    cases = {
        "nothing": (tmp_path / "absent", "no such"),
        "plain dir": (tmp_path, "not a twinframe NNX checkpoint"),
        "bad json": (variant("json", meta="{nope"), "unreadable"),
        "no model": (variant("nomodel", meta={**meta, "model": None}), "names no model"),
        "unknown model": (variant("unknown", meta={**meta, "model": "zzz",
                                                   "format": "twinframe/zzz/nnx/1"}), "zzz"),
        "bad config": (variant("cfg", meta={**meta, "config": {**meta["config"], "xx": 1}}),
                       "xx"),
        "missing tensor": (variant("missing", tree=tree_without(first)), "missing"),
        "extra tensor": (variant("extra", tree=tree_without(extra=np.zeros(3, np.float32))),
                         "unexpected"),
        "wrong shape": (variant("shape", tree=tree_without(**{first: np.zeros((2, 3),
                                                                               np.float32)})),
                        "shape"),
        "int dtype": (variant("dtype", tree=tree_without(**{first: pure[first].astype(np.int32)})),
                      "dtype"),
    }
    corrupt = variant("corrupt")
    for f in (corrupt / ck.STATE_DIR).rglob("*"):
        if f.is_file() and "manifest" in f.name:
            f.write_bytes(b"garbage")
    cases["corrupt"] = (corrupt, "unreadable NNX state|missing")
    for what, (path, match) in cases.items():
        with pytest.raises(CheckpointError, match=match) as e:
            ck.read_nnx(path)
        assert "\n" not in str(e.value), what
    # validation happens before writing: nothing appears at dst
    bad = dict(state)
    bad.pop(next(iter(bad)))
    with pytest.raises(CheckpointError):
        ck.write_nnx(tmp_path / "never", spec, cfg, bad)
    assert not (tmp_path / "never").exists()


def test_convert_to_nnx_and_back(tmp_path):
    """A public-layout safetensors file -> NNX checkpoint -> safetensors and .npz, bit for bit;
    refusals before anything is written."""
    from safetensors.numpy import save_file

    name = registry.MODELS[0]
    spec, cfg, state = _setup(name)
    src = tmp_path / "public.safetensors"
    save_file(state, str(src))
    out = tmp_path / "nnx"
    s = ck.convert_nnx(src, out)
    assert (s["model"], s["to"]) == (name, "nnx") and ck.is_nnx(out)
    _same_state(ck.read_nnx(out)[2], state)
    back = tmp_path / "back.safetensors"
    s = ck.convert_nnx(out, back, to_nnx=False)
    assert s["from"] == "nnx"
    _same_state(io.read_torch(back)[0], state)
    npz = tmp_path / "back.npz"
    ck.convert_nnx(out, npz, to_nnx=False)
    assert spec.layout(cfg).table.tree_to_torch(io.read_jax(npz)[0]).keys() == state.keys()
    again = tmp_path / "again"
    ck.convert_nnx(out, again)  # NNX -> NNX
    _same_state(ck.read_nnx(again)[2], state)

    with pytest.raises(CheckpointError, match="exists"):
        ck.convert_nnx(src, out)
    ck.convert_nnx(src, out, force=True)
    with pytest.raises(CheckpointError, match="float32"):
        ck.convert_nnx(src, tmp_path / "x", dtype="bfloat16")
    other = next((m for m in registry.MODELS if m != name), "zzz")
    with pytest.raises(CheckpointError, match="not"):
        ck.convert_nnx(out, tmp_path / "y.safetensors", model=other, to_nnx=False)
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError):
        ck.convert_nnx(tmp_path / "junk.safetensors", tmp_path / "z")
    assert not any((tmp_path / n).exists() for n in ("x", "y.safetensors", "z"))
