"""Mosquitto password files, written the way ``mosquitto_passwd`` writes them.

Each line is ``user:$7$<iterations>$<salt>$<hash>``: PBKDF2-HMAC-SHA512 with a random 12-byte
salt, base64 encoded, which Mosquitto 2 verifies on every CONNECT. Files are replaced atomically
and keep their owner and mode, because the broker re-reads them on reload as its own
unprivileged user.

Examples:
    >>> entry = hash_password("correct horse", iterations=1000)
    >>> entry.startswith("$7$1000$"), verify_password(entry, "correct horse")
    (True, True)
    >>> verify_password(entry, "wrong")
    False
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from smartcity.errors import CommandError

# Verified on every connection: 20,000 rounds cost about 10 ms of broker CPU per CONNECT, so a
# fleet of 10,000 devices reconnecting after an outage costs under two minutes of one core.
ITERATIONS: Final = 20_000
_SALT_BYTES: Final = 12


class PasswordFileError(CommandError):
    """The password file cannot be read or written as asked."""


def hash_password(password: str, *, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    """The ``$7$`` entry for ``password``."""
    if not password:
        raise PasswordFileError("an empty password cannot be stored")
    salt = salt if salt is not None else secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${_b64(salt)}${_b64(digest)}"


def verify_password(entry: str, password: str) -> bool:
    """Whether ``password`` matches a ``$7$`` entry (constant-time comparison)."""
    try:
        _, kind, rounds, salt, digest = entry.split("$")
        iterations = int(rounds)
    except ValueError:
        return False
    if kind != "7":
        return False
    actual = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt), iterations)
    return hmac.compare_digest(actual, base64.b64decode(digest))


def new_password() -> str:
    """A random broker password for a device: 192 bits, URL- and shell-safe."""
    return secrets.token_urlsafe(24)


class PasswordFile:
    """One Mosquitto password file.

    Args:
        path: The file (created on the first :meth:`set` if missing).
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def entries(self) -> dict[str, str]:
        """User name -> hash entry, in file order."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise PasswordFileError(f"cannot read {self.path}: {exc.strerror}") from exc
        entries: dict[str, str] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.startswith("#"):
                continue
            user, sep, entry = line.partition(":")
            if not sep or not user:
                raise PasswordFileError(f"{self.path}:{number}: not a user:hash line")
            entries[user] = entry
        return entries

    def set(self, user: str, password: str) -> None:
        """Add ``user`` or replace its password."""
        if not user or ":" in user or any(c.isspace() for c in user):
            raise PasswordFileError(f"{user!r} cannot be a broker user name")
        entry = hash_password(password)
        with self._locked():
            entries = self.entries()
            entries[user] = entry
            self._write(entries)

    def remove(self, user: str) -> bool:
        """Remove ``user``; False if it was not there."""
        with self._locked():
            entries = self.entries()
            if entries.pop(user, None) is None:
                return False
            self._write(entries)
        return True

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # Two administrators changing devices at once must not lose each other's change.
        lock_path = self.path.with_name(f".{self.path.name}.lock")
        try:
            handle = open(lock_path, "a")  # noqa: SIM115  # held for the whole change
        except OSError as exc:
            raise PasswordFileError(f"cannot lock {self.path}: {exc.strerror}") from exc
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def _write(self, entries: dict[str, str]) -> None:
        text = "".join(f"{user}:{entry}\n" for user, entry in entries.items())
        directory = self.path.parent
        try:
            before = self.path.stat()
        except FileNotFoundError:
            before = None
        try:
            fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{self.path.name}.")
        except OSError as exc:
            raise PasswordFileError(f"cannot write in {directory}: {exc.strerror}") from exc
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            # The broker reads this as its own user after dropping privileges: keep who owns it.
            if before is not None:
                os.chmod(temporary, before.st_mode & 0o777)
                if os.geteuid() == 0:
                    os.chown(temporary, before.st_uid, before.st_gid)
            else:
                os.chmod(temporary, 0o640)
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
