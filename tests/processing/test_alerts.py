"""Alerts end to end on the real broker and database: open, deduplicate, acknowledge, resolve,
publish, rate-limit, two workers, and a restart that restores state without an alert storm."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from psycopg_pool import AsyncConnectionPool

from edge.contract import Batch, Reading, encode_batch
from processing import partitioned
from processing.alerts import AlertError, AlertStore, Opening, OpenOutcome
from processing.kinds import Kind
from processing.service import DetectionService
from processing.stage import Event
from processing.streams import StreamInfo
from tests.ingest.helpers import publish_all, register
from tests.ingest.running import eventually, ingest_config, running_ingest
from tests.services.handles import BrokerAddress, Database

STEP = timedelta(seconds=10)


def telemetry(
    site: str, device: str, start: datetime, values: list[float], first_seq: int = 1
) -> list[tuple[str, bytes]]:
    """PM2.5 readings every 10 s from ``start``, 20 to a message."""
    messages = []
    for seq, lo in enumerate(range(0, len(values), 20), start=first_seq):
        readings = tuple(
            Reading("aq", "pm2_5", values[i], "ug/m3", start + i * STEP)
            for i in range(lo, min(lo + 20, len(values)))
        )
        payload = encode_batch(Batch(device, seq, readings, readings[-1].ts))
        messages.append((f"city/v1/{site}/{device}/telemetry", payload))
    return messages


def calm(n: int, phase: int = 0) -> list[float]:
    return [12.0 + 0.5 * ((i + phase) % 5) for i in range(n)]


def rows(dsn: str, sql: str, *args: object) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, args).fetchall()


def stored_readings(dsn: str, n: int) -> bool:
    return len(rows(dsn, "SELECT 1 FROM readings")) == n


def new_stream(dsn: str, device: str, metric: str = "pm2_5") -> int:
    """A stream of a registered device, created directly; its id."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "INSERT INTO streams (device_id, sensor, metric, unit)"
            " VALUES (%s, 'aq', %s, 'ug/m3') RETURNING stream_id",
            (device, metric),
        ).fetchone()
    assert row is not None
    return int(str(row[0]))


@contextmanager
def listening(broker: BrokerAddress, topic: str) -> Iterator[list[dict[str, object]]]:
    received: list[dict[str, object]] = []
    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.on_message = lambda _c, _u, m: received.append(json.loads(m.payload))
    client.on_subscribe = lambda *_args: subscribed.set()
    client.connect(broker.host, broker.port)
    client.subscribe(topic, qos=1)
    client.loop_start()
    try:
        assert subscribed.wait(10)
        yield received
    finally:
        client.disconnect()
        client.loop_stop()


async def test_an_alert_opens_once_is_acknowledged_resolves_itself_and_is_published(
    broker: BrokerAddress, database: Database, unique_site: str
) -> None:
    device = "aq-0001"
    register(database.dsn, [(device, unique_site)])
    prefix = f"alerts-test/{unique_site}"
    config = ingest_config(broker, database.dsn, alert_topic_prefix=prefix)
    start = (datetime.now(UTC) - timedelta(hours=3)).replace(microsecond=0)
    # 10 minutes to learn, two spikes a minute apart (one alert), then 30 calm minutes.
    values = [*calm(60), 240.0, *calm(5), 260.0, *calm(180, 3)]
    with listening(broker, f"{prefix}/#") as published:
        async with running_ingest(config) as service:
            publish_all(broker, telemetry(unique_site, device, start, values[:67]))
            assert await eventually(
                lambda: len(rows(database.dsn, "SELECT 1 FROM alerts")) == 1, 30
            )
            [(alert_id, kind, state, message, severity)] = rows(
                database.dsn, "SELECT alert_id, kind, state, message, severity FROM alerts"
            )
            assert (kind, state) == ("spike", "open")
            assert "PM2.5 240 µg/m³" in str(message)
            assert "σ above the usual" in str(message)
            assert severity in ("info", "warning")

            async with AsyncConnectionPool(database.dsn, open=False) as pool:
                store = AlertStore(pool)
                acked = await store.acknowledge(int(str(alert_id)), "alice", "crew on the way")
                assert acked.state == "acknowledged"
                assert acked.acknowledged_by == "alice"
                with pytest.raises(AlertError, match="cannot be acknowledged"):
                    await store.acknowledge(int(str(alert_id)), "bob")
                with pytest.raises(AlertError, match="no alert"):
                    await store.acknowledge(999_999, "bob")
                with pytest.raises(AlertError, match="needs some text"):
                    await store.comment(int(str(alert_id)), "bob", "  ")

                publish_all(
                    broker, telemetry(unique_site, device, start + 67 * STEP, values[67:], 50)
                )
                assert await eventually(
                    lambda: rows(database.dsn, "SELECT state FROM alerts")[0][0] == "resolved", 30
                )
                history = await store.history(int(str(alert_id)))
            assert [(e.action, e.actor) for e in history] == [
                ("opened", "detector"),
                ("acknowledged", "alice"),
                ("resolved", "detector"),
            ]
            assert history[1].comment == "crew on the way"
            assert history[2].comment.startswith("back to normal")
            assert service.detection is not None
            assert service.detection.opened == 1
            assert await eventually(lambda: len(published) >= 3, 20)
    assert [m["action"] for m in published] == ["opened", "acknowledged", "resolved"]
    assert {m["alert_id"] for m in published} == {alert_id}
    assert published[0]["device"] == device
    assert published[0]["kind"] == "spike"
    assert rows(database.dsn, "SELECT count(*) FROM alert_events WHERE published_at IS NULL") == [
        (0,)
    ]


