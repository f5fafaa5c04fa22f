"""The ``smartcity replay`` command line (see :mod:`smartcity.replay`)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from smartcity.broker_args import BrokerArgumentError, add_broker_arguments, broker_settings


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``replay``."""
    replay = commands.add_parser(
        "replay", help="publish recorded city telemetry through MQTT as devices, at a speed-up"
    )
    replay.add_argument(
        "source",
        choices=("beijing", "metro", "csv"),
        help="the shared Beijing stations, the I-94 counter, or a CSV (--file and a mapping)",
    )
    replay.add_argument("--start", help="first day to replay (YYYY-MM-DD UTC, default the first)")
    replay.add_argument("--days", type=float, default=7.0, help="days of data (default 7)")
    replay.add_argument(
        "--speed",
        type=float,
        default=3600.0,
        help="seconds of data per second (default 3600: an hour a second; 'inf': no pauses)",
    )
    replay.add_argument("--config", help="ingest TOML configuration (for database_url)")
    add_broker_arguments(replay)
    mapping = replay.add_argument_group("CSV mapping (source csv)")
    mapping.add_argument("--file", type=Path, help="the CSV file")
    mapping.add_argument("--time-column", default="time", help="column of times (default time)")
    mapping.add_argument("--device-column", help="column naming each row's device")
    mapping.add_argument("--device", help="or the one device all rows are from")
    mapping.add_argument(
        "--metric",
        action="append",
        default=[],
        metavar="COLUMN=METRIC",
        help="a column and the contract v1 metric it holds (repeat for each)",
    )
    mapping.add_argument("--site", default="replay", help="the devices' site (default replay)")
    mapping.add_argument("--family", default="air", help="air, traffic or waste (default air)")
    mapping.add_argument(
        "--timezone", default="UTC", help="zone of times written without an offset (default UTC)"
    )
    replay.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Register the source's devices, then publish its readings until done or stopped."""
    from ingest import config as ingest_config  # noqa: PLC0415  # each command imports its own
    from ingest.registry import register_devices  # noqa: PLC0415
    from smartcity import datasets  # noqa: PLC0415
    from smartcity.replay import Replayer, ReplayError, csv_series, timeline  # noqa: PLC0415

    try:
        broker = broker_settings(args)
        start = _day(args.start)
        if args.source == "beijing":
            series = datasets.beijing()
        elif args.source == "metro":
            series = [datasets.metro_traffic()]
        else:
            if args.file is None:
                raise ReplayError("source csv needs --file")
            series = csv_series(
                args.file,
                time_column=args.time_column,
                device_column=args.device_column,
                device=args.device,
                metrics=_metrics(args.metric),
                site=args.site,
                family=args.family,
                timezone=args.timezone,
            )
        line = timeline(series, start=start, days=args.days)
    except (ReplayError, BrokerArgumentError, datasets.DatasetMissingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config = ingest_config.load(args.config)
    register_devices(config.database_url, line.devices())
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    weeks = line.shift_us // (7 * 86_400 * 10**6)
    hours = (int(line.ts_us[-1]) - int(line.ts_us[0])) / 3.6e9
    print(
        f"replaying {len(line):,} readings of {len(line.devices())} devices"
        f" ({hours:,.0f} hours of data, moved {weeks} weeks forward) at {args.speed:g}x",
        flush=True,
    )
    try:
        progress = Replayer(line, broker, speed=args.speed).run(stop)
    except ReplayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"published {progress.readings:,} readings in {progress.messages:,} messages,"
        f" {progress.acknowledged:,} acknowledged by the broker",
        flush=True,
    )
    return 0 if progress.readings == len(line) else 1


def _day(text: str | None) -> datetime | None:
    from smartcity.replay import ReplayError  # noqa: PLC0415

    if text is None:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError as exc:
        raise ReplayError(f"--start must be YYYY-MM-DD, not {text!r}") from exc


def _metrics(pairs: list[str]) -> dict[str, str]:
    from smartcity.replay import ReplayError  # noqa: PLC0415

    if not pairs:
        raise ReplayError("source csv needs at least one --metric COLUMN=METRIC")
    mapping = {}
    for pair in pairs:
        column, sep, metric = pair.rpartition("=")
        if not sep or not column or not metric:
            raise ReplayError(f"--metric must be COLUMN=METRIC, not {pair!r}")
        mapping[column] = metric
    return mapping
