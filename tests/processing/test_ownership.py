"""Each stream on one worker: two ingest workers, one killed mid-week, open the alerts one worker
opens on the same real week; partitions move with their checkpointed state, nothing judged twice.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import psycopg
import pytest

from ingest.config import IngestConfig
from ingest.service import IngestService
from processing.config import DetectionSettings
from processing.feed import PARTITIONS
from smartcity import datasets
from smartcity.replay import timeline
from tests.ingest.running import eventually, ingest_config
from tests.ingest.test_replay import WEEK_START, offline_openings
from tests.services.handles import BrokerAddress, Database

Opened = set[tuple[str, str, str, int]]
# A week in about 25 s: the kill lands mid-week, and batches of both workers share the hours.
SPEED = 7 * 86_400 / 25


def count(dsn: str, sql: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(sql).fetchone()
    return int(str(row[0])) if row else 0


def opened(dsn: str) -> Opened:
    with psycopg.connect(dsn) as conn:
        found = conn.execute(
            "SELECT a.device_id, s.metric, a.kind, a.started_at FROM alerts a"
            " JOIN streams s USING (stream_id)"
        ).fetchall()
    return {(str(d), str(m), str(k), round(t.timestamp())) for d, m, k, t in found}


@asynccontextmanager
async def worker(config: IngestConfig) -> AsyncIterator[tuple[IngestService, asyncio.Task[None]]]:
    """A started worker and its task; cancelling the task kills it: nothing checkpointed or
    released, its unacknowledged messages left in its broker session."""
    service = IngestService(config)
    task = asyncio.create_task(service.run(), name=f"worker {config.client_id}")
    try:
        await asyncio.wait_for(service.started.wait(), 30)
        assert service.consumer is not None
        await asyncio.wait_for(service.consumer.connected.wait(), 30)
        yield service, task
    finally:
        if not task.done():
            service.stop()
            await asyncio.wait_for(task, 60)


def replay_command(dsn: str, broker: BrokerAddress, tmp_path: Path) -> list[str]:
    settings = tmp_path / "ingest.toml"
    settings.write_text(f'[ingest]\ndatabase_url = "{dsn}"\n', encoding="utf-8")
    return [
        sys.executable, "-m", "smartcity", "replay", "beijing",
        "--start", WEEK_START.date().isoformat(), "--days", "7", "--speed", str(SPEED),
        "--config", str(settings), "--broker", f"{broker.host}:{broker.port}",
    ]  # fmt: skip


# Two workers' kernels compiling, a replay and a restart: about a minute alone, several on a
# machine busy with other work, so more than the suite's default limit.
@pytest.mark.timeout(600)
@pytest.mark.parametrize("kill", [False, True], ids=["both-live", "one-killed"])
async def test_two_workers_open_the_alerts_one_worker_opens_on_a_real_week(
    broker: BrokerAddress, timescale_database: Database, tmp_path: Path, kill: bool
) -> None:
    """Each receives about half of every station's messages; each station is judged whole by
    the worker owning its partition. Killed mid-week and restarted at once (as a supervisor
    does), a worker's partitions move with their checkpoints: the alerts stay within 10 % of
    one worker's (its session's messages reach the detectors late, hours of data at this
    speed-up, which moves a few neighbour comparisons); none is opened twice."""
    dsn = timescale_database.dsn
    line = timeline(datasets.beijing(), start=WEEK_START, days=7)
    group = f"own{secrets.token_hex(3)}"
    configs = [
        ingest_config(
            broker,
            dsn,
            detection_clock="readings",
            city_timezone=datasets.BEIJING_ZONE,
            alerts_per_site_per_minute=1_000_000,
            alert_topic_prefix="",
            shared_group=group,
            detection_lease_s=3.0,
        )
        for _ in "ab"
    ]
    expected = offline_openings(line, DetectionSettings(warmup_s=configs[0].detection_warmup_s))
    assert len(expected) >= 20

    def stored() -> int:
        return count(dsn, "SELECT count(*) FROM readings")

    async with worker(configs[0]) as (first, _):
        assert first.detection is not None
        detections = [first.detection]
        async with worker(configs[1]) as (second, task):
            assert second.detection is not None
            detections.append(second.detection)
            assert await eventually(
                lambda: [len(d.owned) for d in detections] == [PARTITIONS // 2] * 2, 30
            )
            replay = asyncio.create_task(
                asyncio.to_thread(
                    subprocess.run,
                    replay_command(dsn, broker, tmp_path),
                    capture_output=True,
                    text=True,
                    timeout=300,
                )
            )
            if kill:
                assert await eventually(lambda: stored() >= len(line) // 3, 60)
                assert second.stats().messages_stored > 0
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task
        async with worker(configs[1]) as (restarted, _):  # at once, as a supervisor would
            assert restarted.detection is not None
            detections[1] = restarted.detection
            done = await replay
            assert done.returncode == 0, done.stderr
            assert await eventually(lambda: stored() == len(line), 120), (stored(), len(line))
            assert await eventually(lambda: sum(len(d.owned) for d in detections) == PARTITIONS, 30)
            await eventually(lambda: opened(dsn) == expected, 30)
        received = [d.taken_on for d in detections]
    found = opened(dsn)
    if kill:
        # All at first, alone, then some of the killed worker's (while its heartbeat lasted,
        # three workers counted as live and the shares moved twice).
        assert received[0] > PARTITIONS, received
        assert abs(len(found) - len(expected)) <= 0.1 * len(expected), (len(found), len(expected))
        assert len(found & expected) >= 0.85 * len(expected), sorted(expected - found)
    else:
        assert found == expected, (sorted(found - expected), sorted(expected - found))
    # Nothing judged twice: one alert per opening, the feed read to its end and pruned.
    assert count(dsn, "SELECT count(*) FROM alerts") == len(found)
    assert count(dsn, "SELECT count(*) FROM detection_feed") == 0
    assert count(dsn, "SELECT count(*) FROM detection_partitions WHERE owner IS NULL") == PARTITIONS
