"""The packages depend on each other one way: each imports only the layers beneath it.

Read from the source (every ``import`` and ``from ... import``, including those inside
functions), so an import that would make a cycle fails here before it fails at run time.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Each package, and what it may import of the others: the edge agent at the bottom, the
# detectors above it, ingest (which runs them), history, the services, the command on top.
MAY_IMPORT = {
    "edge": set(),
    "processing": {"edge"},
    "ingest": {"edge", "processing"},
    "history": {"edge", "processing", "ingest"},
    "api": {"edge", "processing", "ingest", "history"},
    "dashboard": {"edge", "processing", "ingest", "history"},
    "smartcity": {"edge", "processing", "ingest", "history", "api", "dashboard"},
}


def imported_packages(package: str) -> dict[str, set[str]]:
    """Our other packages each module of ``package`` imports: {other package: {module, ...}}."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in MAY_IMPORT and top != package:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_each_package_imports_only_the_layers_beneath_it() -> None:
    wrong = {
        f"{package} -> {other}": sorted(modules)
        for package, allowed in MAY_IMPORT.items()
        for other, modules in imported_packages(package).items()
        if other not in allowed
    }
    assert wrong == {}


def test_the_allowed_directions_have_no_cycle() -> None:
    done: set[str] = set()
    for package, allowed in MAY_IMPORT.items():  # in layer order: only what came before it
        assert allowed <= done, package
        done.add(package)


def test_no_test_module_imports_from_a_conftest() -> None:
    # Fixtures reach tests through pytest; shared helpers live in ordinary modules, so a test's
    # imports say where its helpers come from and a conftest can change without breaking them.
    wrong = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        wrong += [
            str(path.relative_to(ROOT))
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.split(".")[-1] == "conftest"
        ]
    assert wrong == []
