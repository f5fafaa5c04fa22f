"""The production broker configuration from ``deploy/mosquitto`` running for real in a test.

The configuration and ACL files are used as shipped; only the container paths and the two ports
are rewritten to the test's temporary directory and free loopback ports. A certificate authority
and a server certificate for 127.0.0.1 are made for each run with ``openssl``.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from smartcity.broker_passwords import PasswordFile
from tests.services._process import (
    ServiceUnavailableError,
    find_binary,
    free_port,
    hand_over,
    service_user,
    tail,
    terminate,
    wait_for_port,
)

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "mosquitto"


def make_ca(directory: Path, name: str = "ca") -> tuple[Path, Path]:
    """A self-signed certificate authority: (certificate, key)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ServiceUnavailableError("openssl is missing: run `make test` (installs it)")
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", f"/CN=Smart city test {name}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def make_server_cert(directory: Path, ca: tuple[Path, Path]) -> tuple[Path, Path]:
    """A server certificate for 127.0.0.1 and localhost, signed by ``ca``."""
    openssl = shutil.which("openssl") or "openssl"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    extensions = directory / "server.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    subprocess.run(
        [openssl, "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
         "-keyout", str(key), "-out", str(csr)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    subprocess.run(
        [openssl, "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
         "-CAcreateserial", "-days", "2", "-extfile", str(extensions), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


class SecuredBroker:
    """Mosquitto with ``deploy/mosquitto/mosquitto.conf`` and ``acl``.

    Attributes:
        port: The services' plain listener (1883 in production).
        tls_port: The devices' TLS listener (8883 in production).
        passwords: The broker's password file, for the test to add accounts to.
        ca_file: The CA devices verify the broker with.
    """

    def __init__(self) -> None:
        self.binary = find_binary("mosquitto", "/usr/sbin", "/usr/local/sbin")
        self.directory = Path(tempfile.mkdtemp(prefix="smartcity-secure-mqtt-"))
        self.user = service_user("mosquitto")
        self.port, self.tls_port = free_port(), free_port()
        config_dir, certs, data = (self.directory / d for d in ("config", "certs", "data"))
        for path in (config_dir, certs, data):
            path.mkdir()
        ca = make_ca(certs)
        self.ca_file = ca[0]
        make_server_cert(certs, ca)
        shutil.copyfile(DEPLOY / "acl", config_dir / "acl")
        self.passwords = PasswordFile(config_dir / "passwords")
        self.passwords.path.write_text("")
        text = (DEPLOY / "mosquitto.conf").read_text()
        text = text.replace("/mosquitto/config/", f"{config_dir}/")
        text = text.replace("/mosquitto/auth/", f"{config_dir}/")
        text = text.replace("/mosquitto/certs/", f"{certs}/")
        text = text.replace("/mosquitto/data/", f"{data}/")
        text = text.replace("listener 1883", f"listener {self.port} 127.0.0.1")
        text = text.replace("listener 8883", f"listener {self.tls_port} 127.0.0.1")
        self.log_path = self.directory / "mosquitto.log"
        text = text.replace("log_dest stdout", f"log_dest file {self.log_path}")
        self.config_path = config_dir / "mosquitto.conf"
        self.config_path.write_text(text)
        for path in (
            self.directory,
            config_dir,
            certs,
            data,
            *config_dir.iterdir(),
            *certs.iterdir(),
        ):
            hand_over(path, self.user)
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start and wait for both listeners."""
        self._process = subprocess.Popen(
            [self.binary, "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        if not (wait_for_port(self.port, 10) and wait_for_port(self.tls_port, 10)):
            self.stop()
            raise ServiceUnavailableError(
                f"secured mosquitto did not start:\n{tail(self.log_path)}"
            )

    def reload(self) -> None:
        """What ``smartcity devices`` asks for: SIGHUP, re-reading passwords and ACL."""
        assert self._process is not None
        self._process.send_signal(signal.SIGHUP)

    @property
    def pid(self) -> int:
        """The broker's process id."""
        assert self._process is not None
        return self._process.pid

    def stop(self) -> None:
        """Stop the broker."""
        process, self._process = self._process, None
        terminate(process)

    def cleanup(self) -> None:
        """Stop and remove the directory."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
