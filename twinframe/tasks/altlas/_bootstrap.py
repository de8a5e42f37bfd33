"""Sandbox bootstrap: run one AltLAS program under the in-process guard (spec altlas.md §5.3).

Started by :mod:`twinframe.tasks.altlas.sandbox` as::

    python -s -S -B -P _bootstrap.py PROG_PATH REPORT_FD HOST_MNT_NS LIMITS

with the temporary directory as cwd and a two-variable environment. It must stay importable
under ``-S`` (stdlib only, no third-party modules, no package imports).

Order of operations:

-1. Apply the resource limits ``LIMITS`` = ``cpu,as,fsize,nofile,nproc,core`` (soft = hard).
   They are set here, first thing, rather than in a ``preexec_fn`` (our choice): ``preexec_fn``
   is not thread-safe (the executor launches from a thread pool) and forces a full ``fork`` of
   the possibly large trainer process instead of ``vfork``. Nothing of the program has run yet.
0. If ``HOST_MNT_NS`` is not ``-`` and this process sits in a *different* mount namespace (the
   parent started it under ``unshare --mount``), remount ``/`` recursively read-only with
   ``mount_setattr(2)`` (via ``_ctypes``; failures are ignored). The namespace check makes sure
   the host's mounts are never touched.
1. Pre-import the allow-list ``math random itertools functools collections string re operator``
   plus ``traceback linecache`` and the modules those import lazily (``LAZY_DEPENDENCIES``, our
   choice: otherwise e.g. ``Counter.most_common`` would trip the import guard).
2. Read and compile ``PROG_PATH`` (filename ``prog.py``; a SyntaxError is reported normally).
3. Neutralise unaudited dangerous entry points (``posix`` functions such as ``mkfifo``/``write``,
   ``_imp.create_builtin``/``create_dynamic`` which could re-create them), then install the audit
   hook. The hook *allow-lists* events: pure-computation events pass, ``open`` passes only for
   read-only opens of paths inside the temp dir, everything else (``socket.*``,
   ``subprocess.Popen``, ``os.system``/``exec``/``fork``/``posix_spawn``/``kill``, ``ctypes.*``,
   ``import`` of a module not yet loaded, file-system changes, ...) raises ``SandboxViolation``.
   The hook closes over immutable values and captured builtins only and is unreachable from the
   program, so the program cannot reconfigure it.
4. Execute the code object as ``__main__`` with restricted builtins (no ``open eval exec compile
   input breakpoint``; ``__import__`` returns allow-listed modules and raises ``ImportError``
   otherwise). An uncaught exception prints the standard traceback (bootstrap frames removed) and
   exits 1; its class name goes to ``REPORT_FD`` (a pipe opened before the hook is armed).

``SandboxViolation`` subclasses ``PermissionError`` (our choice): a blocked operation looks like
"permission denied" to the program, and ``linecache`` silently skips source lines it may not read
while printing tracebacks.
"""

import sys

ALLOWED_MODULES = (
    "math",
    "random",
    "itertools",
    "functools",
    "collections",
    "string",
    "re",
    "operator",
)
SUPPORT_MODULES = ("traceback", "linecache")
# Loaded too (not importable by the program): lazy imports inside the allow-listed modules
# (Counter.most_common -> heapq, UserDict.copy -> copy, singledispatch -> types/weakref, re's
# parser -> warnings/unicodedata) and inside traceback's caret/width code (ast, unicodedata).
LAZY_DEPENDENCIES = ("heapq", "copy", "types", "weakref", "warnings", "unicodedata", "ast")
REMOVED_BUILTINS = (
    "open",
    "eval",
    "exec",
    "compile",
    "input",
    "breakpoint",
    "help",
    "exit",
    "quit",
)
PROG_FILENAME = "prog.py"

# Audit events that ordinary computation raises; everything else is a violation.
ALLOWED_EVENTS = frozenset(
    {
        "exec",
        "compile",
        "builtins.id",
        "object.__getattr__",
        "object.__setattr__",
        "object.__delattr__",
        "sys._getframe",
        "time.sleep",
        "random.seed",
        "function.__new__",
        "sys.excepthook",
        "sys.unraisablehook",
        "cpython._PySys_ClearAuditHooks",
    }
)

# posix functions that stay (used by linecache/traceback/random); every other callable goes.
KEEP_POSIX = frozenset(
    {
        "stat",
        "lstat",
        "fstat",
        "fspath",
        "getcwd",
        "getcwdb",
        "urandom",
        "strerror",
        "getpid",
        "cpu_count",
        "device_encoding",
        "isatty",
        "get_terminal_size",
        "_path_normpath",
        "_exit",
    }
)
DROP_IMP = (
    "create_builtin",
    "create_dynamic",
    "exec_builtin",
    "exec_dynamic",
    "init_frozen",
    "get_frozen_object",
    "find_frozen",
    "_override_frozen_modules_for_tests",
)
WRITE_FLAGS = 0o1 | 0o2 | 0o100 | 0o200 | 0o1000 | 0o2000  # WRONLY RDWR CREAT EXCL TRUNC APPEND


