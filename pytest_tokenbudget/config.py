"""``[tool.tokenbudget]`` and the command line → one frozen :class:`Settings`.

Precedence, for every setting: command line, then ``[tool.tokenbudget]``, then the default
(markers, per test, come first of all and are read by the budget code). Every error names the file,
the key and what was expected; the plugin turns it into a pytest usage error.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TABLE = "tool.tokenbudget"


class ConfigError(ValueError):
    """A setting that cannot be used; the message names where it came from."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the plugin reads from configuration, resolved once."""

    enabled: bool = False
    json_path: Path | None = None
    top: int = 5
    mode: str = "fail"  # fail | warn: warn reports everything and leaves the exit status alone
    source: str = ""  # the file the table came from, for messages


# key in [tool.tokenbudget] -> (Settings field, validator)
Validator = Callable[[str, Any, "Context"], Any]


@dataclass(frozen=True, slots=True)
class Context:
    """Where a value came from, for error messages and relative paths."""

    origin: str  # "pyproject.toml" path or "command line"
    root: Path

    def error(self, key: str, expected: str, value: Any) -> ConfigError:
        where = f"{self.origin}: [{TABLE}] {key}" if self.origin != "command line" else f"command line {key}"
        return ConfigError(f"{where}: expected {expected}, got {value!r}")


def boolean(key: str, value: Any, ctx: Context) -> bool:
    if isinstance(value, bool):
        return value
    raise ctx.error(key, "true or false", value)


def path(key: str, value: Any, ctx: Context) -> Path:
    if isinstance(value, (str, Path)) and str(value).strip():
        candidate = Path(value)
        return candidate if candidate.is_absolute() else ctx.root / candidate
    raise ctx.error(key, "a file path (string)", value)


def positive_int(key: str, value: Any, ctx: Context) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise ctx.error(key, "a positive integer", value)


def choice(*options: str) -> Validator:
    def validate(key: str, value: Any, ctx: Context) -> str:
        if value in options:
            return str(value)
        raise ctx.error(key, " or ".join(repr(o) for o in options), value)

    return validate


KEYS: dict[str, tuple[str, Validator]] = {
    "enabled": ("enabled", boolean),
    "json": ("json_path", path),
    "top": ("top", positive_int),
    "mode": ("mode", choice("fail", "warn")),
}
"""Scalar keys of the table. Sub-tables (budgets, prices) are read by their own modules."""

SUBTABLES: frozenset[str] = frozenset()


def find_pyproject(rootpath: Path, inipath: Path | None) -> Path | None:
    """The pyproject.toml pytest uses as its config file, else the one at the rootdir."""
    if inipath is not None and inipath.name == "pyproject.toml":
        return inipath
    candidate = rootpath / "pyproject.toml"
    return candidate if candidate.is_file() else None


def read_table(pyproject: Path | None) -> dict[str, Any]:
    """The ``[tool.tokenbudget]`` table (empty when absent)."""
    if pyproject is None:
        return {}
    try:
        with pyproject.open("rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{pyproject}: not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{pyproject}: cannot be read: {exc}") from exc
    table = data.get("tool", {}).get("tokenbudget", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{pyproject}: [{TABLE}] must be a table, got {type(table).__name__}")
    return table


def resolve(
    table: Mapping[str, Any],
    cli: Mapping[str, Any],
    *,
    pyproject: Path | None,
    root: Path,
) -> Settings:
    """Combine the table and the command line (``cli`` maps table keys to values or None)."""
    file_ctx = Context(str(pyproject) if pyproject else "pyproject.toml", root)
    cli_ctx = Context("command line", root)
    known = set(KEYS) | set(SUBTABLES)
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in known:
            hint = difflib.get_close_matches(key, sorted(known), n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(
                f"{file_ctx.origin}: [{TABLE}] unknown key {key!r}{suggestion}; "
                f"known keys: {', '.join(sorted(known))}"
            )
        if key in KEYS:
            name, validate = KEYS[key]
            values[name] = validate(key, value, file_ctx)
    for key, value in cli.items():
        if value is None:
            continue
        name, validate = KEYS[key]
        values[name] = validate(
            f"--token-budget-{key}" if key != "enabled" else "--token-budget", value, cli_ctx
        )
    return Settings(**values, source=str(pyproject) if pyproject else "")
