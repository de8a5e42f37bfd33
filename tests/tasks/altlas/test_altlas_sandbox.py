"""Sandbox / executor (spec altlas.md §5.3): behaviour of ordinary programs and of the executor.

Hostile programs (containment, verified from outside) live in ``test_sandbox_hostile.py``;
availability, ``unsafe_no_sandbox`` and the seccomp table in ``test_sandbox_availability.py``.
These tests need bubblewrap: they fail (not skip) where it is missing (CI installs it).
"""

from __future__ import annotations

import ast
import os
import time
from pathlib import Path

import pytest

from twinframe.tasks.altlas.sandbox import (
    OUTPUT_CAP,
    ExecutionResult,
    Executor,
    SandboxLimits,
    default_workers,
    exc_class_from_stderr,
    run_program,
    sandbox_status,
)

SLACK_S = 3.0


@pytest.fixture(autouse=True, scope="module")
def _require_sandbox() -> None:
    reason = sandbox_status()
    assert reason is None, f"the OS sandbox must work here (CI installs bubblewrap): {reason}"


def run(code: str, timeout: float = 5.0) -> tuple[ExecutionResult, float]:
    start = time.monotonic()
    result = run_program(code, timeout=timeout)
    wall = time.monotonic() - start
    assert wall < timeout + SLACK_S, f"trainer blocked for {wall:.1f}s"
    return result, wall


def test_success_and_result_fields() -> None:
    r, _ = run("print ( 5 + 3 )")
    assert r == ExecutionResult(
        status="success", stdout="8\n", stderr="", exit_code=0, runtime=r.runtime,
        exc_class=None, truncated=False, isolation="bwrap",
    )  # fmt: skip
    assert 0 < r.runtime < 5 and r.ok


def test_syntax_error_and_runtime_errors() -> None:
    r, _ = run("print ( 5 + 3")
    assert (r.status, r.exc_class, r.exit_code) == ("error", "SyntaxError", 1)
    assert r.stderr.startswith('  File "prog.py", line 1\n') and "SyntaxError" in r.stderr
    r, _ = run("print ( var_a )")
    assert (r.status, r.exc_class) == ("error", "NameError")
    assert r.stderr.startswith('Traceback (most recent call last):\n  File "prog.py", line 1')
    assert "<string>" not in r.stderr and "bootstrap" not in r.stderr
    r, _ = run("print ( 1 / 0 )")
    assert (r.status, r.exc_class) == ("error", "ZeroDivisionError")
    r, _ = run("print ( 1 )\nraise SystemExit ( 3 )")
    assert (r.status, r.exit_code, r.exc_class, r.stdout) == ("error", 3, None, "1\n")
    r, _ = run("import json\njson.loads('x')")
    assert r.exc_class == "JSONDecodeError"  # module prefix dropped
    r, _ = run("print(1)\x00")
    assert (r.status, r.exc_class) == ("error", "SyntaxError")


def test_ordinary_python_works_and_is_deterministic() -> None:
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
    assert r.stdout.splitlines()[0] == "4 10 P(a=2, b=1) 5"
    assert r.stdout.splitlines()[-1] == "IndexError"
    r2, _ = run(code)
    assert r2.stdout == r.stdout  # PYTHONHASHSEED=0: set printing is deterministic


def test_environment_identity_and_work_dir() -> None:
    code = (
        "import os\nprint(os.getcwd(), sorted(os.listdir('.')))\nprint(sorted(os.environ))\n"
        "print(os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups())\n"
        "open('scratch.txt', 'w').write('ok')\nprint(open('prog.py').read().count('scratch'))"
    )
    r, _ = run(code)
    assert r.status == "success", r.stderr
    cwd, env, ids, own = r.stdout.splitlines()
    assert cwd == "/tmp ['prog.py']"
    names = set(ast.literal_eval(env)) - {"LC_CTYPE"}  # PEP 538 may add LC_CTYPE
    assert names == {"PYTHONHASHSEED", "PYTHONIOENCODING", "PWD"}  # bwrap sets PWD=/tmp
    assert ids == "65534 65534 65534 65534 []"
    assert own == "2"  # it can read its own source and write its private /tmp


def test_stdlib_traceback() -> None:
    r, _ = run("import random\nrandom.choice([])")
    assert (r.status, r.exc_class) == ("error", "IndexError")
    assert "Cannot choose from an empty sequence" in r.stderr


def test_signal_death_is_an_error_with_negative_exit_code() -> None:
    r, _ = run("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)")
    assert (r.status, r.exit_code, r.exc_class) == ("error", -11, None)


