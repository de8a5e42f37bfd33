"""bubblewrap command line of the AltLAS sandbox (see :mod:`.sandbox` for the design).

Two ways to become an unprivileged user, chosen by :func:`candidate_layouts`:

* ``setpriv`` (trainer runs as root): bwrap runs privileged and unshares the PID, network, IPC,
  UTS and cgroup namespaces plus the mount namespace, *not* the user namespace; inside, the
  trusted ``setpriv`` switches to uid/gid 65534 (no supplementary groups, empty capability
  bounding set, no-new-privileges) and executes Python. The program is then a genuinely
  unprivileged host uid: nothing maps it back to root.
* ``userns`` (trainer is not root): ``--unshare-all --unshare-user --uid 65534 --gid 65534``;
  the program is uid 65534 inside a fresh user namespace without capabilities (on the host it
  keeps the trainer's non-root uid). Not used for a root trainer: there it would stay host
  uid 0, which the kernel exempts from RLIMIT_NPROC. An unprivileged bwrap cannot bind a Python
  installation below an unreadable ``/root`` either (``--ro-bind-fd`` canonicalises the path).
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "SANDBOX_GID",
    "SANDBOX_UID",
    "SANDBOX_WORKDIR",
    "Layout",
    "UidMode",
    "candidate_layouts",
    "interpreter",
    "userns_layout",
]

UidMode = Literal["setpriv", "userns"]

SANDBOX_UID = 65534  # nobody
SANDBOX_GID = 65534  # nogroup
SANDBOX_WORKDIR = "/tmp"
SANDBOX_HOSTNAME = "altlas-sandbox"
TMPFS_BYTES = 16 * 2**20
PYTHON_FLAGS = ("-s", "-S", "-B", "-P")
CHILD_ENV = {"PYTHONHASHSEED": "0", "PYTHONIOENCODING": "utf-8"}
_TOP_LEVEL_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_SETPRIV_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP")


def interpreter() -> str:
    """The real (non-venv) interpreter binary."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _bind_tree(path: str) -> list[str]:
    """Read-only bind of ``path``; its ancestors are created 0755 (bwrap would copy 0700)."""
    args: list[str] = []
    parts = path.strip("/").split("/")
    for i in range(1, len(parts)):
        args += ["--perms", "0755", "--dir", "/" + "/".join(parts[:i])]
    return [*args, "--ro-bind", path, path]


def _site_dirs(prefix: str) -> list[str]:
    """site-/dist-packages of the base installation (hidden: Python needs only its stdlib)."""
    base = {k: prefix for k in ("base", "platbase", "installed_base", "installed_platbase")}
    paths = sysconfig.get_paths(vars=base)
    found = {os.path.join(paths["stdlib"], "site-packages"), paths["purelib"], paths["platlib"]}
    if prefix == "/usr":
        found.add("/usr/lib/python3/dist-packages")
    return sorted(p for p in found if os.path.isdir(p) and p != paths["stdlib"])


def _filesystem_args(python: str) -> list[str]:
    """Read-only /usr, the top-level links, the Python installation; nothing else of the host."""
    args = ["--ro-bind", "/usr", "/usr"]
    for path in _TOP_LEVEL_LINKS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    prefix = os.path.realpath(sys.base_prefix)
    trees = [prefix] if not _under(prefix, "/usr") else []
    exe_dir = os.path.dirname(python)
    if not any(_under(exe_dir, t) for t in ["/usr", *trees]):
        trees.append(exe_dir)
    for tree in trees:
        args += _bind_tree(tree)
    for site in _site_dirs(prefix):
        args += ["--tmpfs", site, "--remount-ro", site]
    return args


@dataclass(frozen=True)
class Layout:
    """Everything of the bwrap command line that does not change between runs."""

    bwrap: str
    uid_mode: UidMode
    python: str
    setpriv: str | None
    fixed: tuple[str, ...]

    def command(
        self, *, prog_fd: int, seccomp_fd: int, info_fd: int, limits: str, bootstrap: str,
        mode: tuple[str, ...] = (),
    ) -> list[str]:
        """Full argv for one run; the fds must be passed to the child. ``mode``: further
        bootstrap arguments (``("check",)``: the compile checker)."""
        per_run = [
            "--perms", "0444", "--file", str(prog_fd), f"{SANDBOX_WORKDIR}/prog.py",
            "--remount-ro", "/",
            "--chdir", SANDBOX_WORKDIR,
            "--seccomp", str(seccomp_fd),
            "--info-fd", str(info_fd),
            "--",
        ]  # fmt: skip
        drop: list[str] = []
        if self.uid_mode == "setpriv":
            assert self.setpriv is not None
            drop = [
                self.setpriv,
                f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_GID}", "--clear-groups",
                "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--",
            ]  # fmt: skip
        python = [self.python, *PYTHON_FLAGS, "-c", bootstrap, limits, *mode]
        return [self.bwrap, *self.fixed, *per_run, *drop, *python]


def _namespace_args(uid_mode: UidMode) -> list[str]:
    if uid_mode == "userns":
        ids = ["--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_GID)]
        return ["--unshare-all", "--unshare-user", *ids, "--cap-drop", "ALL"]
    caps = [a for cap in _SETPRIV_CAPS for a in ("--cap-add", cap)]
    namespaces = ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"]
    return [*namespaces, "--unshare-cgroup-try", "--cap-drop", "ALL", *caps]


def _layout(bwrap: str, uid_mode: UidMode, setpriv: str | None) -> Layout:
    python = interpreter()
    fixed = [
        *_namespace_args(uid_mode),
        "--die-with-parent", "--new-session", "--hostname", SANDBOX_HOSTNAME,
        "--clearenv", *(a for k, v in CHILD_ENV.items() for a in ("--setenv", k, v)),
        *_filesystem_args(python),
        "--dev", "/dev", "--remount-ro", "/dev",
        "--perms", "1777", "--size", str(TMPFS_BYTES), "--tmpfs", SANDBOX_WORKDIR,
    ]  # fmt: skip
    return Layout(bwrap, uid_mode, python, setpriv, tuple(fixed))


def _find_bwrap() -> str | None:
    found = shutil.which("bwrap")
    if found is None:
        found = next((p for p in ("/usr/bin/bwrap", "/bin/bwrap") if os.access(p, os.X_OK)), None)
    return found


def userns_layout(bwrap: str) -> Layout:
    """The user-namespace layout (the one for a trainer that is not root)."""
    return _layout(bwrap, "userns", None)


def candidate_layouts() -> list[Layout] | str:
    """Layouts to probe, best first, or why none can exist here.

    A root trainer only gets the ``setpriv`` layout: under ``userns`` its programs would keep
    host uid 0, which the kernel exempts from RLIMIT_NPROC (a fork bomb would be unbounded)."""
    if not sys.platform.startswith("linux"):
        return f"bubblewrap needs Linux (this is {sys.platform})"
    bwrap = _find_bwrap()
    if bwrap is None:
        return "bwrap not found (install the Debian package 'bubblewrap')"
    if os.geteuid() != 0:
        return [userns_layout(bwrap)]
    setpriv = os.path.realpath(shutil.which("setpriv") or "/usr/bin/setpriv")
    if not (_under(setpriv, "/usr") and os.access(setpriv, os.X_OK)):
        return "setpriv not found under /usr (Debian package util-linux), needed as root"
    return [_layout(bwrap, "setpriv", setpriv)]
