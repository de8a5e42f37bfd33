"""OS-level sandbox and executor for AltLAS programs (spec altlas.md §5.3).

The programs are arbitrary Python written by a learning agent, so containment comes from the
operating system, never from the interpreter: each program runs in a fresh bubblewrap (``bwrap``)
sandbox::

    bwrap <namespaces> <read-only file system> --seccomp FD -- [setpriv -> uid 65534] \\
        python -s -S -B -P -c <_bootstrap.py> LIMITS          (cwd /tmp, prog.py in it)

* identity: uid/gid 65534 with no supplementary groups, no capabilities and no-new-privileges.
  When the trainer is root, bwrap runs privileged and the trusted ``setpriv`` drops to the real,
  unmapped host uid 65534 (no user namespace); otherwise a user namespace maps 65534 to the
  trainer's own (non-root) uid. See :mod:`._bwrap`.
* namespaces: fresh PID, mount, network (loopback only, down), IPC, UTS and cgroup namespaces.
  bwrap's init is PID 1 of the sandbox; when the program's main process ends, or when the parent
  kills that init, the kernel kills every process left in the namespace before the init can be
  reaped, so nothing of a program survives :func:`run_program` (``--die-with-parent`` covers a
  dying trainer). ``--new-session`` detaches the program from any terminal.
* file system: a read-only view of ``/usr``, the top-level ``/bin``/``/lib*`` links and the Python
  installation (its site-packages hidden), a minimal ``/dev``, and a private 16 MiB tmpfs at
  ``/tmp`` (mode 1777) holding ``prog.py``; nothing of ``/etc``, ``/root``, ``/home``, ``/work``,
  no ``/proc``, and no host temp dir: the program is passed in a memfd (``--file``).
* seccomp: a deny-list compiled by libseccomp (:mod:`._seccomp`): ptrace, mount family,
  namespaces, kexec, modules, bpf, perf, keyrings, io_uring, raw/packet/netlink sockets, ...
* limits (set by the bootstrap before the program runs, kernel-enforced): RLIMIT_CPU
  ⌈timeout⌉+1 s, RLIMIT_AS 512 MiB, RLIMIT_FSIZE 1 MiB, RLIMIT_NOFILE 32, RLIMIT_NPROC 16,
  RLIMIT_CORE 0; plus the parent's wall-clock timeout.

The outcome is decided by the parent from what it observes, never from anything the program can
write: the exit status bwrap reports, whether the wall-clock deadline passed, and the captured
output. There is no report channel; inside the sandbox only fds 0-2 are open.

No silent degradation: when the sandbox cannot be set up (:func:`sandbox_status` says why),
:class:`Executor` and :func:`run_program` raise :class:`SandboxUnavailable`, unless they are
given ``unsafe_no_sandbox=True``; then programs run directly (same bootstrap and limits, fresh
temp dir, no isolation at all), a warning is logged, and ``Executor.isolation`` /
``ExecutionResult.isolation`` say ``"none"`` instead of ``"bwrap"``.

Choices where the spec (altlas.md §5.3) is silent or no longer applies:

* The in-process guard of altlas.md §5.3 (import allow-list, restricted builtins, audit hook,
  ``SandboxViolation``) is gone: it was bypassable and is not a security boundary. A blocked
  operation now fails with the kernel's error (``PermissionError``, ``FileNotFoundError``,
  ``OSError`` EROFS/ENETUNREACH, ``MemoryError``, ...). The static safety filter
  (:mod:`.safety`) still rejects such programs before they are run during training.
* exit status: bwrap reports a death by signal N as 128+N; exit codes 129..192 are reported as
  ``-N`` (as ``subprocess`` does), so a program calling ``exit(128+N)`` looks like a signal
  death; either way the status is ``error``. Timeout → status ``timeout``, exit_code −1.
* ``exc_class`` is informational only and derived by the parent: for a run that exits 1 it is the
  class name on the last line of a Python traceback at the end of stderr (module prefix dropped),
  else null. A program can print a fake traceback, but it can never turn an error into a success.
* Tracebacks name the program file ``prog.py``; the bootstrap's own frame is removed.
* ``runtime`` is wall time from launch to exit (bwrap and interpreter start-up included); for a
  program the compile checker decided, the time until its answer.
* Outputs: first 64 KiB of stdout and stderr each (``truncated`` flags any loss), decoded UTF-8
  with ``errors="replace"``, unstripped; the last 4 KiB of stderr are kept aside for ``exc_class``.
* The executor's cache key is the SHA-256 of the UTF-8 code; the timeout and limits are fixed per
  :class:`Executor`. ``run_many`` de-duplicates a batch and runs distinct programs concurrently on
  a thread pool (the threads only wait on children), :func:`default_workers` (the usable cores
  + 2) at a time unless told otherwise.
* Every program that is run gets its own bwrap, namespaces, tmpfs and interpreter, started for
  it and gone when the run returns: no pre-started pool, no fork server, no interpreter reuse.
* Programs that do not compile are not run (they would not execute a line anyway): an
  :class:`Executor` sends each batch first to its compile checker, one long-lived sandbox of the
  same layout that only compiles what it is sent (bootstrap mode ``check``) and returns the exact
  stderr a run prints; the result is the one a run would give (every field but ``runtime``, the
  time until the checker's answer; tested against sandboxed runs). No program code runs there.
  :func:`run_program` and ``unsafe_no_sandbox`` executors do not use it.
  Cost (2-core reference machine, CPU of the whole process tree per program): ~19 ms, of which
  the interpreter's start-up ~9, bwrap with this layout ~5, setpriv ~1, the bootstrap and a
  failing program ~3, the parent ~1. The kernel work is CPU-bound, so more concurrency than
  ``default_workers`` does not help; a pool of sandboxes started ahead would only move that CPU
  in time (measured: start-up 16 ms + delivery-to-exit 5 ms, more in total than a cold run), so
  it pays only on machines with idle cores (see ``docs/performance.md``, AltLAS).
* Shared across concurrent sandboxes: the host uid 65534 (``setpriv`` layout), so RLIMIT_NPROC
  (16) counts the processes of every sandbox running at that moment: a program holding 14
  children makes a concurrent program's ``fork`` (or thread creation) fail with EAGAIN
  (verified); nothing else crosses, and nothing outlives a run. The programs AltLAS trains on
  cannot fork (the safety filter rejects imports).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from twinframe.errors import TwinframeError

from . import _bwrap, _seccomp

__all__ = [
    "BOOTSTRAP_PATH",
    "OUTPUT_CAP",
    "ExecutionResult",
    "Executor",
    "Isolation",
    "Result",
    "SandboxLimits",
    "SandboxUnavailable",
    "Status",
    "code_sha256",
    "default_workers",
    "exc_class_from_stderr",
    "run_program",
    "sandbox_status",
]

logger = logging.getLogger(__name__)

Status = Literal["success", "error", "timeout"]
Isolation = Literal["bwrap", "none"]

BOOTSTRAP_PATH = str(Path(__file__).with_name("_bootstrap.py").resolve())
OUTPUT_CAP = 64 * 1024
STDERR_TAIL = 4096
UNSAFE_FLAG = "--unsafe-no-sandbox"
_READ_CHUNK = 65536
_GRACE_S = 2.0  # after a kill: how long to wait for the sandbox to be gone
_EXC_LINE = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(?::|$)")
_CHILD_PID = re.compile(rb'"child-pid"\s*:\s*(\d+)')


class SandboxUnavailable(TwinframeError):
    """The OS sandbox cannot be set up here (and ``unsafe_no_sandbox`` was not given)."""


@dataclass(frozen=True)
class ExecutionResult:
    """Outcome of one run (altlas.md §5.3), as observed by the parent."""

    status: Status
    stdout: str
    stderr: str
    exit_code: int
    runtime: float
    exc_class: str | None
    truncated: bool
    isolation: Isolation = "bwrap"

    @property
    def ok(self) -> bool:
        """True for status ``success``."""
        return self.status == "success"


Result = ExecutionResult


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one run; ``timeout`` is the wall-clock limit in seconds."""

    timeout: float = 5.0
    memory_bytes: int = 512 * 2**20
    file_size_bytes: int = 2**20
    open_files: int = 32
    processes: int = 16
    output_cap: int = OUTPUT_CAP

    def __post_init__(self) -> None:
        if not self.timeout > 0:
            raise ValueError(f"timeout must be > 0, got {self.timeout}")
        if self.output_cap < 0:
            raise ValueError("output_cap must be >= 0")

    @property
    def cpu_seconds(self) -> int:
        """RLIMIT_CPU: ⌈timeout⌉ + 1."""
        return math.ceil(self.timeout) + 1

    def bootstrap_arg(self) -> str:
        """``cpu,as,fsize,nofile,nproc,core`` for the bootstrap."""
        values = (
            self.cpu_seconds,
            self.memory_bytes,
            self.file_size_bytes,
            self.open_files,
            self.processes,
            0,
        )
        return ",".join(str(int(v)) for v in values)


