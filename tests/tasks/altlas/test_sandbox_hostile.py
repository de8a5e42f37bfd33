"""Hostile AltLAS programs: every escape of the issue plus the old hostile set, each contained.

Each program *attempts* an attack and, where it can tell, asserts that the attack worked, so a
contained attack ends with a clear, expected outcome (status + exception class). Containment is
then verified from OUTSIDE the sandbox, after ``run_program`` returned:

* no marker file in the repository, the host /tmp, the Python installation, /root, /, /usr, ...;
* no host process carries the run's marker, no new uid-65534 process is left;
* the test process (the "trainer") got no signal and a sibling process it owns is alive;
* host loopback / abstract-socket listeners saw no connection;
* stdout/stderr hold none of: /etc/passwd, a secret file of the test, project source, /root names.

The programs run in the default layout (as chosen by the probe: ``setpriv`` when the trainer is
root) and a subset also in the user-namespace layout. These tests need bubblewrap: they fail
(not skip) where it is missing (CI installs it). The session prints ``hostile programs: N``.
"""

from __future__ import annotations

import ast
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from twinframe.tasks.altlas import _bwrap, _seccomp, sandbox
from twinframe.tasks.altlas.sandbox import OUTPUT_CAP, ExecutionResult, SandboxLimits

REPO = Path(__file__).resolve().parents[3]
SLACK_S = 3.0
SANDBOX_UID = _bwrap.SANDBOX_UID
PREFIX = os.path.realpath(sys.base_prefix)
_SEEN: set[str] = set()
_RUNS: list[int] = [0]


@pytest.fixture(autouse=True, scope="module")
def _report_count(request: pytest.FixtureRequest) -> Iterator[None]:
    reason = sandbox.sandbox_status()
    assert reason is None, f"the OS sandbox must work here (CI installs bubblewrap): {reason}"
    yield
    line = f"hostile programs: {len(_SEEN)} ({_RUNS[0]} sandboxed runs, verified from outside)"
    plugins = request.config.pluginmanager
    reporter, capture = plugins.getplugin("terminalreporter"), plugins.getplugin("capturemanager")
    if reporter is None or capture is None:
        print(line)
        return
    with capture.global_and_fixture_disabled():
        reporter.write("\n" + line + "\n")


# ------------------------------------------------------------------------------------------
# the host side: things a hostile program must not reach
# ------------------------------------------------------------------------------------------


@dataclass
class Host:
    """Canaries on the host and the outside checks run after every hostile program."""

    marker: str
    probe: Path
    canary: Path
    secret: str
    sibling: subprocess.Popen[bytes]
    tcp: socket.socket
    abstract: socket.socket
    abstract_name: str
    signals: list[int] = field(default_factory=list)
    nobody_before: set[int] = field(default_factory=set)

    def tokens(self) -> dict[str, str]:
        """Placeholders of the hostile programs -> Python literals."""
        return {
            "@PROBE@": repr(str(self.probe)),
            "@CANARY@": repr(str(self.canary)),
            "@MARKER@": repr(self.marker),
            "@TRAINER@": str(os.getpid()),
            "@SIBLING@": str(self.sibling.pid),
            "@PORT@": str(self.tcp.getsockname()[1]),
            "@ABSTRACT@": repr("\0" + self.abstract_name),
            "@PREFIX@": repr(PREFIX),
            "@SOURCE@": repr(str(REPO / "twinframe" / "errors.py")),
        }

    def marker_paths(self) -> list[Path]:
        roots = [Path("/tmp"), Path(PREFIX), Path(PREFIX) / "lib", Path("/root"), Path("/"),
                 Path("/usr"), Path("/dev/shm"), REPO, self.canary.parent]  # fmt: skip
        return [self.probe, *(r / self.marker for r in roots)]

    def secrets(self) -> list[str]:
        found = [self.secret, "Exceptions the CLI turns into one-line messages"]
        if Path("/etc/passwd").exists():
            found.append(Path("/etc/passwd").read_text().splitlines()[0])
        hidden = [n for n in os.listdir("/root") if n != ".pyenv" and len(n) >= 4]
        return found + [repr(n) for n in hidden]


