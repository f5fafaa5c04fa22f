"""The topic scheme: the only place topic strings are built or taken apart.

``city/v1/{site}/{device}/{channel}``. The device id is a topic level of its own, so the broker's
ACL can confine each device to its own topics with a username pattern (``%u``); the schema version
is a level too, so v2 devices can share a broker with v1 devices.

Examples:
    >>> telemetry_topic("centre", "aq-0001")
    'city/v1/centre/aq-0001/telemetry'
    >>> parse_topic("city/v1/centre/aq-0001/status")
    DeviceTopic(site='centre', device='aq-0001', channel='status')
    >>> matches(TELEMETRY_ALL, "city/v1/centre/aq-0001/telemetry")
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from edge.contract import ContractError, Reason, is_valid_id

ROOT: Final = "city"
VERSION_LEVEL: Final = "v1"
Channel = Literal["telemetry", "status", "config"]
CHANNELS: Final[tuple[Channel, ...]] = ("telemetry", "status", "config")

TELEMETRY_ALL: Final = f"{ROOT}/{VERSION_LEVEL}/+/+/telemetry"
STATUS_ALL: Final = f"{ROOT}/{VERSION_LEVEL}/+/+/status"


@dataclass(frozen=True, slots=True)
class DeviceTopic:
    """The parts of a device topic."""

    site: str
    device: str
    channel: Channel

    def __str__(self) -> str:
        return f"{ROOT}/{VERSION_LEVEL}/{self.site}/{self.device}/{self.channel}"


def device_topic(site: str, device: str, channel: Channel) -> str:
    """Build a device topic, refusing ids that would break the topic tree."""
    for name, value in (("site", site), ("device", device)):
        if not is_valid_id(value):
            raise ContractError(Reason.INVALID_ID, f"{name} {value!r} cannot be a topic level")
    if channel not in CHANNELS:
        raise ContractError(Reason.WRONG_TYPE, f"channel {channel!r} is not one of {CHANNELS}")
    return str(DeviceTopic(site, device, channel))


def telemetry_topic(site: str, device: str) -> str:
    """Where a device publishes its telemetry batches."""
    return device_topic(site, device, "telemetry")


def status_topic(site: str, device: str) -> str:
    """Where a device keeps its retained status (and its last will)."""
    return device_topic(site, device, "status")


def parse_topic(topic: str) -> DeviceTopic:
    """Split a device topic into its parts.

    Raises:
        ContractError: ``topic`` is not a v1 device topic.
    """
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] != ROOT or parts[1] != VERSION_LEVEL:
        raise ContractError(Reason.WRONG_TYPE, f"topic {topic[:120]!r} is not a v1 device topic")
    _, _, site, device, channel = parts
    if not is_valid_id(site) or not is_valid_id(device):
        raise ContractError(Reason.INVALID_ID, f"topic {topic[:120]!r} has an invalid id level")
    for known in CHANNELS:
        if channel == known:
            return DeviceTopic(site, device, known)
    raise ContractError(Reason.WRONG_TYPE, f"topic {topic[:120]!r} has an unknown channel")


def shared(group: str, topic_filter: str) -> str:
    """An MQTT 5 shared subscription: the broker spreads messages over the group's members.

    Examples:
        >>> shared("ingest", TELEMETRY_ALL)
        '$share/ingest/city/v1/+/+/telemetry'
    """
    if not is_valid_id(group):
        raise ContractError(Reason.INVALID_ID, f"share group {group!r} is not a valid id")
    return f"$share/{group}/{topic_filter}"


def matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches ``topic_filter`` by MQTT's wildcard rules.

    ``+`` matches exactly one level, a trailing ``#`` matches the parent and everything below it,
    and filters starting with a wildcard never match topics starting with ``$``.

    Examples:
        >>> matches("city/#", "city")
        True
        >>> matches("+/v1/#", "$SYS/v1/x")
        False
    """
    if topic_filter.startswith("$share/"):
        topic_filter = topic_filter.split("/", 2)[2]
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    want = topic_filter.split("/")
    have = topic.split("/")
    for index, level in enumerate(want):
        if level == "#":
            return index == len(want) - 1
        if index >= len(have):
            return False
        if level not in ("+", have[index]):
            return False
    return len(want) == len(have)