def code_sha256(code: str) -> str:
    """Cache key: SHA-256 hex of the UTF-8 code."""
    return hashlib.sha256(code.encode("utf-8", errors="surrogatepass")).hexdigest()


@functools.cache
def _bootstrap_source() -> str:
    return Path(BOOTSTRAP_PATH).read_text(encoding="utf-8")


# --------------------------------------------------------------------------------------------
# Watching one child: drain the pipes, enforce the deadline, know when everything is gone
# --------------------------------------------------------------------------------------------


class _Capture:
    """Bounded head of one pipe, plus a short tail."""

    def __init__(self, cap: int, tail: int = 0) -> None:
        self.cap = cap
        self.chunks: list[bytes] = []
        self.size = 0
        self.truncated = False
        self.tail_cap = tail
        self.tail = b""

    def feed(self, data: bytes) -> None:
        room = self.cap - self.size
        if room > 0:
            keep = data[:room]
            self.chunks.append(keep)
            self.size += len(keep)
        if len(data) > max(room, 0):
            self.truncated = True
        if self.tail_cap:
            self.tail = (self.tail + data)[-self.tail_cap :]

    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8", errors="replace")


class _SandboxInit:
    """pidfd of bwrap's init (PID 1 of the sandbox), learnt from ``--info-fd``.

    Once this process has exited, the kernel has killed and reaped every other process of the
    PID namespace. The pid is only trusted if it is still a child of our bwrap process (so the
    pidfd cannot point at a recycled pid)."""

    def __init__(self, outer_pid: int) -> None:
        self.outer_pid = outer_pid
        self.info = b""
        self.pidfd: int | None = None
        self.resolved = False

    def feed(self, data: bytes) -> None:
        self.info += data
        if self.resolved:
            return
        match = _CHILD_PID.search(self.info)
        if match is not None:
            self.resolved = True
            self.pidfd = _pidfd_of_child(int(match.group(1)), self.outer_pid)

    def kill(self) -> bool:
        """SIGKILL the init (and so the whole sandbox); False if it is not known."""
        if self.pidfd is None:
            return False
        try:
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return True

    def wait_gone(self, timeout: float) -> bool:
        """Wait until the init has exited (the namespace is empty then)."""
        if self.pidfd is None:
            return True
        with selectors.DefaultSelector() as sel:
            sel.register(self.pidfd, selectors.EVENT_READ)
            return bool(sel.select(timeout))

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


