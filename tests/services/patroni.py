"""A replicated PostgreSQL + TimescaleDB under Patroni, with its etcd, all on loopback.

Each node is configured from ``deploy/patroni/patroni.yml.in``, the file production uses, with
only addresses, paths and passwords filled in: what the tests kill is what a city runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import string
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
from psycopg import sql

from ingest.schema import migrate
from tests.services._process import (
    ServiceUnavailableError,
    find_binary,
    free_port,
    hand_over,
    service_user,
    tail,
    wait_for_port,
)
from tests.services.postgres import find_bindir

TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "patroni" / "patroni.yml.in"
FLUSHES = "        max_connections: 200\n"  # the line the test settings follow


class Etcd:
    """A one-member etcd for Patroni's leader key."""

    def __init__(self, directory: Path) -> None:
        self.binary = find_binary("etcd", "/usr/sbin")
        self.directory = directory
        self.client_port = free_port()
        self.peer_port = free_port()
        self.log_path = directory / "etcd.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def start(self) -> None:
        peer = f"http://127.0.0.1:{self.peer_port}"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "--name=etcd-1",
                    f"--data-dir={self.directory / 'etcd'}",
                    f"--listen-client-urls={self.url}",
                    f"--advertise-client-urls={self.url}",
                    f"--listen-peer-urls={peer}",
                    f"--initial-advertise-peer-urls={peer}",
                    f"--initial-cluster=etcd-1={peer}",
                    "--initial-cluster-state=new",
                    "--logger=zap",
                    "--log-level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if not wait_for_port(self.client_port, 30):
            raise ServiceUnavailableError(f"etcd did not start:\n{tail(self.log_path)}")

    def stop(self) -> None:
        _kill_group(self.process, signal.SIGTERM)
        self.process = None


