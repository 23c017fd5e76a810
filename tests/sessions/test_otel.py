"""OpenTelemetry export (``--token-budget-otel``): real sessions send their run to a loopback OTLP/HTTP
receiver that decodes it with opentelemetry-proto; the spans and metrics carry the artifact's numbers.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from llm_server import CHAT_MODEL, CHAT_USAGE, STREAM_USAGE, LLMServer

pytest.importorskip("opentelemetry.sdk")
pytest.importorskip("opentelemetry.proto")

from otlp_receiver import OTLPReceiver  # needs opentelemetry-proto

SUITE = """
import os

import httpx2
import pytest

URL = os.environ["LLM_URL"]
ASK = [{"role": "user", "content": "Where is my order #4417?"}]


def post(path, stream=False, **body):
    headers = {"authorization": "Bearer sk-do-not-leak"}
    with httpx2.Client(base_url=URL, timeout=30, headers=headers) as client:
        if stream:
            body = {**body, "stream": True, "stream_options": {"include_usage": True}}
            with client.stream("POST", path, json=body) as response:
                for _ in response.iter_bytes():
                    pass
        else:
            client.post(path, json=body).raise_for_status()


def chat():
    post("/v1/chat/completions", model="gpt-4o-mini", messages=ASK)


def test_chat():
    chat()


def test_chat_and_stream():
    chat()
    post("/v1/chat/completions", stream=True, model="gpt-4o-mini", messages=ASK)


def test_no_calls():
    assert True


@pytest.mark.token_budget(max_tokens=2000)
def test_over_budget():
    chat()
    chat()  # 2 x 1,346 tokens > 2,000
