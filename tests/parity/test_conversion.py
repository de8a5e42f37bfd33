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
        (lambda s: s.pop("output_head.weight"), "'output_head.weight': missing key"),
        (lambda s: s.__setitem__("extra.weight", np.zeros(3, np.float32)),
         "'extra.weight': unexpected key"),
        (lambda s: s.__setitem__("cls_token", np.zeros(31, np.float32)), "'cls_token': shape"),
        (lambda s: s.__setitem__("cls_token", np.zeros(32, np.int64)),
         "'cls_token': dtype int64"),
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
    with pytest.raises(CheckpointError, match="'dropout' is not a hrm config field"):
        convert_file(tmp_path / "m.safetensors", tmp_path / "o.npz")
    assert json.loads(json.dumps(TINY.to_dict())) == TINY.to_dict()


# ---------------------------------------------------------------------------------------------
# files users have: reference layouts, dtypes, recognition (issue 9)


def _cli(argv, capsys):
    from twinframe import cli

    rc = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _bits(x):
    x = np.asarray(x)
    return x.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[x.dtype.itemsize])


def test_hrm_public_safetensors_round_trip_is_byte_identical(tmp_path, capsys):
    """The public HRM code's file (torch_ref keys, no metadata, bf16) -> orbax -> safetensors
    with no flags: the same file, byte for byte, and the reference module loads it strictly."""
    from safetensors.torch import load_file, save_file

    from twinframe.torch_ref.hrm import HRM

    for dt in ("bfloat16", "float32"):
        src = tmp_path / f"public_{dt}.safetensors"
        save_file({k: io.from_numpy(v, dt) for k, v in canonical_init(TINY).items()}, str(src))
        mid, back = tmp_path / f"m_{dt}.orbax", tmp_path / f"b_{dt}.safetensors"
        assert _cli(["convert", src, mid], capsys)[0] == 0
        rc, out, err = _cli(["convert", mid, back], capsys)
        assert rc == 0, err
        assert "reference layout" in out and dt in out
        assert back.read_bytes() == src.read_bytes()
        module = HRM(TINY)
        module.load_state_dict({k: t.float() for k, t in load_file(str(back)).items()})


