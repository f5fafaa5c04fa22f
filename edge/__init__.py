"""The edge agent: samples sensors on a Raspberry Pi-class box and publishes them over MQTT.

Everything under ``edge`` uses only the standard library and paho-mqtt, so ``pip install .[edge]``
is all a device needs. The wire contract (:mod:`edge.contract`) and the topic scheme
(:mod:`edge.topics`) live here too: ingest imports them, edge never imports ingest.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
