"""Helpers shared by the service fixtures: binaries, free ports, users, waiting."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

INSTALL_HINT = "run `make deps` (scripts/install-test-deps.sh) to install it"


class ServiceUnavailableError(RuntimeError):
    """A service the tests need cannot be started; the message says how to fix it."""


def find_binary(name: str, *extra_dirs: str) -> str:
    """Find ``name`` on PATH or in ``extra_dirs`` (Debian puts daemons in /usr/sbin)."""
    found = shutil.which(name) or shutil.which(name, path=os.pathsep.join(extra_dirs))
    if found is None:
        raise ServiceUnavailableError(f"{name} is not installed: {INSTALL_HINT}")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout_s: float, *, alive: object = None) -> bool:
    """Poll until something accepts connections on ``port`` (bounded by ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False


def service_user(name: str) -> str | None:
    """The unprivileged account to run a daemon as when the tests run as root, else None."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(name)
    except KeyError as exc:
        raise ServiceUnavailableError(f"user {name!r} does not exist: {INSTALL_HINT}") from exc
    return name


def hand_over(path: Path, user: str | None) -> None:
    """Give ``path`` to ``user`` (when running as root) so the daemon can write there."""
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def tail(path: Path, lines: int = 30) -> str:
    """The end of a log file, for failure messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def terminate(process: subprocess.Popen[bytes] | None, *, kill: bool = False) -> None:
    """Stop a service process (SIGTERM lets it save its state; ``kill`` does not), bounded."""
    if process is None:
        return
    process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
