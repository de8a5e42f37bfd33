"""Local isolation sandbox and executor for AltLAS programs (spec altlas.md §5.3).

One fresh interpreter per program::

    [unshare --net --mount --map-root-user --]  python -s -S -B -P _bootstrap.py prog.py ...

* cwd: a fresh ``mkdtemp()`` (mode 0700) holding ``prog.py`` (UTF-8), removed afterwards;
  env = ``{PYTHONHASHSEED: "0", PYTHONIOENCODING: "utf-8"}`` only; stdin = DEVNULL;
  ``close_fds``; ``start_new_session=True``; on timeout the whole process group gets SIGKILL.
* limits (set by the bootstrap before anything of the program runs, see ``_bootstrap.py``):
  RLIMIT_CPU ⌈timeout⌉+1 s, RLIMIT_AS 512 MiB, RLIMIT_FSIZE 1 MiB, RLIMIT_NOFILE 32,
  RLIMIT_CORE 0, RLIMIT_NPROC 16 (ignored for root).
* output: stdout and stderr are drained concurrently to EOF (so the child never blocks); the
  first 64 KiB of each are kept, ``truncated`` flags any loss; decoded UTF-8 with
  ``errors="replace"``; stored unstripped.
* in-process guard (bootstrap): allow-listed imports, restricted builtins and an audit hook that
  raises ``SandboxViolation`` (reported as ``exc_class``) on writes, opens outside the temp dir,
  sockets, subprocesses, ``os.system``/``exec``/``fork``/``posix_spawn``, ``ctypes`` and imports
  of modules not already loaded. Fork bombs are contained by that hook (``os.fork`` and friends
  raise before any process is created; ``subprocess``/``multiprocessing`` cannot be imported)
  plus the process-group kill; RLIMIT_NPROC does not bind root.
* network/file system: when ``unshare --net --mount --map-root-user`` works (probed once per
  process and cached), the child has no network interfaces and the bootstrap remounts ``/``
  recursively read-only inside its private mount namespace, so the kernel refuses every write
  even if the in-process guard were bypassed. Otherwise the audit hook is the only barrier
  (logged once).

Deviations from the §5.3 table and choices made where the spec is silent:

* Limits are applied by the bootstrap as its first action, not in a ``preexec_fn``: the
  executor launches from threads (``preexec_fn`` is documented as not thread-safe) and a
  ``preexec_fn`` forces a full ``fork`` of the (large) trainer instead of ``vfork``.
* The audit hook *allow-lists* events (pure computation passes; everything else, not only the
  events the spec lists, is a violation), and before arming it the bootstrap replaces the
  unaudited dangerous ``posix``/``os`` callables (``mkfifo``, ``write``, ``kill``, ...) and the
  ``_imp`` module factories (which could re-create a pristine ``posix``) by stubs raising
  ``SandboxViolation``.
* ``unshare`` also gets ``--mount`` (for the read-only root); no PID namespace, so exit codes and
  signals reach the parent unchanged.
* Besides the allow-list, the bootstrap pre-loads modules that the allow-listed ones import lazily
  (``heapq``, ``copy``, ``types``, ``weakref``, ``warnings``, ``unicodedata``, ``ast``); the
  program still cannot import them itself.
* The exception class travels on a pipe passed with ``pass_fds``; the fd number, the host mount
  namespace id and the limits are extra bootstrap arguments after ``prog.py``.
* Tracebacks name the program file ``prog.py`` (not the random temp path), so stderr is
  deterministic for a given program.
* ``runtime`` is wall time from launch to exit (interpreter start-up included).
* A ``SystemExit`` leaves ``exc_class`` null and uses its exit status, as plain ``python`` does.
* After the child exits its process group is killed too (stragglers), using a pidfd where
  available so that the group id cannot have been reused.
* The executor's cache key is the SHA-256 of the UTF-8 code; the timeout and limits are fixed per
  :class:`Executor`, so they are not part of the key. ``run_many`` de-duplicates a batch before
  launching and runs the distinct programs on a thread pool (threads only wait on children).
"""

from __future__ import annotations

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
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = [
    "BOOTSTRAP_PATH",
    "OUTPUT_CAP",
    "SANDBOX_VIOLATION",
    "ExecutionResult",
    "Executor",
    "Result",
    "SandboxLimits",
    "Status",
    "code_sha256",
    "namespace_isolation_available",
    "run_program",
]

logger = logging.getLogger(__name__)

Status = Literal["success", "error", "timeout"]
Isolation = Literal["auto", "namespaces", "none"]

BOOTSTRAP_PATH = str(Path(__file__).with_name("_bootstrap.py").resolve())
OUTPUT_CAP = 64 * 1024
SANDBOX_VIOLATION = "SandboxViolation"
CHILD_ENV = {"PYTHONHASHSEED": "0", "PYTHONIOENCODING": "utf-8"}
PYTHON_FLAGS = ("-s", "-S", "-B", "-P")
UNSHARE_ARGS = ("--net", "--mount", "--map-root-user", "--")
_EXC_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
_READ_CHUNK = 65536
_GRACE_S = 1.0  # after exit/kill: how long to keep draining pipes held open by stragglers

