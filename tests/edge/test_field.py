"""The agent as technicians deploy it, on a real Mosquitto: outages, kills, bad spools, tools."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.agent import AgentSettings, EdgeAgent
from edge.contract import Batch, decode_batch, decode_status
from edge.doctor import diagnose
from edge.publisher import BrokerSettings, Publisher
from edge.sensors.simulated import SimulatedAirQuality
from edge.spool import Spool
from tests.services.handles import BrokerAddress
from tests.services.mosquitto import Mosquitto

pytestmark = pytest.mark.slow


class Subscriber:
    """A persistent-session QoS 1 subscriber recording every telemetry and status message."""

    def __init__(self, broker: BrokerAddress, site: str) -> None:
        self.telemetry: list[bytes] = []
        self.statuses: list[bytes] = []
        self._lock = threading.Lock()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"sub-{site}", clean_session=False
        )
        self._client.on_message = self._on_message
        self._client.on_connect = lambda c, *_: c.subscribe(f"city/v1/{site}/#", qos=1)
        self._client.reconnect_delay_set(1, 2)
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            target = self.telemetry if message.topic.endswith("/telemetry") else self.statuses
            target.append(bytes(message.payload))

    def batches(self) -> list[Batch]:
        with self._lock:
            return [decode_batch(p).batch for p in self.telemetry]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def wait_until(check: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return bool(check())  # type: ignore[operator]


def air_agent(
    site: str, device: str, broker: BrokerSettings, spool: Spool, sampled: list[Batch]
) -> EdgeAgent:
    """An agent sampling a simulated air station quickly, recording each batch it makes."""
    return EdgeAgent(
        AgentSettings(site=site, device=device, sample_interval_s=0.05, batch_interval_s=0.2),
        [SimulatedAirQuality("aq", seed=int(device[-1]))],
        Publisher(site=site, device=device, broker=broker),
        spool,
        on_batch=sampled.append,
    )


@contextmanager
def running(agent: EdgeAgent, spool: Spool) -> Iterator[EdgeAgent]:
    """Run ``agent`` on a thread; on leaving, stop it (bounded) and close its spool."""
    stop = threading.Event()
    runner = threading.Thread(target=agent.run, args=(stop,))
    runner.start()
    try:
        yield agent
    finally:
        stop.set()
        runner.join(30)
        spool.close()


@pytest.fixture
def own_broker() -> Iterator[Mosquitto]:
    broker = Mosquitto()
    broker.start()
    yield broker
    broker.cleanup()


def test_a_broker_outage_loses_nothing_and_keeps_the_order(
    own_broker: Mosquitto, tmp_path: Path, unique_site: str
) -> None:
    address = BrokerAddress(own_broker.host, own_broker.port)
    subscriber = Subscriber(address, unique_site)
    sampled: list[Batch] = []
    spool = Spool(tmp_path / "spool.db")
    agent = air_agent(
        unique_site,
        "aq-0001",
        BrokerSettings(own_broker.host, own_broker.port, reconnect_min_s=0.2, reconnect_max_s=1),
        spool,
        sampled,
    )
    with running(agent, spool):
        assert wait_until(lambda: len(subscriber.batches()) >= 3, 10)
        own_broker.stop()
        assert wait_until(lambda: agent.backlog > 3, 20)  # it samples and spools meanwhile
        own_broker.start()
        assert wait_until(lambda: agent.backlog == 0 and len(sampled) > 15, 30)
    assert wait_until(lambda: {b.seq for b in subscriber.batches()} >= {b.seq for b in sampled}, 10)
    subscriber.close()
    received = subscriber.batches()
    first_arrivals = list(dict.fromkeys(b.seq for b in received))
    assert first_arrivals == sorted(first_arrivals)  # in order
    assert {(b.seq, b.readings) for b in received} == {(b.seq, b.readings) for b in sampled}


def test_a_device_moves_to_the_next_broker_when_its_broker_dies(
    own_broker: Mosquitto, tmp_path: Path, unique_site: str
) -> None:
    """Broker A is killed (no goodbye) while the device publishes: it moves to broker B, and
    between the two every batch sampled arrives, each broker's in order."""
    second = Mosquitto()
    second.start()
    first_seen = Subscriber(BrokerAddress(own_broker.host, own_broker.port), unique_site)
    second_seen = Subscriber(BrokerAddress(second.host, second.port), unique_site)
    sampled: list[Batch] = []
    spool = Spool(tmp_path / "spool.db")
    agent = air_agent(
        unique_site,
        "aq-0002",
        BrokerSettings(
            own_broker.host,
            own_broker.port,
            keepalive_s=2,
            reconnect_min_s=0.2,
            reconnect_max_s=1,
            fallbacks=((second.host, second.port),),
        ),
        spool,
        sampled,
    )
    try:
        with running(agent, spool):
            assert wait_until(lambda: len(first_seen.batches()) >= 3, 10)
            own_broker.stop(kill=True)
            assert wait_until(lambda: len(second_seen.batches()) >= 3, 20)  # moved on
            assert wait_until(lambda: agent.backlog == 0 and len(sampled) > 20, 30)
    finally:
        second_seen.close()
        second.cleanup()
    first_seen.close()
    received = first_seen.batches() + second_seen.batches()
    assert {(b.seq, b.readings) for b in received} == {(b.seq, b.readings) for b in sampled}
    for seen in (first_seen, second_seen):
        arrivals = list(dict.fromkeys(b.seq for b in seen.batches()))
        assert arrivals == sorted(arrivals)
    # Acknowledged by A means stored by A: B only got what A had not acknowledged, and on.
    assert min(b.seq for b in second_seen.batches()) > min(b.seq for b in first_seen.batches())


