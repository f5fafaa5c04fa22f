"""Remote configuration from the Fleet page: validated as the agent will, published retained
on the real broker, audited; refused documents and roles send nothing."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.topics import device_topic
from tests.dashboard.serving import Served, serving
from tests.dashboard.test_security import _admin_call, audit
from tests.ingest.helpers import register
from tests.services.handles import BrokerAddress, Database


@pytest.fixture
def fleet(
    timescale_database: Database, broker: BrokerAddress, unique_site: str
) -> Iterator[Served]:
    register(timescale_database.dsn, [("aq-0101", unique_site)])
    with psycopg.connect(timescale_database.dsn) as conn:
        conn.execute(
            "INSERT INTO streams (device_id, sensor, metric, unit)"
            " VALUES ('aq-0101', 'pm', 'pm2_5', 'ug/m3')"
        )
    with serving(timescale_database.dsn, broker_host=broker.host,
                 broker_port=broker.port) as dashboard:  # fmt: skip
        yield dashboard


def _received(broker: BrokerAddress, topic: str, seconds: float = 5.0) -> list[tuple[bytes, bool]]:
    """What a fresh subscriber gets on ``topic`` within ``seconds`` (retained included)."""
    got: list[tuple[bytes, bool]] = []
    arrived = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2)

    def on_message(_client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        got.append((bytes(message.payload), bool(message.retain)))
        arrived.set()

    client.on_message = on_message
    client.connect(broker.host, broker.port)
    client.subscribe(topic, qos=1)
    client.loop_start()
    try:
        arrived.wait(seconds)
    finally:
        client.disconnect()
        client.loop_stop()
    return got


def _send(served: Served, role: str, device: str, document: str) -> str:
    response = _admin_call(
        served.client(role), "fleet-config-result.children", "fleet-config-send",
        {"fleet-config-device": device, "fleet-config-document": document},
    )  # fmt: skip
    assert response.status_code == 200, response.text[:300]
    return str(response.json()["response"]["fleet-config-result"]["children"])


def test_a_technician_sends_a_configuration_that_arrives_retained(
    fleet: Served, broker: BrokerAddress, unique_site: str
) -> None:
    document = json.dumps({"version": 7, "sensors": {"pm": {"interval_s": 30}}})
    assert "Configuration 7 sent to aq-0101" in _send(fleet, "technician", "aq-0101", document)
    received = _received(broker, device_topic(unique_site, "aq-0101", "config"))
    assert received == [(document.encode(), True)]
    assert ("technician", "config-change") in audit(fleet.dsn)


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ('{"version": 8, "sensors": {"co2": {}}}', "not on this device"),
        ('{"version": 8, "batch_interval_s": -1}', "batch_interval_s"),
        ("not json", "remote config"),
    ],
)
def test_a_document_the_agent_would_refuse_is_not_sent(
    fleet: Served, broker: BrokerAddress, unique_site: str, document: str, reason: str
) -> None:
    answer = _send(fleet, "operator", "aq-0101", document)
    assert answer.startswith("Not sent")
    assert reason in answer
    assert _received(broker, device_topic(unique_site, "aq-0101", "config"), 1.0) == []
    assert not any(action == "config-change" for _, action in audit(fleet.dsn))


def test_planners_cannot_send_configurations(fleet: Served) -> None:
    response = _admin_call(
        fleet.client("planner"), "fleet-config-result.children", "fleet-config-send",
        {"fleet-config-device": "aq-0101", "fleet-config-document": '{"version": 9}'},
    )  # fmt: skip
    assert response.status_code == 403
