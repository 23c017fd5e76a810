"""Capture at ``Client.send`` / ``AsyncClient.send`` of httpx2 and httpx.

Every source of responses sits below ``send`` — the network, vcrpy's transport stubs,
pytest-httpx, respx, a ``MockTransport`` — so one class-level wrapper sees them all, once per
logical request (redirect and auth hops happen inside). httpx and httpx2 share this code; under
``httpx2.alias_httpx()`` both names are one module and it is wrapped once.
"""

from __future__ import annotations

import functools
import re
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

from . import replay
from .recorder import Exchange, Recorder, StreamTap, enter_capture, inside_capture, leave_capture

if TYPE_CHECKING:
    from ..providers import Route

_ORIGINAL = "_tokenbudget_original_send"
_MOCK_TRANSPORTS = frozenset({"MockTransport", "HTTPXMock", "_PytestSyncTransport", "_PytestAsyncTransport"})
_MOCK_MODULES = re.compile(r"(respx|pytest_httpx|unittest\.mock)(\.|$)")


def install(recorder: Recorder, module_names: tuple[str, ...] = ("httpx2", "httpx")) -> list[str]:
    """Wrap ``send`` in each of these libraries that is imported; returns the names wrapped.

    Nothing is imported here: a library imported later is wrapped by the next call (the plugin
    calls :meth:`Capture.refresh` at session start and before each test).
    """
    wrapped = []
    for name in module_names:
        module = sys.modules.get(name)
        if module is not None and _wrap_module(module, recorder):
            wrapped.append(name)
    return wrapped


def uninstall(module_names: tuple[str, ...] = ("httpx2", "httpx")) -> None:
    for name in module_names:
        module = sys.modules.get(name)
        if module is None:
            continue
        for cls in (module.Client, module.AsyncClient):
            original = cls.__dict__.get(_ORIGINAL)
            if original is not None:
                cls.send = original
                delattr(cls, _ORIGINAL)


def _wrap_module(module: ModuleType, recorder: Recorder) -> bool:
    if _ORIGINAL in module.Client.__dict__:
        return False  # already wrapped (httpx aliased to httpx2)
    sync_tee, async_tee = _tee_classes(module)
    original_sync = module.Client.send
    original_async = module.AsyncClient.send

    @functools.wraps(original_sync)
    def send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        url = request.url
        route = recorder.route(request.method, url.host, url.path)
        if route is None or inside_capture():
            return original_sync(self, request, *args, **kwargs)
        exchange = _begin(recorder, route, request, self)
        mark = replay.mark()
        token = enter_capture()
        try:
            response = original_sync(self, request, *args, **kwargs)
        except BaseException as exc:
            _note_replay(exchange, mark)
            recorder.failed(exchange, exc)
            raise
        finally:
            leave_capture(token)
        _note_replay(exchange, mark)
        tap = _observe(recorder, exchange, response)
        if tap is not None:
            response.stream = sync_tee(response.stream, tap)
        return response

    @functools.wraps(original_async)
    async def asend(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        url = request.url
        route = recorder.route(request.method, url.host, url.path)
        if route is None or inside_capture():
            return await original_async(self, request, *args, **kwargs)
        exchange = _begin(recorder, route, request, self)
        mark = replay.mark()
        token = enter_capture()
        try:
            response = await original_async(self, request, *args, **kwargs)
        except BaseException as exc:
            _note_replay(exchange, mark)
            recorder.failed(exchange, exc)
            raise
        finally:
            leave_capture(token)
        _note_replay(exchange, mark)
        tap = _observe(recorder, exchange, response)
        if tap is not None:
            response.stream = async_tee(response.stream, tap)
        return response

    setattr(module.Client, _ORIGINAL, original_sync)
    setattr(module.AsyncClient, _ORIGINAL, original_async)
    module.Client.send = send
    module.AsyncClient.send = asend
    return True


def _begin(recorder: Recorder, route: Route, request: Any, client: Any) -> Exchange:
    return recorder.start(route, request, "mocked" if _is_mocked(client, request) else "live")


def _note_replay(exchange: Exchange, mark: int) -> None:
    if replay.replayed_since(mark):
        exchange.source = "replayed"


def _is_mocked(client: Any, request: Any) -> bool:
    try:
        transport = client._transport_for_url(request.url)
    except Exception:  # a client subclass without the private helper: cannot tell
        return False
    if type(transport).__name__ in _MOCK_TRANSPORTS:
        return True
    # respx and pytest-httpx patch the transport's (or its connection pool's) handle_request
    return _patched_by_mock(transport) or _patched_by_mock(getattr(transport, "_pool", None))


def _patched_by_mock(target: Any) -> bool:
    if target is None:
        return False
    kind = type(target)
    for name in ("handle_request", "handle_async_request"):
        method = kind.__dict__.get(name) or getattr(kind, name, None)
        if method is not None and _MOCK_MODULES.match(getattr(method, "__module__", None) or ""):
            return True
    return False


def _observe(recorder: Recorder, exchange: Exchange, response: Any) -> StreamTap | None:
    """Record a read response now, or return a tap for a stream the caller will read."""
    if response.is_stream_consumed or response.is_closed:
        try:
            content = response.content
        except Exception as exc:  # e.g. ResponseNotRead after a caller closed it unread
            recorder.failed(exchange, exc)
            return None
        headers = response.headers
        recorder.body(exchange, response.status_code, content, headers.get("content-type", ""), headers)
        return None
    headers = response.headers
    return recorder.stream(
        exchange,
        response.status_code,
        headers.get("content-type", ""),
        headers.get("content-encoding", ""),
        headers,
    )


@functools.cache
def _tee_classes(module: ModuleType) -> tuple[type, type]:
    """Pass-through subclasses of this library's own byte-stream classes."""

    class SyncTee(module.SyncByteStream):  # type: ignore[name-defined,misc]
        __slots__ = ("_inner", "_tap")

        def __init__(self, inner: Any, tap: StreamTap) -> None:
            self._inner = inner
            self._tap = tap

        def __iter__(self) -> Any:
            feed = self._tap.feed
            for chunk in self._inner:
                feed(chunk)
                yield chunk
            self._tap.eof()

        def close(self) -> None:
            try:
                self._inner.close()
            finally:
                self._tap.close()

        @property
        def elapsed(self) -> Any:
            return getattr(self._inner, "elapsed", None)

    class AsyncTee(module.AsyncByteStream):  # type: ignore[name-defined,misc]
        __slots__ = ("_inner", "_tap")

        def __init__(self, inner: Any, tap: StreamTap) -> None:
            self._inner = inner
            self._tap = tap

        async def __aiter__(self) -> Any:
            feed = self._tap.feed
            async for chunk in self._inner:
                feed(chunk)
                yield chunk
            self._tap.eof()

        async def aclose(self) -> None:
            try:
                await self._inner.aclose()
            finally:
                self._tap.close()

        @property
        def elapsed(self) -> Any:
            return getattr(self._inner, "elapsed", None)

    return SyncTee, AsyncTee
