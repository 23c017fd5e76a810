"""A vcrpy cassette that still replays after the prompt changed is flagged stale, naming cassette and test.

Cassettes are recorded with the real openai SDK from a loopback server whose usage is tiktoken's
count (tests/helpers/echo_server.py); the code's prompt is then edited and the cassette replayed with a
``match_on`` that ignores the body (vcrpy's default does too), as happens in real suites.
"""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from echo_server import EchoServer

from pytest_tokenbudget.capture import Capture
from pytest_tokenbudget.config import Settings
from pytest_tokenbudget.inspection.inspector import Inspector
from pytest_tokenbudget.ledger import Ledger, Owner
from pytest_tokenbudget.model import Run
from pytest_tokenbudget.tokens import tokenizer

openai = pytest.importorskip("openai")
vcr = pytest.importorskip("vcr")

NODEID = "tests/test_app.py::test_summary"
SYSTEM = "You summarise support tickets in one sentence."
# The prompt after an edit: a much longer system prompt (the kind of growth the check exists for).
SYSTEM_EDITED = (
    SYSTEM
    + " "
    + " ".join(["Mention the customer's plan, the product area, the urgency and any refund promised."] * 4)
)
TICKET = "The export button does nothing on Safari."


def _messages(system: str, ticket: str = TICKET) -> list[dict[str, str]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": ticket}]


def _input(system: str, ticket: str = TICKET) -> int:
    body = {"model": "gpt-4o-mini", "messages": _messages(system, ticket)}
    return tokenizer.estimate_request("openai.chat", body, "gpt-4o-mini").total


@pytest.fixture(scope="module")
def server() -> Iterator[EchoServer]:
    running = EchoServer()
    yield running
    running.stop()


@pytest.fixture
def session(tmp_path: Path) -> Iterator[tuple[Ledger, Inspector]]:
    ledger = Ledger()
    ledger.push_owner(Owner(NODEID, "call"))
    inspector = Inspector(Settings(root=tmp_path))
    capture = Capture(ledger)
    capture.recorder.observers.append(inspector.observe)
    capture.install()
    try:
        yield ledger, inspector
    finally:
        capture.uninstall()


def _ask(url: str, system: str, ticket: str = TICKET) -> Any:
    with openai.OpenAI(base_url=url + "/v1", api_key="sk-test", max_retries=0) as client:
        return client.chat.completions.create(model="gpt-4o-mini", messages=_messages(system, ticket))


def _record(server: EchoServer, path: Path, system: str = SYSTEM, **options: Any) -> None:
    with vcr.use_cassette(str(path), record_mode="once", **options):
        _ask(server.url, system)


def _replay(session: tuple[Ledger, Inspector], path: Path, system: str, ticket: str = TICKET) -> Run:
    ledger, inspector = session
    with vcr.use_cassette(str(path), record_mode="none", match_on=["method", "path"]):
        reply = _ask("http://128.0.0.1:9", system, ticket)  # nothing listens there: replay only
    assert reply.choices[0].message.content == "Hello there, budget! Nothing to report."
    inspector.settle(ledger.run, NODEID)
    return ledger.run


def test_cassette_replayed_after_the_prompt_grew_is_stale(
    server: EchoServer, session: tuple[Ledger, Inspector], tmp_path: Path
) -> None:
    cassette = tmp_path / "cassettes" / "summary.yaml"
    _record(server, cassette)
    run = _replay(session, cassette, SYSTEM_EDITED)
    recorded, now = _input(SYSTEM), _input(SYSTEM_EDITED)
    assert (recorded, now) == (28, 92)
    entry = run.tests[NODEID]
    assert entry.total.replayed_calls == 1
    # recording (live, 28) + replay (the recorded 28 again: the recorded usage is what gets counted)
    assert entry.total.usage.input_tokens == 56
    assert entry.stale == [
        {
            "cassette": "cassettes/summary.yaml",
            "api": "openai.chat",
            "model": "gpt-4o-mini",
            "recorded_input_tokens": 28,
            "estimated_input_tokens": 92,
            "basis": "recorded request",
        }
    ]
    entry.path, entry.line = "tests/test_app.py", 12
    (verdict,) = Inspector(Settings(root=tmp_path)).verdicts(run)
    assert verdict.to_dict() == {
        "name": f"stale-cassette cassettes/summary.yaml {NODEID}",
        "kind": "stale-cassette",
        "metric": "input_tokens",
        "limit": 28.0,
        "actual": 92.0,
        "status": "warn",
        "message": (
            f"stale cassette cassettes/summary.yaml in {NODEID}: the request now takes ~92 input tokens, "
            "the recording reports 28 (+64 tokens, +229%; gpt-4o-mini, by recorded request); re-record it"
        ),
        "nodeid": NODEID,
        "path": "tests/test_app.py",
        "line": 12,
    }


def test_stale_cassette_fails_the_run_when_configured(
    server: EchoServer, session: tuple[Ledger, Inspector], tmp_path: Path
) -> None:
    cassette = tmp_path / "summary.yaml"
    _record(server, cassette)
    run = _replay(session, cassette, SYSTEM_EDITED)
    verdicts = Inspector(Settings(root=tmp_path, stale_cassette="fail")).verdicts(run)
    assert [(v.kind, v.status, v.actual) for v in verdicts] == [("stale-cassette", "exceeded", 92.0)]
    warned = Inspector(Settings(root=tmp_path, stale_cassette="fail", mode="warn")).verdicts(run)
    assert [(v.status, v.message.endswith("re-record it (mode warn)")) for v in warned] == [("warn", True)]


def test_unchanged_request_is_not_stale(
    server: EchoServer, session: tuple[Ledger, Inspector], tmp_path: Path
) -> None:
    cassette = tmp_path / "summary.yaml"
    _record(server, cassette)
    run = _replay(session, cassette, SYSTEM)
    assert not run.tests[NODEID].stale
    assert run.tests[NODEID].total.replayed_calls == 1


def test_a_small_edit_within_tolerance_is_not_stale(
    server: EchoServer, session: tuple[Ledger, Inspector], tmp_path: Path
) -> None:
    cassette = tmp_path / "summary.yaml"
    _record(server, cassette)
    ticket = "The export button does nothing on Safari 17."  # +2 tokens: under max(16, 10 %)
    assert _input(SYSTEM, ticket) - _input(SYSTEM) == 2
    run = _replay(session, cassette, SYSTEM, ticket)
    assert not run.tests[NODEID].stale


def test_without_the_recorded_request_the_reported_usage_is_the_reference(
    server: EchoServer, session: tuple[Ledger, Inspector], tmp_path: Path
) -> None:
    cassette = tmp_path / "summary.yaml"

    def drop_body(request: Any) -> Any:
        request.body = None  # some suites scrub request bodies before saving cassettes
        return request

    _record(server, cassette, before_record_request=drop_body)
    run = _replay(session, cassette, SYSTEM_EDITED)
    assert [
        (s["basis"], s["recorded_input_tokens"], s["estimated_input_tokens"]) for s in run.tests[NODEID].stale
    ] == [("reported usage", 28, 92)]


# -- in a pytest session --------------------------------------------------------------------------

APP_TEST = """
import openai
import vcr

SYSTEM = {system!r}

def test_summary():
    with vcr.use_cassette("cassettes/summary.yaml", record_mode="none", match_on=["method", "path"]):
        with openai.OpenAI(base_url="http://128.0.0.1:9/v1", api_key="sk-test", max_retries=0) as client:
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{{"role": "system", "content": SYSTEM}}, {{"role": "user", "content": {ticket!r}}}],
            )
"""


@pytest.mark.parametrize(("setting", "ret"), [("warn", 0), ("fail", 1)])
def test_session_names_the_stale_cassette_and_test(
    server: EchoServer, pytester: pytest.Pytester, tmp_path: Path, setting: str, ret: int
) -> None:
    recorded = tmp_path / "summary.yaml"
    _record(server, recorded)
    (pytester.path / "cassettes").mkdir()
    shutil.copy(recorded, pytester.path / "cassettes" / "summary.yaml")
    pytester.makepyprojecttoml(f'[tool.tokenbudget]\nstale-cassette = "{setting}"\n')
    pytester.makepyfile(test_app=textwrap.dedent(APP_TEST.format(system=SYSTEM_EDITED, ticket=TICKET)))
    result = pytester.runpytest("--token-budget", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert result.ret == ret
    result.stdout.fnmatch_lines(
        [
            "stale cassette cassettes/summary.yaml in test_app.py::test_summary: the request now takes "
            "~92 input tokens, the recording reports 28 (+64 tokens, +229%; gpt-4o-mini, by recorded "
            "request); re-record it"
        ]
    )