def marked_processes(marker: str) -> list[int]:
    """Host pids whose command line contains ``marker``."""
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{name}/cmdline").read_bytes():
                    pids.append(int(name))
            except OSError:
                continue
    return pids


def nobody_processes() -> set[int]:
    """Host pids running as the sandbox uid."""
    pids = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid == SANDBOX_UID:
                    pids.add(int(name))
            except OSError:
                continue
    return pids


def status_fields(pid: int) -> dict[str, str]:
    """``/proc/PID/status`` of a host process, read from outside the sandbox."""
    text = Path(f"/proc/{pid}/status").read_text()
    return {k: v.strip() for k, _, v in (ln.partition(":") for ln in text.splitlines())}


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    canary = tmp_path_factory.mktemp("canary") / "secret.txt"
    secret = f"secret-{uuid.uuid4().hex}"
    canary.write_text(secret)
    sibling = subprocess.Popen(["sleep", "600"])
    tcp = socket.create_server(("127.0.0.1", 0))
    tcp.setblocking(False)
    abstract = socket.socket(socket.AF_UNIX)
    name = f"altlas-test-{uuid.uuid4().hex}"
    abstract.bind("\0" + name)
    abstract.listen()
    abstract.setblocking(False)
    state = Host(
        marker=f"m{uuid.uuid4().hex}", probe=REPO / f"sandbox_escape_probe_{uuid.uuid4().hex}",
        canary=canary, secret=secret, sibling=sibling, tcp=tcp, abstract=abstract,
        abstract_name=name, nobody_before=nobody_processes(),
    )  # fmt: skip
    caught = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, lambda num, _f: state.signals.append(num)) for s in caught}
    try:
        yield state
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        sibling.kill()
        sibling.wait()
        tcp.close()
        abstract.close()


def assert_contained(host: Host, result: ExecutionResult) -> None:
    """The outside checks."""
    for path in host.marker_paths():
        assert not path.exists(), f"sandboxed program created {path}"
    assert marked_processes(host.marker) == [], "a sandboxed process survived"
    assert nobody_processes() - host.nobody_before == set(), "a uid-65534 process survived"
    assert host.sibling.poll() is None, "the trainer's sibling process was killed"
    assert host.signals == [], f"the trainer received signals {host.signals}"
    for listener in (host.tcp, host.abstract):
        with pytest.raises(BlockingIOError):
            listener.accept()
    leaked = [s for s in host.secrets() if s in result.stdout or s in result.stderr]
    assert leaked == [], f"host data leaked into the output: {leaked}"
    if result.status == "success":
        assert result.exc_class is None


# ------------------------------------------------------------------------------------------
# the programs
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hostile:
    """One hostile program and the outcome that shows it was contained."""

    name: str
    code: str
    status: str
    exc_class: str | None = None
    timeout: float = 3.0
    userns: bool = False  # also run in the user-namespace layout
    stderr: str = ""  # must appear in stderr
    exit_code: int | None = None


CTYPES = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def check(rc):
    if rc == -1:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return rc
"""

FIND_CLASS = """
def find_class(name):
    seen, todo = set(), [().__class__.__bases__[0]]
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        if cls.__name__ == name:
            return cls
        try:
            todo.extend(cls.__subclasses__())
        except TypeError:
            todo.extend(cls.__subclasses__(cls))
    raise LookupError(name)
"""

SLEEPER = (
    "[sys.executable, '-S', '-c', 'import signal, time; "
    "[signal.signal(s, signal.SIG_IGN) for s in (1, 2, 15)]; time.sleep(60)', @MARKER@]"
)

# Frame/traceback walk to the bootstrap's globals (the old audit-hook escape), then use
# whatever it finds to read host files.
FRAME_WALK = """
import sys
found = {}
try:
    1 / 0
