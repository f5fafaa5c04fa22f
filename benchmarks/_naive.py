"""The simplest alternative ingest: a paho subscriber doing one INSERT per message, autocommit.

Decodes with the stdlib, looks up stream ids in a dict (creating them on first sight), and
inserts each message's readings with one multi-row INSERT. Runs until killed.
"""

from __future__ import annotations

import argparse
import json
import sys

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dsn", required=True)
    args = parser.parse_args()
    conn = psycopg.connect(args.dsn, autocommit=True)
    streams: dict[tuple[str, str, str], int] = {}

    def stream_id(device: str, sensor: str, metric: str, unit: str) -> int:
        key = (device, sensor, metric)
        if key not in streams:
            row = conn.execute(
                "INSERT INTO streams (device_id, sensor, metric, unit) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (device_id, sensor, metric) DO UPDATE SET unit = excluded.unit"
                " RETURNING stream_id",
                (*key, unit),
            ).fetchone()
            assert row is not None
            streams[key] = int(row[0])
        return streams[key]

    def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        body = json.loads(message.payload)
        device = body["device"]
        rows = [
            (r["ts"], stream_id(device, r["sensor"], r["metric"], r["unit"]), r["value"])
            for r in body["readings"]
        ]
        values = ", ".join(["(%s, %s, %s)"] * len(rows))
        params = [value for row in rows for value in row]
        conn.execute(
            f"INSERT INTO readings (ts, stream_id, value) VALUES {values}"  # noqa: S608  # placeholders only
            " ON CONFLICT DO NOTHING",
            params,
        )

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-naive")
    client.on_message = on_message
    client.connect(args.host, args.port)
    client.subscribe("city/v1/+/+/telemetry", qos=1)
    print("ready", flush=True)
    client.loop_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