class SandboxViolation(PermissionError):
    """An operation the sandbox does not allow."""


SandboxViolation.__module__ = "builtins"  # traceback prints the bare class name


# ---------------------------------------------------------------------------------------------
# step 0: read-only root inside a private mount namespace
# ---------------------------------------------------------------------------------------------


def _make_root_readonly(host_mnt_ns):
    """Recursively remount / read-only, only when in a mount namespace other than the host's."""
    import posix

    if host_mnt_ns == "-":
        return False
    try:
        if posix.readlink("/proc/self/ns/mnt") == host_mnt_ns:
            return False
        import _ctypes

        handle = _ctypes.dlopen(None, 2)
        syscall = _ctypes.dlsym(handle, "syscall")
        attr = (1).to_bytes(8, "little") + bytes(24)  # struct mount_attr{attr_set=RDONLY}
        # mount_setattr(AT_FDCWD, "/", AT_RECURSIVE, &attr, sizeof attr); x86-64 number 442
        # (the same on aarch64/generic tables).
        rc = _ctypes.call_function(syscall, (442, -100, b"/", 0x8000, attr, 32))
    except Exception:  # noqa: BLE001 - best effort: the audit hook still guards writes
        return False
    finally:
        for name in [m for m in sys.modules if m == "_ctypes" or m.startswith("ctypes")]:
            del sys.modules[name]
    return rc == 0


# ---------------------------------------------------------------------------------------------
# step 3: neutralise and arm
# ---------------------------------------------------------------------------------------------


def _blocked(qualname, violation):
    """Stand-in for a removed function: raises ``SandboxViolation`` when called."""

    def blocked(*args, **kwargs):
        raise violation(f"sandbox: {qualname} is not allowed")

    blocked.__name__ = blocked.__qualname__ = qualname.rpartition(".")[2]
    return blocked


def _neutralise_modules(violation):
    """Replace dangerous posix/os callables and _imp module factories by blocking stubs."""
    import _imp
    import os
    import posix

    for name in list(vars(posix)):
        value = getattr(posix, name)
        if name in KEEP_POSIX or name.startswith("__") or isinstance(value, type):
            continue
        if callable(value):
            stub = _blocked(f"os.{name}", violation)
            setattr(posix, name, stub)
            if getattr(os, name, None) is value:
                setattr(os, name, stub)
    for name in DROP_IMP:
        if hasattr(_imp, name):
            setattr(_imp, name, _blocked(f"_imp.{name}", violation))


def _make_hook(root, violation):
    """Build the audit hook; it only uses its closure (immutable values, captured builtins)."""
    prefix = root.rstrip("/") + "/"
    allowed = ALLOWED_EVENTS
    write_flags = WRITE_FLAGS
    _type, _str, _bytes, _int = type, str, bytes, int

    def normalise(path):
        """Lexical absolute normalisation (no filesystem access, no Python-level helpers)."""
        if not path.startswith("/"):
            path = prefix + path
        parts = []
        for part in path.split("/"):
            if part == "" or part == ".":
                continue
            if part == "..":
                if parts:
                    parts.pop()
                continue
            parts.append(part)
        return "/" + "/".join(parts)

    def check_open(args):
        path, mode, flags = args[0], args[1], args[2]
        if _type(path) is _bytes:
            path = path.decode("utf-8", "surrogateescape")
        if _type(path) is not _str:
            return "open of a non-path object"
        if mode is not None:
            if _type(mode) is not _str:
                return "open with an unusual mode"
            for ch in "wax+":
                if ch in mode:
                    return "open for writing"
        if _type(flags) is _int and flags & write_flags:
            return "open for writing"
        full = normalise(path)
        if not (full + "/").startswith(prefix):
            return "open outside the sandbox directory"
        return None

    def hook(event, args):
        if event in allowed:
            return
        if event == "open":
            reason = check_open(args)
            if reason is None:
                return
            target = args[0] if _type(args[0]) is _str else "<object>"
            raise violation(f"sandbox: {reason}: {target}")
        raise violation(f"sandbox: {event} is not allowed")

    return hook


