"""Losing a server under load: how long until readings flow again, and what was lost or doubled.

    python benchmarks/failover.py            # a table for people
    python benchmarks/failover.py --json     # one JSON object

Four parts, each with its own servers on loopback. The first two run a simulated fleet
(``--devices``, each sampling every ``--interval`` seconds) whose every acknowledged reading is
counted in the database at the end, key by key:

1. Brokers: PostgreSQL + TimescaleDB, two Mosquitto brokers and an ingest worker consuming from
   both (``more_brokers``); the fleet publishes to the first with the second as its fallback.
   After ``--warmup`` seconds the first broker is killed (SIGKILL: its queues lost with it).
   ``broker_failover_resume_s``: from the kill to the first stored reading sampled after it.
2. Database: two PostgreSQL + TimescaleDB servers under Patroni (``deploy/patroni``, synchronous
   mode, fsync on) with their etcd; ingest connects with the multi-host URL. After
   ``--warmup`` seconds the primary's machine is killed (Patroni and PostgreSQL, SIGKILL).
   ``db_failover_resume_s``: from the kill to the first stored reading sampled after it (Patroni's
   leader key lives 10 s: most of this is waiting for it to expire).
3. Throughput with and without the synchronous standby: the ingest benchmark's publisher
   offers ``--offered`` readings/s for ``--duration`` seconds to one ingest worker writing to a
   single durable PostgreSQL (``readings_per_s_single``), then to the Patroni pair, where every
   commit waits for the standby's flush (``readings_per_s_sync_replica``), in ``--rounds``
   alternations: medians of each, and ``sync_replica_share`` the median of the rounds' ratios
   (the machine's speed drifts between minutes more than between the two windows of a round).
   Both servers, the broker, the publisher and ingest share this machine's cores: the standby
   replaying the primary's WAL takes CPU that ingest and the primary would otherwise have.

Across parts: ``lost_readings`` (acknowledged by a device, not in the database once drained),
``duplicate_readings`` (stored twice; the readings' key forbids it, counted from the table),
``redelivered_readings`` (reached ingest twice and recognised by their key, ingest's counter),
``readings_published`` and ``readings_per_s`` (the fleets' readings stored per second of run).

4. Detection with one worker and with two: a real week of the Beijing stations
   (``smartcity replay``, a week in ``--replay-s`` seconds, ``detection_clock = "readings"``)
   through one ingest worker, then into a fresh database through two workers on a shared
   subscription, the second killed (SIGKILL) once a third of the week is stored and restarted
   at once, as a supervisor would. ``detection_alerts_one_worker`` and
   ``detection_alerts_two_workers``: alerts opened; ``detection_alerts_shared``: alerts the two
   runs have in common (same station, metric, kind and start).

``--parts`` chooses which parts run (``brokers,database,throughput,detection``); the keys of the
others are null.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge.fleet import District, Fleet, plan_fleet  # noqa: E402
from edge.publisher import BrokerSettings  # noqa: E402
from ingest.config import IngestConfig  # noqa: E402
from ingest.registry import DeviceRecord, register_devices  # noqa: E402
from ingest.schema import migrate  # noqa: E402
from smartcity import datasets  # noqa: E402
from tests.ingest.helpers import stored_keys  # noqa: E402
from tests.ingest.process import IngestProcess  # noqa: E402
from tests.services.mosquitto import Mosquitto  # noqa: E402
from tests.services.patroni import PatroniCluster  # noqa: E402
from tests.services.postgres import PostgresServer  # noqa: E402

SITE = "failover"
PARTS = ("brokers", "database", "throughput", "detection")
HERE = Path(__file__).resolve().parent
READINGS_PER_MESSAGE = 10  # the publisher's ten metrics per message


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def stored_after(dsn: str, moment: datetime) -> int:
    """Readings sampled after ``moment`` and stored; 0 while the database is away."""
    try:
        with psycopg.connect(dsn, connect_timeout=2) as conn:
            row = conn.execute("SELECT count(*) FROM readings WHERE ts > %s", (moment,)).fetchone()
    except psycopg.OperationalError:
        return 0
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


@dataclass
class Outcome:
    """What one kill under a fleet's load did."""

    resume_s: float | None
    lost: int
    duplicates: int
    redelivered: int
    published: int
    stored_per_s: float


