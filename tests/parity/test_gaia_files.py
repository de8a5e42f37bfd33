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
