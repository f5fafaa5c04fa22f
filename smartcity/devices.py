"""``smartcity devices``: register devices and issue, rotate and revoke their broker credentials.

A device's broker user name is its id. Its password is random, stored only as a PBKDF2 hash in
the broker's password file, and handed to the technician once, in a bundle directory they copy
to the Pi (``password``, ``ca.pem`` and the ``smartcity-edge provision`` command that uses them).
After every change the broker is told to reload, which also disconnects a revoked device that is
still connected: no restart.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

import psycopg

from edge.contract import is_valid_id
from edge.metrics import FAMILIES
from smartcity.broker_passwords import PasswordFile, new_password
from smartcity.errors import CommandError

# Service accounts of the broker's ACL (deploy/mosquitto/acl): a device by one of these names
# would get that service's rights.
RESERVED: Final = frozenset({"ingest", "dashboard", "admin", "simulator"})


class DeviceAdminError(CommandError):
    """A request the registry refuses, with what to do instead."""


@dataclass(frozen=True, slots=True)
class BrokerReload:
    """How to make the broker re-read its password and ACL files.

    Attributes:
        pid_file: Send SIGHUP to the process named in this file (a broker on this host).
        command: Or run this command (``docker compose kill -s HUP mosquitto``,
            ``systemctl reload mosquitto``).
    """

    pid_file: Path | None = None
    command: str | None = None
    # Mosquitto clears its reload flag when a reload finishes, so a signal that arrives during
    # one (another administrator's change a moment earlier) is lost: ask once more, later.
    again_after_s: float = 1.0

    def __call__(self) -> bool:
        """Reload; False when nothing is configured (the caller says so)."""
        if not self._once():
            return False
        time.sleep(self.again_after_s)
        self._once()
        return True

    def _once(self) -> bool:
        if self.pid_file is not None:
            try:
                pid = int(self.pid_file.read_text(encoding="utf-8").split()[0])
                os.kill(pid, signal.SIGHUP)
            except (OSError, ValueError, IndexError) as exc:
                raise DeviceAdminError(
                    f"cannot signal the broker from {self.pid_file}: {exc}"
                ) from exc
            return True
        if self.command:
            try:
                subprocess.run(shlex.split(self.command), check=True, timeout=60)
            except (OSError, subprocess.SubprocessError) as exc:
                raise DeviceAdminError(f"broker reload command failed: {exc}") from exc
            return True
        return False


@dataclass(frozen=True, slots=True)
class DeviceRow:
    """One device as ``list`` shows it."""

    device_id: str
    site: str
    family: str
    credentials: str  # "active", "revoked" or "none"
    last_seen: datetime | None


@dataclass(frozen=True, slots=True)
class Bundle:
    """What a technician copies to the Pi."""

    directory: Path
    command: str


class DeviceAdmin:
    """The device registry and the broker's password file, changed together.

    Args:
        database_url: libpq connection string of a role that may write ``devices``.
        passwords: The broker's password file.
        reload: How to make the broker apply changes.
    """

    def __init__(self, database_url: str, passwords: PasswordFile, reload: BrokerReload) -> None:
        self.database_url = database_url
        self.passwords = passwords
        self.reload = reload

    def add(
        self,
        device: str,
        *,
        site: str,
        family: str,
        name: str = "",
        lat: float | None = None,
        lon: float | None = None,
    ) -> str:
        """Register ``device`` and issue its password (returned once, never stored in clear)."""
        _check_id(device, "device id")
        _check_id(site, "site")
        if family not in FAMILIES:
            raise DeviceAdminError(f"family must be one of {', '.join(FAMILIES)}, not {family!r}")
        if device in self.passwords.entries():
            raise DeviceAdminError(f"{device} already has broker credentials; use rotate")
        with psycopg.connect(self.database_url) as conn:
            inserted = conn.execute(
                "INSERT INTO devices (device_id, site, family, name, lat, lon, credentials_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, now()) ON CONFLICT (device_id) DO NOTHING"
                " RETURNING device_id",
                (device, site, family, name, lat, lon),
            ).fetchone()
            if inserted is None:
                raise DeviceAdminError(
                    f"{device} is already registered; rotate its password or revoke it"
                )
            password = new_password()
            # The database row commits only once the broker knows the password.
            self.passwords.set(device, password)
        self.reload()
        return password

    def rotate(self, device: str) -> str:
        """Issue a new password; the old one stops working at the reload."""
        self._registered(device)
        password = new_password()
        with psycopg.connect(self.database_url) as conn:
            conn.execute(
                "UPDATE devices SET credentials_at = now(), revoked_at = NULL WHERE device_id = %s",
                (device,),
            )
            self.passwords.set(device, password)
        self.reload()
        return password

    def revoke(self, device: str) -> None:
        """Remove the device's credentials; at the reload it is disconnected and refused."""
        self._registered(device)
        with psycopg.connect(self.database_url) as conn:
            conn.execute("UPDATE devices SET revoked_at = now() WHERE device_id = %s", (device,))
            self.passwords.remove(device)
        self.reload()

    def list(self, site: str | None = None) -> list[DeviceRow]:
        """Every registered device (of ``site``), with the state of its credentials."""
        issued = self.passwords.entries()
        with psycopg.connect(self.database_url) as conn:
            rows = conn.execute(
                "SELECT device_id, site, family, revoked_at, last_seen FROM devices"
                " WHERE %(site)s::text IS NULL OR site = %(site)s ORDER BY site, device_id",
                {"site": site},
            ).fetchall()
        result = []
        for device_id, device_site, family, revoked_at, last_seen in rows:
            if device_id in issued:
                state = "active"
            elif revoked_at is not None:
                state = "revoked"
            else:
                state = "none"
            result.append(DeviceRow(device_id, device_site, family, state, last_seen))
        return result

    def _registered(self, device: str) -> None:
        _check_id(device, "device id")
        with psycopg.connect(self.database_url) as conn:
            found = conn.execute("SELECT 1 FROM devices WHERE device_id = %s", (device,)).fetchone()
        if found is None:
            raise DeviceAdminError(f"no device {device!r} is registered; add it first")


def write_bundle(
    directory: Path,
    *,
    device: str,
    site: str,
    password: str,
    broker_url: str,
    ca_file: Path | None,
) -> Bundle:
    """Write the technician's bundle: the password (mode 0600), the CA, and the command."""
    directory.mkdir(parents=True, exist_ok=True)
    password_path = directory / "password"
    fd = os.open(password_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(password + "\n")
    words = [
        "smartcity-edge", "provision", "--device", device, "--site", site,
        "--broker", broker_url, "--username", device, "--password-file", "password",
    ]  # fmt: skip
    if ca_file is not None:
        shutil.copyfile(ca_file, directory / "ca.pem")
        words += ["--ca-file", "ca.pem"]
    command = shlex.join(words) + " --sensor ..."
    (directory / "provision.txt").write_text(
        "# On the device, in this directory (add one --sensor per attached sensor):\n"
        + command
        + "\n",
        encoding="utf-8",
    )
    return Bundle(directory, command)


def _check_id(value: str, what: str) -> None:
    if not is_valid_id(value):
        raise DeviceAdminError(
            f"{what} {value!r} is not valid: use letters, digits, '-' and '_' (a topic level)"
        )
    if what == "device id" and value in RESERVED:
        raise DeviceAdminError(f"{value!r} is a broker service account and cannot be a device id")
