"""Every tickets-ingest / tickets-devkit command written in the docs parses with the real
CLI, so the runbook cannot drift from the program (the procedures themselves are covered by
the integration and e2e tests the runbook names)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tickets_devkit import bench
from tickets_devkit.cli import build_parser as devkit_parser
from tickets_ingest.handlers.cli import build_parser as ingest_parser

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *(ROOT / "docs" / n for n in ("runbook.md", "deploy.md", "status.md"))]
PROGRAM = re.compile(r"(?:^|[\s$/])(tickets-(?:ingest|devkit))(?=\s|$)(.*)$")
INLINE = re.compile(r"`([^`]+)`")


def _code(text: str) -> list[tuple[int, str]]:
    """(line number, code) for every line of a fenced block and every inline code span."""
    code: list[tuple[int, str]] = []
    fence: str | None = None  # the open block's language
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("```"):
            fence = None if fence is not None else line.strip()[3:]
            continue
        if fence is not None:
            if fence != "mermaid":  # a diagram names programs, it does not run them
                code.append((number, line))
        else:
            code.extend((number, span) for span in INLINE.findall(line))
    return code


def commands() -> list[tuple[str, str, list[str]]]:
    found = []
    for doc in DOCS:
        for number, code in _code(doc.read_text(encoding="utf-8")):
            match = PROGRAM.search(code.split("#", 1)[0])
            if not match:
                continue
            program, rest = match.groups()
            rest = re.sub(r"<[^>]*>", "2026-06-22T17-20-02.csv", rest).replace("…", "x")
            rest = rest.replace("[", "").replace("]", "")  # usage lines: optional parts
            words = shlex.split(rest)
            if words and words[0] not in {"|", "&&"}:
                found.append((f"{doc.name}:{number}", program, words))
    return found


def test_the_docs_mention_commands() -> None:
    assert len(commands()) >= 30


@pytest.mark.parametrize(("where", "program", "words"), commands())
def test_command_parses(where: str, program: str, words: list[str]) -> None:
    if program == "tickets-devkit" and words[0] == "bench":
        parser = bench.build_parser()
        words = words[1:]
    else:
        parser = ingest_parser() if program == "tickets-ingest" else devkit_parser()
    try:
        parser.parse_args(words)
    except SystemExit as exit_:
        pytest.fail(f"{where}: `{program} {' '.join(words)}` does not parse ({exit_})")
