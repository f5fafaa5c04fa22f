"""The on-disk store-and-forward spool: every batch is written here before it is published.

SQLite in WAL mode on the device's SD card. A batch is committed (with a full sync) when it is
built, so it survives a power cut; it is deleted only after the broker's PUBACK, and deletions
are gathered and committed every few seconds to spare the card. Payloads are stored compressed
(telemetry JSON shrinks about eightfold), so a day of five sensors at 1 Hz takes a few MB.

The spool is bounded by size and by age: when either limit is passed, the oldest batches are
dropped and their readings counted. A spool file SQLite cannot read is renamed aside and a new
one started; the agent reports it and carries on.

Examples:
    >>> import tempfile, pathlib
    >>> spool = Spool(pathlib.Path(tempfile.mkdtemp()) / "spool.db")
    >>> seq = spool.next_seq()
    >>> spool.put(seq, b'{"seq": 0}', readings=1)
    >>> [(entry.seq, entry.payload) for entry in spool.after(0, 10)]
    [(0, b'{"seq": 0}')]
    >>> spool.close()
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
import zlib
from pathlib import Path

from edge.outbox import Entry

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id       INTEGER PRIMARY KEY,   -- storage order: publishing order
    seq      INTEGER NOT NULL,      -- the batch's sequence number, inside its payload too
    created  REAL NOT NULL,         -- unix time it was stored
    readings INTEGER NOT NULL,
    size     INTEGER NOT NULL,      -- stored (compressed) bytes
    payload  BLOB NOT NULL          -- zlib-compressed wire payload
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class Spool:
    """A bounded, ordered, crash-safe queue of encoded batches in one SQLite file.

    Args:
        path: The spool file (its directory must exist).
        max_bytes: Stored bytes at most; the oldest batches go first.
        max_age_s: Batches older than this are dropped (the data is no longer worth sending).
        ack_flush_s: How long acknowledged batches may wait before their deletion is committed.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int = 200 * 1024 * 1024,
        max_age_s: float = 7 * 24 * 3600,
        ack_flush_s: float = 5.0,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._ack_flush_s = ack_flush_s
        self._acked: list[int] = []
        self._acked_since = 0.0
        self.recovered: list[str] = []  # names of corrupt files set aside, for status
        self._db = self._open()

    # lifecycle ------------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except sqlite3.DatabaseError as exc:
            self._set_aside(exc)
            return self._connect()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            check = db.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                raise sqlite3.DatabaseError(f"integrity check failed: {check}")
            db.executescript(_SCHEMA)
            total, depth = db.execute(
                "SELECT coalesce(sum(size), 0), count(*) FROM batches"
            ).fetchone()
            self._bytes, self._depth = int(total), int(depth)
            self._seq = self._meta(db, "next_seq")
            self._dropped = self._meta(db, "dropped_readings")
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    @staticmethod
    def _meta(db: sqlite3.Connection, key: str) -> int:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def _set_aside(self, exc: Exception) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        log.error("spool %s is unreadable (%s); set aside as %s", self.path, exc, aside.name)
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{self.path}{suffix}")
            if source.exists():
                source.rename(f"{aside}{suffix}")
        self.recovered.append(aside.name)

    def _recover(self, exc: sqlite3.DatabaseError) -> None:
        """The file went bad while running: set it aside and continue with a new one."""
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        self._acked.clear()
        self._set_aside(exc)
        self._db = self._connect()

    def close(self) -> None:
        """Commit pending deletions and close the file."""
        self.flush()
        self._db.close()

    # the queue ------------------------------------------------------------------------------

    def next_seq(self) -> int:
        """The sequence number for the next batch; stored with it, so it never repeats."""
        return self._seq

    def put(self, seq: int, payload: bytes, *, readings: int) -> None:
        """Store a batch durably (one synced commit), then enforce the bounds."""
        packed = zlib.compress(payload, 6)
        try:
            with self._db:
                self._db.execute("BEGIN")
                self._db.execute(
                    "INSERT INTO batches (seq, created, readings, size, payload)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (seq, time.time(), readings, len(packed), packed),
                )
                self._db.execute(
                    "INSERT INTO meta VALUES ('next_seq', ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (seq + 1,),
                )
        except sqlite3.DatabaseError as exc:
            self._recover(exc)
            return self.put(seq, payload, readings=readings)
        self._seq = seq + 1
        self._bytes += len(packed)
        self._depth += 1
        self._enforce_bounds()
        return None

    def after(self, entry_id: int, limit: int) -> list[Entry]:
        """Up to ``limit`` stored batches with ids above ``entry_id``, oldest first."""
        try:
            rows = self._db.execute(
                "SELECT id, seq, readings, payload FROM batches WHERE id > ? ORDER BY id LIMIT ?",
                (entry_id, limit),
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            self._recover(exc)
            return []
        return [Entry(i, s, r, zlib.decompress(p)) for i, s, r, p in rows]

    def ack(self, entry_id: int) -> None:
        """The broker has the batch: forget it (committed with the next flush)."""
        if not self._acked:
            self._acked_since = time.monotonic()
        self._acked.append(entry_id)
        if time.monotonic() - self._acked_since >= self._ack_flush_s:
            self.flush()

    def flush(self) -> None:
        """Commit the deletion of acknowledged batches."""
        if not self._acked:
            return
        acked, self._acked = self._acked, []
        try:
            with self._db:
                self._db.execute("BEGIN")
                freed = 0
                for start in range(0, len(acked), 500):
                    chunk = acked[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    row = self._db.execute(
                        "SELECT coalesce(sum(size), 0), count(*) FROM batches"  # noqa: S608
                        f" WHERE id IN ({marks})",  # placeholders only
                        chunk,
                    ).fetchone()
                    self._db.execute(f"DELETE FROM batches WHERE id IN ({marks})", chunk)  # noqa: S608
                    freed += row[0]
                    self._depth -= row[1]
                self._bytes -= freed
        except sqlite3.DatabaseError as exc:
            self._recover(exc)

    def depth(self) -> int:
        """Batches stored and not yet acknowledged (or acknowledged but not yet deleted)."""
        return self._depth - len(self._acked)

    def dropped(self) -> int:
        """Readings dropped over the spool's life because it was full or they were too old."""
        return self._dropped

    def stored_bytes(self) -> int:
        """Bytes of stored payloads."""
        return self._bytes

    def _enforce_bounds(self) -> None:
        too_old = time.time() - self.max_age_s
        oldest = self._db.execute("SELECT min(created) FROM batches").fetchone()[0]
        if self._bytes <= self.max_bytes and (oldest is None or oldest >= too_old):
            return
        dropped, gone = 0, set()
        with self._db:
            self._db.execute("BEGIN")
            while True:
                rows = self._db.execute(
                    "SELECT id, size, readings, created FROM batches ORDER BY id LIMIT 64"
                ).fetchall()
                if not rows:
                    break
                for batch_id, size, readings, created in rows:
                    if self._bytes <= self.max_bytes and created >= too_old:
                        break
                    self._db.execute("DELETE FROM batches WHERE id = ?", (batch_id,))
                    self._bytes -= size
                    self._depth -= 1
                    dropped += readings
                    gone.add(batch_id)
                else:
                    continue
                break
            self._dropped += dropped
            self._db.execute(
                "INSERT INTO meta VALUES ('dropped_readings', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (self._dropped,),
            )
        self._acked = [i for i in self._acked if i not in gone]
        log.warning("spool full or stale: dropped the %d oldest readings", dropped)
