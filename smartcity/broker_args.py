"""The broker options of the commands that publish as devices (``simulate``, ``replay``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from smartcity.errors import CommandError

if TYPE_CHECKING:  # the command line loads paho only for the commands that publish
    from edge.publisher import BrokerSettings


class BrokerArgumentError(CommandError, ValueError):
    """A broker option that cannot be used as given."""


def add_broker_arguments(parser: argparse.ArgumentParser) -> None:
    """``--broker``, ``--username``, ``--password-file`` and ``--ca-file``."""
    parser.add_argument("--broker", default="127.0.0.1:1883", help="host:port of the MQTT broker")
    parser.add_argument("--username", help="broker account (the shipped ACL's 'simulator')")
    parser.add_argument("--password-file", help="file holding that account's password")
    parser.add_argument("--ca-file", help="CA certificate, to connect over TLS")


def broker_settings(args: argparse.Namespace) -> BrokerSettings:
    """The connection those options describe.

    Raises:
        BrokerArgumentError: ``--broker`` is not host:port, or the password file cannot be read.
    """
    from edge.publisher import BrokerSettings  # noqa: PLC0415

    host, _, port = str(args.broker).rpartition(":")
    if not host or not port.isdigit():
        raise BrokerArgumentError(f"--broker must be host:port, not {args.broker!r}")
    password = None
    if args.password_file:
        try:
            password = Path(args.password_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise BrokerArgumentError(f"cannot read --password-file: {exc.strerror}") from exc
    return BrokerSettings(
        host=host, port=int(port), username=args.username, password=password, ca_file=args.ca_file
    )
