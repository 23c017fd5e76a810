"""Capture at ``urllib.request.AbstractHTTPHandler.do_open`` (plain ``urllib.request.urlopen``).

Every urllib HTTP(S) request is sent by ``do_open(http_class, req)``, and ``HTTPHandler.http_open``
looks ``http.client.HTTPConnection`` up when it calls it: a vcrpy cassette has swapped that name
for its stub by then, so replayed responses come back through here too (a class-level wrapper on
``HTTPConnection`` would miss them). Redirects are separate ``do_open`` calls: the 3xx answer is
not counted, the request it leads to is.

urllib hands the response to the caller unread. Its read methods are wrapped on the instance —
the object, and its type, stay urllib's own (``http.client.HTTPResponse``, or vcrpy's subclass) —
and feed a :class:`StreamTap` with the bytes the caller reads (still content-encoded: urllib does
not decompress); the call is recorded at the end of the body or at ``close()``. An error status is
recorded as failed at once and its body left to the caller (urllib raises ``HTTPError`` with it).

Plain ``http.client`` use is not captured: see the module notes at :func:`install`.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from . import replay
from .recorder import Exchange, Recorder, StreamTap, inside_capture

_ORIGINAL = "_tokenbudget_original_do_open"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_READS = {  # method: its size argument's name (a buffer for readinto)
    "read": "amt",
    "read1": "n",
    "readinto": "b",
    "readinto1": "b",
    "readline": "limit",
    "readlines": "hint",
}
_WHOLE = frozenset({"read", "readlines"})
"""Methods that, called without a size, return the rest of the body."""


def install(recorder: Recorder) -> bool:
    """Wrap ``AbstractHTTPHandler.do_open`` once urllib.request has been imported; True when now.

    (Direct ``http.client`` use is left alone: a wrapper on ``HTTPConnection.getresponse`` would
    see vcrpy's recordings but not its replays, and sits under urllib3, requests and botocore.)
    """
    module = sys.modules.get("urllib.request")
    handler_cls = getattr(module, "AbstractHTTPHandler", None) if module is not None else None
    if handler_cls is None or _ORIGINAL in handler_cls.__dict__:
        return False
    original = handler_cls.do_open

    @functools.wraps(original)
    def do_open(self: Any, http_class: Any, req: Any, **http_conn_args: Any) -> Any:
        if inside_capture():
            return original(self, http_class, req, **http_conn_args)
        url = urlsplit(req.full_url)
        route = recorder.route(req.get_method(), url.hostname or "", url.path)
        if route is None:
            return original(self, http_class, req, **http_conn_args)
        data = req.data
        exchange = recorder.start(route, bytes(data) if isinstance(data, (bytes, bytearray)) else None)
        mark = replay.mark()
        try:
            with recorder.capturing():
                response = original(self, http_class, req, **http_conn_args)
        except BaseException as exc:
            if replay.replayed_since(mark):
                exchange.source = "replayed"
            recorder.failed(exchange, exc)
            raise
        if replay.replayed_since(mark):
            exchange.source = "replayed"
        try:
            _observe(recorder, exchange, response)
        except Exception as exc:  # a bug of ours must not reach the caller's request
            recorder.note_internal_error(exc)
        return response

    setattr(handler_cls, _ORIGINAL, original)
    handler_cls.do_open = do_open
    return True


def uninstall() -> None:
    module = sys.modules.get("urllib.request")
    handler_cls = getattr(module, "AbstractHTTPHandler", None) if module is not None else None
    if handler_cls is not None and _ORIGINAL in handler_cls.__dict__:
        handler_cls.do_open = handler_cls.__dict__[_ORIGINAL]
        delattr(handler_cls, _ORIGINAL)


def _observe(recorder: Recorder, exchange: Exchange, response: Any) -> None:
    """Record an error status now; tap any other response's reads (a followed redirect: neither)."""
    status = int(getattr(response, "status", None) or response.getcode() or 0)
    headers = getattr(response, "headers", None) or response.info()
    content_type = headers.get("content-type", "") or ""
    if status in _REDIRECTS and headers.get("location"):
        return  # urllib's redirect handler sends the next request: that one is counted
    if status >= 400:
        recorder.body(exchange, status, b"", content_type, headers)
        return
    encoding = headers.get("content-encoding", "") or ""
    tap = recorder.stream(exchange, status, content_type, encoding, headers)
    _Reads(response, tap, recorder).install()


class _Reads:
    """The read methods of one response, set on the instance: what the caller reads is fed to the tap.

    Only the outermost call feeds (``read(n)`` calls ``self.readinto`` inside, ``readline`` may call
    ``peek``/``read``). At the end of the body or at ``close()`` the tap settles and the instance's
    own methods are removed again (which also lets the response go with its last reference). A
    response its test dropped half-read is settled at the test's end, methods removed too: the
    cycle through them is broken then, not at some later garbage collection.
    """

    __slots__ = ("_depth", "_installed", "_recorder", "_response", "_tap")

    def __init__(self, response: Any, tap: StreamTap, recorder: Recorder) -> None:
        self._response = response
        self._tap = tap
        self._recorder = recorder
        self._depth = 0
        self._installed: dict[str, Callable[..., Any]] = {}

    def install(self) -> None:
        response = self._response
        wrapped = {}
        for name in _READS:
            method = getattr(response, name, None)
            if method is not None:
                wrapped[name] = self._reader(name, method)
        wrapped["close"] = self._closer(response.close)
        self._installed = wrapped
        vars(response).update(wrapped)
        self._tap.settle_then(self._remove)

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
            self._seen(name, args[0] if args else kwargs.get(_READS[name]), result)
            return result

        return read

    def _closer(self, original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def close() -> Any:
            try:
                return original()
            finally:
                self._settle(eof=False)

        return close

    def _seen(self, name: str, size: Any, result: Any) -> None:
        """Feed what one outermost read returned; settle at the end of the body. Never raises."""
        if result is None:  # a non-blocking read with nothing there yet
            return
        try:
            if name.startswith("readinto"):
                if not len(size):
                    return
                data = bytes(memoryview(size).cast("B")[:result])
            else:
                if size == 0:
                    return
                data = b"".join(result) if name == "readlines" else result
            if data:
                self._tap.feed(data)
            unbounded = size is None or (isinstance(size, int) and size < 0)
            if not data or (name in _WHOLE and unbounded) or _at_end(self._response):
                self._settle(eof=True)
        except Exception as exc:
            self._recorder.note_internal_error(exc)

    def _settle(self, eof: bool) -> None:
        try:
            if eof:
                self._tap.eof()
            else:
                self._tap.close()
        finally:
            self._remove()

    def _remove(self) -> None:
        own = vars(self._response)
        for name, method in self._installed.items():
            if own.get(name) is method:  # unless someone replaced it since
                del own[name]
        self._installed = {}


def _at_end(response: Any) -> bool:
    """The body has been read to its end (http.client closes it then; vcrpy's replay counts down)."""
    try:
        if response.isclosed():
            return True
    except Exception:
        return False
    return getattr(response, "length_remaining", None) == 0