"""


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    running = OTLPReceiver().start()
    yield running
    running.stop()


@pytest.fixture
def otel_env(monkeypatch: pytest.MonkeyPatch, llm_server: LLMServer, receiver: OTLPReceiver) -> OTLPReceiver:
    monkeypatch.setenv("LLM_URL", llm_server.url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "checkout-tests")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=ci")
    monkeypatch.setenv("GITHUB_RUN_ID", "8812")
    return receiver


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_app=SUITE)
    return pytester.runpytest(
        "--token-budget", "--token-budget-json=run.json", "-p", "no:cacheprovider", *args
    )


def _tree(
    receiver: OTLPReceiver,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """(the session span, test spans by name, call spans by their test span's name)."""
    roots = [s for s in receiver.spans if not s["parent"]]
    assert len(roots) == 1, [s["name"] for s in roots]
    session = roots[0]
    tests = {s["name"]: s for s in receiver.spans if s["parent"] == session["span_id"]}
    by_id = {s["span_id"]: name for name, s in tests.items()}
    calls: dict[str, list[dict[str, Any]]] = {name: [] for name in tests}
    for span in receiver.spans:
        if span["parent"] in by_id:
            calls[by_id[span["parent"]]].append(span)
    assert len(receiver.spans) == 1 + len(tests) + sum(map(len, calls.values()))
    assert {s["trace_id"] for s in receiver.spans} == {session["trace_id"]}
    return session, tests, calls


def _check_against_artifact(receiver: OTLPReceiver, run: dict[str, Any]) -> None:
    session, tests, calls = _tree(receiver)
    assert set(tests) == set(run["tests"])
    for nodeid, entry in run["tests"].items():
        attributes = tests[nodeid]["attributes"]
        assert attributes["gen_ai.usage.input_tokens"] == entry.get("input_tokens", 0), nodeid
        assert attributes["gen_ai.usage.output_tokens"] == entry.get("output_tokens", 0)
        assert attributes["gen_ai.usage.cache_read.input_tokens"] == entry.get("cached_input_tokens", 0)
        assert attributes["gen_ai.usage.cache_creation.input_tokens"] == entry.get("cache_write_tokens", 0)
        assert attributes["gen_ai.usage.reasoning.output_tokens"] == entry.get("reasoning_tokens", 0)
        assert attributes["tokenbudget.calls"] == entry.get("calls", 0) == len(calls[nodeid])
        assert attributes["tokenbudget.cost_usd"] == pytest.approx(entry.get("cost_usd", 0))
        assert (
            sum(c["attributes"]["gen_ai.usage.input_tokens"] for c in calls[nodeid])
            == attributes["gen_ai.usage.input_tokens"]
        )
        for call in calls[nodeid]:  # timed as the call was: inside its test's span
            assert tests[nodeid]["start"] <= call["start"] <= call["end"] <= tests[nodeid]["end"]
    totals = session["attributes"]
    assert totals["gen_ai.usage.input_tokens"] == run["totals"]["input_tokens"]
    assert totals["tokenbudget.calls"] == run["totals"]["calls"]
    assert totals.get("vcs.ref.head.revision") == run["meta"].get("commit")
    assert totals["cicd.pipeline.run.id"] == "8812"


def test_export_sends_a_session_span_a_span_per_test_and_a_child_per_call(
    pytester: pytest.Pytester, otel_env: OTLPReceiver
) -> None:
    pytester.run("git", "init", "-q")
    pytester.run(
        "git", "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "--allow-empty", "-m", "x"
    )
    result = _run(pytester, "--token-budget-otel")
    result.assert_outcomes(passed=3, failed=1)
    run = json.loads((pytester.path / "run.json").read_text())
    receiver = otel_env
    _check_against_artifact(receiver, run)
    session, tests, calls = _tree(receiver)
    assert session["name"] == "pytest session"
    assert session["status"] == 2  # ERROR: the run failed
    assert receiver.resources[0]["service.name"] == "checkout-tests"
    assert receiver.resources[0]["deployment.environment.name"] == "ci"

    chat, stream = sorted(calls["test_app.py::test_chat_and_stream"], key=lambda s: s["start"])
    assert chat["name"] == f"chat {CHAT_MODEL}"
    assert chat["kind"] == 3  # CLIENT
    assert chat["attributes"] | {"tokenbudget.cost_usd": 0} == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai-compatible",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": CHAT_MODEL,
        "gen_ai.usage.input_tokens": CHAT_USAGE["prompt_tokens"],
        "gen_ai.usage.output_tokens": CHAT_USAGE["completion_tokens"],
        "gen_ai.usage.cache_read.input_tokens": 1024,
        "gen_ai.usage.cache_creation.input_tokens": 0,
        "gen_ai.usage.reasoning.output_tokens": 0,
        "server.address": "127.0.0.1",
        "http.response.status_code": 200,
        "tokenbudget.test": "test_app.py::test_chat_and_stream",
        "tokenbudget.phase": "call",
        "tokenbudget.api": "openai.chat",
        "tokenbudget.streamed": False,
        "tokenbudget.source": "live",
        "tokenbudget.state": "complete",
        "tokenbudget.estimated": False,
        "tokenbudget.cost_usd": 0,
    }
    assert stream["attributes"]["tokenbudget.streamed"] is True
    assert stream["attributes"]["gen_ai.usage.input_tokens"] == STREAM_USAGE["prompt_tokens"]
    assert calls["test_app.py::test_no_calls"] == []
    assert tests["test_app.py::test_no_calls"]["attributes"]["test.case.result.status"] == "pass"

    over = tests["test_app.py::test_over_budget"]
    assert over["status"] == 2
    assert over["attributes"]["test.case.result.status"] == "fail"
    assert over["attributes"]["tokenbudget.budget.status"] == "exceeded"
    assert any("exceeded" in v for v in over["attributes"]["tokenbudget.budget.verdicts"])

    usage = {m["name"]: m for m in receiver.metrics}
    histogram = usage["gen_ai.client.token.usage"]
    assert histogram["unit"] == "{token}"
    by_type: dict[str, float] = {}
    for point in histogram["points"]:
        by_type[point["attributes"]["gen_ai.token.type"]] = (
            by_type.get(point["attributes"]["gen_ai.token.type"], 0) + point["value"]
        )
        assert point["attributes"]["tokenbudget.test"] in run["tests"]
        assert point["attributes"]["gen_ai.response.model"] == CHAT_MODEL
    assert by_type == {"input": run["totals"]["input_tokens"], "output": run["totals"]["output_tokens"]}
    cost = sum(p["value"] for p in usage["tokenbudget.cost"]["points"])
    assert cost == pytest.approx(run["totals"]["cost_usd"])

    sent = b"".join(receiver.raw) + json.dumps(receiver.headers).encode()
    assert b"Where is my order" not in sent  # never the prompt
    assert b"sk-do-not-leak" not in sent  # never a credential
    result.stdout.fnmatch_lines(
        [f"OpenTelemetry: 10 spans and the token/cost metrics sent to {receiver.url}"]
    )


@pytest.mark.slow
def test_export_under_xdist_gives_one_session_span_with_every_workers_tests(
    pytester: pytest.Pytester, otel_env: OTLPReceiver
) -> None:
    pytest.importorskip("xdist")
    result = _run(pytester, "--token-budget-otel", "-n", "2")
    result.assert_outcomes(passed=3, failed=1)
    run = json.loads((pytester.path / "run.json").read_text())
    _check_against_artifact(otel_env, run)
    _, _, calls = _tree(otel_env)
    assert sum(map(len, calls.values())) == run["totals"]["calls"] == 5


