"""Strings from outside — a provider's response, a request, a test's own arguments — made safe at
the point they enter, for every channel they later reach: the terminal (where a line starting
``::error`` is a GitHub workflow command and an escape sequence drives the terminal), JSON, XML
and markdown, whose writers then never meet a lone surrogate they cannot encode.
"""

from __future__ import annotations

REPLACEMENT = "\ufffd"


def clean(text: str) -> str:
    """``text`` with every unprintable character — controls (newlines, ``\\r``, ESC, U+0085),
    line and paragraph separators, lone surrogates — replaced by U+FFFD."""
    if text.isprintable():  # the usual case, checked in C
        return text
    return "".join(char if char.isprintable() else REPLACEMENT for char in text)
