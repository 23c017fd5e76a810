"""After the test loop, where the run is judged (alone, or on the xdist controller): the session
gate, the artifact and the reports, the baseline and history, and the terminal summary."""

from __future__ import annotations

import sys
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .options import dest

if TYPE_CHECKING:
    from ..model import Verdict
    from .session import Session


class Finish:
    """Registered alone or on the xdist controller, never on a worker."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.settings = session.settings
        self.config = session.config
        self.run = session.run
        self.written: list[Path] = []  # reports written at the end, listed in the summary
        self.report_failures: list[str] = []  # reports that could not be written, said in red
        self.annotations: list[str] = []  # GitHub workflow commands, printed with the summary
        self.baseline_note = ""  # what happened to --token-budget-save-baseline, for the summary
        self.history_note = ""  # where --token-budget-save-run kept the run, for the summary
        self._interrupted = False

    def pytest_keyboard_interrupt(self) -> None:
        self._interrupted = True

    # -- the session gate -------------------------------------------------------------------------

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Generator[None, Any, Any]:
        """After the loop, take the session verdicts; an exceeded one fails the run (exit 1).

        Like pytest-cov's --cov-fail-under: the summary still says "N passed", the exit status
        becomes 1.
        """
        result = yield
        self.take_session_verdicts(session)
        return result

    def take_session_verdicts(self, session: pytest.Session) -> None:
        from ..judge.gate import session_failures  # the gate `tokenbudget check` applies to merged shards

        self.session.ledger.settle_streams()
        self.session.ledger.drain()
        self.session.verdicts_joined()
        with self.run.finished():  # the evaluators share one pass for the totals and models
            for evaluator in self.session.evaluators:
                self.run.verdicts.extend(evaluator(self.run))
        failures = session_failures(self.run.verdicts, self.settings.mode)
        session.testsfailed += len(failures)
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if failures and reporter is not None:  # pytest's last line: "3 passed, 1 budget exceeded"
            reporter.stats.setdefault("budget exceeded", []).extend(map(_Exceeded, failures))

    # -- the artifact and the reports ---------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        from .. import __version__
        from ..judge.gate import canonicalise  # order independent of scheduling: shards merge to the same
        from ..runs.artifact import environment, git_info, now_iso, write_run

        self.session.settle()
        self.session.verdicts_joined()  # a loop that never ended (an interrupt) judged some tests
        meta = self.run.meta
        meta["prices"] = self.session.price_provenance()
        if self.session.worker_prices:  # xdist: and the workers'
            from ..pricing.prices import merge_provenance

            meta["prices"] = merge_provenance([meta["prices"], *self.session.worker_prices])
        meta.update(
            finished=now_iso(),
            plugin_version=__version__,
            pytest_version=pytest.__version__,
            exit_status=int(exitstatus),
            partial=self._stopped_early(session, exitstatus),
            **environment(),
            **git_info(self.config.rootpath),
        )
        if self.session.lost_workers:  # their running test's calls are lost: totals are a lower bound
            meta["lost_workers"] = sorted(self.session.lost_workers)
        recorder = self.session.capture.recorder
        if recorder.internal_errors:  # calls lost to a bug of ours: said, never hidden
            meta["internal_errors"] = {"count": recorder.internal_errors, "first": recorder.first_errors}
        ledger_failures = self.session.ledger.failures
        if ledger_failures:  # a sink that failed: its output is incomplete, the counts are not
            failures = sorted(ledger_failures.items())
            meta["sink_failures"] = {name: {"count": n, "first": first} for name, (n, first) in failures}
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
        return stopped or self._interrupted or self.session.finished_tests < session.testscollected

    def _save_history(self) -> None:
        """``--token-budget-save-run``: keep the run under ``history-dir`` for ``tokenbudget history``
        (not a run that stopped early: its totals would read as a drop in the trend)."""
        if self.run.meta.get("partial"):
            self.history_note = "run not kept in history: it stopped early (its totals are a lower bound)"
            return
        from ..runs.history import save_run

        path = save_run(self.run, self.settings.history_dir or self.config.rootpath / ".tokenbudget/runs")
        self.history_note = f"run kept in history: {_display(path, self.config)}"

    def _save_baseline(self, session: pytest.Session) -> None:
        """``--token-budget-save-baseline``: a passing, complete run becomes the baseline (a failing
        one too with ``--token-budget-update-baseline``: growth accepted on purpose)."""
        settings = self.settings
        target = settings.save_baseline or (settings.baseline_file if settings.update_baseline else None)
        if target is None:
            return
        from ..model import Status

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
            from ..runs.baseline import save

            save(self.run, target)
            self.baseline_note = f"baseline saved: {_display(target, self.config)}"

    def _write_reports(self) -> None:
        """JUnit, markdown, CSV, GitHub summary and annotations, the call log."""
        from ..report.writer import write_reports

        settings = self.settings
        if settings.calls_path is not None:
            from ..report.export import CallLog, worker_parts

            log = self.session.call_log or CallLog(settings.calls_path, part="controller")
            parts = {Path(p) for p in self.session.worker_call_logs if p}
            if self.session.role == "controller":  # and those of workers that died before saying where
                parts.update(worker_parts(settings.calls_path, self.session.started_at - 1))
            self._attempt("the call log", lambda: self.written.append(log.finish(sorted(parts))))
        emit = self.annotations.append
        self.written += write_reports(self.run, settings, emit=emit, failed=self._report_failed)

    # -- the terminal -------------------------------------------------------------------------------

    def pytest_report_header(self, config: pytest.Config) -> str | None:
        limit = self.settings.hard_max_cost
        if limit is None:
            return None
        from ..units import money

        given = config.getoption(dest("hard-max-cost")) is not None
        source = "--token-budget-hard-max-cost" if given else "pyproject.toml"
        header = f"tokenbudget: hard cost cap {money(limit)} on live LLM requests ({source})"
        return header if self.settings.enabled else f"{header}; reports need --token-budget"

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.settings.enabled:
            return
        from ..report.terminal import inspection_lines, render
        from ..units import clean, count  # no line from outside may start a workflow command

        verbose = self.config.get_verbosity() > 0
        write = terminalreporter.write_line
        terminalreporter.write_sep("=", "token budget")
        with self.run.finished():
            lines = render(self.run, verbose=verbose, top=self.settings.top)
            if self.session.inspector is not None or self.run.totals().calls:
                lines += inspection_lines(self.run, top=self.settings.top)
        for line in lines:
            write(clean(line.text), **line.markup)
        if self.settings.defer_session and (self.settings.has_budgets or self.settings.baseline):
            write(
                "session and summed budgets and the baseline comparison are deferred: "
                "`tokenbudget merge` the shards, then `tokenbudget check` the merged run",
                yellow=True,
            )
        for lost in self.session.lost_workers:
            write(
                f"xdist worker {lost} crashed: the calls of that test are lost (totals are a lower bound)",
                red=True,
            )
        recorder = self.session.capture.recorder
        if recorder.internal_errors:
            write(
                f"pytest-tokenbudget: {count(recorder.internal_errors, 'error')} while recording calls; "
                f"first: {recorder.first_errors[0]}",
                red=True,
            )
        for name, (times, text) in sorted(self.session.ledger.failures.items()):
            write(
                f"pytest-tokenbudget: {name} failed {count(times, 'time')} (the counts are complete; "
                f"its output is not); first: {text}",
                red=True,
            )
        tokenizer = sys.modules.get("pytest_tokenbudget.tokens.tokenizer")  # only if something counted
        for notice in tokenizer.notices() if tokenizer is not None else ():
            write(f"note: {notice}", yellow=True)
        if self.settings.json_path is not None:
            write(f"JSON run artifact: {_display(self.settings.json_path, self.config)}")
        for failure in self.report_failures:
            write(clean(f"pytest-tokenbudget: {failure}"), red=True)
        if self.baseline_note:
            write(self.baseline_note, yellow="not saved" in self.baseline_note)
        if self.history_note:
            write(self.history_note, yellow="not kept" in self.history_note)
        for path in self.written:
            if path != self.settings.json_path:
                write(f"report: {_display(path, self.config)}")
        for command in self.annotations:  # GitHub reads workflow commands from standard output
            write(command)


class _Exceeded:
    """A session verdict among pytest's stats: its last line then says "1 budget exceeded"."""

    def __init__(self, verdict: Verdict) -> None:
        self.verdict = verdict
        self.nodeid = verdict.nodeid or ""


def _display(path: Path, config: pytest.Config) -> str:
    try:
        return str(path.relative_to(config.invocation_params.dir))
    except ValueError:
        return str(path)