def test_output_cap_and_truncation_flag() -> None:
    r, _ = run("print ( 'y' * 200000 )")
    assert r.status == "success" and r.truncated and len(r.stdout) == OUTPUT_CAP
    r, _ = run("import sys\nprint('e' * 300000, file=sys.stderr)")
    assert r.status == "success" and r.truncated and len(r.stderr) == OUTPUT_CAP
    r, _ = run("import sys\nprint('e' * 300000, file=sys.stderr)\nraise KeyError(1)")
    assert (r.status, r.exc_class) == ("error", "KeyError")  # from the stderr tail


def test_exc_class_parsing() -> None:
    tb = 'Traceback (most recent call last):\n  File "prog.py", line 1\n'
    assert exc_class_from_stderr(tb + "ValueError: x\n") == "ValueError"
    assert exc_class_from_stderr(tb + "a.b.CustomError\n") == "CustomError"
    assert exc_class_from_stderr("ValueError: no traceback header\n") is None
    assert exc_class_from_stderr(tb + "not a class name!\n") is None
    assert exc_class_from_stderr("") is None


def test_exc_class_only_for_failed_runs() -> None:
    tb = "Traceback (most recent call last):\\nZeroDivisionError\\n"
    fake = f"import sys\nsys.stderr.write('{tb}')"
    r, _ = run(fake)
    assert (r.status, r.exc_class) == ("success", None)


# ------------------------------------------------------------------------------------------
# executor
# ------------------------------------------------------------------------------------------


def test_executor_cache_and_batch_order() -> None:
    with Executor(timeout=2.0, workers=2) as ex:
        assert ex.isolation == "bwrap"
        first = ex.run("print ( 1 )")
        assert ex.run("print ( 1 )") is first
        codes = ["print ( 2 )", "print ( 1 )", "print ( 3 )", "print ( 2 )", "x"]
        results = ex.run_many(codes)
        assert [r.stdout for r in results] == ["2\n", "1\n", "3\n", "2\n", ""]
        assert results[0] is results[3]
        assert results[4].exc_class == "NameError"
        assert ex.misses == 4 and ex.cache_size() == 4
        assert ex.timeout == 2.0
        ex.clear_cache()
        assert ex.cache_size() == 0
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


def test_default_workers_is_usable_cores_plus_two() -> None:
    """Two sandboxes in flight beyond the cores (they sleep on kernel locks during set-up)."""
    cores = len(os.sched_getaffinity(0))
    assert default_workers() == cores + 2
    with Executor(timeout=2.0) as ex:
        assert ex.workers == cores + 2
    with Executor(timeout=2.0, workers=1) as ex:
        assert ex.workers == 1


def test_cost_per_program_is_small() -> None:
    """50 trivial programs through run_many: well under the old ~50 ms per program."""
    with Executor(timeout=5.0, cache=False) as ex:
        ex.run("pass")  # warm-up
        start = time.monotonic()
        results = ex.run_many([f"print(8)\n#{i}" for i in range(50)])
        per_program = (time.monotonic() - start) / 50
    assert all(r.stdout == "8\n" for r in results)
    print(f"sandbox cost: {per_program * 1000:.1f} ms per program (50 x print(8))")
    assert per_program < 0.1


def test_limits_validation() -> None:
    with pytest.raises(ValueError):
        SandboxLimits(timeout=0)
    assert SandboxLimits(timeout=1.5).cpu_seconds == 3
    with pytest.raises(ValueError):
        run_program("pass", timeout=1.0, limits=SandboxLimits())
    with pytest.raises(ValueError):
        Executor(timeout=1.0, limits=SandboxLimits())


def test_no_host_temp_dirs_are_created() -> None:
    import tempfile

    before = set(os.listdir(tempfile.gettempdir()))
    run("open('x', 'w').write('y')")
    assert set(os.listdir(tempfile.gettempdir())) <= before


# ------------------------------------------------------------------------------------------
# The compile checker: programs that fail to compile are decided without a sandbox of their own

