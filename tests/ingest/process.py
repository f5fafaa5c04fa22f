"""Ingest as a separate process, as it runs in production: started, killed, restarted."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from ingest.config import ENV_PREFIX, IngestConfig
from tests.services._process import free_port, tail


def environment(config: IngestConfig) -> dict[str, str]:
    """The ``CITY_INGEST_*`` variables that reproduce ``config``."""
    env = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if value is not None:
            if isinstance(value, tuple):  # a list setting: comma-separated
                text = ",".join(map(str, value))
            else:
                text = str(value).lower() if isinstance(value, bool) else str(value)
            env[f"{ENV_PREFIX}{field.name.upper()}"] = text
    return env


class IngestProcess:
    """``python -m ingest`` with a fixed health port, its output in ``log_path``."""

    def __init__(self, config: IngestConfig, log_path: Path) -> None:
        self.health_port = free_port()
        self.config = dataclasses.replace(config, health_port=self.health_port)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, ready_timeout_s: float = 30.0) -> None:
        """Start and wait until /readyz says it is connected."""
        env = {**os.environ, **environment(self.config), "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ingest"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        self.starts += 1
        if not self.wait_ready(ready_timeout_s):
            raise AssertionError(f"ingest did not become ready:\n{tail(self.log_path)}")

    def get(self, path: str) -> tuple[int, str]:
        """GET a path on the health endpoint: (status, body); (0, "") when unreachable."""
        url = f"http://127.0.0.1:{self.health_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # loopback
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def wait_ready(self, timeout_s: float) -> bool:
        """Poll /readyz until 200 or the time is up (bounded)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.get("/readyz")[0] == 200:
                return True
            if self.process is not None and self.process.poll() is not None:
                return False
            time.sleep(0.1)
        return False

    def metric(self, name: str, attempts: int = 5) -> float:
        """The value of one unlabelled metric from /metrics (asked again, bounded, when a
        worker under full load does not answer within the request's timeout)."""
        for _ in range(attempts):
            status, body = self.get("/metrics")
            for line in body.splitlines():
                if line.startswith(f"{name} "):
                    return float(line.split()[1])
            if status == 200:
                break
        raise AssertionError(f"metric {name} not found")

    def alive(self) -> bool:
        """Whether the process is running."""
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no flush, no acknowledgement, no goodbye."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int:
        """SIGTERM and wait for the graceful stop; returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
