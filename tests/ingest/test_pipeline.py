"""The pipeline with an in-memory store: ack after commit, in order, retries, poison isolation."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from edge.contract import Status, encode_status
from ingest.mqtt import Message
from ingest.pipeline import STORAGE_ERROR, Pipeline
from ingest.registry import MemoryDirectory
from ingest.validate import fast_loads
from ingest.writer import MemoryStore, WriteBatch, WriteResult
from processing.feed import PartitionMap, partition_of
from tests.ingest.helpers import batch_payload, non_numeric_payload, recent

SITES = {"aq-0001": "centre", "aq-0002": "centre"}
TOPIC = "city/v1/centre/{}/telemetry"


class Acks:
    """Names messages by packet id and records acknowledgements in the order they are sent."""

    def __init__(self) -> None:
        self.names: dict[int, str] = {}
        self.sent: list[str] = []

    def message(self, name: str, payload: bytes, topic: str | None = None) -> Message:
        packet_id = len(self.names) + 1
        self.names[packet_id] = name
        return Message(topic or TOPIC.format("aq-0001"), payload, 1, packet_id)

    def __call__(self, tokens: list[tuple[int, int, int]]) -> None:
        self.sent.extend(self.names[packet_id] for _, packet_id, _ in tokens)


def pipeline(store: MemoryStore, acks: Acks, **kwargs: object) -> Pipeline:
    options: dict[str, object] = {"loads": fast_loads, "max_age_s": 0.05}
    options.update(kwargs)
    return Pipeline(store, MemoryDirectory(dict(SITES)), acks, **options)  # type: ignore[arg-type]


async def run_until_drained(pipe: Pipeline, messages: list[Message], chunk: int = 2) -> None:
    stopping = asyncio.Event()
    task = asyncio.create_task(pipe.run(stopping))
    for start in range(0, len(messages), chunk):
        pipe.deliver(messages[start : start + chunk], 1)
        await asyncio.sleep(0)
    stopping.set()
    await asyncio.wait_for(task, 10)


async def test_good_messages_around_bad_ones_are_stored_and_all_acked_in_order() -> None:
    store, acks = MemoryStore(), Acks()
    start = recent()
    messages = [
        acks.message("good-1", batch_payload("aq-0001", 1, start)),
        acks.message("malformed", b'{"v": 1, "device": '),
        acks.message(
            "wrong-version", batch_payload("aq-0001", 2, start).replace(b'"v":1', b'"v":3')
        ),
        acks.message(
            "non-numeric", non_numeric_payload("aq-0001", 3, start - timedelta(minutes=10))
        ),
        acks.message("good-2", batch_payload("aq-0002", 1, start), TOPIC.format("aq-0002")),
    ]
    pipe = pipeline(store, acks)
    await run_until_drained(pipe, messages)
    assert acks.sent == ["good-1", "malformed", "wrong-version", "non-numeric", "good-2"]
    assert len(store.readings) == 3 + 2 + 3
    assert [(r.reason, r.reading_index) for r in store.rejections] == [
        ("malformed_json", None),
        ("unsupported_version", None),
        ("wrong_type", 1),
    ]
    assert pipe.stats.rejected_by_reason == {
        "malformed_json": 1,
        "unsupported_version": 1,
        "wrong_type": 1,
    }
    assert pipe.drained.is_set()


async def test_readings_keep_their_streams_values_and_times() -> None:
    store, acks = MemoryStore(), Acks()
    start = recent()
    await run_until_drained(
        pipeline(store, acks), [acks.message("m", batch_payload("aq-0001", 1, start))]
    )
    stored = sorted((store.key_of(sid), ts, value) for (sid, ts), value in store.readings.items())
    first_us = int(start.timestamp() * 1_000_000)
    assert stored == [
        (("aq-0001", "aq", "pm2_5"), first_us + i * 1_000_000, 10.0 + i) for i in range(3)
    ]
    sid = store.ids[("aq-0001", "aq", "pm2_5")]
    assert store.latest[sid] == (first_us + 2_000_000, 12.0)  # newest value kept for live views
    assert store.seen["aq-0001"][1] == 1  # last sequence number


async def test_each_reading_goes_to_the_feed_partition_of_its_devices_site() -> None:
    """Also after the device is moved to another district: its streams follow it."""

    class Recording(MemoryStore):
        def __init__(self) -> None:
            super().__init__()
            self.partitions: list[tuple[list[int], list[int]]] = []

        async def write(self, batch: WriteBatch) -> WriteResult:
            assert batch.partitions is not None
            ids = batch.readings.arrays().stream_ids.tolist()
            self.partitions.append((ids, batch.partitions.tolist()))
            return await super().write(batch)

    store, acks = Recording(), Acks()
    directory = MemoryDirectory({"aq-0001": "centre", "aq-0002": "harbour"})
    pipe = Pipeline(store, directory, acks, loads=fast_loads, max_age_s=0.05, feed=PartitionMap())
    start = recent()
    first = [
        acks.message("one", batch_payload("aq-0001", 1, start)),
        acks.message(
            "two", batch_payload("aq-0002", 1, start), "city/v1/harbour/aq-0002/telemetry"
        ),
    ]
    await run_until_drained(pipe, first)
    directory.sites["aq-0001"] = "harbour"
    await pipe.refresh_sites()
    moved = acks.message(
        "moved", batch_payload("aq-0001", 2, start + timedelta(seconds=30)),
        "city/v1/harbour/aq-0001/telemetry",
    )  # fmt: skip
    await run_until_drained(pipe, [moved])
    placed = {
        (store.key_of(sid)[0], partition)
        for ids, partitions in store.partitions
        for sid, partition in zip(ids, partitions, strict=True)
    }
    assert placed == {
        ("aq-0001", partition_of("centre")),
        ("aq-0002", partition_of("harbour")),
        ("aq-0001", partition_of("harbour")),
    }
    assert store.partitions[-1][1] == [partition_of("harbour")] * len(store.partitions[-1][1])


async def test_nothing_is_acked_before_its_batch_is_durable() -> None:
    store, acks = MemoryStore(), Acks()
    store.fail_next = 3  # the database is down for three attempts
    pipe = pipeline(store, acks)
    stopping = asyncio.Event()
    task = asyncio.create_task(pipe.run(stopping))
    pipe.deliver([acks.message("m1", batch_payload("aq-0001", 1, recent()))], 1)
    for _ in range(500):  # bounded wait for the first failed write
        if pipe.writing_blocked:
            break
        await asyncio.sleep(0.01)
    assert pipe.writing_blocked
    assert acks.sent == []  # still retrying: not acknowledged
    stopping.set()
    await asyncio.wait_for(task, 30)
    assert acks.sent == ["m1"]
    assert pipe.stats.write_retries == 3
    assert len(store.readings) == 3


async def test_redelivered_messages_count_as_duplicates() -> None:
    store, acks = MemoryStore(), Acks()
    payload = batch_payload("aq-0001", 1, recent())
    pipe = pipeline(store, acks)
    await run_until_drained(pipe, [acks.message("a", payload), acks.message("a-again", payload)])
    assert (pipe.stats.readings_stored, pipe.stats.duplicates) == (3, 3)
    assert acks.sent == ["a", "a-again"]


async def test_unknown_devices_are_looked_up_again_before_refusal() -> None:
    registry = {"aq-0001": "centre"}
    store, acks = MemoryStore(), Acks()
    pipe = Pipeline(store, MemoryDirectory(registry), acks, loads=fast_loads, max_age_s=0.05)
    stopping = asyncio.Event()
    task = asyncio.create_task(pipe.run(stopping))
    await asyncio.sleep(0.05)
    registry["aq-0002"] = "centre"  # registered after ingest started
    pipe.deliver(
        [
            acks.message("new", batch_payload("aq-0002", 1, recent()), TOPIC.format("aq-0002")),
            acks.message("ghost", batch_payload("aq-0003", 1, recent()), TOPIC.format("aq-0003")),
        ],
        1,
    )
    stopping.set()
    await asyncio.wait_for(task, 10)
    assert len(store.readings) == 3
    assert [r.reason for r in store.rejections] == ["unknown_device"]


async def test_status_messages_update_registered_devices_only() -> None:
    store, acks = MemoryStore(), Acks()
    at = datetime.now(UTC)
    pipe = pipeline(store, acks)
    await run_until_drained(
        pipe,
        [
            acks.message(
                "s1",
                encode_status(Status("aq-0001", "online", at, {"backlog": 2})),
                "city/v1/centre/aq-0001/status",
            ),
            acks.message(
                "s2", encode_status(Status("zz-0001", "offline")), "city/v1/centre/zz-0001/status"
            ),
            acks.message(
                "s3",
                encode_status(Status("aq-0002", "online", at)),
                "city/v1/centre/aq-0001/status",
            ),
            acks.message(
                "s4", encode_status(Status("aq-0001", "offline")), "city/v1/north/aq-0001/status"
            ),
        ],
    )
    assert set(store.statuses) == {"aq-0001"}
    assert store.statuses["aq-0001"].state == "online"
    assert [r.reason for r in store.rejections] == ["device_mismatch"]
    assert pipe.stats.statuses_ignored == 2  # unregistered, and registered at another site
    assert acks.sent == ["s1", "s2", "s3", "s4"]


class PoisonStore(MemoryStore):
    """Refuses any batch containing a reading of exactly 11.0, like a database constraint would."""

    async def write(self, batch: WriteBatch) -> WriteResult:
        if 11.0 in batch.readings.values:
            raise psycopg.DataError("value violates a constraint")
        return await super().write(batch)


async def test_a_message_the_database_refuses_is_isolated_and_the_rest_kept() -> None:
    store, acks = PoisonStore(), Acks()
    start = recent()
    poison = batch_payload("aq-0001", 2, start - timedelta(minutes=5), count=2)  # values 10, 11
    pipe = pipeline(store, acks, max_rows=1000)
    await run_until_drained(
        pipe,
        [
            acks.message("ok-1", batch_payload("aq-0001", 1, start, count=1)),
            acks.message("poison", poison),
            acks.message(
                "ok-2", batch_payload("aq-0002", 1, start, count=1), TOPIC.format("aq-0002")
            ),
        ],
        chunk=3,
    )
    assert acks.sent == ["ok-1", "poison", "ok-2"]
    assert len(store.readings) == 2
    assert [(r.reason, r.device) for r in store.rejections] == [(STORAGE_ERROR, "aq-0001")]


@pytest.mark.parametrize("rows_per_message", [1, 50])
async def test_batches_respect_the_row_limit(rows_per_message: int) -> None:
    writes: list[int] = []

    class CountingStore(MemoryStore):
        async def write(self, batch: WriteBatch) -> WriteResult:
            writes.append(len(batch.readings))
            return await super().write(batch)

    acks = Acks()
    start = recent()
    messages = [
        acks.message(
            f"m{i}", batch_payload("aq-0001", i, start - timedelta(minutes=i), rows_per_message)
        )
        for i in range(40)
    ]
    pipe = pipeline(CountingStore(), acks, max_rows=100, max_age_s=5)
    await run_until_drained(pipe, messages, chunk=40)
    assert sum(writes) == 40 * rows_per_message
    assert max(writes) <= 100 + rows_per_message


async def test_the_consumer_is_asked_to_pause_when_the_queue_is_long() -> None:
    store, acks = MemoryStore(), Acks()
    pipe = pipeline(store, acks, queue_size=4)
    resumed: list[bool] = []
    pipe.on_room = lambda: resumed.append(True)
    start = recent()
    many = [
        acks.message(f"m{i}", batch_payload("aq-0001", i, start - timedelta(minutes=i), 1))
        for i in range(5)
    ]
    assert pipe.deliver(many[:3], 1) is True
    assert pipe.deliver(many[3:], 1) is False  # the consumer pauses reading
    stopping = asyncio.Event()
    task = asyncio.create_task(pipe.run(stopping))
    stopping.set()
    await asyncio.wait_for(task, 10)
    assert resumed  # and is told to resume once the writer caught up
    assert len(acks.sent) == 5
