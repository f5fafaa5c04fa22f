"""``smartcity demo``: the whole platform on one machine with nothing installed but Python.

Embedded PostgreSQL and a broker run under this process; ingest, the dashboard, the planner
API and the simulated fleet run as child processes, exactly as they would in production. A new
data directory starts with a week of the city's history (:mod:`smartcity.demo_history`), so the
detectors have learned and the alert history is there from the first minute. Data stays in the
data directory between runs. Ctrl-C stops everything in reverse order, each part
finishing its work.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from api import tokens
from dashboard import accounts
from edge.errors import CityError
from edge.fleet import DeviceSpec, plan_fleet
from ingest.config import IngestConfig
from ingest.registry import DeviceRecord, register_devices
from ingest.schema import migrate
from smartcity import demo_history
from smartcity.demo_city import write_city_map
from smartcity.embedded import BrokerKind, EmbeddedPostgres, start_broker
from smartcity.errors import CommandError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DemoSettings:
    """What the demo runs."""

    data_dir: Path
    devices: int = 60
    seed: int = 1
    broker: BrokerKind = "auto"
    mqtt_port: int = 1883
    dashboard_port: int = 8050
    api_port: int = 8060
    # As the history's readings: a count per interval (vehicles) means the same in both.
    sample_interval_s: float = demo_history.INTERVAL_S
    batch_interval_s: float = 10.0
    duration_s: float | None = None
    history_days: float = demo_history.DAYS  # written on a new data directory only; 0: none
    incidents: bool = True  # the scripted incidents of every run's first minutes


def _port(preferred: int) -> int:
    """``preferred`` if it is free on loopback, else any free port."""
    for candidate in (preferred, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise RuntimeError("no free port on 127.0.0.1")


class Child:
    """A platform process with its output in a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115  # closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, *args],
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the demo only; it stops children in order
        )

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.process.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, wait for the graceful stop, SIGKILL if it does not come."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0fs; killing it", self.name, timeout)
                self.process.kill()
                self.process.wait(5)
        self._log.close()


def _count(dsn: str) -> tuple[int, int, int]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM devices),"
            " (SELECT count(*) FROM devices WHERE last_seen IS NOT NULL),"
            " (SELECT count(*) FROM readings)"
        ).fetchone()
    return (int(row[0]), int(row[1]), int(row[2])) if row else (0, 0, 0)


