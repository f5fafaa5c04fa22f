"""Losing a server under load: how long until readings flow again, and what was lost or doubled.

    python benchmarks/failover.py            # a table for people
    python benchmarks/failover.py --json     # one JSON object

Starts its own PostgreSQL + TimescaleDB, two Mosquitto brokers and an ingest worker consuming
from both (``more_brokers``), then a simulated fleet (``--devices``, each sampling every
``--interval`` seconds) publishing to the first broker with the second as its fallback. After
``--warmup`` seconds the first broker is killed (SIGKILL: no goodbye, its queues lost with it).

- ``broker_failover_resume_s``: from the kill to the first stored reading sampled after it;
- ``lost_readings``: readings the fleet sampled (and its spools hold until acknowledged) that
  are not in the database once the fleet has drained;
- ``duplicate_readings``: readings stored more than once (the readings' key forbids it; counted
  from the table, not assumed);
- ``redelivered_readings``: readings that reached ingest twice (through both brokers, or again
  after a lost acknowledgement) and were recognised by their key, from ingest's own counter;
- ``readings_per_s``: readings stored per second over the run, both brokers' share together.

The database's failover (Patroni, a synchronous standby) is not measured here yet: its keys
(``db_failover_resume_s``, ``readings_per_s_single``, ``readings_per_s_sync_replica``) and the
detection keys are reported as null until it is.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge.fleet import District, Fleet, plan_fleet  # noqa: E402
from edge.publisher import BrokerSettings  # noqa: E402
from ingest.config import IngestConfig  # noqa: E402
from ingest.registry import DeviceRecord, register_devices  # noqa: E402
from ingest.schema import migrate  # noqa: E402
from tests.ingest.helpers import stored_keys  # noqa: E402
from tests.ingest.process import IngestProcess  # noqa: E402
from tests.services.mosquitto import Mosquitto  # noqa: E402
from tests.services.postgres import PostgresServer  # noqa: E402

SITE = "failover"
NOT_MEASURED = (
    "db_failover_resume_s",
    "readings_per_s_single",
    "readings_per_s_sync_replica",
    "detection_alerts_one_worker",
    "detection_alerts_two_workers",
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def stored_after(dsn: str, moment: datetime) -> int:
    with psycopg.connect(dsn, connect_timeout=5) as conn:
        row = conn.execute("SELECT count(*) FROM readings WHERE ts > %s", (moment,)).fetchone()
    return int(row[0]) if row else 0


def reading_keys(dsn: str) -> list[tuple[str, str, str, str]]:
    """Every stored reading's key as the fleet records it: (device, sensor, metric, ts)."""
    return [(d, s, m, ts.isoformat()) for d, s, m, ts, _value in stored_keys(dsn)]


def wait_for(check: object, timeout_s: float, every_s: float = 0.05) -> float | None:
    """Seconds until ``check()`` holds, polled every ``every_s``; None if it never did."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if check():  # type: ignore[operator]
            return time.monotonic() - started
        time.sleep(every_s)
    return None


def run(args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    database = PostgresServer(durable=True)
    first, second = Mosquitto(), Mosquitto()
    fleet: Fleet | None = None
    worker: IngestProcess | None = None
    try:
        database.start()
        first.start()
        second.start()
        dsn = database.dsn()
        migrate(dsn, timescaledb="require")
        specs = plan_fleet(args.devices, seed=11, districts=[District(SITE, "Bench", 53.8, -1.55)])
        register_devices(dsn, [DeviceRecord(s.device, s.site, s.family, s.name) for s in specs])
        config = IngestConfig(
            database_url=dsn,
            broker_host=first.host,
            broker_port=first.port,
            more_brokers=(f"{second.host}:{second.port}",),
            client_id="bench-failover",
            batch_max_age_s=0.1,
            migrate=False,
            detection=False,
        )
        worker = IngestProcess(config, workdir / "ingest.log")
        worker.start()
        fleet = Fleet(
            specs,
            BrokerSettings(
                first.host,
                first.port,
                keepalive_s=2,
                reconnect_min_s=0.5,
                reconnect_max_s=2,
                fallbacks=((second.host, second.port),),
            ),
            sample_interval_s=args.interval,
            batch_interval_s=max(args.interval, 0.5),
            record=True,
        )
        started = time.monotonic()
        fleet.start()
        if not fleet.wait_connected(60):
            raise RuntimeError("the fleet did not connect")
        log(f"{args.devices} devices publishing; killing the first broker in {args.warmup:.0f} s")
        time.sleep(args.warmup)  # load before the kill: a duration, not a condition
        killed = datetime.now(UTC)
        first.stop(kill=True)
        resume = wait_for(lambda: stored_after(dsn, killed) > 0, args.timeout)
        log(f"readings flow again after {resume} s; running on for {args.after:.0f} s")
        time.sleep(args.after)
        fleet.stop_sampling()
        drained = fleet.drain(args.timeout)
        expected = fleet.published
        wait_for(lambda: len(reading_keys(dsn)) >= len(expected), args.timeout, 0.5)
        elapsed = time.monotonic() - started
        rows = reading_keys(dsn)
        keys = set(rows)
        redelivered = worker.metric("ingest_readings_duplicate_total")
        return {
            "broker_failover_resume_s": resume,
            "lost_readings": len(expected - keys),
            "duplicate_readings": len(rows) - len(keys),
            "redelivered_readings": int(redelivered),
            "readings_published": len(expected),
            "readings_per_s": len(rows) / elapsed,
            "fleet_drained": drained,
            "devices": args.devices,
            **dict.fromkeys(NOT_MEASURED),
        }
    finally:
        if fleet is not None:
            fleet.stop(drain_timeout=0)
        if worker is not None:
            worker.stop()
        for service in (first, second, database):
            service.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=10.0, help="load before the kill, s")
    parser.add_argument("--after", type=float, default=10.0, help="load after the kill, s")
    parser.add_argument("--timeout", type=float, default=120.0, help="longest wait for anything")
    args = parser.parse_args()
    result = run(args, Path(tempfile.mkdtemp(prefix="smartcity-failover-")))
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"broker killed under load from {args.devices} devices (one ingest worker, 2 brokers)")
    print()
    print(f"{'what':<48}{'value':>14}")
    for key in (
        "broker_failover_resume_s",
        "lost_readings",
        "duplicate_readings",
        "redelivered_readings",
        "readings_published",
        "readings_per_s",
    ):
        value = result[key]
        text = (
            "never"
            if value is None
            else f"{value:,.2f}"
            if isinstance(value, float)
            else f"{value:,}"
        )
        print(f"{key:<48}{text:>14}")
    print()
    print("not measured yet: " + ", ".join(NOT_MEASURED))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
