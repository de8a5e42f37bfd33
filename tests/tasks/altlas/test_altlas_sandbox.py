"""Sandbox / executor (spec altlas.md §5.3): normal behaviour and containment of hostile code.

Every hostile program must end with a clear outcome (status + exc_class) within the wall-clock
bound, leave no trace on disk, and never take the test (trainer) process down.
"""

from __future__ import annotations

import ast
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from twinframe.tasks.altlas.sandbox import (
    OUTPUT_CAP,
    SANDBOX_VIOLATION,
    ExecutionResult,
    Executor,
    SandboxLimits,
    namespace_isolation_available,
    run_program,
)

REPO = Path(__file__).resolve().parents[3]
SLACK_S = 3.0
ISOLATIONS = ["auto", "none"]

# Finds any class by name among all transitive subclasses of object (the classic escape).
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


def run(code: str, timeout: float = 5.0, isolation: str = "auto") -> tuple[ExecutionResult, float]:
    start = time.monotonic()
    result = run_program(code, timeout=timeout, isolation=isolation)  # type: ignore[arg-type]
    wall = time.monotonic() - start
    assert wall < timeout + SLACK_S, f"trainer blocked for {wall:.1f}s"
    return result, wall


def assert_blocked(result: ExecutionResult, exc_class: str = SANDBOX_VIOLATION) -> None:
    assert result.status == "error", result
    assert result.exc_class == exc_class, result
    assert result.exit_code == 1
    assert exc_class in result.stderr


@pytest.fixture
def probe_path() -> Iterator[Path]:
    """A path inside the repository that hostile programs try to create."""
    path = REPO / f"sandbox_escape_probe_{uuid.uuid4().hex}.txt"
    yield path
    existed = path.exists() or path.is_symlink()
    if existed:
        path.unlink()
    assert not existed, f"sandboxed program created {path}"


# ------------------------------------------------------------------------------------------
# normal programs
# ------------------------------------------------------------------------------------------


def test_success_and_result_fields() -> None:
    r, _ = run("print ( 5 + 3 )")
    assert r == ExecutionResult(
        status="success", stdout="8\n", stderr="", exit_code=0, runtime=r.runtime,
        exc_class=None, truncated=False,
    )  # fmt: skip
    assert 0 < r.runtime < 5 and r.ok


def test_syntax_error_and_runtime_errors() -> None:
    r, _ = run("print ( 5 + 3")
    assert (r.status, r.exc_class, r.exit_code) == ("error", "SyntaxError", 1)
    assert 'File "prog.py", line 1' in r.stderr and "SyntaxError" in r.stderr
    r, _ = run("print ( var_a )")
    assert (r.status, r.exc_class) == ("error", "NameError")
    assert r.stderr.startswith('Traceback (most recent call last):\n  File "prog.py"')
    assert "_bootstrap" not in r.stderr
    r, _ = run("print ( 1 / 0 )")
    assert (r.status, r.exc_class) == ("error", "ZeroDivisionError")
    r, _ = run("print ( 1 )\nraise SystemExit ( 3 )")
    assert (r.status, r.exit_code, r.exc_class, r.stdout) == ("error", 3, None, "1\n")


def test_allowed_modules_and_ordinary_python_work() -> None:
    code = """
import math, random, itertools, functools, collections, string, re, operator
from collections import Counter, namedtuple
P = namedtuple("P", "a b", defaults=[1])
class C:
    pass
C.x = 5
random.seed(3)
print(math.isqrt(17), functools.reduce(operator.add, range(5)), P(2), C.x)
print(Counter("abca").most_common(1), re.sub("a+", "-", "baaac"), string.digits[:3])
print(list(itertools.islice(itertools.count(), 3)), {"b", "a", "c"})
try:
    [][1]
except IndexError as exc:
    print(type(exc).__name__)
"""
    r, _ = run(code)
    assert r.status == "success", r.stderr
    first = r.stdout
    assert first.splitlines()[0] == "4 10 P(a=2, b=1) 5"
    assert first.splitlines()[-1] == "IndexError"
    r2, _ = run(code)
    assert r2.stdout == first  # PYTHONHASHSEED=0: set printing is deterministic


def test_minimal_env_and_temp_dir_removed() -> None:
    r, _ = run("import random\nprint(random._os.getcwd())\nprint(sorted(random._os.environ))")
    assert r.status == "success", r.stderr
    cwd, env = r.stdout.splitlines()
    assert Path(cwd).name.startswith("altlas-sbx-")
    assert not Path(cwd).exists()
    names = set(ast.literal_eval(env)) - {"LC_CTYPE"}  # PEP 538 may add LC_CTYPE under the C locale
    assert names == {"PYTHONHASHSEED", "PYTHONIOENCODING"}


def test_stdlib_traceback_does_not_trip_the_guard() -> None:
    r, _ = run("import random\nrandom.choice([])")
    assert (r.status, r.exc_class) == ("error", "IndexError")
    assert "Cannot choose from an empty sequence" in r.stderr


