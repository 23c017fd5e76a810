"""Know whether a response was replayed by a vcrpy cassette (also under pytest-recording).

vcrpy serves a recorded response from ``Cassette.play_response``, called synchronously inside the
client's ``send`` (same thread, same task), so a context variable set there is visible to the
``send`` wrapper when it returns. Without vcrpy loaded, nothing is patched and every call is live.
"""

from __future__ import annotations

import sys
from contextvars import ContextVar
from typing import Any

_replayed: ContextVar[int] = ContextVar("tokenbudget_replayed", default=0)
_ORIGINAL = "_tokenbudget_original_play_response"


def ensure_installed() -> None:
    """Patch vcrpy when it has been imported (cheap to call often)."""
    module = sys.modules.get("vcr.cassette")
    if module is None:
        return
    cassette_cls = getattr(module, "Cassette", None)
    if cassette_cls is None or hasattr(cassette_cls, _ORIGINAL):
        return
    original = cassette_cls.play_response

    def play_response(self: Any, request: Any) -> Any:
        response = original(self, request)
        _replayed.set(_replayed.get() + 1)
        return response

    setattr(cassette_cls, _ORIGINAL, original)
    cassette_cls.play_response = play_response


def uninstall() -> None:
    module = sys.modules.get("vcr.cassette")
    cassette_cls = getattr(module, "Cassette", None) if module else None
    if cassette_cls is not None and hasattr(cassette_cls, _ORIGINAL):
        cassette_cls.play_response = getattr(cassette_cls, _ORIGINAL)
        delattr(cassette_cls, _ORIGINAL)


def mark() -> int:
    """A mark to take before sending; pass it to :func:`replayed_since`."""
    return _replayed.get()


def replayed_since(before: int) -> bool:
    """True when a cassette served a response since ``before``."""
    return _replayed.get() != before
