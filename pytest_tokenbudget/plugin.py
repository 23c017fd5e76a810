"""The pytest plugin: options, markers, the ``token_usage`` fixture, and the session hooks.

This is the only module that speaks pytest. Loading it costs nothing more than reading
``[tool.tokenbudget]``: capture, providers and reports are imported only when the plugin is
switched on (``--token-budget``, ``enabled = true``, or a collected test that uses the
``token_budget`` marker or the ``token_usage`` fixture).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import sys
import threading
import time
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable

    from .budgets import Budgets, Limits  # noqa: F401 - Limits is named in a StashKey string
    from .capture.recorder import Exchange
    from .config import Settings  # imported on first need: an installed-but-off plugin never does
    from .hardcap import HardCap
    from .inspector import Inspector
    from .ledger import Ledger, Owner
    from .model import Call, Run, TestUsage, Verdict
    from .pricing import Pricer
    from .report.export import CallLog

    Evaluator = Callable[[Run], list[Verdict]]

T = TypeVar("T")

MARKER = "token_budget"
MARKER_HELP = (
    "token_budget(max_tokens=None, *, max_input_tokens=None, max_output_tokens=None, "
    "max_cost=None, max_calls=None): fail the test when its LLM calls exceed these limits "
    "(a bare number is max_tokens; max_cost in USD). See pytest-tokenbudget."
)

_plugin_key = pytest.StashKey["TokenBudgetPlugin"]()
_settings_key = pytest.StashKey["Settings"]()
_budgets_key = pytest.StashKey["Budgets"]()
_pricer_key = pytest.StashKey["Pricer"]()
_marker_key = pytest.StashKey["Limits"]()  # an item's validated token_budget marker
_bad_phase_key = pytest.StashKey[bool]()  # setup/call failed or skipped: teardown does not judge again
_any_marker_key = pytest.StashKey[bool]()  # some collected item has a token_budget marker
# What an xdist worker ships on its reports travels as JSON text: execnet serialises one string in
# about a microsecond, and a test's usage as nested dicts (three tallies of 19 numbers) in ~70 µs,
# plus ~80 µs to read it back on the controller, which merges every worker's tests by itself.
REPORT_ATTR = "tokenbudget"
"""Attribute set on teardown reports of xdist workers: the test's usage (its artifact entry)."""
VERDICTS_ATTR = "tokenbudget_verdicts"
"""Attribute set on teardown reports of xdist workers: the test's budget verdicts."""
OUTSIDE_ATTR = "tokenbudget_outside"
"""xdist: a worker's fixture (and session) usage so far, shipped when it changed: a worker that
crashes later loses none of it."""


# -- options and configuration -------------------------------------------------------------------


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from . import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


