"""One fixed run with hostile test ids, shared by the report tests (the golden files are of it)."""

from __future__ import annotations

from pytest_tokenbudget.model import Call, Run, Status, Usage, Verdict

HOSTILE = "tests/test_x.py::test_evil[a|b `c` <script>alert(1)</script> @octocat\nnext]"


def make_call(
    owner: str, model: str, provider: str, usage: Usage, cost: float | None, source: str = "replayed"
) -> Call:
    return Call(owner, "call", provider, f"{provider}.chat", "h", model, usage, source=source, cost_usd=cost)


def fixed_run() -> Run:
    """A run with every feature the reports show: costs known and unknown, live and replayed,
    a hostile node id, verdicts of each status, prices provenance."""
    run = Run(
        meta={
            "plugin_version": "0.1.0",
            "commit": "0123456789abcdef",
            "branch": "feature/x",
            "prices": {
                "source": "genai-prices",
                "version": "0.2.3",
                "data_date": "2026-11-09",
                "calls_by_source": {"genai-prices": 3},
                "unknown": [{"provider": "openai", "model": "ft:acme", "calls": 1}],
            },
        }
    )
    calls = [
        make_call(
            "tests/test_chat.py::test_answer",
            "gpt-4o-mini",
            "openai",
            Usage(1200, 400, 0, 300, 100),
            0.000345,
        ),
        make_call(
            "tests/test_chat.py::test_answer",
            "claude-sonnet-4-5",
            "anthropic",
            Usage(900, 0, 500, 60, 0),
            0.0054,
        ),
        make_call(
            "tests/test_chat.py::test_summary",
            "gpt-4o-mini",
            "openai",
            Usage(500, 0, 0, 50, 0),
            0.000105,
            "live",
        ),
        make_call(HOSTILE, "ft:acme", "openai", Usage(100, 0, 0, 10, 0), None),
    ]
    lines = {"tests/test_chat.py::test_answer": 4, "tests/test_chat.py::test_summary": 9, HOSTILE: 3}
    for call in calls:
        entry = run.usage_for(call.owner)
        entry.add_call(call)
        entry.path, entry.line, entry.outcome = call.owner.split("::")[0], lines[call.owner], "passed"
    answer = "tests/test_chat.py::test_answer"
    run.verdicts += [
        Verdict(f"marker {answer}", "marker", "total_tokens", 2000, 2460, Status.EXCEEDED,
                "token budget exceeded: 2,460 tokens > 2,000 (input 2,100, output 360)",
                answer, "tests/test_chat.py", 4),
        Verdict("session", "session", "cost_usd", 0.01, 0.00585, Status.UNKNOWN,
                "session budget unknown: 1 call without a price; ≥$0.00585 of $0.01"),
        Verdict(f"test-default {HOSTILE}", "test-default", "total_tokens", 120, 110, Status.WARN,
                "token budget at 92%: 110 tokens of 120", HOSTILE, "tests/test_x.py", 3),
        Verdict("session", "session", "total_tokens", 10000, 3120, Status.OK, "session ok: 3,120 of 10,000"),
    ]  # fmt: skip
    return run