# ------------------------------------------------------------------------------------------
# hostile programs
# ------------------------------------------------------------------------------------------


def test_infinite_loop_times_out() -> None:
    r, wall = run("while True :\n    pass", timeout=1.0)
    assert (r.status, r.exit_code, r.exc_class) == ("timeout", -1, None)
    assert 1.0 <= wall < 1.0 + SLACK_S


@pytest.mark.parametrize(
    ("code", "exc_class"),
    [
        ("import os\nos.fork()", "ImportError"),
        ("import multiprocessing\nmultiprocessing.Process().start()", "ImportError"),
        ("import subprocess\nsubprocess.Popen(['sh'])", "ImportError"),
        ("import random\nwhile True:\n    random._os.fork()", SANDBOX_VIOLATION),
        ("import random\nrandom._os.posix_spawn('/bin/sh', ['sh'], {})", SANDBOX_VIOLATION),
        ("import random\nrandom._os.execv('/bin/sh', ['sh'])", SANDBOX_VIOLATION),
        ("import random\nrandom.__builtins__['__import__']('subprocess')", SANDBOX_VIOLATION),
        ("import random\nrandom._os.sys.modules['posix'].fork()", SANDBOX_VIOLATION),
        ("import random\nrandom._os.kill(random._os.getppid(), 9)", SANDBOX_VIOLATION),
    ],
)
def test_fork_bomb_and_process_creation_blocked(code: str, exc_class: str) -> None:
    r, wall = run(code, timeout=3.0)
    assert_blocked(r, exc_class)
    assert wall < 2.0


def test_memory_hog_is_stopped() -> None:
    r, _ = run("x = []\nwhile True :\n    x.append(bytearray(1 << 24))", timeout=5.0)
    assert (r.status, r.exc_class) == ("error", "MemoryError")
    r, _ = run("x = bytearray(1 << 30)")
    assert (r.status, r.exc_class) == ("error", "MemoryError")


def _write_attempts(target: str) -> list[tuple[str, str]]:
    t = repr(target)
    return [
        (f"open({t}, 'w').write('x')", "NameError"),  # open is not a builtin here
        (f"import random\nrandom.__builtins__['open']({t}, 'w').write('x')", SANDBOX_VIOLATION),
        (f"import random\nrandom._os.open({t}, 65)", SANDBOX_VIOLATION),
        (f"import random\nrandom._os.system('touch ' + {t})", SANDBOX_VIOLATION),
        (f"import random\nrandom._os.mkfifo({t})", SANDBOX_VIOLATION),
        (f"import random\nrandom._os.symlink('/etc/passwd', {t})", SANDBOX_VIOLATION),
        (FIND_CLASS + f"find_class('FileIO')({t}, 'w').write(b'x')", SANDBOX_VIOLATION),
        (
            FIND_CLASS
            + f"find_class('_wrap_close').__init__.__globals__['system']('touch ' + {t})",
            SANDBOX_VIOLATION,
        ),
        (
            FIND_CLASS + "from_spec = find_class('BuiltinImporter').create_module\n"
            "spec = find_class('ModuleSpec')('posix', None)\n"
            f"from_spec(spec).mkfifo({t})",
            SANDBOX_VIOLATION,
        ),
    ]


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_writing_to_the_repository_is_blocked(isolation: str, probe_path: Path) -> None:
    for code, exc_class in _write_attempts(str(probe_path)):
        r, _ = run(code, isolation=isolation)
        assert_blocked(r, exc_class)
        assert not probe_path.exists(), code


def test_reads_outside_the_temp_dir_blocked() -> None:
    rel = "../" * 12 + "etc/passwd"
    for path in (rel, "/etc/passwd", "./../" + rel):
        r, _ = run(f"import random\nprint(random.__builtins__['open']({path!r}).read())")
        assert_blocked(r)
    r, _ = run("import random\nprint(random.__builtins__['open']('prog.py').read())")
    assert r.status == "success" and "prog.py" in r.stdout  # reading its own file is fine


@pytest.mark.parametrize("module", ["os", "socket", "subprocess", "sys", "ctypes", "time"])
def test_import_of_non_allowlisted_modules_fails(module: str) -> None:
    r, _ = run(f"import {module}")
    assert_blocked(r, "ImportError")
    r, _ = run(f"from {module} import *")
    assert_blocked(r, "ImportError")


@pytest.mark.parametrize(
    "code",
    [
        "import random\nrandom.__builtins__['__import__']('socket')",
        "import random\nrandom.__builtins__['__import__']('ctypes')",
        "import random\nrandom._os.sys.modules['_socket']",  # not loaded -> KeyError
        "import random\nrandom.__builtins__['__import__']('_socket').socket()",
        "import random\nrandom._os.sys.modules['marshal'].loads(b'')",
        "f = lambda: 0\nf.__code__.replace(co_code=b'')",
        "import random\nrandom._os.sys.settrace(print)",
        "import random\nrandom._os.listdir('/')",
        "import random\nrandom._os.chdir('/')",
    ],
)
def test_network_and_introspection_escapes_blocked(code: str) -> None:
    r, _ = run(code)
    assert r.status == "error", r
    assert r.exc_class in (SANDBOX_VIOLATION, "KeyError"), r


