"""GAIA files for `twinframe convert`: configs read from files are bounded by the layout size
before any layout is built (issue 11, as for HRM and AltLAS)."""

from __future__ import annotations

import time

import pytest

from twinframe.errors import CheckpointError
from twinframe.models import gaia as mg
from twinframe.parity.files import convert_file
from twinframe.store import io


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
@pytest.mark.parametrize(("field", "value", "message"), [
    ("n_ensemble", 1_000_000, "config implies 18000005 tensors, the file holds 59"),
    ("n_ensemble", 4, "missing key"),
    ("hidden_dim", 1_000_000, "shape"),
])
def test_file_config_bounded_before_the_layout(tmp_path, suffix, field, value, message):
    """A tiny agent's file whose config claims a million members is refused from the layout
    size alone (no layout of 18M rows is built); claims that fit the bound fail on the file's
    own keys and shapes. One line, nothing written."""
    src = tmp_path / f"agent{suffix}"
    io.write_torch(src, mg.canonical_init(mg.TINY, 0), "gaia",
                   {**mg.TINY.to_dict(), field: value})
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match=message) as e:
        convert_file(src, tmp_path / "out.npz")
    assert time.perf_counter() - t0 < 5
    assert "\n" not in str(e.value) and not (tmp_path / "out.npz").exists()


# ---------------------------------------------------------------------------------------------
# reference v3.1 files (spec §1.11): the reference agent is no nn.Module, so its users save the
# modules' state_dicts: {'wm': agent.wm.state_dict(), 'am': agent.am.state_dict()} (or one
# dict with `wm.`/`am.` prefixes); no step counters (Python attributes), no g (zeros)


def _reference_agent():
    """A torch_ref agent after a few planning calls (traces, histories and counters moved),
    and its state_dicts in the reference code's key layout."""
    import numpy as np
    import torch

    from twinframe.torch_ref import gaia as tg

    cfg = mg.TINY
    module = tg.GaiaAgentModule(cfg, mg.canonical_init(cfg, 3))
    rng = np.random.default_rng(0)
    for _ in range(3):
        tg.select_action(module, torch.from_numpy(rng.standard_normal((1, 1), np.float32)),
                         torch.from_numpy(rng.standard_normal((cfg.planning_samples, 1),
                                                              np.float32)), float(rng.random()))
    wm = {k: v.clone() for k, v in module.wm.state_dict().items()
          if not k.endswith("step_counter")}
    am = {k: v.clone() for k, v in module.am.state_dict().items()}
    return cfg, module, wm, am


def _cli(argv, capsys):
    from twinframe import cli

    rc = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def _same(a, b) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.numpy().tobytes() == b.numpy().tobytes()


def test_reference_agent_pt_round_trip_without_flags(tmp_path, capsys):
    """torch.save({'wm': ..., 'am': ...}) of the reference code -> JAX (recognised, counters 0
    and g = 0 filled, everything else bit for bit) -> a .pt of the same two state_dicts, bit
    for bit, that loads into the reference modules (the world model as §1.11 loads it)."""
    import numpy as np
    import torch

    from twinframe.torch_ref import gaia as tg

    cfg, module, wm, am = _reference_agent()
    assert len(wm) == 16 * cfg.n_ensemble and int(module.wm.models[0].l1.step_counter) > 0
    src = tmp_path / "agent.pt"
    torch.save({"wm": wm, "am": am}, src)
    rc, out, err = _cli(["convert", src, tmp_path / "agent.npz"], capsys)
    assert rc == 0, err
    assert "gaia (tiny, recognised)" in out and "reference layout" in out
    assert f"note: {2 * cfg.n_ensemble + 1} keys the reference code does not save" in out

    tree, meta = io.read_jax(tmp_path / "agent.npz")
    state = mg.layout(cfg).table.tree_to_torch(tree)
    full = {k: v.numpy() for k, v in module.state_dict().items()}
    for k, x in full.items():
        if k.endswith("step_counter") or k == "preferred_state":
            assert not np.any(state[k]) and state[k].dtype == x.dtype, k
        else:
            assert state[k].tobytes() == x.tobytes(), k
    assert meta["source_layout"] == "reference" and meta["source_nested"] is True

    back = tmp_path / "back" / "agent.pt"
    rc, out, err = _cli(["convert", tmp_path / "agent.npz", back], capsys)
    assert rc == 0, err
    sd = torch.load(back, weights_only=True)
    assert list(sd) == ["wm", "am"] and list(sd["wm"]) == list(wm) and list(sd["am"]) == list(am)
    assert all(_same(sd["wm"][k], t) for k, t in wm.items())
    assert all(_same(sd["am"][k], t) for k, t in am.items())
    fresh = tg.GaiaAgentModule(cfg, mg.canonical_init(cfg, 0))
    tg.load_reference_wm(fresh, sd["wm"])
    fresh.am.load_state_dict(sd["am"])  # strict
    assert torch.equal(fresh.wm.models[2].l2.fast_trace, module.wm.models[2].l2.fast_trace)

    # the full agent on request: counters and g included, twinframe's own layout
    rc, _, err = _cli(["convert", tmp_path / "agent.npz", tmp_path / "tw.safetensors",
                       "--layout", "twinframe"], capsys)
    assert rc == 0, err
    assert set(io.read_torch(tmp_path / "tw.safetensors")[0]) == set(full)
    # and to the Flax NNX face
    rc, _, err = _cli(["convert", src, tmp_path / "nnx", "--format", "nnx"], capsys)
    assert rc == 0, err


def test_reference_agent_prefixed_safetensors_round_trip(tmp_path, capsys):
    """One flat dict with `wm.`/`am.` prefixes (safetensors, no metadata) -> JAX -> the same
    keys and bytes, no metadata; `inspect` names the model and the filled keys."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    cfg, _, wm, am = _reference_agent()
    flat = {**{f"wm.{k}": t for k, t in wm.items()}, **{f"am.{k}": t for k, t in am.items()}}
    src = tmp_path / "agent.safetensors"
    save_file(flat, str(src))
    rc, out, err = _cli(["inspect", src], capsys)
    assert rc == 0 and "gaia" in out, err
    assert _cli(["convert", src, tmp_path / "j.orbax"], capsys)[0] == 0
    rc, _, err = _cli(["convert", tmp_path / "j.orbax", tmp_path / "b.safetensors"], capsys)
    assert rc == 0, err
    with safe_open(str(tmp_path / "b.safetensors"), "pt") as f:
        assert not f.metadata() and set(f.keys()) == set(flat)
        assert all(_same(f.get_tensor(k), t) for k, t in flat.items())


def test_reference_files_that_are_not_an_agent(tmp_path, capsys):
    """The world model alone is not recognised; an optimizer state_dict inside the file is
    refused by name; a nested file whose names collide once prefixed is refused. One line
    each, nothing written."""
    import torch

    _, module, wm, am = _reference_agent()
    cases = {
        "wm_only.pt": (wm, "match no registered model"),
        "with_opt.pt": ({"wm": wm, "am": am, "wm_opt": torch.optim.AdamW(
            module.wm.parameters()).state_dict()}, "optimizer state_dict beside the weights"),
        "collide.pt": ({"wm": wm, "am": am, "am.net.0.bias": am["net.0.bias"]}, "collide"),
    }
    for name, (obj, message) in cases.items():
        torch.save(obj, tmp_path / name)
        rc, _, err = _cli(["convert", tmp_path / name, tmp_path / "x.npz"], capsys)
        assert rc == 2 and message in err and err.count("\n") == 1, (name, err)
        assert not (tmp_path / "x.npz").exists()
