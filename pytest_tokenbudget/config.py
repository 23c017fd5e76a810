"""``[tool.tokenbudget]`` and the command line → one frozen :class:`Settings`.

Precedence, for every setting: command line, then ``[tool.tokenbudget]``, then the default
(markers, per test, come first of all and are read by the budget code). Every error names the file,
the key and what was expected; the plugin turns it into a pytest usage error.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

TABLE = "tool.tokenbudget"


class ConfigError(ValueError):
    """A setting that cannot be used; the message names where it came from."""


Mode = Literal["fail", "warn"]
"""``fail``: an overrun fails the run; ``warn``: everything is reported, the exit status left alone."""
Severity = Literal["ignore", "warn", "fail"]
"""What a doubtful number does to its verdict (``unknown-price``, ``unmetered``)."""
EstimatedPolicy = Literal["count", "warn-only"]
StalePolicy = Literal["warn", "fail"]
MissingBaselinePolicy = Literal["note", "warn", "fail"]


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the plugin reads from configuration, resolved once.

    Scalar keys are validated here; sub-tables (``per-test``, ``budgets``, ``prices``, ``aliases``,
    ``context-windows``) are kept raw in :attr:`tables` and parsed by the module that owns them
    (budgets.py, pricing.py, …) with the helpers below, so every error still names file and key.
    """

    enabled: bool = False
    mode: Mode = "fail"
    top: int = 5
    # reports (report/)
    json_path: Path | None = None
    junit_path: Path | None = None
    markdown_path: Path | None = None
    csv_path: Path | None = None
    html_path: Path | None = None  # report/html.py: one self-contained file
    calls_path: Path | None = None
    github_summary: bool = True  # append markdown to $GITHUB_STEP_SUMMARY under GitHub Actions
    github_annotations: bool = True  # ::error / ::warning workflow commands under GitHub Actions
    # budgets (budgets.py)
    warn_at: float = 0.8
    max_tokens: int | None = None  # session totals
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None
    max_cost: float | None = None
    max_calls: int | None = None
    hard_max_cost: float | None = None
    defer_session: bool = False
    # prices and estimates (pricing.py, tokenizer.py)
    unknown_price: Severity = "warn"
    estimated: EstimatedPolicy = "count"
    unmetered: Severity = "warn"
    context_warn_at: float = 0.9
    stale_cassette: StalePolicy = "warn"  # (stale.py)
    max_tool_schema_tokens: int | None = None  # per request, estimated (inspector.py)
    anatomy: str = "approximate"  # approximate | exact: how the request anatomy counts tokens
    max_system_tokens: int | None = None
    # baselines (baseline.py)
    baseline: str | None = None  # a path, or git:REF / git:REF:PATH
    baseline_file: Path | None = None  # where --token-budget-save-baseline writes by default
    save_baseline: Path | None = None  # set: write the baseline after the verdict
    update_baseline: bool = False  # save even when the run fails its budgets/thresholds
    max_increase: tuple[str, ...] = ()  # "10%", "total:10%", "test:25%", "cost:5%", "tokens:+5000"
    missing_baseline: MissingBaselinePolicy = "note"  # a configured baseline that is not there
    min_tokens: int = 1000  # below this many tokens a test's % growth is ignored
    save_run: bool = False
    history_dir: Path | None = None
    # OpenTelemetry (otel.py): export the run over OTLP; count gen_ai spans as calls
    otel: bool = False
    ingest_otel: bool = False
    # raw sub-tables and where they came from
    tables: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""  # the pyproject.toml the table came from, for messages
    root: Path = Path()

    @property
    def has_budgets(self) -> bool:
        """Session limits, a per-test default or scoped budgets are configured (markers aside)."""
        limits = (self.max_tokens, self.max_input_tokens, self.max_output_tokens, self.max_cost)
        if any(limit is not None for limit in (*limits, self.max_calls)):
            return True
        return "per-test" in self.tables or "budgets" in self.tables

    def context(self) -> Context:
        """Where sub-table values came from, for their error messages."""
        return Context(self.source or "pyproject.toml", self.root)


# key in [tool.tokenbudget] -> (Settings field, validator)
Validator = Callable[[str, Any, "Context"], Any]


