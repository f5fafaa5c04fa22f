"""``smartcity api`` serves the planner API; ``smartcity tokens`` manages who may use it."""

from __future__ import annotations

import argparse
import logging
import sys

from edge.errors import ConfigError


def run_api(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM (uvicorn finishes the requests in flight)."""
    import uvicorn  # noqa: PLC0415

    from api import config as api_config  # noqa: PLC0415
    from api.app import create_app  # noqa: PLC0415

    config = api_config.load(args.config)
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            host=config.host,
            port=config.port,
            log_level=config.log_level.lower(),
            proxy_headers=False,
            server_header=False,
        )
    )
    server.run()
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m api``."""
    parser = argparse.ArgumentParser(prog="python -m api", description="Serve the planner API.")
    parser.add_argument("--config", help="TOML file with an [api] table")
    try:
        return run_api(parser.parse_args(argv))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def add_tokens_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``tokens add|list|revoke``."""
    tokens = commands.add_parser("tokens", help="API tokens: add, list, revoke")
    actions = tokens.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="make a token and print it (shown only once)")
    add.add_argument("name", help="who or what uses it, e.g. alice or planning-notebook")
    add.add_argument("--role", required=True, choices=("planner", "operator", "technician",
                                                       "admin"))  # fmt: skip
    listing = actions.add_parser("list", help="every token with its role and last use")
    revoke = actions.add_parser("revoke", help="stop a token working, at once")
    revoke.add_argument("name")
    for action in (add, listing, revoke):
        action.add_argument("--config", help="ingest TOML configuration (for database_url)")
    tokens.set_defaults(func=run_tokens)


def run_tokens(args: argparse.Namespace) -> int:
    """``smartcity tokens``."""
    import psycopg  # noqa: PLC0415

    from api import tokens  # noqa: PLC0415
    from ingest import config as ingest_config  # noqa: PLC0415

    try:
        with psycopg.connect(ingest_config.load(args.config).database_url) as conn:
            if args.action == "add":
                token = tokens.create(conn, args.name, args.role)
                print(token)
                print(f"# {args.role} token {args.name!r}: shown once; keep it secret",
                      file=sys.stderr)  # fmt: skip
            elif args.action == "revoke":
                tokens.revoke(conn, args.name)
                print(f"revoked {args.name}")
            else:
                for info in tokens.listing(conn):
                    used = info.last_used_at.isoformat() if info.last_used_at else "never"
                    state = f"revoked {info.revoked_at.isoformat()}" if info.revoked_at else ""
                    print(f"{info.name}\t{info.role}\tlast used {used}\t{state}".rstrip())
    except (tokens.TokenError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
