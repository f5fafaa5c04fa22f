"""``smartcity-edge``: run the agent on a device, or a simulated fleet."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

from edge.errors import EdgeError
from edge.fleet import Fleet, plan_fleet
from edge.publisher import BrokerSettings

log = logging.getLogger(__name__)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def _broker(address: str) -> BrokerSettings:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise EdgeError(f"--broker must be host:port, not {address!r}")
    return BrokerSettings(host=host, port=int(port))


def simulate(args: argparse.Namespace) -> int:
    """Run ``--devices`` simulated devices until SIGINT/SIGTERM (or ``--duration`` seconds)."""
    specs = plan_fleet(args.devices, seed=args.seed)
    fleet = Fleet(
        specs,
        _broker(args.broker),
        sample_interval_s=args.sample_interval,
        batch_interval_s=args.batch_interval,
    )
    stop = _stop_on_signals()
    fleet.start()
    log.info("%d simulated devices publishing to %s", len(specs), args.broker)
    stop.wait(args.duration)
    fleet.stop(drain_timeout=10)
    log.info("fleet stopped with %d batches still unacknowledged", fleet.backlog())
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``smartcity-edge``."""
    parser = argparse.ArgumentParser(prog="smartcity-edge", description=__doc__)
    parser.add_argument("--log-level", default="INFO")
    commands = parser.add_subparsers(dest="command", required=True)
    sim = commands.add_parser("simulate", help="run a simulated fleet of devices")
    sim.add_argument("--devices", type=int, default=60, help="how many devices (default 60)")
    sim.add_argument("--seed", type=int, default=1, help="layout and data seed (default 1)")
    sim.add_argument("--broker", default="127.0.0.1:1883", help="host:port of the MQTT broker")
    sim.add_argument("--sample-interval", type=float, default=5.0, help="seconds between samples")
    sim.add_argument("--batch-interval", type=float, default=10.0, help="seconds between batches")
    sim.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    sim.set_defaults(func=simulate)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    logging.getLogger("edge.publisher").setLevel(logging.WARNING)  # one line per device is noise
    try:
        return int(args.func(args))
    except EdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
