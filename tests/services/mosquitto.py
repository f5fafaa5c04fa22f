"""A real Mosquitto broker in a temporary directory on a free loopback port."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

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

CONFIG = """\
listener {port} 127.0.0.1
allow_anonymous true
persistence true
persistence_location {directory}/
autosave_interval 1
# Ingest acknowledges only after commit: let the queue for an absent ingest grow large.
max_queued_messages {max_queued}
max_inflight_messages 1000
log_dest file {directory}/mosquitto.log
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
{extra}
"""


class Mosquitto:
    """One broker process; :meth:`restart` keeps its port and persisted sessions."""

    def __init__(self, extra_config: str = "", max_queued: int = 200_000) -> None:
        self.binary = find_binary("mosquitto", "/usr/sbin", "/usr/local/sbin")
        self.directory = Path(tempfile.mkdtemp(prefix="smartcity-mqtt-"))
        self.user = service_user("mosquitto")
        hand_over(self.directory, self.user)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.config_path = self.directory / "mosquitto.conf"
        self.config_path.write_text(
            CONFIG.format(
                port=self.port, directory=self.directory, extra=extra_config, max_queued=max_queued
            )
        )
        self.log_path = self.directory / "mosquitto.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the broker and wait until it accepts connections."""
        self._process = subprocess.Popen(
            [self.binary, "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        if not wait_for_port(self.port, 10):
            self.stop()
            raise ServiceUnavailableError(f"mosquitto did not start:\n{tail(self.log_path)}")

    def stop(self, *, kill: bool = False) -> None:
        """Stop the broker (SIGTERM saves its persistence file; ``kill`` does not)."""
        process, self._process = self._process, None
        terminate(process, kill=kill)

    def restart(self) -> None:
        """Stop and start again on the same port with the same persisted state."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop and remove the directory."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
