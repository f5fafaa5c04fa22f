"""The fleet simulator: faults with ground truth, and a thousand devices in one process."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge.faults import Fault, FaultKind, FaultySensor, plan_faults
from edge.fleet import FAMILY_SENSOR, District, Fleet, plan_fleet, plan_fleet_faults
from edge.publisher import BrokerSettings
from edge.sensors.simulated import SimulatedAirQuality, SimulatedTraffic, SimulatedWasteBin
from tests.services.handles import BrokerAddress

START = datetime(2026, 11, 23, 8, tzinfo=UTC)


def series(sensor: FaultySensor, metric: str, minutes: int) -> list[float | None]:
    values: list[float | None] = []
    for minute in range(minutes):
        readings = {r.metric: r.value for r in sensor.read(START + timedelta(minutes=minute))}
        values.append(readings.get(metric))
    return values


def fault(
    kind: FaultKind, metric: str, span: tuple[int, int], magnitude: float = 0.0, sensor: str = "aq"
) -> Fault:
    start, end = (START + timedelta(minutes=m) for m in span)
    return Fault("d", sensor, metric, kind, start, end, magnitude)


def test_each_fault_changes_what_the_sensor_reports() -> None:
    healthy = series(FaultySensor(SimulatedAirQuality("aq", seed=1), []), "pm2_5", 30)
    spiked = series(
        FaultySensor(SimulatedAirQuality("aq", seed=1), [fault("spike", "pm2_5", (10, 10), 8)]),
        "pm2_5",
        30,
    )
    assert spiked[10] == pytest.approx(healthy[10] * 8, rel=1e-3)  # type: ignore[operator]
    assert spiked[:10] == healthy[:10]
    assert spiked[11:] == healthy[11:]

    stuck = series(
        FaultySensor(SimulatedAirQuality("aq", seed=1), [fault("stuck", "pm2_5", (5, 15))]),
        "pm2_5",
        30,
    )
    assert len(set(stuck[5:16])) == 1
    assert stuck[5] == healthy[4]

    drifted = series(
        FaultySensor(SimulatedAirQuality("aq", seed=1), [fault("drift", "pm2_5", (0, 29), 60)]),
        "pm2_5",
        30,
    )
    assert drifted[29] - healthy[29] == pytest.approx(29.0 * 6.0, abs=0.01)  # type: ignore[operator]  # 6 = PM2.5 scale  # type: ignore[operator]

    dropped = series(
        FaultySensor(SimulatedAirQuality("aq", seed=1), [fault("dropout", "", (5, 9))]), "pm2_5", 30
    )
    assert dropped[5:10] == [None] * 5
    assert None not in dropped[10:]

    bins = series(
        FaultySensor(
            SimulatedWasteBin("bin", seed=1),
            [fault("overflow", "fill_level", (3, 29), sensor="bin")],
        ),
        "fill_level",
        30,
    )
    assert bins[29] == 100.0

    jam = FaultySensor(
        SimulatedTraffic("loop", seed=1), [fault("congestion", "speed_mean", (0, 5), sensor="loop")]
    )
    congested = {r.metric: r.value for r in jam.read(START + timedelta(minutes=1))}
    assert congested["occupancy"] >= 80
    assert congested["speed_mean"] < 30


def test_faults_are_planned_on_real_metrics_and_written_as_labels(tmp_path: Path) -> None:
    specs = plan_fleet(30, seed=2)
    faults = plan_fleet_faults(specs, START, timedelta(hours=10), per_device_per_hour=1, seed=4)
    assert len(faults) > 100
    by_device = {s.device: s.family for s in specs}
    for item in faults:
        if item.kind != "offline":
            sensor, metrics = FAMILY_SENSOR[by_device[item.device]]
            assert item.sensor == sensor
            assert item.metric in metrics
        assert START <= item.start <= item.end <= START + timedelta(hours=13)
    assert faults == plan_fleet_faults(
        specs, START, timedelta(hours=10), per_device_per_hour=1, seed=4
    )
    assert plan_faults([], START, timedelta(hours=1)) == []

    labels = tmp_path / "labels.jsonl"
    Fleet(specs[:3], BrokerSettings("127.0.0.1", 1), faults=faults, labels=labels)
    lines = [json.loads(line) for line in labels.read_text().splitlines()]
    assert len(lines) == len(faults)
    assert set(lines[0]) == {"device", "sensor", "metric", "kind", "start", "end", "magnitude"}


@pytest.mark.slow
def test_a_thousand_devices_run_in_one_process(broker: BrokerAddress, unique_site: str) -> None:
    specs = plan_fleet(1_000, seed=9, districts=[District(unique_site, "Test", 53.8, -1.5)])
    fleet = Fleet(
        specs,
        BrokerSettings(broker.host, broker.port),
        sample_interval_s=1,
        batch_interval_s=2,
        record=True,
    )
    started = time.monotonic()
    fleet.start()
    try:
        assert fleet.wait_connected(60)
        # Every device has published once: waited for, not assumed after a fixed time, since
        # a busy machine samples a thousand devices more slowly.
        deadline = time.monotonic() + 90
        while (
            len({key[0] for key in list(fleet.published)}) < 1_000 and time.monotonic() < deadline
        ):
            time.sleep(0.2)
    finally:
        fleet.stop_sampling()
        assert fleet.drain(60), f"{fleet.backlog()} batches unacknowledged"
        fleet.stop(drain_timeout=1)
    devices = {key[0] for key in fleet.published}
    assert len(devices) == 1_000  # every device sampled and the broker acknowledged it all
    assert time.monotonic() - started < 120


def test_simulated_devices_report_their_own_clock_not_the_hosts() -> None:
    # The host may have no NTP; a simulated device is synchronised unless a clock fault says not.
    specs = plan_fleet(3, seed=2)
    now = datetime.now(UTC)
    unsynced = Fault(specs[1].device, "", "", "clock", now - timedelta(minutes=1),
                     now + timedelta(hours=1))  # fmt: skip
    fleet = Fleet(specs, BrokerSettings("127.0.0.1", 1), faults=[unsynced])
    clocks = {a.settings.device: a.status_fields()["clock_synced"] for a in fleet.agents}
    assert clocks == {specs[0].device: True, specs[1].device: False, specs[2].device: True}
