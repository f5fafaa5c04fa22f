"""docker-compose.yml, docker-compose.ha.yml and the systemd units agree with the code they run.

No container engine runs here: the compose file is checked by ``docker-compose config`` (which
needs none) and by reading it against the code's configuration, files and ports.
"""

from __future__ import annotations

import argparse
import configparser
import dataclasses
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from api.config import ApiConfig
from dashboard.config import DashboardConfig
from ingest.config import IngestConfig
from smartcity.cli import parser as smartcity_parser

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_HA = ROOT / "docker-compose.ha.yml"
STACKS = pytest.mark.parametrize("path", [COMPOSE, COMPOSE_HA], ids=["single", "ha"])
PATRONI_TEMPLATE = ROOT / "deploy" / "patroni" / "patroni.yml.in"
UNITS = {
    name: ROOT / "deploy" / "systemd" / f"smartcity-{name}.service"
    for name in ("ingest", "dashboard", "api")
}
SETTINGS = {
    "CITY_INGEST_": IngestConfig,
    "CITY_DASHBOARD_": DashboardConfig,
    "CITY_API_": ApiConfig,
}


def compose(path: Path = COMPOSE) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def _setting_exists(variable: str) -> bool:
    """Whether ``CITY_<SERVICE>_<X>`` (or ``..._<X>_FILE``) names a real setting."""
    for prefix, settings in SETTINGS.items():
        if variable.startswith(prefix):
            name = variable[len(prefix) :].lower()
            fields = {f.name for f in dataclasses.fields(settings)}
            return name in fields or (name.endswith("_file") and name[:-5] in fields)
    return variable == "NUMBA_CACHE_DIR"


def _subcommands() -> set[str]:
    for action in smartcity_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    raise AssertionError("smartcity has no subcommands")


@STACKS
def test_docker_compose_accepts_the_file(path: Path, tmp_path: Path) -> None:
    tool = shutil.which("docker-compose")
    assert tool, "docker-compose is missing: run `make test` (installs Debian's docker-compose)"
    # The secrets are the operator's to create; placeholders let the file resolve.
    copy = tmp_path / "stack"
    shutil.copytree(ROOT / "deploy", copy / "deploy")
    shutil.copy(path, copy / "docker-compose.yml")
    for name, spec in compose(path)["secrets"].items():
        path = copy / spec["file"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"placeholder for {name}\n")
    for directory in ("secrets/mosquitto_auth", "secrets/mqtt_certs"):
        (copy / directory).mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [tool, "-f", str(copy / "docker-compose.yml"), "config", "-q"],
        capture_output=True, text=True, timeout=120, check=False, cwd=copy,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


@STACKS
def test_every_environment_variable_is_a_real_setting(path: Path) -> None:
    for name, service in compose(path)["services"].items():
        for variable in service.get("environment", {}):
            if variable.startswith("CITY_"):  # the others are the images' own (POSTGRES_*)
                assert _setting_exists(variable), f"{name}: {variable} is no setting of the code"


@STACKS
def test_no_secret_is_written_into_the_file(path: Path) -> None:
    for name, service in compose(path)["services"].items():
        for variable, value in service.get("environment", {}).items():
            if re.search("PASSWORD|SECRET|DATABASE_URL", variable):
                assert variable.endswith("_FILE"), f"{name}: {variable} must come from a secret"
                assert str(value).startswith("/run/secrets/"), f"{name}: {variable}={value}"


@STACKS
def test_files_commands_and_ports_exist(path: Path) -> None:
    stack = compose(path)
    for name, service in stack["services"].items():
        assert service.get("restart") == "unless-stopped", name
        # Trial tools (profiles) have no endpoint to probe; the services all do.
        assert "healthcheck" in service or "profiles" in service, f"{name} has no health check"
        build = service.get("build")
        if build:
            assert (ROOT / build["context"] / build["dockerfile"]).is_file(), name
            assert service["command"][0] in _subcommands(), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./deploy/"):
                assert (ROOT / source).exists(), f"{name}: {source} is missing"
            elif not source.startswith("./secrets/"):
                assert source in stack["volumes"], f"{name}: {source} is not a named volume"
    broker = (ROOT / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    listeners = {int(p) for p in re.findall(r"^listener (\d+)", broker, flags=re.MULTILINE)}
    brokers = [s for s in stack["services"].values() if "mosquitto" in s.get("image", "")]
    assert brokers
    for broker_service in brokers:
        published = {int(p.split(":")[1]) for p in broker_service["ports"]}
        assert published <= listeners
        assert 1883 not in published  # the services' plain listener stays inside the network
    dashboard = stack["services"]["dashboard"]
    assert dashboard["ports"] == [f"{dashboard['environment']['CITY_DASHBOARD_PORT']}:8050"]
    api = stack["services"]["api"]
    assert api["ports"] == [f"{api['environment']['CITY_API_PORT']}:8060"]
    assert "/health" in " ".join(api["healthcheck"]["test"])


def test_the_image_holds_every_package_the_project_installs() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\w+) \1$", dockerfile, flags=re.MULTILINE))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= copied, f"missing from the image: {sorted(packages - copied)}"


