"""One thread driving the sockets of any number of MQTT sessions.

A device runs one session; the fleet simulator runs thousands in one process. paho's
external-loop interface (``loop_read``/``loop_write``/``loop_misc`` and the socket callbacks)
lets one selector serve them all, and lets this loop own reconnection: each session retries
with exponential backoff and full jitter, so a fleet does not hammer a broker that just came
back all in the same second.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from edge.backoff import Backoff

log = logging.getLogger(__name__)

Connect = Callable[[], None]


class LoopSession:
    """What the loop needs to know about one paho client.

    Args:
        client: The paho client, its first broker already set by ``connect_async``.
        name: For the logs.
        backoff: Delays between failed attempts.
        addresses: Every broker the client may use, ``(host, port)``, the first one first. Each
            attempt after a failure or a lost connection goes to the next (round the list), so
            a device whose broker is gone moves on and stays where it got through.
        keepalive_s: The keepalive to connect with when moving to another broker.
    """

    def __init__(
        self,
        client: mqtt.Client,
        name: str,
        backoff: Backoff,
        *,
        addresses: tuple[tuple[str, int], ...] = (),
        keepalive_s: int = 60,
    ) -> None:
        self.client = client
        self.name = name
        self.backoff = backoff
        self.addresses = addresses
        self.keepalive_s = keepalive_s
        self.next_attempt = 0.0  # monotonic time of the next connection attempt
        self.wanted = True  # False once stopped: never reconnect
        self.up = False
        self._current = 0
        self._tried = False  # an attempt was made on the current broker

    def choose_broker(self) -> None:
        """Point the client at the broker for the next attempt.

        After any earlier attempt (failed, or a connection since lost) that is the next broker
        of the list; the first attempt goes to the first.
        """
        if self._tried and len(self.addresses) > 1:
            self._current = (self._current + 1) % len(self.addresses)
            host, port = self.addresses[self._current]
            log.info("%s trying broker %s:%d", self.name, host, port)
            self.client.connect_async(host, port, self.keepalive_s)
        self._tried = True


class NetworkLoop:
    """A selector thread for paho clients; reconnects each with its own jittered backoff."""

    def __init__(self, name: str = "mqtt-loop", tick_s: float = 0.5) -> None:
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        # Neither end may block: a full pair already holds a pending wake-up, and a writer
        # blocked on it (holding paho's mutex) would deadlock the loop thread waiting for it.
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._sessions: dict[mqtt.Client, LoopSession] = {}
        self._requests: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._tick_s = tick_s
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False

    def start(self) -> None:
        """Start the thread (idempotent)."""
        if not self._started:
            self._started = True
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread; sessions should have been closed first. Idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._wake()
        if self._started:
            self._thread.join(timeout)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def add(self, session: LoopSession) -> None:
        """Drive ``session`` from now on, connecting it as soon as the loop runs."""
        client = session.client
        client.on_socket_open = self._socket_open
        client.on_socket_close = self._socket_close
        client.on_socket_register_write = self._register_write
        client.on_socket_unregister_write = self._unregister_write
        with self._lock:
            self._sessions[client] = session
        self._wake()

    def remove(self, session: LoopSession) -> None:
        """Stop driving ``session`` (its socket, if any, is closed by its own disconnect)."""
        session.wanted = False
        with self._lock:
            self._sessions.pop(session.client, None)

    def call(self, action: Callable[[], None]) -> None:
        """Run ``action`` on the loop thread (selector changes must happen there).

        When the loop is not running (not started, or stopped), nothing can race it: the
        action runs right here.
        """
        if not self._thread.is_alive():
            action()
            return
        with self._lock:
            self._requests.append(action)
        self._wake()

    def _wake(self) -> None:
        # Failing means a wake-up is already pending, or the loop is gone: fine either way.
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"\0")

    # paho socket callbacks (the first two always run on the loop thread) ---------------------

    def _socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._selector.register(sock, selectors.EVENT_READ, client)

    def _socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)

    def _register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._set_write(sock, client, want=True)

    def _unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._set_write(sock, client, want=False)

    def _set_write(self, sock: Any, client: mqtt.Client, *, want: bool) -> None:
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want else 0)

        def apply() -> None:
            with contextlib.suppress(KeyError, ValueError, OSError):  # closed meanwhile
                self._selector.modify(sock, events, client)

        if threading.current_thread() is self._thread:
            apply()
        else:
            self.call(apply)

    # the loop -------------------------------------------------------------------------------

    def _run(self) -> None:
        next_tick = 0.0
        while not self._stop.is_set():
            for key, mask in self._selector.select(timeout=self._tick_s):
                client = key.data
                if client is None:
                    self._drain_wake()
                    continue
                if mask & selectors.EVENT_READ:
                    client.loop_read()
                if mask & selectors.EVENT_WRITE:
                    client.loop_write()
            with self._lock:
                requests, self._requests = self._requests, []
            for request in requests:
                request()
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + self._tick_s
                self._tick(now)

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _tick(self, now: float) -> None:
        with self._lock:
            sessions = list(self._sessions.values())
        for session in sessions:
            client = session.client
            if session.up:
                client.loop_misc()  # keepalive pings and their timeouts
                continue
            if not session.wanted or now < session.next_attempt:
                continue
            session.choose_broker()
            try:
                client.reconnect()
            except (OSError, ValueError) as exc:
                delay = session.backoff.next_delay()
                session.next_attempt = now + delay
                log.debug("%s cannot connect (%s); next attempt in %.1fs", session.name, exc, delay)
                continue
            # The CONNACK decides; until then, wait as if this attempt had failed.
            session.next_attempt = now + session.backoff.next_delay()
