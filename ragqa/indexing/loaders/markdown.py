"""Markdown (.md, .markdown): the text as it is, titled by its first level-1 heading outside
code fences (else the file name)."""

from __future__ import annotations

import re

# the lines title() looks at, found by the regex engine (no Python loop over every line):
# a code fence (group 1) or a level-1 ATX heading, "# Title" or "# Title #" (group 2)
_MD_LINE = re.compile(r"^ {0,3}(?:(`{3,}|~{3,})|#[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$)", re.MULTILINE)


def title(text: str) -> str:
    """Text of the first level-1 ATX heading ("# Title"), ignoring fenced code blocks."""
    fence: str | None = None
    for m in _MD_LINE.finditer(text):
        marker, heading = m.group(1), m.group(2)
        if marker:
            if fence is None:
                fence = marker[0] * len(marker)
            elif marker[0] == fence[0] and len(marker) >= len(fence):
                fence = None
        elif fence is None and heading.strip():
            return heading.strip()
    return ""
