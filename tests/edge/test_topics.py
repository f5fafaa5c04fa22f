"""The topic scheme: building, parsing and MQTT wildcard matching."""

from __future__ import annotations

import pytest

from edge.contract import ContractError
from edge.topics import (
    STATUS_ALL,
    TELEMETRY_ALL,
    DeviceTopic,
    matches,
    parse_topic,
    shared,
    status_topic,
    telemetry_topic,
)


def test_topics_round_trip() -> None:
    topic = telemetry_topic("centre", "aq-0001")
    assert parse_topic(topic) == DeviceTopic("centre", "aq-0001", "telemetry")
    assert str(parse_topic(status_topic("north", "wb-7"))) == "city/v1/north/wb-7/status"


@pytest.mark.parametrize("bad", ["a/b", "+", "#", "", "x" * 65, "spa ce", "-leading"])
def test_ids_that_would_break_the_topic_tree_are_refused(bad: str) -> None:
    with pytest.raises(ContractError):
        telemetry_topic("centre", bad)
    with pytest.raises(ContractError):
        telemetry_topic(bad, "aq-0001")


@pytest.mark.parametrize(
    "topic",
    [
        "city/v2/centre/aq-0001/telemetry",
        "city/v1/centre/aq-0001",
        "city/v1/centre/aq-0001/telemetry/extra",
        "town/v1/centre/aq-0001/telemetry",
        "city/v1/centre/aq-0001/commands",
        "city/v1/centre/+/telemetry",
        "city/v1//aq-0001/telemetry",
    ],
)
def test_foreign_topics_do_not_parse(topic: str) -> None:
    with pytest.raises(ContractError):
        parse_topic(topic)


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        (TELEMETRY_ALL, "city/v1/centre/aq-0001/telemetry", True),
        (TELEMETRY_ALL, "city/v1/centre/aq-0001/status", False),
        (STATUS_ALL, "city/v1/centre/aq-0001/status", True),
        ("city/#", "city", True),
        ("city/#", "city/v1/a/b/c", True),
        ("city/+", "city", False),
        ("city/+/x", "city//x", True),
        ("#", "$SYS/broker", False),
        ("$SYS/#", "$SYS/broker", True),
        ("a/b", "a/b/c", False),
        ("a/b/c", "a/b", False),
        (shared("ingest", TELEMETRY_ALL), "city/v1/s/d/telemetry", True),
    ],
)
def test_matches_follows_mqtt_rules(topic_filter: str, topic: str, expected: bool) -> None:
    assert matches(topic_filter, topic) is expected


def test_shared_subscription_needs_a_valid_group() -> None:
    assert shared("ingest", STATUS_ALL) == "$share/ingest/city/v1/+/+/status"
    with pytest.raises(ContractError):
        shared("in/gest", STATUS_ALL)