def _parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return int(stat.rpartition(b")")[2].split()[1])


def _pidfd_of_child(pid: int, parent: int) -> int | None:
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    if _parent_pid(pid) != parent:
        os.close(fd)
        return None
    return fd


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class _Observed:
    out: _Capture
    err: _Capture
    returncode: int
    timed_out: bool
    runtime: float


def _watch(
    proc: subprocess.Popen[bytes],
    start: float,
    limits: SandboxLimits,
    kill: Callable[[], None],
    info: tuple[int, _SandboxInit] | None = None,
) -> _Observed:
    """Drain stdout/stderr (and the bwrap info pipe) until EOF and exit; kill at the deadline."""
    assert proc.stdout is not None and proc.stderr is not None
    out, err = _Capture(limits.output_cap), _Capture(limits.output_cap, STDERR_TAIL)
    deadline = start + limits.timeout
    killed_at: float | None = None
    exited = False
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, out)
    sel.register(proc.stderr, selectors.EVENT_READ, err)
    if info is not None:
        sel.register(info[0], selectors.EVENT_READ, info[1])
    pidfd = os.pidfd_open(proc.pid)
    sel.register(pidfd, selectors.EVENT_READ, None)
    try:
        while not (exited and not _pipes_open(sel, proc)):
            now = time.monotonic()
            if killed_at is None and now >= deadline:
                kill()
                killed_at = now
            if killed_at is not None and now >= killed_at + _GRACE_S:
                _kill_group(proc.pid)
                break
            until = deadline if killed_at is None else killed_at + _GRACE_S
            for key, _ in sel.select(timeout=max(0.0, until - now)):
                if key.data is None:
                    exited = True
                    sel.unregister(key.fileobj)
                    continue
                fd = key.fileobj if isinstance(key.fileobj, int) else key.fileobj.fileno()
                data = os.read(fd, _READ_CHUNK)
                if data:
                    key.data.feed(data)
                else:
                    sel.unregister(key.fileobj)
    finally:
        sel.close()
        os.close(pidfd)
    returncode = _reap(proc)
    runtime = time.monotonic() - start
    return _Observed(out, err, returncode, killed_at is not None, runtime)


