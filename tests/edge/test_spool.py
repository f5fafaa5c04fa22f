"""The on-disk spool: durable, ordered, bounded, compact, and resilient to a corrupt file."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from edge.spool import Spool


def payload(seq: int, size: int = 400) -> bytes:
    return json.dumps({"seq": seq, "readings": ["x" * 30] * (size // 30)}).encode()


def test_batches_come_back_in_order_and_survive_a_reopen(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    for _ in range(5):
        seq = spool.next_seq()
        spool.put(seq, payload(seq), readings=10)
    spool.close()  # as after a power cut: nothing but the file remains

    reopened = Spool(tmp_path / "spool.db")
    entries = reopened.after(0, 100)
    assert [e.seq for e in entries] == [0, 1, 2, 3, 4]
    assert entries[2].payload == payload(2)
    assert reopened.next_seq() == 5  # sequence numbers never repeat
    assert reopened.after(entries[1].id, 2)[0].seq == 2
    reopened.close()


def test_acknowledged_batches_are_deleted_in_batches(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", ack_flush_s=3600)
    for seq in range(4):
        spool.put(seq, payload(seq), readings=1)
    first, second, *_ = spool.after(0, 10)
    spool.ack(first.id)
    spool.ack(second.id)
    assert spool.depth() == 2  # already counted as gone...
    with sqlite3.connect(tmp_path / "spool.db") as other:
        assert other.execute("SELECT count(*) FROM batches").fetchone() == (
            4,
        )  # ...not yet deleted
    spool.flush()
    with sqlite3.connect(tmp_path / "spool.db") as other:
        assert other.execute("SELECT count(*) FROM batches").fetchone() == (2,)
    spool.close()


def test_the_oldest_batches_are_dropped_and_counted_when_full(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", max_bytes=4_000)
    for seq in range(40):
        spool.put(
            seq,
            json.dumps({"seq": seq, "noise": [seq * 7919 % 101 for _ in range(80)]}).encode(),
            readings=5,
        )
    kept = [e.seq for e in spool.after(0, 100)]
    assert kept == list(range(40 - len(kept), 40))  # the newest, contiguous
    assert spool.stored_bytes() <= 4_000
    assert spool.dropped() == (40 - len(kept)) * 5
    spool.close()
    assert Spool(tmp_path / "spool.db").dropped() == (40 - len(kept)) * 5  # the count persists


def test_readings_older_than_the_age_limit_are_dropped(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", max_age_s=0.2)
    spool.put(0, payload(0), readings=3)
    time.sleep(0.3)
    spool.put(1, payload(1), readings=2)
    assert [e.seq for e in spool.after(0, 10)] == [1]
    assert spool.dropped() == 3
    spool.close()


def test_payloads_are_stored_compressed(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    raw = payload(0, size=20_000)
    spool.put(0, raw, readings=100)
    assert spool.stored_bytes() < len(raw) / 5
    spool.close()


@pytest.mark.parametrize(
    "garbage", [b"this is not a database" * 100, b"SQLite format 3\x00" + b"\xff" * 5000]
)
def test_a_corrupt_file_is_set_aside_and_a_new_spool_started(
    tmp_path: Path, garbage: bytes
) -> None:
    path = tmp_path / "spool.db"
    path.write_bytes(garbage)
    spool = Spool(path)
    assert spool.recovered
    assert spool.recovered[0].startswith("spool.db.corrupt-")
    assert (tmp_path / spool.recovered[0]).read_bytes() == garbage  # kept for diagnosis
    spool.put(spool.next_seq(), payload(0), readings=1)
    assert [e.seq for e in spool.after(0, 10)] == [0]
    spool.close()
