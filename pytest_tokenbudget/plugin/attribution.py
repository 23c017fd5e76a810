"""Who is charged for a call: the running test's phase, or a module or session fixture.

Each phase sets the running test's owner with a plain hook (they run three times per test, and a
plain hook costs a fraction of a wrapper); it stays until the next phase, and
``pytest_runtest_logfinish`` clears it: calls between tests are the session's. These hooks run for
every test, most of which make no LLM call, so each does as little as it can: the node id is read
once per test (``Item.nodeid`` builds a string at every read).
"""

from __future__ import annotations

import inspect
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ..ledger import Owner
    from .session import Session


class Attribution:
    """Registered where tests run (alone, or on an xdist worker)."""

    def __init__(self, session: Session) -> None:
        from ..ledger import Owner

        self.session = session
        self.ledger = session.ledger
        self.capture = session.capture
        self._owner_of = Owner
        self._fixture_teardowns: dict[int, Owner] = {}
        self._fixture_scopes: dict[pytest.FixtureDef[Any], str] = {}  # FixtureDef.scope is 3 calls
        self._item: pytest.Item | None = None  # the test whose phases run now (set at its setup)
        self._nodeid = ""  # and its node id
        self._warm = False  # what the first call loads is loaded (ahead of async tests: _warm_up)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.capture.refresh()  # test modules have imported their SDKs by now
        self.session.use_plugin_hooks()  # conftest files below the rootdir are loaded by now
        self.session.judges()  # the collected tests' markers are read by now

    def nodeid_of(self, item: pytest.Item) -> str:
        """``item.nodeid``, saved at its setup for the test set up last (the usual case)."""
        return self._nodeid if item is self._item else item.nodeid

    def _refresh(self) -> None:
        """Wrap HTTP stacks imported since (cheap unless a module was imported); the hard cap
        learns the cassettes vcrpy entered."""
        self.capture.refresh()
        hard_cap = self.session.hard_cap
        if hard_cap is not None:
            hard_cap.watch.refresh()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        self._refresh()
        if not self._warm and _is_async(getattr(item, "obj", None)):
            self._warm_up()
        self._item = item
        self._nodeid = nodeid = item.nodeid
        self.ledger.running(self._owner_of(nodeid, "setup"))

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_call(self, item: pytest.Item) -> None:
        self._refresh()
        self.ledger.running(self._owner_of(self.nodeid_of(item), "call"))

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_teardown(self, item: pytest.Item, nextitem: pytest.Item | None) -> None:
        self._refresh()
        self.ledger.running(self._owner_of(self.nodeid_of(item), "teardown"))

    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        self.ledger.running(None)
        self._item = None

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(
        self, fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
    ) -> Generator[None, Any, Any]:
        scope = self._fixture_scopes.get(fixturedef)
        if scope is None:  # a fixture's scope never changes: read once per definition
            scope = self._fixture_scopes[fixturedef] = fixturedef.scope
        if scope == "function":  # charged to the test's phase, like the test's own code
            return (yield)
        if not self._warm and _is_async(fixturedef.func):
            self._warm_up()
        label = f"<{scope} fixture {fixturedef.argname}>"
        self.session.outside_owners.add(label)
        owner = self._owner_of(label, "setup", "fixture")
        self._refresh()
        self.ledger.push_owner(owner)
        try:
            result = yield
        finally:
            self.ledger.pop_owner(owner)
        teardown = self._owner_of(label, "teardown", "fixture")
        # Finalizers run last-in first-out: this one runs just before the fixture's own teardown.
        fixturedef.addfinalizer(lambda: self.ledger.push_owner(teardown))
        self._fixture_teardowns[id(fixturedef)] = teardown
        return result

    def pytest_fixture_post_finalizer(self, fixturedef: pytest.FixtureDef[Any]) -> None:
        if not self._fixture_teardowns:  # no module or session fixture is set up: the usual
            return
        teardown = self._fixture_teardowns.pop(id(fixturedef), None)
        if teardown is not None:
            self.ledger.pop_owner(teardown)
            self.ledger.settle_streams(teardown.nodeid)
            self.ledger.drain()

    def _warm_up(self) -> None:
        """Before the first async test or fixture runs, load what the first captured call would
        otherwise load inside its event loop — response readers, prices, the request inspector,
        and the tokenizer when the hard cap estimates — so nothing the plugin does in a loop
        blocks it (BlockBuster raises on file reads there). Only once an HTTP stack is wrapped:
        an async suite that imports none makes no LLM call the plugin could see."""
        if not self.capture.stacks:
            return
        self._warm = True
        session = self.session
        try:
            self.capture.recorder.bind_readers()
            session.pricer.warm()
            if session.settings.enabled:
                session.inspector_now()
            if session.hard_cap is not None:
                from ..tokens.tokenizer import warm

                warm()
        except Exception as exc:  # then the first call does it, in the loop: reported if it fails
            self.capture.recorder.note_internal_error(exc, source="loading ahead of an event loop")


def _is_async(function: Any) -> bool:
    """A coroutine or async-generator function: it runs in an event loop (pytest-asyncio, anyio)."""
    return inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function)
