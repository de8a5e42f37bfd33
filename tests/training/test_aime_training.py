"""AIME-core training (micro, the session's one compiled step): host records with the declared
progress fields, resume across frameworks through disk, EMA/RGB state carried, PNGs of
reconstructions and of a rollout strip."""

from __future__ import annotations

import numpy as np
import pytest

from twinframe import registry
from twinframe.models.aime import schedule
from twinframe.training import aime as tr_aime
from twinframe.training.loop import train


@pytest.fixture(scope="module")
def micro():
    from twinframe.parity import checks

    checks.configure_jax_for_parity()
    spec = registry.get("aime")
    return spec, spec.config("micro"), spec.run_config("micro")


def test_schedules():
    run = registry.get("aime").run_config("micro")
    assert schedule.beta_at(0, run) == pytest.approx(0.5019713, abs=1e-7)
    assert schedule.beta_at(5 * 30, run) == 1.0
    assert schedule.lr_at(1000, 2e-4, run) == 2e-4
    assert schedule.lr_at(1001, 2e-4, run) < 2e-4
    assert schedule.lr_at(2000, 2e-4, run) == pytest.approx(run.lr_eta_min + (2e-4 - 1e-7) * 1.0,
                                                            rel=1e-9)


def test_train_resume_in_the_other_framework_and_artifacts(micro, tmp_path, monkeypatch):
    spec, cfg, run = micro
    tr, recs = train(spec, cfg, run, "jax", 3, tmp_path / "ck", show_progress=False)
    assert [r["step"] for r in recs] == [1, 2, 3]
    for f in spec.progress:
        assert f.render(recs[-1]) is not None
    assert recs[1]["alpha"] != [0.0, 0.0, 0.0]  # step 2 is an RGB balancing step
    carry = tr.engine.export_carry()
    assert int(carry["ema_n"]) == 3 and int(carry["rgb_count"]) == 3
    state = spec.layout(cfg).table.tree_to_torch(tr.engine.export_state()["model"])
    pictures = spec.visualize(cfg, run, state)
    assert len(pictures) == 1 and next(iter(pictures.values()))[:8] == b"\x89PNG\r\n\x1a\n"
    tr.close()
    tr2, recs2 = train(spec, cfg, run, "torch", 2, tmp_path / "ck", resume=tmp_path / "ck",
                       show_progress=False)
    assert [r["step"] for r in recs2] == [4, 5]
    c2 = tr2.engine.export_carry()
    assert int(c2["ema_n"]) == 5 and int(c2["rgb_count"]) == 5
    assert np.isfinite(recs2[-1]["loss"])
    monkeypatch.chdir(tmp_path)
    text = tr_aime.infer(cfg, run, tr2.engine.export_state()["model"], "eval", 0)
    assert "rollout" in text and (tmp_path / "aime_rollout_eval0.png").is_file()
    tr2.close()


def test_one_whole_step_compilation_per_config():
    """Every AIME JAX engine of the session shares one jitted whole step per (config, optimiser
    key), compiled once (a whole step takes 1.5-2 min to compile on 2 cores, aime.md §9)."""
    from twinframe.training.aime import _STEPS

    assert all(step._cache_size() <= 1 for step in _STEPS.values())
    cfgs = [k[1] for k in _STEPS]
    assert len(cfgs) == len(set(cfgs)), "two optimiser keys for one config"