class PatroniNode:
    """One Patroni-managed PostgreSQL; ``kill`` takes the whole machine down (Patroni too)."""

    def __init__(
        self,
        directory: Path,
        name: str,
        scope: str,
        etcd: Etcd,
        secrets_: dict[str, str],
        *,
        durable: bool = False,
    ) -> None:
        self.name = name
        self.directory = directory / name
        self.directory.mkdir()
        self.user = service_user("postgres")
        hand_over(self.directory, self.user)
        self.pg_port = free_port()
        self.rest_port = free_port()
        self.log_path = self.directory / "patroni.log"
        self.config = self.directory / "patroni.yml"
        bindir = find_bindir()
        text = string.Template(TEMPLATE.read_text(encoding="utf-8")).substitute(
            SCOPE=scope,
            NODE_NAME=name,
            RESTAPI_LISTEN=f"127.0.0.1:{self.rest_port}",
            RESTAPI_ADDRESS=f"127.0.0.1:{self.rest_port}",
            ETCD_HOSTS=f"127.0.0.1:{etcd.client_port}",
            REPLICATION_USER="replicator",
            CLIENT_NETWORK="127.0.0.1/32",
            PG_LISTEN=f"127.0.0.1:{self.pg_port}",
            PG_ADDRESS=f"127.0.0.1:{self.pg_port}",
            DATA_DIR=str(self.directory / "data"),
            PGPASS_FILE=str(self.directory / "pgpass"),
            SUPERUSER_PASSWORD=secrets_["superuser"],
            REPLICATION_PASSWORD=secrets_["replication"],
            SOCKET_DIR=str(self.directory),
        )
        # The template names Debian's PostgreSQL 15; the tests use whichever has TimescaleDB.
        text = text.replace("bin_dir: /usr/lib/postgresql/15/bin", f"bin_dir: {bindir}")
        if not durable:  # tests do not survive power cuts, so they skip the disk flushes
            text = text.replace(FLUSHES, FLUSHES + '        fsync: "off"\n')
        self.config.write_text(text, encoding="utf-8")
        hand_over(self.config, self.user)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        patroni = find_binary("patroni")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [patroni, str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                user=self.user,
                cwd=self.directory,
                start_new_session=True,  # PostgreSQL joins Patroni's group: one kill takes both
                env={**os.environ, "HOME": str(self.directory)},
            )

    def kill(self) -> None:
        """The machine is gone: PostgreSQL and Patroni killed with SIGKILL at once."""
        # Patroni starts the postmaster in a session of its own: that group dies too.
        postmaster = self._postmaster_group()
        _kill_group(self.process, signal.SIGKILL)
        self.process = None
        if postmaster is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(postmaster, signal.SIGKILL)

    def _postmaster_group(self) -> int | None:
        try:
            pid = int((self.directory / "data" / "postmaster.pid").read_text().split()[0])
            return os.getpgid(pid)
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """Patroni stops PostgreSQL on SIGTERM; a straggler is killed."""
        postmaster = self._postmaster_group()
        _kill_group(self.process, signal.SIGTERM)
        self.process = None
        if postmaster is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(postmaster, signal.SIGKILL)

    def state(self) -> dict[str, object] | None:
        """This node's view from its REST API, or None when it does not answer."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.rest_port}/patroni", timeout=2
            ) as r:
                return dict(json.loads(r.read()))
        except (OSError, urllib.error.URLError, ValueError):
            return None


class PatroniCluster:
    """etcd and two Patroni nodes: a primary and its synchronous standby."""

    def __init__(self, *, durable: bool = False) -> None:
        find_binary("patroni", "/usr/sbin")
        self.directory = Path(tempfile.mkdtemp(prefix="smartcity-ha-"))
        os.chmod(self.directory, 0o755)
        self.passwords = {
            "superuser": secrets.token_urlsafe(16),
            "replication": secrets.token_urlsafe(16),
        }
        self.etcd = Etcd(self.directory)
        scope = f"city-{secrets.token_hex(4)}"
        self.nodes = [
            PatroniNode(
                self.directory, f"db-{i}", scope, self.etcd, self.passwords, durable=durable
            )
            for i in (1, 2)
        ]

    def start(self, timeout_s: float = 120.0) -> None:
        """etcd, the first node (it bootstraps), then the second; wait for a synchronous pair."""
        self.etcd.start()
        self.nodes[0].start()
        self.wait(lambda: self.primary() is self.nodes[0], timeout_s, "the first node to lead")
        self.nodes[1].start()
        self.wait(lambda: self.sync_standby() is not None, timeout_s, "a synchronous standby")

    def wait(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Poll ``condition`` until it holds (bounded); fail with the nodes' logs."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.2)
        logs = "\n".join(f"--- {n.name}\n{tail(n.log_path)}" for n in self.nodes)
        raise ServiceUnavailableError(f"Patroni: no {what} within {timeout_s:.0f} s\n{logs}")

    def primary(self) -> PatroniNode | None:
        for node in self.nodes:
            state = node.state()
            if state and state.get("role") == "master" and state.get("state") == "running":
                return node
        return None

    def sync_standby(self) -> PatroniNode | None:
        for node in self.nodes:
            state = node.state()
            if state and state.get("role") == "replica" and state.get("sync_standby"):
                return node
        return None

    def dsn(self, dbname: str = "postgres", *, attrs: str = "read-write") -> str:
        """The libpq multi-host URL clients use: every node, the one that can write."""
        hosts = ",".join(f"127.0.0.1:{n.pg_port}" for n in self.nodes)
        password = self.passwords["superuser"]
        return (
            f"postgresql://postgres:{password}@{hosts}/{dbname}"
            f"?target_session_attrs={attrs}&connect_timeout=2"
        )

    def node_dsn(self, node: PatroniNode, dbname: str = "postgres") -> str:
        """One node only, whatever its role (a standby answers reads)."""
        password = self.passwords["superuser"]
        return f"postgresql://postgres:{password}@127.0.0.1:{node.pg_port}/{dbname}"

    def cleanup(self) -> None:
        for node in self.nodes:
            node.stop()
        self.etcd.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


@contextlib.contextmanager
def city_cluster(database: str = "city") -> Iterator[PatroniCluster]:
    """A started cluster with ``database`` created and migrated on it; cleaned up after."""
    ha = PatroniCluster()
    try:
        ha.start()
        with psycopg.connect(ha.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        migrate(ha.dsn(database), timescaledb="require")
        yield ha
    finally:
        ha.cleanup()


def _kill_group(process: subprocess.Popen[bytes] | None, sig: signal.Signals) -> None:
    if process is None:
        return
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def wait_standbys_replayed(admin_dsn: str, timeout_s: float) -> None:
    """Wait until every standby of the primary has replayed all it has written so far."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        lsn = conn.execute("SELECT pg_current_wal_lsn()").fetchone()
        deadline = time.monotonic() + timeout_s
        while True:
            row = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE replay_lsn >= %s::pg_lsn)"
                " FROM pg_stat_replication",
                (str(lsn[0]) if lsn else "0/0",),
            ).fetchone()
            if row and row[0] > 0 and row[0] == row[1]:
                return
            assert time.monotonic() < deadline, f"standbys replayed {row} within {timeout_s} s"
            time.sleep(0.1)