def survive(
    dsn: str,
    worker: IngestProcess,
    broker: BrokerSettings,
    kill: Callable[[], None],
    args: argparse.Namespace,
) -> Outcome:
    """Run a fleet through ``worker``, ``kill`` something after the warm-up, count everything."""
    specs = plan_fleet(args.devices, seed=11, districts=[District(SITE, "Bench", 53.8, -1.55)])
    register_devices(dsn, [DeviceRecord(s.device, s.site, s.family, s.name) for s in specs])
    fleet = Fleet(
        specs,
        broker,
        sample_interval_s=args.interval,
        batch_interval_s=max(args.interval, 0.5),
        record=True,
    )
    try:
        started = time.monotonic()
        fleet.start()
        if not fleet.wait_connected(60):
            raise RuntimeError("the fleet did not connect")
        log(f"{args.devices} devices publishing; the kill comes in {args.warmup:.0f} s")
        time.sleep(args.warmup)  # load before the kill: a duration, not a condition
        killed = datetime.now(UTC)
        kill()
        resume = wait_for(lambda: stored_after(dsn, killed) > 0, args.timeout)
        log(f"readings flow again after {resume} s; running on for {args.after:.0f} s")
        time.sleep(args.after)
        fleet.stop_sampling()
        if not fleet.drain(args.timeout):
            log("the fleet kept a backlog")
        expected = fleet.published
        wait_for(lambda: len(reading_keys(dsn)) >= len(expected), args.timeout, 0.5)
        elapsed = time.monotonic() - started
        rows = reading_keys(dsn)
        keys = set(rows)
        return Outcome(
            resume,
            len(expected - keys),
            len(rows) - len(keys),
            int(worker.metric("ingest_readings_duplicate_total")),
            len(expected),
            len(rows) / elapsed,
        )
    finally:
        fleet.stop(drain_timeout=0)


def quick_reconnects(host: str, port: int, **more: object) -> BrokerSettings:
    return BrokerSettings(host, port, keepalive_s=2, reconnect_min_s=0.5, reconnect_max_s=2, **more)  # type: ignore[arg-type]


def brokers(args: argparse.Namespace, workdir: Path) -> Outcome:
    """Part 1: one of two brokers killed."""
    database = PostgresServer(durable=True)
    first, second = Mosquitto(), Mosquitto()
    worker: IngestProcess | None = None
    try:
        database.start()
        first.start()
        second.start()
        dsn = database.dsn()
        migrate(dsn, timescaledb="require")
        worker = start_worker(
            dsn, first, "brokers", workdir,
            more_brokers=(f"{second.host}:{second.port}",), batch_max_age_s=0.1,
        )  # fmt: skip
        fleet_broker = quick_reconnects(
            first.host, first.port, fallbacks=((second.host, second.port),)
        )
        return survive(dsn, worker, fleet_broker, lambda: first.stop(kill=True), args)
    finally:
        if worker is not None:
            worker.stop()
        for service in (first, second, database):
            service.cleanup()


def start_worker(
    dsn: str, broker: Mosquitto, name: str, workdir: Path, **settings: Any
) -> IngestProcess:
    """A started ingest worker of this benchmark's: no migration; no detection unless asked."""
    config = IngestConfig(
        database_url=dsn,
        broker_host=broker.host,
        broker_port=broker.port,
        client_id=f"bench-{name}",
        migrate=False,
        **{"detection": False, **settings},
    )
    worker = IngestProcess(config, workdir / f"ingest-{name}.log")
    worker.start()
    return worker


def replicated(cluster: PatroniCluster) -> str:
    """Start the Patroni pair and give it the schema; its multi-host URL."""
    cluster.start()
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE city")
    dsn = cluster.dsn("city")
    migrate(dsn, timescaledb="require")
    return dsn


def database(args: argparse.Namespace, workdir: Path) -> Outcome:
    """Part 2: the primary's machine killed."""
    cluster = PatroniCluster(durable=True)
    broker = Mosquitto()
    worker: IngestProcess | None = None
    try:
        broker.start()
        dsn = replicated(cluster)
        worker = start_worker(dsn, broker, "database", workdir, batch_max_age_s=0.1)

        def kill_primary() -> None:
            primary = cluster.primary()
            if primary is None:
                raise RuntimeError("no primary to kill")
            primary.kill()

        return survive(dsn, worker, quick_reconnects(broker.host, broker.port), kill_primary, args)
    finally:
        if worker is not None:
            worker.stop()
        broker.cleanup()
        cluster.cleanup()


