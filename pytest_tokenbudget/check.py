"""The verdict over a whole run: the plugin's gate after the test loop, and ``tokenbudget check``.

A merged run of N shards is judged exactly as one serial run would be:

* :func:`session_evaluators` — the after-loop checks the plugin registers (request inspection,
  session and scoped budgets; baseline thresholds when this version has them), built from
  :class:`~pytest_tokenbudget.config.Settings` with the same functions;
* :func:`check_run` — keeps the verdicts taken while the tests ran (markers, the per-test default,
  the hard cap), judges tests that were never held to the per-test default, re-takes every
  after-loop verdict over the whole run, and returns the exit status the plugin would have;
* :func:`~pytest_tokenbudget.judge.gate.session_failures` — which exceeded verdicts fail the session
  (per-test ones already failed their own test) — and :func:`~pytest_tokenbudget.judge.gate.canonicalise`
  (the order of verdicts) are shared with the plugin's gate (gate.py, light to import).
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from .config import ConfigError, Settings, find_pyproject, read_table, resolve
from .judge.budgets import Budgets
from .judge.gate import PER_TEST_KINDS, TAKEN_DURING_TESTS, canonicalise
from .model import Run, Status, Verdict

if TYPE_CHECKING:
    from .report.markup import Line

Evaluator = Callable[[Run], list[Verdict]]

MARKER: Final = "token_budget"

EXIT_OK: Final = 0
EXIT_EXCEEDED: Final = 1
EXIT_USAGE: Final = 2


@dataclass(slots=True)
class CheckResult:
    """A judged run and what it means for the build."""

    run: Run
    settings: Settings
    exit_status: int
    failures: list[Verdict] = field(default_factory=list)  # exceeded verdicts (fail mode only)
    written: list[Path] = field(default_factory=list)  # reports written
    notes: list[str] = field(default_factory=list)  # what could not be done, for people

    def lines(self, *, verbose: bool = False, width: int | None = None) -> list[str]:
        """What ``tokenbudget check`` prints: the plugin's section, then the verdict in one line."""
        width = width or shutil.get_terminal_size((80, 24)).columns
        title = " token budget "
        left = max(1, (width - len(title)) // 2)
        out = ["=" * left + title + "=" * max(1, width - len(title) - left)]
        out += [line.text for line in summary_lines(self.run, self.settings, verbose=verbose)]
        if self.run.meta.get("partial"):
            out.append("warning: a partial (interrupted) run: its totals are a lower bound")
        for verdict in self.failures:
            where = f"{verdict.nodeid}: " if verdict.nodeid else ""
            out.append(f"EXCEEDED {where}{verdict.message}")
        out += [f"report: {path}" for path in self.written]
        out += [f"note: {note}" for note in self.notes]
        out.append(_verdict_line(self.run.verdicts, self.exit_status))
        return out


def _verdict_line(verdicts: Sequence[Verdict], exit_status: int) -> str:
    counts: dict[str, int] = dict.fromkeys((Status.EXCEEDED, Status.WARN, Status.UNKNOWN, Status.OK), 0)
    for verdict in verdicts:
        counts[verdict.status] = counts.get(verdict.status, 0) + 1
    shown = ", ".join(f"{n:,} {status}" for status, n in counts.items() if n) or "no budgets"
    return f"tokenbudget check: {shown} (exit {exit_status})"


def load_settings(config: Path | None, overrides: dict[str, Any], *, cwd: Path | None = None) -> Settings:
    """``[tool.tokenbudget]`` of ``config`` (else ``pyproject.toml`` in ``cwd``) plus overrides.

    ``overrides`` maps table keys to command-line values (``None`` = not given), like the plugin's
    options; relative paths in the table are relative to the pyproject's folder.
    """
    cwd = cwd or Path.cwd()
    if config is not None:
        if not config.is_file():
            raise ConfigError(f"{config}: no such file")
        pyproject: Path | None = config
    else:
        pyproject = find_pyproject(cwd, None)
    root = pyproject.parent if pyproject is not None else cwd
    return resolve(read_table(pyproject), overrides, pyproject=pyproject, root=root)


def session_evaluators(
    settings: Settings,
    budgets: Budgets | None,
    *,
    session: bool = True,
    inspection: Evaluator | None = None,
) -> list[Evaluator]:
    """The after-loop checks of a session with the plugin switched on, in this order, for the plugin
    (which passes its own request ``inspection``, made at the first call) and ``tokenbudget check``
    alike; ``session=False`` (a shard) keeps only what can be judged on part of a run.

    Raises :class:`ConfigError` for a baseline that cannot be used.
    """
    if inspection is None:
        from .inspection.inspector import Inspector

        inspection = Inspector.from_settings(settings).verdicts
    evaluators: list[Evaluator] = [inspection]
    if budgets is not None and (budgets.session or budgets.scopes):
        evaluators.append(lambda run: budgets.evaluate_run(run, session=session))
    if session and settings.baseline:
        evaluators.append(_baseline_evaluator(settings))
    return evaluators


def _baseline_evaluator(settings: Settings) -> Evaluator:
    """Baseline thresholds (``baseline`` + ``max-increase``) as a session evaluator; raises
    :class:`ConfigError` when this version cannot compare with a baseline."""
    try:
        from .runs.baseline import session_evaluator
    except ImportError:
        raise ConfigError(
            f"baseline {settings.baseline!r}: this version of pytest-tokenbudget cannot compare "
            "with a baseline yet (no pytest_tokenbudget.runs.baseline.session_evaluator)"
        ) from None
    return session_evaluator(settings)


def check_run(
    run: Run,
    settings: Settings,
    budgets: Budgets | None = None,
    *,
    evaluators: Sequence[Evaluator] | None = None,
) -> CheckResult:
    """Judge ``run`` (a plugin artifact or a merge of shards) with ``settings``; ``run`` is updated.

    Raises :class:`~pytest_tokenbudget.config.ConfigError` for a bad budget table.
    """
    budgets = budgets if budgets is not None else Budgets.from_settings(settings)
    kept = [v for v in run.verdicts if v.kind in TAKEN_DURING_TESTS]
    kept += _per_test_defaults(run, budgets, {v.nodeid for v in kept if v.kind in PER_TEST_KINDS})
    if evaluators is None:
        evaluators = session_evaluators(settings, budgets)
    run.verdicts[:] = kept
    for evaluator in evaluators:
        run.verdicts.extend(evaluator(run))
    canonicalise(run)
    failures = [v for v in run.verdicts if v.status == Status.EXCEEDED] if settings.mode == "fail" else []
    return CheckResult(run, settings, EXIT_EXCEEDED if failures else EXIT_OK, failures)


def _per_test_defaults(run: Run, budgets: Budgets, judged: set[str]) -> list[Verdict]:
    """The per-test default over tests no shard held to a marker or to the default."""
    if not budgets.per_test:
        return []
    verdicts: list[Verdict] = []
    for entry in sorted(run.iter_tests(), key=lambda e: e.nodeid):
        if entry.nodeid in judged or MARKER in entry.markers:
            continue
        verdicts.extend(budgets.judge_test(entry, None))
    return verdicts


def summary_lines(run: Run, settings: Settings, *, verbose: bool = False) -> list[Line]:
    """The plugin's terminal section for ``run`` (usage, request inspection), without pytest."""
    from .report.terminal import inspection_lines, render

    return render(run, verbose=verbose, top=settings.top) + inspection_lines(run, top=settings.top)


def check_file(
    run: Run, config: Path | None, options: Mapping[str, Any], *, cwd: Path | None = None
) -> CheckResult:
    """``tokenbudget check``: settings from ``config`` (else ``./pyproject.toml``) and the command
    line ``options`` (table keys → values, ``None`` = not given; paths relative to ``cwd``); judge
    ``run`` and write the configured reports. The JSON artifact is written only when asked for on the
    command line (the pyproject's ``json`` is where the shards wrote theirs)."""
    cwd = cwd or Path.cwd()
    given = {key: value for key, value in options.items() if value is not None}
    for key in ("json", "junit", "markdown", "csv", "html", "calls"):
        if key in given:
            given[key] = str(cwd / given[key])
    settings = load_settings(config, given, cwd=cwd)
    if "json" not in given:
        settings = dataclasses.replace(settings, json_path=None)
    result = check_run(run, settings)
    status = run.meta.get("exit_status")
    if not isinstance(status, int) or status < result.exit_status:
        run.meta["exit_status"] = result.exit_status  # what the serial session would have ended with
    result.written = write_reports(result.run, settings, result.notes)
    return result


def write_reports(run: Run, settings: Settings, notes: list[str] | None = None) -> list[Path]:
    """Every report ``settings`` asks for, through the plugin's report writer when this version has
    one (:mod:`pytest_tokenbudget.report.writer`); a report that cannot be written is a note."""
    from .runs.artifact import write_run

    written: list[Path] = []
    write: Callable[[Run, Settings], list[Path]] | None
    try:
        from .report.writer import write_reports as write
    except ImportError:
        write = None
    with run.finished():  # the reports share one pass for the totals and models
        if settings.json_path is not None:
            write_run(settings.json_path, run)
            written.append(settings.json_path)
        if write is not None:
            written += list(write(run, dataclasses.replace(settings, json_path=None)) or [])
    if write is None and notes is not None:
        for name in ("junit", "markdown", "csv", "html", "calls"):
            if getattr(settings, f"{name}_path") is not None:
                notes.append(f"no {name} report written: this version has no report writer for it")
    return written
