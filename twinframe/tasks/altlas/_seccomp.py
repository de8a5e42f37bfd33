"""Seccomp filter of the AltLAS sandbox, compiled to classic BPF by libseccomp.

bwrap loads the filter (``--seccomp FD``) into the sandboxed process just before it executes the
command. The filter is a deny-list: every syscall is allowed except the ones in the tables below,
which a generated program never needs and which are the usual kernel attack surface or escape
routes. Denied calls fail with ``EPERM`` (the program sees a ``PermissionError``), ``clone3``
fails with ``ENOSYS`` (its flags live in memory where BPF cannot read them; glibc then falls back
to ``clone``, whose flags *are* checked). A syscall of a foreign ABI (e.g. i386 ``int 0x80`` or
x32 on x86-64) kills the process.

The BPF program is built by libseccomp (``libseccomp.so.2``, Debian ``libseccomp2``, a dependency
of apt, so present on every Debian/Ubuntu system) called through :mod:`ctypes`: libseccomp
resolves the syscall numbers for the native architecture and emits the architecture checks. The
PyPI bindings (``pyseccomp``) wrap the same five C functions; calling them directly avoids a
dependency. The filter is built once per process and cached.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import platform
import threading

__all__ = [
    "DENIED_ARGS",
    "DENIED_SYSCALLS",
    "ENOSYS_SYSCALLS",
    "SeccompUnavailable",
    "filter_bpf",
]

logger = logging.getLogger(__name__)

# Syscalls denied outright (EPERM), grouped by what they would give a hostile program.
DENIED_SYSCALLS: tuple[str, ...] = (
    # inspect or control other processes
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    # change the file-system view
    "mount", "umount2", "pivot_root", "chroot", "mount_setattr", "move_mount", "open_tree",
    "fsopen", "fsconfig", "fsmount", "fspick",
    # enter or create namespaces
    "unshare", "setns",
    # kernel state and modules
    "kexec_load", "kexec_file_load", "reboot", "init_module", "finit_module", "delete_module",
    "bpf", "perf_event_open", "userfaultfd", "syslog", "acct", "quotactl", "quotactl_fd",
    "lookup_dcookie", "uselib", "nfsservctl", "vhangup", "iopl", "ioperm",
    "swapon", "swapoff", "sethostname", "setdomainname",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    # kernel keyrings
    "keyctl", "add_key", "request_key",
    # file handles (bypass path-based access checks) and fanotify
    "open_by_handle_at", "name_to_handle_at", "fanotify_init",
    # io_uring (runs operations outside this filter; large attack surface)
    "io_uring_setup", "io_uring_enter", "io_uring_register",
)  # fmt: skip

# Denied with ENOSYS so that the C library falls back to an older, filterable call.
ENOSYS_SYSCALLS: tuple[str, ...] = ("clone3",)

_CLONE_NEW_FLAGS = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}
_AF_NETLINK, _AF_PACKET = 16, 17
_SOCK_RAW, _SOCK_PACKET, _SOCK_TYPE_MASK = 3, 10, 0xF
_TIOCSTI, _TIOCLINUX = 0x5412, 0x541C

# (syscall, argument index, mask, value, why): denied when (arg & mask) == value.
DENIED_ARGS: tuple[tuple[str, int, int, int, str], ...] = (
    *(("clone", 0, flag, flag, name) for name, flag in _CLONE_NEW_FLAGS.items()),
    ("socket", 0, 0xFFFFFFFF, _AF_PACKET, "AF_PACKET"),
    ("socket", 0, 0xFFFFFFFF, _AF_NETLINK, "AF_NETLINK"),
    ("socket", 1, _SOCK_TYPE_MASK, _SOCK_RAW, "SOCK_RAW"),
    ("socket", 1, _SOCK_TYPE_MASK, _SOCK_PACKET, "SOCK_PACKET"),
    ("ioctl", 1, 0xFFFFFFFF, _TIOCSTI, "TIOCSTI (inject terminal input)"),
    ("ioctl", 1, 0xFFFFFFFF, _TIOCLINUX, "TIOCLINUX"),
)

_ACT_ALLOW = 0x7FFF0000
_ACT_KILL_PROCESS = 0x80000000
_ATTR_ACT_BADARCH = 2
_CMP_MASKED_EQ = 7


def _act_errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class SeccompUnavailable(RuntimeError):
    """libseccomp is missing or could not compile the filter."""


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def _load_libseccomp() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name)
    except OSError as exc:
        raise SeccompUnavailable(f"libseccomp not found ({exc})") from None
    lib.seccomp_init.argtypes = (ctypes.c_uint32,)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_release.argtypes = (ctypes.c_void_p,)
    lib.seccomp_release.restype = None
    lib.seccomp_attr_set.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32)
    lib.seccomp_syscall_resolve_name.argtypes = (ctypes.c_char_p,)
    lib.seccomp_rule_add_array.argtypes = (
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    )
    lib.seccomp_export_bpf.argtypes = (ctypes.c_void_p, ctypes.c_int)
    return lib


def _add(lib: ctypes.CDLL, ctx: int, action: int, name: str, *conds: _ArgCmp) -> bool:
    """Add one rule; False when this libseccomp/architecture does not know the syscall."""
    nr = lib.seccomp_syscall_resolve_name(name.encode())
    if nr < 0:
        logger.debug("seccomp: syscall %s unknown here, not filtered", name)
        return False
    array = (_ArgCmp * len(conds))(*conds) if conds else None
    rc = lib.seccomp_rule_add_array(ctx, action, nr, len(conds), array)
    if rc != 0:
        raise SeccompUnavailable(f"libseccomp rejected the rule for {name} ({os.strerror(-rc)})")
    return True


def _clone_flags_arg() -> int:
    """Argument index of clone's flags (1 on s390, 0 elsewhere)."""
    return 1 if platform.machine().startswith("s390") else 0


def _build() -> bytes:
    lib = _load_libseccomp()
    ctx = lib.seccomp_init(_ACT_ALLOW)
    if not ctx:
        raise SeccompUnavailable("seccomp_init failed")
    try:
        lib.seccomp_attr_set(ctx, _ATTR_ACT_BADARCH, _ACT_KILL_PROCESS)
        for name in DENIED_SYSCALLS:
            _add(lib, ctx, _act_errno(errno.EPERM), name)
        for name in ENOSYS_SYSCALLS:
            _add(lib, ctx, _act_errno(errno.ENOSYS), name)
        for name, arg, mask, value, _why in DENIED_ARGS:
            index = _clone_flags_arg() if name == "clone" else arg
            cond = _ArgCmp(index, _CMP_MASKED_EQ, mask, value)
            _add(lib, ctx, _act_errno(errno.EPERM), name, cond)
        return _export(lib, ctx)
    finally:
        lib.seccomp_release(ctx)


def _export(lib: ctypes.CDLL, ctx: int) -> bytes:
    fd = os.memfd_create("altlas-seccomp", os.MFD_CLOEXEC)
    try:
        rc = lib.seccomp_export_bpf(ctx, fd)
        if rc != 0:
            raise SeccompUnavailable(f"seccomp_export_bpf failed ({os.strerror(-rc)})")
        size = os.lseek(fd, 0, os.SEEK_END)
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)


_lock = threading.Lock()
_cached: bytes | None = None


def filter_bpf() -> bytes:
    """The compiled filter (``struct sock_filter`` array), built once per process."""
    global _cached
    with _lock:
        if _cached is None:
            _cached = _build()
        return _cached