def _pipes_open(sel: selectors.BaseSelector, proc: subprocess.Popen[bytes]) -> bool:
    keys = sel.get_map()
    return any(p in keys for p in (proc.stdout, proc.stderr))


def _reap(proc: subprocess.Popen[bytes]) -> int:
    try:
        return proc.wait(timeout=_GRACE_S)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        return proc.wait()


# --------------------------------------------------------------------------------------------
# Interpreting what was observed
# --------------------------------------------------------------------------------------------


def _exit_code(returncode: int, via_bwrap: bool) -> int:
    """bwrap reports a death by signal N as 128+N: map it back to -N."""
    if via_bwrap and 128 < returncode <= 128 + 64:
        return -(returncode - 128)
    return returncode


def exc_class_from_stderr(tail: str) -> str | None:
    """Class name of a Python traceback that ends ``tail`` (informational), else None."""
    lines = [ln for ln in tail.splitlines() if ln.strip()]
    if not lines:
        return None
    if not any(ln.startswith(("Traceback (most recent call last):", '  File "')) for ln in lines):
        return None
    match = _EXC_LINE.match(lines[-1])
    return match.group(1).rpartition(".")[2] if match else None


def _result(obs: _Observed, isolation: Isolation) -> ExecutionResult:
    code = _exit_code(obs.returncode, isolation == "bwrap")
    if obs.timed_out:
        status: Status = "timeout"
        code = -1
    else:
        status = "success" if code == 0 else "error"
    exc_class = None
    if status == "error" and code == 1:
        exc_class = exc_class_from_stderr(obs.err.tail.decode("utf-8", errors="replace"))
    result = ExecutionResult(
        status=status,
        stdout=obs.out.text(),
        stderr=obs.err.text(),
        exit_code=code,
        runtime=obs.runtime,
        exc_class=exc_class,
        truncated=obs.out.truncated or obs.err.truncated,
        isolation=isolation,
    )
    logger.debug("sandbox: %s exit=%s %.3fs", status, code, obs.runtime)
    return result


# --------------------------------------------------------------------------------------------
# Running one program
# --------------------------------------------------------------------------------------------


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name, 0)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _run_bwrap(code: str, limits: SandboxLimits, layout: _bwrap.Layout) -> ExecutionResult:
    """One run inside a fresh bwrap sandbox."""
    fds: list[int] = []
    info_r, info_w = os.pipe()
    try:
        fds.append(info_w)
        prog_fd = _memfd("altlas-prog", code.encode("utf-8", errors="replace"))
        fds.append(prog_fd)
        seccomp_fd = _memfd("altlas-seccomp", _seccomp.filter_bpf())
        fds.append(seccomp_fd)
        cmd = layout.command(
            prog_fd=prog_fd,
            seccomp_fd=seccomp_fd,
            info_fd=info_w,
            limits=limits.bootstrap_arg(),
            bootstrap=_bootstrap_source(),
        )
        start = time.monotonic()
        proc = _popen(cmd, cwd="/", env={}, pass_fds=tuple(fds))
    except BaseException:
        os.close(info_r)
        raise
    finally:
        for fd in fds:
            os.close(fd)
    init = _SandboxInit(proc.pid)
    try:

        def kill() -> None:
            if not init.kill():
                _kill_group(proc.pid)  # not created yet: --die-with-parent does the rest

        obs = _guarded_watch(proc, start, limits, kill, (info_r, init))
        if not init.wait_gone(_GRACE_S):
            logger.error("sandbox of bwrap pid %s still alive after bwrap exited", proc.pid)
    finally:
        init.close()
        os.close(info_r)
    return _result(obs, "bwrap")


