"""Capture at ``aiohttp.ClientSession._request`` (google-genai's async client, litellm, others).

Every aiohttp request method ends in ``ClientSession._request`` (vcrpy and aioresponses patch the
same place). The response body is tapped by replacing ``response.content`` with a pass-through
reader: whatever the caller uses — ``read()``, ``text()``, ``json()``, ``iter_any()``,
``iter_chunked()``, line iteration — the bytes it receives are fed to the tap, as it receives them.
A request sent by a captured httpx client through an aiohttp transport (litellm) is not counted
again here.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import AsyncIterator
from typing import Any

from . import replay
from .recorder import Recorder, StreamTap, inside_capture

_ORIGINAL = "_tokenbudget_original_request"


def install(recorder: Recorder) -> bool:
    """Wrap ``ClientSession._request`` once aiohttp has been imported; True when wrapped now."""
    module = sys.modules.get("aiohttp")
    session_cls = getattr(module, "ClientSession", None) if module is not None else None
    if session_cls is None or _ORIGINAL in session_cls.__dict__:
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
        tap = recorder.stream(exchange, response.status, response.headers.get("Content-Type", ""), "")
        response.content = _ReaderTap(response.content, tap)
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


class _ReaderTap:
    """A pass-through for aiohttp's ``StreamReader`` (already decompressed by aiohttp)."""

    def __init__(self, inner: Any, tap: StreamTap) -> None:
        self._inner = inner
        self._tap = tap

    def _seen(self, data: bytes) -> bytes:
        if data:
            self._tap.feed(data)
        if not data or self._inner.at_eof():
            self._tap.eof()
        return data

    async def read(self, n: int = -1) -> bytes:
        return self._seen(await self._inner.read(n))

    async def readany(self) -> bytes:
        return self._seen(await self._inner.readany())

    async def readline(self, **kwargs: Any) -> bytes:
        return self._seen(await self._inner.readline(**kwargs))

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        return self._seen(await self._inner.readuntil(separator))

    async def readexactly(self, n: int) -> bytes:
        return self._seen(await self._inner.readexactly(n))

    async def readchunk(self) -> tuple[bytes, bool]:
        data, end_of_chunk = await self._inner.readchunk()
        self._seen(data)
        return data, end_of_chunk

    def read_nowait(self, n: int = -1) -> bytes:
        return self._seen(self._inner.read_nowait(n))

    async def iter_any(self) -> AsyncIterator[bytes]:
        while data := await self.readany():
            yield data

    async def iter_chunked(self, n: int) -> AsyncIterator[bytes]:
        while data := await self.read(n):
            yield data

    async def iter_chunks(self) -> AsyncIterator[tuple[bytes, bool]]:
        while True:
            data, end_of_chunk = await self.readchunk()
            if not data and not end_of_chunk:
                return
            yield data, end_of_chunk

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._lines()

    async def _lines(self) -> AsyncIterator[bytes]:
        while line := await self.readline():
            yield line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
