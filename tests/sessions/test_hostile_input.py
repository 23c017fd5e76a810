"""Hostile input (issue 26): streamed uploads, hijacked usage in big bodies, wrapped objects that
show through, huge limits and bad artifacts. Each never crashes a run and is counted or refused
the way the rule says; nothing but ``TokenBudgetExceeded`` leaves the plugin.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import httpx2
import pytest
from llm_server import LLMServer
from provider_server import ProviderServer

from pytest_tokenbudget.judge.hardcap import HardCap
from pytest_tokenbudget.ledger import Owner
from pytest_tokenbudget.model import Call, Status, Usage
from pytest_tokenbudget.providers.base import parse_large_object
from pytest_tokenbudget.providers.openai import ChatCompletions
from pytest_tokenbudget.request_body import request_json as request_body

CHAT = Usage(input_tokens=11, output_tokens=7)


@pytest.fixture(scope="module")
def server() -> Iterator[ProviderServer]:
    running = ProviderServer().start()
    yield running
    running.stop()


def only(calls: list[Call]) -> Call:
    assert len(calls) == 1, [(c.api, c.state) for c in calls]
    return calls[0]


# -- 1. a streamed upload ------------------------------------------------------------------------

UPLOAD_SESSION = """
import os

import httpx2

URL = os.environ["UPLOAD_URL"] + "/v1/chat/completions"


def body():
    yield b'{"model": "gpt-4o-mini", '
    yield b'"messages": [{"role": "user", "content": "hi"}]}'


def test_streamed_upload():
    assert httpx2.post(URL, content=body()).status_code == 200


def test_after_it():
    assert httpx2.post(URL, json={"model": "gpt-4o-mini", "messages": []}).status_code == 200
"""


@pytest.mark.parametrize("hard_cap", [False, True], ids=["plugin-on", "hard-cap"])
def test_a_streamed_upload_never_crashes_the_session(
    pytester: pytest.Pytester, llm_server: LLMServer, monkeypatch: pytest.MonkeyPatch, hard_cap: bool
) -> None:
    """The test passes, the next one runs, exit 0: no INTERNALERROR, no RequestNotRead in the test."""
    monkeypatch.setenv("UPLOAD_URL", llm_server.url)
    table = 'hard-max-cost = 5\n[tool.tokenbudget.prices]\n"gpt-4o-mini" = { input = 1, output = 1 }'
    pytester.makepyprojecttoml(f"[tool.tokenbudget]\n{table if hard_cap else ''}\n")
    pytester.makepyfile(test_upload=UPLOAD_SESSION)
    args = ["-p", "no:cacheprovider", "--token-budget-json=run.json"]
    result = pytester.runpytest(*args, *([] if hard_cap else ["--token-budget"]))
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=2)
    if not hard_cap:
        tests = json.loads((pytester.path / "run.json").read_text())["tests"]
        assert set(tests) == {"test_upload.py::test_streamed_upload", "test_upload.py::test_after_it"}


def _upload() -> Iterator[bytes]:
    yield b'{"model": "m"}'


class _Raises:
    """An object whose every attribute raises (a hostile request shape)."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(name)


@pytest.mark.parametrize("library", [httpx, httpx2])
def test_reading_a_request_never_raises(library: Any) -> None:
    from pytest_tokenbudget.request_body import request_bytes, request_json

    streamed = library.Request("POST", "http://x/v1/chat/completions", content=_upload())
    assert request_bytes(streamed) is None
    assert request_json(streamed) is None
    sent = library.Request("POST", "http://x/v1/chat/completions", json={"model": "m"})
    assert request_json(sent) == {"model": "m"}
    for hostile in (_Raises(), object(), "\ud800", b"\xff{", b"[1]", "[" * 100_000, None):
        assert request_json(hostile) is None