except ZeroDivisionError as exc:
    frame = exc.__traceback__.tb_frame
while frame is not None:
    found.update(frame.f_globals)
    frame = frame.f_back
real_open = found['__builtins__'].open if hasattr(found['__builtins__'], 'open') else open
print(sorted(k for k in found if not k.startswith('__')))
for path in ('/etc/passwd', @SOURCE@, @CANARY@, '/root/.bashrc'):
    print(real_open(path).read())
"""

DENIED_SYSCALLS = ("keyctl", "io_uring_setup", "bpf", "perf_event_open", "userfaultfd",
                   "kexec_load", "init_module", "reboot", "swapon", "setns", "pivot_root",
                   "open_by_handle_at", "mount_setattr", "umount2", "add_key")  # fmt: skip


def _syscall_numbers() -> dict[str, int]:
    lib = _seccomp._load_libseccomp()
    names = ("kill", "clone", "clone3", *DENIED_SYSCALLS)
    return {n: lib.seccomp_syscall_resolve_name(n.encode()) for n in names}


NR = _syscall_numbers()

HOSTILE: list[Hostile] = [
    # --- runaway programs (old set) ---------------------------------------------------------
    Hostile("infinite loop", "while True :\n    pass", "timeout", timeout=1.0),
    # resource hogs get a generous wall timeout: on a loaded 2-core machine filling 512 MiB or
    # the process table takes seconds, and the limit (not the clock) must be what stops them
    Hostile("memory hog", "x = []\nwhile True :\n    x.append(bytearray(1 << 24))", "error",
            "MemoryError", timeout=15.0, userns=True),
    Hostile("one huge allocation", "x = bytearray(1 << 30)", "error", "MemoryError",
            timeout=15.0),
    Hostile("fork bomb", "import os\nwhile True:\n    os.fork()", "error", "BlockingIOError",
            timeout=15.0),
    Hostile("multiprocessing child outlives main", "import multiprocessing, time\n"
            "multiprocessing.Process(target=time.sleep, args=(60,)).start()", "timeout",
            timeout=1.0),
    Hostile("huge output", "while True :\n    print ( 'x' * 10000 )", "timeout", timeout=1.0),
    Hostile("closes its pipes and spins", "import sys\nsys.stdout.close()\nsys.stderr.close()\n"
            "while 1:\n    pass", "timeout", timeout=1.0),
    Hostile("fills its tmpfs", "for i in range(100):\n"
            "    open(f'/tmp/f{i}', 'wb').write(b'x' * (1 << 20))", "error", "OSError",
            stderr="No space left on device"),
    Hostile("file over RLIMIT_FSIZE", "open('/tmp/big', 'wb').write(b'x' * (2 << 20))", "error",
            "OSError", stderr="File too large"),
    # --- process creation / execution (old set, OS-level effect) -----------------------------
    Hostile("subprocess touches the repo", "import subprocess\n"
            "subprocess.run(['sh', '-c', 'touch ' + @PROBE@], check=True)", "error",
            "CalledProcessError"),
    Hostile("posix_spawn touches the repo", "import os\n"
            "pid = os.posix_spawn('/bin/sh', ['sh', '-c', 'touch ' + @PROBE@], {})\n"
            "assert os.waitpid(pid, 0)[1] == 0", "error", "AssertionError"),
    Hostile("execv sh touches the repo", "import os\n"
            "os.execv('/bin/sh', ['sh', '-c', 'touch ' + @PROBE@])", "error", exit_code=1),
    Hostile("os.system touches the repo", "import os\nassert os.system('touch ' + @PROBE@) == 0",
            "error", "AssertionError"),
    Hostile("subprocess via builtins.__import__", "import random\n"
            "random.__builtins__['__import__']('subprocess')"
            ".run(['sh', '-c', 'touch ' + @PROBE@], check=True)", "error", "CalledProcessError"),
    Hostile("fork loop via sys.modules['posix']", "import random\nwhile True:\n"
            "    random._os.sys.modules['posix'].fork()", "error", "BlockingIOError"),
    Hostile("segfaults the interpreter", "import ctypes\nctypes.string_at(0)", "error",
            exit_code=-11, userns=True),
    Hostile("setuid-root mount binary", "import os\n"
            "os.execv('/usr/bin/mount', ['mount', '-t', 'tmpfs', 'none', '/tmp'])", "error",
            exit_code=32, stderr="must be superuser"),
    Hostile("setuid(0)", "import os\nos.setuid(0)", "error", "PermissionError"),
    # --- signals: the trainer, its children, the sandbox's init -------------------------------
    Hostile("kills the trainer by pid", "import os, signal\nos.kill(@TRAINER@, signal.SIGUSR1)",
            "error", "ProcessLookupError", userns=True),
    Hostile("kills the trainer's sibling", "import os\nos.kill(@SIBLING@, 9)", "error",
            "ProcessLookupError"),
    Hostile("raw kill syscall to the trainer", CTYPES +
            f"check(libc.syscall({NR['kill']}, @TRAINER@, 15))", "error", "ProcessLookupError"),
    Hostile("kill(-1, SIGKILL)", "import os\nos.kill(-1, 9)", "error", "ProcessLookupError",
            userns=True),
    Hostile("kills its parent (the sandbox init)", "import os\nos.kill(os.getppid(), 9)",
            "error", "PermissionError"),
    # --- writes to the host (old set, 9 ways) ------------------------------------------------
    Hostile("open() for writing", "open(@PROBE@, 'w').write('x')", "error", "FileNotFoundError",
            userns=True),
    Hostile("open() via random.__builtins__", "import random\n"
            "random.__builtins__['open'](@PROBE@, 'w').write('x')", "error", "FileNotFoundError"),
    Hostile("os.open O_CREAT", "import os\nos.open(@PROBE@, 65)", "error", "FileNotFoundError"),
    Hostile("mkfifo", "import os\nos.mkfifo(@PROBE@)", "error", "FileNotFoundError"),
    Hostile("symlink", "import os\nos.symlink('/etc/passwd', @PROBE@)", "error",
            "FileNotFoundError"),
    Hostile("FileIO via subclass walk", FIND_CLASS +
            "find_class('FileIO')(@PROBE@, 'w').write(b'x')", "error", "FileNotFoundError"),
    Hostile("os.system via subclass walk", "import os\n" + FIND_CLASS +
            "assert find_class('_wrap_close').__init__.__globals__['system']"
            "('touch ' + @PROBE@) == 0", "error", "AssertionError"),
    Hostile("fresh posix module via BuiltinImporter", FIND_CLASS +
            "from_spec = find_class('BuiltinImporter').create_module\n"
            "spec = find_class('ModuleSpec')('posix', None)\nfrom_spec(spec).mkfifo(@PROBE@)",
            "error", "FileNotFoundError"),
    Hostile("writes everywhere it can see", "import os\nwrote = []\n"
            "for d in ('/', '/usr', '/dev', '/dev/shm', '/root', @PREFIX@, @PREFIX@ + '/lib'):\n"
            "    try:\n        open(os.path.join(d, @MARKER@), 'w').close()\n"
            "        wrote.append(d)\n    except OSError as exc:\n"
            "        assert exc.errno == 30, (d, exc)\n"
            "assert wrote, 'every directory is read-only'", "error", "AssertionError",
            userns=True, stderr="every directory is read-only"),
    Hostile("writes its private /tmp only", "open('/tmp/' + @MARKER@, 'w').write('x')\n"
            "print('wrote')", "success", userns=True),
    # --- reads of the host (old set + issue: traceback walk, os.stat, home, source) ----------
    Hostile("reads /etc/passwd", "print(open('/etc/passwd').read())", "error",
            "FileNotFoundError", userns=True),
    Hostile("reads /etc/passwd relatively", "print(open('../' * 12 + 'etc/passwd').read())",
            "error", "FileNotFoundError"),
    Hostile("reads the test's secret file", "print(open(@CANARY@).read())", "error",
            "FileNotFoundError"),
    Hostile("reads the project source", "print(open(@SOURCE@).read())", "error",
            "FileNotFoundError"),
    Hostile("walks frames to the bootstrap's builtins", FRAME_WALK, "error",
            "FileNotFoundError"),
    Hostile("lists home directories", "import os\nprint(os.listdir('/root'))\n"
            "print(os.listdir('/home'))", "error", "FileNotFoundError"),
    Hostile("os.stat of host paths", "import os\nfound = []\n"
            "for p in ('/etc/passwd', '/etc', '/home', '/work', '/var', '/run', '/sys', '/proc/1',"
            " @CANARY@, @SOURCE@, '/root/.bashrc'):\n"
            "    try:\n        os.stat(p)\n        found.append(p)\n"
            "    except FileNotFoundError:\n        pass\n"
            "assert found, 'no host path is visible'", "error", "AssertionError", userns=True,
            stderr="no host path is visible"),
    # --- network -----------------------------------------------------------------------------
    Hostile("TCP to a host loopback listener", "import socket\n"
            "socket.create_connection(('127.0.0.1', @PORT@), timeout=1)", "error",
            "ConnectionRefusedError", userns=True),
    Hostile("abstract unix socket of the host", "import socket\n"
            "s = socket.socket(socket.AF_UNIX)\ns.connect(@ABSTRACT@)", "error",
            "ConnectionRefusedError", userns=True),
    Hostile("raw ICMP socket", "import socket\n"
            "socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)", "error",
            "PermissionError"),
    Hostile("packet socket", "import socket\nsocket.socket(socket.AF_PACKET, socket.SOCK_RAW)",
            "error", "PermissionError"),
    Hostile("netlink socket", "import socket\n"
            "socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)", "error", "PermissionError"),
    # --- raw syscalls through ctypes (issue: _ctypes stayed reachable) ------------------------
    Hostile("remount / read-write", CTYPES +
            "check(libc.mount(None, b'/', None, 32 | 4096, None))", "error", "PermissionError",
            userns=True),
    Hostile("clear read-only with mount_setattr", CTYPES +
            "attr = bytes(8) + (1).to_bytes(8, 'little') + bytes(16)  # attr_clr = RDONLY\n"
            f"check(libc.syscall({NR['mount_setattr']}, -100, b'/', 0x8000, attr, 32))",
            "error", "PermissionError"),
    Hostile("new user + mount namespace", CTYPES + "check(libc.unshare(0x10000000 | 0x20000))",
            "error", "PermissionError", userns=True),
    Hostile("clone into a new user namespace", CTYPES +
            f"check(libc.syscall({NR['clone']}, 0x10000000 | 17, 0, 0, 0, 0))", "error",
            "PermissionError"),
    Hostile("clone3", CTYPES + f"check(libc.syscall({NR['clone3']}, 0, 0))", "error", "OSError",
            stderr="Function not implemented"),
    Hostile("ptrace(TRACEME)", CTYPES + "check(libc.ptrace(0, 0, 0, 0))", "error",
            "PermissionError", userns=True),
    Hostile("ptrace(ATTACH) to the init", CTYPES + "check(libc.ptrace(16, 1, 0, 0))", "error",
            "PermissionError"),
    Hostile("denied syscalls", CTYPES + f"numbers = {({n: NR[n] for n in DENIED_SYSCALLS})!r}\n"
            "errs = {}\nfor name, nr in numbers.items():\n"
            "    rc = libc.syscall(nr, 0, 0, 0, 0, 0)\n"
            "    errs[name] = 0 if rc != -1 else ctypes.get_errno()\n"
            "assert all(e == 1 for e in errs.values()), errs\n"
            "raise PermissionError('all denied with EPERM')", "error", "PermissionError",
            userns=True, stderr="all denied with EPERM"),
    # --- the report channel (issue: exception class of the program's choosing) ---------------
    Hostile("writes a fake exception to every fd", "import os\nopen_fds = []\n"
            "for fd in range(1024):\n    try:\n        os.fstat(fd)\n"
            "        open_fds.append(fd)\n    except OSError:\n        continue\n"
            "    if fd > 2:\n        os.write(fd, b'ZeroDivisionError\\n')\nprint(open_fds)",
            "success", userns=True),
    Hostile("fake traceback, exit 0", "import sys\nsys.stderr.write('Traceback (most recent "
            "call last):\\n  File \"prog.py\", line 1\\nZeroDivisionError: x\\n')", "success"),
    # --- process tree (issue: fork + setsid + closed pipes outlived run_program) --------------
    Hostile("forked daemon outlives its parent", "import os, sys\nif os.fork() == 0:\n"
            "    os.setsid()\n    [os.close(fd) for fd in (0, 1, 2)]\n    if os.fork() == 0:\n"
            f"        os.execv(sys.executable, {SLEEPER})\n    os._exit(0)\n", "success",
            userns=True),
    Hostile("forked daemon, parent spins with closed pipes", "import os, sys\n"
            "if os.fork() == 0:\n    os.setsid()\n"
            f"    os.execv(sys.executable, {SLEEPER})\n"
            "os.close(1)\nos.close(2)\nwhile True:\n    pass", "timeout", timeout=1.0),
]  # fmt: skip


def _layouts() -> dict[str, _bwrap.Layout]:
    found = sandbox._layout()[0]
    assert found is not None
    return {"default": found, "userns": _bwrap.userns_layout(found.bwrap)}


CASES = [(h, "default") for h in HOSTILE] + [(h, "userns") for h in HOSTILE if h.userns]


def run_hostile(
    host: Host, code: str, timeout: float, layout: str
) -> tuple[ExecutionResult, float]:
    for token, value in host.tokens().items():
        code = code.replace(token, value)
    start = time.monotonic()
    if layout == "default":
        result = sandbox.run_program(code, timeout=timeout)
    else:
        result = sandbox._run_bwrap(code, SandboxLimits(timeout=timeout), _layouts()[layout])
    wall = time.monotonic() - start
    _RUNS[0] += 1
    assert wall < timeout + SLACK_S, f"trainer blocked for {wall:.1f}s"
    return result, wall


@pytest.mark.parametrize(
    ("hostile", "layout"), CASES, ids=[f"{layout}:{h.name}" for h, layout in CASES]
)
def test_hostile_program_is_contained(host: Host, hostile: Hostile, layout: str) -> None:
    result, _ = run_hostile(host, hostile.code, hostile.timeout, layout)
    _SEEN.add(hostile.name)
    outcome = (result.status, result.exc_class)
    assert outcome == (hostile.status, hostile.exc_class), result
    assert hostile.stderr in result.stderr, result
    if hostile.exit_code is not None:
        assert result.exit_code == hostile.exit_code, result
    if result.status == "timeout":
        assert result.exit_code == -1
    assert_contained(host, result)


def test_specific_observations(host: Host) -> None:
    """Details of some outcomes above: truncation, visible fds, private /tmp."""
    huge = next(h for h in HOSTILE if h.name == "huge output")
    r, wall = run_hostile(host, huge.code, 1.0, "default")
    assert r.truncated and len(r.stdout) == OUTPUT_CAP and 1.0 <= wall < 1.0 + SLACK_S
    fds = next(h for h in HOSTILE if h.name.startswith("writes a fake exception"))
    r, _ = run_hostile(host, fds.code, 3.0, "default")
    assert r.stdout == "[0, 1, 2]\n"  # no report pipe, no leaked fd
    r, _ = run_hostile(host, "import os\nprint(os.listdir('/root'))", 3.0, "default")
    assert r.stdout.strip() in ("[]", "['.pyenv']")  # only the interpreter's ancestors
    assert_contained(host, r)
    r, _ = run_hostile(host, "import os\nprint(sorted(os.listdir('/')))", 3.0, "default")
    visible = set(ast.literal_eval(r.stdout))
    allowed = {"bin", "dev", "lib", "lib32", "lib64", "libx32", "root", "sbin", "tmp", "usr"}
    assert visible <= allowed, visible


def _run_in_thread(host: Host, code: str, timeout: float) -> tuple[threading.Thread, list]:
    out: list = []
    thread = threading.Thread(
        target=lambda: out.append(run_hostile(host, code, timeout, "default"))
    )
    thread.start()
    return thread, out


def test_daemon_is_unprivileged_seen_from_outside_and_gone_after(host: Host) -> None:
    """The issue's fork + setsid + closed pipes escape, watched from the host while it runs."""
    _SEEN.add("daemon watched from the host")
    code = (
        "import os, sys, time\nif os.fork() == 0:\n    os.setsid()\n"
        "    [os.close(fd) for fd in (0, 1, 2)]\n"
        f"    os.execv(sys.executable, {SLEEPER})\ntime.sleep(1.0)\n"
    )
    thread, out = _run_in_thread(host, code, 5.0)
    seen: dict[str, str] = {}
    deadline = time.monotonic() + 5
    while not seen and thread.is_alive() and time.monotonic() < deadline:
        for pid in marked_processes(host.marker):
            try:
                seen = status_fields(pid)
            except OSError:
                continue
        time.sleep(0.01)
    thread.join()
    result, _ = out[0]
    assert seen, "the daemon never started (test is not meaningful)"
    assert seen["NoNewPrivs"] == "1" and seen["Seccomp"] == "2"
    assert seen["CapEff"] == seen["CapPrm"] == "0000000000000000"
    if sandbox._layout()[0].uid_mode == "setpriv":  # type: ignore[union-attr]
        assert seen["Uid"].split() == [str(SANDBOX_UID)] * 4
        assert seen["Gid"].split() == [str(SANDBOX_UID)] * 4
        assert seen["Groups"] == "" and seen["CapBnd"] == "0000000000000000"
    assert (result.status, result.exc_class) == ("success", None)
    assert_contained(host, result)


