"""Property tests: valid checkpoint files of every format and every registered model, mutated
(bytes flipped, overwritten, inserted, truncated; for orbax directories, in any of their files),
go through `twinframe convert` in process: exit 0 with an output, or exit 2 with exactly one
line, no traceback, and nothing written."""

import contextlib
import io as _io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twinframe import cli, registry
from twinframe.store import io

FORMATS = ("safetensors", "pt", "npz", "orbax")
EXAMPLES = {"safetensors": 40, "pt": 40, "npz": 40, "orbax": 15}
_BASES: dict[tuple[str, str], Path] = {}
_ROOT = Path(tempfile.mkdtemp(prefix="tf-prop-"))


def _torch(x):
    x = np.array(x)
    return torch.from_numpy(x) if x.dtype.kind != "f" else io.from_numpy(x, "float32")


def base_file(model: str, fmt: str) -> Path:
    """A valid file of `model` (its first preset) in `fmt`, built once."""
    key = (model, fmt)
    if key not in _BASES:
        from safetensors.torch import save_file

        spec = registry.get(model)
        cfg = next(iter(spec.presets.values())).model
        state = spec.canonical_init(cfg, 0)
        d = _ROOT / model
        d.mkdir(exist_ok=True)
        if fmt == "safetensors":  # the reference layout: tensors alone
            p = d / "w.safetensors"
            save_file({k: _torch(x) for k, x in state.items()}, str(p))
        elif fmt == "pt":
            p = d / "w.pt"
            io.write_torch(p, state, model, cfg.to_dict())
        else:
            p = d / ("w.npz" if fmt == "npz" else "w.orbax")
            io.write_jax(p, spec.layout(cfg).table.torch_to_tree(state), model, cfg.to_dict())
        _BASES[key] = p
    return _BASES[key]


MUTATION = st.tuples(st.sampled_from(["flip", "overwrite", "insert", "truncate", "zero"]),
                     st.floats(0, 1, exclude_max=True), st.binary(min_size=1, max_size=24),
                     st.booleans())


def mutate(data: bytes, ops) -> bytes:
    b = bytearray(data)
    for kind, where, blob, near_start in ops:
        n = max(len(b), 1)
        # half the mutations land in the first 2 KiB: headers, metadata, zip directories
        pos = int(where * min(n, 2048)) if near_start else int(where * n)
        if kind == "flip" and b:
            b[min(pos, len(b) - 1)] ^= blob[0] or 1
        elif kind == "overwrite":
            b[pos:pos + len(blob)] = blob
        elif kind == "insert":
            b[pos:pos] = blob
        elif kind == "truncate":
            del b[pos:]
        elif kind == "zero":
            b[pos:pos + 8 * len(blob)] = bytes(len(b[pos:pos + 8 * len(blob)]))
    return bytes(b)


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = _io.StringIO(), _io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main(argv)
        except SystemExit as e:
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


def check(src: Path, work: Path, dst_name: str) -> None:
    before = sorted(os.listdir(work))
    rc, out, err = run(["convert", str(src), str(work / dst_name)])
    assert rc in (0, 2), (rc, err)
    assert "Traceback" not in err and "internal error" not in err, err
    if rc == 2:
        assert err.count("\n") == 1 and err.startswith("twinframe convert: error: "), err
        assert "\x1b" not in err
        assert sorted(os.listdir(work)) == before, "something was written"
    else:
        assert (work / dst_name).exists() and out.count("\n") == 1, out


def _cases():
    return [(m, f) for m in registry.MODELS for f in FORMATS]


@pytest.mark.parametrize(("model", "fmt"), _cases())
def test_mutated_files_fail_cleanly(model, fmt):
    base = base_file(model, fmt)

    @settings(max_examples=EXAMPLES[fmt], deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(ops=st.lists(MUTATION, min_size=1, max_size=3),
           which=st.integers(0, 10**6))
    def prop(ops, which):
        work = Path(tempfile.mkdtemp(dir=_ROOT))
        try:
            if fmt == "orbax":
                src = work / "s.orbax"
                shutil.copytree(base, src)
                files = sorted(p for p in src.rglob("*") if p.is_file())
                target = files[which % len(files)]
                target.write_bytes(mutate(target.read_bytes(), ops))
                dst = "out.safetensors"
            else:
                src = work / f"s{base.suffix}"
                src.write_bytes(mutate(base.read_bytes(), ops))
                dst = "out.safetensors" if fmt == "npz" else "out.npz"
            check(src, work, dst)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    prop()


def teardown_module():
    shutil.rmtree(_ROOT, ignore_errors=True)
