"""The recipes of the docs as their tests run them: the code blocks of one section, read from the Markdown."""

from __future__ import annotations

import re
from pathlib import Path

HEADING = re.compile(r"#{1,6} (.+)")
FENCE = "```"


def code_blocks(path: Path, heading: str, language: str) -> list[str]:
    """The ```<language> blocks of the section `heading` of a Markdown file (up to the next heading of any level)."""
    blocks, section, fenced, lines = [], None, None, []  # fenced: the open block's language
    for line in path.read_text(encoding="utf-8").splitlines():
        if fenced is None:
            if line.startswith(FENCE):
                fenced, lines = line.removeprefix(FENCE).strip(), []
            elif match := HEADING.fullmatch(line):
                section = match[1]
        elif line.startswith(FENCE):
            if section == heading and fenced == language:
                blocks.append("\n".join(lines))
            fenced = None
        else:
            lines.append(line)  # a shell comment here is not a heading
    assert blocks, f"no {language} block under '{heading}' in {path.name}"
    return blocks


def commands(block: str) -> list[str]:
    """A shell block's commands, one per entry: lines continued with a backslash joined, blank lines left out
    (comments stay: the shell drops them)."""
    joined = re.sub(r"\\\n\s*", "", block)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def substituted(text: str, replacements: dict[str, str]) -> str:
    """`text` with each key replaced, every key required to occur: a recipe that changed fails its test instead of
    running with its documented ports or paths."""
    for old, new in replacements.items():
        assert old in text, f"{old!r} is no longer in the recipe:\n{text}"
        text = text.replace(old, new)
    return text
