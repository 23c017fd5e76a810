"""Writes every report the settings ask for (except the JSON artifact and the call log).

Shared by the plugin at the end of a session and by ``tokenbudget check``, so a merged run of
shards gets the same files a serial run would.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import Settings
from ..model import Run
from ..runs.artifact import write_atomic

if TYPE_CHECKING:
    from ..runs.history import Entry


def write_reports(
    run: Run,
    settings: Settings,
    *,
    emit: Callable[[str], None] | None = None,
    failed: Callable[[str, Exception], None] | None = None,
) -> list[Path]:
    """JUnit XML, markdown, CSV, HTML; in GitHub Actions the job summary and annotations.

    Each is written on its own: one that fails (an unwritable path, a full disk) is reported to
    ``failed(report, error)`` and the others are still written; without ``failed`` the first
    error is raised once every other report has been tried. Annotations are workflow commands on
    standard output, one per line, through ``emit`` (by default ``sys.stdout``).
    """
    from . import github

    written: list[Path] = []
    errors: list[tuple[str, Exception]] = []

    def attempt(name: str, write: Callable[[], Path | None]) -> None:
        try:
            path = write()
        except Exception as exc:
            errors.append((name, exc))
            if failed is not None:
                failed(name, exc)
            return
        if path is not None:
            written.append(path)

    if settings.junit_path is not None:
        junit_path = settings.junit_path

        def write_junit() -> Path:
            from . import junit

            write_atomic(junit_path, junit.render(run))
            return junit_path

        attempt("the JUnit report", write_junit)
    in_github = github.active()
    markdown_text: list[str] = []  # rendered once for the file and the job summary
    if settings.markdown_path is not None or (in_github and settings.github_summary):

        def render_markdown() -> None:
            from . import markdown

            trend = _trend(run, settings)
            html_url = os.environ.get(HTML_URL_ENV) or None
            markdown_text.append(
                markdown.render(run, top=max(settings.top, 10), trend=trend, html_url=html_url)
            )

        attempt("the markdown report", render_markdown)
    if settings.markdown_path is not None and markdown_text:
        markdown_path = settings.markdown_path

        def write_markdown() -> Path:
            write_atomic(markdown_path, markdown_text[0])
            return markdown_path

        attempt("the markdown report", write_markdown)
    if settings.csv_path is not None:
        csv_path = settings.csv_path

        def write_csv() -> Path:
            from . import export

            export.write_csv(run, csv_path)
            return csv_path

        attempt("the CSV report", write_csv)
    if settings.html_path is not None:
        html_path, history_dir = settings.html_path, settings.history_dir

        def write_html() -> Path:
            from . import html

            return html.write(run, html_path, history_dir=history_dir)

        attempt("the HTML report", write_html)
    if in_github:
        if settings.github_summary and markdown_text:
            attempt("the GitHub job summary", lambda: github.append_summary(markdown_text[0]))
        if settings.github_annotations:

            def annotate() -> None:
                for line in github.annotation_lines(run):
                    (emit or _print)(line)

            attempt("the GitHub annotations", annotate)
    if errors and failed is None:
        raise errors[0][1]
    return written


HTML_URL_ENV = "TOKENBUDGET_HTML_URL"
"""Where the workflow publishes the HTML report: the markdown links to it when set."""


def _trend(run: Run, settings: Settings) -> list[Entry]:
    """The last runs of the history folder for the markdown's sparkline ([] without history)."""
    directory = settings.history_dir
    if directory is None or not directory.is_dir():
        return []
    from .trend import recent

    return recent(directory, run)


def _print(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