def test_export_is_off_without_the_flag(pytester: pytest.Pytester, otel_env: OTLPReceiver) -> None:
    _run(pytester).assert_outcomes(passed=3, failed=1)
    assert otel_env.spans == []
    assert otel_env.metrics == []


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_receiver_that_is_down_costs_one_warning_line_and_nothing_else(
    pytester: pytest.Pytester, otel_env: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    result = _run(pytester, "--token-budget-otel")  # its time: benchmarks/bench_otel_export.py
    result.assert_outcomes(passed=3, failed=1)
    assert result.ret == 1  # the budget overrun, as without the export
    lines = [line for line in result.outlines if "OpenTelemetry" in line or "opentelemetry" in line]
    assert len(lines) == 1, lines
    assert "OpenTelemetry export to http://127.0.0.1:" in lines[0]
    assert "failed: cannot reach the receiver (ConnectionRefusedError)" in lines[0]
    run = json.loads((pytester.path / "run.json").read_text())
    assert run["totals"]["calls"] == 5


def test_a_receiver_that_answers_an_error_is_reported_once(
    pytester: pytest.Pytester, otel_env: OTLPReceiver
) -> None:
    otel_env.status = 503  # "try later": the exporter would back off, the run does not wait
    result = _run(pytester, "--token-budget-otel")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(
        ["OpenTelemetry export to * failed: the receiver answered HTTP 503; nothing more*"]
    )
    assert len(otel_env.raw) == 1  # the first request failed: nothing more was sent


@pytest.mark.parametrize(
    ("protocol", "problem"),
    [
        ("grpc", "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs opentelemetry-exporter-otlp-proto-grpc installed"),
        ("http/json", "OTEL_EXPORTER_OTLP_PROTOCOL='http/json' is not supported (http/protobuf or grpc)"),
    ],
)
def test_a_protocol_that_cannot_be_used_is_one_line(
    pytester: pytest.Pytester,
    otel_env: OTLPReceiver,
    monkeypatch: pytest.MonkeyPatch,
    protocol: str,
    problem: str,
) -> None:
    if protocol == "grpc" and importlib.util.find_spec("opentelemetry.exporter.otlp.proto.grpc") is not None:
        pytest.skip("the grpc exporter is installed")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    result = _run(pytester, "--token-budget-otel")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines([f"OpenTelemetry export to * failed: {problem} (the run is not affected)"])
    assert otel_env.raw == []


def test_export_over_grpc_when_its_exporter_is_installed(
    pytester: pytest.Pytester, otel_env: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.grpc")
    from otlp_receiver import GrpcOTLPReceiver

    grpc_receiver = GrpcOTLPReceiver().start()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", grpc_receiver.url)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
        result = _run(pytester, "--token-budget-otel")
        result.assert_outcomes(passed=3, failed=1)
        run = json.loads((pytester.path / "run.json").read_text())
        _check_against_artifact(grpc_receiver, run)
        assert {m["name"] for m in grpc_receiver.metrics} >= {"gen_ai.client.token.usage", "tokenbudget.cost"}
        result.stdout.fnmatch_lines(
            ["OpenTelemetry: 10 spans and the token/cost metrics sent to http://127.0.0.1:*"]
        )
    finally:
        grpc_receiver.stop()
    assert otel_env.raw == []  # nothing went to the HTTP receiver


@pytest.mark.slow
def test_export_otel_command_sends_a_saved_run_once(
    pytester: pytest.Pytester, otel_env: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    _run(pytester).assert_outcomes(passed=3, failed=1)
    assert otel_env.spans == []
    artifact = pytester.path / "run.json"
    run = json.loads(artifact.read_text())
    command = [sys.executable, "-m", "pytest_tokenbudget.cli", "export-otel", str(artifact)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "OpenTelemetry: 5 spans and the token/cost metrics sent to" in done.stdout
    session, tests, calls = _tree(otel_env)
    assert set(tests) == set(run["tests"])
    assert all(c == [] for c in calls.values())  # a saved run has no per-call times
    assert tests["test_app.py::test_chat"]["attributes"]["gen_ai.usage.input_tokens"] == 1250
    assert session["attributes"]["gen_ai.usage.output_tokens"] == run["totals"]["output_tokens"]
    histogram = next(m for m in otel_env.metrics if m["name"] == "gen_ai.client.token.usage")
    assert sum(p["value"] for p in histogram["points"]) == run["totals"]["total_tokens"]

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert "cannot reach the receiver" in done.stderr


@pytest.mark.slow
def test_export_needs_the_sdk_and_says_so(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makepyfile(test_a="def test_a():\n    pass\n")
    blocker = pytester.path / "sitecustomize_dir"
    blocker.mkdir()
    (blocker / "opentelemetry").mkdir()  # a package without ``sdk``: as if the extra is not installed
    (blocker / "opentelemetry" / "__init__.py").write_text("")
    monkeypatch.setenv("PYTHONPATH", str(blocker))
    result = pytester.runpytest_subprocess("--token-budget", "--token-budget-otel", "-p", "no:cacheprovider")
    assert result.ret == 4
    result.stderr.fnmatch_lines(
        [
            "*pytest-tokenbudget: --token-budget-otel needs the OpenTelemetry SDK: "
            "pip install 'pytest-tokenbudget[[]otel[]]'"
        ]
    )


def test_the_pyproject_key_turns_the_export_on_and_a_wrong_value_is_a_usage_error(
    pytester: pytest.Pytester, otel_env: OTLPReceiver
) -> None:
    pytester.makepyprojecttoml("[tool.tokenbudget]\nenabled = true\notel = true\n")
    pytester.makepyfile(test_app=SUITE)
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=3, failed=1)
    assert len([s for s in otel_env.spans if not s["parent"]]) == 1
    pytester.makepyprojecttoml('[tool.tokenbudget]\nenabled = true\notel = "yes"\n')
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*[[]tool.tokenbudget[]] otel: expected true or false, got 'yes'"])