def test_huge_output_is_truncated_without_blocking() -> None:
    r, wall = run("while True :\n    print ( 'x' * 10000 )", timeout=1.0)
    assert r.status == "timeout" and r.truncated
    assert len(r.stdout) == OUTPUT_CAP
    assert wall < 1.0 + SLACK_S
    r, _ = run("print ( 'y' * 200000 )\nprint ( 'z' * 100000 , file = None )")
    assert r.status == "success" and r.truncated and len(r.stdout) == OUTPUT_CAP
    r, _ = run(
        "import random\nrandom.__builtins__['print']('e' * 300000, file=random._os.sys.stderr)"
    )
    assert r.status == "success" and r.truncated and len(r.stderr) == OUTPUT_CAP


def test_closed_pipes_do_not_hang_supervisor() -> None:
    code = (
        "import random\nrandom._os.sys.stdout.close()\nrandom._os.sys.stderr.close()\n"
        "while 1:\n    pass"
    )
    r, _ = run(code, timeout=1.0)
    assert r.status == "timeout"


def test_namespace_probe_is_cached() -> None:
    assert namespace_isolation_available() == namespace_isolation_available()


# ------------------------------------------------------------------------------------------
# executor
# ------------------------------------------------------------------------------------------


def test_executor_cache_and_batch_order() -> None:
    with Executor(timeout=2.0, workers=2) as ex:
        first = ex.run("print ( 1 )")
        assert ex.run("print ( 1 )") is first
        codes = ["print ( 2 )", "print ( 1 )", "print ( 3 )", "print ( 2 )", "x"]
        results = ex.run_many(codes)
        assert [r.stdout for r in results] == ["2\n", "1\n", "3\n", "2\n", ""]
        assert results[0] is results[3]
        assert results[4].exc_class == "NameError"
        assert ex.misses == 4 and ex.cache_size() == 4
        assert ex.timeout == 2.0
    ex_nocache = Executor(timeout=2.0, workers=1, cache=False)
    assert ex_nocache.run("print ( 1 )") is not ex_nocache.run("print ( 1 )")


def test_executor_runs_batch_concurrently() -> None:
    codes = [f"x = 0\nfor i in range ( 1000000 ) :\n    x += {k}\nprint ( x )" for k in range(4)]
    with Executor(timeout=10.0, workers=4, cache=False) as ex:
        start = time.monotonic()
        results = ex.run_many(codes)
        batch = time.monotonic() - start
        single = max(r.runtime for r in results)
    assert all(r.status == "success" for r in results)
    assert batch < 2.5 * single  # serial execution would take about 4 * single


def test_limits_validation() -> None:
    with pytest.raises(ValueError):
        SandboxLimits(timeout=0)
    assert SandboxLimits(timeout=1.5).cpu_seconds == 3
    with pytest.raises(ValueError):
        run_program("pass", timeout=1.0, limits=SandboxLimits())


def test_no_probe_files_left_in_repo() -> None:
    leftovers = [p for p in os.listdir(REPO) if p.startswith("sandbox_escape_probe_")]
    assert leftovers == []


@pytest.mark.skipif(not namespace_isolation_available(), reason="unshare not usable here")
def test_kernel_read_only_root_inside_namespace(tmp_path: Path) -> None:
    """Second layer: inside the private mount namespace the bootstrap makes / read-only."""
    import subprocess
    import sys

    from twinframe.tasks.altlas import sandbox

    target = tmp_path / "kernel_layer_probe.txt"
    script = (
        "import importlib.util, os, sys\n"
        f"spec = importlib.util.spec_from_file_location('bs', {sandbox.BOOTSTRAP_PATH!r})\n"
        "bs = importlib.util.module_from_spec(spec); spec.loader.exec_module(bs)\n"
        "print(bs._make_root_readonly(sys.argv[1]))\n"
        "try:\n"
        f"    open({str(target)!r}, 'w')\n"
        "except OSError as exc:\n"
        "    print(exc.errno)\n"
    )
    host_ns = os.readlink("/proc/self/ns/mnt")
    prefix = sandbox._namespace_prefix()
    assert prefix is not None
    out = subprocess.run(
        [*prefix, sys.executable, "-c", script, host_ns], capture_output=True, text=True, timeout=20
    )
    assert out.stdout.split() == ["True", "30"], out  # 30 = EROFS
    assert not target.exists()
    # the host's own mount namespace is never touched
    same = subprocess.run(
        [sys.executable, "-c", script, host_ns], capture_output=True, text=True, timeout=20
    )
    assert same.stdout.split()[0] == "False"
    assert target.exists()  # host file system still writable
