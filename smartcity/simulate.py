"""``smartcity simulate``: a simulated fleet against a real deployment, for trials and load.

It registers the fleet's devices (so ingest accepts them) and runs them in this process under one
broker account, ``simulator`` in the shipped ACL, which may publish telemetry and status for any
device. Create that account only on brokers that are trials, never a city's production broker.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

from edge.fleet import Fleet, plan_fleet
from ingest import config as ingest_config
from ingest.registry import DeviceRecord, register_devices
from smartcity.broker_args import BrokerArgumentError, broker_settings

log = logging.getLogger("smartcity.simulate")


def run(args: argparse.Namespace) -> int:
    """Register ``--devices`` simulated devices and run them until stopped or ``--duration``."""
    try:
        broker = broker_settings(args)
    except BrokerArgumentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config = ingest_config.load(args.config)
    specs = plan_fleet(args.devices, seed=args.seed)
    register_devices(
        config.database_url,
        [DeviceRecord(s.device, s.site, s.family, s.name, s.lat, s.lon) for s in specs],
    )
    fleet = Fleet(
        specs,
        broker,
        sample_interval_s=args.sample_interval,
        batch_interval_s=args.batch_interval,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    fleet.start()
    print(f"{len(specs)} simulated devices registered and publishing to {args.broker}", flush=True)
    stop.wait(args.duration)
    fleet.stop(drain_timeout=10)
    print(f"stopped with {fleet.backlog()} batches unacknowledged", flush=True)
    return 0
