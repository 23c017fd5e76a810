"""The artifact's layout, declared once, and how its values are read back.

Each record the artifact holds many of — a tally (a test's total, each phase, each model), the head
of a test entry, a verdict — has its fields named here, in the order they are written. The model's
``to_dict`` methods and the artifact's fast encoder (:mod:`pytest_tokenbudget.runs.artifact`) both
derive from these tuples: a field added here appears in both, in the same place.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Final, NamedTuple

SCHEMA_VERSION: Final = 1
"""Version of the JSON run artifact layout; bumped on any incompatible change."""


class Kind(enum.Enum):
    """What a tally's field holds, which says how it is written."""

    COUNT = "a whole number"
    MONEY = "an amount in USD, written rounded to 10 decimal places"
    FLAG = "true or false"


class Field(NamedTuple):
    """One field of a tally: its name (an attribute of :class:`~pytest_tokenbudget.model.Tally`),
    its kind, and whether it is ``rare``: zero (or true, for ``cost_known``) in almost every tally,
    because it is read from ``Tally.caveats``."""

    name: str
    kind: Kind = Kind.COUNT
    rare: bool = False


TALLY_FIELDS: Final = (
    Field("calls"),
    Field("input_tokens"),
    Field("cached_input_tokens"),
    Field("cache_write_tokens"),
    Field("output_tokens"),
    Field("reasoning_tokens"),
    Field("total_tokens"),
    Field("cost_usd", Kind.MONEY),  # over priced calls only
    Field("cost_known", Kind.FLAG, rare=True),  # false: some call with tokens had no price
    Field("unpriced_calls", rare=True),
    Field("live_calls"),
    Field("live_cost_usd", Kind.MONEY),
    Field("replayed_calls"),
    Field("replayed_cost_usd", Kind.MONEY),  # replayed and mocked calls
    Field("manual_calls", rare=True),
    Field("estimated_calls", rare=True),
    Field("unparsed_calls", rare=True),
    Field("failed_calls", rare=True),
    Field("unmetered_calls", rare=True),
)
"""A tally as the artifact writes it (its totals, models, providers, and each test's total, phases
and models)."""

TEST_HEAD_FIELDS: Final = ("kind", "path", "line", "outcome")
"""The head of a test entry, before its ``markers`` (when it has any) and its total's
:data:`TALLY_FIELDS`; then come ``phases`` and ``models``, and ``anatomy``, ``context`` and
``stale`` when measured."""

VERDICT_FIELDS: Final = (
    "name",
    "kind",
    "metric",
    "limit",
    "actual",
    "status",
    "message",
    "nodeid",
    "path",
    "line",
)
"""A verdict as the artifact writes it."""


class ArtifactError(ValueError):
    """A run artifact (or baseline) that cannot be read: says what is wrong and where."""


MAX_ARTIFACT_COUNT: Final = 10**15
"""The largest count an artifact may hold (no run comes near a quadrillion tokens)."""
MAX_ARTIFACT_USD: Final = 10**12


def shown(value: Any) -> str:
    """A value for a one-line error: a huge number by its size, a long repr cut."""
    if isinstance(value, int) and abs(value) > 10**18:
        return f"a number of {abs(value).bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def count_of(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ARTIFACT_COUNT:
        raise ArtifactError(f"{key!r} must be a whole number from 0 to 10^15, got {shown(value)}")
    return value


def amount_of(data: Mapping[str, Any], key: str) -> float:
    value = data.get(key, 0.0)
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_ARTIFACT_USD:
        raise ArtifactError(f"{key!r} must be an amount from 0 to 10^12, got {shown(value)}")
    return float(value)  # NaN and infinities fail the range test above


def list_of(data: Mapping[str, Any], key: str) -> list[Any]:
    value = data.get(key) or []
    if not isinstance(value, list):
        raise ArtifactError(f"{key!r} must be a list, got {type(value).__name__}")
    return value


def mapping_of(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key) or {}
    if not isinstance(value, Mapping):
        raise ArtifactError(f"{key!r} must be a table/object, got {type(value).__name__}")
    return value


def money(value: float) -> float:
    """Stable money formatting for artifacts: 10 decimal places, no float noise."""
    return round(value, 10)
