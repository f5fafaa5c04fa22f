"""The device's configuration: one TOML file, checked completely before the agent starts.

Errors name the key and its line (``edge.toml:14: [[sensors]] #2 port: ...``); unknown keys are
refused; secrets come from files (``password_file``) or the environment
(``CITY_EDGE_PASSWORD``), never from the file itself, and never reach a log.

Example ``edge.toml``::

    [device]
    id = "aq-0001"
    site = "centre"

    [broker]
    url = "mqtts://mqtt.example.org:8883"
    fallback_urls = ["mqtts://mqtt-b.example.org:8883"]  # optional: the city's other brokers
    ca_file = "/etc/smartcity-edge/ca.pem"
    password_file = "/etc/smartcity-edge/password"

    [spool]
    path = "/var/lib/smartcity-edge/spool.db"

    [[sensors]]
    name = "pm"
    driver = "sds011"
    port = "/dev/ttyUSB0"
    interval_s = 60
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edge.contract import is_valid_id
from edge.errors import ConfigError
from edge.publisher import BrokerAccount, BrokerSettings
from edge.sensors.registry import DRIVERS, SensorSpec
from edge.settings import load_settings

ENV_PASSWORD = "CITY_EDGE_PASSWORD"  # noqa: S105  # the variable name, not a password


@dataclass(frozen=True, slots=True)
class DeviceSection:
    """``[device]``: who this box is.

    Attributes:
        id: Device id, as provisioned; also the MQTT client id and user name.
        site: The site (district) it belongs to; a topic level.
    """

    id: str
    site: str


@dataclass(frozen=True, slots=True)
class BrokerSection(BrokerAccount):
    """``[broker]``: where to publish, and the account (:class:`~edge.publisher.BrokerAccount`).

    The account's ``username`` is the device id when absent, and its ``password`` is set
    through ``password_file`` or the ``CITY_EDGE_PASSWORD`` variable; ``ca_file`` is used with
    mqtts only (system CAs otherwise).

    Attributes:
        url: ``mqtt://host:port`` or ``mqtts://host:port`` (TLS).
        fallback_urls: The city's other brokers, same scheme and account: when the broker of
            ``url`` cannot be reached, or is lost, the device moves to the next of these (and
            round again), keeping its spooled batches in order.
    """

    url: str
    fallback_urls: tuple[str, ...] = ()

    def __repr__(self) -> str:  # keeps the password out of logs and tracebacks
        secret = "***" if self.password else None
        return f"BrokerSection(url={self.url!r}, username={self.username!r}, password={secret})"


@dataclass(frozen=True, slots=True)
class SpoolSection:
    """``[spool]``: the store-and-forward file.

    Attributes:
        path: SQLite file; its directory must be writable (systemd's StateDirectory).
        max_mb: Size bound; the oldest batches are dropped (and counted) beyond it.
        max_age_h: Readings older than this are dropped instead of sent.
        drain_readings_per_s: Rate at which a backlog is sent after an outage (0: unlimited).
    """

    path: str = "/var/lib/smartcity-edge/spool.db"
    max_mb: float = 200.0
    max_age_h: float = 168.0
    drain_readings_per_s: float = 2_000.0


@dataclass(frozen=True, slots=True)
class AgentSection:
    """``[agent]``: timings.

    Attributes:
        sample_interval_s: Default seconds between samples of a sensor.
        batch_interval_s: Seconds between two telemetry messages.
        status_interval_s: Seconds between two status messages when nothing changes.
    """

    sample_interval_s: float = 10.0
    batch_interval_s: float = 10.0
    status_interval_s: float = 60.0


@dataclass(frozen=True)
class EdgeConfig:
    """The whole validated configuration."""

    device: DeviceSection
    broker: BrokerSection
    spool: SpoolSection
    agent: AgentSection
    sensors: tuple[SensorSpec, ...] = field(default=())
    source: str = "edge.toml"

    def broker_settings(self) -> BrokerSettings:
        """Connection settings for the publisher."""
        parts = urlsplit(self.broker.url)
        tls = parts.scheme == "mqtts"
        default_port = 8883 if tls else 1883
        fallbacks = tuple(
            (other.hostname or "localhost", other.port or default_port)
            for other in map(urlsplit, self.broker.fallback_urls)
        )
        account = {f.name: getattr(self.broker, f.name) for f in fields(BrokerAccount)}
        account["username"] = self.broker.username or self.device.id
        account["ca_file"] = self.broker.ca_file if tls else None
        return BrokerSettings(
            host=parts.hostname or "localhost",
            port=parts.port or default_port,
            fallbacks=fallbacks,
            **account,
        )


class _Locator:
    """Finds the line of a key in the TOML text, for error messages."""

    def __init__(self, text: str, source: str) -> None:
        self.lines = text.splitlines()
        self.source = source

    def line(self, section: str, key: str | None = None, index: int = 0) -> int | None:
        header = re.compile(rf"^\s*\[\[?\s*{re.escape(section)}\s*\]?\]\s*$")
        seen = -1
        start = None
        for number, text in enumerate(self.lines, 1):
            if header.match(text):
                seen += 1
                if seen == index:
                    start = number
                    if key is None:
                        return number
                    continue
            if start is not None:
                if text.lstrip().startswith("["):
                    return start
                if key and re.match(rf"^\s*{re.escape(key)}\s*=", text):
                    return number
        return start

    def error(
        self, message: str, section: str, key: str | None = None, index: int = 0
    ) -> ConfigError:
        number = self.line(section, key, index)
        where = f"{self.source}:{number}" if number else self.source
        return ConfigError(f"{where}: {message}")


_KEY_PATTERNS = (
    re.compile(r"unknown setting '(\w+)'"),
    re.compile(r"required positional argument: '(\w+)'"),
    re.compile(r"[\])]: (\w+) "),
)


def _key_in(message: str) -> str | None:
    """The setting an error message is about, to find its line."""
    for pattern in _KEY_PATTERNS:
        found = pattern.search(message)
        if found:
            return found.group(1)
    return None


def _section(locator: _Locator, cls: type[Any], table: object, name: str) -> Any:
    if not isinstance(table, dict):
        raise locator.error(f"[{name}] must be a table", name)
    try:
        return load_settings(cls, table, source=f"[{name}]")
    except ConfigError as exc:
        raise locator.error(str(exc), name, _key_in(str(exc))) from exc


def parse(text: str, source: str = "edge.toml", env: Mapping[str, str] | None = None) -> EdgeConfig:
    """Validate a configuration document.

    Raises:
        ConfigError: The first problem, with the file, line and key.
    """
    env = os.environ if env is None else env
    locator = _Locator(text, source)
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    unknown = set(document) - {"device", "broker", "spool", "agent", "sensors"}
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {sorted(unknown)}")
    for required in ("device", "broker"):
        if required not in document:
            raise ConfigError(f"{source}: [{required}] is missing")
    device = _section(locator, DeviceSection, document["device"], "device")
    for key in ("id", "site"):
        if not is_valid_id(getattr(device, key)):
            raise locator.error(
                f"{key} {getattr(device, key)!r} must be 1-64 of A-Z a-z 0-9 _ . -", "device", key
            )
    broker_table = (
        dict(document["broker"]) if isinstance(document["broker"], dict) else document["broker"]
    )
    if isinstance(broker_table, dict) and "password" in broker_table:
        raise locator.error(
            "password must not be written in the file: use password_file or "
            f"the {ENV_PASSWORD} variable",
            "broker",
            "password",
        )
    if (
        isinstance(broker_table, dict)
        and ENV_PASSWORD in env
        and "password_file" not in broker_table
    ):
        broker_table["password"] = env[ENV_PASSWORD]
    broker = _section(locator, BrokerSection, broker_table, "broker")
    scheme = urlsplit(broker.url).scheme
    if scheme not in ("mqtt", "mqtts") or not _has_host_and_port(broker.url):
        raise locator.error(
            f"url {broker.url!r} must look like mqtt://host:1883 or mqtts://host:8883",
            "broker",
            "url",
        )
    for other in broker.fallback_urls:
        if urlsplit(other).scheme != scheme or not _has_host_and_port(other):
            raise locator.error(
                f"fallback url {other!r} must look like {scheme}://host:port (the same scheme as"
                " url: one account and one TLS set-up serve every broker)",
                "broker",
                "fallback_urls",
            )
    spool = _section(locator, SpoolSection, document.get("spool", {}), "spool")
    agent = _section(locator, AgentSection, document.get("agent", {}), "agent")
    sensors = _sensors(locator, document.get("sensors", []))
    return EdgeConfig(device, broker, spool, agent, sensors, source)


def _has_host_and_port(url: str) -> bool:
    """Whether ``url`` names a host, and a valid port if it names one."""
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018  # raises ValueError for a port out of range or not a number
    except ValueError:
        return False
    return bool(parts.hostname)


def _sensors(locator: _Locator, raw: object) -> tuple[SensorSpec, ...]:
    if not isinstance(raw, list):
        raise ConfigError(f"{locator.source}: sensors must be a list of [[sensors]] tables")
    specs: list[SensorSpec] = []
    names: set[str] = set()
    for index, table in enumerate(raw):
        label = f"[[sensors]] #{index + 1}"
        if not isinstance(table, dict):
            raise locator.error(f"{label} must be a table", "sensors", index=index)
        options = dict(table)
        name, driver = options.pop("name", None), options.pop("driver", None)
        interval = options.pop("interval_s", None)
        if not is_valid_id(name):
            raise locator.error(
                f"{label}: name {name!r} must be a valid id", "sensors", "name", index
            )
        if name in names:
            raise locator.error(f"{label}: name {name!r} is used twice", "sensors", "name", index)
        names.add(str(name))
        if driver not in DRIVERS:
            known = ", ".join(sorted(DRIVERS))
            raise locator.error(
                f"{label}: driver {driver!r} is not one of {known}", "sensors", "driver", index
            )
        if interval is not None and (
            isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0
        ):
            raise locator.error(
                f"{label}: interval_s must be a positive number", "sensors", "interval_s", index
            )
        try:
            parsed = load_settings(DRIVERS[driver].options, options, source=f"{label} ({driver})")
        except ConfigError as exc:
            raise locator.error(str(exc), "sensors", _key_in(str(exc)), index) from exc
        specs.append(
            SensorSpec(
                str(name), str(driver), None if interval is None else float(interval), parsed
            )
        )
    return tuple(specs)


def load(path: str | Path, env: Mapping[str, str] | None = None) -> EdgeConfig:
    """Read and validate a configuration file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    return parse(text, str(path), env)
