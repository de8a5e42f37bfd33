"""Sandbox bootstrap: apply the resource limits, then run ``prog.py`` as ``__main__``.

The parent passes this file's source to the interpreter inside the sandbox::

    python -s -S -B -P -c <this source> CPU,AS,FSIZE,NOFILE,NPROC,CORE

with ``prog.py`` in the current directory. It is *not* a security layer: containment comes from
the operating system (bubblewrap namespaces, an unprivileged uid, seccomp). It only

1. sets the rlimits (soft = hard; the kernel enforces them) before any of the program runs;
2. compiles ``prog.py`` under the file name ``prog.py`` (a SyntaxError is printed as by
   ``python prog.py``) and runs it in a fresh ``__main__`` module;
3. prints an uncaught exception with the interpreter's own formatting, minus this file's frame,
   and exits 1; a ``SystemExit`` behaves as in plain ``python``.

Nothing is reported back except through stdout, stderr and the exit status, which the parent
interprets. Stdlib only, importable under ``-S``.

With a second argument ``check`` it never runs anything: it is the compile checker of
``sandbox._CompileChecker``, one long-lived sandbox that compiles programs the parent sends on
stdin (4-byte big-endian length, then the bytes) in a private directory under the name
``prog.py`` and answers on stdout with one byte: ``O`` (compiles), ``X`` (compiling failed
otherwise than with a SyntaxError: the parent runs the program to see), or ``E`` followed by a
4-byte length and exactly the bytes a run would have written to stderr.
"""

import sys

PROG_FILENAME = "prog.py"
LIMIT_NAMES = ("CPU", "AS", "FSIZE", "NOFILE", "NPROC", "CORE")


def apply_limits(spec):
    """Set soft = hard rlimits from ``cpu,as,fsize,nofile,nproc,core`` (-1 = leave as is)."""
    import resource

    for short, text in zip(LIMIT_NAMES, spec.split(","), strict=True):
        value = int(text)
        which = getattr(resource, "RLIMIT_" + short, None)
        if value < 0 or which is None:
            continue
        _, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(which, (value, value))


def compile_program(source):
    """Compile ``prog.py``; every failure (NUL bytes included) is a SyntaxError naming it."""
    try:
        return compile(source, PROG_FILENAME, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        if isinstance(exc, SyntaxError) and exc.filename is not None:
            raise
        raise SyntaxError(str(exc), (PROG_FILENAME, 1, None, None)) from None


def _read_exact(stream, n):
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def check_loop(stdin, stdout):
    """Compile each program sent on ``stdin``; never execute one (see the module docstring)."""
    import io
    import os

    os.mkdir("check")
    os.chdir("check")  # the compiler reads ``prog.py`` from here for compile-stage errors
    while True:
        try:
            source = _read_exact(stdin, int.from_bytes(_read_exact(stdin, 4), "big"))
        except EOFError:
            return 0
        with open(PROG_FILENAME, "wb") as fh:
            fh.write(source)
        try:
            compile_program(source)
        except SyntaxError as exc:
            exc.__traceback__ = None
            buf = io.BytesIO()
            err = io.TextIOWrapper(buf, encoding="utf-8", errors="backslashreplace")
            sys.stderr = err
            try:
                sys.__excepthook__(SyntaxError, exc, None)
            finally:
                sys.stderr = sys.__stderr__
                err.flush()
            text = buf.getvalue()
            stdout.write(b"E" + len(text).to_bytes(4, "big") + text)
        except BaseException:  # noqa: BLE001 - RecursionError, MemoryError: a run decides
            stdout.write(b"X")
        else:
            stdout.write(b"O")
        stdout.flush()


def main(argv):
    apply_limits(argv[1])
    if argv[2:] == ["check"]:
        return check_loop(sys.stdin.buffer, sys.stdout.buffer)
    with open(PROG_FILENAME, "rb") as fh:
        source = fh.read()
    try:
        code = compile_program(source)
    except SyntaxError as exc:
        exc.__traceback__ = None
        sys.__excepthook__(SyntaxError, exc, None)
        return 1
    module = type(sys)("__main__")
    module.__file__ = PROG_FILENAME
    sys.modules["__main__"] = module
    sys.argv = [PROG_FILENAME]
    try:
        exec(code, module.__dict__)
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - mirror the interpreter's top level
        if exc.__traceback__ is not None:
            exc.__traceback__ = exc.__traceback__.tb_next  # drop this file's frame
        sys.__excepthook__(type(exc), exc, exc.__traceback__)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
