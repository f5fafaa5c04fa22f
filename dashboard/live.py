"""One shared picture of the city, refreshed by one timer, and what changed since a version.

Every open overview asks for updates; without this, each would query 10,000 devices and
redraw them all on every tick. Here one process-wide :class:`CityState` queries at most once
per refresh interval whoever asks, keeps the last few snapshots, and answers each page with
only the devices whose status changed since the version it already shows.

Examples:
    >>> import numpy as np
    >>> old = np.array([0, 0, 1], dtype=np.int8)
    >>> changed_indices(old, np.array([0, 2, 1], dtype=np.int8)).tolist()
    [1]
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

import numpy as np
import pandas as pd
from dash import Patch
from numpy.typing import NDArray
from psycopg_pool import ConnectionPool, PoolClosed

from dashboard import figures, queries
from dashboard.views import STATUS_ORDER, with_status
from edge.metrics import FAMILIES

log = logging.getLogger(__name__)

FEED_LENGTH: Final = 8
FORECAST_FROM_PERCENT: Final = 50.0  # bins emptier than this are not "the next ones"
KEPT: Final = 32  # snapshots kept for diffs: a page further behind gets everything again
_CODES: Final = {status: code for code, status in enumerate(STATUS_ORDER)}


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The fleet at one moment.

    ``layout`` changes when the set of devices does (a full redraw); ``version`` on every
    refresh. ``devices`` is in a fixed order, the one the map's points follow.
    """

    layout: int
    version: int
    taken_at: datetime
    devices: pd.DataFrame  # device_id, name, site, family, lat, lon, status
    status: NDArray[np.int8]  # STATUS_ORDER index per device
    totals: dict[str, int]
    trace: NDArray[np.int16]  # the map trace each device is drawn in (-1: no position)
    point: NDArray[np.int32]  # its point within that trace
    districts: pd.DataFrame  # per site: devices, live, open alerts, congestion, bins, PM2.5
    feed: pd.DataFrame  # the newest open alerts
    data_as_of: datetime | None = None  # read from a standby: its last replayed commit


def changed_indices(before: NDArray[np.int8], after: NDArray[np.int8]) -> NDArray[np.intp]:
    """Positions whose status differs."""
    return np.flatnonzero(before != after)


def next_full_bins(pool: ConnectionPool) -> pd.DataFrame:
    """Per district, the bin the detectors expect to be full first: site, next_bin, next_h."""
    from processing import layout as k  # noqa: PLC0415  # the checkpoint's column numbers
    from processing.state import saved_core_value  # noqa: PLC0415

    bins = queries.filling_bins(FORECAST_FROM_PERCENT, db=pool)
    rows = []
    for row in bins.to_dict("records"):
        hours = saved_core_value(bytes(row["state"]), k.C_TTF_H)
        if hours is not None and np.isfinite(hours):
            rows.append({"site": row["site"], "next_bin": row["device_id"], "next_h": hours})
    if not rows:
        # Typed as the rows would be: empty lists make float columns, which pandas refuses to
        # join to the districts' text sites (a fresh install's snapshot failed every refresh).
        return pd.DataFrame(
            {
                "site": pd.Series(dtype=object),
                "next_bin": pd.Series(dtype=object),
                "next_h": pd.Series(dtype=float),
            }
        )
    frame = pd.DataFrame(rows).sort_values("next_h")
    return frame.groupby("site", as_index=False).first()


def map_positions(frame: pd.DataFrame) -> tuple[NDArray[np.int16], NDArray[np.int32]]:
    """Per device: its map trace (by family, in ``FAMILIES`` order) and point in that trace."""
    trace = np.full(len(frame), -1, dtype=np.int16)
    point = np.full(len(frame), -1, dtype=np.int32)
    located = frame["lat"].notna().to_numpy() & frame["lon"].notna().to_numpy()
    families = frame["family"].to_numpy()
    for index, family in enumerate(FAMILIES):
        members = np.flatnonzero(located & (families == family))
        trace[members] = index
        point[members] = np.arange(members.size)
    return trace, point


class CityState:
    """The process's shared snapshot, refreshed by one timer every ``interval_s`` seconds."""

    def __init__(self, pool: ConnectionPool, stale_after: timedelta, interval_s: float) -> None:
        self._pool = pool
        self._stale_after = stale_after
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._history: OrderedDict[int, Snapshot] = OrderedDict()
        self._current: Snapshot | None = None
        self._stopped = threading.Event()
        self._device_key: tuple[str, ...] = ()
        self._layout = 0

    def start(self) -> None:
        """Refresh in the background every interval: pages only ever read a snapshot."""
        threading.Thread(target=self._run, name="city-state", daemon=True).start()

    def stop(self) -> None:
        """End the background refresh (before the pool closes)."""
        self._stopped.set()

    def _run(self) -> None:
        while not self._stopped.is_set():
            started = time.monotonic()
            try:
                self.current(refresh=True)
            except PoolClosed:
                return
            except Exception:  # a database blip must not end the timer
                log.warning("could not refresh the city snapshot", exc_info=True)
            self._stopped.wait(max(self._interval_s - (time.monotonic() - started), 0.1))

    def current(self, *, refresh: bool = False) -> Snapshot:
        """The newest snapshot (taken now if there is none yet, or ``refresh``)."""
        with self._lock:
            if self._current is None or refresh:
                self._current = self._take()
            return self._current

    def at(self, version: int) -> Snapshot | None:
        """An earlier snapshot, if still kept."""
        with self._lock:
            return self._history.get(version)

    def _take(self) -> Snapshot:
        now = datetime.now(UTC)
        frame = queries.device_states(db=self._pool)
        frame = with_status(frame.reset_index(drop=True), now, self._stale_after)
        key = tuple(frame["device_id"])
        if key != self._device_key:
            self._device_key = key
            self._layout += 1
            self._history.clear()  # positions changed: old versions cannot be diffed
        version = (self._current.version + 1) if self._current else 1
        status: NDArray[np.int8] = frame["status"].map(_CODES).to_numpy(dtype=np.int8)  # type: ignore[assignment]
        totals = queries.totals(now - self._stale_after, db=self._pool)
        trace, point = map_positions(frame)
        districts = queries.districts(db=self._pool)
        live = frame.assign(live=frame["status"] == STATUS_ORDER[0]).groupby("site")["live"].sum()
        districts["live"] = districts["site"].map(live).fillna(0).astype(int)
        districts = districts.merge(next_full_bins(self._pool), on="site", how="left")
        feed = queries.newest_alerts(FEED_LENGTH, db=self._pool)
        as_of = queries.data_as_of(db=self._pool)
        snapshot = Snapshot(
            self._layout, version, now, frame, status, totals, trace, point, districts, feed, as_of
        )
        self._history[version] = snapshot
        while len(self._history) > KEPT:
            self._history.popitem(last=False)
        return snapshot


def map_patch(before: Snapshot, after: Snapshot) -> Patch:
    """The changed devices' colour, symbol and text, as a patch of the map."""
    patch = Patch()
    for index in changed_indices(before.status, after.status):
        trace, point = int(after.trace[index]), int(after.point[index])
        if trace < 0:
            continue  # not on the map
        row = after.devices.iloc[index]
        status = str(row["status"])
        marker = patch["data"][trace]["marker"]
        marker["color"][point] = figures.STATUS_COLOUR[status]
        marker["symbol"][point] = figures.marker_symbol(str(row["family"]), status)
        patch["data"][trace]["text"][point] = figures.hover(row["name"], row["device_id"], status)
    return patch