async def test_concurrent_openings_of_one_stream_and_kind_make_one_alert(
    database: Database, unique_site: str
) -> None:
    register(database.dsn, [("aq-0001", unique_site)])
    stream = new_stream(database.dsn, "aq-0001")
    start = datetime.now(UTC)

    def detected(second: int) -> Opening:
        return Opening(
            stream, "aq-0001", unique_site, "spike", "warning", "x", 0.9, 1.0,
            start + timedelta(seconds=second),
        )  # fmt: skip

    async with (
        AsyncConnectionPool(database.dsn, open=False, max_size=4) as one,
        AsyncConnectionPool(database.dsn, open=False, max_size=4) as two,
    ):
        stores = [AlertStore(one), AlertStore(two)]
        outcomes = await asyncio.gather(*(stores[i % 2].open(detected(i)) for i in range(8)))
        assert sorted(o for o, _ in outcomes).count("opened") == 1
        # The detection that opened it, again (a new owner replaying the feed), is not counted.
        first = [o for o, _ in outcomes].index("opened")
        assert (await stores[0].open(detected(first)))[0] == "replayed"
    # Later detections fold into it; one older than it is recognised as already covered.
    folded = [o for o, _ in outcomes].count("refreshed")
    assert rows(database.dsn, "SELECT count(*), max(occurrences) FROM alerts") == [(1, folded + 1)]


async def test_replayed_transitions_change_nothing_already_recorded(
    database: Database, unique_site: str
) -> None:
    """A new owner of a partition goes over what its predecessor did after the last
    checkpoint: an episode opened and resolved is not opened again, and the replayed end of an
    old episode does not resolve a newer one."""
    register(database.dsn, [("aq-0001", unique_site)])
    stream = new_stream(database.dsn, "aq-0001")
    t0 = datetime.now(UTC) - timedelta(hours=1)

    def at(minute: int) -> Opening:
        return Opening(
            stream, "aq-0001", unique_site, "spike", "warning", "x", 0.9, 1.0,
            t0 + timedelta(minutes=minute),
        )  # fmt: skip

    async with AsyncConnectionPool(database.dsn, open=False) as pool:
        store = AlertStore(pool)
        assert (await store.open(at(0)))[0] == "opened"
        assert await store.resolve_condition(stream, "spike", "over", t0 + timedelta(minutes=5))
        assert (await store.open(at(10)))[0] == "opened"
        # Replayed from a checkpoint taken before minute 0:
        assert (await store.open(at(0)))[0] == "replayed"
        assert await store.resolve_condition(stream, "spike", "", t0 + timedelta(minutes=5)) is None
        assert (await store.open(at(10)))[0] == "replayed"
    assert rows(database.dsn, "SELECT state, occurrences FROM alerts ORDER BY started_at") == [
        ("resolved", 1),
        ("open", 1),
    ]


async def test_the_district_rate_limit_defers_new_alerts(
    database: Database, unique_site: str
) -> None:
    register(database.dsn, [(f"aq-{i:04d}", unique_site) for i in range(5)])
    ids = [new_stream(database.dsn, f"aq-{i:04d}") for i in range(5)]
    async with AsyncConnectionPool(database.dsn, open=False) as pool:
        store = AlertStore(pool, per_site_per_minute=3)
        outcomes = [
            (
                await store.open(
                    Opening(
                        stream,
                        f"aq-{i:04d}",
                        unique_site,
                        "spike",
                        "info",
                        "x",
                        0.7,
                        1.0,
                        datetime.now(UTC),
                    )
                )
            )[0]
            for i, stream in enumerate(ids)
        ]
    assert outcomes == ["opened"] * 3 + ["deferred"] * 2


