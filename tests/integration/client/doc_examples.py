"""The examples of docs/client.md: every ```python block is a program the tests run, and every
```yaml block after `<!-- template: NAME -->` is a template file the test server gets."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

DOC = Path(__file__).resolve().parents[3] / "docs" / "client.md"
_BLOCK = re.compile(r"(?:<!-- (\w+): ([\w.-]+) -->\n)?```(\w+)\n(.*?)\n```", re.DOTALL)


@dataclass(frozen=True)
class Block:
    language: str
    code: str
    line: int
    """Where the block starts in the document (1-based), to name it in a failure."""
    mark: tuple[str, str] | None
    """The comment just before it: ("needs", "templates"), ("template", NAME)."""

    @property
    def title(self) -> str:
        return f"client.md:{self.line}"


def blocks(language: str) -> list[Block]:
    text = DOC.read_text(encoding="utf-8")
    found = []
    for match in _BLOCK.finditer(text):
        kind, value, lang, code = match.groups()
        if lang == language:
            line = text.count("\n", 0, match.start(3)) + 1
            found.append(Block(lang, code, line, (kind, value) if kind else None))
    return found


def templates() -> dict[str, str]:
    """The template files the document shows, by name."""
    return {b.mark[1]: b.code for b in blocks("yaml") if b.mark and b.mark[0] == "template"}
