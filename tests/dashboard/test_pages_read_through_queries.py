"""Pages call queries, figures and the account and alert modules: no SQL of their own."""

from __future__ import annotations

import ast
from pathlib import Path

PAGES = Path(__file__).resolve().parents[2] / "dashboard" / "pages"


def test_no_page_runs_sql_or_opens_a_database_connection() -> None:
    found = []
    for path in sorted(PAGES.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            imported = []
            if isinstance(node, ast.Import):
                imported = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported = [node.module]
            if any(name.split(".")[0] in ("psycopg", "psycopg_pool") for name in imported):
                found.append(f"{path.name} imports {imported}")
            if isinstance(node, ast.Attribute) and node.attr in ("execute", "executemany"):
                found.append(f"{path.name}:{node.lineno} calls .{node.attr}")
    assert found == []