NOT_COMPILING = [
    "print ( 5 + 3", "return 1\n", "x = (1,\n", "print('a\x00b')\n", "def f(:\n", "\tx=1\n  y=2\n",
    "'''abc\n", "x = 1 +\n", "f(**)\n", "nonlocal x\n", "break\n", "yield 1\n", "a = 'é\n",
    "# coding: ascii\nx = 'é'\n", "(" * 300 + ")" * 300, "x = 1\n" * 50 + "  y\n",
    "def f():\n    x = 1\n    global x\n", "f(x for x in y, 1)\n", "print 'hi'\n", "a := 1\n",
    "😀 = 1\n", "for i in range(3):\n\tprint(i)\n        print(i)\n", "x = [1, 2\nprint(x)\n",
    "if True:\nprint(1)\n", "class A:\n    def m(self)\n        return 'ü'\n", "s = f'{1 +}'\n",
    "print ( var_a )\n)", "import math\nprint(math.sqrt(4)\nwhile False:\n    pass\n",
]


def _fields(r: ExecutionResult) -> tuple:
    return (r.status, r.stdout, r.stderr, r.exit_code, r.exc_class, r.truncated, r.isolation)


def test_compile_failures_equal_a_sandboxed_run() -> None:
    """Every field but runtime equals what a run in a sandbox of its own reports (the stderr
    byte for byte: carets, tabs, NUL bytes, coding cookies, compile-stage errors that the
    interpreter prints with the line read back from prog.py), and the checker decided them."""
    codes = [*NOT_COMPILING, "# coding: latin-1\nprint ( 1 )", "x"]
    with Executor(timeout=5.0, cache=False) as ex, \
            Executor(timeout=5.0, cache=False, compile_check=False) as plain:
        got, want = ex.run_many(codes), plain.run_many(codes)
        assert ex._checker is not None and plain._checker is None
        assert ex._checker.decided == len(NOT_COMPILING)
    assert [_fields(r) for r in got] == [_fields(r) for r in want]
    assert all(r.exc_class in ("SyntaxError", "IndentationError", "TabError")
               for r in want[: len(NOT_COMPILING)])
    assert (got[-2].stdout, got[-1].exc_class) == ("1\n", "NameError")  # those ran


def test_compile_checker_death_falls_back_and_is_cleaned_up() -> None:
    """A dead checker costs a run, never a wrong result; it is restarted; closing the executor
    leaves none of its processes behind."""
    with Executor(timeout=5.0, cache=False) as ex:
        checker = ex._checker
        assert checker is not None
        ex.run("print ( 5 + 3")
        assert checker.proc is not None and checker.decided == 1
        assert checker.init is not None and checker.init.kill()  # SIGKILL the sandbox's init
        checker.proc.wait()
        r = ex.run("print ( 5 + 4")  # the dead checker: this one runs in its own sandbox
        assert (r.exc_class, checker.decided, checker.proc) == ("SyntaxError", 1, None)
        r = ex.run("print ( 5 + 5")  # restarted
        assert (r.exc_class, checker.decided) == ("SyntaxError", 2)
        pid = checker.proc.pid
    assert checker.proc is None and checker.info_r is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_compile_checker_pipelines_a_large_batch_in_order() -> None:
    """More programs than one pipelined chunk holds (64), and one larger than a chunk's bytes:
    each answer belongs to its own program."""
    codes = [f"x{i} = (" for i in range(150)] + ["y = 1\n" * 4000 + "z = ("]
    with Executor(timeout=5.0, cache=False) as ex:
        results = ex.run_many(codes)
        assert ex._checker is not None and ex._checker.decided == len(codes)
    assert all(f"x{i} = (" in r.stderr for i, r in enumerate(results[:150]))
    assert 'line 4001' in results[-1].stderr and results[-1].exc_class == "SyntaxError"


def _descendants(pid: int) -> list[int]:
    kids = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as fh:
            kids += [int(k) for k in fh.read().split()]
    return kids + [d for k in kids for d in _descendants(k)]


def test_hung_compile_checker_is_killed_and_the_program_runs() -> None:
    """A checker that stops answering (here: every process of its sandbox SIGSTOPped, as a
    compile that never ends would look) costs one timeout: it is killed, the program runs in a
    sandbox of its own with the right result, and nothing of the checker is left."""
    import signal

    with Executor(timeout=1.0, cache=False) as ex:
        checker = ex._checker
        assert checker is not None
        ex.run("print ( 5 + 3")
        assert checker.proc is not None
        stopped = _descendants(checker.proc.pid)
        assert stopped  # bwrap's init and the interpreter below it
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        start = time.monotonic()
        r = ex.run("print ( 5 + 4")
        assert time.monotonic() - start < 1.0 + SLACK_S
        assert (r.exc_class, checker.decided, checker.proc) == ("SyntaxError", 1, None)
    for pid in stopped:  # gone (or a zombie of a process that is itself gone)
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except FileNotFoundError:
            continue
        assert state in ("Z", "X"), (pid, state)
