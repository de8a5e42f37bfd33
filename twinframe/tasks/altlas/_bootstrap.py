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


def main(argv):
    apply_limits(argv[1])
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
