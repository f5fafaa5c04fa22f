"""Partition leases on the real database: shares, claims, handover, and the fence that stops a
worker whose lease lapsed from overwriting its successor's checkpoint."""

from __future__ import annotations

import asyncio
import time

import psycopg
from psycopg_pool import AsyncConnectionPool

from processing.feed import PARTITIONS
from processing.owners import Fence, Ownership, share
from tests.services.handles import Database

LEASE_S = 1.0


def test_the_live_workers_share_every_partition_once() -> None:
    for live in (["a"], ["a", "b"], ["a", "b", "c"], [f"w{i}" for i in range(20)]):
        shares = [share(live, worker) for worker in live]
        assert sorted(p for s in shares for p in s) == list(range(PARTITIONS))
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert share(["a", "b"], "c") == set()  # not live: nothing


async def wait_for_turn(ownership: Ownership, held: dict[int, int], wanted: int) -> dict[int, int]:
    """Turns until ``wanted`` partitions are held (bounded); the partitions and epochs held."""
    deadline = time.monotonic() + 20
    while True:
        turn = await ownership.turn(held)
        held = {p: lease.epoch for p, lease in turn.held.items() if p not in turn.hand_over}
        if len(held) == wanted or time.monotonic() > deadline:
            return held
        await asyncio.sleep(LEASE_S / 4)


async def test_a_lapsed_lease_passes_on_and_its_old_owner_cannot_checkpoint(
    database: Database,
) -> None:
    async with AsyncConnectionPool(database.dsn, open=False) as pool:
        first = Ownership(pool, "worker-a", lease_s=LEASE_S)
        second = Ownership(pool, "worker-b", lease_s=LEASE_S)
        turn = await first.turn({})
        assert sorted(turn.held) == list(range(PARTITIONS))
        assert not turn.lost
        old = {p: lease.epoch for p, lease in turn.held.items()}

        # The second worker appears: the first hands over half, the second claims them.
        turn = await second.turn({})
        assert turn.live == ["worker-a", "worker-b"]
        assert not turn.held  # all still held by a
        turn = await first.turn(old)
        assert turn.hand_over == sorted(share(turn.live, "worker-b"))
        async with pool.connection() as conn, conn.cursor() as cursor:
            for partition in turn.hand_over:
                fence = Fence(partition, "worker-a", old[partition], read_to=0, release=True)
                assert await fence.record(cursor)
        held_b = await wait_for_turn(second, {}, PARTITIONS // 2)
        assert sorted(held_b) == sorted(share(turn.live, "worker-b"))

        # The first stops renewing (a long pause): once its heartbeat and leases lapse, the
        # second takes everything, and the first's late checkpoint is refused.
        held_b = await wait_for_turn(second, held_b, PARTITIONS)
        assert len(held_b) == PARTITIONS
        mine = sorted(share(["worker-a", "worker-b"], "worker-a"))
        async with pool.connection() as conn, conn.cursor() as cursor:
            stale = Fence(mine[0], "worker-a", old[mine[0]], read_to=999)
            assert not await stale.record(cursor)
        turn = await first.turn({p: old[p] for p in mine})
        assert turn.lost == mine
        assert not turn.gained
    with psycopg.connect(database.dsn) as check:
        rows = check.execute(
            "SELECT owner, count(*), max(read_to::text::bigint) FROM detection_partitions"
            " GROUP BY owner"
        ).fetchall()
    assert rows == [("worker-b", PARTITIONS, 0)]