class _CompileChecker:
    """One long-lived sandbox that compiles programs and never runs them (bootstrap ``check``).

    A program that does not compile never executes a line: a run compiles ``prog.py``, prints
    the SyntaxError and exits 1. The checker does that same compile (same interpreter, flags,
    file name, bootstrap function, the sandbox's own stderr formatting) for each program sent to
    it and returns the stderr bytes a run would have written; only programs that compile (or
    whose compile fails otherwise: RecursionError, MemoryError) then get a sandbox of their own.
    No program code runs in the checker, so programs cannot reach one another through it. It
    lives in the same bwrap sandbox as a run (namespaces, read-only file system, seccomp,
    uid 65534, limits); it is killed when the executor closes, when a check passes the
    wall-clock timeout, or when it answers anything unexpected, and then restarted on demand.
    """

    def __init__(self, layout: _bwrap.Layout, limits: SandboxLimits) -> None:
        self.layout = layout
        self.limits = limits
        self.proc: subprocess.Popen[bytes] | None = None
        self.init: _SandboxInit | None = None
        self.info_r: int | None = None
        self.sel: selectors.BaseSelector | None = None
        self.buf = bytearray()
        self.lock = threading.Lock()
        self.decided = 0  # programs whose result the checker gave (they never ran)

    def _start(self) -> None:
        fds: list[int] = []
        info_r, info_w = os.pipe()
        self.info_r = info_r  # open while the checker lives: bwrap dies of SIGPIPE on a closed one
        # no RLIMIT_CPU (it would add up over the checker's life): the wall-clock deadline of
        # each check bounds it instead
        limits = ",".join(["-1", *self.limits.bootstrap_arg().split(",")[1:]])
        try:
            fds = [info_w, _memfd("altlas-prog", b""),
                   _memfd("altlas-seccomp", _seccomp.filter_bpf())]
            cmd = self.layout.command(prog_fd=fds[1], seccomp_fd=fds[2], info_fd=info_w,
                                      limits=limits, bootstrap=_bootstrap_source(),
                                      mode=("check",))
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.DEVNULL, cwd="/", env={},
                                         close_fds=True, pass_fds=tuple(fds),
                                         start_new_session=True)
        finally:
            for fd in fds:
                os.close(fd)
        self.init = _SandboxInit(self.proc.pid)
        assert self.proc.stdout is not None
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.proc.stdout.fileno(), selectors.EVENT_READ)
        deadline = time.monotonic() + self.limits.timeout
        with selectors.DefaultSelector() as sel:
            sel.register(info_r, selectors.EVENT_READ)
            while not self.init.resolved and sel.select(max(0.0, deadline - time.monotonic())):
                data = os.read(info_r, 4096)
                if not data:
                    break
                self.init.feed(data)

    def _read(self, n: int, deadline: float) -> bytes:
        """The next ``n`` bytes of the checker's answers (read ahead into a buffer)."""
        assert self.proc is not None and self.proc.stdout is not None and self.sel is not None
        while len(self.buf) < n:
            if not self.sel.select(max(0.0, deadline - time.monotonic())):
                raise TimeoutError
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                raise EOFError
            self.buf += chunk
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def syntax_errors(self, sources: Sequence[bytes]) -> list[tuple[bytes, float] | None]:
        """For each source: (the stderr a run would print, seconds until the answer) if it
        fails to compile with a SyntaxError, else None (it compiles, compiling fails otherwise,
        or the checker failed: run it). Requests are pipelined in chunks small enough
        (<= 16 KiB, <= 64 programs) that neither pipe can fill while the other side waits."""
        out: list[tuple[bytes, float] | None] = [None] * len(sources)
        with self.lock:
            first = 0
            while first < len(sources):
                last, size = first, 0
                while last < len(sources) and last - first < 64 and (
                        last == first or size + len(sources[last]) <= 16384):
                    size += len(sources[last])
                    last += 1
                if not self._check_chunk(sources, first, last, out):
                    break  # the checker failed: the rest run in sandboxes of their own
                first = last
        return out

    def _check_chunk(self, sources: Sequence[bytes], first: int, last: int,
                     out: list[tuple[bytes, float] | None]) -> bool:
        try:
            if self.proc is None:
                self._start()
            assert self.proc is not None and self.proc.stdin is not None
            start = time.monotonic()
            self.proc.stdin.write(b"".join(len(src).to_bytes(4, "big") + src
                                           for src in sources[first:last]))
            self.proc.stdin.flush()
            deadline = start + self.limits.timeout
            for k in range(first, last):
                tag = self._read(1, deadline)
                if tag == b"E":
                    text = self._read(int.from_bytes(self._read(4, deadline), "big"), deadline)
                    out[k] = (text, time.monotonic() - start)
                    self.decided += 1
                elif tag not in (b"O", b"X"):
                    raise EOFError
            return True
        except (OSError, EOFError, TimeoutError, ValueError) as e:
            logger.warning("sandbox compile checker failed (%s): those programs run instead",
                           type(e).__name__)
            self._stop()
            return False

    def _stop(self) -> None:
        proc, init, self.proc, self.init = self.proc, self.init, None, None
        self.buf.clear()
        if self.sel is not None:
            self.sel.close()
            self.sel = None
        if self.info_r is not None:
            os.close(self.info_r)
            self.info_r = None
        if proc is None:
            return
        if init is None or not init.kill():
            _kill_group(proc.pid)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass
        proc.wait()
        if init is not None:
            init.wait_gone(_GRACE_S)
            init.close()

    def close(self) -> None:
        """Kill the checker's sandbox (nothing of it is left running)."""
        with self.lock:
            self._stop()