_probe_lock = threading.Lock()
_probe_result: tuple[str, ...] | None = None
_probe_done = False


@dataclass(frozen=True)
class ExecutionResult:
    """Outcome of one sandboxed run (§5.3)."""

    status: Status
    stdout: str
    stderr: str
    exit_code: int
    runtime: float
    exc_class: str | None
    truncated: bool

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


# --------------------------------------------------------------------------------------------
# Namespace probe
# --------------------------------------------------------------------------------------------


def _host_mount_ns() -> str:
    try:
        return os.readlink("/proc/self/ns/mnt")
    except OSError:
        return "-"


def _probe_unshare() -> tuple[str, ...] | None:
    """Command prefix that isolates network + mounts, or ``None`` if it does not work here."""
    exe = shutil.which("unshare")
    if exe is None or not sys.platform.startswith("linux"):
        return None
    prefix = (exe, *UNSHARE_ARGS)
    try:
        proc = subprocess.run(
            [*prefix, sys.executable, "-S", "-c", "pass"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
            env=CHILD_ENV,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        logger.debug("unshare probe failed: %s", proc.stderr.decode(errors="replace").strip())
        return None
    return prefix


def namespace_isolation_available() -> bool:
    """Whether ``unshare --net --mount --map-root-user`` works (probed once, cached)."""
    return _namespace_prefix() is not None


def _namespace_prefix() -> tuple[str, ...] | None:
    global _probe_result, _probe_done
    with _probe_lock:
        if not _probe_done:
            _probe_result = _probe_unshare()
            _probe_done = True
            if _probe_result is None:
                logger.warning(
                    "unshare --net --mount --map-root-user unavailable: sandbox runs without "
                    "network/mount isolation (audit-hook guard only)"
                )
        return _probe_result


# --------------------------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------------------------


class _Capture:
    """Bounded buffer for one pipe."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.chunks: list[bytes] = []
        self.size = 0
        self.truncated = False

    def feed(self, data: bytes) -> None:
        room = self.cap - self.size
        if room > 0:
            keep = data[:room]
            self.chunks.append(keep)
            self.size += len(keep)
        if len(data) > max(room, 0):
            self.truncated = True

    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8", errors="replace")


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _open_pidfd(pid: int) -> int | None:
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return opener(pid)
    except OSError:
        return None


def _drain(
    proc: subprocess.Popen[bytes],
    report_fd: int,
    deadline: float,
    cap: int,
) -> tuple[_Capture, _Capture, bytes, bool]:
    """Read stdout/stderr/report until EOF and exit, or until ``deadline`` (then kill)."""
    assert proc.stdout is not None and proc.stderr is not None
    out, err, report = _Capture(cap), _Capture(cap), _Capture(4096)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, out)
    sel.register(proc.stderr, selectors.EVENT_READ, err)
    sel.register(report_fd, selectors.EVENT_READ, report)
    pidfd = _open_pidfd(proc.pid)
    if pidfd is not None:
        sel.register(pidfd, selectors.EVENT_READ, None)
    timed_out = exited = False
    try:
        while len(sel.get_map()) > 0:
            now = time.monotonic()
            if not exited and now >= deadline:
                timed_out = True
                _kill_group(proc.pid)
                exited, deadline = True, now + _GRACE_S
                continue
            if exited and now >= deadline:
                break  # pipes still held open after the kill: give up on them
            for key, _ in sel.select(timeout=max(0.0, deadline - now)):
                if key.data is None:  # pidfd readable: child exited (not yet reaped)
                    sel.unregister(key.fileobj)
                    _kill_group(proc.pid)  # stragglers; the zombie keeps the pgid reserved
                    exited, deadline = True, min(deadline, time.monotonic() + _GRACE_S)
                    continue
                fd = key.fileobj if isinstance(key.fileobj, int) else key.fileobj.fileno()
                data = os.read(fd, _READ_CHUNK)
                if data:
                    key.data.feed(data)
                else:
                    sel.unregister(key.fileobj)
    finally:
        sel.close()
        if pidfd is not None:
            os.close(pidfd)
    return out, err, b"".join(report.chunks), timed_out


def _wait(proc: subprocess.Popen[bytes], deadline: float) -> tuple[int, bool]:
    """Reap the child; kill the group if it outlives ``deadline``. Returns (code, timed_out)."""
    try:
        return proc.wait(timeout=max(0.0, deadline - time.monotonic())), False
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        return proc.wait(), True


def _parse_report(raw: bytes) -> str | None:
    lines = [ln.strip() for ln in raw.decode("utf-8", errors="replace").splitlines()]
    names = [ln for ln in lines if ln]
    if names and _EXC_NAME.match(names[-1]):
        return names[-1]
    return None


def _command(prog: str, report_w: int, limits: SandboxLimits, isolation: Isolation) -> list[str]:
    prefix: tuple[str, ...] = ()
    host_ns = "-"
    if isolation != "none":
        found = _namespace_prefix()
        if found is None and isolation == "namespaces":
            raise RuntimeError("namespace isolation requested but unshare is not usable here")
        if found is not None:
            prefix, host_ns = found, _host_mount_ns()
    return [
        *prefix,
        sys.executable,
        *PYTHON_FLAGS,
        BOOTSTRAP_PATH,
        prog,
        str(report_w),
        host_ns,
        limits.bootstrap_arg(),
    ]


def run_program(
    code: str,
    timeout: float | None = None,
    *,
    limits: SandboxLimits | None = None,
    isolation: Isolation = "auto",
) -> ExecutionResult:
    """Execute ``code`` once in a fresh sandboxed interpreter and return its result."""
    if limits is None:
        limits = SandboxLimits() if timeout is None else SandboxLimits(timeout=float(timeout))
    elif timeout is not None:
        raise ValueError("pass either timeout or limits, not both")
    tmp = os.path.realpath(tempfile.mkdtemp(prefix="altlas-sbx-"))
    report_r, report_w = os.pipe()
    try:
        prog = os.path.join(tmp, "prog.py")
        with open(prog, "wb") as fh:
            fh.write(code.encode("utf-8", errors="replace"))
        cmd = _command(prog, report_w, limits, isolation)
        start = time.monotonic()
        try:
            proc = _spawn(cmd, tmp, report_w)
        finally:
            os.close(report_w)  # the child holds the only write end now
        return _supervise(proc, report_r, start, limits)
    finally:
        os.close(report_r)
        shutil.rmtree(tmp, ignore_errors=True)


def _spawn(cmd: list[str], cwd: str, report_w: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=CHILD_ENV,
        close_fds=True,
        pass_fds=(report_w,),
        start_new_session=True,
    )


def _supervise(
    proc: subprocess.Popen[bytes], report_r: int, start: float, limits: SandboxLimits
) -> ExecutionResult:
    """Drain, wait, kill on timeout; never leaves the child running."""
    deadline = start + limits.timeout
    try:
        out, err, report, timed_out = _drain(proc, report_r, deadline, limits.output_cap)
        wait_until = time.monotonic() + _GRACE_S if timed_out else deadline
        code, late = _wait(proc, wait_until)
    except BaseException:
        _kill_group(proc.pid)
        proc.wait()
        raise
    finally:
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    runtime = time.monotonic() - start
    timed_out = timed_out or late
    status: Status = "timeout" if timed_out else ("success" if code == 0 else "error")
    result = ExecutionResult(
        status=status,
        stdout=out.text(),
        stderr=err.text(),
        exit_code=-1 if timed_out else code,
        runtime=runtime,
        exc_class=None if timed_out else _parse_report(report),
        truncated=out.truncated or err.truncated,
    )
    logger.debug("sandbox: %s exit=%s %.3fs", status, result.exit_code, runtime)
    return result


# --------------------------------------------------------------------------------------------
# Executor
# --------------------------------------------------------------------------------------------


class Executor:
    """Runs programs in the sandbox with a per-run result cache and an optional thread pool."""

    def __init__(
        self,
        timeout: float | None = None,
        *,
        workers: int | None = None,
        cache: bool = True,
        limits: SandboxLimits | None = None,
        isolation: Isolation = "auto",
    ) -> None:
        if limits is not None and timeout is not None:
            raise ValueError("pass either timeout or limits, not both")
        if limits is None:
            limits = SandboxLimits() if timeout is None else SandboxLimits(timeout=float(timeout))
        self.limits = limits
        self.workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
        self.cache_enabled = cache
        self.isolation: Isolation = isolation
        self._cache: dict[str, ExecutionResult] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self.hits = 0
        self.misses = 0

    @property
    def timeout(self) -> float:
        """Wall-clock limit per program (``Executor.Timeout``)."""
        return self.limits.timeout

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
        result = run_program(code, limits=self.limits, isolation=self.isolation)
        self._store(key, result)
        return result

    def run_many(self, codes: Sequence[str]) -> list[ExecutionResult]:
        """Execute a batch; distinct uncached programs run concurrently on ``workers`` threads."""
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
        if todo:
            if self.workers == 1 or len(todo) == 1:
                results = [self.run(code) for code in todo.values()]
            else:
                results = list(self._get_pool().map(self._run_uncached, todo.values()))
            for key, result in zip(todo, results, strict=True):
                done[key] = result
        return [done[key] for key in keys]

    def _run_uncached(self, code: str) -> ExecutionResult:
        result = run_program(code, limits=self.limits, isolation=self.isolation)
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
        """Shut the worker pool down."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
