"""The pipeline with an in-memory store: ack after commit, in order, retries, poison isolation."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from edge.contract import Status, encode_status
from ingest.consumer import Inbound
from ingest.pipeline import STORAGE_ERROR, Pipeline
from ingest.registry import MemoryDirectory
from ingest.validate import fast_loads
from ingest.writer import MemoryStore, WriteBatch, WriteResult
from tests.ingest.helpers import batch_payload, non_numeric_payload, recent

SITES = {"aq-0001": "centre", "aq-0002": "centre"}
TOPIC = "city/v1/centre/{}/telemetry"


class Acks:
    """Collects acknowledgements in the order they are sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def message(self, name: str, payload: bytes, topic: str | None = None) -> Inbound:
        return Inbound(
            topic or TOPIC.format("aq-0001"),
            payload,
            datetime.now(UTC),
            lambda: self.sent.append(name),
        )


def pipeline(store: MemoryStore, max_rows: int = 5_000) -> Pipeline:
    return Pipeline(
        store, MemoryDirectory(dict(SITES)), loads=fast_loads, max_age_s=0.05, max_rows=max_rows
    )


async def run_until_drained(pipe: Pipeline, messages: list[Inbound]) -> None:
    stopping = asyncio.Event()
    task = asyncio.create_task(pipe.run(stopping))
    for message in messages:
        await pipe.deliver(message)
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
    pipe = pipeline(store)
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


async def test_nothing_is_acked_before_its_batch_is_durable() -> None:
    store, acks = MemoryStore(), Acks()
    store.fail_next = 3  # the database is down for three attempts
    pipe = pipeline(store)
    stopping = asyncio.Event()
    task = asyncio.create_task(pipe.run(stopping))
    await pipe.deliver(acks.message("m1", batch_payload("aq-0001", 1, recent())))
    await asyncio.sleep(0.1)
    assert acks.sent == []  # still retrying: not acknowledged
    stopping.set()
    await asyncio.wait_for(task, 30)
    assert acks.sent == ["m1"]
    assert pipe.stats.write_retries == 3
    assert len(store.readings) == 3


async def test_redelivered_messages_count_as_duplicates() -> None:
    store, acks = MemoryStore(), Acks()
    payload = batch_payload("aq-0001", 1, recent())
    pipe = pipeline(store)
    await run_until_drained(pipe, [acks.message("a", payload), acks.message("a-again", payload)])
    assert (pipe.stats.readings_stored, pipe.stats.duplicates) == (3, 3)
    assert acks.sent == ["a", "a-again"]


async def test_unknown_devices_are_looked_up_again_before_refusal() -> None:
    registry = {"aq-0001": "centre"}
    store, acks = MemoryStore(), Acks()
    pipe = Pipeline(store, MemoryDirectory(registry), loads=fast_loads, max_age_s=0.05)
    stopping = asyncio.Event()
    task = asyncio.create_task(pipe.run(stopping))
    await asyncio.sleep(0.05)
    registry["aq-0002"] = "centre"  # registered after ingest started
    await pipe.deliver(
        acks.message("new", batch_payload("aq-0002", 1, recent()), TOPIC.format("aq-0002"))
    )
    await pipe.deliver(
        acks.message("ghost", batch_payload("aq-0003", 1, recent()), TOPIC.format("aq-0003"))
    )
    stopping.set()
    await asyncio.wait_for(task, 10)
    assert len(store.readings) == 3
    assert [r.reason for r in store.rejections] == ["unknown_device"]


async def test_status_messages_update_registered_devices_only() -> None:
    store, acks = MemoryStore(), Acks()
    at = datetime.now(UTC)
    pipe = pipeline(store)
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
        ],
    )
    assert set(store.statuses) == {"aq-0001"}
    assert [r.reason for r in store.rejections] == ["device_mismatch"]
    assert acks.sent == ["s1", "s2", "s3"]


class PoisonStore(MemoryStore):
    """Refuses any batch containing a reading of exactly 11.0, like a database constraint would."""

    async def write(self, batch: WriteBatch) -> WriteResult:
        if any(row.value == 11.0 for row in batch.rows):
            raise psycopg.DataError("value violates a constraint")
        return await super().write(batch)


async def test_a_message_the_database_refuses_is_isolated_and_the_rest_kept() -> None:
    store, acks = PoisonStore(), Acks()
    start = recent()
    poison = batch_payload("aq-0001", 2, start - timedelta(minutes=5), count=2)  # values 10, 11
    pipe = pipeline(store, max_rows=1000)
    await run_until_drained(
        pipe,
        [
            acks.message("ok-1", batch_payload("aq-0001", 1, start, count=1)),
            acks.message("poison", poison),
            acks.message(
                "ok-2", batch_payload("aq-0002", 1, start, count=1), TOPIC.format("aq-0002")
            ),
        ],
    )
    assert acks.sent == ["ok-1", "poison", "ok-2"]
    assert len(store.readings) == 2
    assert [r.reason for r in store.rejections] == [STORAGE_ERROR]


@pytest.mark.parametrize("rows_per_message", [1, 50])
async def test_batches_respect_the_row_limit(rows_per_message: int) -> None:
    writes: list[int] = []

    class CountingStore(MemoryStore):
        async def write(self, batch: WriteBatch) -> WriteResult:
            writes.append(len(batch.rows))
            return await super().write(batch)

    acks = Acks()
    start = recent()
    messages = [
        acks.message(
            f"m{i}", batch_payload("aq-0001", i, start - timedelta(minutes=i), rows_per_message)
        )
        for i in range(40)
    ]
    pipe = Pipeline(
        CountingStore(), MemoryDirectory(dict(SITES)), loads=fast_loads, max_rows=100, max_age_s=5
    )
    await run_until_drained(pipe, messages)
    assert sum(writes) == 40 * rows_per_message
    assert max(writes) <= 100 + rows_per_message


async def test_statuses_from_another_site_are_ignored() -> None:
    store, acks = MemoryStore(), Acks()
    pipe = pipeline(store)
    await run_until_drained(
        pipe,
        [
            acks.message(
                "s", encode_status(Status("aq-0001", "offline")), "city/v1/north/aq-0001/status"
            )
        ],
    )
    assert store.statuses == {}
    assert pipe.stats.statuses_ignored == 1
    assert acks.sent == ["s"]
