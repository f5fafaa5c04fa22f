"""systemd's notification protocol (``sd_notify``) with the standard library.

Under ``Type=notify`` with ``WatchdogSec=``, the agent says READY once and then WATCHDOG=1 from
its main loop: if the loop ever hangs, systemd restarts the agent.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time


class Notifier:
    """Sends notifications when ``NOTIFY_SOCKET`` is set; does nothing otherwise."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):  # abstract namespace
            address = "\0" + address[1:]
        self._address = address or None
        watchdog_us = int(env.get("WATCHDOG_USEC", "0") or 0)
        # Ping at half the watchdog period, as systemd recommends.
        self._every_s = watchdog_us / 2e6 if watchdog_us else 0.0
        self._last = 0.0

    def send(self, message: str) -> None:
        """Send one notification (``READY=1``, ``STOPPING=1``, ``STATUS=...``)."""
        if self._address is None:
            return
        with (
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock,
            contextlib.suppress(OSError),  # systemd went away; nothing to do about it
        ):
            sock.sendto(message.encode(), self._address)

    def heartbeat(self) -> None:
        """Tell the watchdog the main loop is alive (rate-limited to half its period)."""
        if self._every_s and time.monotonic() - self._last >= self._every_s:
            self._last = time.monotonic()
            self.send("WATCHDOG=1")
