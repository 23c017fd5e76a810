"""Exports for spreadsheets and log tools: per-test CSV and the per-call JSONL log."""

from __future__ import annotations

import csv
import io
import json
import os
import threading
from pathlib import Path
from typing import IO

from ..model import Call, Run, TestUsage
from ..runs.artifact import temp_beside, write_atomic

CSV_COLUMNS = (
    "test", "kind", "outcome", "path", "line", "calls",
    "input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens",
    "total_tokens", "cost_usd", "cost_known", "live_calls", "live_cost_usd", "estimated_calls", "models",
)  # fmt: skip


def render_csv(run: Run) -> str:
    """One row per test (and fixture/session entry) with calls, in node-id order."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for nodeid, entry in sorted(run.tests.items()):
        row = _csv_row(nodeid, entry)
        line = _CSV_LINE % row
        # Filled in as plain text unless a cell may need quoting (a comma, quote or line break in
        # a name): cheaper than writer.writerow for every row.
        plain = line.count(",") == _COMMAS and '"' not in line and "\r" not in line
        if plain and line.find("\n") == len(line) - 1:
            out.write(line)
        else:
            writer.writerow(row)
    return out.getvalue()


# %s writes str(), as csv.writer does for every cell of a row here (str, int, bool; no float)
_CSV_LINE = ",".join(["%s"] * len(CSV_COLUMNS)) + "\n"
_COMMAS = len(CSV_COLUMNS) - 1


def _csv_row(nodeid: str, entry: TestUsage) -> tuple[object, ...]:
    """The cells of ``entry``'s row, as csv.writer takes them."""
    tally = entry.total
    priced = tally.calls > tally.unpriced_calls
    return (
        nodeid,
        entry.kind,
        entry.outcome,
        entry.path,
        "" if entry.line is None else entry.line,
        tally.calls,
        tally.input_tokens,
        tally.cached_input_tokens,
        tally.cache_write_tokens,
        tally.output_tokens,
        tally.reasoning_tokens,
        tally.total_tokens,
        f"{tally.cost_usd:.6f}" if priced else "",
        str(tally.cost_known).lower(),
        tally.live_calls,
        f"{tally.live_cost_usd:.6f}",
        tally.estimated_calls,
        " ".join(sorted(entry.models)),
    )


def write_csv(run: Run, path: Path) -> None:
    write_atomic(path, render_csv(run))


# -- the call log ----------------------------------------------------------------------------------

# Fields of a call log line; never request or response text, never headers.
CALL_FIELDS = (
    "test", "phase", "provider", "api", "host", "model", "input_tokens", "cached_input_tokens",
    "cache_write_tokens", "output_tokens", "reasoning_tokens", "total_tokens", "cost_usd", "streamed",
    "status_code", "source", "estimated", "state", "duration_s",
)  # fmt: skip


def call_line(call: Call) -> str:
    data = call.to_dict()
    return json.dumps({key: data[key] for key in CALL_FIELDS if key in data}, separators=(",", ":")) + "\n"


class CallLog:
    """A ledger listener streaming one JSON line per call to a temporary file next to ``path``.

    Memory stays flat in the number of calls. :meth:`finish` sorts the lines by test (stable, so
    each test keeps its call order) and moves the file into place atomically: a serial run, an
    xdist run (:meth:`part` files of the workers, folded in by the controller) and a merge of
    shards give the same log.
    """

    def __init__(self, path: Path, *, part: str = "") -> None:
        self.path = path
        fd, tmp = temp_beside(path, ".part", f"{part or 'main'}.")
        self.part_path = Path(tmp)
        # Line-buffered: a worker that dies keeps every line written before (its part is found
        # by worker_parts() and folded in by the controller).
        self._handle: IO[str] = os.fdopen(fd, "w", buffering=1, encoding="utf-8", newline="\n")
        self._lock = threading.Lock()

    def __call__(self, call: Call) -> None:
        line = call_line(call)
        with self._lock:
            if not self._handle.closed:
                self._handle.write(line)

    def close(self) -> Path:
        with self._lock:
            if not self._handle.closed:
                self._handle.close()
        return self.part_path

    def finish(self, parts: list[Path] | tuple[Path, ...] = ()) -> Path:
        """Fold in ``parts`` (workers' logs), order by test, write ``path`` atomically.

        Memory grows with the runs of consecutive lines of one test (about the number of tests),
        not with the calls: the lines are copied from the parts, never held all at once.
        """
        self.close()
        sources = [self.part_path, *parts]
        segments: list[tuple[str, int, int, int]] = []  # test, source, start offset, end offset
        for order, source in enumerate(sources):
            try:
                segments += _segments(source, order)
            except OSError:  # a worker that died before writing its part
                continue
        segments.sort()
        fd, tmp = temp_beside(self.path)
        handles: dict[int, IO[bytes]] = {}
        try:
            with os.fdopen(fd, "wb") as sink:
                for _, order, start, end in segments:
                    handle = handles.get(order) or handles.setdefault(order, sources[order].open("rb"))
                    handle.seek(start)
                    _copy(handle, sink, end - start)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        finally:
            for handle in handles.values():
                handle.close()
        for source in sources:
            source.unlink(missing_ok=True)
        return self.path


def worker_parts(path: Path, since: float) -> list[Path]:
    """The xdist workers' part files of the log at ``path`` written since ``since`` (epoch s):
    also those of workers that died before telling the controller where theirs was."""
    found = []
    for part in path.parent.glob(f".{path.name}.gw*.part"):
        try:
            if part.stat().st_mtime >= since:
                found.append(part)
        except OSError:
            continue
    return sorted(found)


_DECODER = json.JSONDecoder()
_PREFIX = b'{"test":'


def _segments(source: Path, order: int) -> list[tuple[str, int, int, int]]:
    """Runs of consecutive complete lines of one test in ``source``: (test, order, start, end).

    A last line without its newline (a worker killed mid-write) is left out.
    """
    out: list[tuple[str, int, int, int]] = []
    offset = 0
    with source.open("rb") as handle:
        for line in handle:
            end = offset + len(line)
            if line.endswith(b"\n"):
                test = _test_of(line)
                if out and out[-1][0] == test and out[-1][3] == offset:
                    out[-1] = (test, order, out[-1][2], end)
                else:
                    out.append((test, order, offset, end))
            offset = end
    return out


def _test_of(line: bytes) -> str:
    """The ``test`` of a log line: decoded from the front (our own lines) or from the whole line."""
    text = line.decode("utf-8", errors="replace")
    try:
        if line.startswith(_PREFIX):
            return str(_DECODER.raw_decode(text, len(_PREFIX))[0])
        data = json.loads(text)
    except ValueError:
        return ""
    return str(data.get("test", "")) if isinstance(data, dict) else ""


def _copy(source: IO[bytes], sink: IO[bytes], size: int, chunk: int = 1 << 20) -> None:
    while size > 0:
        block = source.read(min(chunk, size))
        if not block:
            return
        sink.write(block)
        size -= len(block)
