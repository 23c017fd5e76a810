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
_last_played: ContextVar[tuple[Any, Any] | None] = ContextVar("tokenbudget_last_played", default=None)
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
        _last_played.set((self, response))  # references only: resolved if a check needs them
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


def last_played() -> tuple[Any, Any] | None:
    """``(cassette, recorded response)`` of the last replay in this context (see :func:`recorded`)."""
    return _last_played.get()


def recorded(played: tuple[Any, Any]) -> tuple[str, bytes | None]:
    """The cassette's path and the body of the recorded request whose response was played."""
    cassette, response = played
    path = str(getattr(cassette, "_path", "") or "")
    for stored_request, stored_response in getattr(cassette, "data", ()):
        if stored_response is response:
            body = getattr(stored_request, "body", None)
            if isinstance(body, str):
                body = body.encode("utf-8")
            return path, body if isinstance(body, bytes) else None
    return path, None


def replayed_since(before: int) -> bool:
    """True when a cassette served a response since ``before``."""
    return _replayed.get() != before