_OPTIONS: tuple[tuple[str, str, str], ...] = (
    # (table key, metavar, help) — each is also ``--token-budget-<key>`` on the command line
    ("json", "PATH", "write the JSON run artifact to PATH."),
    ("junit", "PATH", "write a JUnit XML report with one test case per budget to PATH."),
    ("markdown", "PATH", "write the markdown report (PR comment / job summary) to PATH."),
    ("csv", "PATH", "write per-test usage as CSV to PATH."),
    ("calls", "PATH", "write one JSON line per LLM call to PATH."),
    ("mode", "fail|warn", "warn: report overruns but leave the exit status alone."),
    ("warn-at", "FRACTION", "warn when usage reaches this fraction of a budget (default 0.8)."),
    ("max-tokens", "N", "session budget: total tokens."),
    ("max-input-tokens", "N", "session budget: input tokens."),
    ("max-output-tokens", "N", "session budget: output tokens."),
    ("max-cost", "USD", "session budget: cost in USD."),
    ("max-calls", "N", "session budget: number of LLM calls."),
    ("hard-max-cost", "USD", "refuse live requests once the session's live spend would exceed USD."),
    ("unknown-price", "ignore|warn|fail", "what a cost budget does about calls with no known price."),
    ("baseline", "SOURCE", "compare with a baseline: a path, git:REF or git:REF:PATH."),
    ("min-tokens", "N", "ignore %% growth of tests below N tokens in baseline thresholds."),
    ("missing-baseline", "note|warn|fail", "a configured baseline that is not found: note, warn or fail."),
    ("stale-cassette", "warn|fail", "a cassette whose request drifted from its recording: warn or fail."),
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tokenbudget", "LLM token budgets")
    group.addoption(
        "--token-budget",
        action="store_true",
        default=None,
        dest="token_budget",
        help="capture LLM calls, report tokens per test and enforce the budgets.",
    )
    for key, metavar, text in _OPTIONS:
        group.addoption(f"--token-budget-{key}", default=None, dest=_dest(key), metavar=metavar, help=text)
    group.addoption(
        "--token-budget-max-increase",
        action="append",
        default=None,
        dest="token_budget_max_increase",
        metavar="RULE",
        help="fail on growth against the baseline: 10%%, total:10%%, test:25%%, cost:5%%, tokens:+5000 "
        "(repeatable).",
    )
    group.addoption(
        "--token-budget-save-baseline",
        nargs="?",
        const="",
        default=None,
        dest="token_budget_save_baseline",
        metavar="PATH",
        help="after a passing run, save it as the baseline (default: tokenbudget.baseline.json).",
    )
    group.addoption(
        "--token-budget-update-baseline",
        action="store_true",
        default=None,
        dest="token_budget_update_baseline",
        help="save the baseline even when the run exceeds its budgets or thresholds (accept growth).",
    )
    group.addoption(
        "--token-budget-save-run",
        action="store_true",
        default=None,
        dest="token_budget_save_run",
        help="keep this run in the history folder (.tokenbudget/runs/) for `tokenbudget history`.",
    )
    group.addoption(
        "--token-budget-defer-session",
        action="store_true",
        default=None,
        dest="token_budget_defer_session",
        help="a shard of a larger run: leave session budgets to `tokenbudget check` on the merged run.",
    )
    group.addoption(
        "--token-budget-no-github",
        action="store_true",
        default=False,
        dest="token_budget_no_github",
        help="under GitHub Actions, write neither the job summary nor annotations.",
    )
    group.addoption(
        "--token-budget-otel",
        action="store_true",
        default=None,
        dest="token_budget_otel",
        help="export the run over OTLP (configured by the OTEL_EXPORTER_OTLP_* variables).",
    )
    group.addoption(
        "--token-budget-ingest-otel",
        action="store_true",
        default=None,
        dest="token_budget_ingest_otel",
        help="count the code under test's gen_ai OpenTelemetry spans as calls (HTTP-captured once).",
    )


def _dest(key: str) -> str:
    return "token_budget_" + key.replace("-", "_")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    if _configured_nowhere(config):  # installed but off: read nothing, import nothing more
        config.pluginmanager.register(_ActivateOnDemand(), "tokenbudget-on-demand")
        return
    settings = _settings(config)
    _check_rules(config, settings)  # every setting is checked now, whether or not it will be used
    if "per-test" in settings.tables or "budgets" in settings.tables:
        _load_budgets(config, settings)  # a bad budget table is a usage error now, not later
    if "prices" in settings.tables or "aliases" in settings.tables:
        _load_pricer(config, settings)  # likewise a bad price table
    if settings.enabled or settings.hard_max_cost is not None:  # a safety limit always applies
        activate(config)
    else:
        config.pluginmanager.register(_ActivateOnDemand(), "tokenbudget-on-demand")


def pytest_unconfigure(config: pytest.Config) -> None:
    plugin = config.stash.get(_plugin_key, None)
    if plugin is not None:
        plugin.close()
        config.pluginmanager.unregister(plugin)
        del config.stash[_plugin_key]


def _configured_nowhere(config: pytest.Config) -> bool:
    """No ``--token-budget…`` option is given and no pyproject.toml mentions tokenbudget: every
    setting is its default (off), so nothing needs parsing until a test asks for the plugin."""
    if any(value is not None for value in _cli_values(config).values()):
        return False
    if config.getoption("token_budget_save_baseline") is not None:  # also the bare flag ("")
        return False
    if config.getoption("token_budget_no_github"):
        return False
    inipath = config.inipath
    pyproject = inipath if inipath is not None and inipath.name == "pyproject.toml" else None
    try:
        text = (pyproject or config.rootpath / "pyproject.toml").read_bytes()
    except OSError:  # no pyproject.toml
        return True
    return b"tokenbudget" not in text


def _cli_values(config: pytest.Config) -> dict[str, Any]:
    """The command line's settings by table key (None where an option is not given)."""
    cli: dict[str, Any] = {"enabled": config.getoption("token_budget")}
    for key in [k for k, _, _ in _OPTIONS] + [
        "max-increase",
        "update-baseline",
        "save-run",
        "defer-session",
        "otel",
        "ingest-otel",
    ]:
        cli[key] = config.getoption(_dest(key))
    save_baseline = config.getoption("token_budget_save_baseline")
    if save_baseline:  # a path; the bare flag ("") means the configured file, decided later
        cli["save-baseline"] = save_baseline
    return cli


def _settings(config: pytest.Config) -> Settings:
    """The session's settings, read once (on first need when nothing configures the plugin)."""
    settings = config.stash.get(_settings_key, None)
    if settings is None:
        settings = config.stash[_settings_key] = _load_settings(config)
    return settings


def _load_settings(config: pytest.Config) -> Settings:
    from .config import ConfigError, find_pyproject, read_table, resolve

    pyproject = find_pyproject(config.rootpath, config.inipath)
    cli = _cli_values(config)
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


def _check_rules(config: pytest.Config, settings: Settings) -> None:
    """``max-increase`` rules are parsed at start-up even with no baseline to use them on."""
    if not settings.max_increase:
        return
    from .baseline import parse_rules
    from .config import ConfigError

    given = config.getoption(_dest("max-increase")) is not None
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


def _load_pricer(config: pytest.Config, settings: Settings) -> Pricer:
    """The session's prices (``[tool.tokenbudget.prices]``, aliases, genai-prices), parsed once."""
    from .pricing import Pricer

    return _parsed_once(config, _pricer_key, lambda: Pricer.from_settings(settings))


def _load_budgets(config: pytest.Config, settings: Settings) -> Budgets:
    """Budgets from the settings, parsed once per session."""
    from .budgets import Budgets

    return _parsed_once(config, _budgets_key, lambda: Budgets.from_settings(settings))


def _parsed_once(config: pytest.Config, key: pytest.StashKey[T], parse: Callable[[], T]) -> T:
    """``parse()`` once per session, kept in the config's stash; a ConfigError is a usage error."""
    value = config.stash.get(key, None)
    if value is None:
        from .config import ConfigError

        try:
            value = parse()
        except ConfigError as exc:
            raise pytest.UsageError(f"pytest-tokenbudget: {exc}") from None
        config.stash[key] = value
    return value


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Validate every ``token_budget`` marker at collection: a typo is a usage error, not a no-op.

    The closest marker wins (function over class over module); markers are not merged.
    """
    for item in items:
        marker = item.get_closest_marker(MARKER)
        if marker is None:
            continue
        from .budgets import BudgetError, marker_limits

        try:
            item.stash[_marker_key] = marker_limits(marker.args, marker.kwargs)
        except BudgetError as exc:
            raise pytest.UsageError(f"pytest-tokenbudget: {item.nodeid}: {exc}") from None
        config.stash[_any_marker_key] = True


def activate(config: pytest.Config) -> TokenBudgetPlugin:
    """Switch capture on for this session (idempotent)."""
    plugin = config.stash.get(_plugin_key, None)
    if plugin is None:
        plugin = TokenBudgetPlugin(config, _settings(config))
        config.stash[_plugin_key] = plugin
        config.pluginmanager.register(plugin, "tokenbudget-session")
        if plugin.settings.enabled and (plugin.settings.otel or plugin.settings.ingest_otel):
            from .otel import OtelRole  # OpenTelemetry itself is imported by the role, when used

            config.pluginmanager.register(OtelRole(plugin), "tokenbudget-otel")
    return plugin


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


# -- the fixture ------------------------------------------------------------------------------


class TokenUsage:
    """The running test's usage so far, and :meth:`record` for calls the plugin cannot see."""

    def __init__(self, ledger: Ledger, nodeid: str) -> None:
        self._ledger = ledger
        self._nodeid = nodeid

    @property
    def snapshot(self) -> TestUsage:
        return self._ledger.usage_of(self._nodeid)

    @property
    def calls(self) -> int:
        return self.snapshot.total.calls

    @property
    def input_tokens(self) -> int:
        return self.snapshot.total.usage.input_tokens

    @property
    def cached_input_tokens(self) -> int:
        return self.snapshot.total.usage.cached_input_tokens

    @property
    def cache_write_tokens(self) -> int:
        return self.snapshot.total.usage.cache_write_tokens

    @property
    def output_tokens(self) -> int:
        return self.snapshot.total.usage.output_tokens

    @property
    def reasoning_tokens(self) -> int:
        return self.snapshot.total.usage.reasoning_tokens

    @property
    def total_tokens(self) -> int:
        return self.snapshot.total.usage.total_tokens

    @property
    def cost_usd(self) -> float:
        return self.snapshot.total.cost_usd

    def by_model(self) -> dict[str, int]:
        """Total tokens per ``provider/model``."""
        return {key: tally.total_tokens for key, tally in self.snapshot.models.items()}

    def record(
        self,
        *,
        model: str,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cached_input_tokens: int = 0,
        cache_write_tokens: int = 0,
        reasoning_tokens: int = 0,
        provider: str = "manual",
        cost_usd: float | None = None,
    ) -> None:
        """Count a call the plugin cannot see (a local model, a custom transport)."""
        from .model import Call, Usage

        values = {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cached_input_tokens": cached_input_tokens,
            "cache_write_tokens": cache_write_tokens,
            "reasoning_tokens": reasoning_tokens,
        }
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"token_usage.record: {name} must be a non-negative int, got {value!r}")
        if cached_input_tokens + cache_write_tokens > input_tokens:
            raise ValueError("token_usage.record: cached and cache-write tokens are parts of input_tokens")
        if reasoning_tokens > output_tokens:
            raise ValueError("token_usage.record: reasoning_tokens are a part of output_tokens")
        owner = self._ledger.owner
        call = Call(
            owner=self._nodeid,
            phase=owner.phase if owner.nodeid == self._nodeid else "call",
            provider=provider,
            api="manual",
            host="",
            model=model,
            usage=Usage(**values),
            source="manual",
            cost_usd=cost_usd,
        )
        self._ledger.record(call)

    def __repr__(self) -> str:
        return f"<token_usage {self._nodeid}: {self.calls} calls, {self.total_tokens:,} tokens>"