async def test_two_ingest_workers_share_the_stream_and_one_of_them_judges_it_whole(
    broker: BrokerAddress, timescale_database: Database, unique_site: str
) -> None:
    """Each worker receives about half the messages; the stream's detectors, on whichever
    worker owns its site's partition, learn from every reading."""
    dsn = timescale_database.dsn
    device = "aq-0001"
    register(dsn, [(device, unique_site)])
    group = f"g{unique_site[-6:]}"
    configs = [
        ingest_config(broker, dsn, shared_group=group, alert_topic_prefix="", detection_lease_s=2)
        for _ in "ab"
    ]
    start = (datetime.now(UTC) - timedelta(hours=3)).replace(microsecond=0)
    values = calm(200) + [90.0 + (i % 3) for i in range(120)]
    async with running_ingest(configs[0]) as first, running_ingest(configs[1]) as second:
        workers = [first, second]
        # Both live: the partitions are split between them before the readings come.
        assert await eventually(
            lambda: all(w.detection is not None and len(w.detection.live) == 2 for w in workers)
        )
        assert await eventually(
            lambda: sum(w.detection is not None and len(w.detection.owned) for w in workers) == 16
        )
        publish_all(broker, telemetry(unique_site, device, start, values))
        assert await eventually(lambda: len(rows(dsn, "SELECT 1 FROM readings")) == len(values))
        received = [w.stats().messages_stored for w in workers]
        assert all(received), f"the shared subscription gave one worker everything: {received}"

        def owners_now() -> list[DetectionService]:
            return [
                s for w in workers if w.detection and (s := w.detection.service_of(unique_site))
            ]

        # A 2 s lease on a busy machine may be between owners for a moment.
        assert await eventually(lambda: len(owners_now()) == 1)
        owners = owners_now()
        [(found,)] = rows(dsn, "SELECT stream_id FROM streams")
        stream_id = int(str(found))
        assert await eventually(
            lambda: (
                owners[0].stage.known(stream_id)
                and owners[0].stage.snapshot(stream_id)["readings"] == len(values)
            )
        )
    # Leaving the block stopped both workers gracefully: their last transitions are written.
    # The shift is judged once, as a whole (its alert has resolved by the end of the data).
    by_kind = {
        str(kind): int(str(n))
        for kind, n in rows(dsn, "SELECT kind, count(*) FROM alerts GROUP BY 1")
    }
    assert by_kind.get("level_shift") == 1, by_kind
    assert set(by_kind.values()) == {1}, by_kind


async def test_a_restart_restores_detector_state_and_opens_no_alert_storm(
    broker: BrokerAddress, timescale_database: Database, unique_site: str
) -> None:
    dsn = timescale_database.dsn
    devices = [f"aq-{i:04d}" for i in range(6)]
    register(dsn, [(d, unique_site) for d in devices])
    config = ingest_config(broker, dsn, alert_topic_prefix="", checkpoint_every_s=1.0)
    start = (datetime.now(UTC) - timedelta(hours=4)).replace(microsecond=0)
    n = 180
    async with running_ingest(config) as service:
        for i, device in enumerate(devices):
            publish_all(broker, telemetry(unique_site, device, start, calm(n, i)))
        assert await eventually(lambda: len(rows(dsn, "SELECT 1 FROM readings")) == n * 6)
        assert service.detection is not None
    # The graceful stop saved every stream's state (and the periodic checkpoint may have too).
    saved = rows(dsn, "SELECT count(*) FROM detector_state")
    assert saved == [(6,)]
    before = rows(dsn, "SELECT count(*) FROM alerts")

    later = start + n * STEP
    async with running_ingest(ingest_config(broker, dsn, alert_topic_prefix="")) as restarted:
        partitioned = restarted.detection
        assert partitioned is not None
        assert await eventually(lambda: partitioned.service_of(unique_site) is not None)
        detection = partitioned.service_of(unique_site)
        assert detection is not None
        assert len(detection.stage.stream_ids()) == 6
        for stream_id in detection.stage.stream_ids():
            assert detection.stage.snapshot(stream_id)["readings"] == n  # not relearning
        for i, device in enumerate(devices):
            publish_all(broker, telemetry(unique_site, device, later, calm(60, i), 100))
        assert await eventually(lambda: len(rows(dsn, "SELECT 1 FROM readings")) == (n + 60) * 6)
        detection.stage.sweep(datetime.now(UTC) + timedelta(seconds=30), since=detection.started)
    # Stopped gracefully: every transition the sweep and the readings caused has been written.
    assert detection.opened == 0
    assert rows(dsn, "SELECT count(*) FROM alerts") == before


