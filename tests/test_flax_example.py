"""The README's Flax NNX example (`docs/examples/flax_nnx.py`) runs as written: a public-layout
HRM-ACT checkpoint -> NNX module -> one nnx.Optimizer step -> orbax save -> nnx.merge restore.
Where the README shows the example, its text must be the file's."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from safetensors.numpy import save_file

from twinframe import registry

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "flax_nnx.py"


def test_example_runs(tmp_path, monkeypatch):
    spec = registry.get("hrm")
    cfg = spec.config("tiny")
    initial = spec.canonical_init(cfg, 0)
    save_file(initial, str(tmp_path / "hrm_act.safetensors"))  # public layout: no metadata
    monkeypatch.chdir(tmp_path)
    ns = runpy.run_path(str(EXAMPLE), run_name="__main__")
    model, restored = ns["model"], ns["restored"]
    assert np.isfinite(float(ns["loss"])) and int(ns["optimizer"].step[...]) == 1
    assert ns["halted"].shape == (ns["B"],)
    trained = spec.layout(cfg).table.tree_to_torch(jax.device_get(model.tree()))
    assert any(not np.array_equal(trained[k], initial[k]) for k in spec.layout(cfg)
               .trainable_keys())
    a = jax.tree.leaves(nnx.to_pure_dict(nnx.state(model)))
    b = jax.tree.leaves(nnx.to_pure_dict(nnx.state(restored)))
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_readme_shows_the_example_verbatim():
    readme = (ROOT / "README.md").read_text()
    text = EXAMPLE.read_text()
    first = text.splitlines()[0]
    blocks = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if b.startswith(first)]
    for block in blocks:  # the README may not show it yet; where it does, it is this file
        assert block == text
