"""The golden payloads in tests/fixtures/payloads, shared by the edge and ingest tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).parent / "fixtures" / "payloads"


@dataclass(frozen=True)
class InvalidCase:
    """A payload the contract refuses, with what it must say."""

    name: str
    payload: bytes
    scope: str  # "message" or "reading"
    reason: str
    index: int | None = None
    kept: int | None = None


def valid(name: str) -> bytes:
    """The bytes of a valid golden payload."""
    return (ROOT / "valid" / name).read_bytes()


def valid_telemetry_names() -> list[str]:
    """Names of the valid telemetry payloads."""
    return sorted(
        p.name for p in (ROOT / "valid").glob("*.json") if not p.name.startswith("status")
    )


def invalid_cases() -> list[InvalidCase]:
    """Every invalid golden payload with its expected reason."""
    expected = json.loads((ROOT / "invalid" / "expected.json").read_text())
    cases = []
    for name, want in sorted(expected.items()):
        cases.append(
            InvalidCase(
                name=name,
                payload=(ROOT / "invalid" / name).read_bytes(),
                scope=want["scope"],
                reason=want["reason"],
                index=want.get("index"),
                kept=want.get("kept"),
            )
        )
    return cases
