"""Per-stream detector state: contiguous arrays that grow, and bytes for checkpoints.

One row per sensor stream in each array (see ``processing.layout`` for the fields). A row
serialises to a fixed number of bytes tagged with :data:`STATE_VERSION`, so a checkpoint written
by a different layout is ignored rather than misread.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import NDArray

from processing import layout as k

STATE_VERSION: Final = 6
_WIDTHS: Final = (k.N_CORE, k.N_SLOTS * 3, 24 * 2, k.N_KINDS * k.N_COND)
ROW_FLOATS: Final = sum(_WIDTHS)
ROW_BYTES: Final = ROW_FLOATS * 8

Floats = NDArray[np.float64]


def blank_params(rows: int) -> Floats:
    """Parameters of streams not yet described: any finite value plausible, no domain rules."""
    params = np.zeros((rows, k.N_PARAMS))
    params[:, k.P_LO] = -np.inf
    params[:, k.P_HI] = np.inf
    params[:, k.P_PARTNER] = -1
    params[:, k.P_GROUP] = -1
    params[:, k.P_AQ_TABLE] = -1
    params[:, k.P_FLOOR] = 1e-9
    return params


class StreamState:
    """The detectors' memory for ``capacity`` streams, growing by doubling.

    Examples:
        >>> state = StreamState(2)
        >>> state.ensure(5)
        >>> state.capacity >= 5, state.core.shape[1] == k.N_CORE
        (True, True)
        >>> blob = state.row_bytes(1)
        >>> state.load_row(3, blob)
        True
    """

    def __init__(self, capacity: int = 1024) -> None:
        capacity = max(capacity, 1)
        self.core: Floats = np.zeros((capacity, k.N_CORE))
        self.slots: Floats = np.zeros((capacity, k.N_SLOTS, 3))
        self.hours: Floats = np.zeros((capacity, 24, 2))
        self.conds: Floats = np.zeros((capacity, k.N_KINDS, k.N_COND))
        self.params: Floats = blank_params(capacity)
        self._reset_hours(0, capacity)

    @property
    def capacity(self) -> int:
        """Rows allocated."""
        return int(self.core.shape[0])

    def ensure(self, rows: int) -> None:
        """Make room for at least ``rows`` rows, keeping what is there."""
        if rows <= self.capacity:
            return
        new = max(rows, 2 * self.capacity)
        old = self.capacity
        self.core = _grown(self.core, new)
        self.slots = _grown(self.slots, new)
        self.hours = _grown(self.hours, new)
        self.conds = _grown(self.conds, new)
        params = blank_params(new)
        params[:old] = self.params
        self.params = params
        self._reset_hours(old, new)

    def row_bytes(self, row: int) -> bytes:
        """The learned state of ``row`` as bytes (parameters are not state: they are looked up)."""
        parts = (self.core[row], self.slots[row], self.hours[row], self.conds[row])
        return bytes([STATE_VERSION]) + np.concatenate([p.ravel() for p in parts]).tobytes()

    def load_row(self, row: int, blob: bytes) -> bool:
        """Restore ``row`` from :meth:`row_bytes`; False, changing nothing, if it does not fit."""
        if len(blob) != ROW_BYTES + 1 or blob[0] != STATE_VERSION:
            return False
        flat = np.frombuffer(blob, dtype=np.float64, offset=1)
        offset = 0
        for target, width in zip(
            (self.core, self.slots, self.hours, self.conds), _WIDTHS, strict=True
        ):
            target[row] = flat[offset : offset + width].reshape(target.shape[1:])
            offset += width
        return True

    def _reset_hours(self, start: int, stop: int) -> None:
        # No air-quality hour seen yet: the first reading starts the ring.
        self.core[start:stop, k.C_HOUR] = -1e18


def _grown(array: Floats, rows: int) -> Floats:
    grown = np.zeros((rows, *array.shape[1:]))
    grown[: array.shape[0]] = array
    return grown


def saved_core_value(blob: bytes, column: int) -> float | None:
    """One learned quantity (a ``C_*`` column) from a checkpoint made by ``row_bytes``.

    None when the checkpoint is from another layout version.
    """
    if len(blob) != ROW_BYTES + 1 or blob[0] != STATE_VERSION:
        return None
    return float(np.frombuffer(blob, dtype=np.float64, offset=1, count=column + 1)[column])
