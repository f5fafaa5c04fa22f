"""Ingest settings: TOML file, ``CITY_INGEST_*`` environment, secret files; checked before start."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from edge.settings import load_section
from ingest.retention import Retention

ENV_PREFIX = "CITY_INGEST_"


@dataclass(frozen=True, slots=True)
class IngestConfig:
    """Everything the ingest service needs, with production defaults.

    Attributes:
        database_url: libpq connection string of the ingest (writer) role.
        broker_host: MQTT broker host.
        broker_port: MQTT broker port.
        broker_username: Ingest's broker account.
        broker_password: Its password (prefer ``broker_password_file``); never logged.
        broker_ca_file: CA bundle; setting it turns TLS on.
        more_brokers: The city's other brokers, ``host:port`` each, same account and TLS: ingest
            consumes from every one (devices move between them when one is lost), and the
            readings' key (device, sequence) makes a batch seen through two count once.
        mqtt_protocol: ``5`` (shared subscriptions, receive maximum) or ``3.1.1`` for old brokers.
        client_id: MQTT client id; stable, so the broker keeps this worker's session while it
            is away.
        shared_group: MQTT 5 shared-subscription group; workers in one group split the load.
        session_expiry_s: How long the broker keeps queueing for this worker while it is away.
        receive_maximum: Unacknowledged messages the broker may have in flight to this
            worker: the backpressure window, since ingest acknowledges only after commit.
        keepalive_s: MQTT keepalive (an MQTT 5 broker's Server Keep Alive replaces it).
        max_packet_bytes: The largest MQTT packet accepted. MQTT 5 brokers are told and drop
            larger messages; on 3.1.1 a larger one is read past, recorded as a rejection and
            acknowledged, so it cannot block the session.
        batch_max_rows: A write is started when this many readings are waiting...
        batch_max_age_s: ...or when the oldest waiting message is this old.
        queue_max_messages: Messages received but not yet written, at most.
        max_future_s: Readings stamped further ahead of ingest's clock than this are refused.
        max_past_s: Readings older than this are refused (edge agents spool for days offline).
        timescaledb: ``auto``, ``require`` or ``off``, for the schema migration.
        migrate: Apply pending schema migrations at start.
        health_host: Interface for /healthz, /readyz and /metrics.
        health_port: Port for them; 0 picks a free one, -1 turns the endpoint off.
        stall_after_s: The watchdog reports (and reconnects) when no telemetry arrived for this
            long while devices report themselves online.
        log_level: Python logging level name.
        log_format: ``text`` for people, ``json`` (one object per line) for log collectors.
        detection: Run anomaly detection and alerts on every committed batch. Every worker of
            a city gives the same answer: with it, each writes detection's feed and judges the
            partitions it owns.
        detection_lease_s: A stopped worker's detection partitions move to the others after
            this long without a heartbeat.
        alerts_per_site_per_minute: New alerts allowed per district per minute; more wait.
        alert_topic_prefix: Alerts are published under ``{prefix}/{site}/{device}/{kind}``;
            empty turns publishing off.
        checkpoint_every_s: How often changed detector state is saved to the database.
        aqi_scheme: Air-quality index whose bands raise alerts (``daqi-2013``, ``eaqi-2021``).
        detection_warmup_s: How long a new stream learns before it can raise statistical alerts.
        detection_clock: ``wall`` (live devices) or ``readings``: the time-driven checks follow
            the readings' own time, for a worker fed by ``smartcity replay`` at a speed-up.
        detection_readings_window_s: With the ``readings`` clock, the time-driven checks run at
            the end of each window of this much acquisition time: an hour for history replayed
            at a speed-up (as the offline benchmarks judge it), a minute for live devices.
        city_timezone: IANA zone for hour-of-day patterns and the times in alert messages.
        rollup_every_s: How often the 1-minute, 1-hour and 1-day rollups catch up with what was
            stored (0 turns it off, for a deployment where another worker does it).
        rollup_settle_s: A minute is rolled up once it has been over this long, so the minute
            still filling is not recomputed on every round (later readings mark it again).
        retention_raw_days: Days raw readings are kept (whole chunks dropped under TimescaleDB).
        retention_minute_days: Days 1-minute rollups are kept.
        retention_hour_days: Days 1-hour rollups are kept (0: for ever).
        retention_day_days: Days 1-day rollups are kept (0: for ever).
        retention_every_s: How often retention runs (0: never; ``smartcity retention`` then).
    """

    database_url: str = "postgresql:///smartcity"
    broker_host: str = "localhost"
    broker_port: int = 1883
    broker_username: str | None = None
    broker_password: str | None = None
    broker_ca_file: str | None = None
    more_brokers: tuple[str, ...] = ()
    mqtt_protocol: Literal["5", "3.1.1"] = "5"
    client_id: str = "smartcity-ingest-1"
    shared_group: str | None = None
    session_expiry_s: int = 7 * 24 * 3600
    receive_maximum: int = 10_000
    keepalive_s: int = 30
    max_packet_bytes: int = 16 << 20
    batch_max_rows: int = 10_000
    batch_max_age_s: float = 0.25
    queue_max_messages: int = 10_000
    max_future_s: float = 300.0
    max_past_s: float = 31 * 24 * 3600.0
    timescaledb: Literal["auto", "require", "off"] = "auto"
    migrate: bool = True
    health_host: str = "127.0.0.1"
    health_port: int = 9108
    stall_after_s: float = 120.0
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    detection: bool = True
    detection_lease_s: float = 10.0
    alerts_per_site_per_minute: int = 30
    alert_topic_prefix: str = "city/alerts/v1"
    checkpoint_every_s: float = 300.0
    aqi_scheme: Literal["daqi-2013", "eaqi-2021"] = "daqi-2013"
    detection_warmup_s: float = 86_400.0
    detection_clock: Literal["wall", "readings"] = "wall"
    detection_readings_window_s: float = 3600.0
    city_timezone: str = "Europe/London"
    rollup_every_s: float = 5.0
    rollup_settle_s: float = 30.0
    retention_raw_days: int = 90
    retention_minute_days: int = 730
    retention_hour_days: int = 0
    retention_day_days: int = 0
    retention_every_s: float = 3600.0

    def __post_init__(self) -> None:
        if not 1 <= self.receive_maximum <= 65_535:
            raise ValueError("receive_maximum must be within 1..65535")
        if self.shared_group is not None and self.mqtt_protocol != "5":
            raise ValueError("shared_group needs mqtt_protocol 5")
        if (
            self.mqtt_protocol == "3.1.1"
            and self.broker_password is not None
            and self.broker_username is None
        ):
            raise ValueError("MQTT 3.1.1 sends a password only with broker_username")
        if not 0 <= self.keepalive_s <= 65_535:
            raise ValueError("keepalive_s must be within 0..65535 (0 turns it off)")
        if not 1024 <= self.max_packet_bytes <= 268_435_460:
            raise ValueError("max_packet_bytes must be within 1024..268435460")
        if not -1 <= self.health_port < 65_536:
            raise ValueError("health_port must be -1 (off), 0 (any) or a port number")
        for name in (
            "batch_max_rows",
            "queue_max_messages",
            "broker_port",
            "alerts_per_site_per_minute",
            "checkpoint_every_s",
            "detection_lease_s",
            "detection_readings_window_s",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        self.brokers()  # refuses an address without a valid port
        self.retention()  # refuses a policy that cannot hold
        if self.retention_every_s < 0:
            raise ValueError("retention_every_s must be 0 (never) or positive")
        if self.rollup_every_s < 0 or self.rollup_settle_s < 0:
            raise ValueError("rollup_every_s and rollup_settle_s must not be negative")
        if any(c in self.alert_topic_prefix for c in "+#") or self.alert_topic_prefix.endswith("/"):
            raise ValueError("alert_topic_prefix must be a topic without wildcards or trailing /")
        try:
            ZoneInfo(self.city_timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"city_timezone {self.city_timezone!r} is not a known zone") from None

    def brokers(self) -> tuple[tuple[str, int], ...]:
        """Every broker to consume from, ``(host, port)``: ``broker_host`` first."""
        found = [(self.broker_host, self.broker_port)]
        for address in self.more_brokers:
            host, _, port = address.rpartition(":")
            if not host or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65_536:
                raise ValueError(f"more_brokers entry {address!r} must look like host:port")
            found.append((host.strip("[]"), int(port)))
        if len(set(found)) != len(found):
            raise ValueError("more_brokers names a broker twice")
        return tuple(found)

    def retention(self) -> Retention:
        """The retention policy these settings describe."""
        return Retention(
            self.retention_raw_days,
            self.retention_minute_days,
            self.retention_hour_days,
            self.retention_day_days,
        )

    def __repr__(self) -> str:  # the password and the database URL's password stay out of logs
        return (
            f"IngestConfig(broker={self.broker_host}:{self.broker_port}, "
            f"more_brokers={list(self.more_brokers)}, "
            f"client_id={self.client_id!r}, shared_group={self.shared_group!r})"
        )


def load(path: str | None = None, env: Mapping[str, str] | None = None) -> IngestConfig:
    """Load the ingest settings from ``path`` (TOML, ``[ingest]`` table) and the environment.

    Raises:
        ConfigError: With the offending key in the message.
    """
    return load_section(IngestConfig, "ingest", ENV_PREFIX, path, env)
