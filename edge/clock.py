"""Clock sanity on boxes without a real-time clock.

A Raspberry Pi boots with the time it last saved (or 1970) until NTP answers. Readings taken
then must not go out with timestamps from the past: the agent never stamps a reading earlier than
the moment this software was built, holds such readings until the clock is sane, and re-stamps
them from the monotonic clock. Whether the kernel considers the clock synchronised (NTP, GNSS)
travels with every batch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

# No reading can be older than the software that took it.
BUILT = datetime(2026, 11, 1, tzinfo=UTC)

_TIME_ERROR = 5  # adjtimex(2): the clock is not synchronised
_TIMESYNC_FLAG = Path("/run/systemd/timesync/synchronized")


class _Timex(ctypes.Structure):
    # struct timex from <sys/timex.h>: the leading fields, then room for the rest.
    _fields_ = [("modes", ctypes.c_uint), ("_rest", ctypes.c_byte * 256)]


@functools.cache
def _libc() -> ctypes.CDLL | None:
    # Looked up once: find_library runs ldconfig, far too slow to ask for every reading.
    name = ctypes.util.find_library("c")
    if name is None or os.name != "posix":
        return None
    try:
        return ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None


def kernel_synchronised() -> bool | None:
    """Whether the kernel says the clock is synchronised; None when it cannot tell."""
    if _TIMESYNC_FLAG.exists():
        return True
    libc = _libc()
    if libc is None:
        return None
    try:
        state = int(libc.adjtimex(ctypes.byref(_Timex())))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != _TIME_ERROR


class Clock:
    """Wall time with sanity checks.

    Args:
        now: The wall clock (tests pass a fake).
        synchronised: Whether the clock is synchronised (tests pass a fake).
        built: The earliest believable time.
    """

    def __init__(
        self,
        now: Callable[[], datetime] | None = None,
        synchronised: Callable[[], bool | None] = kernel_synchronised,
        built: datetime = BUILT,
    ) -> None:
        self._now = now or (lambda: datetime.now(UTC))
        self._synchronised = synchronised
        self.built = built

    def now(self) -> datetime:
        """The wall clock, as it is (possibly insane)."""
        return self._now()

    def sane(self, at: datetime | None = None) -> bool:
        """Whether ``at`` (default: now) is no earlier than the build time."""
        return (at or self._now()) >= self.built

    def synchronised(self) -> bool:
        """Whether readings stamped now may be called synchronised."""
        state = self._synchronised()
        return bool(state) and self.sane()
