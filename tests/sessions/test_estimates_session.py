"""Estimates, unmetered calls and "where the input goes" in real pytest sessions: artifact, terminal, gate."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
import tiktoken
from pytester_session import read_artifact, run_session

import pytest_tokenbudget.capture
import pytest_tokenbudget.inspection.inspector
from pytest_tokenbudget.tokens import tokenizer

# Imported here so in-process pytester runs share these modules instead of re-importing them
# (pytester drops modules first imported inside a run; a stale package attribute would then mix
# two copies of the data model).
_SHARED = (pytest_tokenbudget.capture, pytest_tokenbudget.inspection.inspector)

MOCKS = """
import json
import httpx

REPLY = {"id": "c", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
         "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there, budget!"},
                      "finish_reason": "stop"}]}

def post(body=None, content=None, usage=None):
    reply = dict(REPLY, usage=usage) if usage else REPLY
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=reply))
    with httpx.Client(transport=transport) as client:
        client.post("https://api.openai.com/v1/chat/completions", json=body, content=content)
"""

AGENT_BODY: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are a travel agent. Answer with facts only."},
        {"role": "user", "content": "Find me a flight to Lisbon next Friday."},
        {"role": "assistant", "content": "Which airport are you leaving from?"},
        {"role": "user", "content": "Berlin."},
    ],
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "search_flights",
                "description": "Search flights between two airports on a date.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "origin": {"type": "string", "description": "IATA code of the departure airport"},
                        "destination": {"type": "string", "description": "IATA code of the arrival airport"},
                        "date": {"type": "string", "description": "Departure date, YYYY-MM-DD"},
                        "cabin": {"type": "string", "enum": ["economy", "business"]},
                    },
                    "required": ["origin", "destination", "date"],
                },
            },
        }
    ],
}


def _session(pytester: pytest.Pytester, tests: str, pyproject: str = "") -> pytest.RunResult:
    pytester.makepyfile(mocks=MOCKS, test_app=textwrap.dedent(tests))
    pytester.makepyprojecttoml("[tool.tokenbudget]\n" + textwrap.dedent(pyproject))
    return run_session(pytester)


ONE_ESTIMATED = """
from mocks import post