def test_the_hard_cap_reads_a_bytes_body_and_any_shape_of_request() -> None:
    """urllib hands over bytes; requests a PreparedRequest whose body may be a generator."""
    import requests

    assert request_body(b'{"model": "gpt-4o", "max_tokens": 9}') == {"model": "gpt-4o", "max_tokens": 9}
    prepared = requests.Request("POST", "http://x/v1/chat/completions", data=_upload()).prepare()
    assert request_body(prepared) is None
    prepared = requests.Request("POST", "http://x/v1/chat/completions", json={"model": "m"}).prepare()
    assert request_body(prepared) == {"model": "m"}


class _Exchange:
    source = "live"
    owner = Owner("t.py::test_x", "call")

    class route:
        api, provider, host, model_hint = "openai.chat", "openai", "api.openai.com", None


def test_the_hard_cap_lets_only_its_refusal_escape() -> None:
    """A failure inside the cap (here its pricer) is a verdict, once, and the request goes ahead."""

    def broken_price(*args: Any) -> float:
        raise ZeroDivisionError("pricing bug")

    cap = HardCap(1.0, broken_price)
    for _ in range(2):
        cap(_Exchange(), {"model": "gpt-4o", "messages": []})  # type: ignore[arg-type]
    assert [(v.status, v.kind) for v in cap.verdicts] == [(Status.UNKNOWN, "hard-cap")]
    assert "ZeroDivisionError" in cap.verdicts[0].message


# -- 6. usage hijacked in bodies over 64 KiB -----------------------------------------------------

REAL = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
FORGED = {"prompt_tokens": 900_000, "completion_tokens": 900_000, "total_tokens": 1_800_000}


def _big(**tail: Any) -> bytes:
    head = {"id": "x", "object": "chat.completion", "model": "gpt-4o", "choices": [{"index": 0}]}
    return json.dumps({**head, "usage": REAL, "pad": "p" * 70_000, **tail}).encode()


@pytest.mark.parametrize(
    "body",
    [
        _big(prompt_logprobs=[None, {"1": {"logprob": -1.0, "usage": FORGED}}]),  # vLLM-style
        _big(prompt_logprobs=[{"usage": FORGED, "pad": "q" * 70_000}]),
        _big(extra={"usage": FORGED}),
        _big(note="usage", after={"a": {"b": [{"usage": FORGED}]}}),
        _big(**{'k\\"usage': FORGED}),
    ],
    ids=["vllm-prompt-logprobs", "nested-beyond-the-tail", "nested-object", "deep-list", "escaped-quote"],
)
def test_only_the_top_level_usage_of_a_big_body_counts(body: bytes) -> None:
    assert len(body) > 64 * 1024
    extracted = ChatCompletions("openai.chat").parse(body)
    assert (extracted.model, extracted.usage) == ("gpt-4o", Usage(input_tokens=10, output_tokens=5))


def test_the_tail_shortcut_still_serves_an_embeddings_body() -> None:
    data = [{"object": "embedding", "index": i, "embedding": [0.123456789] * 1536} for i in range(20)]
    usage = {"prompt_tokens": 8, "total_tokens": 8}
    body = json.dumps({"object": "list", "data": data, "model": "text-embedding-3-small", "usage": usage})
    assert parse_large_object(body.encode(), (b"usage", b"model")) == {
        "usage": usage,
        "model": "text-embedding-3-small",
    }


# -- 7. the wrapper is transparent to attributes and types --------------------------------------


def test_requests_raw_keeps_its_type_and_decode_content(server: ProviderServer, calls: list[Call]) -> None:
    """``r.raw.decode_content = True`` reaches urllib3: ``r.raw.read()`` returns decoded bytes."""
    import requests
    import urllib3

    body = {"model": "gpt-4o-mini", "stream": True, "gzip": True}
    with requests.post(f"{server.url}/v1/chat/completions", json=body, stream=True) as response:
        assert type(response.raw) is urllib3.HTTPResponse
        response.raw.decode_content = True
        data = response.raw.read()
    assert data.endswith(b"data: [DONE]\n\n")
    assert "read" not in vars(response.raw)  # the instance's own methods are gone once settled
    call = only(calls)
    assert (call.usage, call.state) == (CHAT, "complete")


