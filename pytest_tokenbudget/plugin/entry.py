"""What pytest loads at start-up: the hook specs, the options, the marker, and the switch.

Off (installed, nothing configured) this reads no file but pyproject.toml and registers one small
object that switches the plugin on if a collected test asks for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from . import stash
from .options import add_options, configured_nowhere
from .settings import check_rules, load_budgets, load_pricer, settings_of

if TYPE_CHECKING:
    from .session import Session

MARKER = "token_budget"
MARKER_HELP = (
    "token_budget(max_tokens=None, *, max_input_tokens=None, max_output_tokens=None, "
    "max_cost=None, max_calls=None): fail the test when its LLM calls exceed these limits "
    "(a bare number is max_tokens; max_cost in USD). See pytest-tokenbudget."
)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from .. import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    if configured_nowhere(config):  # installed but off: read nothing, import nothing more
        config.pluginmanager.register(_ActivateOnDemand(), "tokenbudget-on-demand")
        return
    settings = settings_of(config)
    check_rules(config, settings)  # every setting is checked now, whether or not it will be used
    if "per-test" in settings.tables or "budgets" in settings.tables:
        load_budgets(config, settings)  # a bad budget table is a usage error now, not later
    if "prices" in settings.tables or "aliases" in settings.tables:
        load_pricer(config, settings)  # likewise a bad price table
    if settings.enabled or settings.hard_max_cost is not None:  # a safety limit always applies
        activate(config)
    else:
        config.pluginmanager.register(_ActivateOnDemand(), "tokenbudget-on-demand")


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(stash.session_key, None)
    if session is not None:
        session.close()
        for role in session.roles:
            config.pluginmanager.unregister(role)
        del config.stash[stash.session_key]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Validate every ``token_budget`` marker at collection: a typo is a usage error, not a no-op.

    The closest marker wins (function over class over module); markers are not merged.
    """
    for item in items:
        marker = item.get_closest_marker(MARKER)
        if marker is None:
            continue
        from ..judge.budgets import BudgetError, marker_limits

        try:
            item.stash[stash.marker_key] = marker_limits(marker.args, marker.kwargs)
        except BudgetError as exc:
            raise pytest.UsageError(f"pytest-tokenbudget: {item.nodeid}: {exc}") from None
        config.stash[stash.any_marker_key] = True


def activate(config: pytest.Config) -> Session:
    """Switch capture on for this session (idempotent): make the session and register its roles."""
    session = config.stash.get(stash.session_key, None)
    if session is None:
        from .session import Session

        session = Session(config, settings_of(config))
        config.stash[stash.session_key] = session
        for role in session.roles:
            config.pluginmanager.register(role, f"tokenbudget-{type(role).__name__.lower()}")
    return session


class _ActivateOnDemand:
    """Without ``--token-budget``: switch capture on only if a collected test asks for it."""

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        for item in items:
            if item.get_closest_marker(MARKER) is not None or "token_usage" in getattr(
                item, "fixturenames", ()
            ):
                activate(config)
                return
