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


def test_convert_and_one_line_errors(tmp_path):
    state = canonical_init(TINY)
    io.write_torch(tmp_path / "a.safetensors", state, "hrm", TINY.to_dict())
    r = run("convert", str(tmp_path / "a.safetensors"), str(tmp_path / "b.orbax"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "b.orbax" / "twinframe.json").is_file()
    del state["q_act_head.bias"]
    io.write_torch(tmp_path / "bad.pt", state, "hrm", TINY.to_dict())
    r = run("convert", str(tmp_path / "bad.pt"), str(tmp_path / "c.npz"))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "q_act_head.bias" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "c.npz").exists()
    r = run("check", "nosuchmodel")
    assert r.returncode == 2 and "unknown model" in r.stderr
