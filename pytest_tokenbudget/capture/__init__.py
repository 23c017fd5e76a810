"""HTTP-level capture: wrap every HTTP stack in use, and restore them afterwards.

Nothing is imported to be wrapped: a library is wrapped the moment it has been imported — by a
post-import hook on ``sys.meta_path`` (``import_hooks.py``), so an SDK imported inside a test or a
fixture is wrapped before its first request — and those imported before the plugin switched on
are wrapped at :meth:`Capture.install`. :meth:`Capture.refresh` (a few dict lookups) catches a
library some other finder loaded past the hook. The wrapper of a library is imported with it,
not before; what reads a response (providers, framing) is imported at the first captured request
(see ``recorder.py``).
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import TYPE_CHECKING

from . import replay
from .import_hooks import PostImportFinder
from .recorder import Exchange, Recorder, StreamTap

if TYPE_CHECKING:
    from ..ledger import Ledger

__all__ = ["Capture", "Exchange", "Recorder", "StreamTap"]

_HTTPX = ("httpx2", "httpx")
_OTHER_STACKS = (  # (name, the module that says the library is imported, its wrapper module)
    ("requests", "requests", "requests_stack"),
    ("aiohttp", "aiohttp", "aiohttp_stack"),
    ("botocore", "botocore.client", "botocore_stack"),
    ("urllib", "urllib.request", "urllib_stack"),
)


class Capture:
    """The installed wrappers of one session; :meth:`uninstall` restores every library."""

    def __init__(self, ledger: Ledger) -> None:
        self.recorder = Recorder(ledger)
        self.stacks: list[str] = []
        self._installed = False
        self._modules_seen = -1  # len(sys.modules) at the last refresh
        watched = (*_HTTPX, *(library for _, library, _ in _OTHER_STACKS))
        self._import_hook = PostImportFinder(watched, self._imported)

    def install(self) -> None:
        self._installed = True
        self._modules_seen = -1
        self._import_hook.install()
        self.refresh()

    def _imported(self, name: str) -> None:
        """A watched library has just been imported (inside the import): wrap it now. Never raises
        into the importing code; a failure is reported with the calls' errors."""
        self._modules_seen = -1  # whatever the count: this import may have completed one
        try:
            self.refresh(just_imported=name)
        except Exception as exc:
            self.recorder.note_internal_error(exc, source=f"wrapping {name} at its import")

    def refresh(self, just_imported: str = "") -> None:
        """Wrap the stacks imported since the last call (nothing to do while no module was);
        ``just_imported``: the module whose import hook is calling, executed but still flagged
        as importing."""
        if not self._installed or len(sys.modules) == self._modules_seen:
            return
        self._modules_seen = len(sys.modules)
        replay.ensure_installed()

        def imported(name: str) -> bool:
            return name == just_imported or _imported_fully(name)

        ready = [name for name in _HTTPX if imported(name)]
        if ready:
            self.stacks.extend(_wrapper("httpx_clients").install(self.recorder, tuple(ready)))
        for name, library, wrapper in _OTHER_STACKS:
            if imported(library) and _wrapper(wrapper).install(self.recorder):
                self.stacks.append(name)

    def uninstall(self) -> None:
        self._installed = False
        self._modules_seen = -1
        self._import_hook.uninstall()
        for wrapper in ("httpx_clients", *(wrapper for _, _, wrapper in _OTHER_STACKS)):
            module = sys.modules.get(f"{__name__}.{wrapper}")  # one never imported wrapped nothing
            if module is not None:
                module.uninstall()
        replay.uninstall()
        self.stacks = []


def _imported_fully(name: str) -> bool:
    """``name`` is imported and has finished executing. A library still being imported (httpx2
    imports urllib.request half-way through its own import, which runs urllib's hook) is left
    to the hook that runs when it is done."""
    module = sys.modules.get(name)
    if module is None:
        return False
    spec = getattr(module, "__spec__", None)
    return not getattr(spec, "_initializing", False)  # importlib's own flag, set while it executes


def _wrapper(name: str) -> ModuleType:
    """The wrapper module ``name`` of this package, imported on first use. (Looked up in sys.modules,
    never as a package attribute: an in-process pytester session drops the modules it imported.)"""
    return importlib.import_module(f"{__name__}.{name}")
