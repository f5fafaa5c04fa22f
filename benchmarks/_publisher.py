"""Load generator for the ingest benchmark: many devices' telemetry over a few MQTT connections.

Runs as its own process so its CPU is accounted apart, and speaks MQTT through ingest's lean
codec (pre-encoded PUBLISH packets written in bulk) so that the load generator, not ingest, is
the cheap part. Each message carries ten readings (ten metrics at one timestamp, the publish
time in ms, strictly increasing per device), so the benchmark can measure publish-to-commit
latency from the database's commit timestamps. QoS 1 with a bounded in-flight window per
connection. Prints one JSON line: messages published and acknowledged by the broker.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ingest.mqtt.codec import (
    CONNACK,
    PUBACK,
    Control,
    PacketReader,
    encode_connect,
    encode_publish,
)

METRICS = [
    ("vehicle_count", "count", 31),
    ("speed_mean", "km/h", 42.5),
    ("occupancy", "%", 18.0),
    ("pm2_5", "ug/m3", 12.5),
    ("pm10", "ug/m3", 19.8),
    ("no2", "ug/m3", 38.0),
    ("o3", "ug/m3", 41.0),
    ("co2", "ppm", 415.0),
    ("temperature", "degC", 6.25),
    ("humidity", "%", 84.0),
]


def iso_ms(ms: int) -> bytes:
    seconds, milli = divmod(ms, 1000)
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{milli:03d}Z").encode()


def template(device: str) -> list[bytes]:
    """The payload split around its timestamps: join with the timestamp between the parts."""
    parts = [f'{{"v":1,"device":"{device}","seq":SEQ,"sent_at":"']
    body = '","readings":['
    for index, (metric, unit, value) in enumerate(METRICS):
        body += "," if index else ""
        body += f'{{"sensor":"s","metric":"{metric}","value":{value},"unit":"{unit}","ts":"'
        parts.append(body)
        body = '"}'
    parts.append(body + "]}")
    return [p.encode() for p in parts]


class Connection(asyncio.Protocol):
    """One MQTT 3.1.1 connection publishing for a share of the devices."""

    def __init__(self, devices: list[str], window: int) -> None:
        self.devices = devices
        self.window = window
        self.reader = PacketReader(protocol=4)
        self.transport: asyncio.Transport | None = None
        self.connected = asyncio.get_event_loop().create_future()
        self.room = asyncio.Event()
        self.published = 0
        self.acked = 0
        self.templates = {d: template(d) for d in devices}
        self.topics = {d: f"city/v1/bench/{d}/telemetry" for d in devices}
        self.last_ms = dict.fromkeys(devices, 0)
        self.seq = dict.fromkeys(devices, 0)
        self.index = 0
        self.packet_id = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        for packet in self.reader.feed(data):
            if isinstance(packet, Control) and packet.kind == PUBACK:
                self.acked += 1
            elif isinstance(packet, Control) and packet.kind == CONNACK:
                self.connected.set_result(None)
        if self.published - self.acked < self.window:
            self.room.set()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.connected.done():
            self.connected.set_exception(ConnectionError(str(exc)))

    def next_packet(self) -> bytes:
        device = self.devices[self.index % len(self.devices)]
        self.index += 1
        now_ms = max(int(time.time() * 1000), self.last_ms[device] + 1)
        self.last_ms[device] = now_ms
        self.seq[device] += 1
        parts = self.templates[device]
        head = parts[0].replace(b"SEQ", str(self.seq[device]).encode())
        payload = iso_ms(now_ms).join([head, *parts[1:]])
        self.packet_id = self.packet_id % 65_535 + 1
        return encode_publish(
            self.topics[device], payload, qos=1, packet_id=self.packet_id, protocol=4
        )

    async def run(self, rate: float, duration: float) -> None:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        start = loop.time()
        while loop.time() - start < duration:
            room = self.window - (self.published - self.acked)
            if room <= 0:
                self.room.clear()
                try:
                    await asyncio.wait_for(self.room.wait(), 30)
                except TimeoutError:
                    return
                continue
            if rate > 0:
                due = int((loop.time() - start) * rate) - self.published
                if due <= 0:
                    await asyncio.sleep(0.002)
                    continue
                room = min(room, due)
            burst = min(room, 200)
            self.transport.write(b"".join(self.next_packet() for _ in range(burst)))
            self.published += burst
            await asyncio.sleep(0)

    async def drain(self, timeout: float = 30.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.acked < self.published and loop.time() < deadline:
            await asyncio.sleep(0.01)
        if self.transport is not None:
            self.transport.write(b"\xe0\x00")
            self.transport.close()


async def main_async(args: argparse.Namespace) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    names = [f"bench-{n:05d}" for n in range(args.devices)]
    connections = []
    for index in range(args.connections):
        share = names[index :: args.connections]
        _, protocol = await loop.create_connection(
            lambda s=share: Connection(s, args.inflight), args.host, args.port
        )
        protocol.transport.write(  # type: ignore[union-attr]
            encode_connect(f"bench-pub-{index}", protocol=4, keepalive=60, clean=True)
        )
        await protocol.connected
        connections.append(protocol)
    started = loop.time()
    rate = args.rate / args.connections
    await asyncio.gather(*(c.run(rate, args.duration) for c in connections))
    elapsed = loop.time() - started
    await asyncio.gather(*(c.drain() for c in connections))
    return {
        "published": sum(c.published for c in connections),
        "acked": sum(c.acked for c in connections),
        "seconds": elapsed,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--rate", type=float, default=0.0, help="messages/s in all; 0: flat out")
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--inflight", type=int, default=1000)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main_async(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