def sustained(dsn: str, args: argparse.Namespace, workdir: Path, name: str) -> float:
    """Readings/s one ingest worker stores while the publisher offers more than it can take."""
    devices = 1000
    register_devices(dsn, [DeviceRecord(f"bench-{n:05d}", "bench", "air") for n in range(devices)])
    broker = Mosquitto(max_queued=5_000_000, extra_config="max_inflight_messages 20000")
    worker: IngestProcess | None = None
    try:
        broker.start()
        worker = start_worker(dsn, broker, name, workdir, log_level="WARNING")
        warmup = 5.0
        load = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "_publisher.py"),
                "--port",
                str(broker.port),
                "--devices",
                str(devices),
                "--rate",
                str(args.offered / READINGS_PER_MESSAGE),
                "--duration",
                str(warmup + args.duration),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(warmup)  # a warm pipeline and a queue to draw from: a duration
        first, started = worker.metric("ingest_readings_stored_total"), time.monotonic()
        time.sleep(args.duration)
        rate = (worker.metric("ingest_readings_stored_total") - first) / (
            time.monotonic() - started
        )
        out, _ = load.communicate(timeout=args.timeout)
        published = int(json.loads(out.strip().splitlines()[-1])["published"])
        expected = published * READINGS_PER_MESSAGE
        wait_for(lambda: worker.metric("ingest_readings_stored_total") >= expected, args.timeout, 1)
        log(f"{name}: {rate:,.0f} readings/s stored of {args.offered:,.0f} offered")
        return rate
    finally:
        if worker is not None:
            worker.stop()
        broker.cleanup()


def throughput(args: argparse.Namespace, workdir: Path) -> tuple[float, float, float]:
    """Part 3: the same offered load into a single server and into the synchronous pair, in
    alternating rounds (a shared machine's speed drifts over minutes; each round's two windows
    are close in time). Medians of each, and the median of the rounds' ratios."""
    single = PostgresServer(durable=True)
    cluster = PatroniCluster(durable=True)
    try:
        single.start()
        migrate(single.dsn(), timescaledb="require")
        pair = replicated(cluster)
        alone: list[float] = []
        paired: list[float] = []
        for round_ in range(args.rounds):
            alone.append(sustained(single.dsn(), args, workdir, f"single-{round_}"))
            paired.append(sustained(pair, args, workdir, f"sync-replica-{round_}"))
    finally:
        single.cleanup()
        cluster.cleanup()
    shares = [p / a for a, p in zip(alone, paired, strict=True) if a]
    share = statistics.median(shares) if shares else math.nan
    return statistics.median(alone), statistics.median(paired), share


Alert = tuple[str, str, str, str]  # device, metric, kind, start
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def alerts_opened(dsn: str) -> set[Alert]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT a.device_id, s.metric, a.kind, a.started_at FROM alerts a"
            " JOIN streams s USING (stream_id)"
        ).fetchall()
    return {(str(d), str(m), str(k), t.isoformat()) for d, m, k, t in rows}


