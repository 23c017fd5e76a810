"""Capture at ``aiohttp.ClientSession._request`` (google-genai's async client, litellm, others).

Every aiohttp request method ends in ``ClientSession._request`` (vcrpy and aioresponses patch the
same place). The response body is tapped on ``response.content`` itself: the reader's class is
swapped for a subclass of its own class made for it (``isinstance(resp.content, StreamReader)``
holds, its slots and attributes are the same object's) whose read methods feed the tap; whatever
the caller uses — ``read()``, ``text()``, ``json()``, ``iter_any()``, ``iter_chunked()``, line
iteration — the bytes it receives are fed to the tap, as it receives them. At the end of the body
the reader gets its own class back.
A request sent by a captured httpx client through an aiohttp transport (litellm) is not counted
again here.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from . import replay
from .recorder import Recorder, StreamTap, inside_capture

_ORIGINAL = "_tokenbudget_original_request"


def install(recorder: Recorder) -> bool:
    """Wrap ``ClientSession._request`` once aiohttp has been imported; True when wrapped now."""
    module = sys.modules.get("aiohttp")
    session_cls = getattr(module, "ClientSession", None) if module is not None else None
    if module is None or session_cls is None or _ORIGINAL in session_cls.__dict__:
        return False
    original = session_cls._request

    @functools.wraps(original)
    async def _request(self: Any, method: str, str_or_url: Any, *args: Any, **kwargs: Any) -> Any:
        url = module.client.URL(str_or_url) if not isinstance(str_or_url, module.client.URL) else str_or_url
        base_url = getattr(self, "_base_url", None)
        if base_url is not None and not url.is_absolute():
            url = base_url.join(url)
        route = recorder.route(method.upper(), url.host or "", url.path)
        if route is None or inside_capture():
            return await original(self, method, str_or_url, *args, **kwargs)
        exchange = recorder.start(route, kwargs.get("json"))
        mark = replay.mark()
        try:
            with recorder.capturing():
                response = await original(self, method, str_or_url, *args, **kwargs)
        except BaseException as exc:
            if replay.replayed_since(mark):
                exchange.source = "replayed"
            recorder.failed(exchange, exc)
            raise
        if replay.replayed_since(mark):
            exchange.source = "replayed"
        headers = response.headers
        tap = recorder.stream(exchange, response.status, headers.get("Content-Type", ""), "", headers)
        _tap_reader(response.content, tap, recorder)
        return response

    setattr(session_cls, _ORIGINAL, original)
    session_cls._request = _request
    return True


def uninstall() -> None:
    module = sys.modules.get("aiohttp")
    session_cls = getattr(module, "ClientSession", None) if module is not None else None
    if session_cls is not None and _ORIGINAL in session_cls.__dict__:
        session_cls._request = session_cls.__dict__[_ORIGINAL]
        delattr(session_cls, _ORIGINAL)


_ASYNC_READS = ("read", "readany", "readline", "readuntil", "readexactly", "readchunk")
_SYNC_READS = ("read_nowait",)


def _tap_reader(reader: Any, tap: StreamTap, recorder: Recorder) -> None:
    """Swap ``reader``'s class for a tapping subclass of it (no new slots: the same layout)."""
    base = type(reader)
    reads = _Reads(tap, recorder, base)
    namespace: dict[str, Any] = {"__slots__": (), "__module__": base.__module__}
    namespace["__qualname__"] = base.__qualname__
    for name in _ASYNC_READS:
        if callable(getattr(base, name, None)):
            namespace[name] = reads.async_reader(name, getattr(base, name))
    for name in _SYNC_READS:
        if callable(getattr(base, name, None)):
            namespace[name] = reads.sync_reader(getattr(base, name))
    try:
        reads.tapped = type(base.__name__, (base,), namespace)
        reader.__class__ = reads.tapped
    except TypeError:  # a reader whose class cannot be swapped: left alone, recorded closed early
        tap.close()


class _Reads:
    """The state behind one tapped reader: only the outermost read feeds (``read()`` calls
    ``readany()`` inside, ``readline()`` calls ``readuntil()``, ``readexactly()`` calls ``read()``)."""

    __slots__ = ("_base", "_depth", "_recorder", "_tap", "tapped")

    def __init__(self, tap: StreamTap, recorder: Recorder, base: type) -> None:
        self._tap = tap
        self._recorder = recorder
        self._base = base
        self._depth = 0
        self.tapped: type | None = None

    def async_reader(self, name: str, original: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
        @functools.wraps(original)
        async def read(reader: Any, *args: Any, **kwargs: Any) -> Any:
            if self._depth:
                return await original(reader, *args, **kwargs)
            self._depth += 1
            try:
                result = await original(reader, *args, **kwargs)
            finally:
                self._depth -= 1
            if name == "readchunk":
                data, end_of_chunk = result
                self._seen(reader, data, end=not data and not end_of_chunk)
            else:
                self._seen(reader, result, end=not result)
            return result

        return read

    def sync_reader(self, original: Callable[..., bytes]) -> Callable[..., bytes]:
        @functools.wraps(original)
        def read_nowait(reader: Any, *args: Any, **kwargs: Any) -> bytes:
            if self._depth:
                return original(reader, *args, **kwargs)
            self._depth += 1
            try:
                result = original(reader, *args, **kwargs)
            finally:
                self._depth -= 1
            self._seen(reader, result, end=False)
            return result

        return read_nowait

    def _seen(self, reader: Any, data: bytes, end: bool) -> None:
        """Feed what one outermost read returned; at the end of the body settle and give the reader
        its own class back. Never raises."""
        try:
            if data:
                self._tap.feed(data)
            if end or reader.at_eof():
                try:
                    self._tap.eof()
                finally:
                    if type(reader) is self.tapped:
                        reader.__class__ = self._base
        except Exception as exc:
            self._recorder.note_internal_error(exc)
