"""``smartcity-edge provision``: write a new device's configuration and credential files.

From flags, or interactively for whatever a flag did not give. The written configuration is
validated exactly as ``run`` will read it before the command reports success.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from edge.config import load
from edge.contract import is_valid_id
from edge.errors import ConfigError, EdgeError
from edge.sensors.registry import DRIVERS
from edge.settings import load_settings


def _ask(value: str | None, prompt: str) -> str:
    if value:
        return value
    if not sys.stdin.isatty():
        raise EdgeError(f"{prompt} is required (give it as a flag)")
    return input(f"{prompt}: ").strip()


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # JSON string escapes are valid TOML basic strings


def parse_sensor(text: str) -> tuple[str, str, dict[str, Any]]:
    """``name:driver:key=value,...`` checked against the driver's options.

    Examples:
        >>> parse_sensor("pm:sds011:port=/dev/ttyUSB0,warmup_s=20")
        ('pm', 'sds011', {'port': '/dev/ttyUSB0', 'warmup_s': 20.0})
    """
    name, _, rest = text.partition(":")
    driver, _, raw = rest.partition(":")
    if not is_valid_id(name):
        raise EdgeError(f"sensor {text!r}: name {name!r} is not a valid id")
    if driver not in DRIVERS:
        raise EdgeError(
            f"sensor {text!r}: driver {driver!r} is not one of {', '.join(sorted(DRIVERS))}"
        )
    given = dict(pair.split("=", 1) for pair in raw.split(",") if "=" in pair)
    options_type = DRIVERS[driver].options
    try:
        options = load_settings(options_type, given, source=f"sensor {name}")
    except ConfigError as exc:
        raise EdgeError(str(exc)) from exc
    chosen = {
        f.name: getattr(options, f.name) for f in dataclasses.fields(options) if f.name in given
    }
    return name, driver, chosen


def run(args: argparse.Namespace) -> int:
    """Write ``edge.toml`` and the password file, then validate them."""
    out = Path(args.output_dir)
    device = _ask(args.device, "device id")
    site = _ask(args.site, "site")
    broker = _ask(args.broker, "broker URL (mqtts://host:8883)")
    sensors = [parse_sensor(s) for s in args.sensor]
    config_path, password_path = out / "edge.toml", out / "password"
    for path in (config_path, password_path):
        if path.exists() and not args.force:
            raise EdgeError(f"{path} exists; use --force to replace it")
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif args.password_file:
        password = Path(args.password_file).read_text(encoding="utf-8").strip()
    elif sys.stdin.isatty():
        password = getpass.getpass("broker password: ")
    else:
        raise EdgeError("a broker password is required: --password-file or --password-stdin")
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Written by smartcity-edge provision; check it with: smartcity-edge doctor",
        "[device]",
        f"id = {_toml(device)}",
        f"site = {_toml(site)}",
        "",
        "[broker]",
        f"url = {_toml(broker)}",
        f"password_file = {_toml(password_path)}",
    ]
    if args.username:
        lines.append(f"username = {_toml(args.username)}")
    if args.ca_file:
        ca = out / "ca.pem"
        shutil.copyfile(args.ca_file, ca)
        lines.append(f"ca_file = {_toml(ca)}")
    lines += ["", "[spool]", f"path = {_toml(args.spool)}", ""]
    for name, driver, options in sensors:
        lines += ["[[sensors]]", f"name = {_toml(name)}", f"driver = {_toml(driver)}"]
        lines += [f"{key} = {_toml(value)}" for key, value in options.items()]
        lines.append("")
    # The password file first, readable by its owner only, then the configuration.
    fd = os.open(password_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(password + "\n")
    config_path.write_text("\n".join(lines), encoding="utf-8")
    config = load(config_path)
    sensors_note = f"{len(config.sensors)} sensors"
    print(f"wrote {config_path} and {password_path} for {config.device.id} ({sensors_note})")
    print(f"next: smartcity-edge doctor --config {config_path}")
    return 0
