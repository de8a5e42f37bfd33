"""Sandbox availability: status, no silent degradation, ``unsafe_no_sandbox``, seccomp, layout."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator

import pytest

from twinframe.errors import TwinframeError
from twinframe.tasks.altlas import _bwrap, _seccomp, sandbox
from twinframe.tasks.altlas.sandbox import (
    Executor,
    SandboxUnavailable,
    run_program,
    sandbox_status,
)


@pytest.fixture
def reprobe(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Undo the test's patches, then re-probe, after a test that breaks the environment."""
    yield
    monkeypatch.undo()
    assert sandbox_status(refresh=True) is None


def test_sandbox_works_here() -> None:
    reason = sandbox_status()
    assert reason is None, f"the OS sandbox must work here (CI installs bubblewrap): {reason}"
    assert sandbox_status() is None  # cached


def _assert_unavailable(expected: str) -> None:
    reason = sandbox_status(refresh=True)
    assert reason is not None and expected in reason and "\n" not in reason
    with pytest.raises(SandboxUnavailable) as info:
        Executor(timeout=1.0)
    message = str(info.value)
    assert isinstance(info.value, TwinframeError)
    assert expected in message and "--unsafe-no-sandbox" in message and "\n" not in message
    with pytest.raises(SandboxUnavailable):
        run_program("print(1)")


def test_missing_bwrap_raises(monkeypatch: pytest.MonkeyPatch, reprobe: None) -> None:
    monkeypatch.setattr(_bwrap, "_find_bwrap", lambda: None)
    _assert_unavailable("bwrap not found (install the Debian package 'bubblewrap')")


def test_failing_bwrap_raises(monkeypatch: pytest.MonkeyPatch, reprobe: None) -> None:
    """E.g. user namespaces forbidden: bwrap exits with an error before running anything."""
    monkeypatch.setattr(_bwrap, "_find_bwrap", lambda: "/bin/false")
    _assert_unavailable("failed")


def test_missing_libseccomp_raises(monkeypatch: pytest.MonkeyPatch, reprobe: None) -> None:
    def broken() -> bytes:
        raise _seccomp.SeccompUnavailable("libseccomp not found (test)")

    monkeypatch.setattr(_seccomp, "filter_bpf", broken)
    _assert_unavailable("cannot build the seccomp filter: libseccomp not found (test)")


def test_unsafe_no_sandbox_runs_unisolated_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, reprobe: None
) -> None:
    monkeypatch.setattr(_bwrap, "_find_bwrap", lambda: None)
    assert sandbox_status(refresh=True) is not None
    with caplog.at_level(logging.WARNING, logger=sandbox.__name__):
        with Executor(timeout=5.0, unsafe_no_sandbox=True) as ex:
            assert ex.isolation == "none"
            r = ex.run("import os\nprint(8, os.getcwd().startswith('/tmp'))")
    assert any("WITHOUT a sandbox" in rec.getMessage() for rec in caplog.records)
    assert (r.status, r.stdout, r.isolation) == ("success", "8 True\n", "none")
    r = run_program("print ( var_a )", unsafe_no_sandbox=True)
    assert (r.status, r.exc_class, r.isolation) == ("error", "NameError", "none")
    r = run_program("while True:\n    pass", timeout=0.5, unsafe_no_sandbox=True)
    assert (r.status, r.exit_code) == ("timeout", -1)


def test_no_isolation_parameter_any_more() -> None:
    with pytest.raises(TypeError):
        run_program("pass", isolation="none")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Executor(isolation="none")  # type: ignore[call-arg]


def test_seccomp_filter_is_built_by_libseccomp_and_cached() -> None:
    bpf = _seccomp.filter_bpf()
    assert bpf is _seccomp.filter_bpf()
    assert len(bpf) % 8 == 0 and len(bpf) // 8 > len(_seccomp.DENIED_SYSCALLS)
    lib = _seccomp._load_libseccomp()
    names = _seccomp.DENIED_SYSCALLS
    unknown = [n for n in names if lib.seccomp_syscall_resolve_name(n.encode()) < 0]
    assert len(unknown) <= 3, unknown  # per-architecture gaps only (e.g. iopl on arm64)


def test_limits_are_applied_before_the_program_runs() -> None:
    code = (
        "import resource as r\n"
        "print([r.getrlimit(getattr(r, 'RLIMIT_' + n)) for n in "
        "('CPU', 'AS', 'FSIZE', 'NOFILE', 'NPROC', 'CORE')])"
    )
    res = run_program(code, timeout=2.0)
    expected = [(3, 3), (2**29, 2**29), (2**20, 2**20), (32, 32), (16, 16), (0, 0)]
    assert res.stdout.strip() == str(expected), res


def test_command_line_layout() -> None:
    layout = sandbox._layout()[0]
    assert layout is not None
    cmd = layout.command(prog_fd=5, seccomp_fd=6, info_fd=7, limits="1,2,3,4,5,0", bootstrap="x")
    joined = " ".join(cmd)
    for option in ("--die-with-parent", "--new-session", "--unshare-pid", "--unshare-net",
                   "--unshare-ipc", "--unshare-uts", "--clearenv", "--seccomp 6",
                   "--info-fd 7", "--file 5 /tmp/prog.py", "--remount-ro /"):  # fmt: skip
        assert option in joined, option
    sources = [cmd[i + 1] for i, a in enumerate(cmd) if a in ("--bind", "--ro-bind", "--dev-bind")]
    assert "--bind" not in cmd and "--dev-bind" not in cmd  # nothing writable from the host
    allowed = ("/usr", "/bin", "/sbin", "/lib", os.path.realpath(sys.base_prefix))
    for source in sources:
        assert source.startswith(allowed), source
    if layout.uid_mode == "setpriv":
        assert ["--reuid=65534", "--regid=65534", "--clear-groups"] == cmd[
            cmd.index(layout.setpriv) + 1 : cmd.index(layout.setpriv) + 4]  # fmt: skip
        assert "--no-new-privs" in cmd and "--bounding-set=-all" in cmd
    else:
        assert "--unshare-user" in cmd and cmd[cmd.index("--uid") + 1] == "65534"
