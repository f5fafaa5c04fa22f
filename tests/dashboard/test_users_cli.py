"""``smartcity users``: accounts made, changed and signed out from the command line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from dashboard import accounts
from smartcity.cli import main
from tests.services.handles import Database

LIMITS = accounts.Limits(idle=timedelta(hours=1), absolute=timedelta(hours=12))


def test_sign_out_ends_every_session_of_an_account_and_is_audited(
    database: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = tmp_path / "ingest.toml"
    settings.write_text(f'[ingest]\ndatabase_url = "{database.dsn}"\n', encoding="utf-8")
    config = ["--config", str(settings)]
    assert main(["users", "add", "anna", "--role", "planner", *config]) == 0
    with psycopg.connect(database.dsn) as conn:
        [(user_id,)] = conn.execute("SELECT user_id FROM users WHERE name = 'anna'").fetchall()
        anna = accounts.User(int(str(user_id)), "anna", "planner")
        now = datetime.now(UTC)
        tokens = [accounts.open_session(conn, anna, now) for _ in range(2)]
        assert all(accounts.session(conn, t, now, LIMITS) for t in tokens)
    capsys.readouterr()
    assert main(["users", "sign-out", "anna", *config]) == 0
    assert "ended 2 session(s) of anna" in capsys.readouterr().out
    with psycopg.connect(database.dsn) as conn:
        assert [accounts.session(conn, t, now, LIMITS) for t in tokens] == [None, None]
        audited = conn.execute(
            "SELECT actor, action FROM audit_log WHERE action = 'user-sign-out'"
        ).fetchall()
    assert len(audited) == 1
    assert str(audited[0][0]).startswith("cli:")
    assert main(["users", "sign-out", "nobody", *config]) == 2
    assert "no user named 'nobody'" in capsys.readouterr().err
