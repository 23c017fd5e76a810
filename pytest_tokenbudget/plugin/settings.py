"""The session's settings, budgets and prices: read once, kept in the config's stash; every
configuration error is a pytest usage error that names the file, the key and what was expected."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from . import stash
from .options import cli_values, dest

if TYPE_CHECKING:
    from ..config import Settings
    from ..judge.budgets import Budgets
    from ..pricing.prices import Pricer

T = TypeVar("T")


def settings_of(config: pytest.Config) -> Settings:
    """The session's settings, read once (on first need when nothing configures the plugin)."""
    settings = config.stash.get(stash.settings_key, None)
    if settings is None:
        settings = config.stash[stash.settings_key] = _load_settings(config)
    return settings


def _load_settings(config: pytest.Config) -> Settings:
    from ..config import ConfigError, find_pyproject, read_table, resolve

    pyproject = find_pyproject(config.rootpath, config.inipath)
    cli = cli_values(config)
    save_baseline = config.getoption("token_budget_save_baseline")
    try:
        table = read_table(pyproject)
        settings = resolve(table, cli, pyproject=pyproject, root=config.rootpath)
    except ConfigError as exc:
        raise pytest.UsageError(f"pytest-tokenbudget: {exc}") from None
    changes: dict[str, Any] = {}
    if cli["defer-session"] is None and "defer-session" not in table and _is_shard(config):
        changes["defer_session"] = True  # pytest-split / pytest-shard: the merged run is judged
    if save_baseline == "":  # the flag without a path: the configured baseline file
        changes["save_baseline"] = settings.baseline_file
    if config.getoption("token_budget_no_github"):
        changes.update(github_summary=False, github_annotations=False)
    return dataclasses.replace(settings, **changes) if changes else settings


def check_rules(config: pytest.Config, settings: Settings) -> None:
    """``max-increase`` rules are parsed at start-up even with no baseline to use them on."""
    if not settings.max_increase:
        return
    from ..config import ConfigError
    from ..runs.baseline import parse_rules

    given = config.getoption(dest("max-increase")) is not None
    source = settings.source or "pyproject.toml"
    origin = "--token-budget-max-increase" if given else f"{source}: max-increase"
    try:
        parse_rules(settings.max_increase, origin)
    except ConfigError as exc:
        raise pytest.UsageError(f"pytest-tokenbudget: {exc}") from None


def _is_shard(config: pytest.Config) -> bool:
    """This session runs one part of a suite split by pytest-split or pytest-shard."""
    splits = config.getoption("splits", None)  # pytest-split: --splits N --group G
    shards = config.getoption("num_shards", None)  # pytest-shard: --num-shards N --shard-id I
    return any(isinstance(n, int) and not isinstance(n, bool) and n > 1 for n in (splits, shards))


def load_pricer(config: pytest.Config, settings: Settings) -> Pricer:
    """The session's prices (``[tool.tokenbudget.prices]``, aliases, genai-prices), parsed once."""
    from ..pricing.prices import Pricer

    return _parsed_once(config, stash.pricer_key, lambda: Pricer.from_settings(settings))


def load_budgets(config: pytest.Config, settings: Settings) -> Budgets:
    """Budgets from the settings, parsed once per session."""
    from ..judge.budgets import Budgets

    return _parsed_once(config, stash.budgets_key, lambda: Budgets.from_settings(settings))


def usage_error(make: Callable[[], T]) -> T:
    """``make()``, its ConfigError turned into a pytest usage error."""
    from ..config import ConfigError

    try:
        return make()
    except ConfigError as exc:
        raise pytest.UsageError(f"pytest-tokenbudget: {exc}") from None


def _parsed_once(config: pytest.Config, key: pytest.StashKey[T], parse: Callable[[], T]) -> T:
    """``parse()`` once per session, kept in the config's stash; a ConfigError is a usage error."""
    value = config.stash.get(key, None)
    if value is None:
        value = config.stash[key] = usage_error(parse)
    return value