@pytest.fixture
def token_usage(request: pytest.FixtureRequest) -> TokenUsage:
    """The running test's LLM token usage (``.total_tokens``, ``.calls`` …) and ``.record(...)``."""
    plugin = activate(request.config)
    return TokenUsage(plugin.ledger, request.node.nodeid)


# -- the session ------------------------------------------------------------------------------


class TokenBudgetPlugin:
    """Registered only when the plugin is on; its methods are the session's hooks."""

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        from .artifact import now_iso
        from .capture import Capture
        from .ledger import Ledger, Owner

        self.config = config
        self.settings = settings
        self.ledger = Ledger(keep_calls=False)  # tallies only: memory flat in the number of calls
        self._owner_of = Owner  # bound here: ledger.py is imported only once the plugin is on
        self.is_worker = hasattr(config, "workerinput")
        self.is_controller = not self.is_worker and getattr(config.option, "dist", "no") != "no"
        self.ledger.run.meta["started"] = now_iso()
        self._started_at = time.time()
        self._fixture_teardowns: dict[int, Owner] = {}
        self._fixture_scopes: dict[pytest.FixtureDef[Any], str] = {}  # FixtureDef.scope is 3 calls
        self._item: pytest.Item | None = None  # the test whose phases run now (set at its setup)
        self._nodeid = ""  # and its node id (Item.nodeid is a property that builds a str)
        self.evaluators: list[Evaluator] = []
        self._price_hook_added = False
        self._worker_prices: list[dict[str, Any]] = []  # xdist controller: the workers' meta.prices
        self._worker_call_logs: list[str] = []  # xdist controller: the workers' call log parts
        self._outside_owners: set[str] = {"<session>"}  # xdist worker: owners outside tests seen
        self._outside_shipped: dict[str, int] = {}  # xdist worker: calls shipped per such owner
        self._outside_latest: dict[str, dict[str, Any]] = {}  # controller: worker → owner → data
        self.lost_workers: list[str] = []  # controller: workers that died, and what they ran
        self._closed = False
        self._lazy_lock = threading.Lock()  # the inspector and the prices are made on first need
        self.inspector: Inspector | None = None
        self._judged_tests: set[str] = set()  # tests with per-test verdicts taken (reruns replace)
        self._warm = False  # what the first call loads is loaded (ahead of async tests: _warm_up)
        self._finished = 0  # tests run to their end (fewer than collected: the run is partial)
        self._interrupted = False
        baseline: Evaluator | None = None  # a bad baseline is a usage error before anything is patched
        if settings.baseline and settings.enabled and not self.is_worker and not settings.defer_session:
            baseline = _baseline_evaluator(settings)
        if settings.enabled:  # anatomy, context windows, stale cassettes, unmetered calls
            if "context-windows" in settings.tables:  # a bad table is a usage error now
                self.inspector = _make_inspector(settings)
            self.add_evaluator(self._inspection_verdicts)
        self.capture = Capture(self.ledger)
        if settings.enabled:
            self.capture.recorder.observers.append(self._observe_first)
        self._use_plugin_hooks()
        # Parsed at configure when pyproject.toml prices or aliases models; else at the first call.
        self._pricer: Pricer | None = config.stash.get(_pricer_key, None)
        self.ledger.add_pricer(self._price, "genai-prices")  # after the hooks: a price hook first
        self.written: list[Path] = []  # reports written at the end, listed in the summary
        self.report_failures: list[str] = []  # reports that could not be written, said in red
        self.annotations: list[str] = []  # GitHub workflow commands, printed with the summary
        self.call_log: CallLog | None = None
        if settings.calls_path is not None and settings.enabled and not self.is_controller:
            from .report.export import CallLog

            worker = str(getattr(config, "workerinput", {}).get("workerid", ""))
            self.call_log = CallLog(settings.calls_path, part=worker)
            self.ledger.add_observer(self.call_log, "the call log (--token-budget-calls)")
        self._budgets: Budgets | None = None  # parsed on first need: most runs have markers only
        self._per_test_default = False  # a per-test budget applies to tests without a marker
        if settings.has_budgets and settings.enabled:
            budgets = self.budgets
            self._per_test_default = bool(budgets.per_test)
            if budgets.session or budgets.scopes:
                self.add_evaluator(lambda run: budgets.evaluate_run(run, session=not settings.defer_session))
        self._shipped = 0  # verdicts a worker has sent to the controller so far
        if baseline is not None:
            self.add_evaluator(baseline)
        self.baseline_note = ""  # what happened to --token-budget-save-baseline, for the summary
        self.history_note = ""  # where --token-budget-save-run kept the run, for the summary
        self.hard_cap: HardCap | None = None
        if settings.hard_max_cost is not None and not self.is_controller:
            self.hard_cap = self._install_hard_cap(settings.hard_max_cost)
        if self.hard_cap is None:  # each phase refreshes: one call less per phase
            self._refresh = self.capture.refresh  # type: ignore[method-assign]
        self._judging = False  # some test is held to a budget: see _judges()
        self._judges()
        self.capture.install()  # last: nothing is patched when the configuration is refused

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.capture.uninstall()
            if self.hard_cap is not None:
                self.hard_cap.watch.uninstall()

    def _install_hard_cap(self, limit: float) -> HardCap:
        """Refuse live requests that would take the live spend over ``limit`` (per xdist worker:
        an equal share, so the workers together stay under it)."""
        from .hardcap import HardCap
        from .report.format import money

        note = ""
        workers = int(getattr(self.config, "workerinput", {}).get("workercount", 1) or 1)
        if workers > 1:
            note = f"per xdist worker: {money(limit / workers)} of {money(limit)}"
            limit /= workers

        def cost_of(provider: str, model: str, usage: Any, host: str) -> float | None:
            return self.pricer.cost_of(provider, model, usage, host=host)

        cap = HardCap(limit, cost_of, note=note, verdicts=self.run.verdicts)
        cap.watch.refresh()
        self.ledger.add_listener(cap.observe, "the hard cost cap")
        self.capture.recorder.preflight.append(cap)
        return cap

    @property
    def run(self) -> Run:
        return self.ledger.run

    # -- made at the first call: a suite without LLM calls never imports pricing or inspector -----

    @property
    def pricer(self) -> Pricer:
        """The session's prices (pricing.py is imported at the first call to price)."""
        pricer = self._pricer
        if pricer is None:
            with self._lazy_lock:
                if self._pricer is None:
                    self._pricer = _load_pricer(self.config, self.settings)
                pricer = self._pricer
        return pricer

    def _price(self, call: Call) -> None:
        """Ledger listener: the call's cost, by the session's prices."""
        (self._pricer or self.pricer).price(call)

    def _price_provenance(self) -> dict[str, Any]:
        """``meta.prices``: which prices were used (none when no call was priced here)."""
        if self._pricer is None:
            return _no_prices_used()
        return self._pricer.provenance()

    def _inspector_now(self) -> Inspector:
        """The request inspector, made at the first call it sees (or at the end, for calls of
        xdist workers); from then on the recorder hands it calls directly."""
        with self._lazy_lock:
            if self.inspector is None:
                self.inspector = _make_inspector(self.settings)
            observers = self.capture.recorder.observers
            if self._observe_first in observers:
                observers[observers.index(self._observe_first)] = self.inspector.observe
            return self.inspector

    def _observe_first(self, call: Call, exchange: Exchange) -> None:
        self._inspector_now().observe(call, exchange)

    def _inspection_verdicts(self, run: Run) -> list[Verdict]:
        """Unmetered calls, stale cassettes, context windows, request part limits. A run without
        calls has none of these to judge but the part limits (met, at zero)."""
        settings = self.settings
        if (
            self.inspector is None
            and not run.totals().calls
            and settings.max_tool_schema_tokens is None
            and settings.max_system_tokens is None
        ):
            return []
        return self._inspector_now().verdicts(run)

    @property
    def budgets(self) -> Budgets:
        """The session's budgets (pyproject and command line), parsed on first use; a run switched
        on only by marked tests holds its tests to their markers alone."""
        if self._budgets is None:
            budgets = _load_budgets(self.config, self.settings)
            self._budgets = budgets if self.settings.enabled else budgets.markers_only()
        return self._budgets

    # -- attribution ----------------------------------------------------------------------------

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.capture.refresh()  # test modules have imported their SDKs by now
        self._use_plugin_hooks()  # conftest files below the rootdir are loaded by now
        self._judges()  # the collected tests' markers are read by now

    def _use_plugin_hooks(self) -> None:
        """Consult third-party providers and prices (hookspecs.py) only when implemented."""
        hook = self.config.hook
        if hook.pytest_tokenbudget_route.get_hookimpls():
            recorder = self.capture.recorder
            builtin_route: Callable[[str, str, str], Any] | None = None

            def route(method: str, host: str, path: str) -> Any:
                nonlocal builtin_route
                try:
                    found = hook.pytest_tokenbudget_route(method=method, host=host, path=path)
                except Exception as exc:  # another plugin's bug stays out of the test's request
                    recorder.note_internal_error(exc, source="a pytest_tokenbudget_route hook")
                    found = None
                if found is not None:
                    return found
                if builtin_route is None:  # imported at the first request, not at start-up
                    from .providers import route as imported

                    builtin_route = imported
                return builtin_route(method, host, path)

            self.capture.recorder.route = route
        if hook.pytest_tokenbudget_price.get_hookimpls() and not self._price_hook_added:
            self._price_hook_added = True

            def price(call: Any) -> None:
                if call.cost_usd is None:
                    try:
                        call.cost_usd = hook.pytest_tokenbudget_price(call=call)
                    except Exception as exc:  # the call is still counted, priced by the next source
                        self.capture.recorder.note_internal_error(
                            exc, source="a pytest_tokenbudget_price hook"
                        )

            self.ledger.add_pricer(price, "a pytest_tokenbudget_price hook", first=True)

    def _enter(self, owner: Owner) -> None:
        """Charge calls to ``owner`` from now on (until popped); wrap HTTP stacks imported since."""
        self._refresh()
        self.ledger.push_owner(owner)

    def _warm_up(self) -> None:
        """Before the first async test or fixture runs, load what the first captured call would
        otherwise load inside its event loop — response readers, prices, the request inspector,
        and the tokenizer when the hard cap estimates — so nothing the plugin does in a loop
        blocks it (BlockBuster raises on file reads there). Only once an HTTP stack is wrapped:
        an async suite that imports none makes no LLM call the plugin could see."""
        if not self.capture.stacks:
            return
        self._warm = True
        try:
            self.capture.recorder.bind_readers()
            self.pricer.warm()
            if self.settings.enabled:
                self._inspector_now()
            if self.hard_cap is not None:
                from .tokenizer import warm

                warm()
        except Exception as exc:  # then the first call does it, in the loop: reported if it fails
            self.capture.recorder.note_internal_error(exc, source="loading ahead of an event loop")

    def _refresh(self) -> None:
        self.capture.refresh()  # cheap unless a module was imported
        if self.hard_cap is not None:
            self.hard_cap.watch.refresh()  # know the cassettes vcrpy enters from now on

    # Each phase sets the running test's owner with a plain hook (they run three times per test,
    # and a plain hook costs a fraction of a wrapper); it stays until the next phase, and
    # ``pytest_runtest_logfinish`` clears it: calls between tests are the session's. These hooks
    # run for every test, most of which make no LLM call, so each does as little as it can: the
    # node id is read once per test (``Item.nodeid`` builds a string at every read).

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
        self.ledger.running(self._owner_of(self._nodeid_of(item), "call"))

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_teardown(self, item: pytest.Item, nextitem: pytest.Item | None) -> None:
        self._refresh()
        self.ledger.running(self._owner_of(self._nodeid_of(item), "teardown"))

    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        self.ledger.running(None)
        self._item = None
        self._finished += 1

    def pytest_keyboard_interrupt(self) -> None:
        self._interrupted = True

    def _nodeid_of(self, item: pytest.Item) -> str:
        """``item.nodeid``, saved at its setup for the test set up last (the usual case)."""
        return self._nodeid if item is self._item else item.nodeid

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
        self._outside_owners.add(label)
        owner = self._owner_of(label, "setup", "fixture")
        self._enter(owner)
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

    # -- per-test results -----------------------------------------------------------------------

    def _judges(self) -> None:
        """Whether any test is held to a budget (a marker, or a per-test default): when none is,
        as in most suites, no phase's report needs judging."""
        self._judging = self._per_test_default or self.config.stash.get(_any_marker_key, False)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        self.ledger.drain()  # outside the test's event loop: the observers and deferred records
        if self.hard_cap is not None and call.excinfo is not None and report.failed:
            self._refusal(item, call.excinfo, report)
        if report.when == "teardown":  # the test is over
            nodeid = self._nodeid_of(item)
            self.ledger.settle_streams(nodeid)  # streams it left open are settled now
            if self.inspector is not None:
                self.inspector.settle(self.ledger.run, nodeid)
            entry = self.ledger.run.tests.get(nodeid)
            if entry is not None and entry.total.calls:  # markers are listed for tests with calls
                entry.markers = tuple(sorted({m.name for m in item.iter_markers()}))
        if self._judging:
            self._judge(item, report)
        if self.is_worker:
            self._ship(item, report)
        return report

    def _refusal(self, item: pytest.Item, excinfo: pytest.ExceptionInfo[BaseException], report: Any) -> None:
        """A request the hard cap refused fails its test with the one sentence, not a traceback
        through the SDK (``--tb=long`` and ``--tb=native`` still show it all)."""
        from .hardcap import TokenBudgetExceeded

        if not excinfo.errisinstance(TokenBudgetExceeded) or self.config.option.tbstyle in ("long", "native"):
            return
        path, line, _ = item.location
        report.longrepr = _Overrun(f"TokenBudgetExceeded: {excinfo.value}", path, line)

    def _ship(self, item: pytest.Item, report: pytest.TestReport) -> None:
        """xdist worker: what the controller needs, as attributes of the report it is sent."""
        outside = self._changed_outside()  # fixture usage with every phase's report: set up in a
        if outside:  # test that then crashes its worker, it still reaches the controller
            setattr(report, OUTSIDE_ATTR, json.dumps(outside))
        if report.when == "teardown":
            entry = self.run.tests.get(self._nodeid_of(item))
            if entry is not None:
                from .artifact import encode_test

                setattr(report, REPORT_ATTR, encode_test(entry))
            fresh = self.run.verdicts[self._shipped :]
            if fresh:
                self._shipped += len(fresh)
                setattr(report, VERDICTS_ATTR, json.dumps([v.to_dict() for v in fresh]))

    def _changed_outside(self) -> dict[str, Any]:
        """xdist worker: fixture and session usage that changed since last shipped (whole entries)."""
        changed = {}
        for label in self._outside_owners:
            entry = self.run.tests.get(label)
            if entry is not None and entry.total.calls != self._outside_shipped.get(label, 0):
                self._outside_shipped[label] = entry.total.calls
                changed[label] = entry.to_dict()
        return changed

    def _judge(self, item: pytest.Item, report: pytest.TestReport) -> None:
        """Hold the test to its marker (or the per-test default), counting setup, call and teardown.

        After the call phase an overrun fails the test; a budget crossed only by teardown-phase
        calls makes the teardown an error. The verdicts are taken once, at teardown.
        """
        marker = item.stash.get(_marker_key, None)
        if marker is None and not self._per_test_default:
            return  # the common case: nothing to hold this test to
        if report.when != "teardown" and not report.passed:
            item.stash[_bad_phase_key] = True
        if report.when == "setup":
            return
        from .model import Status

        path, line, _ = report.location
        verdicts = self.budgets.judge_test(
            self.ledger.usage_of(item.nodeid), marker, path=path, line=line + 1 if line is not None else None
        )
        over = [v for v in verdicts if v.status == Status.EXCEEDED]
        if report.when == "teardown":
            self._replace_test_verdicts(item.nodeid, verdicts)
            if not over or item.stash.get(_bad_phase_key, False):
                return
        elif not over:
            return
        text = "\n".join(v.message for v in over)
        if report.passed:
            report.outcome = "failed"
            # pytest's annotation names its own classes; it prints any longrepr with toterminal()
            report.longrepr = _Overrun(text, path, line)  # type: ignore[assignment]
            item.stash[_bad_phase_key] = True
        else:
            report.sections.append(("token budget", text))

    def _replace_test_verdicts(self, nodeid: str, verdicts: list[Verdict]) -> None:
        """A test's per-test verdicts, taken at its (last) teardown: a rerun attempt replaces the
        earlier attempt's, judged on the test's running total over all attempts."""
        from .gate import PER_TEST_KINDS

        if nodeid in self._judged_tests:  # a rerun: the scan is paid by reruns only
            kept = [v for v in self.run.verdicts if not (v.nodeid == nodeid and v.kind in PER_TEST_KINDS)]
            if len(kept) != len(self.run.verdicts):
                self.run.verdicts[:] = kept
                if self.is_worker:
                    self._shipped = min(self._shipped, len(kept))
        self._judged_tests.add(nodeid)
        self.run.verdicts.extend(verdicts)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Every test gets its entry (path, line, outcome) from its call report, or from its setup
        report when that failed or skipped; a failed teardown makes the outcome an error."""
        if self.is_worker:  # the controller does this, from the reports the worker sends
            return
        if self.is_controller and not self._from_worker(report):
            return
        when = report.when
        if when == "call" or (when == "setup" and report.outcome != "passed"):
            entry = self.ledger.run.usage_for(report.nodeid)
            path, line, _ = report.location
            entry.path = path
            entry.line = line + 1 if line is not None else None
            entry.outcome = report.outcome
        elif when == "teardown" and report.outcome == "failed":
            self.ledger.run.usage_for(report.nodeid).outcome = "error"

    def _from_worker(self, report: pytest.TestReport) -> bool:
        """xdist controller: fold in what the worker shipped with ``report``; False when the report
        says the worker running the test died (nothing more to do with it)."""
        if report.when not in ("setup", "call", "teardown"):
            self._crashed(report)  # xdist: the worker running this test died
            return False
        outside = getattr(report, OUTSIDE_ATTR, None)
        if isinstance(outside, str):
            self._outside_latest.setdefault(_worker_id(report), {}).update(json.loads(outside))
        if report.when == "teardown":
            shipped = getattr(report, REPORT_ATTR, None)
            if isinstance(shipped, str):
                from .model import TestUsage

                entry = TestUsage.from_dict(report.nodeid, json.loads(shipped))
                self.run.usage_for(report.nodeid).merge(entry)
            verdicts = getattr(report, VERDICTS_ATTR, None)
            if isinstance(verdicts, str):
                from .gate import PER_TEST_KINDS
                from .model import Verdict

                shipped_verdicts = [Verdict.from_dict(v) for v in json.loads(verdicts)]
                for nodeid in {v.nodeid for v in shipped_verdicts if v.kind in PER_TEST_KINDS}:
                    self._replace_test_verdicts(nodeid, [])  # a rerun's attempt supersedes the last
                self.run.verdicts.extend(shipped_verdicts)
        return True

    # -- the session gate ----------------------------------------------------------------------------

    def add_evaluator(self, evaluator: Evaluator) -> None:
        """Register a session-level check (budgets, baseline thresholds) run once after the tests."""
        self.evaluators.append(evaluator)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Generator[None, Any, Any]:
        """After the loop, take the session verdicts; an exceeded one fails the run (exit 1).

        Like pytest-cov's --cov-fail-under: the summary still says "N passed", the exit status
        becomes 1. Workers never judge the session: the controller does, over merged data.
        """
        result = yield
        if not self.is_worker:
            self.take_session_verdicts(session)
        return result

    def take_session_verdicts(self, session: pytest.Session) -> None:
        from .gate import session_failures  # the gate `tokenbudget check` applies to merged shards

        self.ledger.settle_streams()
        self.ledger.drain()
        with self.run.finished():  # the evaluators share one pass for the totals and models
            for evaluator in self.evaluators:
                self.run.verdicts.extend(evaluator(self.run))
        failures = session_failures(self.run.verdicts, self.settings.mode)
        session.testsfailed += len(failures)
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if failures and reporter is not None:  # pytest's last line: "3 passed, 1 budget exceeded"
            reporter.stats.setdefault("budget exceeded", []).extend(map(_Exceeded, failures))

    # -- end of session ---------------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        from .artifact import environment, git_info, now_iso, write_run

        self.ledger.settle_streams()
        self.ledger.drain()
        if self.inspector is not None:
            self.inspector.settle_all(self.run)
            inspector = self.inspector
            if inspector.errors:  # reported like a failing sink: its output is incomplete
                self.ledger.failures["request inspection"] = [inspector.errors, inspector.first_errors[0]]
        if self.is_worker:
            outside = {k: v.to_dict() for k, v in self.run.tests.items() if v.kind != "test"}
            self.config.workeroutput[REPORT_ATTR] = {  # type: ignore[attr-defined]
                "outside": outside,
                "issues": self.run.issues,
                "verdicts": [v.to_dict() for v in self.run.verdicts[self._shipped :]],
                "prices": self._price_provenance(),
                "call_log": str(self.call_log.close()) if self.call_log is not None else "",
                "internal_errors": [
                    self.capture.recorder.internal_errors,
                    self.capture.recorder.first_errors,
                ],
                "sink_failures": self.ledger.failures,
            }
            return
        from . import __version__

        meta = self.run.meta
        meta["prices"] = self._price_provenance()
        if self._worker_prices:  # xdist: and the workers'
            from .pricing import merge_provenance

            meta["prices"] = merge_provenance([meta["prices"], *self._worker_prices])
        meta.update(
            finished=now_iso(),
            plugin_version=__version__,
            pytest_version=pytest.__version__,
            exit_status=int(exitstatus),
            partial=self._stopped_early(session, exitstatus),
            **environment(),
            **git_info(self.config.rootpath),
        )
        if self.lost_workers:  # their running test's calls are lost: the totals are a lower bound
            meta["lost_workers"] = sorted(self.lost_workers)
        recorder = self.capture.recorder
        if recorder.internal_errors:  # calls lost to a bug of ours: said, never hidden
            meta["internal_errors"] = {"count": recorder.internal_errors, "first": recorder.first_errors}
        if self.ledger.failures:  # a sink that failed: its output is incomplete, the counts are not
            failures = sorted(self.ledger.failures.items())
            meta["sink_failures"] = {name: {"count": n, "first": first} for name, (n, first) in failures}
        from .gate import canonicalise  # order independent of scheduling: shards merge to the same

        canonicalise(self.run)
        json_path = self.settings.json_path
        with self.run.finished():  # every report below shares one pass for the totals and models
            # Each on its own: one that fails is reported and the others are still written, and
            # nothing escapes into pytest's own session end (its --junitxml writes after us).
            if json_path is not None:

                def write_artifact() -> None:
                    write_run(json_path, self.run)
                    self.written.append(json_path)

                self._attempt("the JSON run artifact", write_artifact)
            if self.settings.save_run and self.settings.enabled:
                self._attempt("the run history", self._save_history)
            if self.settings.enabled:
                self._write_reports()
                self._attempt("the baseline", lambda: self._save_baseline(session))
        self._attempt(
            "a pytest_tokenbudget_run_finished hook",
            lambda: self.config.hook.pytest_tokenbudget_run_finished(run=self.run, config=self.config),
        )

    def _attempt(self, name: str, write: Callable[[], Any]) -> None:
        try:
            write()
        except Exception as exc:
            self._report_failed(name, exc)

    def _report_failed(self, name: str, exc: Exception) -> None:
        self.report_failures.append(f"{name} was not written: {type(exc).__name__}: {exc}")

    def _stopped_early(self, session: pytest.Session, exitstatus: int) -> bool:
        """Any sign the run did not run every collected test: an interrupt (however the exit status
        ends up), -x / --maxfail, an internal or usage error, or fewer tests finished than were
        collected (a plugin that cut the loop short)."""
        stopped = bool(session.shouldstop or session.shouldfail) or int(exitstatus) in (2, 3)
        return stopped or self._interrupted or self._finished < session.testscollected

    def _save_history(self) -> None:
        """``--token-budget-save-run``: keep the run under ``history-dir`` for ``tokenbudget history``
        (not a run that stopped early: its totals would read as a drop in the trend)."""
        if self.run.meta.get("partial"):
            self.history_note = "run not kept in history: it stopped early (its totals are a lower bound)"
            return
        from .history import save_run

        path = save_run(self.run, self.settings.history_dir or self.config.rootpath / ".tokenbudget/runs")
        self.history_note = f"run kept in history: {_display(path, self.config)}"

    def _save_baseline(self, session: pytest.Session) -> None:
        """``--token-budget-save-baseline``: a passing, complete run becomes the baseline (a failing
        one too with ``--token-budget-update-baseline``: growth accepted on purpose)."""
        settings = self.settings
        target = settings.save_baseline or (settings.baseline_file if settings.update_baseline else None)
        if target is None:
            return
        from .model import Status

        exceeded = any(v.status == Status.EXCEEDED for v in self.run.verdicts)
        if self.run.meta.get("partial"):
            self.baseline_note = "baseline not saved: the run stopped early (its totals are a lower bound)"
        elif exceeded and not settings.update_baseline:
            self.baseline_note = (
                "baseline not saved: the run exceeded its budgets or thresholds "
                "(--token-budget-update-baseline accepts the growth)"
            )
        elif session.testsfailed and not settings.update_baseline:
            self.baseline_note = "baseline not saved: tests failed"
        else:
            from .baseline import save

            save(self.run, target)
            self.baseline_note = f"baseline saved: {_display(target, self.config)}"

    def _write_reports(self) -> None:
        """JUnit, markdown, CSV, GitHub summary and annotations, the call log (controller only)."""
        from .report.writer import write_reports

        settings = self.settings
        if settings.calls_path is not None:
            from .report.export import CallLog, worker_parts

            log = self.call_log or CallLog(settings.calls_path, part="controller")
            parts = {Path(p) for p in self._worker_call_logs if p}
            if self.is_controller:  # and those of workers that died before saying where theirs was
                parts.update(worker_parts(settings.calls_path, self._started_at - 1))
            self._attempt("the call log", lambda: self.written.append(log.finish(sorted(parts))))
        emit = self.annotations.append
        self.written += write_reports(self.run, settings, emit=emit, failed=self._report_failed)

    def _crashed(self, report: pytest.TestReport) -> None:
        """A test whose worker died: its calls are lost with the worker; say so."""
        entry = self.run.usage_for(report.nodeid)
        entry.outcome = "failed"  # pytest's word for it too; meta.lost_workers says why
        entry.path = entry.path or report.location[0]
        worker = _worker_id(report)
        if worker in self.lost_workers:  # xdist calls pytest_testnodedown before it reports the crash
            self.lost_workers.remove(worker)
        self.lost_workers.append(f"{worker} while running {report.nodeid}")

    @pytest.hookimpl(optionalhook=True)  # an xdist hook: unknown (and never called) without xdist
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """xdist controller: fold in what a worker used outside tests (session fixtures); from a
        worker that died, what it last shipped with a test report."""
        from .model import TestUsage

        latest = self._outside_latest.pop(_worker_id(node), {})
        output = getattr(node, "workeroutput", {}).get(REPORT_ATTR)
        if not output:
            for nodeid, data in latest.items():
                entry = TestUsage.from_dict(nodeid, data)
                self.run.usage_for(nodeid, data.get("kind", "fixture")).merge(entry)
            if error is not None and not any(w.startswith(f"{_worker_id(node)} ") for w in self.lost_workers):
                self.lost_workers.append(f"{_worker_id(node)}")
            return
        for nodeid, data in output.get("outside", {}).items():
            self.run.usage_for(nodeid, data.get("kind", "fixture")).merge(TestUsage.from_dict(nodeid, data))
        self.run.issues.extend(output.get("issues", []))
        if isinstance(output.get("prices"), dict):
            self._worker_prices.append(output["prices"])
        if output.get("call_log"):
            self._worker_call_logs.append(str(output["call_log"]))
        count, first = output.get("internal_errors") or (0, [])
        recorder = self.capture.recorder
        recorder.internal_errors += count
        recorder.first_errors = (recorder.first_errors + list(first))[:3]
        for name, (times, text) in (output.get("sink_failures") or {}).items():
            failure = self.ledger.failures.setdefault(str(name), [0, str(text)])
            failure[0] += int(times)
        from .model import Verdict

        self.run.verdicts.extend(Verdict.from_dict(v) for v in output.get("verdicts", []))

    def pytest_report_header(self, config: pytest.Config) -> str | None:
        limit = self.settings.hard_max_cost
        if limit is None or self.is_worker:
            return None
        from .report.format import money

        given = config.getoption(_dest("hard-max-cost")) is not None
        source = "--token-budget-hard-max-cost" if given else "pyproject.toml"
        header = f"tokenbudget: hard cost cap {money(limit)} on live LLM requests ({source})"
        return header if self.settings.enabled else f"{header}; reports need --token-budget"

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.is_worker or not self.settings.enabled:
            return
        from .report.terminal import render

        verbose = self.config.get_verbosity() > 0
        terminalreporter.write_sep("=", "token budget")
        with self.run.finished():
            lines = render(self.run, verbose=verbose, top=self.settings.top)
            if self.inspector is not None or self.run.totals().calls:
                from .inspector import summary_lines

                lines += summary_lines(self.run, top=self.settings.top)
        from .report.format import count
        from .text import clean  # no line from outside may start a workflow command or an escape

        for line in lines:
            terminalreporter.write_line(clean(line.text), **line.markup)
        if self.settings.defer_session and (self.settings.has_budgets or self.settings.baseline):
            terminalreporter.write_line(
                "session and summed budgets and the baseline comparison are deferred: "
                "`tokenbudget merge` the shards, then `tokenbudget check` the merged run",
                yellow=True,
            )
        for lost in self.lost_workers:
            terminalreporter.write_line(
                f"xdist worker {lost} crashed: the calls of that test are lost (totals are a lower bound)",
                red=True,
            )
        recorder = self.capture.recorder
        if recorder.internal_errors:
            terminalreporter.write_line(
                f"pytest-tokenbudget: {count(recorder.internal_errors, 'error')} while recording calls; "
                f"first: {recorder.first_errors[0]}",
                red=True,
            )
        for name, (times, text) in sorted(self.ledger.failures.items()):
            terminalreporter.write_line(
                f"pytest-tokenbudget: {name} failed {count(times, 'time')} (the counts are complete; "
                f"its output is not); first: {text}",
                red=True,
            )
        tokenizer = sys.modules.get("pytest_tokenbudget.tokenizer")  # only if something counted
        for notice in tokenizer.notices() if tokenizer is not None else ():
            terminalreporter.write_line(f"note: {notice}", yellow=True)
        if self.settings.json_path is not None:
            terminalreporter.write_line(
                f"JSON run artifact: {_display(self.settings.json_path, self.config)}"
            )
        for failure in self.report_failures:
            terminalreporter.write_line(clean(f"pytest-tokenbudget: {failure}"), red=True)
        if self.baseline_note:
            terminalreporter.write_line(self.baseline_note, yellow="not saved" in self.baseline_note)
        if self.history_note:
            terminalreporter.write_line(self.history_note, yellow="not kept" in self.history_note)
        for path in self.written:
            if path != self.settings.json_path:
                terminalreporter.write_line(f"report: {_display(path, self.config)}")
        for command in self.annotations:  # GitHub reads workflow commands from standard output
            terminalreporter.write_line(command)


def _is_async(function: Any) -> bool:
    """A coroutine or async-generator function: it runs in an event loop (pytest-asyncio, anyio)."""
    return inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function)


def _worker_id(holder: Any) -> str:
    """The xdist worker id (``gw0`` …) of a worker node or of a report it sent."""
    node = getattr(holder, "node", holder)
    worker_id = getattr(node, "workerinput", {}).get("workerid")
    gateway = getattr(node, "gateway", None)
    return str(worker_id or getattr(gateway, "id", "") or "")


def _baseline_evaluator(settings: Settings) -> Evaluator:
    """Comparison with the baseline and its thresholds; a bad baseline is a usage error now."""
    from .baseline import session_evaluator
    from .config import ConfigError

    try:
        return session_evaluator(settings)
    except ConfigError as exc:
        raise pytest.UsageError(f"pytest-tokenbudget: {exc}") from None


def _no_prices_used() -> dict[str, Any]:
    """What :meth:`Pricer.provenance` says when no call was priced, without importing pricing.py
    (a suite without LLM calls never needs it); tests/test_startup_imports.py keeps the two equal.
    Prices or aliases in pyproject.toml make the pricer at start-up: overrides and aliases are 0."""
    from datetime import UTC, datetime
    from importlib.metadata import PackageNotFoundError, version

    info: dict[str, Any] = {
        "source": "genai-prices",
        "priced_at": datetime.now(tz=UTC).date().isoformat(),
        "overrides": 0,
        "aliases": 0,
        "calls_by_source": {},
        "unknown": [],
    }
    try:
        info["version"] = version("genai-prices")
    except PackageNotFoundError:
        info["version"] = None
    return info


def _make_inspector(settings: Settings) -> Inspector:
    from .config import ConfigError
    from .inspector import Inspector

    try:
        return Inspector.from_settings(settings)
    except ConfigError as exc:
        raise pytest.UsageError(f"pytest-tokenbudget: {exc}") from None


class _Overrun:
    """A budget failure as pytest shows it: the sentence with numbers, no traceback."""

    def __init__(self, text: str, path: str, line: int | None) -> None:
        from .text import clean

        self.text = "\n".join(clean(part) for part in text.splitlines())
        self.reprcrash = _Crash(path, (line or 0) + 1, self.text.splitlines()[0])

    def toterminal(self, out: Any) -> None:
        for line in self.text.splitlines():
            out.line(line, red=True, bold=True)

    def __str__(self) -> str:
        return self.text


class _Exceeded:
    """A session verdict among pytest's stats: its last line then says "1 budget exceeded"."""

    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict
        self.nodeid = verdict.nodeid or ""


class _Crash:
    """What ``-rf`` and ``--tb=line`` print for an overrun."""

    def __init__(self, path: str, lineno: int, message: str) -> None:
        self.path = path
        self.lineno = lineno
        self.message = message

    def __str__(self) -> str:
        return f"{self.path}:{self.lineno}: {self.message}"


def _display(path: Path, config: pytest.Config) -> str:
    try:
        return str(path.relative_to(config.invocation_params.dir))
    except ValueError:
        return str(path)
