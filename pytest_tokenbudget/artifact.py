"""Reading and writing run artifacts: atomic writes, run metadata, JSON (de)serialisation."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .model import ArtifactError, Run


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename: never half written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())  # the rename must not land before the bytes do
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# Collections written one entry per line: fast to write and read (one compact ``json.dumps`` per
# entry), small, and a diff of two runs shows one changed line per changed test.
_ONE_PER_LINE = frozenset({"models", "providers", "tests", "issues", "verdicts"})


def dump_run(run: Run) -> str:
    """The artifact's JSON text: small sections indented, big collections one entry per line."""
    lines = ["{"]
    data = run.to_dict()
    last = len(data) - 1
    for index, (key, value) in enumerate(data.items()):
        comma = "," if index < last else ""
        head = f"  {_compact(key)}: "
        if key in _ONE_PER_LINE and value:
            if isinstance(value, dict):
                entries = [f"    {_compact(k)}: {_compact(v)}" for k, v in value.items()]
                opening, closing = "{", "}"
            else:
                entries = [f"    {_compact(v)}" for v in value]
                opening, closing = "[", "]"
            lines.append(head + opening)
            lines.append(",\n".join(entries))
            lines.append(f"  {closing}{comma}")
        else:
            text = json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n  ")
            lines.append(head + text + comma)
    lines.append("}")
    return "\n".join(lines) + "\n"


_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _compact(value: Any) -> str:
    return _COMPACT.encode(value)


def write_run(path: Path, run: Run) -> None:
    write_atomic(path, dump_run(run))


def load_run(path: Path) -> Run:
    """Read an artifact; any problem is an :class:`ArtifactError` naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise ArtifactError(f"{path}: not valid JSON: {exc}") from exc
    return Run.from_dict(data, source=str(path))


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def git_info(root: Path) -> dict[str, str]:
    """Commit and branch: from CI variables when present, else from git (never fails)."""
    commit = os.environ.get("GITHUB_SHA") or os.environ.get("CI_COMMIT_SHA") or ""
    branch = (
        os.environ.get("GITHUB_HEAD_REF")
        or os.environ.get("GITHUB_REF_NAME")
        or os.environ.get("CI_COMMIT_REF_NAME")
        or ""
    )
    if not commit:
        commit = _git(root, "rev-parse", "HEAD")
    if not branch:
        branch = _git(root, "rev-parse", "--abbrev-ref", "HEAD")
        if branch == "HEAD":
            branch = ""
    info = {}
    if commit:
        info["commit"] = commit
    if branch:
        info["branch"] = branch
    return info


def _git(root: Path, *args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def environment() -> dict[str, Any]:
    return {"python": platform.python_version(), "platform": platform.platform(terse=True)}
