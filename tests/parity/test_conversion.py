"""Checkpoint conversion: round trips, bf16 files, malformed inputs, atomic outputs."""

import json
import os

import numpy as np
import pytest
import torch

from twinframe.errors import CheckpointError
from twinframe.models.hrm import FULL, TINY, canonical_init, layout
from twinframe.parity.files import convert_file
from twinframe.store import io


def table(cfg):
    return layout(cfg).table


@pytest.fixture()
def src(tmp_path):
    path = tmp_path / "model.safetensors"
    io.write_torch(path, canonical_init(TINY), "hrm", TINY.to_dict())
    return path


def test_table_shape_and_paths():
    tab = table(TINY)
    assert len(tab.rows) == 25
    rows = tab.by_key()
    r = rows["low_level_reasoner.layers.1.mlp.down_proj.weight"]
    assert r.path == ("params", "low_level_reasoner", "layers", 1, "mlp", "down_proj", "kernel")
    assert r.shape == (32, 96) and r.jax_shape == (96, 32)
    assert rows["rotary_emb.cos"].path == ("consts", "rotary_emb", "cos")
    assert rows["input_embedding.weight"].path[-1] == "embedding"
    assert len(table(FULL).rows) == 41


def test_full_chain_bit_exact(src, tmp_path):
    convert_file(src, tmp_path / "a.orbax")
    convert_file(tmp_path / "a.orbax", tmp_path / "b.pt")
    convert_file(tmp_path / "b.pt", tmp_path / "c.npz")
    convert_file(tmp_path / "c.npz", tmp_path / "d.safetensors")
    want = canonical_init(TINY)
    got, extras = io.read_torch(tmp_path / "d.safetensors")
    assert extras["model"] == "hrm" and extras["config"] == TINY.to_dict()
    for k in want:
        assert np.array_equal(want[k].view(np.uint32), got[k].view(np.uint32)), k


def test_jax_layout_is_transposed(src, tmp_path):
    convert_file(src, tmp_path / "a.npz")
    tree, _ = io.read_jax(tmp_path / "a.npz")
    k = tree["params"]["high_level_reasoner"]["layers"][0]["self_attn"]["qkv_proj"]["kernel"]
    w = canonical_init(TINY)["high_level_reasoner.layers.0.self_attn.qkv_proj.weight"]
    assert k.shape == (32, 96) and np.array_equal(k, w.T)


def test_foreign_bf16_file_without_metadata_is_recognised(tmp_path):
    from safetensors.torch import save_file

    from twinframe.store.io import from_numpy

    path = tmp_path / "zt.safetensors"
    save_file({k: from_numpy(v, "bfloat16") for k, v in canonical_init(TINY).items()}, str(path))
    s = convert_file(path, tmp_path / "x.npz")  # model and config read from keys and shapes
    assert s["model"] == "hrm"
    _, meta = io.read_jax(tmp_path / "x.npz")
    assert {k: meta["config"][k] for k in ("hidden_size", "num_layers", "num_heads")} == {
        "hidden_size": 32, "num_layers": 2, "num_heads": 2}
    (tmp_path / "x.npz").unlink()
    convert_file(path, tmp_path / "x.npz", config="tiny")
    tree, _ = io.read_jax(tmp_path / "x.npz")
    assert tree["params"]["cls_token"].dtype == np.float32
    # bf16 -> f32 -> bf16 is lossless
    convert_file(tmp_path / "x.npz", tmp_path / "y.safetensors", dtype="bfloat16")
    a, _ = io.read_torch(path)
    b, _ = io.read_torch(tmp_path / "y.safetensors")
    assert all(np.array_equal(a[k].view(np.uint16), b[k].view(np.uint16)) for k in a)


def _write_state(tmp_path, name, mutate):
    state = canonical_init(TINY)
    mutate(state)
    path = tmp_path / name
    torch.save({"model": {k: torch.from_numpy(v) for k, v in state.items()},
                "config": json.dumps(TINY.to_dict())}, path)
    return path


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.pop("output_head.weight"), "missing key 'output_head.weight'"),
        (lambda s: s.__setitem__("extra.weight", np.zeros(3, np.float32)), "unexpected key"),
        (lambda s: s.__setitem__("cls_token", np.zeros(31, np.float32)), "cls_token: shape"),
        (lambda s: s.__setitem__("cls_token", np.zeros(32, np.int64)), "cls_token: dtype int64"),
    ],
)
def test_malformed_files_one_line_error_and_no_output(tmp_path, mutate, message):
    bad = _write_state(tmp_path, "bad.pt", mutate)
    before = set(os.listdir(tmp_path))
    for dst in ("out.npz", "out.orbax", "out.safetensors"):
        with pytest.raises(CheckpointError, match=message) as e:
            convert_file(bad, tmp_path / dst)
        assert "\n" not in str(e.value)
    assert set(os.listdir(tmp_path)) == before  # no partial or temp output left


def test_garbage_and_truncated_files(tmp_path, src):
    (tmp_path / "g.safetensors").write_bytes(b"\x00" * 100)
    (tmp_path / "g.pt").write_bytes(b"not a zip")
    (tmp_path / "t.safetensors").write_bytes(src.read_bytes()[:500])
    for name in ("g.safetensors", "g.pt", "t.safetensors"):
        with pytest.raises(CheckpointError):
            convert_file(tmp_path / name, tmp_path / "o.npz")
    assert not (tmp_path / "o.npz").exists()


def test_pickle_payload_is_refused(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch pwned",))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"model": Evil()}))
    with pytest.raises(CheckpointError):
        convert_file(path, tmp_path / "o.npz")
    assert not (tmp_path / "pwned").exists() and not os.path.exists("pwned")


def test_config_mismatch_and_bad_metadata(src, tmp_path):
    with pytest.raises(CheckpointError, match="config mismatch: file has num_layers=2"):
        convert_file(src, tmp_path / "o.npz", config="full")
    state = canonical_init(TINY)
    cfg = {**TINY.to_dict(), "dropout": 0.1}
    io.write_torch(tmp_path / "m.safetensors", state, "hrm", cfg)
    with pytest.raises(CheckpointError, match="unknown field"):
        convert_file(tmp_path / "m.safetensors", tmp_path / "o.npz")
    assert json.loads(json.dumps(TINY.to_dict())) == TINY.to_dict()
