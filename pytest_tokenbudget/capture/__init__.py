"""HTTP-level capture: wrap every HTTP stack in use, and restore them afterwards.

Nothing is imported to be wrapped: a library is wrapped once it has been imported, checked at
:meth:`Capture.install` and again at each :meth:`Capture.refresh` (cheap: a few dict lookups),
which the plugin calls at session start, after collection and before each test and fixture.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from . import aiohttp_stack, botocore_stack, httpx_clients, replay, requests_stack
from .recorder import Exchange, Recorder, StreamTap

if TYPE_CHECKING:
    from ..ledger import Ledger

__all__ = ["Capture", "Exchange", "Recorder", "StreamTap"]

_OTHER_STACKS = (("requests", requests_stack), ("aiohttp", aiohttp_stack), ("botocore", botocore_stack))


class Capture:
    """The installed wrappers of one session; :meth:`uninstall` restores every library."""

    def __init__(self, ledger: Ledger) -> None:
        self.recorder = Recorder(ledger)
        self.stacks: list[str] = []
        self._installed = False
        self._modules_seen = -1  # len(sys.modules) at the last refresh

    def install(self) -> None:
        self._installed = True
        self._modules_seen = -1
        self.refresh()

    def refresh(self) -> None:
        """Wrap the stacks imported since the last call (nothing to do while no module was)."""
        if not self._installed or len(sys.modules) == self._modules_seen:
            return
        self._modules_seen = len(sys.modules)
        replay.ensure_installed()
        self.stacks.extend(httpx_clients.install(self.recorder))
        for name, stack in _OTHER_STACKS:
            if stack.install(self.recorder):
                self.stacks.append(name)

    def uninstall(self) -> None:
        self._installed = False
        self._modules_seen = -1
        httpx_clients.uninstall()
        for _, stack in _OTHER_STACKS:
            stack.uninstall()
        replay.uninstall()
        self.stacks = []