def test_sandbox_dies_with_the_trainer(host: Host, tmp_path: Path) -> None:
    """A trainer killed by SIGKILL mid-run takes its sandbox down (--die-with-parent)."""
    _SEEN.add("sleeper whose trainer is killed")
    code = f"import os, sys\nos.execv(sys.executable, {SLEEPER})"
    for token, value in host.tokens().items():
        code = code.replace(token, value)
    script = tmp_path / "trainer.py"
    script.write_text(
        "import sys\nfrom twinframe.tasks.altlas.sandbox import run_program\n"
        f"run_program({code!r}, timeout=60)\n"
    )
    trainer = subprocess.Popen([sys.executable, str(script)], cwd=REPO)
    try:
        deadline = time.monotonic() + 20
        while not marked_processes(host.marker):
            assert time.monotonic() < deadline and trainer.poll() is None, "sandbox never started"
            time.sleep(0.02)
    finally:
        trainer.kill()
        trainer.wait()
    deadline = time.monotonic() + 3
    while marked_processes(host.marker) and time.monotonic() < deadline:
        time.sleep(0.02)
    empty = ExecutionResult(
        status="error",
        stdout="",
        stderr="",
        exit_code=1,
        runtime=0.0,
        exc_class=None,
        truncated=False,
    )
    assert_contained(host, empty)
