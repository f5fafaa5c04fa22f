"""``smartcity devices`` against the real secured broker and database, end to end."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from edge.topics import telemetry_topic
from smartcity.broker_passwords import verify_password
from smartcity.cli import main
from tests.deploy.secured_broker import SecuredBroker
from tests.deploy.test_broker_security import Session, accepted, connect, publish
from tests.ingest.helpers import batch_payload, recent, stored_keys
from tests.ingest.running import eventually, ingest_config, running_ingest
from tests.services._process import ServiceUnavailableError, tail
from tests.services.handles import BrokerAddress, Database

INGEST_PASSWORD = "ingest-secret-for-tests"


@pytest.fixture(scope="module")
def secured() -> Iterator[SecuredBroker]:
    try:
        broker = SecuredBroker()
        broker.passwords.set("ingest", INGEST_PASSWORD)
        broker.start()
    except ServiceUnavailableError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield broker
    broker.cleanup()


@pytest.fixture
def admin_args(
    secured: SecuredBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    """Options every ``devices`` call needs: the password file and how to reload the broker."""
    pid_file = tmp_path / "mosquitto.pid"
    pid_file.write_text(f"{secured.pid}\n")
    return ["--broker-passwords", str(secured.passwords.path), "--broker-pid-file", str(pid_file)]


def _devices(database: Database, monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    monkeypatch.setenv("CITY_INGEST_DATABASE_URL", database.dsn)
    return main(["devices", *argv])


def _connect_eventually(port: int, user: str, password: str, ca: Path, *, want: bool) -> Session:
    """The broker applies a reload moments after the signal: retry, bounded, until it has."""
    deadline = time.monotonic() + 10
    while True:
        session = connect(port, user, password, ca=ca)
        if accepted(session) == want or time.monotonic() > deadline:
            return session
        session.close()
        time.sleep(0.2)


async def test_a_provisioned_device_publishes_end_to_end_and_a_revoked_one_is_cut_off(
    secured: SecuredBroker,
    timescale_database: Database,
    admin_args: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dsn = timescale_database.dsn
    bundle = tmp_path / "bundle"
    url = f"mqtts://127.0.0.1:{secured.tls_port}"
    add = ["add", "aq-0101", "--site", "north", "--family", "air", "--broker-url", url]
    add += ["--ca-file", str(secured.ca_file), "--output-dir", str(bundle)]
    assert _devices(timescale_database, monkeypatch, *add, *admin_args) == 0
    password = (bundle / "password").read_text().strip()
    assert (bundle / "password").stat().st_mode & 0o777 == 0o600
    assert (bundle / "ca.pem").read_bytes() == secured.ca_file.read_bytes()
    assert "--password-file password" in (bundle / "provision.txt").read_text()
    stored = secured.passwords.entries()["aq-0101"]
    assert password not in secured.passwords.path.read_text()  # only the hash is kept
    assert verify_password(stored, password)

    config = ingest_config(
        BrokerAddress("127.0.0.1", secured.port), dsn,
        broker_username="ingest", broker_password=INGEST_PASSWORD,
    )  # fmt: skip
    async with running_ingest(config):
        device = _connect_eventually(
            secured.tls_port, "aq-0101", password, secured.ca_file, want=True
        )
        assert accepted(device)
        dropped = threading.Event()
        device.client.on_disconnect = lambda *_args: dropped.set()
        publish(device, telemetry_topic("north", "aq-0101"), batch_payload("aq-0101", 1, recent()))
        assert await eventually(lambda: len(stored_keys(dsn)) == 3)

        assert _devices(timescale_database, monkeypatch, "revoke", "aq-0101", *admin_args) == 0
        assert dropped.wait(10)  # the reload disconnected it: no restart needed
        device.close()
        again = _connect_eventually(
            secured.tls_port, "aq-0101", password, secured.ca_file, want=False
        )
        assert not accepted(again)
        again.close()
    with psycopg.connect(dsn) as conn:
        revoked = conn.execute(
            "SELECT revoked_at IS NOT NULL FROM devices WHERE device_id = 'aq-0101'"
        ).fetchone()
    assert revoked == (True,)


def test_rotate_replaces_the_password_and_list_shows_the_state(
    secured: SecuredBroker,
    database: Database,
    admin_args: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    device = f"wb-{database.kind[:4]}"
    url = f"mqtts://127.0.0.1:{secured.tls_port}"
    common = ["--broker-url", url, "--ca-file", str(secured.ca_file)]
    add = ["add", device, "--site", "south", "--family", "waste", "--output-dir"]
    assert _devices(database, monkeypatch, *add, str(tmp_path / "one"), *common, *admin_args) == 0
    first = (tmp_path / "one" / "password").read_text().strip()
    rotate = ["rotate", device, "--output-dir", str(tmp_path / "two"), *common]
    assert _devices(database, monkeypatch, *rotate, *admin_args) == 0
    second = (tmp_path / "two" / "password").read_text().strip()
    assert first != second
    old = _connect_eventually(secured.tls_port, device, first, secured.ca_file, want=False)
    new = _connect_eventually(secured.tls_port, device, second, secured.ca_file, want=True)
    try:
        assert not accepted(old), tail(secured.log_path, 60)
        assert accepted(new), tail(secured.log_path, 60)
    finally:
        old.close()
        new.close()
    capsys.readouterr()
    assert _devices(database, monkeypatch, "list", "--site", "south", *admin_args) == 0
    assert device in capsys.readouterr().out
    assert _devices(database, monkeypatch, "revoke", device, *admin_args) == 0
    capsys.readouterr()
    _devices(database, monkeypatch, "list", *admin_args)
    line = next(row for row in capsys.readouterr().out.splitlines() if row.startswith(device))
    assert "revoked" in line


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["add", "ingest", "--site", "north", "--family", "air"], "service account"),
        (["add", "bad/id", "--site", "north", "--family", "air"], "not valid"),
        (["add", "aq-x", "--site", "north", "--family", "boats"], "family must be"),
        (["add", "aq-x", "--site", "no rth", "--family", "air"], "site"),
        (["revoke", "never-added"], "no device"),
        (["rotate", "never-added"], "no device"),
    ],
)
def test_bad_requests_are_refused_clearly_and_change_nothing(
    secured: SecuredBroker,
    timescale_database: Database,
    admin_args: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    before = secured.passwords.path.read_bytes()
    extra = ["--broker-url", "mqtts://127.0.0.1:8883"] if argv[0] in ("add", "rotate") else []
    extra += ["--output-dir", str(tmp_path / "b")] if argv[0] in ("add", "rotate") else []
    assert _devices(timescale_database, monkeypatch, *argv, *extra, *admin_args) == 2
    assert message in capsys.readouterr().err
    assert secured.passwords.path.read_bytes() == before
    assert not (tmp_path / "b" / "password").exists()


def test_adding_twice_is_refused(
    secured: SecuredBroker,
    timescale_database: Database,
    admin_args: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    add = ["add", "tr-0042", "--site", "east", "--family", "traffic"]
    url = ["--broker-url", "mqtts://127.0.0.1:8883"]
    out1, out2 = ["--output-dir", str(tmp_path / "1")], ["--output-dir", str(tmp_path / "2")]
    assert _devices(timescale_database, monkeypatch, *add, *url, *out1, *admin_args) == 0
    entry = secured.passwords.entries()["tr-0042"]
    assert _devices(timescale_database, monkeypatch, *add, *url, *out2, *admin_args) == 2
    assert "rotate" in capsys.readouterr().err
    assert secured.passwords.entries()["tr-0042"] == entry  # the working password still works


def test_the_password_file_is_required(
    timescale_database: Database,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("CITY_BROKER_PASSWORD_FILE", raising=False)
    assert _devices(timescale_database, monkeypatch, "list") == 2
    assert "CITY_BROKER_PASSWORD_FILE" in capsys.readouterr().err


async def test_the_trial_simulator_publishes_through_the_secured_broker(
    secured: SecuredBroker, timescale_database: Database, tmp_path: Path
) -> None:
    dsn = timescale_database.dsn
    secured.passwords.set("simulator", "simulator-secret")
    secured.reload()
    password_file = tmp_path / "simulator-password"
    password_file.write_text("simulator-secret\n")
    config = ingest_config(
        BrokerAddress("127.0.0.1", secured.port), dsn,
        broker_username="ingest", broker_password=INGEST_PASSWORD,
    )  # fmt: skip
    command = [
        sys.executable, "-m", "smartcity", "simulate", "--devices", "3",
        "--broker", f"127.0.0.1:{secured.port}", "--username", "simulator",
        "--password-file", str(password_file), "--sample-interval", "0.5",
        "--batch-interval", "1", "--duration", "4",
    ]  # fmt: skip
    async with running_ingest(config):
        result = await asyncio.to_thread(
            subprocess.run, command, capture_output=True, text=True, timeout=120, check=False,
            env={**os.environ, "CITY_INGEST_DATABASE_URL": dsn},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]

        def every_device_stored() -> bool:
            return len({key[0] for key in stored_keys(dsn)}) == 3

        assert await eventually(every_device_stored)
