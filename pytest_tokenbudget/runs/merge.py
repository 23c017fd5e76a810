"""Merging runs: the shards of a suite split across CI jobs (or xdist workers) into one run.

A pure function over :class:`~pytest_tokenbudget.model.Run` values: the CLI's ``tokenbudget
merge`` and anything else that combines ledgers share it. What it guarantees:

* every test is counted once. A test found in two shards (a mis-configured split, a re-run job)
  is an error by default; ``duplicates="keep-first"`` / ``"keep-last"`` keeps one shard's entry and
  records every duplicate in ``meta["merge"]["duplicates"]``. Entries outside tests (session and
  module fixtures, ``<session>``) are summed: each shard really ran its own fixtures.
* shards of different commits are refused: their numbers measure different code.
* a shard marked ``partial`` (interrupted) leaves the merged run ``partial``.
* verdicts taken while tests ran (markers, the per-test default, the hard cap) are kept; verdicts
  taken after a shard's loop (session, scoped, inspector, baseline) described only that shard and
  are dropped (counted in ``meta["merge"]["dropped_verdicts"]``): ``tokenbudget check`` takes them
  again over the whole run.
* the order of tests, verdicts and issues is canonical, so the result does not depend on the order
  of the shards, and equals a serial run of the same suite.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from ..judge.gate import TAKEN_DURING_TESTS, canonicalise, run_order
from ..model import ArtifactError, Run

__all__ = ["DUPLICATES", "MergeError", "Shard", "canonicalise", "merge_runs", "run_order"]

DUPLICATES: Final = ("error", "keep-first", "keep-last")
"""What :func:`merge_runs` does with a test found in more than one shard."""

_SHARD_META: Final = ("started", "finished", "exit_status", "partial", "commit", "plugin_version")
_SHOWN_DUPLICATES: Final = 10


class MergeError(ArtifactError):
    """Shards that cannot be merged into one run; the message names the shards and the reason."""


@dataclass(frozen=True, slots=True)
class Shard:
    """One shard's run and the name it is reported under (usually its file name)."""

    name: str
    run: Run
    source: Path | None = None  # the artifact it was read from


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A test found in more than one shard, and which shard's entry was kept."""

    nodeid: str
    shards: tuple[str, ...]
    kept: str

    def to_dict(self) -> dict[str, Any]:
        return {"test": self.nodeid, "shards": list(self.shards), "kept": self.kept}


@dataclass(slots=True)
class Merged:
    """The merged run and what the merge had to say about its shards."""

    run: Run
    duplicates: list[Duplicate] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # one sentence each, for people


def merge_runs(shards: Sequence[Shard], *, duplicates: str = "error", expected: int | None = None) -> Merged:
    """Merge ``shards`` into one run; raises :class:`MergeError` when they cannot be merged.

    ``expected``: the number of shards the CI matrix ran; another count (a job that died before
    uploading) is refused. The shards are not changed. The merged run shares their test entries
    (copying them would cost as much as the merge itself): change neither if the other must stay
    as is.
    """
    if duplicates not in DUPLICATES:
        raise ValueError(f"duplicates must be one of {', '.join(DUPLICATES)}, got {duplicates!r}")
    if not shards:
        raise MergeError("nothing to merge: no shard given")
    if expected is not None and len(shards) != expected:
        raise MergeError(
            f"found {len(shards)} shard artifact{'' if len(shards) == 1 else 's'}, expected {expected} "
            f"({', '.join(s.name for s in shards)}): a shard that did not upload its artifact "
            "would leave its tests out of the session budgets"
        )
    _same_commit(shards)
    notes = _version_notes(shards)
    owner, found = _owners(shards, duplicates)
    merged = Run(meta=_meta(shards))
    for index, shard in enumerate(shards):
        for nodeid, entry in shard.run.tests.items():
            if entry.kind == "test":
                if owner[nodeid] == index:
                    merged.tests[nodeid] = entry  # shared, not copied: neither side is changed
            else:
                merged.usage_for(nodeid, entry.kind).merge(entry)
        merged.issues.extend(i for i in shard.run.issues if owner.get(str(i.get("test")), index) == index)
        merged.verdicts.extend(
            v
            for v in shard.run.verdicts
            if v.kind in TAKEN_DURING_TESTS and owner.get(v.nodeid, index) == index
        )
    dropped = sum(1 for s in shards for v in s.run.verdicts if v.kind not in TAKEN_DURING_TESTS)
    if found:
        merged.meta["merge"]["duplicates"] = [d.to_dict() for d in found]
        notes.append(_duplicate_note(found, duplicates))
    if dropped:  # expected, not news: `tokenbudget check` takes them over the merged run
        merged.meta["merge"]["dropped_verdicts"] = dropped
    partial = [s.name for s in shards if s.run.meta.get("partial")]
    if partial:
        merged.meta["merge"]["partial_shards"] = partial
        notes.append(f"partial (interrupted) shards: {', '.join(partial)}: the merged run is partial")
    canonicalise(merged)
    return Merged(merged, found, notes)