def run(settings: DemoSettings) -> int:
    """Run the demo until Ctrl-C, SIGTERM, a child failing, or ``duration_s``."""
    data = settings.data_dir.resolve()
    logs = data / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    print(f"data directory: {data}", flush=True)
    database = EmbeddedPostgres(data / "pgdata")
    database.start()
    children: list[Child] = []
    broker = None
    try:
        dsn = database.ensure_database("smartcity")
        migrate(dsn, timescaledb="auto", city_zone=IngestConfig().city_timezone)
        specs = plan_fleet(settings.devices, seed=settings.seed)
        register_devices(
            dsn, [DeviceRecord(s.device, s.site, s.family, s.name, s.lat, s.lon) for s in specs]
        )
        # Each service logs in on its own least-privilege role, as in production.
        ingest_dsn, dashboard_dsn, api_dsn = (
            _service_login(dsn, group)
            for group in ("smartcity_ingest", "smartcity_dashboard", "smartcity_api")
        )
        broker = start_broker(settings.broker, data / "mosquitto", _port(settings.mqtt_port))
        print(f"MQTT broker ({broker.kind}) on {broker.host}:{broker.port}", flush=True)
        web_port = _port(settings.dashboard_port)
        common = {"PYTHONUNBUFFERED": "1"}
        children.append(
            Child(
                "ingest",
                ["-m", "ingest"],
                {
                    **common,
                    "CITY_INGEST_DATABASE_URL": ingest_dsn,
                    "CITY_INGEST_BROKER_HOST": broker.host,
                    "CITY_INGEST_BROKER_PORT": str(broker.port),
                    "CITY_INGEST_MQTT_PROTOCOL": "5" if broker.kind == "mosquitto" else "3.1.1",
                    "CITY_INGEST_CLIENT_ID": "demo-ingest",
                    "CITY_INGEST_MIGRATE": "false",
                    # The detectors' time is the readings': the week of history is judged at
                    # the times it happened, not as a week-long silence ending now.
                    "CITY_INGEST_DETECTION_CLOCK": "readings",
                    # ...and, once live, a device's silence is noticed within minutes.
                    "CITY_INGEST_DETECTION_READINGS_WINDOW_S": "60",
                    # Chosen like the other ports, so a second demo on the machine starts too.
                    "CITY_INGEST_HEALTH_PORT": str(_port(9108)),
                },
                logs,
            )
        )
        children.append(
            Child(
                "dashboard",
                ["-m", "dashboard"],
                {
                    **common,
                    "CITY_DASHBOARD_DATABASE_URL": dashboard_dsn,
                    "CITY_DASHBOARD_PORT": str(web_port),
                    "CITY_DASHBOARD_TITLE": "City telemetry (demo)",
                    # Loopback only: plain HTTP, and the one-time link printed below.
                    "CITY_DASHBOARD_COOKIE_SECURE": "false",
                    "CITY_DASHBOARD_LOGIN_LINKS": "true",
                    "CITY_DASHBOARD_DISTRICTS_FILE": str(write_city_map(data)),
                },
                logs,
            )
        )
        api_port = _port(settings.api_port)
        children.append(
            Child(
                "api",
                ["-m", "api"],
                {**common, "CITY_API_DATABASE_URL": api_dsn, "CITY_API_PORT": str(api_port)},
                logs,
            )
        )
        print(f"dashboard: http://127.0.0.1:{web_port}/login/link/{_demo_login(dsn)}", flush=True)
        print(f"planner API: http://127.0.0.1:{api_port}/docs", flush=True)
        print(f"planner token: {_demo_token(dsn)}", flush=True)
        history_end = _history_to_write(dsn, settings, data)
        if history_end is not None:
            threading.Thread(target=_work_alerts, args=(dsn, stop), daemon=True).start()
            try:
                _write_history(dsn, specs, settings, data, history_end, stop)
            except _StoppedError:
                return 0  # the next run writes the rest (to the same end; nothing twice)
        children.append(
            Child(
                "fleet",
                [
                    "-m",
                    "edge",
                    "simulate",
                    "--devices",
                    str(settings.devices),
                    "--seed",
                    str(settings.seed),
                    "--broker",
                    f"{broker.host}:{broker.port}",
                    "--sample-interval",
                    str(settings.sample_interval_s),
                    "--batch-interval",
                    str(settings.batch_interval_s),
                    # Something to watch in the first minutes (edge.incidents), labelled.
                    *(
                        ["--incidents", "--labels", str(data / "incidents.jsonl")]
                        if settings.incidents
                        else []
                    ),
                ],
                common,
                logs,
            )
        )
        print(f"{settings.devices} simulated devices; logs in {logs}; Ctrl-C stops", flush=True)
        return _watch(settings, dsn, children, stop)
    finally:
        for child in reversed(children):  # fleet first, then the API, dashboard, ingest
            child.stop()
        if broker is not None:
            broker.stop()
        database.stop()
        print("demo stopped", flush=True)


def _service_login(dsn: str, group: str) -> str:
    """A login in ``group`` for one demo service; its connection string.

    Made by the owner at ``dsn``, or given a new password when an earlier demo made it.
    """
    user = group.replace("smartcity_", "demo_")
    password = secrets.token_urlsafe(16)
    with psycopg.connect(dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)).fetchone()
        statement = (
            "ALTER ROLE {} LOGIN PASSWORD {}" if exists else "CREATE ROLE {} LOGIN PASSWORD {}"
        )
        conn.execute(sql.SQL(statement).format(sql.Identifier(user), sql.Literal(password)))
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(user)))
    return make_conninfo(dsn, user=user, password=password)


class _StoppedError(CommandError):
    """Asked to stop while the history was being written."""


