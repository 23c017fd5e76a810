"""The hard cost cap refuses a live request before it leaves; replayed and mocked requests pass.

Real SDKs (openai on httpx2, requests) against a loopback server that counts what it receives,
and vcrpy cassettes recorded from it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pytest_tokenbudget import TokenBudgetExceeded
from pytest_tokenbudget.capture import Capture
from pytest_tokenbudget.judge.hardcap import CassetteWatch, HardCap, output_ceiling
from pytest_tokenbudget.ledger import Ledger, Owner
from pytest_tokenbudget.model import Call, Usage

openai = pytest.importorskip("openai")
vcr = pytest.importorskip("vcr")

PER_TOKEN = 1e-5  # the test's price: $10 per million tokens, input and output alike
MESSAGES = [{"role": "user", "content": "Say hi to the budget."}]


class CountingServer:
    """OpenAI chat completions on 127.0.0.1 (HTTP/1.0); ``requests`` counts what arrived."""

    def __init__(self) -> None:
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                owner.requests += 1
                body = json.dumps(
                    {
                        "id": "c1",
                        "object": "chat.completion",
                        "created": 1,
                        "model": "gpt-4o-mini",
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": "hi"},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 14, "completion_tokens": 2, "total_tokens": 16},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def server() -> Iterator[CountingServer]:
    running = CountingServer()
    yield running
    running.stop()


def _cost_of(provider: str, model: str, usage: Usage, host: str) -> float | None:
    return usage.total_tokens * PER_TOKEN if model == "gpt-4o-mini" else None


@pytest.fixture
def ledger() -> Iterator[Ledger]:
    ledger = Ledger()
    ledger.push_owner(Owner("tests/test_app.py::test_chat", "call"))
    capture = Capture(ledger)
    capture.install()
    ledger.capture = capture  # type: ignore[attr-defined]
    try:
        yield ledger
    finally:
        capture.uninstall()
        CassetteWatch().uninstall()


def _cap(ledger: Ledger, limit: float, *, spent: float = 0.0) -> HardCap:
    cap = HardCap(limit, _cost_of)
    cap.watch.refresh()
    ledger.add_listener(cap.observe)
    ledger.capture.recorder.preflight.append(cap)  # type: ignore[attr-defined]
    if spent:
        ledger.record(
            Call(
                owner="earlier",
                phase="call",
                provider="openai",
                api="openai.chat",
                host="api.openai.com",
                model="gpt-4o-mini",
                usage=Usage(1, 0, 0, 1, 0),
                source="live",
                cost_usd=spent,
            )
        )
    return cap


def _client(server: CountingServer) -> Any:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="sk-test", max_retries=0)


def _chat(server: CountingServer, max_tokens: int = 100) -> Any:
    with _client(server) as client:
        return client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=max_tokens)


def test_live_request_that_would_cross_the_cap_is_refused_before_it_leaves(
    server: CountingServer, ledger: Ledger
) -> None:
    cap = _cap(ledger, 0.01, spent=0.0095)
    before = server.requests
    with pytest.raises(TokenBudgetExceeded) as refused:
        _chat(server, max_tokens=100)
    assert server.requests == before  # nothing left the process
    # input 13 tokens (tokenizer) + output ≤ 100 (max_tokens) at $10/M = $0.00113
    message = (
        "hard cost cap: refused a live openai.chat request to gpt-4o-mini from tests/test_app.py::test_chat "
        "(call): spent $0.0095 + estimated $0.00113 (input 13, output ≤100) > $0.01"
    )
    assert str(refused.value) == message
    assert refused.value.spent == pytest.approx(0.0095)
    assert refused.value.estimate == pytest.approx(0.00113)
    assert [(v.kind, v.status, v.nodeid, v.message) for v in cap.verdicts] == [
        ("hard-cap", "exceeded", "tests/test_app.py::test_chat", message)
    ]
    assert [c.owner for c in ledger.calls] == ["earlier"]  # the refused request is not a call


def test_the_sdk_retry_loop_does_not_swallow_the_refusal(server: CountingServer, ledger: Ledger) -> None:
    _cap(ledger, 0.0001)
    with (
        openai.OpenAI(base_url=server.url + "/v1", api_key="sk-test", max_retries=3) as client,
        pytest.raises(TokenBudgetExceeded),  # not openai.APIConnectionError after 3 retries
    ):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=5)


def test_live_requests_under_the_cap_go_out_and_count_toward_it(
    server: CountingServer, ledger: Ledger
) -> None:
    cap = _cap(ledger, 0.01)
    before = server.requests
    reply = _chat(server, max_tokens=100)
    assert reply.usage.total_tokens == 16
    assert server.requests == before + 1
    assert cap.verdicts == []
    assert [(c.source, c.usage.total_tokens) for c in ledger.calls] == [("live", 16)]


def test_unpriced_model_is_let_through_and_reported_once(server: CountingServer, ledger: Ledger) -> None:
    cap = _cap(ledger, 0.000001)
    before = server.requests
    with _client(server) as client:
        for _ in range(2):
            client.chat.completions.create(model="private-7b", messages=MESSAGES)
    assert server.requests == before + 2
    assert [(v.status, v.message) for v in cap.verdicts] == [
        (
            "unknown",
            "hard cost cap cannot price openai-compatible/private-7b: its live requests are not capped",
        )
    ]


def test_replayed_request_never_trips_the_cap(server: CountingServer, ledger: Ledger, tmp_path: Path) -> None:
    cassette = str(tmp_path / "chat.yaml")
    with vcr.use_cassette(cassette, record_mode="once"):
        _chat(server)  # recorded: cap not installed yet
    cap = _cap(ledger, 0.01, spent=0.5)  # already far over the cap
    before = server.requests
    with vcr.use_cassette(cassette, record_mode="none"):
        reply = _chat(server)
    assert reply.usage.total_tokens == 16
    assert server.requests == before
    assert cap.verdicts == []
    assert [c.source for c in ledger.calls] == ["live", "live", "replayed"]  # recorded, seeded, replayed


def test_request_a_cassette_would_record_live_is_refused(
    server: CountingServer, ledger: Ledger, tmp_path: Path
) -> None:
    cassette = str(tmp_path / "chat.yaml")
    with vcr.use_cassette(cassette, record_mode="once"):
        _chat(server, max_tokens=100)
    _cap(ledger, 0.01, spent=0.5)
    before = server.requests
    with (
        vcr.use_cassette(cassette, record_mode="new_episodes", match_on=["uri", "body"]),
        pytest.raises(TokenBudgetExceeded),
    ):
        _chat(server, max_tokens=7)  # a different body: not in the cassette, would go to the server
    assert server.requests == before


def test_request_a_write_protected_cassette_cannot_serve_is_left_to_vcrpy(
    server: CountingServer, ledger: Ledger, tmp_path: Path
) -> None:
    cassette = str(tmp_path / "chat.yaml")
    with vcr.use_cassette(cassette, record_mode="once"):
        _chat(server, max_tokens=100)
    cap = _cap(ledger, 0.01, spent=0.5)
    with (
        vcr.use_cassette(cassette, record_mode="none", match_on=["uri", "body"]),
        pytest.raises(vcr.errors.CannotOverwriteExistingCassetteException),  # vcrpy's own error
    ):
        _chat(server, max_tokens=7)
    assert cap.verdicts == []


def test_mocked_transport_never_trips_the_cap(ledger: Ledger) -> None:
    httpx2 = pytest.importorskip("httpx2")
    cap = _cap(ledger, 0.01, spent=0.5)
    body = {"model": "gpt-4o-mini", "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
    transport = httpx2.MockTransport(lambda request: httpx2.Response(200, json=body))
    with httpx2.Client(transport=transport) as client:
        client.post(
            "https://api.openai.com/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": []}
        )
    assert cap.verdicts == []
    assert [c.source for c in ledger.calls] == ["live", "mocked"]


def test_requests_library_is_capped_too(server: CountingServer, ledger: Ledger) -> None:
    requests = pytest.importorskip("requests")
    _cap(ledger, 0.01, spent=0.0099)
    before = server.requests
    with requests.Session() as session, pytest.raises(TokenBudgetExceeded):
        session.post(
            server.url + "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": MESSAGES, "max_completion_tokens": 50},
        )
    assert server.requests == before


@pytest.mark.parametrize(
    ("body", "ceiling"),
    [
        ({"max_tokens": 100}, 100),
        ({"max_completion_tokens": 30, "max_tokens": 20}, 30),
        ({"max_output_tokens": 64}, 64),
        ({"generationConfig": {"maxOutputTokens": 256}}, 256),
        ({"inferenceConfig": {"maxTokens": 512}}, 512),
        ({"options": {"num_predict": 40}}, 40),
        ({"max_tokens": True}, 0),
        ({}, 0),
    ],
)
def test_output_ceiling_from_the_request(body: dict[str, Any], ceiling: int) -> None:
    assert output_ceiling(body) == ceiling


HARD_CAP_SESSION = """
import os