def _same_commit(shards: Sequence[Shard]) -> None:
    commits: dict[str, list[str]] = {}
    for shard in shards:
        commit = str(shard.run.meta.get("commit") or "")
        if commit:
            commits.setdefault(commit, []).append(shard.name)
    if len(commits) > 1:
        listed = "; ".join(f"{commit[:12]}: {', '.join(names)}" for commit, names in commits.items())
        raise MergeError(
            f"shards come from {len(commits)} different commits ({listed}); "
            "merge only the shards of one CI run"
        )


def _version_notes(shards: Sequence[Shard]) -> list[str]:
    versions = {str(s.run.meta.get("plugin_version") or "") for s in shards} - {""}
    if len(versions) > 1:
        listed = ", ".join(sorted(versions))
        return [f"shards were written by different pytest-tokenbudget versions: {listed}"]
    return []


def _owners(shards: Sequence[Shard], duplicates: str) -> tuple[dict[str, int], list[Duplicate]]:
    """For each test, the index of the shard whose entry is kept; and the duplicates found."""
    seen: dict[str, list[int]] = {}
    for index, shard in enumerate(shards):
        for nodeid, entry in shard.run.tests.items():
            if entry.kind == "test":
                seen.setdefault(nodeid, []).append(index)
    found: list[Duplicate] = []
    owner: dict[str, int] = {}
    for nodeid, where in seen.items():
        keep = where[-1] if duplicates == "keep-last" else where[0]
        owner[nodeid] = keep
        if len(where) > 1:
            found.append(Duplicate(nodeid, tuple(shards[i].name for i in where), shards[keep].name))
    found.sort(key=lambda d: d.nodeid)
    if found and duplicates == "error":
        raise MergeError(_duplicate_note(found, duplicates))
    return owner, found


def _duplicate_note(found: Sequence[Duplicate], duplicates: str) -> str:
    shown = "; ".join(f"{d.nodeid} in {', '.join(d.shards)}" for d in found[:_SHOWN_DUPLICATES])
    more = f"; … {len(found) - _SHOWN_DUPLICATES:,} more" if len(found) > _SHOWN_DUPLICATES else ""
    count = f"{len(found):,} test" + (" appears" if len(found) == 1 else "s appear")
    count += " in more than one shard"
    if duplicates == "error":
        return (
            f"{count} ({shown}{more}): fix the split, or pass --duplicates keep-first|keep-last "
            "to count each once"
        )
    return f"{count}, counted once ({duplicates}): {shown}{more}"


def _meta(shards: Sequence[Shard]) -> dict[str, Any]:
    """The first shard's metadata (same keys, same order as a serial run's), with the span of all
    shards, the worst exit status, ``partial`` if any shard was, and a record of each shard."""
    metas = [s.run.meta for s in shards]
    combined: dict[str, Any] = {}
    started = [str(m["started"]) for m in metas if m.get("started")]
    finished = [str(m["finished"]) for m in metas if m.get("finished")]
    if started:
        combined["started"] = min(started)
    if finished:
        combined["finished"] = max(finished)
    for key in ("plugin_version", "commit"):
        values = [m[key] for m in metas if m.get(key)]
        if values:
            combined[key] = values[0]
    statuses = [m["exit_status"] for m in metas if isinstance(m.get("exit_status"), int)]
    if statuses:
        combined["exit_status"] = max(statuses)
    combined["partial"] = any(bool(m.get("partial")) for m in metas)
    prices = [m["prices"] for m in metas if isinstance(m.get("prices"), dict)]
    if prices:
        from ..pricing.prices import merge_provenance

        combined["prices"] = merge_provenance(prices)  # unknown models and counts of every shard
    meta = {key: combined.get(key, value) for key, value in metas[0].items() if key != "merge"}
    meta.update(combined)
    meta["merge"] = {"shards": [_shard_record(s) for s in shards]}
    return meta


