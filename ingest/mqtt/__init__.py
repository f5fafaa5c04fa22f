"""A lean MQTT 5 / 3.1.1 client for ingest's one job: receive QoS 1 fast, acknowledge later.

General-purpose clients spend 80-260 µs of Python per received message here (packet objects,
MQTT 5 property objects, callbacks, futures); ingest needs a few. This package parses PUBLISH
packets straight out of the socket buffer, hands them over in bulk, and writes PUBACKs in bulk
after the database commit. It implements only what ingest uses: CONNECT (persistent session,
Receive Maximum, Maximum Packet Size), SUBSCRIBE, receiving PUBLISH at QoS 0/1, publishing at
QoS 1 (alerts), PUBACK, keepalive, DISCONNECT; and refuses, with the specification's reason
code, anything else a broker sends (docs/mqtt-conformance.md lists each case and its clause).
"""

from ingest.mqtt.client import MqttClient
from ingest.mqtt.codec import Message
from ingest.mqtt.errors import MqttError, MqttProtocolError

__all__ = ["Message", "MqttClient", "MqttError", "MqttProtocolError"]
