"""The agent loop against a fake MQTT session: batching, acknowledgements, faults, bounds."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from edge.agent import AgentSettings, EdgeAgent
from edge.contract import Batch, Reading, decode_batch
from edge.outbox import MemoryOutbox
from edge.sensors.base import SensorError


class FakePublisher:
    """Records publishes; the test decides when the broker acknowledges."""

    def __init__(self) -> None:
        self.connected = True
        self.sent: dict[int, bytes] = {}
        self.acked: set[int] = set()
        self.statuses: list[dict[str, object]] = []
        self._mid = 0
        self._acks: list[int] = []
        self._reconnected = True

    def publish_telemetry(self, payload: bytes) -> int | None:
        self._mid += 1
        self.sent[self._mid] = payload
        return self._mid

    def publish_status(self, fields: dict[str, object]) -> int:
        self._mid += 1
        self.statuses.append(fields)
        return self._mid

    def ack_all(self) -> None:
        self._acks.extend(mid for mid in self.sent if mid not in self.acked)
        self.acked.update(self.sent)

    def drain_acks(self) -> list[int]:
        acks, self._acks = self._acks, []
        return acks

    def take_reconnect(self) -> bool:
        fresh, self._reconnected = self._reconnected, False
        return fresh

    def start(self) -> None: ...

    def stop(self, fields: object = None, timeout: float = 5.0) -> None: ...


class CountingSensor:
    def __init__(self, name: str = "s") -> None:
        self.name = name
        self.calls = 0

    def read(self, now: datetime) -> list[Reading]:
        self.calls += 1
        return [Reading(self.name, "pm2_5", float(self.calls), "ug/m3", now)]


class BrokenSensor:
    name = "broken"

    def read(self, now: datetime) -> list[Reading]:
        raise SensorError("no answer from the serial port")


class BuggySensor:
    name = "buggy"

    def read(self, now: datetime) -> list[Reading]:
        raise ZeroDivisionError("driver bug")


def make_agent(
    sensors: list[object], outbox: MemoryOutbox | None = None, **settings: float
) -> tuple[EdgeAgent, FakePublisher, list[Batch]]:
    publisher = FakePublisher()
    batches: list[Batch] = []
    base: dict[str, float] = {"sample_interval_s": 0.0, "batch_interval_s": 0.0}
    base.update(settings)
    agent = EdgeAgent(
        AgentSettings(site="centre", device="aq-0001", **base),  # type: ignore[arg-type]
        sensors,  # type: ignore[arg-type]
        publisher,  # type: ignore[arg-type]
        outbox or MemoryOutbox(),
        on_batch=batches.append,
    )
    return agent, publisher, batches


def test_batches_are_published_and_forgotten_only_after_puback() -> None:
    agent, publisher, batches = make_agent([CountingSensor()])
    agent.tick()
    assert len(publisher.sent) == 1
    assert agent.backlog == 1  # sent, not yet acknowledged
    publisher.ack_all()
    agent.tick()
    assert agent.stats.acked == 1
    payload = decode_batch(next(iter(publisher.sent.values()))).batch
    assert payload == batches[0]
    assert payload.seq == 0


def test_sequence_numbers_increase_with_every_batch() -> None:
    agent, publisher, _ = make_agent([CountingSensor()])
    for _ in range(5):
        agent.tick()
        publisher.ack_all()
    seqs = [decode_batch(p).batch.seq for p in publisher.sent.values()]
    assert seqs == sorted(seqs) == list(range(len(seqs)))


def test_a_failing_sensor_is_counted_and_does_not_stop_the_others() -> None:
    good = CountingSensor()
    agent, publisher, batches = make_agent([BrokenSensor(), good, BuggySensor()])
    agent.tick()
    assert agent.stats.sensor_faults == {"broken": 1, "buggy": 1}
    assert good.calls == 1
    assert [r.sensor for r in batches[0].readings] == ["s"]
    assert publisher.statuses[0]["sensor_faults"] == 2


def test_in_flight_window_is_bounded_and_backlog_waits_in_order() -> None:
    agent, publisher, _ = make_agent([CountingSensor()], max_inflight=2)
    for _ in range(5):
        agent.tick()
    assert len(publisher.sent) == 2
    assert agent.backlog == 5
    publisher.ack_all()
    agent.tick()
    seqs = [decode_batch(p).batch.seq for p in publisher.sent.values()]
    assert seqs == [0, 1, 2, 3]


def test_outbox_drops_the_oldest_when_full_and_counts_it() -> None:
    outbox = MemoryOutbox(max_batches=3)
    agent, publisher, _ = make_agent([CountingSensor()], outbox, max_inflight=1)
    publisher.connected = False
    for _ in range(6):
        agent.tick()
    assert outbox.depth() == 3
    assert outbox.dropped() >= 2
    assert agent.status_fields()["dropped"] == outbox.dropped()


def test_large_samples_are_split_into_bounded_batches() -> None:
    agent, _, batches = make_agent([CountingSensor()], max_batch_readings=1)
    agent._pending = [  # a burst bigger than one batch
        Reading("s", "pm2_5", float(i), "ug/m3", datetime(2026, 1, 1, 0, 0, i, tzinfo=UTC))
        for i in range(3)
    ]
    agent.flush()
    assert [len(b.readings) for b in batches] == [1, 1, 1]


def test_status_goes_out_on_reconnect_and_on_its_interval() -> None:
    agent, publisher, _ = make_agent([CountingSensor()], status_interval_s=3600)
    agent.tick()
    agent.tick()
    assert len(publisher.statuses) == 1
    publisher._reconnected = True
    agent.tick()
    assert len(publisher.statuses) == 2


def test_memory_outbox_rejects_a_zero_bound() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        MemoryOutbox(0)


def test_tick_reports_when_work_is_next_due() -> None:
    agent, _, _ = make_agent([CountingSensor()], sample_interval_s=30, batch_interval_s=60)
    started = time.monotonic()
    delay = agent.tick()
    assert 0 < delay <= 30 + (time.monotonic() - started)