def _shard_record(shard: Shard) -> dict[str, Any]:
    tests = list(shard.run.iter_tests())
    record: dict[str, Any] = {"name": shard.name}
    record.update({k: shard.run.meta[k] for k in _SHARD_META if k in shard.run.meta})
    record.update(tests=len(tests), calls=sum(t.total.calls for t in shard.run.tests.values()))
    return record


def shard_names(paths: Iterable[str]) -> list[str]:
    """Short, distinct names for shard files: the file name, or the whole path when names clash."""
    given = [p.replace("\\", "/") for p in paths]
    names = [p.rsplit("/", 1)[-1] for p in given]
    return names if len(set(names)) == len(names) else given


# -- reading shards and streaming call logs (the I/O; merge_runs itself is pure) ----------------


def find_inputs(arguments: Iterable[str]) -> tuple[list[Path], list[Path]]:
    """Shard artifacts (``*.json``) and per-call logs (``*.jsonl``) named on the command line; a
    folder stands for every such file below it, in name order (``actions/download-artifact`` puts
    each shard in a folder of its own)."""
    artifacts: list[Path] = []
    logs: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*.json") if p.is_file())
            if not found:
                raise MergeError(f"{argument}: a folder without *.json shard artifacts")
            artifacts.extend(found)
            logs.extend(sorted(p for p in path.rglob("*.jsonl") if p.is_file()))
        elif path.suffix == ".jsonl":
            logs.append(path)
        else:
            artifacts.append(path)
    return artifacts, logs


def load_shards(paths: Iterable[Path | str]) -> list[Shard]:
    """Read shard artifacts (a folder stands for the ``*.json`` files below it)."""
    from .artifact import load_run

    artifacts, _ = find_inputs(str(p) for p in paths)
    names = shard_names(str(p) for p in artifacts)
    return [Shard(name, load_run(path), path) for name, path in zip(names, artifacts, strict=True)]


def merge_call_logs(logs: Sequence[Path], out: Path, merged: Merged, shards: Sequence[Shard]) -> int:
    """Stream the shards' per-call logs (JSON lines) into ``out``; returns the lines written.

    Line by line, so memory does not grow with the calls. Lines of a test counted from another
    shard (``--duplicates keep-*``) are left out: a log then must belong to a known shard — the only
    artifact in its folder, or the artifact whose file name (without ``.json``) starts its name.
    """
    import json
    import os

    from .artifact import temp_beside

    dropped = {(name, d.nodeid) for d in merged.duplicates for name in d.shards if name != d.kept}
    owners = {log: _log_shard(log, shards) for log in logs} if dropped else {}
    fd, tmp = temp_beside(out)
    written = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as sink:
            for log in logs:
                with log.open(encoding="utf-8") as source:
                    for number, line in enumerate(source, start=1):
                        if not line.strip():
                            continue
                        if dropped:
                            try:
                                test = str(json.loads(line).get("test", ""))
                            except (ValueError, AttributeError) as exc:
                                raise MergeError(f"{log}:{number}: not a JSON object per line") from exc
                            if (owners[log], test) in dropped:
                                continue
                        sink.write(line if line.endswith("\n") else line + "\n")
                        written += 1
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return written


def _log_shard(log: Path, shards: Sequence[Shard]) -> str:
    beside = [s for s in shards if s.source is not None and s.source.parent == log.parent]
    if len(beside) == 1:
        return beside[0].name
    named = [s for s in beside if s.source is not None and log.name.startswith(s.source.stem + ".")]
    if len(named) == 1:
        return named[0].name
    raise MergeError(
        f"{log}: cannot tell which shard this call log belongs to (keep each shard's artifact and log "
        "in a folder of their own, or name the log after the artifact: shard-1.json, shard-1.calls.jsonl)"
    )
