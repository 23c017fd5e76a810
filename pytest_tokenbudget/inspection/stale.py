"""Stale cassettes: a replayed call whose request no longer matches the usage recorded with it.

A vcrpy cassette matched without the body (vcrpy's default ``match_on`` ignores it) keeps replaying
yesterday's answer after the prompt grew; its recorded usage then no longer describes this code.
For each replayed call the current request's input is estimated and held against the input the
recorded response reports:

* when the cassette still holds the recorded request, both requests are estimated the same way and
  their difference (the *drift*) is what changed — the estimator's own error cancels out;
* otherwise the estimate is compared with the reported input directly, with a wider tolerance when
  the estimate is approximate (tools, attachments, a model without a public tokenizer).

A drift beyond ``max(16 tokens, 10 %)`` of the recorded input (25 % for an approximate direct
comparison) flags the cassette. ``stale-cassette = "warn"`` (default) reports it; ``"fail"`` fails
the run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from .. import units as fmt
from ..model import Call, Run, Status, Verdict
from ..request_body import json_object
from ..tokens.estimates import estimate_input

__all__ = ["Finding", "check", "verdicts"]

TOLERANCE: Final = 0.10
"""Drift allowed, as a fraction of the recorded input tokens."""
APPROX_TOLERANCE: Final = 0.25
"""The same when only an approximate estimate can be compared with the reported input."""
MIN_TOKENS: Final = 16
"""Drift allowed in any case (a changed name or date in a prompt is not a stale cassette)."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One replayed call whose request drifted from its recording."""

    cassette: str
    api: str
    model: str
    recorded_input_tokens: int  # what the recorded response reports
    estimated_input_tokens: int  # what this request would use now (estimated)
    basis: str  # "recorded request" | "reported usage"

    @property
    def drift(self) -> int:
        return self.estimated_input_tokens - self.recorded_input_tokens

    def to_dict(self) -> dict[str, Any]:
        return {
            "cassette": self.cassette,
            "api": self.api,
            "model": self.model,
            "recorded_input_tokens": self.recorded_input_tokens,
            "estimated_input_tokens": self.estimated_input_tokens,
            "basis": self.basis,
        }


def check(
    call: Call,
    body: Mapping[str, Any] | None,
    raw: bytes | None,
    cassette: str,
    recorded_body: bytes | None,
) -> Finding | None:
    """A finding when ``call`` (replayed, with reported usage) drifted from its recording."""
    reported = call.usage.input_tokens
    if call.source != "replayed" or call.estimated or not reported or body is None:
        return None
    if raw is not None and recorded_body is not None and raw == recorded_body:
        return None  # the very request that was recorded: nothing can have drifted
    now = estimate_input(call.api, body, call.model)
    if now is None:
        return None
    then_body = json_object(recorded_body)
    then = estimate_input(call.api, then_body, call.model) if then_body is not None else None
    if then is not None:
        drift, basis, tolerance = now.tokens - then.tokens, "recorded request", TOLERANCE
    else:
        drift = now.tokens - reported
        basis, tolerance = "reported usage", TOLERANCE if now.exact else APPROX_TOLERANCE
    if abs(drift) <= max(MIN_TOKENS, tolerance * reported):
        return None
    return Finding(cassette, call.api, call.model, reported, max(reported + drift, 0), basis)


def display_path(path: str, root: Path) -> str:
    """A cassette path relative to the rootdir when it lies below it."""
    if not path:
        return "<unnamed cassette>"
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except (ValueError, OSError):
        return path


def verdicts(run: Run, *, fail: bool) -> list[Verdict]:
    """One verdict per stale cassette and test (the largest drift of its calls)."""
    found: list[Verdict] = []
    for entry in sorted(run.tests.values(), key=lambda e: e.nodeid):
        worst: dict[str, dict[str, Any]] = {}
        for item in entry.stale or ():
            drift = abs(item["estimated_input_tokens"] - item["recorded_input_tokens"])
            best = worst.get(item["cassette"])
            if best is None or drift > abs(best["estimated_input_tokens"] - best["recorded_input_tokens"]):
                worst[item["cassette"]] = item
        for cassette, item in sorted(worst.items()):
            found.append(_verdict(entry.nodeid, entry.path, entry.line, cassette, item, fail))
    return found


def _verdict(
    nodeid: str, path: str, line: int | None, cassette: str, item: Mapping[str, Any], fail: bool
) -> Verdict:
    recorded, now = item["recorded_input_tokens"], item["estimated_input_tokens"]
    change = f"{now - recorded:+,} tokens"
    if recorded:
        change += f", {100 * (now - recorded) / recorded:+.0f}%"
    message = (
        f"stale cassette {cassette} in {nodeid}: the request now takes ~{fmt.tokens(now)} input tokens, "
        f"the recording reports {fmt.tokens(recorded)} ({change}; {item['model']}, "
        f"by {item['basis']}); re-record it"
    )
    return Verdict(
        name=f"stale-cassette {cassette} {nodeid}",
        kind="stale-cassette",
        metric="input_tokens",
        limit=float(recorded),
        actual=float(now),
        status=Status.EXCEEDED if fail else Status.WARN,
        message=message,
        nodeid=nodeid,
        path=path,
        line=line,
    )