def test_the_image_is_multi_stage_and_runs_as_a_user() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", dockerfile, flags=re.MULTILINE)) >= 2
    users = re.findall(r"^USER (\S+)", dockerfile, flags=re.MULTILINE)
    assert users
    assert users[-1] not in ("root", "0")


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return parser


@pytest.mark.parametrize("name", sorted(UNITS))
def test_systemd_accepts_the_unit(name: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: run `make deps`"
    text = UNITS[name].read_text()
    exec_start = _unit(UNITS[name])["Service"]["ExecStart"]
    copy = tmp_path / UNITS[name].name
    copy.write_text(text.replace(exec_start, "/bin/true"))  # the install path is not here
    result = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", sorted(UNITS))
def test_the_unit_is_hardened_and_runs_what_exists(name: str) -> None:
    service = _unit(UNITS[name])["Service"]
    for key, value in (
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictSUIDSGID", "yes"),
    ):
        assert service[key] == value, f"{name}: {key}"
    assert service["User"] not in ("root", "0")
    words = service["ExecStart"].split()
    assert words[1] in _subcommands()
    for line in service["Environment"].splitlines():
        variable = line.split("=", 1)[0]
        assert _setting_exists(variable), f"{name}: {variable} is no setting of the code"
    if name in ("ingest", "api"):  # numba needs a writable cache and W+X memory for its code
        assert service["MemoryDenyWriteExecute"] == "no"
        assert "NUMBA_CACHE_DIR=/var/cache/" + service["CacheDirectory"] in service["Environment"]


@STACKS
def test_ingest_workers_share_the_load_under_their_own_session_ids(path: Path) -> None:
    workers = [s for n, s in compose(path)["services"].items() if s.get("command") == ["ingest"]]
    assert len(workers) >= 2
    ids = [w["environment"]["CITY_INGEST_CLIENT_ID"] for w in workers]
    assert len(set(ids)) == len(ids)  # one id each, or they push each other off the broker
    groups = {w["environment"]["CITY_INGEST_SHARED_GROUP"] for w in workers}
    assert len(groups) == 1
    assert all(w["environment"]["CITY_INGEST_MQTT_PROTOCOL"] == "5" for w in workers)


def test_the_database_nodes_fill_every_name_of_the_patroni_template() -> None:
    """Each node's environment (and the passwords its entrypoint reads from secrets) gives every
    ``${NAME}`` of deploy/patroni/patroni.yml.in, so Patroni starts with no placeholder left."""
    wanted = set(re.findall(r"\$\{(\w+)\}", PATRONI_TEMPLATE.read_text()))
    nodes = {n: s for n, s in compose(COMPOSE_HA)["services"].items() if "patroni" in str(s)}
    assert len(nodes) == 2
    for name, node in nodes.items():
        from_secrets = re.findall(r"(\w+)=\"\$\$\(cat /run/secrets/", " ".join(node["entrypoint"]))
        given = set(node["environment"]) | set(from_secrets)
        assert wanted <= given, f"{name} leaves {sorted(wanted - given)} unfilled"
        assert node["environment"]["NODE_NAME"] == name


def test_the_ha_stack_writes_to_the_primary_and_reads_from_standbys() -> None:
    stack = compose(COMPOSE_HA)["services"]
    etcd = [n for n, s in stack.items() if "etcd" in s.get("image", "")]
    assert len(etcd) == 3  # a quorum survives one member lost
    workers = [s for s in stack.values() if s.get("command") == ["ingest"]]
    assert all(w["environment"]["CITY_INGEST_MORE_BROKERS"] for w in workers)
    header = COMPOSE_HA.read_text().split("x-etcd")[0]
    # Writes follow the primary; the control room's and the API's reads prefer the standby.
    assert header.count("target_session_attrs=read-write") == 3
    assert header.count("target_session_attrs=prefer-standby") == 2
    for service, prefix in (("api", "CITY_API"), ("dashboard", "CITY_DASHBOARD")):
        secret = f"{service}_read_database_url"
        environment = stack[service]["environment"]
        assert environment[f"{prefix}_READ_DATABASE_URL_FILE"] == f"/run/secrets/{secret}"
        given = stack[service]["secrets"]
        assert secret in [s if isinstance(s, str) else s["source"] for s in given]
