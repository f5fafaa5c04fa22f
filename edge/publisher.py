"""The device's MQTT session: last will, retained status, QoS 1 publishing, remote config.

The session runs on a :class:`~edge.netloop.NetworkLoop` (shared by many sessions in the fleet
simulator), which reconnects it with jittered backoff, to the next of the city's brokers when it
has several. paho resends QoS 1 messages still waiting for their PUBACK after a reconnection,
to whichever broker that is. Every publish happens on the caller's thread, and
acknowledgements come back through :meth:`Publisher.drain_acks` on that same thread, so the
agent never races the network thread.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge.backoff import Backoff
from edge.contract import Status, StatusValue, encode_status
from edge.netloop import LoopSession, NetworkLoop
from edge.topics import device_topic, status_topic, telemetry_topic

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerAccount:
    """How a device signs in to the city's brokers, as configured and as connected.

    Attributes:
        username: Per-device user name; the broker's ACL confines it to its own topics.
        password: Its password; never logged.
        ca_file: CA bundle to verify the broker; setting it turns TLS on.
        cert_file: Client certificate, for brokers that authenticate devices by certificate.
        key_file: Key of the client certificate.
        keepalive_s: MQTT keepalive; the broker declares the device offline after 1.5 times this.
        reconnect_max_s: Longest reconnection delay.
    """

    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    keepalive_s: int = 30
    reconnect_max_s: float = 60.0


@dataclass(frozen=True, slots=True)
class BrokerSettings(BrokerAccount):
    """How to reach the broker: its address and the account (:class:`BrokerAccount`).

    Attributes:
        host: Broker host name.
        port: Broker port (1883 plain, 8883 TLS by convention).
        reconnect_min_s: First reconnection delay cap; it doubles up to ``reconnect_max_s``, and
            each actual delay is drawn at random below the cap.
        fallbacks: Further brokers of the city, ``(host, port)`` each, with the same account
            and TLS settings. A session that cannot reach its broker, or loses it, tries the next
            one of the list (round the list), and stays where it got through.
    """

    host: str = "localhost"
    port: int = 1883
    reconnect_min_s: float = 1.0
    fallbacks: tuple[tuple[str, int], ...] = ()

    @property
    def addresses(self) -> tuple[tuple[str, int], ...]:
        """Every broker to try, in order: this one first."""
        return ((self.host, self.port), *self.fallbacks)

    def __repr__(self) -> str:  # keeps the password out of logs and tracebacks
        secret = "***" if self.password else None
        also = f", fallbacks={list(self.fallbacks)}" if self.fallbacks else ""
        return (
            f"BrokerSettings(host={self.host!r}, port={self.port}, "
            f"username={self.username!r}, password={secret}, tls={self.ca_file is not None}{also})"
        )


class Publisher:
    """One device's MQTT session.

    Args:
        site: The device's site (a topic level).
        device: The device id (a topic level, and the MQTT client id).
        broker: Connection settings.
        loop: The network loop to run on; a private one by default.
        wake: Set whenever an acknowledgement, a connection or a config message arrives, so the
            caller can sleep until there is work.
        max_inflight: QoS 1 messages on the wire at once; paho holds the rest back until
            PUBACKs free room.
    """

    def __init__(
        self,
        *,
        site: str,
        device: str,
        broker: BrokerSettings,
        loop: NetworkLoop | None = None,
        wake: threading.Event | None = None,
        max_inflight: int = 20,
    ) -> None:
        self.device = device
        self._telemetry = telemetry_topic(site, device)
        self._status = status_topic(site, device)
        self._config = device_topic(site, device, "config")
        self._broker = broker
        self._own_loop = loop is None
        self._loop = loop or NetworkLoop(name=f"mqtt-{device}")
        self._wake = wake or threading.Event()
        self._connected = threading.Event()
        self._acks: deque[int] = deque()  # appended by the loop thread, drained by the caller
        self._configs: deque[bytes] = deque()
        self._connects = 0
        self._connects_seen = 0
        self.last_refusal: str | None = None
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=device,
            protocol=MQTTProtocolVersion.MQTTv311,
            clean_session=True,
        )
        if broker.username is not None:
            client.username_pw_set(broker.username, broker.password)
        if broker.ca_file is not None:
            context = ssl.create_default_context(cafile=broker.ca_file)
            if broker.cert_file is not None:
                context.load_cert_chain(broker.cert_file, broker.key_file)
            client.tls_set_context(context)
        # The broker publishes this for us if we vanish without saying goodbye.
        client.will_set(self._status, encode_status(Status(device, "offline")), qos=1, retain=True)
        client.max_inflight_messages_set(max_inflight)
        client.max_queued_messages_set(0)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_publish = self._handle_publish
        client.on_message = self._handle_message
        client.connect_async(broker.host, broker.port, broker.keepalive_s)
        self._client = client
        self._session = LoopSession(
            client,
            device,
            Backoff(initial=broker.reconnect_min_s, maximum=broker.reconnect_max_s),
            addresses=broker.addresses,
            keepalive_s=broker.keepalive_s,
        )

    @property
    def connected(self) -> bool:
        """Whether the session is up right now."""
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        """Block until connected or ``timeout`` seconds pass; returns whether connected."""
        return self._connected.wait(timeout)

    def start(self) -> None:
        """Connect in the background; the loop keeps retrying until :meth:`stop`."""
        log.info("%s connecting to %r", self.device, self._broker)
        self._loop.add(self._session)
        self._loop.start()

    def stop(self, fields: dict[str, StatusValue] | None = None, timeout: float = 5.0) -> None:
        """Say goodbye: publish a retained ``offline`` status, then disconnect."""
        self._session.wanted = False
        if self.connected:
            info = self._client.publish(
                self._status, self._status_payload("offline", fields or {}), qos=1, retain=True
            )
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                log.warning("%s could not publish its offline status", self.device)
        done = threading.Event()

        def disconnect() -> None:
            self._client.disconnect()
            self._loop.remove(self._session)
            done.set()

        self._loop.call(disconnect)
        done.wait(timeout)
        self._connected.clear()
        if self._own_loop:
            self._loop.stop()

    def go_offline(self) -> None:
        """Drop the connection abruptly and stay away until :meth:`come_back`.

        As a device losing its link does: no DISCONNECT, so the broker publishes the last will.
        """
        self._session.wanted = False

        def drop() -> None:
            sock = self._client.socket()
            if sock is not None:
                # No DISCONNECT: the broker sees the link die; paho sees end-of-file and reports
                # the connection lost.
                with contextlib.suppress(OSError, AttributeError):
                    sock.shutdown(socket.SHUT_RDWR)  # type: ignore[attr-defined]  # a real socket

        self._loop.call(drop)

    def come_back(self) -> None:
        """Reconnect after :meth:`go_offline`."""
        self._session.wanted = True
        self._session.next_attempt = 0.0

    def take_reconnect(self) -> bool:
        """Whether the session (re)connected since the last call."""
        connects = self._connects
        fresh = connects != self._connects_seen
        self._connects_seen = connects
        return fresh

    def drain_acks(self) -> list[int]:
        """Message ids the broker acknowledged since the last call, in arrival order."""
        acks = []
        while self._acks:
            acks.append(self._acks.popleft())
        return acks

    def drain_configs(self) -> list[bytes]:
        """Remote configuration payloads received since the last call, oldest first."""
        configs = []
        while self._configs:
            configs.append(self._configs.popleft())
        return configs

    def publish_telemetry(self, payload: bytes) -> int | None:
        """Queue one telemetry batch at QoS 1.

        Returns:
            The message id that :meth:`drain_acks` will return once the broker has the batch,
            or ``None`` if paho refused to queue it (the caller keeps the batch and retries).
            While disconnected, paho queues the message and sends it after reconnecting.
        """
        info = self._client.publish(self._telemetry, payload, qos=1)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            log.warning("%s could not queue a batch: %s", self.device, mqtt.error_string(info.rc))
            return None
        return info.mid

    def publish_status(self, fields: dict[str, StatusValue]) -> int:
        """Publish the retained ``online`` status with the given health fields."""
        return self._client.publish(
            self._status, self._status_payload("online", fields), qos=1, retain=True
        ).mid

    def _status_payload(self, state: str, fields: dict[str, StatusValue]) -> bytes:
        status = Status(
            self.device, "online" if state == "online" else "offline", datetime.now(UTC), fields
        )
        return encode_status(status)

    # paho callbacks, on the loop thread ------------------------------------------------------

    def _handle_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self.last_refusal = str(reason)
            log.warning("%s connection refused: %s", self.device, reason)
            return
        log.info("%s connected to %s:%d", self.device, client.host, client.port)
        self.last_refusal = None
        self._session.up = True
        self._session.backoff.reset()
        client.subscribe(self._config, qos=1)
        self._connects += 1
        self._connected.set()
        self._wake.set()

    def _handle_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if self._session.up:
            log.info("%s disconnected: %s", self.device, reason)
        self._session.up = False
        self._connected.clear()

    def _handle_publish(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._acks.append(mid)
        self._wake.set()

    def _handle_message(
        self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage
    ) -> None:
        if message.topic == self._config:
            self._configs.append(bytes(message.payload))
            self._wake.set()