def test_chat():
    post({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hi to the budget."}]})
"""


def test_estimated_calls_are_marked_in_the_artifact_and_the_terminal(pytester: pytest.Pytester) -> None:
    result = _session(pytester, ONE_ESTIMATED)
    result.assert_outcomes(passed=1)
    # input 13 (see test_estimates.py), output: "Hello there, budget!" is 5 tokens
    assert tokenizer.count("Hello there, budget!", "gpt-4o-mini").tokens == 5
    result.stdout.fnmatch_lines(
        [
            "  total  input  output       cost   calls  test",
            "    ~18     13       5  $0.000005  1 call  test_app.py::test_chat",
            "~ estimated: 1 call reported no usage or only part of it; counted by tokenizer",
        ]
    )
    run = read_artifact(pytester)
    test = run["tests"]["test_app.py::test_chat"]
    assert (test["estimated_calls"], test["input_tokens"], test["output_tokens"]) == (1, 13, 5)
    assert run["totals"]["estimated_calls"] == 1
    assert run["models"]["openai/gpt-4o-mini"]["estimated_calls"] == 1
    assert [(i["state"], i["detail"]) for i in run["issues"]] == [
        ("no-usage", "response reports no usage; estimated input and output, tiktoken:o200k_base")
    ]


@pytest.mark.parametrize(
    ("estimated", "outcome", "status"), [("count", "failed", "exceeded"), ("warn-only", "passed", "warn")]
)
def test_estimated_numbers_fail_a_budget_only_when_counted(
    pytester: pytest.Pytester, estimated: str, outcome: str, status: str
) -> None:
    tests = "import pytest\n" + ONE_ESTIMATED.replace(
        "def test_chat", "@pytest.mark.token_budget(10)\ndef test_chat"
    )
    result = _session(pytester, tests, f'estimated = "{estimated}"\n')
    result.assert_outcomes(**{outcome: 1})
    verdicts = read_artifact(pytester)["verdicts"]
    assert [(v["kind"], v["status"], v["actual"]) for v in verdicts] == [("marker", status, 18.0)]
    message = "token budget exceeded: 18 tokens > 10 (input 13, output 5; gpt-4o-mini ×1)"
    if estimated == "warn-only":
        message += "; includes 1 estimated call (estimated = warn-only)"
    assert verdicts[0]["message"] == message


UNMETERED = """
from mocks import post

def test_binary():
    post(content=b"\\x00\\x01 protobuf")

def test_metered():
    post({"model": "gpt-4o-mini", "messages": []}, usage={"prompt_tokens": 3, "completion_tokens": 5})
"""


@pytest.mark.parametrize(("setting", "ret", "status"), [("warn", 0, "warn"), ("fail", 1, "exceeded")])
def test_unmetered_calls_are_named_once_per_run(
    pytester: pytest.Pytester, setting: str, ret: int, status: str
) -> None:
    result = _session(pytester, UNMETERED, f'unmetered = "{setting}"\n')
    result.assert_outcomes(passed=2)
    assert result.ret == ret
    verb = "fails the run" if setting == "fail" else "budgets cannot trip on them"
    message = (
        f"1 unmetered call (no usage reported, none estimable; {verb}): "
        "test_app.py::test_binary [openai.chat gpt-4o-mini]"
    )
    result.stdout.fnmatch_lines([message])
    assert result.stdout.str().count("unmetered call (") == 1
    run = read_artifact(pytester)
    assert run["totals"]["unmetered_calls"] == 1
    assert [(v["kind"], v["status"], v["actual"], v["message"]) for v in run["verdicts"]] == [
        ("unmetered", status, 1.0, message)
    ]


def test_unmetered_ignore_says_nothing(pytester: pytest.Pytester) -> None:
    result = _session(pytester, UNMETERED, 'unmetered = "ignore"\n')
    assert result.ret == 0
    assert "unmetered call (" not in result.stdout.str()
    assert read_artifact(pytester)["verdicts"] == []


ANATOMY = f"""
from mocks import post

BODY = {AGENT_BODY!r}

def test_agent():
    post(BODY, usage={{"prompt_tokens": 120, "completion_tokens": 5}})
    post(BODY, usage={{"prompt_tokens": 120, "completion_tokens": 5}})
"""


def test_where_the_input_goes_per_test_and_in_total(pytester: pytest.Pytester) -> None:
    estimate = tokenizer.estimate_request("openai.chat", AGENT_BODY, "gpt-4o-mini")
    parts = (estimate.system, estimate.messages, estimate.tools, estimate.overhead, estimate.total)
    assert parts == (11, {"user": 11, "assistant": 7}, 83, 19, 131)
    o200k = tiktoken.get_encoding("o200k_base")  # the content parts, checked against tiktoken itself
    contents = [len(o200k.encode(m["content"])) for m in AGENT_BODY["messages"]]
    assert contents == [11, 9, 7, 2]
    assert estimate.overhead == 4 * (3 + 1) + 3  # per-message framing + role, reply priming
    result = _session(pytester, ANATOMY, 'anatomy = "exact"\n')
    result.assert_outcomes(passed=1)
    anatomy = {
        "calls": 2,
        "messages:assistant": 14,
        "messages:user": 22,
        "overhead": 38,
        "peak:system": 11,
        "peak:tools": 83,
        "system": 22,
        "tools": 166,
    }
    run = read_artifact(pytester)
    assert run["tests"]["test_app.py::test_agent"]["anatomy"] == anatomy
    assert run["anatomy"] == anatomy
    result.stdout.fnmatch_lines(
        [
            "where the input goes (estimated, ~262 tokens in 2 requests): tools 63% (166), "
            "overhead 15% (38), messages:user 8% (22), system 8% (22), messages:assistant 5% (14)"
        ]
    )


NO_TIKTOKEN = """
import sys

def pytest_sessionfinish(session):
    with open("modules.txt", "w") as out:
        out.write("\\n".join(sorted(name for name in sys.modules if name.split(".")[0] == "tiktoken")))
"""


@pytest.mark.slow
def test_by_default_the_anatomy_is_approximate_and_tiktoken_never_loads(pytester: pytest.Pytester) -> None:
    """Every response reports its usage and no part limit is set: the anatomy counts ~4 bytes a
    token (marked approximate) and tiktoken is never imported — not its ~200 ms, not its memory."""
    pytester.makeconftest(NO_TIKTOKEN)
    pytester.makepyfile(mocks=MOCKS, test_app=textwrap.dedent(ANATOMY))
    pytester.makepyprojecttoml("[tool.tokenbudget]\n")
    result = run_session(pytester, subprocess=True)
    result.assert_outcomes(passed=1)
    assert (pytester.path / "modules.txt").read_text() == ""
    anatomy = read_artifact(pytester)["anatomy"]
    heuristic = tokenizer.estimate_request("openai.chat", AGENT_BODY, "gpt-4o-mini", exact=False)
    assert heuristic.method == "heuristic"
    assert anatomy["calls"] == 2
    assert anatomy["approximate_calls"] == 2
    assert anatomy["tools"] == 2 * heuristic.tools
    assert anatomy["system"] == 2 * heuristic.system
    exact = tokenizer.estimate_request("openai.chat", AGENT_BODY, "gpt-4o-mini")
    assert abs(heuristic.total - exact.total) < 0.5 * exact.total  # the same picture, roughly
    result.stdout.fnmatch_lines(["where the input goes (estimated, ~* tokens in 2 requests): tools *"])


@pytest.mark.parametrize(
    ("limit", "loaded"), [("max-tool-schema-tokens = 50", True), ('anatomy = "exact"', True)]
)
def test_a_part_limit_or_anatomy_exact_counts_with_tiktoken(
    pytester: pytest.Pytester, limit: str, loaded: bool
) -> None:
    pytester.makeconftest(NO_TIKTOKEN)
    pytester.makepyfile(mocks=MOCKS, test_app=textwrap.dedent(ANATOMY))
    pytester.makepyprojecttoml(f"[tool.tokenbudget]\n{limit}\n")
    run_session(pytester, subprocess=True)
    assert "tiktoken" in (pytester.path / "modules.txt").read_text().split()
    assert "approximate_calls" not in read_artifact(pytester)["anatomy"]


@pytest.mark.parametrize(("estimated", "ret", "status"), [("count", 1, "exceeded"), ("warn-only", 0, "warn")])
def test_a_tool_schema_limit_judges_the_largest_request(
    pytester: pytest.Pytester, estimated: str, ret: int, status: str
) -> None:
    result = _session(
        pytester,
        ANATOMY,
        f'estimated = "{estimated}"\nmax-tool-schema-tokens = 50\nmax-system-tokens = 100\n',
    )
    result.assert_outcomes(passed=1)
    assert result.ret == ret
    verdicts = [
        (v["name"], v["status"], v["limit"], v["actual"], v["message"])
        for v in read_artifact(pytester)["verdicts"]
    ]
    note = " (estimated = warn-only)" if estimated == "warn-only" else ""
    assert verdicts == [
        (
            "max-tool-schema-tokens",
            status,
            50.0,
            83.0,
            "tool schemas of one request exceeded max-tool-schema-tokens: ~83 tokens in "
            f"test_app.py::test_agent > 50{note}",
        ),
        (
            "max-system-tokens",
            "ok",
            100.0,
            11.0,
            "system prompt of one request ok: ~11 tokens in test_app.py::test_agent of 100 "
            "(max-system-tokens)",
        ),
    ]


@pytest.mark.slow
def test_anatomy_and_estimates_cross_xdist_workers(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    tests = ANATOMY + ONE_ESTIMATED.replace("from mocks import post\n", "")
    pytester.makepyfile(mocks=MOCKS, test_app=textwrap.dedent(tests))
    pytester.makepyprojecttoml("[tool.tokenbudget]\nmax-tool-schema-tokens = 50\n")
    result = run_session(pytester, "-n", "2", subprocess=True)
    result.assert_outcomes(passed=2)
    assert result.ret == 1  # the tool-schema limit, judged on the controller over the workers' data
    run = read_artifact(pytester)
    assert run["tests"]["test_app.py::test_agent"]["anatomy"]["peak:tools"] == 83
    assert run["anatomy"]["tools"] == 166
    assert run["totals"]["estimated_calls"] == 1
    assert [(v["name"], v["status"], v["actual"]) for v in run["verdicts"]] == [
        ("max-tool-schema-tokens", "exceeded", 83.0)
    ]
