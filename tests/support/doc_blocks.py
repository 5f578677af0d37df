"""The code blocks of a documentation page, as a reader sees them, for tests that run them.

``rst_blocks`` reads ``.. code-block:: LANG`` directives of a reStructuredText
page, ``md_blocks`` the fenced blocks of a Markdown page. Each block keeps
its language, its text (dedented) and its line, so a test can name the
block it ran.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

_DIRECTIVE = re.compile(r"^(\s*)\.\. code-block:: *(\S+)\s*$")
_FENCE = re.compile(r"^```(\S*)\s*$")


@dataclass(frozen=True)
class Block:
    language: str
    code: str
    #: The line of the directive or the opening fence, from 1.
    line: int

    def __str__(self) -> str:
        return f"the {self.language} block at line {self.line}"


def rst_blocks(path: Path) -> list[Block]:
    return rst_blocks_of(path.read_text(encoding="utf-8"))


def rst_blocks_of(text: str) -> list[Block]:
    """The code blocks of reStructuredText ``text`` (a page, or a docstring)."""
    lines = text.splitlines()
    blocks = []
    n = 0
    while n < len(lines):
        match = _DIRECTIVE.match(lines[n])
        n += 1
        if match is None:
            continue
        start, indent = n, len(match.group(1))
        while n < len(lines) and lines[n].startswith(" " * indent + " ") and lines[n].lstrip().startswith(":"):
            n += 1  # the directive's options
        body = []
        while n < len(lines) and (not lines[n].strip() or _indent(lines[n]) > indent):
            body.append(lines[n])
            n += 1
        blocks.append(Block(match.group(2), textwrap.dedent("\n".join(body)).strip("\n") + "\n", start))
    return blocks


def md_blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = []
    n = 0
    while n < len(lines):
        match = _FENCE.match(lines[n])
        n += 1
        if match is None:
            continue
        start, body = n, []
        while not lines[n].startswith("```"):
            body.append(lines[n])
            n += 1
        n += 1
        blocks.append(Block(match.group(1), "\n".join(body) + "\n", start))
    return blocks


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))
