"""The agent loop against a fake MQTT session: batching, acknowledgements, faults, clock, config."""

from __future__ import annotations

import ctypes.util
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge import clock as edge_clock
from edge.agent import AgentSettings, EdgeAgent
from edge.clock import Clock
from edge.contract import Batch, Reading, decode_batch
from edge.outbox import MemoryOutbox
from edge.sensors.base import SensorError
from edge.spool import Spool

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


class FakePublisher:
    """Records publishes; the test decides when the broker acknowledges."""

    def __init__(self) -> None:
        self.connected = True
        self.sent: dict[int, bytes] = {}
        self.acked: set[int] = set()
        self.statuses: list[dict[str, object]] = []
        self.configs: list[bytes] = []
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

    def drain_configs(self) -> list[bytes]:
        configs, self.configs = self.configs, []
        return configs

    def take_reconnect(self) -> bool:
        fresh, self._reconnected = self._reconnected, False
        return fresh

    def batches(self) -> list[Batch]:
        return [decode_batch(p).batch for p in self.sent.values()]

    def start(self) -> None: ...

    def stop(self, fields: object = None, timeout: float = 5.0) -> None: ...


class CountingSensor:
    def __init__(self, name: str = "s") -> None:
        self.name = name
        self.calls = 0

    def read(self, now: datetime) -> list[Reading]:
        self.calls += 1
        return [Reading(self.name, "pm2_5", float(self.calls), "ug/m3", now)]


class FlakySensor:
    """Fails the first ``failures`` reads, then works."""

    name = "flaky"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def read(self, now: datetime) -> list[Reading]:
        self.calls += 1
        if self.calls <= self.failures:
            raise SensorError("checksum mismatch in frame")
        return [Reading(self.name, "temperature", 5.0, "degC", now)]


class BuggySensor:
    name = "buggy"

    def read(self, now: datetime) -> list[Reading]:
        raise ZeroDivisionError("driver bug")


class FakeClock(Clock):
    def __init__(self, at: datetime = NOW, synced: bool = True) -> None:
        self.at, self.synced = at, synced
        super().__init__(now=lambda: self.at, synchronised=lambda: self.synced)


def make_agent(
    sensors: list[object],
    outbox: MemoryOutbox | Spool | None = None,
    clock: Clock | None = None,
    **settings: object,
) -> tuple[EdgeAgent, FakePublisher, list[Batch]]:
    publisher = FakePublisher()
    batches: list[Batch] = []
    base: dict[str, object] = {"sample_interval_s": 0.0, "batch_interval_s": 0.0}
    base.update(settings)
    agent = EdgeAgent(
        AgentSettings(site="centre", device="aq-0001", **base),  # type: ignore[arg-type]
        sensors,  # type: ignore[arg-type]
        publisher,  # type: ignore[arg-type]
        outbox or MemoryOutbox(),
        clock=clock or FakeClock(),
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
    assert publisher.batches()[0] == batches[0]
    assert batches[0].seq == 0


def test_sequence_numbers_increase_with_every_batch() -> None:
    agent, publisher, _ = make_agent([CountingSensor()])
    for _ in range(5):
        agent.tick()
        publisher.ack_all()
    seqs = [b.seq for b in publisher.batches()]
    assert seqs == list(range(len(seqs)))


def test_a_failing_sensor_is_retried_with_backoff_and_reported() -> None:
    good, flaky = CountingSensor(), FlakySensor(failures=2)
    agent, publisher, _batches = make_agent(
        [flaky, good, BuggySensor()], sample_interval_s=0.05, status_interval_s=3600
    )
    deadline = time.monotonic() + 5
    buggy = agent.sensors["buggy"]
    while min(good.calls, flaky.calls, buggy.faults) == 0 and time.monotonic() < deadline:
        time.sleep(agent.tick())  # first samples are spread over the first interval
    assert good.calls >= 1
    status = publisher.statuses[-1]
    assert status["sensors_ok"] == 1
    assert "flaky: checksum mismatch in frame" in str(status["sensors_failing"])
    assert "buggy: driver bug" in str(status["sensors_failing"])
    deadline = time.monotonic() + 10
    while flaky.calls < 3 and time.monotonic() < deadline:
        time.sleep(agent.tick())
    assert flaky.calls == 3
    assert agent.sensors["flaky"].healthy
    # The change of health was announced without waiting for the status interval.
    assert "flaky" not in str(publisher.statuses[-1]["sensors_failing"])
    faults = publisher.statuses[-1]["sensor_faults"]
    assert isinstance(faults, int)
    assert faults >= 3


def test_in_flight_window_is_bounded_and_backlog_waits_in_order() -> None:
    agent, publisher, _ = make_agent([CountingSensor()], max_inflight=2)
    for _ in range(5):
        agent.tick()
    assert len(publisher.sent) == 2
    assert agent.backlog == 5
    publisher.ack_all()
    agent.tick()
    assert [b.seq for b in publisher.batches()] == [0, 1, 2, 3]


def test_backlog_drains_at_the_configured_rate() -> None:
    agent, publisher, _ = make_agent([CountingSensor()], max_inflight=100, drain_readings_per_s=20)
    publisher.connected = False
    for _ in range(40):
        agent._sample_due(time.monotonic() + 1e6)  # 40 samples, no waiting
        agent.flush()
    publisher.connected = True
    started = time.monotonic()
    while len(publisher.sent) < 40 and time.monotonic() - started < 10:
        agent.pump()
        publisher.ack_all()
        time.sleep(0.01)
    elapsed = time.monotonic() - started
    assert len(publisher.sent) == 40
    assert 1.2 < elapsed < 4  # about 20 readings per second after the first second's burst


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
        Reading("s", "pm2_5", float(i), "ug/m3", NOW + timedelta(seconds=i)) for i in range(3)
    ]
    agent.flush()
    assert [len(b.readings) for b in batches] == [1, 1, 1]


