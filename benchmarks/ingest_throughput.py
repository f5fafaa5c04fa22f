"""Ingest throughput, against the storage limit and a naive pipeline, measured in one run.

    python benchmarks/ingest_throughput.py            # a table for people
    python benchmarks/ingest_throughput.py --json     # one JSON object

Starts its own Mosquitto and PostgreSQL + TimescaleDB (as the test suite does), then measures:

1. raw COPY: the same rows (ten metrics per message, 1,000 devices) copied straight into the
   readings hypertable over one connection: the storage limit;
2. naive: a paho subscriber doing one autocommitted INSERT per message;
3. ingest: the real workers (validation, deduplication, detection hook, ack after commit) fed
   by a publisher on this machine as fast as it can go, for ``--duration`` seconds;
4. latency: publish-to-commit at half the sustained rate, from PostgreSQL's commit timestamps.

Everything shares this machine's cores: publisher, broker, ingest and database.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ingest.columns import encode_copy  # noqa: E402
from ingest.config import IngestConfig  # noqa: E402
from ingest.registry import DeviceRecord, register_devices  # noqa: E402
from ingest.schema import migrate  # noqa: E402
from processing.hook import ReadingColumns  # noqa: E402
from tests.ingest.process import IngestProcess  # noqa: E402
from tests.services.mosquitto import Mosquitto  # noqa: E402
from tests.services.postgres import PostgresServer  # noqa: E402

HERE = Path(__file__).resolve().parent
READINGS_PER_MESSAGE = 10


@dataclass
class Services:
    broker: Mosquitto
    database: PostgresServer
    dsn: str
    devices: int
    workdir: Path
    cpu_names: dict[int, str] = field(default_factory=dict)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def start(devices: int, workdir: Path) -> Services:
    # Deep enough to hold a minute of load beyond what ingest absorbs, so nothing is dropped.
    broker = Mosquitto(max_queued=5_000_000, extra_config="max_inflight_messages 20000")
    broker.start()
    # Durable as in production (fsync on): acknowledging only what is durable must cost what
    # it costs. Commit timestamps give publish-to-commit latency per reading.
    database = PostgresServer("track_commit_timestamp = on\nmax_wal_size = 4GB\n", durable=True)
    database.start()
    dsn = database.dsn()
    migrate(dsn, timescaledb="require")
    register_devices(dsn, [DeviceRecord(f"bench-{n:05d}", "bench", "air") for n in range(devices)])
    return Services(broker, database, dsn, devices, workdir)


def count(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM readings").fetchone()
    return int(row[0]) if row else 0


def truncate(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE readings, latest")


def publisher(services: Services, rate: float, duration: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            str(HERE / "_publisher.py"),
            "--port",
            str(services.broker.port),
            "--devices",
            str(services.devices),
            "--rate",
            str(rate),
            "--duration",
            str(duration),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )


def finish_publisher(process: subprocess.Popen[str]) -> dict[str, float]:
    out, _ = process.communicate(timeout=120)
    return json.loads(out.strip().splitlines()[-1])


def cpu_seconds(pids: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds used so far by each named group of processes (and their children)."""
    totals: dict[str, float] = {}
    for name, group in pids.items():
        seconds = 0.0
        for pid in group:
            try:
                parent = psutil.Process(pid)
                for proc in [parent, *parent.children(recursive=True)]:
                    times = proc.cpu_times()
                    seconds += times.user + times.system
            except psutil.NoSuchProcess:
                continue
        totals[name] = seconds
    return totals


def postgres_pids(services: Services) -> list[int]:
    pidfile = services.database.data / "postmaster.pid"
    return [int(pidfile.read_text().split()[0])]


# 1. the storage limit ------------------------------------------------------------------------


