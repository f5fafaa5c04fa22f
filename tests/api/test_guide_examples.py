"""Every ``curl`` example in the planner guide, run against the planted city's API.

The guide's times fall in the planted two days, so each example answers with data.
"""

from __future__ import annotations

import io
import re
import shlex
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from tests.api.city import City

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "planner.md"


def examples() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", GUIDE.read_text(encoding="utf-8"), flags=re.DOTALL)
    return [line for block in blocks for line in block.splitlines() if line.startswith("curl ")]


def test_the_guide_has_examples_for_each_part() -> None:
    paths = " ".join(examples())
    for part in ("/v1/devices", "/v1/timeseries", "/v1/alerts", "/v1/export", "/v1/ngsi-ld/",
                 "/v1/sensorthings/"):  # fmt: skip
        assert part in paths


@pytest.mark.parametrize("example", examples())
def test_the_example_works(city: City, example: str, tmp_path: Path) -> None:
    words = [w.replace("\\$", "$") for w in shlex.split(example)[1:]]
    headers: dict[str, str] = {}
    output = None
    url = ""
    while words:
        word = words.pop(0)
        if word == "-H":
            name, _, value = words.pop(0).partition(": ")
            headers[name] = value.replace("$TOKEN", city.tokens["planner"])
        elif word == "-o":
            output = words.pop(0)
        elif not word.startswith("-"):
            url = word.replace("$API", city.url)
    response = httpx.get(url, headers=headers, timeout=60)
    assert response.status_code == 200, response.text[:300]
    if output and output.endswith(".parquet"):
        assert pq.read_table(io.BytesIO(response.content)).num_rows > 0
    else:
        body = response.json()
        assert body if isinstance(body, list) else (body.get("items") or body.get("value")
                                                    or body.get("series")), example  # fmt: skip
