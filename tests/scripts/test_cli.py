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