def _compile_failures(codes: Sequence[str], checker: _CompileChecker, limits: SandboxLimits
                      ) -> list[ExecutionResult | None]:
    """The results runs of ``codes`` would have, for those that fail to compile (the checker's
    answers); None for the others."""
    answers = checker.syntax_errors([c.encode("utf-8", errors="replace") for c in codes])
    results: list[ExecutionResult | None] = []
    for answer in answers:
        if answer is None:
            results.append(None)
            continue
        out, err = _Capture(limits.output_cap), _Capture(limits.output_cap, STDERR_TAIL)
        err.feed(answer[0])
        results.append(_result(_Observed(out, err, 1, False, answer[1]), "bwrap"))
    return results


def _run_unsandboxed(code: str, limits: SandboxLimits) -> ExecutionResult:
    """One run with NO isolation (``unsafe_no_sandbox``): same bootstrap and limits."""
    tmp = os.path.realpath(tempfile.mkdtemp(prefix="altlas-unsafe-"))
    try:
        Path(tmp, "prog.py").write_bytes(code.encode("utf-8", errors="replace"))
        cmd = [
            sys.executable,
            *_bwrap.PYTHON_FLAGS,
            "-c",
            _bootstrap_source(),
            limits.bootstrap_arg(),
        ]
        start = time.monotonic()
        proc = _popen(cmd, cwd=tmp, env=dict(_bwrap.CHILD_ENV), pass_fds=())
        obs = _guarded_watch(proc, start, limits, lambda: _kill_group(proc.pid))
        _kill_group(proc.pid)  # stragglers of the process group (best effort only)
        return _result(obs, "none")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _popen(
    cmd: list[str], *, cwd: str, env: dict[str, str], pass_fds: tuple[int, ...]
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=env,
        close_fds=True,
        pass_fds=pass_fds,
        start_new_session=True,
    )


def _guarded_watch(
    proc: subprocess.Popen[bytes],
    start: float,
    limits: SandboxLimits,
    kill: Callable[[], None],
    info: tuple[int, _SandboxInit] | None = None,
) -> _Observed:
    """:func:`_watch`, killing the child if the parent is interrupted."""
    try:
        return _watch(proc, start, limits, kill, info)
    except BaseException:
        kill()
        _kill_group(proc.pid)
        proc.wait()
        raise
    finally:
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


