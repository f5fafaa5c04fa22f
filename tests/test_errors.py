"""One error root per package, and one for the platform: what a caller catches per layer."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

from api.errors import ApiError
from dashboard.errors import ControlRoomError
from edge.errors import CityError, EdgeError
from history.errors import HistoryError
from ingest.errors import IngestError
from processing.errors import DetectionError
from smartcity.errors import CommandError

ROOTS: dict[str, type[CityError]] = {
    "edge": EdgeError,
    "processing": DetectionError,
    "ingest": IngestError,
    "history": HistoryError,
    "api": ApiError,
    "dashboard": ControlRoomError,
    "smartcity": CommandError,
}
# Pages register themselves with the Dash app being built; __main__ modules run a command.
SKIPPED = ("dashboard.pages", "__main__")


def errors_defined_in(package: str) -> list[type[BaseException]]:
    """Every exception class a module of ``package`` defines."""
    found = []
    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
        if any(part in info.name for part in SKIPPED):
            continue
        module = importlib.import_module(info.name)
        found += [
            value
            for value in vars(module).values()
            if inspect.isclass(value)
            and issubclass(value, BaseException)
            and value.__module__ == module.__name__
        ]
    return found


@pytest.mark.parametrize("package", sorted(ROOTS))
def test_every_error_derives_from_its_package_root(package: str) -> None:
    errors = errors_defined_in(package)
    assert errors, f"{package} defines no error at all"
    strays = [
        e.__qualname__ for e in errors if e is not CityError and not issubclass(e, ROOTS[package])
    ]
    assert strays == []


def test_every_package_root_derives_from_the_platform_root() -> None:
    assert all(issubclass(root, CityError) for root in ROOTS.values())
    assert len(set(ROOTS.values())) == len(ROOTS)
