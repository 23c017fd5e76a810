"""GitHub Actions: the job summary and workflow-command annotations.

Only inside GitHub Actions (``GITHUB_ACTIONS=true``). The markdown report is appended to
``$GITHUB_STEP_SUMMARY`` (shared with the job's other steps: appended, never replaced), and each
exceeded or approaching budget becomes an ``::error`` / ``::warning`` annotation on the test's file
and line, so it shows in the pull request's diff.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..model import Run, Status, Verdict

MAX_ANNOTATIONS = 10  # GitHub shows 10 errors and 10 warnings per step; more are noise


def active() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


def annotation_lines(run: Run, *, limit: int = MAX_ANNOTATIONS) -> list[str]:
    """``::error file=…,line=…,title=…::message`` for each exceeded verdict, ``::warning`` for the
    approaching and unknown ones; at most ``limit`` of each level (a last one says how many more)."""
    out: list[str] = []
    for level, statuses in (("error", {Status.EXCEEDED}), ("warning", {Status.WARN, Status.UNKNOWN})):
        chosen = [v for v in run.verdicts if v.status in statuses]
        out += [_annotation(level, v) for v in chosen[:limit]]
        if len(chosen) > limit:
            more = len(chosen) - limit
            out.append(f"::{level} title=token budget::{more} more: see the job summary or the JSON artifact")
    return out


def _annotation(level: str, verdict: Verdict) -> str:
    props = []
    if verdict.path:
        props.append(f"file={_property(verdict.path)}")
        if verdict.line:
            props.append(f"line={verdict.line}")
    title = "token budget exceeded" if verdict.status == Status.EXCEEDED else f"token budget {verdict.status}"
    props.append(f"title={_property(title)}")
    message = verdict.message or f"{verdict.name}: {verdict.metric} {verdict.actual:g} > {verdict.limit:g}"
    if verdict.nodeid and verdict.nodeid not in message:
        message = f"{verdict.nodeid}: {message}"
    return f"::{level} {','.join(props)}::{_data(message)}"


def _data(text: str) -> str:
    """Escape a workflow command's message (GitHub's toolkit ``escapeData``)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _property(text: str) -> str:
    """Escape a workflow command's property value (GitHub's toolkit ``escapeProperty``)."""
    return _data(text).replace(":", "%3A").replace(",", "%2C")


def append_summary(markdown: str) -> Path | None:
    """Append ``markdown`` to the job summary file; None outside a job."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    path = Path(target)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(markdown if markdown.endswith("\n") else markdown + "\n")
    return path