import openai
import pytest

def chat():
    url = os.environ["HARD_CAP_URL"] + "/v1"
    with openai.OpenAI(base_url=url, api_key="sk-test", max_retries=2) as client:
        return client.chat.completions.create(model="gpt-4o-mini", messages={messages!r}, max_tokens=100)

def test_first():
    assert chat().usage.total_tokens == 16

def test_second():
    chat()

@pytest.mark.vcr
def test_replayed():
    assert chat().usage.total_tokens == 16
"""


def test_session_refuses_live_requests_over_the_cap_and_replays_pass(
    pytester: pytest.Pytester, server: CountingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARD_CAP_URL", server.url)
    monkeypatch.setenv("COLUMNS", "300")
    cassettes = pytester.path / "cassettes" / "test_hc"
    cassettes.mkdir(parents=True)
    with vcr.use_cassette(str(cassettes / "test_replayed.yaml"), record_mode="once"):
        _chat(server)
    pytester.makepyprojecttoml(
        """
        [tool.tokenbudget]
        hard-max-cost = 0.0012
        [tool.tokenbudget.prices]
        "gpt-4o-mini" = { input = 10, output = 10 }
        """
    )
    pytester.makepyfile(test_hc=HARD_CAP_SESSION.format(messages=MESSAGES))
    before = server.requests
    result = pytester.runpytest(
        "--token-budget",
        "--record-mode=none",
        "--token-budget-json=run.json",
        "-p",
        "no:cacheprovider",
        "-rf",
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=2, failed=1)
    assert server.requests == before + 1  # test_first only: test_second was stopped, test_replayed replayed
    message = (
        "hard cost cap: refused a live openai.chat request to gpt-4o-mini "
        "from test_hc.py::test_second (call): "
        "spent $0.00016 + estimated $0.00113 (input 13, output ≤100) > $0.0012"
    )
    result.stdout.fnmatch_lines([f"FAILED test_hc.py::test_second - *TokenBudgetExceeded: {message}"])
    verdicts = json.loads((pytester.path / "run.json").read_text())["verdicts"]
    assert [(v["kind"], v["status"], v["nodeid"], v["message"]) for v in verdicts] == [
        ("hard-cap", "exceeded", "test_hc.py::test_second", message)
    ]
