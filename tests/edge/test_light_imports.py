"""The edge agent must stay light enough for a 512 MB Pi: stdlib and paho-mqtt only."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import edge

HEAVY = ("numpy", "psycopg", "dash", "aiomqtt", "pandas", "plotly", "numba", "orjson")


def test_importing_every_edge_module_loads_nothing_heavy() -> None:
    modules = [
        name
        for _, name, _ in pkgutil.walk_packages(edge.__path__, "edge.")
        if not name.endswith("__main__")
    ]
    assert "edge.agent" in modules
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    root = Path(edge.__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
        timeout=60,
    )
    assert result.stdout.strip() == "[]"


def test_edge_extra_depends_on_paho_only() -> None:
    root = Path(edge.__file__).resolve().parent.parent
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert project["dependencies"] == []
    assert [d.split(">")[0].split("=")[0] for d in project["optional-dependencies"]["edge"]] == [
        "paho-mqtt"
    ]
