"""Where encoded batches wait between being built and being acknowledged by the broker.

The agent writes every batch here before publishing it and deletes it only after the broker's
PUBACK, so whatever the broker has not confirmed is still here. :class:`MemoryOutbox` is the
bounded in-memory version (it survives broker outages, not a power cut): the fleet simulator
uses it; a real device uses :class:`edge.spool.Spool`, which has the same interface.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored batch: storage id (increasing), sequence number, size and encoded payload."""

    id: int
    seq: int
    readings: int
    payload: bytes


class Outbox(Protocol):
    """Ordered, bounded storage of encoded batches awaiting acknowledgement."""

    def next_seq(self) -> int:
        """The sequence number for the next batch; never repeats for this outbox."""
        ...

    def put(self, seq: int, payload: bytes, *, readings: int) -> None:
        """Store a batch, dropping the oldest stored batches if the outbox is full."""
        ...

    def after(self, entry_id: int, limit: int) -> list[Entry]:
        """Up to ``limit`` stored batches with ids above ``entry_id``, oldest first."""
        ...

    def ack(self, entry_id: int) -> None:
        """Forget a batch the broker has acknowledged."""
        ...

    def depth(self) -> int:
        """How many batches are stored."""
        ...

    def dropped(self) -> int:
        """How many readings were dropped because the outbox was full."""
        ...

    def flush(self) -> None:
        """Make pending bookkeeping durable (a no-op in memory)."""
        ...


class MemoryOutbox:
    """An :class:`Outbox` in memory, bounded by batch count with a drop-oldest policy."""

    def __init__(self, max_batches: int = 10_000) -> None:
        if max_batches < 1:
            raise ValueError("max_batches must be at least 1")
        self._max = max_batches
        self._entries: OrderedDict[int, Entry] = OrderedDict()
        self._last_id = 0
        self._seq = 0
        self._dropped = 0

    def next_seq(self) -> int:  # noqa: D102
        return self._seq

    def put(self, seq: int, payload: bytes, *, readings: int) -> None:  # noqa: D102
        if len(self._entries) >= self._max:
            _, oldest = self._entries.popitem(last=False)
            self._dropped += oldest.readings
        self._last_id += 1
        self._seq = max(self._seq, seq + 1)
        self._entries[self._last_id] = Entry(self._last_id, seq, readings, payload)

    def after(self, entry_id: int, limit: int) -> list[Entry]:  # noqa: D102
        found: list[Entry] = []
        for key, entry in self._entries.items():
            if key > entry_id:
                found.append(entry)
                if len(found) >= limit:
                    break
        return found

    def ack(self, entry_id: int) -> None:  # noqa: D102
        self._entries.pop(entry_id, None)

    def depth(self) -> int:  # noqa: D102
        return len(self._entries)

    def dropped(self) -> int:  # noqa: D102
        return self._dropped

    def flush(self) -> None:  # noqa: D102
        return
