"""``smartcity``: the server side's one command (demo, ingest, dashboard, migrate, devices...)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge.errors import ConfigError
from smartcity.broker_args import add_broker_arguments


def _demo(args: argparse.Namespace) -> int:
    from smartcity import demo  # noqa: PLC0415  # each command imports only what it runs

    return demo.run(
        demo.DemoSettings(
            data_dir=Path(args.data_dir),
            devices=args.devices,
            seed=args.seed,
            broker=args.broker,
            mqtt_port=args.mqtt_port,
            dashboard_port=args.port,
            api_port=args.api_port,
            duration_s=args.duration,
            history_days=args.history_days,
            incidents=not args.quiet,
        )
    )


def _ingest(args: argparse.Namespace) -> int:
    from ingest import cli  # noqa: PLC0415

    return cli.run_ingest(args)


def _migrate(args: argparse.Namespace) -> int:
    from ingest import cli  # noqa: PLC0415

    return cli.run_migrate(args)


def _check_config(args: argparse.Namespace) -> int:
    from ingest import cli  # noqa: PLC0415

    return cli.run_check_config(args)


def _rejections(args: argparse.Namespace) -> int:
    from ingest import cli  # noqa: PLC0415

    return cli.run_rejections(args)


def _simulate(args: argparse.Namespace) -> int:
    from smartcity import simulate  # noqa: PLC0415

    return simulate.run(args)


def _retention(args: argparse.Namespace) -> int:
    from ingest import cli  # noqa: PLC0415

    return cli.run_retention(args)


def _dashboard(args: argparse.Namespace) -> int:
    from dashboard import cli  # noqa: PLC0415

    return cli.run_dashboard(args)


def _api(args: argparse.Namespace) -> int:
    from api import cli  # noqa: PLC0415

    return cli.run_api(args)


def parser() -> argparse.ArgumentParser:
    """The command line."""
    top = argparse.ArgumentParser(prog="smartcity", description=__doc__)
    commands = top.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run the whole platform with a simulated city")
    demo.add_argument("--data-dir", default="demo-data", help="where data is kept between runs")
    demo.add_argument("--devices", type=int, default=60, help="simulated devices (default 60)")
    demo.add_argument("--seed", type=int, default=1, help="city layout and data seed")
    demo.add_argument(
        "--broker",
        choices=("auto", "mosquitto", "builtin"),
        default="auto",
        help="mosquitto if installed (auto), or the built-in Python broker",
    )
    demo.add_argument("--mqtt-port", type=int, default=1883, help="preferred MQTT port")
    demo.add_argument("--port", type=int, default=8050, help="preferred dashboard port")
    demo.add_argument("--api-port", type=int, default=8060, help="preferred planner API port")
    demo.add_argument("--duration", type=float, default=None, help="stop after N seconds")
    demo.add_argument(
        "--history-days",
        type=float,
        default=7.0,
        help="days of history written on a new data directory (default 7; 0: none)",
    )
    demo.add_argument(
        "--quiet", action="store_true", help="no scripted incidents in the first minutes"
    )
    demo.set_defaults(func=_demo)

    for name, func, text in (
        ("ingest", _ingest, "run the ingest service"),
        ("migrate", _migrate, "bring the database schema up to date"),
        ("check-config", _check_config, "validate the ingest configuration and exit"),
        ("retention", _retention, "drop what the retention policy no longer keeps, once"),
        ("dashboard", _dashboard, "serve the control room"),
        ("api", _api, "serve the planner HTTP API"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("--config", help="TOML configuration file (environment overrides)")
        command.set_defaults(func=func)

    rejections = commands.add_parser("rejections", help="list what ingest refused, and why")
    rejections.add_argument("--config", help="ingest TOML configuration (for database_url)")
    rejections.add_argument("--device", help="only this device")
    rejections.add_argument("--reason", help="only this reason code (see docs/contract.md)")
    rejections.add_argument("--limit", type=int, default=50, help="newest N (default 50)")
    rejections.set_defaults(func=_rejections)

    sim = commands.add_parser("simulate", help="register and run a simulated fleet (trials)")
    sim.add_argument("--config", help="ingest TOML configuration (for database_url)")
    sim.add_argument("--devices", type=int, default=60, help="how many devices (default 60)")
    sim.add_argument("--seed", type=int, default=1, help="layout and data seed (default 1)")
    add_broker_arguments(sim)
    sim.add_argument("--sample-interval", type=float, default=5.0, help="seconds between samples")
    sim.add_argument("--batch-interval", type=float, default=10.0, help="seconds between batches")
    sim.add_argument("--duration", type=float, default=None, help="stop after N seconds")
    sim.set_defaults(func=_simulate)

    from api import cli as api_cli  # noqa: PLC0415  # argument definitions only
    from smartcity import devices_cli, history_cli, replay_cli, users_cli  # noqa: PLC0415

    history_cli.add_parsers(commands)
    history_cli.add_import_parser(commands)

    devices_cli.add_parser(commands)
    api_cli.add_tokens_parser(commands)
    users_cli.add_parser(commands)
    replay_cli.add_parser(commands)
    return top


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``smartcity``."""
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
