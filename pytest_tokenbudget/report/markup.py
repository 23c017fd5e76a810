"""How text is marked up where people read it: a terminal line with its colours, and text from the
suite (node ids, model names, messages) made literal in GitHub-flavoured markdown.

Shared by every report; imports nothing of theirs (no report imports another's private helpers).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

CELL = 300
"""Longest text kept in a markdown table cell, in characters."""


@dataclass(frozen=True, slots=True)
class Line:
    """A line of the terminal summary and its markup (``{"red": True}`` …, pytest's keywords)."""

    text: str
    markup: dict[str, bool] = field(default_factory=dict)


def clip(text: str) -> str:
    text = " ".join(text.split())  # newlines and tabs would end a table row
    return text if len(text) <= CELL else text[: CELL - 1] + "…"


# What GitHub's renderer (cmark-gfm) would read as markup in plain text, and only that: emphasis
# and code marks, a bracket that would close a link (``](`` or ``][``; a lone ``[x]`` links nowhere
# without a definition), table pipes, strikethrough, a backslash; an underscore only where it can
# open or close emphasis (not inside a word: test_a_b stays as it is); a heading or list mark only
# at the start and followed by a space (0.2.3 stays as it is); ``<``, ``>`` and ``&`` become
# entities. Checked against cmark-gfm in tests/unit/test_markdown_escapes.py.
_SPECIAL = re.compile(
    r"[\\`*|~]|\](?=[(\[])|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])"
    r"|^(?:#{1,6}|[+\-])(?=\s|$)|^\d{1,9}(?=[.)](?:\s|$))|^[=\-]+\s*$"
)
_AUTOLINK = re.compile(r"(?i)(?:https?|ftp)(?=://)|www(?=\.)")  # anywhere: a comment costs nothing


def literal(text: str) -> str:
    """Plain text from the suite, safe in a table cell: no HTML, no markdown, no links, no mentions."""
    text = clip(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _SPECIAL.sub(_escaped, text)
    text = _AUTOLINK.sub(lambda match: match[0] + "<!-- -->", text)  # renders as typed, links nowhere
    return text.replace("@", "@<!-- -->")  # renders "@", pings nobody


def _escaped(match: re.Match[str]) -> str:
    mark = match[0]
    return mark + "\\" if mark[0].isdigit() else "\\" + mark  # "1\\. item", "\\*not bold\\*"


def code(text: str) -> str:
    """Text from the suite as inline code (ids, model names): literal, in any table cell.

    A code span shows ``<`` as typed but leaves it in the markdown's text, where an id holding
    ``<!-- pytest-tokenbudget -->`` would be a second ``MARKER`` (markdown.py) for a workflow looking for
    its comment: text that could open an HTML comment is an HTML ``<code>`` element instead, its
    ``<`` an entity (it renders the same, monospace and literal)."""
    text = clip(text)
    if "<!" in text:
        return f"<code>{literal(text)}</code>"
    text = text.replace("|", "\\|")
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"
