"""The artifact's layout and how its values are read back: the schema version, the checks on each
number, and the one error every reading problem becomes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

SCHEMA_VERSION: Final = 1
"""Version of the JSON run artifact layout; bumped on any incompatible change."""


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
