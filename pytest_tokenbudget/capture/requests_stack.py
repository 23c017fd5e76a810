"""Capture at ``requests.Session.send``.

Every requests call goes through ``Session.send`` (``requests.post`` makes a session too), and
vcrpy, responses and requests-mock all answer below it. A non-streamed response has its body read
inside ``send``; a streamed one (``stream=True``) is tapped on ``response.raw`` itself: its read
methods are set on the instance (the object, its type and its attributes — ``decode_content``
too — stay urllib3's own) and feed the tap what the caller reads; they are removed again once the
body ends or the response is closed. Calls made from inside another captured client are skipped,
so nothing is counted twice.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
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
            recorder.body(exchange, response.status_code, response.content, content_type, response.headers)
        else:
            tap = recorder.stream(exchange, response.status_code, content_type, "", response.headers)
            _RawReads(response.raw, tap, recorder, response.headers.get("content-encoding", "")).install()
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


_READS = ("read", "read1", "readinto")
_GENERATORS = ("stream", "read_chunked")
_CLOSES = ("close", "release_conn")


class _RawReads:
    """The read methods of one urllib3 ``HTTPResponse``, set on the instance; what the outermost
    call returns is fed to the tap (``stream`` calls ``read`` inside, ``readinto`` too).

    requests reads decoded content; a read is decoded when its ``decode_content`` says so, or when
    left out, as the response's own ``decode_content`` attribute says at that moment. The tap is
    given the content-encoding when the caller reads raw, still-encoded bytes.
    """

    __slots__ = ("_decoded", "_depth", "_encoding", "_ended", "_installed", "_recorder", "_response", "_tap")

    def __init__(self, response: Any, tap: StreamTap, recorder: Recorder, content_encoding: str) -> None:
        self._response = response
        self._tap = tap
        self._recorder = recorder
        self._encoding = content_encoding
        self._decoded: bool | None = None
        self._depth = 0
        self._ended = False  # released inside a read: the body ended
        self._installed: dict[str, Callable[..., Any]] = {}

    def install(self) -> None:
        response = self._response
        wrapped: dict[str, Callable[..., Any]] = {}
        for names, make in ((_READS, self._reader), (_GENERATORS, self._generator), (_CLOSES, self._closer)):
            for name in names:
                method = getattr(response, name, None)
                if callable(method):
                    wrapped[name] = make(name, method)
        try:
            vars(response).update(wrapped)
        except TypeError:  # no instance dict: leave it alone, the call is recorded closed early
            self._tap.close()
            return
        self._installed = wrapped

    def _is_decoded(self, decode_content: Any) -> bool:
        if decode_content is None:
            decode_content = getattr(self._response, "decode_content", True)
        return bool(decode_content)

    def _reader(self, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def read(*args: Any, **kwargs: Any) -> Any:
            if self._depth:
                return original(*args, **kwargs)
            self._depth += 1
            try:
                result = original(*args, **kwargs)
            finally:
                self._depth -= 1
            self._seen(name, args, kwargs, result)
            return result

        return read

    def _generator(self, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def generate(*args: Any, **kwargs: Any) -> Iterator[bytes]:
            if self._depth:
                yield from original(*args, **kwargs)
                return
            decoded = self._is_decoded(_argument(args, kwargs, 1, "decode_content"))
            chunks = original(*args, **kwargs)
            while True:
                self._depth += 1
                try:
                    chunk = next(chunks)
                except StopIteration:
                    break
                finally:
                    self._depth -= 1
                self._feed(chunk, decoded)
                if self._ended:
                    self._settle(eof=True)
                yield chunk
            self._settle(eof=True)

        return generate

    def _closer(self, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def close(*args: Any, **kwargs: Any) -> Any:
            if self._depth:  # urllib3 releases the connection inside the read that ends the body
                self._ended = True
                return original(*args, **kwargs)
            try:
                return original(*args, **kwargs)
            finally:
                self._settle(eof=False)

        return close

    def _seen(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> None:
        """Feed what one outermost read returned; settle at the end of the body. Never raises."""
        try:
            if name == "readinto":
                buffer = _argument(args, kwargs, 0, "b")
                data = bytes(memoryview(buffer).cast("B")[: result or 0])
                amt = len(buffer)
                decoded = self._is_decoded(None)
            else:
                data = result or b""
                amt = _argument(args, kwargs, 0, "amt")
                decoded = self._is_decoded(_argument(args, kwargs, 1, "decode_content"))
            if amt == 0:
                return
            if data:
                self._feed(data, decoded)
            if not data or self._ended or amt is None or (isinstance(amt, int) and amt < 0):
                self._settle(eof=True)
        except Exception as exc:
            self._recorder.note_internal_error(exc)

    def _feed(self, chunk: bytes, decoded: bool) -> None:
        if self._decoded is None:
            self._decoded = decoded
            if not decoded and self._encoding:
                self._tap.set_content_encoding(self._encoding)
        self._tap.feed(chunk)

    def _settle(self, eof: bool) -> None:
        """End the call (once) and take the instance's own methods off again."""
        if not self._installed:
            return
        try:
            if eof:
                self._tap.eof()
            else:
                self._tap.close()
        finally:
            own = vars(self._response)
            for name, method in self._installed.items():
                if own.get(name) is method:  # unless someone replaced it since
                    del own[name]
            self._installed = {}


def _argument(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str) -> Any:
    """A call's argument by position or name (None when not given)."""
    return args[index] if len(args) > index else kwargs.get(name)
