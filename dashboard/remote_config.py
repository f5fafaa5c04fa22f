"""Send a device its remote configuration.

It is validated as the agent will validate it, then published retained at QoS 1 on the
device's ``config`` topic under the dashboard's own broker account.

Examples:
    >>> validated(b'{"version": 3, "batch_interval_s": 30}', {"aq"}).version
    '3'
"""

from __future__ import annotations

import ssl
from collections.abc import Collection

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from dashboard.config import DashboardConfig
from dashboard.errors import ControlRoomError
from edge.errors import ConfigError
from edge.remote import RemoteConfig, parse_remote
from edge.topics import device_topic

TIMEOUT_S = 10.0


class BrokerError(ControlRoomError, RuntimeError):
    """The broker could not be reached or did not confirm the message."""


def validated(document: bytes, sensors: Collection[str]) -> RemoteConfig:
    """The document as the device's agent will read it; refused here for the same reasons.

    Raises:
        ConfigError: The agent would refuse it (the message says why).
    """
    return parse_remote(document, set(sensors))


def send(config: DashboardConfig, site: str, device: str, document: bytes) -> None:
    """Publish ``document`` retained on the device's config topic and wait for the PUBACK.

    Raises:
        BrokerError: No broker configured, or it did not take the message in time.
    """
    if not config.broker_host:
        raise BrokerError("no broker configured for the dashboard (broker_host)")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", clean_session=True)
    if config.broker_username:
        client.username_pw_set(config.broker_username, config.broker_password or None)
    if config.broker_ca_file:
        client.tls_set(ca_certs=config.broker_ca_file, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    try:
        client.connect(config.broker_host, config.broker_port, keepalive=30)
        client.loop_start()
        info = client.publish(device_topic(site, device, "config"), document, qos=1, retain=True)
        info.wait_for_publish(TIMEOUT_S)
        if not info.is_published():
            raise BrokerError("the broker did not confirm the configuration in time")
    except (OSError, ValueError, RuntimeError) as exc:
        if isinstance(exc, BrokerError):
            raise
        raise BrokerError(f"could not reach the broker: {type(exc).__name__}") from exc
    finally:
        client.disconnect()
        client.loop_stop()


__all__ = ["BrokerError", "ConfigError", "send", "validated"]