def test_readings_from_before_the_build_are_held_and_restamped() -> None:
    clock = FakeClock(at=datetime(1970, 1, 1, 0, 1, tzinfo=UTC), synced=False)
    agent, _publisher, batches = make_agent([CountingSensor()], clock=clock)
    agent.tick()
    assert batches == []  # nothing goes out with a 1970 timestamp
    assert agent.status_fields()["held_readings"] == 1
    assert agent.status_fields()["clock_synced"] is False
    time.sleep(0.2)
    clock.at, clock.synced = NOW, True  # NTP answered
    agent.tick()
    held = batches[0]
    assert held.clock_synced is False  # re-stamped from the monotonic clock, not a time source
    assert NOW - timedelta(seconds=1) < held.readings[0].ts < NOW
    assert all(b.clock_synced for b in batches[1:])


def test_a_change_of_clock_state_closes_the_batch() -> None:
    clock = FakeClock(synced=True)
    agent, _, batches = make_agent([CountingSensor()], clock=clock, batch_interval_s=3600)
    agent._sample_due(time.monotonic() + 1e6)
    clock.synced = False
    agent._sample_due(time.monotonic() + 2e6)
    agent.flush()
    assert [b.clock_synced for b in batches] == [True, False]


def test_remote_config_is_applied_and_reported() -> None:
    pm, climate = CountingSensor("pm"), CountingSensor("climate")
    agent, publisher, _ = make_agent([pm, climate], sample_interval_s=10)
    publisher.configs.append(
        json.dumps(
            {
                "version": 3,
                "batch_interval_s": 5,
                "sensors": {"climate": {"enabled": False}, "pm": {"interval_s": 1}},
            }
        ).encode()
    )
    agent.tick()
    assert agent.config_version == "3"
    assert agent.sensors["pm"].interval_s == 1.0
    assert not agent.sensors["climate"].enabled
    assert publisher.statuses[-1]["config_version"] == "3"


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b'{"sensors": {}}',
        b'{"version": 4, "sensors": {"co": {}}}',
        b'{"version": 4, "sensors": {"pm": {"interval_s": -1}}}',
        b'{"version": 4, "colour": 1}',
    ],
)
def test_an_invalid_remote_config_is_refused_and_the_old_one_kept(payload: bytes) -> None:
    agent, publisher, _ = make_agent([CountingSensor("pm")], sample_interval_s=10)
    publisher.configs.append(b'{"version": 1, "sensors": {"pm": {"interval_s": 2}}}')
    agent.tick()
    publisher.configs.append(payload)
    agent.tick()
    assert agent.config_version == "1"
    assert agent.sensors["pm"].interval_s == 2.0
    assert agent.config_error
    assert publisher.statuses[-1]["config_error"] == agent.config_error


def test_status_goes_out_on_reconnect_and_on_its_interval() -> None:
    agent, publisher, _ = make_agent([CountingSensor()], status_interval_s=3600)
    agent.tick()
    agent.tick()
    assert len(publisher.statuses) == 1
    publisher._reconnected = True
    agent.tick()
    assert len(publisher.statuses) == 2


def test_an_offline_agent_sleeps_until_its_next_sample() -> None:
    # The status is overdue while offline; waiting for it must not turn into a busy loop that
    # burns a Pi's CPU for days (and starves a fleet's network thread).
    agent, publisher, _ = make_agent(
        [CountingSensor()], sample_interval_s=10, batch_interval_s=30, status_interval_s=60
    )
    publisher.connected = False
    agent.tick()
    agent.sensors["s"].next_due = time.monotonic() + 5
    assert 4 < agent.tick() <= 5
    publisher.connected = True
    assert 4 < agent.tick() <= 5  # the status went out on connecting; the next sample is next
    assert len(publisher.statuses) == 1


def test_the_c_library_is_looked_up_once_for_the_kernels_clock_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Asked for every reading, by a thousand devices in a fleet: find_library runs ldconfig.
    lookups: list[str] = []
    real = ctypes.util.find_library

    def counted(name: str) -> str | None:
        lookups.append(name)
        return real(name)

    monkeypatch.setattr(ctypes.util, "find_library", counted)
    edge_clock._libc.cache_clear()
    states = {edge_clock.kernel_synchronised() for _ in range(50)}
    assert len(states) == 1
    assert lookups == ["c"]


def test_the_spool_keeps_sequence_numbers_across_restarts(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    agent, publisher, _ = make_agent([CountingSensor()], spool)
    for _ in range(3):
        agent.tick()
    spool.close()
    reopened = Spool(tmp_path / "spool.db")
    agent, publisher, batches = make_agent([CountingSensor()], reopened)
    agent.tick()
    assert batches[0].seq == 3
    # Everything not acknowledged before the restart goes out again, in order.
    assert [b.seq for b in publisher.batches()] == [0, 1, 2, 3]
    reopened.close()


def test_memory_outbox_rejects_a_zero_bound() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        MemoryOutbox(0)
