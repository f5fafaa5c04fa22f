"""The systemd unit and the watchdog protocol the agent speaks to it."""

from __future__ import annotations

import configparser
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from edge.sdnotify import Notifier

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "edge" / "smartcity-edge.service"


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    return parser


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: run `make deps`"
    # ExecStart names the installed binary; point it somewhere that exists to verify the rest.
    text = UNIT.read_text().replace(
        "/opt/smartcity-edge/bin/smartcity-edge run --config /etc/smartcity-edge/edge.toml",
        "/bin/true",
    )
    copy = tmp_path / "smartcity-edge.service"
    copy.write_text(text)
    result = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


def test_the_unit_restarts_watches_and_confines_the_agent() -> None:
    service = unit()["Service"]
    assert service["Type"] == "notify"
    assert service["Restart"] == "always"
    assert int(service["WatchdogSec"]) > 0
    assert service["StateDirectory"] == "smartcity-edge"
    assert service["ProtectSystem"] == "strict"
    assert service["User"] == "smartcity-edge"
    assert service["DevicePolicy"] == "closed"
    allowed = [
        line.split("=", 1)[1]
        for line in UNIT.read_text().splitlines()
        if line.startswith("DeviceAllow=")
    ]
    assert allowed == ["char-ttyS rw", "char-ttyUSB rw", "char-ttyAMA rw", "char-i2c rw"]


def test_the_notifier_sends_ready_and_watchdog_pings(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(path)
        listener.settimeout(2)
        notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
        notifier.send("READY=1")
        notifier.heartbeat()
        notifier.heartbeat()  # within half the period: not sent again
        assert listener.recv(100) == b"READY=1"
        assert listener.recv(100) == b"WATCHDOG=1"
        listener.settimeout(0.2)
        with pytest.raises(TimeoutError):
            listener.recv(100)


def test_without_systemd_the_notifier_is_silent() -> None:
    Notifier({}).send("READY=1")  # no socket, no error
