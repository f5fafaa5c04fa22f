"""``smartcity-edge doctor``: check a device on the spot and print a pass/fail list.

Checks, in order: the configuration, the clock, the spool's disk, each sensor, then the broker
step by step (reachable, TLS, accepted credentials), so the first failing line says where the
trouble is. Exit status 0 when everything passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.clock import Clock, kernel_synchronised
from edge.config import EdgeConfig, load
from edge.errors import ConfigError
from edge.publisher import BrokerSettings
from edge.sensors.registry import build_sensor
from edge.spool import Spool


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the report."""

    ok: bool
    what: str
    detail: str


def check_clock(clock: Clock | None = None) -> Check:
    """Is the clock past the build date, and synchronised?"""
    clock = clock or Clock()
    now = clock.now()
    if not clock.sane(now):
        return Check(
            False, "clock", f"{now:%Y-%m-%d %H:%M} is before this software was built; no NTP yet?"
        )
    synced = kernel_synchronised()
    if synced is False:
        return Check(False, "clock", f"{now:%Y-%m-%d %H:%M:%S} UTC, not synchronised (check NTP)")
    return Check(
        True,
        "clock",
        f"{now:%Y-%m-%d %H:%M:%S} UTC, {'synchronised' if synced else 'sync state unknown'}",
    )


def check_spool(config: EdgeConfig) -> list[Check]:
    """Free space beside the spool, and the spool itself."""
    path = Path(config.spool.path)
    folder = path.parent
    if not folder.exists():
        return [Check(False, "spool", f"{folder} does not exist")]
    free_mb = shutil.disk_usage(folder).free / 1024 / 1024
    checks = [
        Check(
            free_mb >= config.spool.max_mb,
            "disk",
            f"{free_mb:,.0f} MB free in {folder} (spool may use {config.spool.max_mb:,.0f} MB)",
        )
    ]
    try:
        spool = Spool(path)
    except Exception as exc:  # any failure here is the answer the technician needs
        checks.append(Check(False, "spool", f"{path}: {exc}"))
        return checks
    detail = f"{path}: {spool.depth()} batches waiting, {spool.dropped()} readings dropped so far"
    if spool.recovered:
        detail += f"; a corrupt file was set aside as {', '.join(spool.recovered)}"
    spool.close()
    checks.append(Check(not spool.recovered, "spool", detail))
    return checks


def check_sensors(config: EdgeConfig) -> list[Check]:
    """Read every configured sensor once."""
    checks = []
    clock = Clock()
    for spec in config.sensors:
        label = f"sensor {spec.name}"
        try:
            sensor = build_sensor(spec)
            readings = sensor.read(clock.now())
        except Exception as exc:  # a driver's failure, whatever it is, is the finding
            checks.append(Check(False, label, f"{spec.driver}: {exc}"))
            continue
        shown = ", ".join(f"{r.metric}={r.value:g}" for r in readings) or "no reading yet"
        checks.append(Check(True, label, f"{spec.driver}: {shown}"))
    return checks


def check_broker(broker: BrokerSettings, client_id: str, timeout: float = 5.0) -> list[Check]:
    """Reachability, then TLS, then an MQTT CONNECT with the device's credentials."""
    address = f"{broker.host}:{broker.port}"
    try:
        raw = socket.create_connection((broker.host, broker.port), timeout=timeout)
    except OSError as exc:
        return [Check(False, "broker", f"{address} is unreachable: {exc.strerror or exc}")]
    checks = [Check(True, "broker", f"{address} is reachable")]
    if broker.ca_file is not None:
        context = ssl.create_default_context(cafile=broker.ca_file)
        try:
            with context.wrap_socket(raw, server_hostname=broker.host) as tls:
                version = tls.version()
        except (ssl.SSLError, OSError) as exc:
            checks.append(Check(False, "tls", f"handshake with {address} failed: {exc}"))
            return checks
        checks.append(
            Check(True, "tls", f"{version}, certificate verified against {broker.ca_file}")
        )
    else:
        raw.close()
        checks.append(Check(True, "tls", "not used (mqtt://): credentials travel in clear"))
    checks.append(_check_login(broker, client_id, timeout))
    return checks


def _check_login(broker: BrokerSettings, client_id: str, timeout: float) -> Check:
    answered = threading.Event()
    result: dict[str, str] = {}

    def on_connect(
        client: mqtt.Client, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        result["reason"] = str(reason)
        result["failed"] = "yes" if getattr(reason, "is_failure", False) else ""
        answered.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{client_id}-doctor")
    if broker.username is not None:
        client.username_pw_set(broker.username, broker.password)
    if broker.ca_file is not None:
        client.tls_set_context(ssl.create_default_context(cafile=broker.ca_file))
    client.on_connect = on_connect
    try:
        client.connect(broker.host, broker.port, keepalive=10)
        client.loop_start()
        answered.wait(timeout)
    except (OSError, ValueError) as exc:
        return Check(False, "login", f"MQTT connection failed: {exc}")
    finally:
        client.disconnect()
        client.loop_stop()
    if not answered.is_set():
        return Check(False, "login", f"no CONNACK within {timeout:g}s")
    if result["failed"]:
        return Check(False, "login", f"broker refused {broker.username!r}: {result['reason']}")
    return Check(True, "login", f"accepted as {broker.username!r}")


def diagnose(config_path: str, *, skip_sensors: bool = False) -> list[Check]:
    """Every check, in order; later checks are skipped when the configuration is unusable."""
    try:
        config = load(config_path)
    except ConfigError as exc:
        return [Check(False, "config", str(exc))]
    checks = [
        Check(
            True,
            "config",
            f"{config_path}: {config.device.id} at {config.device.site}, "
            f"{len(config.sensors)} sensors",
        )
    ]
    checks.append(check_clock())
    checks += check_spool(config)
    if not skip_sensors:
        checks += check_sensors(config)
    checks += check_broker(config.broker_settings(), config.device.id)
    return checks


def report(checks: list[Check]) -> str:
    """The list as printed."""
    width = max(len(c.what) for c in checks)
    return "\n".join(f"{'PASS' if c.ok else 'FAIL'}  {c.what:<{width}}  {c.detail}" for c in checks)


def run(args: argparse.Namespace) -> int:
    """``smartcity-edge doctor``."""
    started = time.monotonic()
    checks = diagnose(args.config, skip_sensors=args.skip_sensors)
    print(report(checks))
    failed = sum(not c.ok for c in checks)
    print(f"\n{len(checks) - failed} passed, {failed} failed in {time.monotonic() - started:.1f}s")
    return 1 if failed else 0
