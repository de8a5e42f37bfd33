"""The hostile-file corpus (`hostile_corpus.py`), run in process through `twinframe.cli.main`:
every malformed or hostile input ends in one clean line and exit 2 with nothing changed; the
cases that must work do."""

import collections
import importlib.util
import os
import signal
import sys
from pathlib import Path

import pytest

from twinframe import cli


def _load_corpus():
    path = Path(__file__).with_name("hostile_corpus.py")
    spec = importlib.util.spec_from_file_location("twinframe_hostile_corpus", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


corpus = _load_corpus()
CASES = corpus.CASES


@pytest.fixture(scope="session")
def base(tmp_path_factory):
    return corpus.build_base(tmp_path_factory.mktemp("base"))


def run_cli(argv, capsys, timeout=60):
    def alarm(signum, frame):
        raise TimeoutError("case hung")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(timeout)
    try:
        rc = cli.main(argv)
    except SystemExit as e:
        rc = e.code
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("case", CASES, ids=[f"{c.cls}:{c.name}" for c in CASES])
def test_case(case, base, tmp_path, monkeypatch, capsys):
    if case.needs_unprivileged and os.geteuid() == 0:
        pytest.skip("root ignores directory permissions")
    root = tmp_path / "case"
    work, argv = corpus.prepare(case, root, base)
    monkeypatch.setenv("HOME", str(root / "home"))
    monkeypatch.chdir(work)
    before = corpus.snapshot(root)
    rc, _, err = run_cli(argv, capsys)
    verdict, detail = corpus.judge(case, root, before, rc, err)
    assert verdict == "correct", f"{verdict}: {detail}"
    if case.expect == "error":
        assert "internal error" not in err
        # the message names the file (the source, or the destination when that is refused)
        assert any(Path(a).name[:40] in err or a in err for a in argv[1:3]), err


def test_corpus_size(capsys):
    by_class = collections.Counter(c.cls for c in CASES)
    hostile = sum(c.expect == "error" for c in CASES)
    with capsys.disabled():
        print(f"\nhostile file corpus: {len(CASES)} cases ({hostile} hostile, "
              f"{len(CASES) - hostile} that must work): "
              + ", ".join(f"{k} {n}" for k, n in sorted(by_class.items())))
    assert hostile >= 60
    assert set(by_class) == {"destination", "safetensors", "pt", "npz", "orbax"}