def _make_import_guard(real_import, allowed_loaded):
    """``__import__`` for the program: allow-listed, already loaded modules only."""

    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):  # noqa: A002
        if level != 0 or name not in allowed_loaded:
            raise ImportError(f"import of {name!r} is not allowed in the sandbox", name=name)
        module = real_import(name, globals, locals, (), 0)
        if not fromlist:
            return module
        target = sys.modules[name]
        for item in fromlist:
            if item != "*" and not hasattr(target, item):
                if f"{name}.{item}" not in allowed_loaded:
                    raise ImportError(f"cannot import {item!r} from {name!r}", name=name)
        return target

    return guarded_import


def _restricted_builtins(guard):
    import builtins

    namespace = dict(vars(builtins))
    for name in REMOVED_BUILTINS:
        namespace.pop(name, None)
    namespace["__import__"] = guard
    return namespace


# ---------------------------------------------------------------------------------------------
# steps 2 and 4: compile, run, report
# ---------------------------------------------------------------------------------------------


def _strip_bootstrap_frames(te, seen):
    """Remove this file's frames from a TracebackException and its chained exceptions."""
    if te is None or id(te) in seen:
        return
    seen.add(id(te))
    own = __file__
    te.stack = type(te.stack).from_list([f for f in te.stack if f.filename != own])
    _strip_bootstrap_frames(te.__cause__, seen)
    _strip_bootstrap_frames(te.__context__, seen)


def _report(report, exc_class):
    if report is None:
        return
    try:
        report.write((exc_class or "") + "\n")
        report.flush()
    except Exception:  # noqa: BLE001 - the parent treats a missing report as "no class"
        pass


def _print_exception(traceback, exc):
    try:
        te = traceback.TracebackException(type(exc), exc, exc.__traceback__, compact=True)
        _strip_bootstrap_frames(te, set())
        sys.stderr.write("".join(te.format()))
    except Exception:  # noqa: BLE001 - last resort: one line
        sys.stderr.write(f"{type(exc).__name__}: {exc}\n")


def _exit_code_of(exc):
    """Exit status of an uncaught SystemExit, as the interpreter computes it."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    sys.stderr.write(f"{code}\n")
    return 1


def _compile(source_bytes):
    try:
        return compile(source_bytes, PROG_FILENAME, "exec", dont_inherit=True)
    except ValueError as exc:  # NUL bytes: 3.11 raises ValueError, plain python a SyntaxError
        raise SyntaxError(str(exc)) from None


def _apply_limits(spec):
    """Set soft = hard rlimits from ``cpu,as,fsize,nofile,nproc,core`` (-1 = leave as is)."""
    import resource

    names = ("CPU", "AS", "FSIZE", "NOFILE", "NPROC", "CORE")
    for short, value in zip(names, spec.split(","), strict=True):
        name = "RLIMIT_" + short
        value = int(value)
        if value < 0 or not hasattr(resource, name):
            continue
        which = getattr(resource, name)
        _, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        try:
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError):
            pass
    del sys.modules["resource"]


def main(argv):
    prog_path, report_fd, host_mnt_ns = argv[1], int(argv[2]), argv[3]
    _apply_limits(argv[4])
    report = open(report_fd, "w", encoding="utf-8") if report_fd >= 0 else None  # noqa: SIM115
    _make_root_readonly(host_mnt_ns)
    for name in ALLOWED_MODULES + SUPPORT_MODULES + LAZY_DEPENDENCIES:
        __import__(name)
    import linecache
    import traceback
    import types

    with open(prog_path, "rb") as fh:
        source = fh.read()
    lines = source.decode("utf-8", "replace").splitlines(True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"  # as linecache.updatecache does; traceback carets rely on it
    linecache.cache[PROG_FILENAME] = (len(source), None, lines, PROG_FILENAME)
    try:
        code = _compile(source)
    except SyntaxError as exc:
        exc.__traceback__ = None
        _report(report, "SyntaxError")
        _print_exception(traceback, exc)
        return 1
    root = prog_path.rpartition("/")[0] or "."
    allowed_loaded = frozenset(m for m in sys.modules if m.partition(".")[0] in ALLOWED_MODULES)
    import builtins

    guard = _make_import_guard(builtins.__import__, allowed_loaded)
    main_module = types.ModuleType("__main__")
    main_module.__dict__.update(
        {"__builtins__": _restricted_builtins(guard), "__file__": PROG_FILENAME}
    )
    sys.modules["__main__"] = main_module
    sys.argv = [PROG_FILENAME]
    _neutralise_modules(SandboxViolation)
    sys.addaudithook(_make_hook(root, SandboxViolation))
    try:
        exec(code, main_module.__dict__)
    except SystemExit as exc:
        return _exit_code_of(exc)
    except BaseException as exc:  # noqa: BLE001 - mirror the interpreter's top level
        _report(report, type(exc).__name__)
        _print_exception(traceback, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
