"""``smartcity dashboard``: serve the control room."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from contextlib import suppress
from types import FrameType

from dashboard import config as dashboard_config
from dashboard.server import make_server
from edge.errors import ConfigError

log = logging.getLogger(__name__)


def run_dashboard(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM."""
    config = dashboard_config.load(args.config)
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    server = make_server(config)

    def stop(signum: int, frame: FrameType | None) -> None:
        log.info("dashboard stopping")
        server.close()  # type: ignore[attr-defined]

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with suppress(OSError):  # the listening socket was closed by stop()
        server.run()  # type: ignore[attr-defined]
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m dashboard``."""
    parser = argparse.ArgumentParser(
        prog="python -m dashboard", description="Serve the control room."
    )
    parser.add_argument("--config", help="TOML file with a [dashboard] table")
    try:
        return run_dashboard(parser.parse_args(argv))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