def _history_to_write(dsn: str, settings: DemoSettings, data: Path) -> datetime | None:
    """Where the history to write ends; None when there is none to write.

    Now on a new data directory, the same end again after an interrupted first run; none once
    written, or when the data directory already holds a city running live.
    """
    if settings.history_days <= 0:
        return None
    marker = data / _HISTORY_MARKER
    if marker.exists():
        state = json.loads(marker.read_text(encoding="utf-8"))
        return None if state["done"] else datetime.fromisoformat(state["end"])
    if _count(dsn)[2] > 0:
        return None  # a city already running live: no history is slipped in under it
    end = datetime.now(UTC)
    marker.write_text(json.dumps({"end": end.isoformat(), "done": False}), encoding="utf-8")
    return end


_HISTORY_MARKER = "history.json"


def _write_history(  # noqa: PLR0917  # the demo's state, passed on
    dsn: str,
    specs: list[DeviceSpec],
    settings: DemoSettings,
    data: Path,
    end: datetime,
    stop: threading.Event,
) -> None:
    """The week before ``end``, with a progress bar, before the live fleet starts."""
    print(f"writing {settings.history_days:g} days of the city's history (first run only)",
          flush=True)  # fmt: skip
    shown = [-1]

    def progress(share: float) -> None:
        if stop.is_set():
            raise _StoppedError  # Ctrl-C during the backfill: stop as anywhere else
        tenth = int(share * 10)
        if tenth > shown[0]:
            shown[0] = tenth
            print(f"history {demo_history.bar(share)}", flush=True)

    done = demo_history.backfill(
        dsn, specs, end=end, days=settings.history_days, seed=settings.seed,
        labels=data / "history-faults.jsonl", progress=progress,
    )  # fmt: skip
    state = {"end": end.isoformat(), "done": True}
    (data / _HISTORY_MARKER).write_text(json.dumps(state), encoding="utf-8")
    print(f"history written: {done.readings:,} readings with {done.faults} labelled faults in"
          f" {done.seconds:.0f} s; the detectors learn from it now", flush=True)  # fmt: skip


def _work_alerts(dsn: str, stop: threading.Event) -> None:
    """While detection judges the week, a demo operator works through some of its alerts."""
    try:
        acknowledged, resolved = demo_history.work_alerts(dsn, stop=stop.is_set)
    except (psycopg.Error, CityError) as exc:
        log.warning("the demo operator could not work the alerts: %s", exc)
        return
    print(f"{demo_history.OPERATOR} acknowledged {acknowledged} and resolved {resolved} of the"
          " alerts, with comments (Alerts page)", flush=True)  # fmt: skip


def _demo_login(dsn: str) -> str:
    """A one-time login link token for the demo's admin account (made on the first run)."""
    with psycopg.connect(dsn) as conn:
        # Made on the first run, whose output showed its password.
        if conn.execute("SELECT 1 FROM users WHERE name = 'demo'").fetchone() is None:
            account = accounts.create(conn, "demo", "admin")
            print(f"dashboard account: demo / {account.password}; second factor for an"
                  f" authenticator app: {account.totp_uri}", flush=True)  # fmt: skip
        now = datetime.now(UTC)
        return accounts.login_link(conn, "demo", now, timedelta(hours=1))


def _demo_token(dsn: str) -> str:
    """A fresh planner token for this run of the demo (the API's own login on a real city)."""
    with psycopg.connect(dsn) as conn:
        return tokens.create(conn, f"demo-{time.strftime('%Y%m%d-%H%M%S')}", "planner")


def _watch(settings: DemoSettings, dsn: str, children: list[Child], stop: threading.Event) -> int:
    started = time.monotonic()
    next_report = started + 15
    while not stop.wait(1.0):
        for child in children:
            if not child.alive():
                print(f"{child.name} exited with {child.process.returncode}; see {child.log_path}")
                return 1
        if settings.duration_s is not None and time.monotonic() - started >= settings.duration_s:
            break
        if time.monotonic() >= next_report:
            total, reporting, readings = _count(dsn)
            print(
                f"{reporting}/{total} devices reporting, {readings:,} readings stored", flush=True
            )
            next_report += 30
    return 0
