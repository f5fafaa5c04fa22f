"""The password file module against Mosquitto's own tool and under concurrent changes."""

from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from smartcity.broker_passwords import (
    PasswordFile,
    PasswordFileError,
    hash_password,
    verify_password,
)


def test_entries_made_by_mosquitto_passwd_verify(tmp_path: Path) -> None:
    tool = shutil.which("mosquitto_passwd")
    assert tool, "mosquitto_passwd is missing: run `make test` (installs mosquitto)"
    path = tmp_path / "passwords"
    subprocess.run([tool, "-c", "-b", str(path), "aq-1", "s3cret"], check=True, timeout=30)
    entry = PasswordFile(path).entries()["aq-1"]
    assert verify_password(entry, "s3cret")
    assert not verify_password(entry, "s3cret ")


def test_set_and_remove_keep_other_users_and_the_files_mode(tmp_path: Path) -> None:
    path = tmp_path / "passwords"
    passwords = PasswordFile(path)
    passwords.set("ingest", "one")
    path.chmod(0o600)
    passwords.set("aq-1", "two")
    assert set(passwords.entries()) == {"ingest", "aq-1"}
    assert path.stat().st_mode & 0o777 == 0o600
    assert passwords.remove("aq-1")
    assert not passwords.remove("aq-1")
    assert verify_password(passwords.entries()["ingest"], "one")


def test_concurrent_changes_are_not_lost(tmp_path: Path) -> None:
    passwords = PasswordFile(tmp_path / "passwords")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: passwords.set(f"dev-{n}", f"pw-{n}"), range(24)))
    assert len(passwords.entries()) == 24


@pytest.mark.parametrize("user", ["", "a:b", "with space"])
def test_user_names_that_would_break_the_file_are_refused(tmp_path: Path, user: str) -> None:
    with pytest.raises(PasswordFileError):
        PasswordFile(tmp_path / "passwords").set(user, "pw")


def test_a_damaged_file_is_reported_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "passwords"
    path.write_text("aq-1:$7$101$abc$def\nnot a user line\n")
    with pytest.raises(PasswordFileError, match=":2:"):
        PasswordFile(path).entries()


def test_empty_passwords_and_malformed_hashes() -> None:
    with pytest.raises(PasswordFileError):
        hash_password("")
    assert not verify_password("$6$plain", "x")
    assert not verify_password("garbage", "x")