@dataclass(frozen=True, slots=True)
class Context:
    """Where a value came from, for error messages and relative paths."""

    origin: str  # "pyproject.toml" path or "command line"
    root: Path

    def error(self, key: str, expected: str, value: Any) -> ConfigError:
        where = f"{self.origin}: [{TABLE}] {key}" if self.origin != "command line" else f"command line {key}"
        return ConfigError(f"{where}: expected {expected}, got {shown(value)}")


MAX_COUNT_LIMIT = 10**15
"""The largest token or call limit accepted (a quadrillion: no run comes near; more is a typo)."""
MAX_USD_LIMIT = 10**9
"""The largest amount in USD accepted for a cost limit."""


def shown(value: Any) -> str:
    """``value`` for an error message: its repr, a huge number by its size, a long text cut."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**18:
        sign = "negative " if value < 0 else ""  # no str(): over 4,300 digits that raises
        return f"a {sign}number of about {int(abs(value).bit_length() * math.log10(2)) + 1:,} digits"
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def boolean(key: str, value: Any, ctx: Context) -> bool:
    if isinstance(value, bool):
        return value
    raise ctx.error(key, "true or false", value)


def path(key: str, value: Any, ctx: Context) -> Path:
    if isinstance(value, (str, Path)) and str(value).strip() and "\0" not in str(value):
        candidate = Path(value)
        return candidate if candidate.is_absolute() else ctx.root / candidate
    raise ctx.error(key, "a file path (string)", value)


def output_file(key: str, value: Any, ctx: Context) -> Path:
    """A file the run writes: checked now, so a report that cannot be written is a usage error
    before any test runs rather than lost at the end."""
    target = path(key, value, ctx)
    problem = "it is a directory" if target.is_dir() else _unwritable_parent(target)
    if problem:
        raise ctx.error(key, f"a file path that can be written ({problem})", value)
    return target


def output_dir(key: str, value: Any, ctx: Context) -> Path:
    """A directory the run writes into (made if missing)."""
    target = path(key, value, ctx)
    problem = "it is a file" if target.exists() and not target.is_dir() else _unwritable_parent(target)
    if problem:
        raise ctx.error(key, f"a directory that can be written ({problem})", value)
    return target


def _unwritable_parent(target: Path) -> str:
    """Why ``target`` cannot be created, judged by its nearest existing ancestor; "" when it can."""
    for ancestor in target.parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                return f"{ancestor} is not a directory"
            if not os.access(ancestor, os.W_OK | os.X_OK):
                return f"{ancestor} is not writable"
            return ""
    return ""


def positive_int(key: str, value: Any, ctx: Context) -> int:
    number = _number(value)
    if isinstance(number, int) and number > 0:
        if number <= MAX_COUNT_LIMIT:
            return number
        raise ctx.error(key, f"a positive integer up to {MAX_COUNT_LIMIT:,}", value)
    raise ctx.error(key, "a positive integer", value)


def non_negative_int(key: str, value: Any, ctx: Context) -> int:
    number = _number(value)
    if isinstance(number, int) and number >= 0:
        if number <= MAX_COUNT_LIMIT:
            return number
        raise ctx.error(key, f"a whole number from 0 to {MAX_COUNT_LIMIT:,}", value)
    raise ctx.error(key, "a whole number >= 0", value)


def money(key: str, value: Any, ctx: Context) -> float:
    """USD: a number or a string like ``"2.50"`` / ``"$2.50"``; never negative, never absurd."""
    raw = value.strip().removeprefix("$") if isinstance(value, str) else value
    number = _number(raw)
    if number is not None and number >= 0:  # compared, never converted: 10**400 is no OverflowError
        if number <= MAX_USD_LIMIT:
            return float(number)
        raise ctx.error(key, f"an amount in USD from 0 to {MAX_USD_LIMIT:,}", value)
    raise ctx.error(key, "an amount in USD >= 0 (e.g. 2.50)", value)


def fraction(key: str, value: Any, ctx: Context) -> float:
    """A fraction in (0, 1]; ``"80%"`` is accepted too."""
    text = value.strip() if isinstance(value, str) else value
    scale = 1.0
    if isinstance(text, str) and text.endswith("%"):
        text, scale = text[:-1], 0.01
    number = _number(text)
    if number is not None and 0 < number <= 1 / scale:  # compared before any float conversion
        return float(number) * scale
    raise ctx.error(key, 'a fraction between 0 and 1 (e.g. 0.8 or "80%")', value)


def text(key: str, value: Any, ctx: Context) -> str:
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise ctx.error(key, "a non-empty string", value)


def strings(key: str, value: Any, ctx: Context) -> tuple[str, ...]:
    """A string or a list of strings (a repeated command-line option gives a list)."""
    items = [value] if isinstance(value, str) else value
    if isinstance(items, (list, tuple)) and items and all(isinstance(i, str) and i.strip() for i in items):
        return tuple(i.strip() for i in items)
    raise ctx.error(key, "a string or a list of strings", value)


def _number(value: Any) -> int | float | None:
    """An int or float from a TOML number or a command-line string; None if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return int(value.replace("_", "").replace(",", ""))
        except ValueError:
            try:
                return float(value)
            except ValueError:
                return None
    return None