def test_requests_raw_read_still_encoded_is_counted(server: ProviderServer, calls: list[Call]) -> None:
    body = {"model": "gpt-4o-mini", "stream": True, "gzip": True}
    with requests_post(f"{server.url}/v1/chat/completions", body) as response:
        data = response.raw.read()
    assert data[:2] == b"\x1f\x8b"  # requests leaves decode_content off: the caller asked for raw bytes
    assert only(calls).usage == CHAT


def requests_post(url: str, body: dict[str, Any]) -> Any:
    import requests

    return requests.post(url, json=body, stream=True)


def test_aiohttp_content_stays_a_stream_reader(server: ProviderServer, calls: list[Call]) -> None:
    import aiohttp

    async def run() -> tuple[bool, bool, bytes]:
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{server.url}/v1/chat/completions", json={"stream": True}) as response,
        ):
            during = isinstance(response.content, aiohttp.StreamReader)
            data = b"".join([line async for line in response.content])
            return during, type(response.content) is aiohttp.StreamReader, data

    during, after, data = asyncio.run(run())
    assert during
    assert after
    assert data.endswith(b"data: [DONE]\n\n")
    assert only(calls).usage == CHAT


# -- 9. huge limits --------------------------------------------------------------------------------

HUGE = "9" * 400


@pytest.mark.parametrize(
    ("table", "args", "message"),
    [
        (f"max-tokens = {HUGE}", [], "*.toml: [[]tool.tokenbudget[]] max-tokens: expected a whole *"),
        (f"hard-max-cost = {HUGE}", [], "*hard-max-cost: expected an amount in USD from 0 to 1,000,000,000*"),
        (f"[tool.tokenbudget.per-test]\nmax-calls = {HUGE}", [], "*per-test.max-calls: expected a whole*"),
        (f"[[tool.tokenbudget.budgets]]\nname = 'b'\nmax-cost = {HUGE}", [], "*max-cost: expected an*"),
        ("", [f"--token-budget-max-tokens={HUGE}"], "command line --token-budget-max-tokens: expected *"),
        ("", ["--token-budget-max-cost=1e400"], "command line --token-budget-max-cost: expected an *"),
    ],
    ids=["max-tokens", "hard-max-cost", "per-test", "budgets", "cli-tokens", "cli-cost"],
)
def test_a_huge_limit_is_a_usage_error(
    pytester: pytest.Pytester, table: str, args: list[str], message: str
) -> None:
    pytester.makepyprojecttoml(f"[tool.tokenbudget]\n{table}\n")
    pytester.makepyfile(test_a="def test_a():\n    pass\n")
    result = pytester.runpytest("--token-budget", "-p", "no:cacheprovider", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: pytest-tokenbudget: {message}"])
    assert "OverflowError" not in result.stdout.str() + result.stderr.str()
    assert HUGE not in result.stderr.str()  # the number is named by its size, not printed whole


@pytest.mark.parametrize(
    "marker", ["10**400", "max_cost=10**400", "max_cost='1e400'", "max_calls=10**16", "max_cost=float('inf')"]
)
def test_a_huge_marker_limit_names_the_test(pytester: pytest.Pytester, marker: str) -> None:
    source = f"import pytest\n@pytest.mark.token_budget({marker})\ndef test_m():\n    pass\n"
    pytester.makepyfile(test_m=source)
    result = pytester.runpytest("--token-budget", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    line = "ERROR: pytest-tokenbudget: test_m.py::test_m: token_budget(max_*=…) expects * from 0 to *"
    result.stderr.fnmatch_lines([line])


# -- 10. the CLI on semantically bad artifacts, unwritable outputs, JSON bombs --------------------


def _artifact(tmp_path: Any, name: str, change: Any) -> str:
    from pytest_tokenbudget.model import Run, TestUsage
    from pytest_tokenbudget.runs.artifact import dump_run

    run = Run(meta={"started": "2026-12-01T00:00:00Z"})
    entry = TestUsage(nodeid="t.py::test_a")
    entry.add_call(
        Call(
            owner="t.py::test_a",
            phase="call",
            provider="openai",
            api="openai.chat",
            host="api.openai.com",
            model="gpt-4o",
            usage=Usage(input_tokens=5, output_tokens=2),
        )
    )
    run.tests[entry.nodeid] = entry
    data = json.loads(dump_run(run))
    change(data, data["tests"]["t.py::test_a"])
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    return str(path)


BAD_ARTIFACTS = {
    "issue-not-an-object": (lambda d, t: d.update(issues=[1]), "issues[0] must be an object, got 1"),
    "issue-field-not-text": (lambda d, t: d.update(issues=[{"test": 5}]), "issues[0].test must be a string"),
    "count-a-string": (lambda d, t: t.update(input_tokens="5"), "'input_tokens' must be a whole number"),
    "count-negative": (lambda d, t: t.update(output_tokens=-2), "'output_tokens' must be a whole number"),
    "count-absurd": (lambda d, t: t.update(calls=10**30), "'calls' must be a whole number from 0 to 10^15"),
    "cost-nan": (lambda d, t: t.update(cost_usd=float("nan")), "'cost_usd' must be an amount"),
    "comparison-without-totals": (lambda d, t: d.update(comparison={"tests": 1}), "comparison.totals"),
    "comparison-a-list": (lambda d, t: d.update(comparison=[1]), "'comparison' must be an object"),
    "verdict-incomplete": (lambda d, t: d.update(verdicts=[{"name": "x"}]), "verdicts[0]: missing"),
    "test-entry-null": (lambda d, t: d["tests"].update({"t.py::test_a": None}), "tests['t.py::test_a']"),
}


@pytest.mark.parametrize("name", sorted(BAD_ARTIFACTS))
@pytest.mark.parametrize("command", [["show"], ["report", "--format", "markdown"], ["check"]])
def test_the_cli_rejects_a_bad_artifact_in_one_line(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], name: str, command: list[str]
) -> None:
    from pytest_tokenbudget.cli import main

    change, problem = BAD_ARTIFACTS[name]
    path = _artifact(tmp_path, name, change)
    assert main([command[0], path, *command[1:]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"tokenbudget: {path}: malformed run artifact: ")
    assert problem in err


def test_an_empty_comparison_is_none(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_tokenbudget.cli import main

    path = _artifact(tmp_path, "empty-comparison", lambda d, t: d.update(comparison={}))
    assert main(["report", path, "--format", "markdown"]) == 0


@pytest.mark.parametrize("target", ["a-directory", "under-a-file", "nul"])
def test_an_unwritable_output_is_one_line(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], target: str
) -> None:
    from pytest_tokenbudget.cli import main

    path = _artifact(tmp_path, "good", lambda d, t: None)
    (tmp_path / "file").write_text("")
    output = {"a-directory": tmp_path, "under-a-file": tmp_path / "file" / "x.md", "nul": "x\0.md"}[target]
    assert main(["report", path, "--format", "markdown", "-o", str(output)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "cannot be written" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("depth", [950, 100_000])
def test_estimate_on_deeply_nested_json_never_tracebacks(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], depth: int
) -> None:
    from pytest_tokenbudget.cli import main

    content = "[" * depth + "]" * depth
    source = tmp_path / "deep.json"
    source.write_text('{"model": "gpt-4o", "messages": [{"role": "user", "content": ' + content + "}]}")
    assert main(["estimate", str(source)]) in (0, 2)
    assert "Traceback" not in capsys.readouterr().err


# -- a crashed xdist worker ------------------------------------------------------------------------


@pytest.mark.slow
def test_a_crashed_worker_is_listed_once(pytester: pytest.Pytester) -> None:
    """xdist calls pytest_testnodedown before it reports the crash: one entry, naming the test."""
    pytest.importorskip("xdist")
    pytester.makepyfile(test_c="import os\n\ndef test_crash():\n    os._exit(3)\n\ndef test_ok():\n    pass")
    args = ("--token-budget", "--token-budget-json=run.json", "-n", "2", "-p", "no:cacheprovider")
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    lost = json.loads((pytester.path / "run.json").read_text())["meta"]["lost_workers"]
    assert len(lost) == 1
    assert lost[0].endswith(" while running test_c.py::test_crash")
