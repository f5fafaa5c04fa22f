"""``smartcity users``: control-room accounts (add, list, role, disable, unlock)."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from datetime import UTC, datetime

from edge.errors import ConfigError


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``users``."""
    users = commands.add_parser("users", help="control-room accounts: add, list, role, ...")
    actions = users.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="make an account; prints its password (and TOTP) once")
    add.add_argument("name")
    add.add_argument("--role", required=True,
                     choices=("operator", "technician", "planner", "admin"))  # fmt: skip
    listing = actions.add_parser("list", help="every account with its role and state")
    role = actions.add_parser("role", help="change an account's role")
    role.add_argument("name")
    role.add_argument("role", choices=("operator", "technician", "planner", "admin"))
    disable = actions.add_parser("disable", help="end an account's access at once")
    disable.add_argument("name")
    unlock = actions.add_parser("unlock", help="lift a lockout after too many failed logins")
    unlock.add_argument("name")
    sign_out = actions.add_parser("sign-out", help="end every session of an account at once")
    sign_out.add_argument("name")
    for action in (add, listing, role, disable, unlock, sign_out):
        action.add_argument("--config", help="ingest TOML configuration (for database_url)")
    users.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """``smartcity users``."""
    import psycopg  # noqa: PLC0415

    from dashboard import accounts  # noqa: PLC0415
    from ingest import config as ingest_config  # noqa: PLC0415

    actor = f"cli:{getpass.getuser()}"
    try:
        with psycopg.connect(ingest_config.load(args.config).database_url) as conn:
            if args.action == "list":
                _list(conn)
                return 0
            if args.action == "add":
                account = accounts.create(conn, args.name, args.role)
                print(f"user {account.name} ({account.role}); password: {account.password}")
                if account.totp_uri:
                    print(f"authenticator app (TOTP): {account.totp_uri}")
                print("# shown once: hand it over in person or through a password manager",
                      file=sys.stderr)  # fmt: skip
                detail: dict[str, str] = {"user": args.name, "role": args.role}
            elif args.action == "role":
                secret = accounts.set_role(conn, args.name, args.role)
                print(f"{args.name} is now {args.role}")
                if secret:
                    print(f"the role needs a second factor; TOTP secret: {secret}")
                detail = {"user": args.name, "role": args.role}
            elif args.action == "disable":
                accounts.disable(conn, args.name, datetime.now(UTC))
                print(f"disabled {args.name}")
                detail = {"user": args.name}
            elif args.action == "sign-out":
                ended = accounts.sign_out_everywhere(conn, args.name)
                print(f"ended {ended} session(s) of {args.name}")
                detail = {"user": args.name}
            else:
                accounts.unlock(conn, args.name)
                print(f"unlocked {args.name}")
                detail = {"user": args.name}
            conn.execute(
                "INSERT INTO audit_log (actor, action, detail) VALUES (%s, %s, %s::jsonb)",
                (actor, f"user-{args.action}", json.dumps(detail)),
            )
    except (accounts.AccountError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _list(conn: object) -> None:
    rows = conn.execute(  # type: ignore[attr-defined]
        "SELECT name, role, totp_secret IS NOT NULL, last_login_at, locked_until, disabled_at"
        " FROM users ORDER BY name"
    ).fetchall()
    for name, role, has_totp, last_login, locked, disabled in rows:
        state = "disabled" if disabled else ("locked" if locked else "active")
        second = "TOTP" if has_totp else "password only"
        seen = last_login.isoformat() if last_login else "never"
        print(f"{name}\t{role}\t{second}\t{state}\tlast login {seen}")
