"""Read what a captured request sent, from any HTTP stack, without ever raising.

The one reader of request bodies: the recorder (a model the response leaves out), the estimates,
the hard cap and the inspector all come here. It sits at the bottom of the package beside
``model/`` and imports only the standard library, so every stage, ``capture/`` included, can
import it without importing upward.

The shapes the stacks hand over: an httpx/httpx2 ``Request`` (whose ``content`` property raises
``RequestNotRead`` for a streamed upload: a generator, a file), a ``requests.PreparedRequest``
(``body`` is bytes, str, or a generator/file for a streamed upload), ``bytes`` (urllib), or the
JSON mapping itself (aiohttp's ``json=``, botocore's parameters). Anything else, and anything that
raises on the way, reads as None.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ["json_object", "request_bytes", "request_json"]

_BYTES = (bytes, bytearray, memoryview)


def request_bytes(request: Any) -> bytes | None:
    """The bytes ``request`` sent, or None when they are not at hand (streamed, a mapping, unknown)."""
    try:
        return _bytes(request)
    except Exception:  # a property that raises (RequestNotRead), a str that cannot be encoded, …
        return None


def _bytes(request: Any) -> bytes | None:
    if isinstance(request, bytes):
        return request
    if isinstance(request, (bytearray, memoryview)):
        return bytes(request)
    if isinstance(request, str):
        return request.encode("utf-8")
    if request is None or isinstance(request, Mapping):
        return None
    # httpx / httpx2 have a plain ``stream`` attribute, and a ``content`` property that raises
    # RequestNotRead for a streamed upload; requests.PreparedRequest (and look-alikes) a ``body``.
    body = request.content if hasattr(request, "stream") else getattr(request, "body", None)
    return _bytes(body) if isinstance(body, (*_BYTES, str)) else None


def request_json(request: Any) -> Mapping[str, Any] | None:
    """The JSON object ``request`` sent, else None (not JSON, not an object, streamed, unknown)."""
    if isinstance(request, Mapping):
        return request
    if isinstance(request, str):
        return json_object(request)
    return json_object(request_bytes(request))


def json_object(raw: Any) -> dict[str, Any] | None:
    """``raw`` bytes/str parsed as a JSON object, else None (never raises)."""
    if not raw or not isinstance(raw, (*_BYTES, str)):
        return None
    try:
        data = json.loads(bytes(raw) if isinstance(raw, (bytearray, memoryview)) else raw)
    except (ValueError, RecursionError, TypeError):  # UnicodeDecodeError is a ValueError
        return None
    return data if isinstance(data, dict) else None
