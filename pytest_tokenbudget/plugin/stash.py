"""What the plugin keeps in pytest's stashes (the config's, and each item's)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # named in the keys' strings only
    from ..config import Settings  # noqa: F401
    from ..judge.budgets import Budgets, Limits  # noqa: F401
    from ..pricing.prices import Pricer  # noqa: F401
    from .session import Session  # noqa: F401

session_key = pytest.StashKey["Session"]()
settings_key = pytest.StashKey["Settings"]()
budgets_key = pytest.StashKey["Budgets"]()
pricer_key = pytest.StashKey["Pricer"]()
marker_key = pytest.StashKey["Limits"]()
"""An item's validated ``token_budget`` marker."""
bad_phase_key = pytest.StashKey[bool]()
"""An item's setup or call failed or skipped: its teardown does not judge it again."""
any_marker_key = pytest.StashKey[bool]()
"""Some collected item has a ``token_budget`` marker."""
