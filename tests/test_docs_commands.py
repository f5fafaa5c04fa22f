"""Every ``smartcity`` and ``smartcity-edge`` command the guides show is one the code accepts.

The commands are parsed by the real argument parsers (nothing runs): a guide cannot drift from
the command line it documents. What the commands do is covered by their own tests.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from edge.cli import parser as edge_parser
from smartcity.cli import parser as server_parser

ROOT = Path(__file__).resolve().parent.parent
GUIDES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
_PROGRAMS = ("smartcity", "smartcity-edge")


def _shell_blocks(text: str) -> list[str]:
    """Lines of ```sh blocks, continuation lines joined, comments dropped."""
    lines: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL):
        joined = block.replace("\\\n", " ")
        lines += [line.split(" #")[0].strip() for line in joined.splitlines()]
    return lines


def _invocation(segment: str) -> tuple[str, list[str]] | None:
    """(program, arguments) when ``segment`` runs one of ours, past sudo and variables."""
    words = shlex.split(segment)
    while words and (words[0] == "sudo" or "=" in words[0]):
        words = words[3:] if words[:2] == ["sudo", "-u"] else words[1:]
    if words and Path(words[0]).name in _PROGRAMS:
        return Path(words[0]).name, words[1:]
    return None


def documented_commands() -> list[tuple[str, str, list[str]]]:
    found = []
    for guide in GUIDES:
        for line in _shell_blocks(guide.read_text(encoding="utf-8")):
            for segment in re.split(r"\||&&|;", line):
                invocation = _invocation(segment) if segment.strip() else None
                if invocation:
                    found.append((guide.name, *invocation))
    return found


def test_the_guides_show_commands() -> None:
    programs = {program for _, program, _ in documented_commands()}
    assert programs == {"smartcity", "smartcity-edge"}


@pytest.mark.parametrize(
    ("guide", "program", "argv"),
    documented_commands(),
    ids=lambda value: value if isinstance(value, str) else " ".join(value)[:60],
)
def test_each_documented_command_parses(guide: str, program: str, argv: list[str]) -> None:
    parser = server_parser() if program == "smartcity" else edge_parser()
    try:
        parser.parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{guide}: `{program} {shlex.join(argv)}` is refused ({exc.code})")
