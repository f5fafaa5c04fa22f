"""Configuration loading: files, environment, secret files, unknown keys, types."""

from __future__ import annotations

from pathlib import Path

import pytest

from dashboard import config as dashboard_config
from edge.errors import ConfigError
from ingest import config as ingest_config


def test_ingest_settings_from_file_environment_and_secret_file(tmp_path: Path) -> None:
    secret = tmp_path / "mqtt-password"
    secret.write_text("s3cret\n")
    path = tmp_path / "ingest.toml"
    path.write_text(
        '[ingest]\nbroker_host = "mqtt.example.org"\nbroker_port = 8883\n'
        f'broker_password_file = "{secret}"\nshared_group = "ingest"\n'
    )
    config = ingest_config.load(str(path), env={"CITY_INGEST_BATCH_MAX_ROWS": "200"})
    assert (config.broker_host, config.broker_port, config.batch_max_rows) == (
        "mqtt.example.org",
        8883,
        200,
    )
    assert config.broker_password == "s3cret"
    assert "s3cret" not in repr(config)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[ingest]\nbroker_prot = 1\n", "unknown setting 'broker_prot'"),
        ("[ingest]\nbroker_port = 'x'\n", "broker_port must be an integer"),
        ("[ingest]\nmqtt_protocol = '4'\n", "mqtt_protocol must be one of"),
        ("[ingest]\nreceive_maximum = 0\n", "receive_maximum must be within"),
        ("[ingest]\nshared_group = 'g'\nmqtt_protocol = '3.1.1'\n", "shared_group needs"),
        ("[ingest]\nmore_brokers = ['mqtt-b.example.org']\n", "must look like host:port"),
        ("[ingest]\nmore_brokers = ['mqtt-b:88830']\n", "must look like host:port"),
        ("[ingest]\nmore_brokers = ['localhost:1883']\n", "names a broker twice"),
        ("[ingress]\n", "unknown section"),
        ("[ingest\n", "line 1"),
        ("[ingest]\nbroker_password_file = '/nonexistent/x'\n", "cannot read /nonexistent/x"),
    ],
)
def test_bad_ingest_settings_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "ingest.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        ingest_config.load(str(path), env={})


def test_the_city_s_brokers_come_from_the_file_or_a_comma_separated_variable() -> None:
    config = ingest_config.load(
        None, env={"CITY_INGEST_MORE_BROKERS": "mqtt-b.example.org:1883, [::1]:1884"}
    )
    assert config.brokers() == (
        ("localhost", 1883),
        ("mqtt-b.example.org", 1883),
        ("::1", 1884),
    )


def test_environment_values_are_parsed_by_type() -> None:
    config = ingest_config.load(
        None, env={"CITY_INGEST_MIGRATE": "false", "CITY_INGEST_BATCH_MAX_AGE_S": "0.5"}
    )
    assert config.migrate is False
    assert config.batch_max_age_s == 0.5
    with pytest.raises(ConfigError, match="must be true or false"):
        ingest_config.load(None, env={"CITY_INGEST_MIGRATE": "maybe"})


def test_missing_file_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        ingest_config.load("/nonexistent/ingest.toml", env={})


def test_dashboard_settings(tmp_path: Path) -> None:
    path = tmp_path / "dashboard.toml"
    path.write_text('[dashboard]\nport = 9000\ntitle = "Leeds"\n')
    config = dashboard_config.load(str(path), env={"CITY_DASHBOARD_REFRESH_S": "2"})
    assert (config.port, config.title, config.refresh_s) == (9000, "Leeds", 2.0)
    with pytest.raises(ConfigError, match="refresh_s must be at least 1"):
        dashboard_config.load(None, env={"CITY_DASHBOARD_REFRESH_S": "0.1"})