def raw_copy_rate(services: Services, rows: int = 1_500_000) -> float:
    with psycopg.connect(services.dsn) as conn:
        conn.execute(
            "INSERT INTO streams (device_id, sensor, metric, unit)"
            " SELECT device_id, 's', m, 'x' FROM devices,"
            " unnest(ARRAY['vehicle_count','speed_mean','occupancy','pm2_5','pm10','no2','o3',"
            "'co2','temperature','humidity']) AS m ON CONFLICT DO NOTHING"
        )
        ids = np.array(
            [r[0] for r in conn.execute("SELECT stream_id FROM streams ORDER BY 1")], dtype=np.int32
        )
    # The same shape ingest writes: each message's ten streams at one millisecond timestamp.
    messages = rows // READINGS_PER_MESSAGE
    now_us = int(time.time() * 1e6) - 3_600_000_000
    stream = np.resize(ids, messages * READINGS_PER_MESSAGE)
    ts = now_us + np.repeat(np.arange(messages, dtype=np.int64) * 1_000, READINGS_PER_MESSAGE)
    values = np.random.default_rng(1).random(stream.size) * 100
    buffer = encode_copy(ReadingColumns(stream, ts, values))
    started = time.perf_counter()
    with (
        psycopg.connect(services.dsn) as conn,
        conn.cursor() as cur,
        cur.copy("COPY readings (ts, stream_id, value) FROM STDIN (FORMAT BINARY)") as copy,
    ):
        step = 8 << 20
        for offset in range(0, len(buffer), step):
            copy.write(buffer[offset : offset + step])
    elapsed = time.perf_counter() - started
    truncate(services.dsn)
    with psycopg.connect(services.dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM streams")
    return stream.size / elapsed


# 2. the naive pipeline -----------------------------------------------------------------------


def naive_rate(services: Services, seconds: float = 20.0) -> float:
    naive = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "_naive.py"),
            "--port",
            str(services.broker.port),
            "--dsn",
            services.dsn,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert naive.stdout is not None
    naive.stdout.readline()  # "ready"
    load = publisher(services, 0, seconds + 10)
    time.sleep(5)  # streams created, steady state
    first, started = count(services.dsn), time.monotonic()
    time.sleep(seconds)
    rate = (count(services.dsn) - first) / (time.monotonic() - started)
    load.kill()
    naive.kill()
    load.wait()
    naive.wait()
    # Drop the broker's queue for the naive client by restarting the broker clean.
    services.broker.stop()
    for leftover in services.broker.directory.glob("*.db"):
        leftover.unlink()
    services.broker.start()
    truncate(services.dsn)
    return rate


# 3. and 4. ingest ----------------------------------------------------------------------------


def workers(services: Services, n: int, **overrides: object) -> list[IngestProcess]:
    started = []
    for index in range(n):
        config = IngestConfig(
            database_url=services.dsn,
            broker_host=services.broker.host,
            broker_port=services.broker.port,
            client_id=f"bench-ingest-{index}",
            shared_group="bench" if n > 1 else None,
            migrate=False,
            log_level="WARNING",
            **overrides,  # type: ignore[arg-type]
        )
        worker = IngestProcess(config, services.workdir / f"ingest-{index}.log")
        worker.start()
        started.append(worker)
    return started


def stored(workers_: list[IngestProcess]) -> float:
    return sum(w.metric("ingest_readings_stored_total") for w in workers_)


def sustained_rate(
    services: Services,
    running: list[IngestProcess],
    duration: float,
    offered: float,
    warmup: float = 8.0,
) -> tuple[float, dict[str, float], dict[str, float]]:
    load = publisher(services, offered / READINGS_PER_MESSAGE, warmup + duration)
    time.sleep(warmup)
    groups = {
        "ingest": [w.process.pid for w in running if w.process],
        "broker": [services.broker._process.pid] if services.broker._process else [],
        "database": postgres_pids(services),
        "publisher": [load.pid],
    }
    cpu_before = cpu_seconds(groups)
    first, started = stored(running), time.monotonic()
    samples = []
    previous, previous_at = first, started
    while time.monotonic() - started < duration:
        time.sleep(5)
        now_stored, now = stored(running), time.monotonic()
        samples.append((now_stored - previous) / (now - previous_at))
        previous, previous_at = now_stored, now
    elapsed = time.monotonic() - started
    rate = (stored(running) - first) / elapsed
    cpu_after = cpu_seconds(groups)
    cpu = {k: (cpu_after[k] - cpu_before[k]) / elapsed for k in groups}
    published = finish_publisher(load)
    median = statistics.median(samples)
    log(f"published {published['published']:,} messages, median 5 s rate {median:,.0f}")
    drain(services, running, int(published["published"]) * READINGS_PER_MESSAGE)
    return rate, cpu, {"median_5s": statistics.median(samples), "min_5s": min(samples)}


