"""Capture at ``requests.Session.send``.

Every requests call goes through ``Session.send`` (``requests.post`` makes a session too), and
vcrpy, responses and requests-mock all answer below it. A non-streamed response has its body read
inside ``send``; a streamed one (``stream=True``) is tapped by wrapping ``response.raw`` so chunks
are seen as the caller reads them. Calls made from inside another captured client are skipped, so
nothing is counted twice.
"""

from __future__ import annotations

import functools
import sys
from typing import Any
from urllib.parse import urlsplit

from . import replay
from .recorder import Recorder, StreamTap, inside_capture

_ORIGINAL = "_tokenbudget_original_send"


def install(recorder: Recorder) -> bool:
    """Wrap ``requests.Session.send`` once requests has been imported; True when wrapped now."""
    module = sys.modules.get("requests")
    session_cls = getattr(module, "Session", None) if module is not None else None
    if session_cls is None or _ORIGINAL in session_cls.__dict__:
        return False
    original = session_cls.send

    @functools.wraps(original)
    def send(self: Any, request: Any, **kwargs: Any) -> Any:
        url = urlsplit(request.url or "")
        route = recorder.route(request.method or "", url.hostname or "", url.path)
        if route is None or inside_capture():
            return original(self, request, **kwargs)
        exchange = recorder.start(route, request)
        mark = replay.mark()
        try:
            with recorder.capturing():
                response = original(self, request, **kwargs)
        except BaseException as exc:
            if replay.replayed_since(mark):
                exchange.source = "replayed"
            recorder.failed(exchange, exc)
            raise
        if replay.replayed_since(mark):
            exchange.source = "replayed"
        content_type = response.headers.get("content-type", "")
        if not kwargs.get("stream"):
            recorder.body(exchange, response.status_code, response.content, content_type)
        else:
            tap = recorder.stream(exchange, response.status_code, content_type, "")
            response.raw = _RawTap(response.raw, tap, response.headers.get("content-encoding", ""))
        return response

    setattr(session_cls, _ORIGINAL, original)
    session_cls.send = send
    return True


def uninstall() -> None:
    module = sys.modules.get("requests")
    session_cls = getattr(module, "Session", None) if module is not None else None
    if session_cls is not None and _ORIGINAL in session_cls.__dict__:
        session_cls.send = session_cls.__dict__[_ORIGINAL]
        delattr(session_cls, _ORIGINAL)


class _RawTap:
    """Wraps urllib3's ``HTTPResponse``: ``stream``/``read`` results are fed to the tap.

    requests reads decoded content (``decode_content=True``); the tap is only given the
    content-encoding when the caller asks for raw, still-encoded bytes.
    """

    def __init__(self, inner: Any, tap: StreamTap, content_encoding: str) -> None:
        self._inner = inner
        self._tap = tap
        self._encoding = content_encoding
        self._decoded: bool | None = None

    def _feed(self, chunk: bytes, decoded: bool) -> None:
        if self._decoded is None:
            self._decoded = decoded
            if not decoded and self._encoding:
                self._tap.set_content_encoding(self._encoding)
        self._tap.feed(chunk)

    def stream(self, amt: int | None = 2**16, decode_content: bool | None = None) -> Any:
        decoded = decode_content is not False
        for chunk in self._inner.stream(amt, decode_content=decode_content):
            self._feed(chunk, decoded)
            yield chunk
        self._tap.eof()

    def read(self, amt: int | None = None, decode_content: bool | None = None, **kwargs: Any) -> bytes:
        data: bytes = self._inner.read(amt, decode_content=decode_content, **kwargs)
        if data:
            self._feed(data, decode_content is not False)
        if not data or amt is None:
            self._tap.eof()
        return data

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._tap.close()

    def release_conn(self) -> None:
        try:
            self._inner.release_conn()
        finally:
            self._tap.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