async def test_a_stop_leaves_an_unread_backlog_in_the_feed_for_the_next_start(
    broker: BrokerAddress, database: Database, unique_site: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop behind a long backlog (the demo's backfilled week) does not judge all of it
    first: it judges what its time allows, checkpoints that, and the next start judges the
    rest, every reading once."""
    dsn = database.dsn
    device = "aq-0001"
    register(dsn, [(device, unique_site)])
    config = ingest_config(broker, dsn, alert_topic_prefix="")
    start = (datetime.now(UTC) - timedelta(hours=3)).replace(microsecond=0)
    # The stop reads one feed row per partition and no more.
    monkeypatch.setattr(partitioned, "ROWS_PER_READ", 1)
    monkeypatch.setattr(partitioned, "STOP_READ_S", 0.0)
    parts = 4
    async with running_ingest(config) as service:
        detection = service.detection
        assert detection is not None
        assert await eventually(lambda: len(detection.owned) == 16)
        detection.settle_s = 3600.0  # while running, nothing settles: all of it is backlog
        for part in range(parts):  # one write, so one feed row, each
            published = telemetry(unique_site, device, start + part * 20 * STEP, calm(20), part + 1)
            publish_all(broker, published)
            assert await eventually(partial(stored_readings, dsn, 20 * (part + 1)))
    [(stream,)] = rows(dsn, "SELECT stream_id FROM streams")
    [(unread,)] = rows(dsn, "SELECT count(*) FROM detection_feed f JOIN detection_partitions p"
                            " USING (partition) WHERE f.xid > p.read_to")  # fmt: skip
    assert unread == parts - 1

    async with running_ingest(config) as restarted:
        again = restarted.detection
        assert again is not None
        assert await eventually(lambda: again.service_of(unique_site) is not None)
        owner = again.service_of(unique_site)
        assert owner is not None
        assert await eventually(
            lambda: (
                owner.stage.known(int(str(stream)))
                and owner.stage.snapshot(int(str(stream)))["readings"] == 20 * parts
            )
        )


async def test_a_new_sensors_first_reading_is_judged_as_what_it_is(
    broker: BrokerAddress, database: Database, unique_site: str
) -> None:
    """Its stream is created by that reading; detection waits to learn it is an air station's
    temperature (plausible to 55 °C) instead of judging an unknown series."""
    device = "aq-new-1"
    register(database.dsn, [(device, unique_site)])
    config = ingest_config(broker, database.dsn, alert_topic_prefix="")
    at = datetime.now(UTC).replace(microsecond=0)
    reading = Reading("aq", "temperature", 80.0, "degC", at)
    payload = encode_batch(Batch(device, 1, (reading,), at))
    async with running_ingest(config):
        publish_all(broker, [(f"city/v1/{unique_site}/{device}/telemetry", payload)])
        assert await eventually(lambda: len(rows(database.dsn, "SELECT 1 FROM alerts")) == 1, 30)
    [(kind, value)] = rows(database.dsn, "SELECT kind, value FROM alerts")
    assert (kind, value) == ("impossible", 80.0)


async def test_a_transition_cut_off_by_a_database_failover_is_written_at_the_next_step(
    database: Database, unique_site: str
) -> None:
    """The second of two openings fails as a failover would cut it: the next step writes it."""
    register(database.dsn, [("aq-0001", unique_site)])
    ids = [new_stream(database.dsn, "aq-0001", metric) for metric in ("pm2_5", "pm10")]
    service = DetectionService()
    service.stage.describe(
        [StreamInfo(i, "aq-0001", "aq", m, "ug/m3", "air", unique_site)
         for i, m in zip(ids, ("pm2_5", "pm10"), strict=True)]
    )  # fmt: skip
    now = datetime.now(UTC)
    batches = [[Event(i, Kind.SPIKE, True, now, 0.95, 240.0, 12.0, 3.0) for i in ids]]
    service.stage.drain = lambda: batches.pop() if batches else []  # type: ignore[method-assign]

    class CutOff(AlertStore):
        calls = 0

        async def open(self, opening: Opening) -> tuple[OpenOutcome, int | None]:
            CutOff.calls += 1
            if CutOff.calls == 2:
                raise psycopg.OperationalError("server closed the connection unexpectedly")
            return await super().open(opening)

    async with AsyncConnectionPool(database.dsn, open=False) as pool:
        store = CutOff(pool)
        with pytest.raises(psycopg.OperationalError):
            await service.step(pool, store)
        await service.step(pool, store)
    assert rows(database.dsn, "SELECT stream_id, state FROM alerts ORDER BY stream_id") == [
        (i, "open") for i in sorted(ids)
    ]