def replay_week(dsn: str, broker: Mosquitto, args: argparse.Namespace, workdir: Path) -> Any:
    """``smartcity replay`` of the Beijing week, started in the background."""
    settings = workdir / "replay.toml"
    settings.write_text(f'[ingest]\ndatabase_url = "{dsn}"\n', encoding="utf-8")
    speed = 7 * 86_400 / args.replay_s
    command = [
        sys.executable, "-m", "smartcity", "replay", "beijing",
        "--start", "2014-01-13", "--days", "7", "--speed", f"{speed:.0f}",
        "--config", str(settings), "--broker", f"{broker.host}:{broker.port}",
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def detected(args: argparse.Namespace, workdir: Path, *, workers: int) -> set[Alert]:
    """Alerts opened on the replayed week by ``workers`` ingest workers (the last one killed
    once a third is stored, and restarted)."""
    server = PostgresServer()
    broker = Mosquitto()
    started: list[IngestProcess] = []
    try:
        server.start()
        broker.start()
        dsn = server.dsn()
        migrate(dsn, timescaledb="require")
        settings: dict[str, Any] = {
            "detection": True,
            "detection_clock": "readings",
            "detection_lease_s": 3.0,
            "city_timezone": datasets.BEIJING_ZONE,
            "alerts_per_site_per_minute": 1_000_000,
            "alert_topic_prefix": "",
            "batch_max_age_s": 0.1,
            "shared_group": "detection",
            "checkpoint_every_s": 2.0,
        }
        for n in range(workers):
            started.append(
                start_worker(dsn, broker, f"detection-{workers}-{n}", workdir, **settings)
            )
        replay = replay_week(dsn, broker, args, workdir)
        if workers > 1:
            week = 12 * 6 * 7 * 24  # stations x metrics x hours (a few are missing)
            wait_for(lambda: stored_after(dsn, EPOCH) > week // 3, args.timeout)
            victim = started[-1]
            victim.kill()
            log(f"killed a worker with {stored_after(dsn, EPOCH):,} readings stored")
            victim.start()
        out, err = replay.communicate(timeout=args.timeout + args.replay_s)
        if replay.returncode != 0:
            raise RuntimeError(f"the replay failed: {err}")
        published = re.search(r"published ([\d,]+) readings", out)
        if published is None:
            raise RuntimeError(f"the replay did not say what it published: {out}")
        total = int(published[1].replace(",", ""))
        wait_for(lambda: stored_after(dsn, EPOCH) >= total, args.timeout, 0.5)
        settled = wait_for(lambda: quiet(dsn), args.timeout, 1.0)
        log(f"detection settled after {settled} s with {workers} workers")
        for worker in started:
            worker.stop()  # a graceful stop writes the last transitions
        return alerts_opened(dsn)
    finally:
        for worker in started:
            if worker.alive():
                worker.stop()
        broker.cleanup()
        server.cleanup()


def quiet(dsn: str) -> bool:
    """Whether detection has judged and checkpointed the whole feed."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM detection_feed f JOIN detection_partitions p USING (partition)"
            " WHERE f.xid > p.read_to"
        ).fetchone()
    return row is not None and int(row[0]) == 0


def detection(args: argparse.Namespace, workdir: Path) -> tuple[set[Alert], set[Alert]]:
    """Part 4: the same real week through one worker, and through two with one killed."""
    return detected(args, workdir, workers=1), detected(args, workdir, workers=2)


def run(args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    parts = set(args.parts.split(","))
    unknown = parts - set(PARTS)
    if unknown:
        raise SystemExit(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    result: dict[str, object] = {"devices": args.devices}
    both = []
    if "brokers" in parts:
        broker = brokers(args, workdir)
        result["broker_failover_resume_s"] = broker.resume_s
        both.append(broker)
    if "database" in parts:
        db = database(args, workdir)
        result["db_failover_resume_s"] = db.resume_s
        both.append(db)
    if both:
        result.update(
            lost_readings=sum(o.lost for o in both),
            duplicate_readings=sum(o.duplicates for o in both),
            redelivered_readings=sum(o.redelivered for o in both),
            readings_published=sum(o.published for o in both),
            readings_per_s=statistics.median(o.stored_per_s for o in both),
        )
    if "throughput" in parts:
        single, paired, share = throughput(args, workdir)
        result.update(
            readings_per_s_single=single,
            readings_per_s_sync_replica=paired,
            sync_replica_share=share,
        )
    if "detection" in parts:
        one, two = detection(args, workdir)
        result.update(
            detection_alerts_one_worker=len(one),
            detection_alerts_two_workers=len(two),
            detection_alerts_shared=len(one & two),
        )
    return {key: result.get(key) for key in KEYS} | result


KEYS = (
    "broker_failover_resume_s",
    "db_failover_resume_s",
    "lost_readings",
    "duplicate_readings",
    "redelivered_readings",
    "readings_published",
    "readings_per_s",
    "readings_per_s_single",
    "readings_per_s_sync_replica",
    "sync_replica_share",
    "detection_alerts_one_worker",
    "detection_alerts_two_workers",
    "detection_alerts_shared",
)


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
    parser.add_argument("--offered", type=float, default=200_000, help="readings/s, part 3")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds, part 3")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of part 3")
    parser.add_argument("--replay-s", type=float, default=60.0, help="the week's replay, part 4")
    parser.add_argument("--parts", default=",".join(PARTS), help="which parts to run")
    args = parser.parse_args()
    result = run(args, Path(tempfile.mkdtemp(prefix="smartcity-failover-")))
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"a broker, then the primary database, killed under load from {args.devices} devices")
    print()
    print(f"{'what':<48}{'value':>14}")
    for key in KEYS:
        value = result[key]
        text = (
            "never"
            if value is None
            else f"{value:,.2f}"
            if isinstance(value, float)
            else f"{value:,}"
        )
        print(f"{key:<48}{text:>14}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
