"""The command line: every ``--token-budget-*`` option, and their values by table key."""

from __future__ import annotations

from typing import Any

import pytest

OPTIONS: tuple[tuple[str, str, str], ...] = (
    # (table key, metavar, help) — each is also ``--token-budget-<key>`` on the command line
    ("json", "PATH", "write the JSON run artifact to PATH."),
    ("junit", "PATH", "write a JUnit XML report with one test case per budget to PATH."),
    ("markdown", "PATH", "write the markdown report (PR comment / job summary) to PATH."),
    ("csv", "PATH", "write per-test usage as CSV to PATH."),
    ("html", "PATH", "write a self-contained HTML report (tables, charts; opens offline) to PATH."),
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
    (
        "anatomy",
        "approximate|exact",
        "request anatomy: ~4 bytes a token (default), or tiktoken's exact counts.",
    ),
)
FLAGS: tuple[str, ...] = (
    "max-increase",
    "update-baseline",
    "save-run",
    "defer-session",
    "otel",
    "ingest-otel",
)
"""Table keys whose options are not in :data:`OPTIONS` (repeatable, or flags)."""


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("tokenbudget", "LLM token budgets")
    group.addoption(
        "--token-budget",
        action="store_true",
        default=None,
        dest="token_budget",
        help="capture LLM calls, report tokens per test and enforce the budgets.",
    )
    for key, metavar, text in OPTIONS:
        group.addoption(f"--token-budget-{key}", default=None, dest=dest(key), metavar=metavar, help=text)
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
    group.addoption(
        "--token-budget-no-github",
        action="store_true",
        default=False,
        dest="token_budget_no_github",
        help="under GitHub Actions, write neither the job summary nor annotations.",
    )


def dest(key: str) -> str:
    """The ``config.option`` attribute of table key ``key``."""
    return "token_budget_" + key.replace("-", "_")


def cli_values(config: pytest.Config) -> dict[str, Any]:
    """The command line's settings by table key (None where an option is not given)."""
    cli: dict[str, Any] = {"enabled": config.getoption("token_budget")}
    for key in [k for k, _, _ in OPTIONS] + list(FLAGS):
        cli[key] = config.getoption(dest(key))
    save_baseline = config.getoption("token_budget_save_baseline")
    if save_baseline:  # a path; the bare flag ("") means the configured file, decided later
        cli["save-baseline"] = save_baseline
    return cli


def configured_nowhere(config: pytest.Config) -> bool:
    """No ``--token-budget…`` option is given and no pyproject.toml mentions tokenbudget: every
    setting is its default (off), so nothing needs parsing until a test asks for the plugin."""
    if any(value is not None for value in cli_values(config).values()):
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