def _altlas_pair(tmp_path, preset="tiny", steps=2):
    from twinframe.models import altlas
    from twinframe.torch_ref.altlas import AltLAS_RNN

    cfg = altlas.PRESETS[preset][0]
    model = AltLAS_RNN(cfg, altlas.canonical_init(cfg, 0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    for i in range(steps):
        opt.zero_grad()
        sum(((p - 0.01 * i) ** 2).sum() for p in model.parameters()).backward()
        opt.step()
    mp, op = tmp_path / "model_state.pth", tmp_path / "optimizer_state.pth"
    torch.save(model.state_dict(), mp)
    torch.save(opt.state_dict(), op)
    return cfg, model, opt, mp, op


def test_altlas_reference_pair_round_trip(tmp_path, capsys):
    """AltLAS's bare state_dict + torch Adam file -> orbax (with --optimizer) -> .pth pair:
    `load_state_dict(torch.load(path))` works for both, every tensor bit-identical."""
    from twinframe.torch_ref.altlas import AltLAS_RNN

    cfg, model, opt, mp, op = _altlas_pair(tmp_path)
    rc, out, err = _cli(["convert", mp, tmp_path / "j.orbax", "--optimizer", op], capsys)
    assert rc == 0, err
    assert "altlas (tiny, recognised)" in out and "with optimizer" in out
    back_m, back_o = tmp_path / "back" / "model_state.pth", tmp_path / "back" / "opt.pth"
    rc, out, err = _cli(["convert", tmp_path / "j.orbax", back_m, "--optimizer", back_o], capsys)
    assert rc == 0, err
    sd = torch.load(back_m, weights_only=True)
    assert list(sd) == list(model.state_dict())
    assert all(torch.equal(sd[k], t) for k, t in model.state_dict().items())
    m2 = AltLAS_RNN(cfg)
    m2.load_state_dict(torch.load(back_m, weights_only=True))
    osd, want = torch.load(back_o, weights_only=True), opt.state_dict()
    assert osd["param_groups"] == want["param_groups"]
    assert osd["state"].keys() == want["state"].keys()
    for i, entry in want["state"].items():
        assert list(osd["state"][i]) == list(entry)
        for k, t in entry.items():
            assert torch.equal(osd["state"][i][k], t) and osd["state"][i][k].dtype == t.dtype
    opt2 = torch.optim.Adam(m2.parameters())
    opt2.load_state_dict(torch.load(back_o, weights_only=True))
    # without --optimizer the model still converts, with a note
    rc, out, _ = _cli(["convert", tmp_path / "j.orbax", tmp_path / "only.pth"], capsys)
    assert rc == 0 and "pass --optimizer" in out


def test_fresh_adam_file_round_trip(tmp_path, capsys):
    cfg, model, opt, mp, op = _altlas_pair(tmp_path, steps=0)
    assert _cli(["convert", mp, tmp_path / "j.npz", "--optimizer", op], capsys)[0] == 0
    rc, _, err = _cli(["convert", tmp_path / "j.npz", tmp_path / "m.pth", "--optimizer",
                       tmp_path / "o.pth"], capsys)
    assert rc == 0, err
    assert torch.load(tmp_path / "o.pth", weights_only=True) == opt.state_dict()


def test_optimizer_file_errors(tmp_path, capsys):
    cfg, model, opt, mp, op = _altlas_pair(tmp_path)
    sd = opt.state_dict()
    sd["state"][3]["step"] = torch.tensor(7.0)
    torch.save(sd, tmp_path / "bad_opt.pth")
    rc, _, err = _cli(["convert", mp, tmp_path / "j.npz", "--optimizer", tmp_path / "bad_opt.pth"],
                      capsys)
    assert rc == 2 and "step counts differ" in err and err.count("\n") == 1
    assert not (tmp_path / "j.npz").exists()
    rc, _, err = _cli(["convert", op, tmp_path / "j.npz"], capsys)
    assert rc == 2 and "optimizer state_dict, not model weights" in err


def test_layout_flag_chooses_explicitly(tmp_path, capsys):
    from safetensors import safe_open

    src = tmp_path / "ref.safetensors"
    from safetensors.torch import save_file

    save_file({k: torch.from_numpy(v) for k, v in canonical_init(TINY).items()}, str(src))
    assert _cli(["convert", src, tmp_path / "a.npz"], capsys)[0] == 0
    assert _cli(["convert", tmp_path / "a.npz", tmp_path / "tw.safetensors", "--layout",
                 "twinframe"], capsys)[0] == 0
    with safe_open(str(tmp_path / "tw.safetensors"), "pt") as f:
        assert f.metadata()["format"] == "twinframe/hrm/1"
    tw = tmp_path / "tw.pt"
    io.write_torch(tw, canonical_init(TINY), "hrm", TINY.to_dict())
    assert _cli(["convert", tw, tmp_path / "b.npz"], capsys)[0] == 0
    assert _cli(["convert", tmp_path / "b.npz", tmp_path / "bare.pt", "--layout", "reference"],
                capsys)[0] == 0
    bare = torch.load(tmp_path / "bare.pt", weights_only=True)
    assert set(bare) == set(canonical_init(TINY))
    # and by default a twinframe file comes back as one
    assert _cli(["convert", tmp_path / "b.npz", tmp_path / "tw2.pt"], capsys)[0] == 0
    assert "model" in torch.load(tmp_path / "tw2.pt", weights_only=True)


def test_bf16_kept_without_dtype_flag(tmp_path, capsys):
    src = tmp_path / "m.safetensors"
    io.write_torch(src, canonical_init(TINY), "hrm", TINY.to_dict(), dtype="bfloat16")
    assert _cli(["convert", src, tmp_path / "a.npz"], capsys)[0] == 0
    _, meta = io.read_jax(tmp_path / "a.npz")
    assert set(meta["torch_dtypes"].values()) == {"bfloat16"}
    assert _cli(["convert", tmp_path / "a.npz", tmp_path / "b.safetensors"], capsys)[0] == 0
    a, _ = io.read_torch(src)
    b, _ = io.read_torch(tmp_path / "b.safetensors")
    assert all(b[k].dtype.name == "bfloat16" and np.array_equal(_bits(a[k]), _bits(b[k]))
               for k in a)
    assert _cli(["convert", tmp_path / "a.npz", tmp_path / "c.safetensors", "--dtype",
                 "float32"], capsys)[0] == 0
    c, _ = io.read_torch(tmp_path / "c.safetensors")
    assert {x.dtype.name for x in c.values()} == {"float32"}


def _presets():
    from twinframe import registry

    return [(m, p) for m in registry.MODELS for p in registry.get(m).presets]


@pytest.mark.parametrize(("model", "preset"), _presets())
def test_every_preset_is_recognised_without_flags(model, preset, tmp_path, capsys):
    """A bare reference-layout file of every model's every preset converts with no flags; the
    config found has the preset's layout (presets differing only outside the weights, e.g.
    sampling settings, cannot be told apart by shapes and come back as one of them). Presets
    above 300k parameters are recognised from shape-only arrays (no file, no init)."""
    from safetensors.torch import save_file

    from twinframe import registry
    from twinframe.parity import files

    spec = registry.get(model)
    cfg = spec.presets[preset].model
    rows = spec.layout(cfg).table.rows
    if sum(int(np.prod(r.shape)) for r in rows) > 300_000:
        shapes = {r.torch_key: np.broadcast_to(np.zeros((), r.dtype), r.shape) for r in rows}
        found_spec, found = files.recognise_model(shapes)
        assert found_spec.name == model
        assert spec.layout(found).table == spec.layout(cfg).table
        return
    src = tmp_path / "w.safetensors"
    save_file({k: torch.from_numpy(np.array(v)) if np.asarray(v).dtype.kind != "f"
               else io.from_numpy(v, "float32")
               for k, v in spec.canonical_init(cfg, 0).items()}, str(src))
    rc, out, err = _cli(["convert", src, tmp_path / "w.npz"], capsys)
    assert rc == 0, err
    _, meta = io.read_jax(tmp_path / "w.npz")
    assert meta["model"] == model
    found = spec.config(meta["config"])
    assert spec.layout(found).table == spec.layout(cfg).table
    rc, _, err = _cli(["convert", src, tmp_path / "x.npz", "--config", preset], capsys)
    assert rc == 0, err
    assert io.read_jax(tmp_path / "x.npz")[1]["config"] == cfg.to_dict()


def test_ambiguous_recognition_lists_candidates(tmp_path, monkeypatch):
    import dataclasses

    from twinframe import registry
    from twinframe.parity import files

    hrm = registry.get("hrm")
    twin = dataclasses.replace(hrm, name="hrm2")
    monkeypatch.setattr(registry, "MODELS", ("hrm", "hrm2"))
    real_get = registry.get
    monkeypatch.setattr(registry, "get", lambda n: twin if n == "hrm2" else real_get(n))
    from safetensors.torch import save_file

    save_file({k: torch.from_numpy(v) for k, v in canonical_init(TINY).items()},
              str(tmp_path / "w.safetensors"))
    with pytest.raises(CheckpointError, match=r"match several models: hrm \(preset tiny\), "
                       r"hrm2 \(preset tiny\); pass --model") as e:
        files.convert_file(tmp_path / "w.safetensors", tmp_path / "o.npz")
    assert "\n" not in str(e.value) and not (tmp_path / "o.npz").exists()
    s = files.convert_file(tmp_path / "w.safetensors", tmp_path / "o.npz", model="hrm2")
    assert s["model"] == "hrm2"


def test_config_flag_only_architecture_must_agree(src, tmp_path):
    """--config names a preset: its model config must match the file's; its run config (lr,
    batch size, ...) never matters."""
    from twinframe.models.hrm import PRESETS

    assert PRESETS["tiny"][1] != PRESETS["micro"][1]
    s = convert_file(src, tmp_path / "o.npz", config="tiny")
    assert s["config"] == "tiny"
    with pytest.raises(CheckpointError, match="config mismatch: file has num_layers=2, --config "
                       "micro has num_layers=1"):
        convert_file(src, tmp_path / "p.npz", config="micro")


def test_outputs_have_plain_modes(src, tmp_path):
    old = os.umask(0o022)
    try:
        convert_file(src, tmp_path / "a.npz")
        convert_file(src, tmp_path / "b.orbax")
        convert_file(src, tmp_path / "c.pt")
    finally:
        os.umask(old)
    assert (tmp_path / "a.npz").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "c.pt").stat().st_mode & 0o777 == 0o644
    for p in [tmp_path / "b.orbax", *(tmp_path / "b.orbax").rglob("*")]:
        assert p.stat().st_mode & 0o777 == (0o755 if p.is_dir() else 0o644), p
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_force_replaces_only_twinframe_outputs_atomically(src, tmp_path):
    convert_file(src, tmp_path / "o.orbax")
    inode = (tmp_path / "o.orbax").stat().st_ino
    with pytest.raises(CheckpointError, match="already exists"):
        convert_file(src, tmp_path / "o.orbax")
    convert_file(src, tmp_path / "o.orbax", force=True)
    assert (tmp_path / "o.orbax").stat().st_ino != inode
    assert sorted(os.listdir(tmp_path / "o.orbax")) == ["tree", "twinframe.json"]
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors", "o.orbax"]


def test_atomic_write_never_removes_a_foreign_directory(tmp_path):
    d = tmp_path / "x"
    d.mkdir()
    (d / "keep.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="did not write"):
        io.atomic_write(d, lambda p: p.mkdir(), is_dir=True)
    assert (d / "keep.txt").read_text() == "mine"
    long = tmp_path / ("n" * 250)
    io.atomic_write(long, lambda p: p.write_text("ok"))
    assert long.read_text() == "ok" and len(os.listdir(tmp_path)) == 2


def test_inspect(tmp_path, capsys):
    from safetensors.torch import save_file

    st = canonical_init(TINY)
    st["cls_token"][3] = np.nan
    save_file({k: io.from_numpy(v, "bfloat16") for k, v in st.items()},
              str(tmp_path / "w.safetensors"))
    rc, out, err = _cli(["inspect", tmp_path / "w.safetensors"], capsys)
    assert rc == 0, err
    # bf16 weights: HRM's recognise picks compute_dtype bfloat16 (not the f32 tiny preset)
    assert "safetensors (torch)" in out and "hrm (custom config, recognised)" in out
    assert "bfloat16 x25" in out and "1 values in 1 tensors (first: 'cls_token')" in out
    assert "twinframe metadata: none" in out and "layout:             reference" in out
    assert not (set(os.listdir(tmp_path)) - {"w.safetensors"})
    convert_file(tmp_path / "w.safetensors", tmp_path / "w.orbax", allow_nonfinite=True)
    rc, out, _ = _cli(["inspect", "--json", tmp_path / "w.orbax"], capsys)
    r = json.loads(out)
    assert r["format"] == "orbax" and r["model"] == "hrm" and r["recognised_by"] == "metadata"
    assert r["metadata"]["source_layout"] == "reference" and r["nonfinite"]["values"] == 1
    rc, _, err = _cli(["inspect", tmp_path / "absent.pt"], capsys)
    assert rc == 2 and err.count("\n") == 1


def test_debug_shows_the_traceback(tmp_path, capsys):
    (tmp_path / "g.safetensors").write_bytes(b"\x00" * 4)
    rc, _, err = _cli(["convert", tmp_path / "g.safetensors", tmp_path / "o.npz"], capsys)
    assert rc == 2 and "Traceback" not in err and err.count("\n") == 1
    rc, _, err = _cli(["--debug", "convert", tmp_path / "g.safetensors", tmp_path / "o.npz"],
                      capsys)
    assert rc == 2 and "Traceback" in err and err.strip().splitlines()[-1].startswith(
        "twinframe convert: error:")