def choice(*options: str) -> Validator:
    def validate(key: str, value: Any, ctx: Context) -> str:
        if value in options:
            return str(value)
        raise ctx.error(key, " or ".join(repr(o) for o in options), value)

    return validate


KEYS: dict[str, tuple[str, Validator]] = {
    "enabled": ("enabled", boolean),
    "mode": ("mode", choice("fail", "warn")),
    "top": ("top", positive_int),
    "json": ("json_path", output_file),
    "junit": ("junit_path", output_file),
    "markdown": ("markdown_path", output_file),
    "csv": ("csv_path", output_file),
    "html": ("html_path", output_file),
    "calls": ("calls_path", output_file),
    "github-summary": ("github_summary", boolean),
    "github-annotations": ("github_annotations", boolean),
    "warn-at": ("warn_at", fraction),
    "max-tokens": ("max_tokens", non_negative_int),
    "max-input-tokens": ("max_input_tokens", non_negative_int),
    "max-output-tokens": ("max_output_tokens", non_negative_int),
    "max-cost": ("max_cost", money),
    "max-calls": ("max_calls", non_negative_int),
    "hard-max-cost": ("hard_max_cost", money),
    "defer-session": ("defer_session", boolean),
    "unknown-price": ("unknown_price", choice("ignore", "warn", "fail")),
    "estimated": ("estimated", choice("count", "warn-only")),
    "unmetered": ("unmetered", choice("ignore", "warn", "fail")),
    "context-warn-at": ("context_warn_at", fraction),
    "stale-cassette": ("stale_cassette", choice("warn", "fail")),
    "anatomy": ("anatomy", choice("approximate", "exact")),
    "max-tool-schema-tokens": ("max_tool_schema_tokens", non_negative_int),
    "max-system-tokens": ("max_system_tokens", non_negative_int),
    "baseline": ("baseline", text),
    "baseline-file": ("baseline_file", output_file),
    "save-baseline": ("save_baseline", output_file),
    "update-baseline": ("update_baseline", boolean),
    "max-increase": ("max_increase", strings),
    "missing-baseline": ("missing_baseline", choice("note", "warn", "fail")),
    "min-tokens": ("min_tokens", non_negative_int),
    "save-run": ("save_run", boolean),
    "history-dir": ("history_dir", output_dir),
    "otel": ("otel", boolean),
    "ingest-otel": ("ingest_otel", boolean),
}
"""Scalar keys of the table (also the command line's ``--token-budget-<key>``)."""

SUBTABLES: frozenset[str] = frozenset({"per-test", "budgets", "prices", "aliases", "context-windows"})
"""Sub-tables, kept raw in :attr:`Settings.tables` and parsed by the module that owns them."""

DEFAULT_BASELINE_FILE = "tokenbudget.baseline.json"
DEFAULT_HISTORY_DIR = ".tokenbudget/runs"


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
    except ValueError as exc:  # TOMLDecodeError, or an integer literal of over 4,300 digits
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
            import difflib  # only for a wrong key's hint

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
    values.setdefault("baseline_file", root / DEFAULT_BASELINE_FILE)
    values.setdefault("history_dir", root / DEFAULT_HISTORY_DIR)
    tables = {key: table[key] for key in SUBTABLES if key in table}
    return Settings(**values, tables=tables, source=str(pyproject) if pyproject else "", root=root)
