"""The detection stage: every detector over every committed batch, producing alert transitions.

Ingest calls :meth:`DetectionStage.process` inline with each committed batch (the kernels release
the GIL). The stage maps stream ids to state rows, runs the fused kernel, and keeps the
open/resolve transitions it produced until :meth:`drain` hands them to the alert store. Checks
that depend on wall time rather than on readings (missing data, disagreeing neighbours) run from
:meth:`sweep`.

Examples:
    >>> import numpy as np
    >>> from processing.hook import ReadingColumns
    >>> stage = DetectionStage(DetectionSettings(warmup_s=0))  # no day of learning, for brevity
    >>> stage.describe([StreamInfo(7, "aq-1", "aq", "pm2_5", "µg/m³", "air", "north")])
    >>> t0 = 1_795_000_000_000_000
    >>> ts = t0 + np.arange(200, dtype=np.int64) * 60_000_000
    >>> values = 10.0 + np.sin(np.arange(200.0))
    >>> values[150] = 90.0
    >>> stage.process(ReadingColumns(np.full(200, 7, np.int32), ts, values))
    >>> [(e.kind.slug, e.opened) for e in stage.drain()]
    [('spike', True), ('spike', False)]
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

import numpy as np
from numpy.typing import NDArray

from processing import aqi
from processing import layout as k
from processing.config import DetectionSettings
from processing.fused import stage_kernel
from processing.hook import ReadingColumns
from processing.kinds import MIN_DURATION_S, QUIET_S, Kind
from processing.state import StreamState
from processing.streams import StreamInfo, fill_params, neighbour_groups
from processing.sweeps import missing_kernel, neighbour_kernel
from processing.zones import offset_table

_EVENT_CAPACITY = 4096


@dataclass(frozen=True, slots=True)
class Event:
    """An alert condition opened or resolved on one stream.

    Attributes:
        stream_id: The stream.
        kind: What kind of anomaly.
        opened: True when it opened, False when it resolved.
        at: Acquisition time of the reading that decided it (sweep time for sweeps).
        score: Peak score in [0, 1] while it lasted.
        value: The value that decided it (gap seconds for missing data, mean for air quality).
        expected: What was expected (kind-specific; see :mod:`processing.explain`).
        sigma: The spread or limit it was judged against (kind-specific).
    """

    stream_id: int
    kind: Kind
    opened: bool
    at: datetime
    score: float
    value: float
    expected: float
    sigma: float


class DetectionStage:
    """Per-stream detectors and alert conditions for a whole fleet.

    Args:
        settings: Thresholds and time constants.
        scheme: Air-quality index for alerts (see :mod:`processing.aqi`).
        capacity: Streams to allocate for up front (grows as needed).
        zone: The city's time zone (IANA name or tzinfo), whose local hours and weekdays the
            seasonal profile follows through changes of the clocks; None for the fixed
            ``settings.utc_offset_s``.
    """

    def __init__(
        self,
        settings: DetectionSettings | None = None,
        *,
        scheme: str = aqi.DEFAULT_SCHEME,
        capacity: int = 1024,
        zone: str | tzinfo | None = None,
    ) -> None:
        self.settings = settings or DetectionSettings()
        self._zone = offset_table(self.settings.utc_offset_s if zone is None else zone)
        self.scheme = scheme
        self.state = StreamState(capacity)
        self._cfg = self.settings.as_array()
        _, self._bands = aqi.band_table(scheme)
        self._rounds = aqi.scheme(scheme).rounds
        self._min_s = np.array([MIN_DURATION_S[kind] for kind in Kind], dtype=np.float64)
        self._quiet_s = np.array([QUIET_S[kind] for kind in Kind], dtype=np.float64)
        self._row_of = np.full(1024, -1, dtype=np.int64)
        self._stream_of: list[int] = []
        self.infos: dict[int, StreamInfo] = {}
        self._members = np.zeros(0, dtype=np.int64)
        self._starts = np.zeros(1, dtype=np.int64)
        self._events: list[NDArray[np.float64]] = []
        self._dirty = np.zeros(capacity, dtype=bool)
        self._events_buffer = np.zeros((_EVENT_CAPACITY, k.N_EVENT))
        # The hook runs on ingest's thread; sweeps and drains come from the detection task.
        self._lock = threading.Lock()
        self.readings = 0

    # -- streams -------------------------------------------------------------------------

    @property
    def streams(self) -> int:
        """Streams with a state row."""
        return len(self._stream_of)

    def known(self, stream_id: int) -> bool:
        """Whether ``stream_id`` has a state row."""
        return 0 <= stream_id < self._row_of.size and self._row_of[stream_id] >= 0

    def stream_ids(self) -> list[int]:
        """Stream ids in row order."""
        return list(self._stream_of)

    def describe(self, infos: Iterable[StreamInfo]) -> None:
        """Tell the stage what streams are (metric, device, site); safe to repeat."""
        infos = list(infos)
        if not infos:
            return
        with self._lock:
            for info in infos:
                self.infos[info.stream_id] = info
            self._rows(np.array([i.stream_id for i in infos], dtype=np.int64))
            # Leads and partners are resolved per device, so bring in each device's known streams.
            devices = {i.device for i in infos}
            related = [i for i in self.infos.values() if i.device in devices]
            mapping = {i.stream_id: int(self._row_of[i.stream_id]) for i in related}
            fill_params(self.state.params, mapping, related, scheme=self.scheme)
            everyone = list(self.infos.values())
            rows = {i.stream_id: int(self._row_of[i.stream_id]) for i in everyone}
            self._members, self._starts = neighbour_groups(everyone, rows)

    def _rows(self, stream_ids: NDArray[np.int64]) -> NDArray[np.int64]:
        if stream_ids.size and int(stream_ids.min()) < 0:
            raise ValueError("stream ids are non-negative")
        top = int(stream_ids.max()) + 1 if stream_ids.size else 0
        if top > self._row_of.size:
            grown = np.full(max(top, 2 * self._row_of.size), -1, dtype=np.int64)
            grown[: self._row_of.size] = self._row_of
            self._row_of = grown
        rows = self._row_of[stream_ids]
        missing = rows < 0
        if missing.any():
            for stream_id in np.unique(stream_ids[missing]):
                self._row_of[stream_id] = len(self._stream_of)
                self._stream_of.append(int(stream_id))
            self.state.ensure(len(self._stream_of))
            if self._dirty.size < self.state.capacity:
                self._dirty = np.resize(self._dirty, self.state.capacity)
                self._dirty[len(self._stream_of) :] = False
            rows = self._row_of[stream_ids]
        return rows

    # -- the hook ------------------------------------------------------------------------

    def __call__(self, batch: ReadingColumns) -> None:
        """The ingest hook: same as :meth:`process`."""
        self.process(batch)

    def process(self, batch: ReadingColumns, out_score: NDArray[np.float64] | None = None) -> None:
        """Score a committed batch, learn from it, and keep the alert transitions it caused.

        Args:
            batch: The readings, in arrival order.
            out_score: Optional array of ``len(batch)`` receiving each reading's score in [0, 1].
        """
        if len(batch) == 0:
            return
        scores = out_score if out_score is not None else np.empty(len(batch))
        with self._lock:
            rows = self._rows(batch.stream_ids.astype(np.int64, copy=False))
            ts_us = np.ascontiguousarray(batch.ts_us, dtype=np.int64)
            values = np.ascontiguousarray(batch.values, dtype=np.float64)
            state = self.state
            start = 0
            while start < rows.size:
                start, count = stage_kernel(
                    rows, ts_us, values, start, state.core, state.slots, state.hours,
                    state.conds, state.params, self._cfg, self._zone, self._bands, self._rounds,
                    self._min_s, self._quiet_s, scores, self._events_buffer,
                )  # fmt: skip
                if count:
                    self._events.append(self._events_buffer[:count].copy())
            self._dirty[rows] = True
            self.readings += rows.size

    def sweep(self, now: datetime, *, since: datetime) -> None:
        """Run the time-driven checks: silent sensors and neighbours that disagree.

        Args:
            now: The current time (simulated time offline).
            since: When watching began; silence before it is not held against a sensor.
        """
        now_us = now.timestamp() * 1e6
        with self._lock:
            state = self.state
            used = self.streams
            if used == 0:
                return
            buffer = np.zeros((max(used, 16), k.N_EVENT))
            count = missing_kernel(
                state.core[:used], state.conds[:used], state.params[:used], self._cfg,
                now_us, since.timestamp() * 1e6, buffer,
            )  # fmt: skip
            if count:
                self._events.append(buffer[:count].copy())
            if self._members.size:
                count = neighbour_kernel(
                    state.core, state.conds, state.params, self._cfg, now_us, self._members,
                    self._starts, self._min_s[Kind.NEIGHBOUR], self._quiet_s[Kind.NEIGHBOUR],
                    buffer,
                )  # fmt: skip
                if count:
                    self._events.append(buffer[:count].copy())
                self._dirty[self._members] = True
            self._dirty[:used] |= state.conds[:used, k.K_MISSING, k.D_ACTIVE] > 0

    def drain(self) -> list[Event]:
        """The transitions produced since the last drain, oldest first."""
        with self._lock:
            chunks, self._events = self._events, []
            stream_of = list(self._stream_of)
        found: list[Event] = []
        for chunk in chunks:
            for row in chunk:
                found.append(
                    Event(
                        stream_of[int(row[k.E_ROW])],
                        Kind(int(row[k.E_KIND])),
                        bool(row[k.E_OPEN]),
                        datetime.fromtimestamp(row[k.E_TS] / 1e6, UTC),
                        float(row[k.E_SCORE]),
                        float(row[k.E_VALUE]),
                        float(row[k.E_EXPECTED]),
                        float(row[k.E_SIGMA]),
                    )
                )
        return found

    # -- conditions and checkpoints ------------------------------------------------------

    def active(self, stream_id: int, kind: Kind) -> bool:
        """Whether the condition ``kind`` is currently open on ``stream_id``."""
        if not self.known(stream_id):
            return False
        return bool(self.state.conds[self._row_of[stream_id], kind, k.D_ACTIVE] > 0)

    def take_dirty(self) -> list[tuple[int, bytes]]:
        """Serialised state of every stream changed since the last call, for a checkpoint."""
        with self._lock:
            rows = np.flatnonzero(self._dirty[: self.streams])
            self._dirty[:] = False
            return [(self._stream_of[r], self.state.row_bytes(int(r))) for r in rows]

    def mark_dirty(self, stream_ids: Iterable[int], dirty: bool = True) -> None:
        """Count these streams as changed since the last checkpoint (or, ``dirty=False``, not)."""
        with self._lock:
            rows = [int(self._row_of[s]) for s in stream_ids if self.known(s)]
            self._dirty[rows] = dirty

    def restore(self, saved: Sequence[tuple[int, bytes]]) -> int:
        """Load checkpointed rows; returns how many fitted this version's layout."""
        loaded = 0
        with self._lock:
            for stream_id, blob in saved:
                row = int(self._rows(np.array([stream_id], dtype=np.int64))[0])
                loaded += self.state.load_row(row, blob)
        return loaded

    def snapshot(self, stream_id: int) -> dict[str, float]:
        """A few learned quantities of one stream, for the dashboard and for tests."""
        row = self._row_of[stream_id]
        core = self.state.core[row]
        return {
            "readings": float(core[k.C_N]),
            "expected": float(core[k.C_EXPECTED]),
            "sigma": float(core[k.C_SIGMA]),
            "cadence_s": float(core[k.C_CADENCE]),
            "score": float(core[k.C_SCORE]),
            "fill_rate_per_h": float(core[k.C_FILL_RATE]),
            "time_to_full_h": float(core[k.C_TTF_H]),
            "aq_mean": float(core[k.C_AQ_MEAN]),
            "aq_band": float(core[k.C_AQ_BAND]),
        }
