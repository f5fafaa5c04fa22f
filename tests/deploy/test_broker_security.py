"""The shipped broker configuration keeps every account to what it must do, and TLS verifies."""

from __future__ import annotations

import ssl
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from tests.deploy.secured_broker import SecuredBroker, make_ca
from tests.services._process import ServiceUnavailableError

PASSWORDS = {"ingest": "ingest-pw-1", "dashboard": "dash-pw-1", "aq-a": "a-pw", "aq-b": "b-pw"}
WAIT_S = 5.0


@pytest.fixture(scope="module")
def secured() -> Iterator[SecuredBroker]:
    try:
        broker = SecuredBroker()
        for user, password in PASSWORDS.items():
            broker.passwords.set(user, password)
        broker.start()
    except ServiceUnavailableError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield broker
    broker.cleanup()


@dataclass
class Session:
    """A connected MQTT v5 client that records what it receives."""

    client: mqtt.Client
    connected: ReasonCode | None
    received: list[tuple[str, bytes]] = field(default_factory=list)
    got: threading.Event = field(default_factory=threading.Event)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def connect(
    port: int, user: str | None = None, password: str | None = None, *, ca: Path | None = None
) -> Session:
    """Connect and wait (bounded) for the broker's answer."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"t-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5,
    )
    if user is not None:
        client.username_pw_set(user, password)
    if ca is not None:
        client.tls_set(ca_certs=str(ca), cert_reqs=ssl.CERT_REQUIRED)
    answered = threading.Event()
    session = Session(client, None)

    def on_connect(_c: object, _u: object, _f: object, code: ReasonCode, _p: object) -> None:
        session.connected = code
        answered.set()

    def on_message(_c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        session.received.append((message.topic, bytes(message.payload)))
        session.got.set()

    client.on_connect = on_connect
    client.on_message = on_message
    try:
        client.connect("127.0.0.1", port, keepalive=30)
    except (OSError, ssl.SSLError):
        return session  # refused before MQTT: connected stays None
    client.loop_start()
    answered.wait(WAIT_S)
    return session


def accepted(session: Session) -> bool:
    return session.connected is not None and not session.connected.is_failure


def subscribe(session: Session, topic: str) -> None:
    done = threading.Event()
    session.client.on_subscribe = lambda *_args: done.set()
    session.client.subscribe(topic, qos=1)
    assert done.wait(WAIT_S)


def publish(session: Session, topic: str, payload: bytes) -> None:
    info = session.client.publish(topic, payload, qos=1)
    info.wait_for_publish(WAIT_S)


def test_anonymous_clients_are_refused_on_both_listeners(secured: SecuredBroker) -> None:
    plain = connect(secured.port)
    tls = connect(secured.tls_port, ca=secured.ca_file)
    try:
        assert not accepted(plain)
        assert not accepted(tls)
    finally:
        plain.close()
        tls.close()


def test_a_wrong_password_is_refused(secured: SecuredBroker) -> None:
    session = connect(secured.tls_port, "aq-a", "not-the-password", ca=secured.ca_file)
    try:
        assert not accepted(session)
    finally:
        session.close()


def test_a_device_cannot_publish_as_another_device(secured: SecuredBroker) -> None:
    ingest = connect(secured.port, "ingest", PASSWORDS["ingest"])
    device = connect(secured.tls_port, "aq-a", PASSWORDS["aq-a"], ca=secured.ca_file)
    try:
        assert accepted(ingest)
        assert accepted(device)
        subscribe(ingest, "city/v1/+/+/telemetry")
        publish(device, "city/v1/north/aq-b/telemetry", b"forged")
        publish(device, "city/v1/north/aq-a/telemetry", b"own")  # same connection, after
        assert ingest.got.wait(WAIT_S)
        # Delivery keeps order per publisher: had the forgery passed, it would be first.
        assert ingest.received == [("city/v1/north/aq-a/telemetry", b"own")]
    finally:
        ingest.close()
        device.close()


def test_a_device_cannot_read_other_devices_topics(secured: SecuredBroker) -> None:
    nosy = connect(secured.tls_port, "aq-a", PASSWORDS["aq-a"], ca=secured.ca_file)
    owner = connect(secured.tls_port, "aq-b", PASSWORDS["aq-b"], ca=secured.ca_file)
    dashboard = connect(secured.port, "dashboard", PASSWORDS["dashboard"])
    try:
        subscribe(nosy, "city/v1/north/aq-b/config")
        subscribe(nosy, "city/v1/+/+/telemetry")
        subscribe(owner, "city/v1/north/aq-b/config")
        publish(dashboard, "city/v1/north/aq-b/config", b'{"sample_interval_s": 30}')
        publish(owner, "city/v1/north/aq-b/telemetry", b"b's readings")
        assert owner.got.wait(WAIT_S)  # the owner gets its configuration...
        assert not nosy.got.wait(1.0)  # ...and the other device gets nothing at all
    finally:
        for session in (nosy, owner, dashboard):
            session.close()


def test_ingest_cannot_publish_telemetry(secured: SecuredBroker) -> None:
    ingest = connect(secured.port, "ingest", PASSWORDS["ingest"])
    telemetry_reader = connect(secured.port, "ingest", PASSWORDS["ingest"])
    alert_reader = connect(secured.port, "dashboard", PASSWORDS["dashboard"])
    try:
        subscribe(telemetry_reader, "city/v1/+/+/telemetry")
        subscribe(alert_reader, "city/alerts/v1/#")
        publish(ingest, "city/v1/north/aq-a/telemetry", b"forged by a service")
        publish(ingest, "city/alerts/v1/north/aq-a/spike", b"an alert")  # what it may publish
        assert alert_reader.got.wait(WAIT_S)
        assert not telemetry_reader.got.wait(0.5)
    finally:
        for session in (ingest, telemetry_reader, alert_reader):
            session.close()


def test_tls_verifies_the_broker(secured: SecuredBroker, tmp_path: Path) -> None:
    good = connect(secured.tls_port, "aq-a", PASSWORDS["aq-a"], ca=secured.ca_file)
    stranger_ca, _ = make_ca(tmp_path, "stranger")
    impostor = connect(secured.tls_port, "aq-a", PASSWORDS["aq-a"], ca=stranger_ca)
    cleartext = connect(secured.tls_port, "aq-a", PASSWORDS["aq-a"])
    try:
        assert accepted(good)
        assert not accepted(impostor)  # a broker the device's CA did not sign is not trusted
        assert not accepted(cleartext)  # the device listener speaks TLS only
    finally:
        for session in (good, impostor, cleartext):
            session.close()
