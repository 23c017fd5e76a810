"""Writes every report the settings ask for (except the JSON artifact and the call log).

Shared by the plugin at the end of a session and by ``tokenbudget check``, so a merged run of
shards gets the same files a serial run would.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from ..artifact import write_atomic
from ..config import Settings
from ..model import Run


def write_reports(run: Run, settings: Settings, *, emit: Callable[[str], None] | None = None) -> list[Path]:
    """JUnit XML, markdown, CSV; in GitHub Actions the job summary and annotations.

    Annotations are workflow commands on standard output, one per line, through ``emit``
    (the plugin prints them with pytest's terminal writer; by default ``sys.stdout``).
    """
    from . import github

    written: list[Path] = []
    markdown_text: str | None = None
    if settings.junit_path is not None:
        from . import junit

        write_atomic(settings.junit_path, junit.render(run))
        written.append(settings.junit_path)
    in_github = github.active()
    if settings.markdown_path is not None or (in_github and settings.github_summary):
        from . import markdown

        markdown_text = markdown.render(run, top=max(settings.top, 10))
    if settings.markdown_path is not None and markdown_text is not None:
        write_atomic(settings.markdown_path, markdown_text)
        written.append(settings.markdown_path)
    if settings.csv_path is not None:
        from . import export

        export.write_csv(run, settings.csv_path)
        written.append(settings.csv_path)
    if in_github:
        if settings.github_summary and markdown_text is not None:
            summary = github.append_summary(markdown_text)
            if summary is not None:
                written.append(summary)
        if settings.github_annotations:
            for line in github.annotation_lines(run):
                (emit or _print)(line)
    return written


def _print(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
