"""CLI smoke tests through the real entry point."""

import subprocess
import sys

from twinframe.models.hrm import TINY, canonical_init
from twinframe.store import io


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "twinframe.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def test_check_prints_table_and_exits_zero():
    r = run("check", "hrm", "--levels", "L0,L6")
    assert r.returncode == 0, r.stderr
    assert "max_abs" in r.stdout and "rms_norm" in r.stdout and "FAIL" not in r.stdout
    assert "passed" in r.stdout.splitlines()[-1]


def test_convert_and_one_line_errors(tmp_path, capsys):
    """In process (no interpreter start per call): convert, then one-line errors."""
    from twinframe import cli

    state = canonical_init(TINY)
    io.write_torch(tmp_path / "a.safetensors", state, "hrm", TINY.to_dict())
    assert cli.main(["convert", str(tmp_path / "a.safetensors"), str(tmp_path / "b.orbax")]) == 0
    assert (tmp_path / "b.orbax" / "twinframe.json").is_file()
    del state["q_act_head.bias"]
    io.write_torch(tmp_path / "bad.pt", state, "hrm", TINY.to_dict())
    capsys.readouterr()
    assert cli.main(["convert", str(tmp_path / "bad.pt"), str(tmp_path / "c.npz")]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "q_act_head.bias" in err
    assert "Traceback" not in err and not (tmp_path / "c.npz").exists()
    assert cli.main(["inspect", str(tmp_path / "b.orbax")]) == 0
    assert "hrm (preset tiny, metadata)" in capsys.readouterr().out
    assert cli.main(["check", "nosuchmodel"]) == 2
    assert "unknown model" in capsys.readouterr().err


def test_entry_point_reports_file_errors_in_one_line(tmp_path):
    (tmp_path / "x.safetensors").mkdir()
    r = run("convert", "x.safetensors", "o.npz", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "is a directory" in r.stderr


def test_aime_train_resume_other_framework_infer_in_process(tmp_path, capsys, monkeypatch):
    """AIME (micro) through the CLI in process, so the JAX step is the session's one compiled
    whole step: train 2 torch steps (progress bar with each task loss, beta, steps/s; the
    reconstruction PNG next to the checkpoints), resume 1 step in JAX from the torch checkpoint,
    then `infer` writes the rollout strip."""
    from twinframe import cli

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    assert cli.main(["train", "aime", "--config", "micro", "--steps", "2", "--framework", "torch",
                     "--out", str(out)]) == 0
    o, err = capsys.readouterr()
    assert "aime/torch: step 2" in o and (out / "aime-step2.png").read_bytes()[:4] == b"\x89PNG"
    bar = err.replace("\r", "\n").strip().splitlines()[-1]
    assert all(f in bar for f in ("elbo", "perc", "pred", "beta", "step/s")), bar
    assert cli.main(["train", "aime", "--config", "micro", "--steps", "1", "--framework", "jax",
                     "--out", str(out), "--resume", str(out), "--no-progress"]) == 0
    assert "aime/jax: step 3" in capsys.readouterr().out
    assert cli.main(["infer", "aime", str(out), "--subset", "eval", "--index", "1"]) == 0
    o = capsys.readouterr().out
    assert "wrote aime_rollout_eval1.png" in o and "prediction PSNR" in o
    assert (tmp_path / "aime_rollout_eval1.png").is_file()


def test_aime_state_dict_converts_without_flags(tmp_path, capsys):
    """A bare reference-layout AIME state dict (micro) is recognised by its keys and shapes."""
    from safetensors.torch import save_file

    from twinframe import cli, registry

    spec = registry.get("aime")
    state = spec.canonical_init(spec.config("micro"), 0)
    save_file({k: torch_tensor(v) for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    assert cli.main(["convert", str(tmp_path / "w.safetensors"), str(tmp_path / "w.npz")]) == 0
    assert "aime (micro, recognised)" in capsys.readouterr().out
    back, _ = io.read_torch(tmp_path / "w.safetensors")
    tree, meta = io.read_jax(tmp_path / "w.npz")
    assert meta["model"] == "aime"
    assert spec.layout(spec.config("micro")).table.tree_to_torch(tree).keys() == back.keys()


def test_aime_reference_checkpoint_with_excluded_parts(tmp_path, capsys):
    """The reference's training checkpoint ({'epoch', 'model_state_dict', 'config', ...}, aime.md
    §3.2) whose state_dict also holds the discriminator and LPIPS: converted without flags, the
    excluded parts left out (noted); back to torch it is the core state_dict, bit for bit."""
    import numpy as np
    import torch

    from twinframe import cli, registry

    spec = registry.get("aime")
    state = spec.canonical_init(spec.config("micro"), 0)
    sd = {k: torch_tensor(v) for k, v in state.items()}
    extra = {"image_discriminator.net.0.weight": torch.ones(2, 3),
             "perceiver_model.model.lpips_loss.net.0.bias": torch.zeros(4)}
    ckpt = {"epoch": 3, "model_state_dict": {**sd, **extra}, "config": {"lr": 2e-4},
            "metrics_history": {"loss": [1.0, 0.5]}, "best_eval_loss": 0.5}
    torch.save(ckpt, tmp_path / "ai.pt")
    assert cli.main(["convert", str(tmp_path / "ai.pt"), str(tmp_path / "w.npz")]) == 0
    o = capsys.readouterr().out
    assert "aime (micro, recognised)" in o and "2 keys of parts the model excludes" in o
    assert "'epoch'" in o and "'best_eval_loss'" in o
    assert cli.main(["convert", str(tmp_path / "w.npz"), str(tmp_path / "back.safetensors")]) == 0
    back, _ = io.read_torch(tmp_path / "back.safetensors")
    assert back.keys() == state.keys()
    assert all(np.array_equal(back[k], state[k]) for k in state)
    # a key under the excluded prefixes of another model is not silently dropped
    torch.save({"model_state_dict": {**sd, "image_discriminator.x": torch.ones(1)}},
               tmp_path / "ai2.pt")
    assert cli.main(["convert", str(tmp_path / "ai2.pt"), str(tmp_path / "w2.npz"),
                     "--model", "hrm"]) == 2
    assert not (tmp_path / "w2.npz").exists()


def torch_tensor(x):
    import numpy as np
    import torch

    return torch.from_numpy(np.array(x))
