"""Run a callback the moment a watched module has been imported: a post-import hook.

A finder first on ``sys.meta_path`` answers only for the watched names: it asks the finders after
it for the real spec and wraps that spec's loader, so the module is executed by its own loader and
the callback runs right after (then the module's ``__loader__`` is its own again). This is how
wrapt's post-import hooks and the OpenTelemetry instrumentations wrap a library that code imports
late — inside a test, a fixture, a function — not only the ones already imported at start-up.
Nothing is imported here, and a name nobody imports costs nothing.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from importlib.abc import Loader, MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any


class PostImportFinder(MetaPathFinder):
    """Calls ``on_import(name)`` after each watched module named in ``names`` is executed."""

    def __init__(self, names: Iterable[str], on_import: Callable[[str], None]) -> None:
        self.names = frozenset(names)
        self.on_import = on_import
        self._finding = threading.local()  # names this thread is looking up (no re-entry)

    def install(self) -> None:
        if self not in sys.meta_path:
            sys.meta_path.insert(0, self)

    def uninstall(self) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in self.names:
            return None
        finding: set[str] = self._finding.__dict__.setdefault("names", set())
        if fullname in finding:
            return None
        finding.add(fullname)
        try:
            spec = _spec_from_others(self, fullname, path, target)
        finally:
            finding.discard(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _NotifyingLoader(spec.loader, self)
        return spec


def _spec_from_others(
    me: MetaPathFinder, fullname: str, path: Sequence[str] | None, target: ModuleType | None
) -> ModuleSpec | None:
    """The spec the rest of ``sys.meta_path`` would give (what the import would do without us)."""
    for finder in list(sys.meta_path):
        if finder is me:
            continue
        find_spec = getattr(finder, "find_spec", None)
        if find_spec is None:
            continue
        spec: ModuleSpec | None = find_spec(fullname, path, target)
        if spec is not None:
            return spec
    return None


class _NotifyingLoader(Loader):
    """The module's own loader, and the callback once it has executed the module."""

    def __init__(self, loader: Any, finder: PostImportFinder) -> None:
        self._loader = loader
        self._finder = finder

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        module: ModuleType | None = self._loader.create_module(spec)
        return module

    def exec_module(self, module: ModuleType) -> None:
        loader = self._loader
        module.__loader__ = loader  # the module's own loader, as if we had never been here
        if module.__spec__ is not None:
            module.__spec__.loader = loader
        loader.exec_module(module)
        self._finder.on_import(module.__name__)

    def __getattr__(self, name: str) -> Any:  # get_source, get_resource_reader, is_package, …
        return getattr(self._loader, name)
