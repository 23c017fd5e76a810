"""HTTP-level capture: install wrappers on every HTTP stack present, remove them again."""

from __future__ import annotations

from ..ledger import Ledger
from . import httpx_clients, replay
from .recorder import Exchange, Recorder, StreamTap

__all__ = ["Capture", "Exchange", "Recorder", "StreamTap"]


class Capture:
    """The installed wrappers of one session; :meth:`uninstall` restores every library."""

    def __init__(self, ledger: Ledger) -> None:
        self.recorder = Recorder(ledger)
        self.stacks: list[str] = []

    def install(self) -> None:
        replay.ensure_installed()
        self.stacks = httpx_clients.install(self.recorder)

    def uninstall(self) -> None:
        httpx_clients.uninstall()
        replay.uninstall()
        self.stacks = []