def drain(
    services: Services, running: list[IngestProcess], expected: int, timeout: float = 300
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and count(services.dsn) < expected:
        time.sleep(1)
    got = count(services.dsn)
    if got != expected:
        raise SystemExit(f"ingest stored {got:,} of {expected:,} readings")


def latency(
    services: Services, running: list[IngestProcess], rate_readings: float, seconds: float = 20.0
) -> tuple[float, float]:
    before = count(services.dsn)
    since = time.time()
    load = publisher(services, rate_readings / READINGS_PER_MESSAGE, seconds)
    published = finish_publisher(load)
    drain(services, running, before + int(published["published"]) * READINGS_PER_MESSAGE)
    with psycopg.connect(services.dsn) as conn:
        row = conn.execute(
            "SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY"
            " extract(epoch FROM pg_xact_commit_timestamp(xmin) - ts))"
            " FROM readings WHERE ts >= to_timestamp(%s)",
            (since,),
        ).fetchone()
    assert row is not None
    p50, p99 = row[0]
    return float(p50), float(p99)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--duration", type=float, default=60.0, help="sustained run, seconds")
    parser.add_argument("--workers", type=int, default=2, help="ingest processes (default 2)")
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument(
        "--offered",
        type=float,
        default=150_000,
        help="readings/s offered during the sustained run (default 150,000)",
    )
    parser.add_argument("--skip-baselines", action="store_true", help="only the ingest runs")
    parser.add_argument(
        "--detection",
        choices=("on", "off"),
        default="on",
        help="run detection (each batch also written to its feed, judged by partition owners)",
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="smartcity-bench-"))
    services = start(args.devices, workdir)
    try:
        raw = naive = float("nan")
        if not args.skip_baselines:
            log("raw COPY into the readings hypertable...")
            raw = raw_copy_rate(services)
            log(f"  {raw:,.0f} readings/s")
            log("naive pipeline (paho + one INSERT per message)...")
            naive = naive_rate(services)
            log(f"  {naive:,.0f} readings/s")
        log(f"ingest with {args.workers} worker(s), {args.duration:.0f} s at full load...")
        running = workers(services, args.workers, detection=args.detection == "on")
        try:
            rate, cpu, spread = sustained_rate(services, running, args.duration, args.offered)
            log(f"  {rate:,.0f} readings/s")
            log("latency at half that rate...")
            p50, p99 = latency(services, running, rate / 2)
        finally:
            for worker in running:
                worker.stop()
    finally:
        services.broker.cleanup()
        services.database.cleanup()
    result = {
        "readings_per_s": round(rate),
        "raw_copy_readings_per_s": None if math.isnan(raw) else round(raw),
        "naive_readings_per_s": None if math.isnan(naive) else round(naive),
        "ingest_vs_raw_copy": None if math.isnan(raw) else round(rate / raw, 3),
        "ingest_vs_naive": None if math.isnan(naive) else round(rate / naive, 1),
        "latency_p50_s": round(p50, 4),
        "latency_p99_s": round(p99, 4),
        "median_5s_readings_per_s": round(spread["median_5s"]),
        "min_5s_readings_per_s": round(spread["min_5s"]),
        "offered_readings_per_s": round(args.offered),
        "workers": args.workers,
        "detection": args.detection,
        "duration_s": args.duration,
        "readings_per_message": READINGS_PER_MESSAGE,
        "cpu_cores": {k: round(v, 2) for k, v in cpu.items()},
    }
    if args.json:
        print(json.dumps(result))
    else:
        width = max(len(k) for k in result)
        for key, value in result.items():
            shown = f"{value:,}" if isinstance(value, int) else str(value)
            print(f"{key:<{width}}  {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
