"""Largest-triangle-three-buckets: a long series thinned for a chart, keeping its shape.

A chart a thousand pixels wide gains nothing from a million points, but plain striding drops
exactly the spikes people look for. LTTB keeps the first and last points and, from each bucket
in between, the point making the largest triangle with its neighbours' choices.

Examples:
    >>> import numpy as np
    >>> x = np.arange(100.0)
    >>> y = np.zeros(100)
    >>> y[37] = 50.0
    >>> keep = lttb(x, y, 10)
    >>> len(keep), int(keep[0]), int(keep[-1]), 37 in keep
    (10, 0, 99, True)
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from processing.config import kernel


def lttb(x: NDArray[np.float64], y: NDArray[np.float64], points: int) -> NDArray[np.int64]:
    """Indices of at most ``points`` points of (``x``, ``y``) to draw; ``x`` ascending.

    Raises:
        ValueError: Lengths differ, or fewer than 3 points are asked for.
    """
    x = np.ascontiguousarray(x, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("x and y must be one-dimensional and of equal length")
    if points < 3:
        raise ValueError("at least 3 points are needed (the first, the last, one between)")
    if x.size <= points:
        return np.arange(x.size, dtype=np.int64)
    return _lttb(x, y, points)


@kernel
def _lttb(x: np.ndarray, y: np.ndarray, points: int) -> np.ndarray:
    n = x.shape[0]
    keep = np.empty(points, dtype=np.int64)
    keep[0] = 0
    width = (n - 2) / (points - 2)
    chosen = 0
    for b in range(points - 2):
        lo = int(b * width) + 1
        hi = int((b + 1) * width) + 1
        # The next bucket's average is the third corner of every candidate triangle.
        nlo = hi
        nhi = min(int((b + 2) * width) + 1, n)
        if b == points - 3:
            nlo, nhi = n - 1, n
        ax = 0.0
        ay = 0.0
        for j in range(nlo, nhi):
            ax += x[j]
            ay += y[j]
        ax /= nhi - nlo
        ay /= nhi - nlo
        px = x[chosen]
        py = y[chosen]
        best = -1.0
        best_j = lo
        for j in range(lo, hi):
            area = abs((px - ax) * (y[j] - py) - (px - x[j]) * (ay - py))
            if area > best:
                best = area
                best_j = j
        keep[b + 1] = best_j
        chosen = best_j
    keep[points - 1] = n - 1
    return keep
