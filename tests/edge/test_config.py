"""The device configuration: complete validation, errors with line numbers, secrets kept out."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config import parse
from edge.errors import ConfigError
from edge.sensors.registry import ParticulateOptions, UltrasonicOptions

GOOD = """\
[device]
id = "aq-0042"
site = "centre"

[broker]
url = "mqtts://mqtt.example.org:8883"
ca_file = "/etc/smartcity-edge/ca.pem"
password_file = "{password}"

[spool]
path = "/var/lib/smartcity-edge/spool.db"
max_mb = 50

[agent]
batch_interval_s = 30

[[sensors]]
name = "pm"
driver = "sds011"
port = "/dev/ttyUSB0"
interval_s = 120

[[sensors]]
name = "bin"
driver = "jsnsr04t"
port = "/dev/ttyAMA0"
empty_mm = 1100
full_mm = 250
"""


@pytest.fixture
def password(tmp_path: Path) -> Path:
    path = tmp_path / "password"
    path.write_text("s3cret\n")
    return path


def test_a_good_file_gives_typed_settings(password: Path) -> None:
    config = parse(GOOD.format(password=password))
    assert (config.device.id, config.device.site) == ("aq-0042", "centre")
    broker = config.broker_settings()
    assert (broker.host, broker.port, broker.username, broker.password) == (
        "mqtt.example.org",
        8883,
        "aq-0042",
        "s3cret",
    )
    assert broker.ca_file == "/etc/smartcity-edge/ca.pem"
    assert "s3cret" not in repr(broker)
    assert "s3cret" not in repr(config)  # the [broker] section as read, too
    assert [s.name for s in config.sensors] == ["pm", "bin"]
    assert config.sensors[0].options == ParticulateOptions(port="/dev/ttyUSB0")
    assert config.sensors[0].interval_s == 120.0
    assert config.sensors[1].options == UltrasonicOptions("/dev/ttyAMA0", 1100.0, 250.0)


def test_fallback_brokers_share_the_account_and_take_the_default_port(password: Path) -> None:
    text = GOOD.format(password=password).replace(
        "[broker]\n",
        '[broker]\nfallback_urls = ["mqtts://b.example.org", "mqtts://c.example.org:9883"]\n',
    )
    broker = parse(text).broker_settings()
    assert broker.addresses == (
        ("mqtt.example.org", 8883),
        ("b.example.org", 8883),
        ("c.example.org", 9883),
    )
    assert broker.username == "aq-0042"
    assert "s3cret" not in repr(broker)
    assert "b.example.org" in repr(broker)


def test_password_from_the_environment(tmp_path: Path) -> None:
    text = GOOD.replace('password_file = "{password}"\n', "")
    config = parse(text, env={"CITY_EDGE_PASSWORD": "from-env"})
    assert config.broker_settings().password == "from-env"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("max_mb = 50", 'max_mb = "big"'), r"edge.toml:12: .*max_mb must be a number"),
        (
            ('site = "centre"', 'site = "centre"\ncolour = "red"'),
            r"edge.toml:\d+: .*unknown setting 'colour'",
        ),
        (
            ('driver = "sds011"', 'driver = "sds012"'),
            r"edge.toml:19: .*driver 'sds012' is not one of",
        ),
        (('port = "/dev/ttyUSB0"\n', ""), r"edge.toml:\d+: \[\[sensors\]\] #1.*port"),
        (('name = "bin"', 'name = "pm"'), r"edge.toml:\d+: .*name 'pm' is used twice"),
        (
            ('url = "mqtts://mqtt.example.org:8883"', 'url = "http://example.org"'),
            r"edge.toml:6: .*must look like mqtt://",
        ),
        (
            ('url = "mqtts://mqtt.example.org:8883"', 'url = "mqtts://mqtt.example.org:88830"'),
            r"edge.toml:6: .*must look like mqtt://",
        ),
        (
            ("[broker]\n", '[broker]\nfallback_urls = ["mqtt://b.example.org:1883"]\n'),
            r"edge.toml:6: fallback url 'mqtt://b.example.org:1883' must look like mqtts://",
        ),
        (('id = "aq-0042"', 'id = "aq/42"'), r"edge.toml:2: id 'aq/42'"),
        (("interval_s = 120", "interval_s = -5"), r"edge.toml:21: .*interval_s must be a positive"),
        (("[agent]", "[agnet]"), r"unknown section"),
        (("full_mm = 250", 'full_mm = 250\ntries = "three"'), r"tries must be an integer"),
        (("[device]", "[device"), r"edge.toml: .*line 1"),
    ],
)
def test_errors_name_the_key_and_the_line(
    password: Path, change: tuple[str, str], message: str
) -> None:
    text = GOOD.format(password=password).replace(*change, 1)
    with pytest.raises(ConfigError, match=message):
        parse(text)


def test_a_password_in_the_file_is_refused(password: Path) -> None:
    text = GOOD.format(password=password).replace("[broker]\n", '[broker]\npassword = "oops"\n')
    with pytest.raises(
        ConfigError, match=r"edge.toml:6: password must not be written in the file"
    ) as caught:
        parse(text)
    assert "oops" not in str(caught.value)


def test_an_unreadable_password_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read /nonexistent/password"):
        parse(GOOD.format(password="/nonexistent/password"))