def write_config(path: Path, broker: BrokerAddress, site: str, spool: Path, password: Path) -> Path:
    password.write_text("unused\n")
    path.write_text(
        f'[device]\nid = "aq-0007"\nsite = "{site}"\n\n'
        f'[broker]\nurl = "mqtt://{broker.host}:{broker.port}"\npassword_file = "{password}"\n'
        "reconnect_max_s = 1\n\n"
        f'[spool]\npath = "{spool}"\n\n'
        "[agent]\nsample_interval_s = 0.05\nbatch_interval_s = 0.2\nstatus_interval_s = 1\n\n"
        '[[sensors]]\nname = "aq"\ndriver = "simulated-air"\nseed = 5\n'
    )
    return path


def start_agent(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "edge", "run", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def test_sigkill_mid_publishing_loses_no_spooled_batch(
    broker: BrokerAddress, tmp_path: Path, unique_site: str
) -> None:
    subscriber = Subscriber(broker, unique_site)
    config = write_config(
        tmp_path / "edge.toml", broker, unique_site, tmp_path / "spool.db", tmp_path / "pw"
    )
    agent = start_agent(config, tmp_path / "agent.log")
    try:
        assert wait_until(lambda: len(subscriber.telemetry) >= 5, 20), (
            tmp_path / "agent.log"
        ).read_text()
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
        agent = start_agent(config, tmp_path / "agent.log")
        time.sleep(1.5)
    finally:
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(30) == 0
    with _Closing(Spool(tmp_path / "spool.db")) as spool:
        last_seq = spool.next_seq() - 1
        left = spool.depth()
    assert left == 0
    assert wait_until(lambda: {b.seq for b in subscriber.batches()} >= set(range(last_seq + 1)), 10)
    subscriber.close()
    by_seq: dict[int, set[bytes]] = {}
    for payload in subscriber.telemetry:
        by_seq.setdefault(decode_batch(payload).batch.seq, set()).add(payload)
    assert sorted(by_seq) == list(range(last_seq + 1))  # every spooled batch arrived
    assert all(len(payloads) == 1 for payloads in by_seq.values())  # redeliveries are identical


class _Closing:
    def __init__(self, spool: Spool) -> None:
        self.spool = spool

    def __enter__(self) -> Spool:
        return self.spool

    def __exit__(self, *exc: object) -> None:
        self.spool.close()


def test_a_corrupt_spool_is_set_aside_and_the_agent_runs_on(
    broker: BrokerAddress, tmp_path: Path, unique_site: str
) -> None:
    spool = tmp_path / "spool.db"
    spool.write_bytes(b"\x00garbage from a torn SD card write\xff" * 200)
    subscriber = Subscriber(broker, unique_site)
    config = write_config(tmp_path / "edge.toml", broker, unique_site, spool, tmp_path / "pw")
    agent = start_agent(config, tmp_path / "agent.log")
    try:
        assert wait_until(lambda: len(subscriber.telemetry) >= 3, 20)
        assert wait_until(lambda: any(b"spool_set_aside" in s for s in subscriber.statuses), 10)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(30)
        subscriber.close()
    aside = list(tmp_path.glob("spool.db.corrupt-*"))
    assert len(aside) == 1
    status = decode_status(next(s for s in subscriber.statuses if b"spool_set_aside" in s))
    assert status.fields["spool_set_aside"] == aside[0].name


def test_a_full_spool_drops_the_oldest_and_says_so(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", max_bytes=3_000)
    nowhere = BrokerSettings("127.0.0.1", 1, reconnect_min_s=60, reconnect_max_s=60)  # offline
    agent = EdgeAgent(
        AgentSettings(site="centre", device="aq-0001", sample_interval_s=0.0, batch_interval_s=0.0),
        [SimulatedAirQuality("aq", seed=3)],
        Publisher(site="centre", device="aq-0001", broker=nowhere),
        spool,
    )
    for _ in range(200):
        agent.tick()
    fields = agent.status_fields()
    assert isinstance(fields["dropped"], int)
    assert fields["dropped"] > 0
    assert spool.stored_bytes() <= 3_000
    seqs = [e.seq for e in spool.after(0, 1000)]
    assert seqs == list(range(seqs[0], 200)) or seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    spool.close()


def test_doctor_passes_a_healthy_device_and_names_what_fails(
    broker: BrokerAddress, tmp_path: Path, unique_site: str
) -> None:
    config = write_config(
        tmp_path / "edge.toml", broker, unique_site, tmp_path / "spool.db", tmp_path / "pw"
    )
    checks = {c.what: c for c in diagnose(str(config))}
    for what in ("config", "disk", "spool", "sensor aq", "broker", "tls", "login"):
        assert checks[what].ok, checks[what]
    assert "pm2_5=" in checks["sensor aq"].detail

    unreachable = BrokerAddress("127.0.0.1", 1)
    config = write_config(
        tmp_path / "edge.toml", unreachable, unique_site, tmp_path / "spool.db", tmp_path / "pw"
    )
    checks = {c.what: c for c in diagnose(str(config), skip_sensors=True)}
    assert not checks["broker"].ok
    assert "unreachable" in checks["broker"].detail

    (tmp_path / "edge.toml").write_text("[device]\nid = 'x'\n")
    (only,) = diagnose(str(tmp_path / "edge.toml"))
    assert (only.ok, only.what) == (False, "config")
    assert "[broker] is missing" in only.detail


def test_provision_writes_a_config_that_runs(tmp_path: Path) -> None:
    out = tmp_path / "etc"
    secret = tmp_path / "secret"
    secret.write_text("p4ss\n")
    command = [
        sys.executable,
        "-m",
        "edge",
        "provision",
        "--device",
        "aq-0042",
        "--site",
        "centre",
        "--broker",
        "mqtt://127.0.0.1:1883",
        "--password-file",
        str(secret),
        "--sensor",
        "pm:sds011:port=/dev/ttyUSB0,warmup_s=20",
        "--sensor",
        "bin:jsnsr04t:port=/dev/ttyAMA0,empty_mm=1100,full_mm=250",
        "--spool",
        str(tmp_path / "spool.db"),
        "--output-dir",
        str(out),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert (out / "password").stat().st_mode & 0o777 == 0o600
    assert (out / "password").read_text() == "p4ss\n"
    text = (out / "edge.toml").read_text()
    assert "p4ss" not in text
    assert 'port = "/dev/ttyUSB0"' in text
    assert "warmup_s = 20.0" in text
    again = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert again.returncode == 2
    assert "exists; use --force" in again.stderr
    bad = subprocess.run(
        [*command[:-2], "--output-dir", str(tmp_path / "other"), "--sensor", "x:sds011:baud=fast"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert bad.returncode == 2
    assert "baud must be an integer" in bad.stderr
    json.dumps(text)  # plain text, nothing binary
