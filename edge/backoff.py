"""Exponential backoff with full jitter, for reconnecting to the broker and retrying writes."""

from __future__ import annotations

import random


class Backoff:
    """Delays that double from ``initial`` up to ``maximum``, each drawn uniformly below the cap.

    Full jitter spreads many workers' retries after a shared outage instead of synchronising them.

    Examples:
        >>> backoff = Backoff(initial=1.0, maximum=8.0, rng=random.Random(3))
        >>> [round(backoff.next_delay(), 2) for _ in range(5)]
        [0.24, 1.09, 1.48, 4.83, 5.01]
    """

    def __init__(
        self, *, initial: float = 0.5, maximum: float = 30.0, rng: random.Random | None = None
    ) -> None:
        if not 0 < initial <= maximum:
            raise ValueError("need 0 < initial <= maximum")
        self.initial = initial
        self.maximum = maximum
        self.attempts = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """The delay before the next attempt."""
        cap = min(self.maximum, self.initial * 2**self.attempts)
        self.attempts += 1
        return self._rng.uniform(0, cap)

    def reset(self) -> None:
        """Start again from ``initial`` after a success."""
        self.attempts = 0
