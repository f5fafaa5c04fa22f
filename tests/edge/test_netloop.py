"""The shared network loop's own mechanics (its sessions are tested through the publisher)."""

from __future__ import annotations

import threading

from edge.netloop import NetworkLoop


def test_waking_a_busy_loop_never_blocks_the_caller() -> None:
    # paho asks for a write wake-up while holding its own mutex; if the wake-up pair were full
    # and the send blocked, the loop thread (waiting for that mutex) could never empty it.
    loop = NetworkLoop()
    done = threading.Event()

    def wake_many() -> None:
        for _ in range(200_000):  # far more bytes than a socket buffer holds
            loop._wake()
        done.set()

    caller = threading.Thread(target=wake_many, daemon=True)
    caller.start()
    try:
        assert done.wait(60), "a wake-up blocked on a full socket pair"
    finally:
        loop.stop()
