"""``smartcity-edge``: run the agent, provision a device, diagnose it, or simulate a fleet."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from edge.errors import EdgeError

if TYPE_CHECKING:
    from edge.agent import EdgeAgent
    from edge.config import EdgeConfig
    from edge.spool import Spool

log = logging.getLogger(__name__)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def build_agent(config: EdgeConfig) -> tuple[EdgeAgent, Spool]:
    """The agent a configuration describes, with its spool opened."""
    from edge.agent import AgentSettings, EdgeAgent  # noqa: PLC0415  # each command loads its own
    from edge.publisher import Publisher  # noqa: PLC0415
    from edge.sensors.registry import build_sensor  # noqa: PLC0415
    from edge.spool import Spool  # noqa: PLC0415

    spool_path = Path(config.spool.path)
    spool_path.parent.mkdir(parents=True, exist_ok=True)
    spool = Spool(
        spool_path,
        max_bytes=int(config.spool.max_mb * 1024 * 1024),
        max_age_s=config.spool.max_age_h * 3600,
    )
    settings = AgentSettings(
        site=config.device.site,
        device=config.device.id,
        sample_interval_s=config.agent.sample_interval_s,
        batch_interval_s=config.agent.batch_interval_s,
        status_interval_s=config.agent.status_interval_s,
        drain_readings_per_s=config.spool.drain_readings_per_s,
        sensor_intervals={s.name: s.interval_s for s in config.sensors if s.interval_s},
    )
    publisher = Publisher(
        site=config.device.site, device=config.device.id, broker=config.broker_settings()
    )
    sensors = [build_sensor(spec) for spec in config.sensors]
    return EdgeAgent(settings, sensors, publisher, spool), spool


def run(args: argparse.Namespace) -> int:
    """Run the agent until SIGTERM/SIGINT."""
    from edge.config import load  # noqa: PLC0415
    from edge.sdnotify import Notifier  # noqa: PLC0415

    config = load(args.config)
    agent, spool = build_agent(config)
    stop = _stop_on_signals()
    notifier = Notifier()
    log.info(
        "%s at %s: %d sensors, spool %s (%d batches waiting)",
        config.device.id,
        config.device.site,
        len(config.sensors),
        spool.path,
        spool.depth(),
    )
    agent.publisher.start()
    notifier.send("READY=1")
    try:
        while not stop.is_set():
            delay = agent.tick()
            notifier.heartbeat()
            stop.wait(min(delay, 1.0))
    finally:
        notifier.send("STOPPING=1")
        agent.close()
        spool.close()
    return 0


def simulate(args: argparse.Namespace) -> int:
    """Run ``--devices`` simulated devices until SIGINT/SIGTERM (or ``--duration`` seconds)."""
    from edge.fleet import Fleet, plan_fleet  # noqa: PLC0415
    from edge.publisher import BrokerSettings  # noqa: PLC0415

    host, _, port = args.broker.rpartition(":")
    if not host or not port.isdigit():
        raise EdgeError(f"--broker must be host:port, not {args.broker!r}")
    specs = plan_fleet(args.devices, seed=args.seed)
    faults = []
    if args.incidents:
        from edge.incidents import scripted_incidents  # noqa: PLC0415

        faults = scripted_incidents(specs, datetime.now(UTC))
    fleet = Fleet(
        specs,
        BrokerSettings(host=host, port=int(port)),
        sample_interval_s=args.sample_interval,
        batch_interval_s=args.batch_interval,
        faults=faults,
        labels=Path(args.labels) if args.labels and faults else None,
    )
    stop = _stop_on_signals()
    fleet.start()
    log.info("%d simulated devices publishing to %s", len(specs), args.broker)
    stop.wait(args.duration)
    fleet.stop(drain_timeout=10)
    log.info("fleet stopped with %d batches still unacknowledged", fleet.backlog())
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from edge import doctor  # noqa: PLC0415

    return doctor.run(args)


def _provision(args: argparse.Namespace) -> int:
    from edge import provision  # noqa: PLC0415

    return provision.run(args)


def parser() -> argparse.ArgumentParser:
    """The command line."""
    top = argparse.ArgumentParser(prog="smartcity-edge", description=__doc__)
    top.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    commands = top.add_subparsers(dest="command", required=True)

    run_cmd = commands.add_parser("run", help="run the agent on this device")
    run_cmd.add_argument("--config", default="/etc/smartcity-edge/edge.toml")
    run_cmd.set_defaults(func=run)

    doctor_cmd = commands.add_parser("doctor", help="check this device and print what passes")
    doctor_cmd.add_argument("--config", default="/etc/smartcity-edge/edge.toml")
    doctor_cmd.add_argument("--skip-sensors", action="store_true", help="do not read the sensors")
    doctor_cmd.set_defaults(func=_doctor)

    cmd = commands.add_parser(
        "provision",
        help="write the configuration and credentials of a new device",
        description="Write edge.toml and the password file for a new device, from flags or "
        "interactively, and validate them as `run` will read them.",
    )
    cmd.add_argument("--device", help="device id, as registered on the platform")
    cmd.add_argument("--site", help="site (district) of the device")
    cmd.add_argument("--broker", help="mqtt://host:1883 or mqtts://host:8883")
    cmd.add_argument("--username", help="broker user name (default: the device id)")
    cmd.add_argument("--password-file", help="file holding the broker password")
    cmd.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    cmd.add_argument("--ca-file", help="CA certificate that signed the broker's (copied)")
    cmd.add_argument(
        "--sensor",
        action="append",
        default=[],
        metavar="NAME:DRIVER[:KEY=VALUE,...]",
        help="a sensor, e.g. pm:sds011:port=/dev/ttyUSB0 (repeat for each; drivers and their "
        "options are listed in docs/technician.md)",
    )
    cmd.add_argument("--spool", default="/var/lib/smartcity-edge/spool.db", help="spool file")
    cmd.add_argument("--output-dir", default="/etc/smartcity-edge", help="where to write")
    cmd.add_argument("--force", action="store_true", help="overwrite existing files")
    cmd.set_defaults(func=_provision)

    sim = commands.add_parser("simulate", help="run a simulated fleet of devices")
    sim.add_argument("--devices", type=int, default=60, help="how many devices (default 60)")
    sim.add_argument("--seed", type=int, default=1, help="layout and data seed (default 1)")
    sim.add_argument("--broker", default="127.0.0.1:1883", help="host:port of the MQTT broker")
    sim.add_argument("--sample-interval", type=float, default=5.0, help="seconds between samples")
    sim.add_argument("--batch-interval", type=float, default=10.0, help="seconds between batches")
    sim.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    sim.add_argument(
        "--incidents",
        action="store_true",
        help="play the scripted incidents within the first minutes (edge.incidents)",
    )
    sim.add_argument("--labels", help="write the incidents as labelled faults (JSON lines) here")
    sim.set_defaults(func=simulate)
    return top


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``smartcity-edge``."""
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    if args.command == "simulate":
        logging.getLogger("edge.publisher").setLevel(logging.WARNING)  # one line per device
    try:
        return int(args.func(args))
    except EdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
