"""The edge agent's footprint, spool size and backlog drain, beside the simplest alternatives.

    python benchmarks/edge_footprint.py            # a table for people
    python benchmarks/edge_footprint.py --json     # one JSON object

1. footprint: ``smartcity-edge run`` with five simulated sensors at 1 Hz against a local
   Mosquitto, resident memory and CPU over ``--duration`` seconds; beside it, a bare paho script
   publishing the same readings with no spool, no status, no health tracking;
2. spool: 24 hours of five sensors at 1 Hz (432,000 readings, 10 s batches) written to the
   spool; beside it, one uncompressed SQLite row per reading;
3. drain: that day of backlog sent to the local broker at full speed; beside it, publishing
   one batch at a time and waiting for each PUBACK.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge.agent import AgentSettings, EdgeAgent  # noqa: E402
from edge.contract import Batch, Reading, encode_batch  # noqa: E402
from edge.publisher import BrokerSettings, Publisher  # noqa: E402
from edge.spool import Spool  # noqa: E402
from tests.services.mosquitto import Mosquitto  # noqa: E402

SENSORS = [
    ("pm", "pm2_5", "ug/m3"),
    ("gas", "no2", "ug/m3"),
    ("climate", "temperature", "degC"),
    ("humidity", "humidity", "%"),
    ("bin", "fill_level", "%"),
]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sample(process: psutil.Process, seconds: float) -> tuple[float, float]:
    """Median RSS (MB) and CPU (% of one core) of ``process`` over ``seconds``."""
    rss = []
    before = process.cpu_times()
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        rss.append(process.memory_info().rss / 1024 / 1024)
        time.sleep(1)
    after = process.cpu_times()
    cpu = (after.user + after.system - before.user - before.system) / (time.monotonic() - started)
    return sorted(rss)[len(rss) // 2], cpu * 100


def agent_footprint(broker: Mosquitto, workdir: Path, seconds: float) -> tuple[float, float]:
    password = workdir / "password"
    password.write_text("x\n")
    config = workdir / "edge.toml"
    sensors = "".join(
        f'[[sensors]]\nname = "s{i}"\ndriver = "simulated-{kind}"\ninterval_s = 1\n\n'
        for i, kind in enumerate(["air", "air", "traffic", "traffic", "waste"])
    )
    config.write_text(
        f'[device]\nid = "bench-edge"\nsite = "bench"\n\n'
        f'[broker]\nurl = "mqtt://{broker.host}:{broker.port}"\n'
        f'password_file = "{password}"\n\n'
        f'[spool]\npath = "{workdir / "agent-spool.db"}"\n\n{sensors}'
    )
    agent = subprocess.Popen(
        [sys.executable, "-m", "edge", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:
        time.sleep(5)  # imports done, connected, first batches out
        return sample(psutil.Process(agent.pid), seconds)
    finally:
        agent.terminate()
        agent.wait(30)


BARE = textwrap.dedent(
    """
    import json, sys, time
    from datetime import datetime, timezone
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bare")
    client.connect(sys.argv[1], int(sys.argv[2]))
    client.loop_start()
    while True:
        now = datetime.now(timezone.utc).isoformat()
        body = [{"sensor": f"s{i}", "metric": "pm2_5", "value": 1.0, "unit": "ug/m3", "ts": now}
                for i in range(12)]
        client.publish("city/v1/bench/bare/telemetry", json.dumps(body), qos=1)
        time.sleep(1)
    """
)


def bare_footprint(broker: Mosquitto, seconds: float) -> tuple[float, float]:
    bare = subprocess.Popen([sys.executable, "-c", BARE, broker.host, str(broker.port)])
    try:
        time.sleep(3)
        return sample(psutil.Process(bare.pid), seconds)
    finally:
        bare.terminate()
        bare.wait(30)


def day_of_batches() -> list[Batch]:
    """24 h of five sensors at 1 Hz with realistic, slowly varying values, in 10 s batches."""
    rng = random.Random(1)  # noqa: S311  # reproducible test data
    start = datetime(2026, 11, 22, tzinfo=UTC)
    levels = {metric: rng.uniform(10, 60) for _, metric, _ in SENSORS}
    batches = []
    for seq in range(8_640):
        readings = []
        for second in range(10):
            at = start + timedelta(seconds=seq * 10 + second)
            for sensor, metric, unit in SENSORS:
                levels[metric] = min(99.0, max(0.5, levels[metric] + rng.gauss(0, 0.3)))
                readings.append(Reading(sensor, metric, round(levels[metric], 1), unit, at))
        batches.append(
            Batch("bench-edge", seq, tuple(readings), start + timedelta(seconds=seq * 10 + 10))
        )
    return batches


def spool_day(workdir: Path, batches: list[Batch]) -> tuple[float, Path]:
    path = workdir / "day.db"
    spool = Spool(path, max_bytes=10**10, max_age_s=10**9)
    for batch in batches:
        spool.put(batch.seq, encode_batch(batch), readings=len(batch.readings))
    spool.close()
    return path.stat().st_size / 1024 / 1024, path


def naive_spool_day(workdir: Path, batches: list[Batch]) -> float:
    path = workdir / "naive.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE readings (id INTEGER PRIMARY KEY, body TEXT)")
        for batch in batches:
            db.executemany(
                "INSERT INTO readings (body) VALUES (?)",
                [
                    (
                        json.dumps(
                            {
                                "device": batch.device,
                                "sensor": r.sensor,
                                "metric": r.metric,
                                "value": r.value,
                                "unit": r.unit,
                                "ts": r.ts.isoformat(),
                            }
                        ),
                    )
                    for r in batch.readings
                ],
            )
    return path.stat().st_size / 1024 / 1024


def drain(broker: Mosquitto, spool_path: Path, readings: int) -> float:
    spool = Spool(spool_path, max_bytes=10**10, max_age_s=10**9)
    publisher = Publisher(
        site="bench", device="bench-edge", broker=BrokerSettings(broker.host, broker.port)
    )
    agent = EdgeAgent(
        AgentSettings(site="bench", device="bench-edge", max_inflight=50), [], publisher, spool
    )
    publisher.start()
    publisher.wait_connected(10)
    started = time.monotonic()
    while spool.depth() and time.monotonic() - started < 600:
        agent.pump()
        time.sleep(0.0005)
    elapsed = time.monotonic() - started
    publisher.stop()
    spool.close()
    return readings / elapsed


def naive_drain(broker: Mosquitto, spool_path: Path, seconds: float = 10.0) -> float:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    spool = Spool(spool_path, max_bytes=10**10, max_age_s=10**9)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-naive")
    client.connect(broker.host, broker.port)
    client.loop_start()
    sent = 0
    started = time.monotonic()
    last = 0
    while time.monotonic() - started < seconds:
        entries = spool.after(last, 1)
        if not entries:
            break
        client.publish(
            "city/v1/bench/bench-edge/telemetry", entries[0].payload, qos=1
        ).wait_for_publish(10)
        sent += entries[0].readings
        last = entries[0].id
    elapsed = time.monotonic() - started
    client.disconnect()
    client.loop_stop()
    spool.close()
    return sent / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--duration", type=float, default=60.0, help="footprint window, seconds")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="smartcity-edge-bench-"))
    broker = Mosquitto(max_queued=1)
    broker.start()
    try:
        log("agent footprint...")
        rss, cpu = agent_footprint(broker, workdir, args.duration)
        log(f"  {rss:.1f} MB, {cpu:.2f} % CPU")
        bare_rss, bare_cpu = bare_footprint(broker, min(args.duration, 20))
        log("spool: a day of readings...")
        batches = day_of_batches()
        readings = sum(len(b.readings) for b in batches)
        spool_mb, day_spool = spool_day(workdir, batches)
        naive_mb = naive_spool_day(workdir, batches)
        log(f"  {spool_mb:.1f} MB (naive {naive_mb:.1f} MB)")
        log("draining that day to the broker...")
        naive_rate = naive_drain(broker, day_spool)
        rate = drain(broker, day_spool, readings)
        log(f"  {rate:,.0f} readings/s (naive {naive_rate:,.0f})")
    finally:
        broker.cleanup()
    result = {
        "rss_mb": round(rss, 1),
        "cpu_pct": round(cpu, 2),
        "spool_mb_24h": round(spool_mb, 1),
        "drain_readings_per_s": round(rate),
        "bare_paho_rss_mb": round(bare_rss, 1),
        "bare_paho_cpu_pct": round(bare_cpu, 2),
        "naive_spool_mb_24h": round(naive_mb, 1),
        "naive_drain_readings_per_s": round(naive_rate),
        "readings_24h": readings,
        "sensors": len(SENSORS),
        "duration_s": args.duration,
    }
    if args.json:
        print(json.dumps(result))
    else:
        width = max(map(len, result))
        for key, value in result.items():
            print(
                f"{key:<{width}}  {value:,}"
                if isinstance(value, int)
                else f"{key:<{width}}  {value}"
            )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