# --------------------------------------------------------------------------------------------
# Availability
# --------------------------------------------------------------------------------------------

_probe_lock = threading.Lock()
_probe: tuple[_bwrap.Layout | None, str | None] | None = None
_PROBE_CODE = "import os\nprint(os.getuid(), os.getgid(), os.getgroups())\n"


def _probe_layout(layout: _bwrap.Layout) -> str | None:
    """Run a tiny program in ``layout``; None if it ran as expected, else why not."""
    result = _run_bwrap(_PROBE_CODE, SandboxLimits(timeout=20.0), layout)
    expected = f"{_bwrap.SANDBOX_UID} {_bwrap.SANDBOX_GID} []"
    if result.status == "success" and result.stdout.strip() == expected:
        return None
    lines = (result.stderr.strip() or result.stdout.strip() or result.status).splitlines()
    return f"bwrap ({layout.uid_mode}) failed: {lines[-1][:200]}"


def _find_layout() -> tuple[_bwrap.Layout | None, str | None]:
    layouts = _bwrap.candidate_layouts()
    if isinstance(layouts, str):
        return None, layouts
    try:
        _seccomp.filter_bpf()
    except (_seccomp.SeccompUnavailable, OSError) as exc:
        return None, f"cannot build the seccomp filter: {exc}"
    reasons = []
    for layout in layouts:
        try:
            reason = _probe_layout(layout)
        except OSError as exc:  # e.g. no pidfd_open (Linux < 5.3)
            reason = f"bwrap ({layout.uid_mode}) could not be supervised: {exc}"
        if reason is None:
            logger.debug("sandbox: bwrap with uid switch by %s", layout.uid_mode)
            return layout, None
        reasons.append(reason)
    return None, "; ".join(reasons)


def _layout(refresh: bool = False) -> tuple[_bwrap.Layout | None, str | None]:
    global _probe
    with _probe_lock:
        if _probe is None or refresh:
            _probe = _find_layout()
            if _probe[1] is not None:
                logger.warning("AltLAS sandbox unavailable: %s", _probe[1])
        return _probe


def sandbox_status(refresh: bool = False) -> str | None:
    """None when full isolation works here, else a one-line reason (probed once, cached)."""
    return _layout(refresh)[1]


def _require_layout() -> _bwrap.Layout:
    layout, reason = _layout()
    if layout is None:
        raise SandboxUnavailable(
            f"AltLAS sandbox unavailable: {reason}; {UNSAFE_FLAG} runs programs without "
            "isolation (unsafe)"
        )
    return layout


_warned_unsafe = threading.Event()


def _warn_unsafe(once: bool = False) -> None:
    if once and _warned_unsafe.is_set():
        return
    _warned_unsafe.set()
    logger.warning(
        "AltLAS programs run WITHOUT a sandbox (unsafe_no_sandbox): generated code has the "
        "trainer's privileges"
    )


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def _limits_of(timeout: float | None, limits: SandboxLimits | None) -> SandboxLimits:
    if limits is not None and timeout is not None:
        raise ValueError("pass either timeout or limits, not both")
    if limits is not None:
        return limits
    return SandboxLimits() if timeout is None else SandboxLimits(timeout=float(timeout))


def run_program(
    code: str,
    timeout: float | None = None,
    *,
    limits: SandboxLimits | None = None,
    unsafe_no_sandbox: bool = False,
) -> ExecutionResult:
    """Execute ``code`` once in a fresh sandbox and return what the parent observed.

    Raises :class:`SandboxUnavailable` when the sandbox cannot be set up, unless
    ``unsafe_no_sandbox`` (then the program runs without isolation)."""
    limits = _limits_of(timeout, limits)
    if unsafe_no_sandbox:
        _warn_unsafe(once=True)
        return _run_unsandboxed(code, limits)
    return _run_bwrap(code, limits, _require_layout())


