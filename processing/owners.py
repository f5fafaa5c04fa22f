"""Which live worker owns which detection partition: heartbeats, leases, and fenced checkpoints.

Every worker renews a heartbeat in ``detection_workers``; the live ones, sorted by name, share the
partitions round-robin (partition ``p`` goes to ``live[p % len(live)]``), so each computes the
same share without talking to the others. A worker claims a partition of its share once it is
free (released, or its lease ran out), renews the leases it holds, and hands over a partition that
is no longer its share: it checkpoints the partition's detector state and releases it in one
transaction. The checkpoint is fenced by the partition's ``epoch``, which changes with every new
owner: a worker whose lease lapsed (a long pause, a lost database) cannot overwrite its
successor's state, and learns from the refusal that the partition is gone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from psycopg import AsyncCursor

from processing.alerts import Pool
from processing.feed import PARTITIONS

_HEARTBEAT = (
    "INSERT INTO detection_workers (worker, alive_until)"
    " VALUES (%s, now() + make_interval(secs => %s))"
    " ON CONFLICT (worker) DO UPDATE SET alive_until = excluded.alive_until"
)
_LIVE = "SELECT worker FROM detection_workers WHERE alive_until > now() ORDER BY worker"
_FORGET_DEAD = "DELETE FROM detection_workers WHERE alive_until < now() - interval '1 day'"
_RENEW = (
    "UPDATE detection_partitions SET lease_until = now() + make_interval(secs => %s)"
    " WHERE owner = %s RETURNING partition, epoch, read_to::text"
)
_CLAIM = (
    "UPDATE detection_partitions"
    " SET owner = %s, epoch = epoch + 1, lease_until = now() + make_interval(secs => %s)"
    " WHERE partition = ANY(%s) AND (owner IS NULL OR lease_until < now())"
    " RETURNING partition, epoch, read_to::text"
)
_RECORD = (
    "UPDATE detection_partitions SET read_to = %s::text::xid8,"
    " owner = CASE WHEN %s THEN NULL ELSE owner END,"
    " lease_until = CASE WHEN %s THEN '-infinity' ELSE lease_until END"
    " WHERE partition = %s AND owner = %s AND epoch = %s"
)
_LEAVE = "DELETE FROM detection_workers WHERE worker = %s"


@dataclass(frozen=True, slots=True)
class Lease:
    """A partition held by this worker: ``epoch`` names this tenure, ``read_to`` its checkpoint."""

    partition: int
    epoch: int
    read_to: int


@dataclass(slots=True)
class Turn:
    """What one round of heartbeat, renewal and claims decided.

    Attributes:
        held: Every partition this worker holds now.
        gained: Held now and not before (or in another tenure): start from its checkpoint.
        lost: Held before and not now: someone else has it; drop its state unsaved.
        hand_over: Held, but another live worker's share now: checkpoint and release it.
        valid_until: ``time.monotonic()`` before which the leases renewed here certainly hold.
        live: The live workers, this one included.
    """

    held: dict[int, Lease] = field(default_factory=dict)
    gained: list[Lease] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)
    hand_over: list[int] = field(default_factory=list)
    valid_until: float = 0.0
    live: list[str] = field(default_factory=list)


def share(live: list[str], worker: str) -> set[int]:
    """The partitions ``worker`` should own among the ``live`` workers (sorted by name).

    Examples:
        >>> sorted(share(["a", "b"], "b"))[:3], len(share(["a", "b", "c"], "a"))
        ([1, 3, 5], 6)
    """
    if worker not in live:
        return set()
    return {p for p in range(PARTITIONS) if live[p % len(live)] == worker}


class Ownership:
    """This worker's side of the partition leases.

    Args:
        pool: The telemetry database.
        worker: This worker's name, unique among live workers (host, process and a nonce).
        lease_s: How long a lease and a heartbeat last unless renewed; a dead worker's
            partitions move after at most this long. Renew at least every third of it.
    """

    def __init__(self, pool: Pool, worker: str, *, lease_s: float = 10.0) -> None:
        self._pool = pool
        self.worker = worker
        self.lease_s = lease_s

    async def turn(self, held: dict[int, int]) -> Turn:
        """Heartbeat, renew what is held, claim what is free of this worker's share.

        Args:
            held: Partition: epoch, for what the caller holds now.
        """
        started = time.monotonic()
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(_HEARTBEAT, (self.worker, self.lease_s))
            live = [str(row[0]) for row in await (await conn.execute(_LIVE)).fetchall()]
            mine = {
                int(str(p)): Lease(int(str(p)), int(str(e)), int(str(r)))
                for p, e, r in await (
                    await conn.execute(_RENEW, (self.lease_s, self.worker))
                ).fetchall()
            }
            wanted = sorted(share(live, self.worker) - set(mine))
            claimed: list[Lease] = []
            if wanted:
                cursor = await conn.execute(_CLAIM, (self.worker, self.lease_s, wanted))
                claimed = [
                    Lease(int(str(p)), int(str(e)), int(str(r)))
                    for p, e, r in await cursor.fetchall()
                ]
            await conn.execute(_FORGET_DEAD)
        turn = Turn(valid_until=started + self.lease_s, live=live)
        turn.held = {**mine, **{lease.partition: lease for lease in claimed}}
        turn.gained = [
            lease for p, lease in sorted(turn.held.items()) if held.get(p) != lease.epoch
        ]
        turn.lost = sorted(
            p for p, epoch in held.items() if p not in mine or mine[p].epoch != epoch
        )
        turn.hand_over = sorted(set(mine) - share(live, self.worker))
        return turn

    async def leave(self) -> None:
        """Stop counting as live, so the others take over this worker's share at once."""
        async with self._pool.connection() as conn:
            await conn.execute(_LEAVE, (self.worker,))


@dataclass(frozen=True, slots=True)
class Fence:
    """A checkpoint's claim on a partition: saved only while the tenure ``epoch`` lasts."""

    partition: int
    worker: str
    epoch: int
    read_to: int
    release: bool = False

    async def record(self, cursor: AsyncCursor[tuple[object, ...]]) -> bool:
        """Record how far the saved state reaches (and release); False if the tenure is over."""
        await cursor.execute(
            _RECORD,
            (
                str(self.read_to),
                self.release,
                self.release,
                self.partition,
                self.worker,
                self.epoch,
            ),
        )
        return cursor.rowcount == 1
