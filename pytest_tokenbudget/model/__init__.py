"""The data model: token usage, one LLM call, per-test tallies and a whole run.

Everything here is plain Python: the pytest plugin, the CLI and the reports share it. The modules:
:mod:`.usage` (a call and its usage), :mod:`.tally` (sums per test, phase and model), :mod:`.run`
(a session and its verdicts) and :mod:`.fields` (the artifact's layout and how it is read back).
"""

from __future__ import annotations

from .fields import MAX_ARTIFACT_COUNT, MAX_ARTIFACT_USD, SCHEMA_VERSION, ArtifactError
from .run import INSPECTION_KINDS, Run, Status, Verdict
from .tally import Tally, TestUsage, merge_anatomy, model_key
from .usage import CAVEAT_FIELDS, PHASES, USAGE_FIELDS, ZERO, Call, CallState, Caveats, Source, Usage

__all__ = [
    "CAVEAT_FIELDS",
    "INSPECTION_KINDS",
    "MAX_ARTIFACT_COUNT",
    "MAX_ARTIFACT_USD",
    "PHASES",
    "SCHEMA_VERSION",
    "USAGE_FIELDS",
    "ZERO",
    "ArtifactError",
    "Call",
    "CallState",
    "Caveats",
    "Run",
    "Source",
    "Status",
    "Tally",
    "TestUsage",
    "Usage",
    "Verdict",
    "merge_anatomy",
    "model_key",
]
