"""The ``smartcity devices`` command line (see :mod:`smartcity.devices`)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``devices`` and its subcommands."""
    devices = commands.add_parser("devices", help="register devices and manage their credentials")
    actions = devices.add_subparsers(dest="action", required=True)

    def common(action: argparse.ArgumentParser) -> None:
        action.add_argument("--config", help="ingest TOML configuration (for database_url)")
        action.add_argument(
            "--broker-passwords",
            default=os.environ.get("CITY_BROKER_PASSWORD_FILE"),
            help="the broker's password file (env CITY_BROKER_PASSWORD_FILE)",
        )
        action.add_argument(
            "--broker-pid-file",
            default=os.environ.get("CITY_BROKER_PID_FILE"),
            help="reload a broker on this host by SIGHUP (env CITY_BROKER_PID_FILE)",
        )
        action.add_argument(
            "--broker-reload-command",
            default=os.environ.get("CITY_BROKER_RELOAD_COMMAND"),
            help="or run this to reload it, e.g. 'docker compose kill -s HUP mosquitto'"
            " (env CITY_BROKER_RELOAD_COMMAND)",
        )

    add = actions.add_parser("add", help="register a device and issue its broker password")
    add.add_argument("device", help="device id (letters, digits, '-', '_')")
    add.add_argument("--site", required=True, help="site (district) it is installed in")
    add.add_argument("--family", required=True, help="traffic, air or waste")
    add.add_argument("--name", default="", help="a label for people")
    add.add_argument("--lat", type=float, help="latitude")
    add.add_argument("--lon", type=float, help="longitude")
    add.add_argument(
        "--broker-url",
        default=os.environ.get("CITY_DEVICE_BROKER_URL"),
        help="what devices connect to, e.g. mqtts://mqtt.city.example:8883"
        " (env CITY_DEVICE_BROKER_URL)",
    )
    add.add_argument(
        "--ca-file",
        default=os.environ.get("CITY_DEVICE_CA_FILE"),
        help="CA certificate devices verify the broker with (env CITY_DEVICE_CA_FILE)",
    )
    add.add_argument("--output-dir", help="where to write the bundle (default ./DEVICE)")
    common(add)

    listing = actions.add_parser("list", help="registered devices and their credentials")
    listing.add_argument("--site", help="only this site")
    common(listing)

    revoke = actions.add_parser("revoke", help="remove a device's credentials now")
    revoke.add_argument("device")
    common(revoke)

    rotate = actions.add_parser("rotate", help="issue a new password; the old one stops working")
    rotate.add_argument("device")
    rotate.add_argument("--broker-url", default=os.environ.get("CITY_DEVICE_BROKER_URL"))
    rotate.add_argument("--ca-file", default=os.environ.get("CITY_DEVICE_CA_FILE"))
    rotate.add_argument("--site", help="the device's site, for the bundle's command")
    rotate.add_argument("--output-dir", help="where to write the bundle (default ./DEVICE)")
    common(rotate)
    devices.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Carry out one ``smartcity devices`` action; errors are one line and exit status 2."""
    from smartcity.broker_passwords import PasswordFileError  # noqa: PLC0415
    from smartcity.devices import DeviceAdminError  # noqa: PLC0415

    try:
        return _run(args)
    except (DeviceAdminError, PasswordFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from ingest import config as ingest_config  # noqa: PLC0415
    from smartcity.broker_passwords import PasswordFile  # noqa: PLC0415
    from smartcity.devices import (  # noqa: PLC0415
        BrokerReload,
        DeviceAdmin,
        DeviceAdminError,
        write_bundle,
    )

    if not args.broker_passwords:
        raise DeviceAdminError(
            "the broker's password file is needed: --broker-passwords or CITY_BROKER_PASSWORD_FILE"
        )
    config = ingest_config.load(args.config)
    reload = BrokerReload(
        Path(args.broker_pid_file) if args.broker_pid_file else None, args.broker_reload_command
    )
    admin = DeviceAdmin(config.database_url, PasswordFile(Path(args.broker_passwords)), reload)
    configured = reload.pid_file is not None or bool(reload.command)
    match args.action:
        case "list":
            for row in admin.list(args.site):
                seen = f"{row.last_seen:%Y-%m-%d %H:%M}" if row.last_seen else "never"
                columns = (row.device_id, row.site, row.family, row.credentials)
                print("{:<20} {:<12} {:<8} {:<8} ".format(*columns) + seen)
            return 0
        case "revoke":
            admin.revoke(args.device)
            print(f"revoked {args.device}" + _reload_note(configured))
            return 0
        case "add" | "rotate":
            if not args.broker_url:
                raise DeviceAdminError(
                    "devices need the broker's address: --broker-url or CITY_DEVICE_BROKER_URL"
                )
            ca = Path(args.ca_file) if args.ca_file else None
            if ca is not None and not ca.is_file():
                raise DeviceAdminError(f"CA file {ca} does not exist")
            out = Path(args.output_dir or args.device)
            if (out / "password").exists():
                raise DeviceAdminError(f"{out / 'password'} exists; choose another --output-dir")
            if args.action == "add":
                password = admin.add(
                    args.device, site=args.site, family=args.family, name=args.name,
                    lat=args.lat, lon=args.lon,
                )  # fmt: skip
                site = args.site
            else:
                password = admin.rotate(args.device)
                site = args.site or next(
                    (r.site for r in admin.list() if r.device_id == args.device), "SITE"
                )
            bundle = write_bundle(
                out, device=args.device, site=site, password=password,
                broker_url=args.broker_url, ca_file=ca,
            )  # fmt: skip
            verb = "registered" if args.action == "add" else "new password for"
            print(f"{verb} {args.device}; copy {bundle.directory}/ to the device and run there:")
            print(f"  {bundle.command}" + _reload_note(configured))
            return 0
    raise DeviceAdminError(f"unknown action {args.action!r}")


def _reload_note(configured: bool) -> str:
    if configured:
        return ""
    return "\nnote: no broker reload configured; reload the broker to apply (SIGHUP)"