def default_workers() -> int:
    """Sandboxes in flight by default: the usable CPU cores + 2.

    A sandbox's start-up is CPU-bound (bwrap, setpriv and interpreter start-up, ~19 ms of CPU
    per program on the reference 2-core machine) but also waits off the CPU now and then; two
    more than the cores keep the cores busy through those waits (2 cores: 12.1 -> 10.8 ms of
    wall time per program, docs/performance.md)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, cores) + 2


class Executor:
    """Runs programs in the sandbox with a per-run result cache and a thread pool.

    ``isolation`` is ``"bwrap"``, or ``"none"`` when built with ``unsafe_no_sandbox=True``."""

    def __init__(
        self,
        timeout: float | None = None,
        *,
        workers: int | None = None,
        cache: bool = True,
        limits: SandboxLimits | None = None,
        unsafe_no_sandbox: bool = False,
        compile_check: bool = True,
    ) -> None:
        self.limits = _limits_of(timeout, limits)
        self.workers = max(1, workers if workers is not None else default_workers())
        self.cache_enabled = cache
        self._layout: _bwrap.Layout | None = None
        if unsafe_no_sandbox:
            _warn_unsafe()
        else:
            self._layout = _require_layout()
        self.isolation: Isolation = "none" if unsafe_no_sandbox else "bwrap"
        self._cache: dict[str, ExecutionResult] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._checker = (_CompileChecker(self._layout, self.limits)
                         if self._layout is not None and compile_check else None)
        self.hits = 0
        self.misses = 0

    @property
    def timeout(self) -> float:
        """Wall-clock limit per program (``Executor.Timeout``)."""
        return self.limits.timeout

    def _execute(self, code: str) -> ExecutionResult:
        if self._layout is None:
            return _run_unsandboxed(code, self.limits)
        return _run_bwrap(code, self.limits, self._layout)

    def _compile_failures(self, codes: Sequence[str]) -> list[ExecutionResult | None]:
        if self._checker is None:
            return [None] * len(codes)
        return _compile_failures(codes, self._checker, self.limits)

    def _cached(self, key: str) -> ExecutionResult | None:
        with self._lock:
            hit = self._cache.get(key) if self.cache_enabled else None
            if hit is not None:
                self.hits += 1
            return hit

    def _store(self, key: str, result: ExecutionResult) -> None:
        with self._lock:
            self.misses += 1
            if self.cache_enabled:
                self._cache[key] = result

    def run(self, code: str) -> ExecutionResult:
        """Execute one program (cached by SHA-256 of the code)."""
        key = code_sha256(code)
        hit = self._cached(key)
        if hit is not None:
            return hit
        return self.run_many([code])[0]

    def run_many(self, codes: Sequence[str]) -> list[ExecutionResult]:
        """Execute a batch: distinct uncached programs that fail to compile are decided by the
        compile checker (one pipelined exchange), the others run concurrently on ``workers``
        threads, each in a sandbox of its own."""
        keys = [code_sha256(c) for c in codes]
        todo: dict[str, str] = {}
        done: dict[str, ExecutionResult] = {}
        for key, code in zip(keys, codes, strict=True):
            if key in done or key in todo:
                continue
            hit = self._cached(key)
            if hit is not None:
                done[key] = hit
            else:
                todo[key] = code
        for key, failed in zip(list(todo), self._compile_failures(list(todo.values())),
                               strict=True):
            if failed is not None:  # decided by the compile checker: nothing to run
                self._store(key, failed)
                done[key] = failed
                del todo[key]
        if todo:
            if self.workers == 1 or len(todo) == 1:
                results = [self._run_uncached(code) for code in todo.values()]
            else:
                results = list(self._get_pool().map(self._run_uncached, todo.values()))
            done.update(zip(todo, results, strict=True))
        return [done[key] for key in keys]

    def _run_uncached(self, code: str) -> ExecutionResult:
        result = self._execute(code)
        self._store(code_sha256(code), result)
        return result

    def _get_pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="altlas-sbx")
            return self._pool

    def cache_size(self) -> int:
        """Number of cached results."""
        with self._lock:
            return len(self._cache)

    def clear_cache(self) -> None:
        """Drop every cached result."""
        with self._lock:
            self._cache.clear()

    def close(self) -> None:
        """Shut the worker pool and the compile checker down."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        if self._checker is not None:
            self._checker.close()

    def __del__(self) -> None:  # an executor dropped unclosed leaves no checker sandbox behind
        checker = getattr(self, "_checker", None)
        if checker is not None:
            checker.close()

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
