"""The plugin next to pytest's own switches and the plugins a real suite loads with it.

``-W error``, ``-p no:cacheprovider``, ``--import-mode=importlib``; pytest-asyncio (strict and
auto), anyio, pytest-recording (record, then replay without reaching the server),
pytest-rerunfailures and pytest-randomly. Every test asserts exact numbers from the artifact.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import vcr  # noqa: F401 - before pytester's in-process runs: a second import of pyyaml's C loader breaks it
import yaml  # noqa: F401
from llm_server import LLMServer
from pytester_session import read_artifact

import pytest_tokenbudget.capture
import pytest_tokenbudget.ledger
import pytest_tokenbudget.model  # noqa: F401 - imported before pytester's in-process sessions snapshot sys.modules

ALL_OFF = "-p no:randomly -p no:asyncio -p no:rerunfailures"

CONFTEST = """
import os

import openai
import pytest


@pytest.fixture
def oai():
    with openai.OpenAI(base_url=os.environ["LLM_URL"] + "/v1", api_key="sk-test", max_retries=0) as client:
        yield client
"""

ASK = 'ASK = [{"role": "user", "content": "Where is my order #4417?"}]\n'

SYNC = (
    ASK
    + """

def test_chat(oai):
    oai.chat.completions.create(model="gpt-4o-mini", messages=ASK)


def test_responses(oai):
    oai.responses.create(model="o4-mini", input="plan the refund")


def test_none():
    pass
"""
)


@pytest.fixture
def env(pytester: pytest.Pytester, llm_server: LLMServer, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("LLM_URL", llm_server.url)
    monkeypatch.setenv("COLUMNS", "200")
    pytester.makeconftest(CONFTEST)
    return pytester


def numbers(run: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """(calls, total_tokens) of every test and fixture entry."""
    return {key: (t["calls"], t.get("total_tokens", 0)) for key, t in run["tests"].items()}


def without_times(run: dict[str, Any]) -> dict[str, Any]:
    """Only ``meta.started`` / ``meta.finished`` change between two runs of the same suite."""
    return {**run, "meta": {k: v for k, v in run["meta"].items() if k not in ("started", "finished")}}


# -- pytest's own switches -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("-W", "error"), id="W-error"),
        pytest.param(("-W", "error", "-p", "no:cacheprovider"), id="no-cacheprovider"),
        pytest.param(("-W", "error", "--import-mode=importlib"), id="importlib"),
    ],
)
def test_runs_clean_under_pytest_switches(env: pytest.Pytester, args: tuple[str, ...]) -> None:
    env.makepyfile(test_sync=SYNC)
    result = env.runpytest_subprocess("--token-budget", "--token-budget-json=run.json", *args)
    result.assert_outcomes(passed=3)
    assert result.ret == 0
    out = result.stdout.str()
    assert "warning" not in out.lower().replace("token budget", "")  # not one warning, ours or any
    assert result.stderr.str() == ""
    run = read_artifact(env)
    assert numbers(run) == {
        "test_sync.py::test_chat": (1, 1346),
        "test_sync.py::test_responses": (1, 700),
        "test_sync.py::test_none": (0, 0),
    }
    assert (run["totals"]["calls"], run["totals"]["total_tokens"], run["totals"]["reasoning_tokens"]) == (
        2,
        2046,
        128,
    )
    if "no:cacheprovider" in args:
        assert not (env.path / ".pytest_cache").exists()


# -- async test runners --------------------------------------------------------------------------

ASYNC = (
    ASK
    + """
import asyncio
import os

import openai
import pytest
import pytest_asyncio


def client():
    return openai.AsyncOpenAI(base_url=os.environ["LLM_URL"] + "/v1", api_key="sk-test", max_retries=0)


@pytest_asyncio.fixture
async def indexed():
    async with client() as c:
        await c.embeddings.create(model="text-embedding-3-small", input="setup")
    yield
    async with client() as c:
        await c.responses.create(model="o4-mini", input="teardown")


{mark}
async def test_async_chat(indexed):
    async with client() as c:
        await c.chat.completions.create(model="gpt-4o-mini", messages=ASK)


{mark}
async def test_async_gather():
    async with client() as c:
        await asyncio.gather(*[c.responses.create(model="o4-mini", input="x") for _ in range(3)])


def test_sync_between():
    pass
"""
)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "mark"), [("strict", "@pytest.mark.asyncio"), ("auto", "")], ids=["strict", "auto"]
)
def test_pytest_asyncio_calls_counted_in_their_test(
    env: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, mode: str, mark: str
) -> None:
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:randomly -p no:rerunfailures")  # asyncio on
    env.makeini(f"[pytest]\nasyncio_mode = {mode}\nasyncio_default_fixture_loop_scope = function\n")
    env.makepyfile(test_async=ASYNC.replace("{mark}", mark))
    result = env.runpytest_subprocess("--token-budget", "--token-budget-json=run.json", "-W", "error")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["plugins: *asyncio-*"])  # 3 passed: the coroutines really ran
    run = read_artifact(env)
    assert numbers(run) == {
        "test_async.py::test_async_chat": (3, 8 + 1346 + 700),
        "test_async.py::test_async_gather": (3, 2100),
        "test_async.py::test_sync_between": (0, 0),
    }
    phases = run["tests"]["test_async.py::test_async_chat"]["phases"]
    assert {p: (v["calls"], v["total_tokens"]) for p, v in phases.items()} == {
        "setup": (1, 8),
        "call": (1, 1346),
        "teardown": (1, 700),
    }
    assert run["totals"]["calls"] == 6
    assert run["totals"]["total_tokens"] == 4154


ANYIO = (
    ASK
    + """
import os

import openai
import pytest


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.mark.anyio
async def test_anyio_chat():
    async with openai.AsyncOpenAI(base_url=os.environ["LLM_URL"] + "/v1", api_key="k", max_retries=0) as c:
        await c.chat.completions.create(model="gpt-4o-mini", messages=ASK)
        await c.embeddings.create(model="text-embedding-3-small", input="x")
"""
)


@pytest.mark.slow
def test_anyio_asyncio_backend(env: pytest.Pytester) -> None:
    env.makepyfile(test_anyio=ANYIO)
    result = env.runpytest_subprocess("--token-budget", "--token-budget-json=run.json", "-W", "error")
    result.assert_outcomes(passed=1)
    run = read_artifact(env)
    assert numbers(run) == {"test_anyio.py::test_anyio_chat": (2, 1354)}
    entry = run["tests"]["test_anyio.py::test_anyio_chat"]
    assert (entry["input_tokens"], entry["cached_input_tokens"], entry["output_tokens"]) == (1258, 1024, 96)


# -- pytest-recording ------------------------------------------------------------------------------

VCR = (
    ASK
    + """
import pytest


@pytest.mark.vcr
def test_recorded(oai):
    oai.chat.completions.create(model="gpt-4o-mini", messages=ASK)
    oai.responses.create(model="o4-mini", input="plan the refund")


def test_live(oai):
    oai.embeddings.create(model="text-embedding-3-small", input="not in a cassette")
"""
)


def test_pytest_recording_record_then_replay(env: pytest.Pytester, llm_server: LLMServer) -> None:
    env.makepyfile(test_vcr=VCR)
    before = llm_server.requests
    env.runpytest(
        "--token-budget", "--token-budget-json=once.json", "--record-mode=once", "-W", "error"
    ).assert_outcomes(passed=2)
    assert llm_server.requests - before == 3
    assert (env.path / "cassettes" / "test_vcr" / "test_recorded.yaml").exists()
    once = read_artifact(env, "once.json")["tests"]["test_vcr.py::test_recorded"]
    assert (once["calls"], once["total_tokens"], once["live_calls"], once["replayed_calls"]) == (
        2,
        2046,
        2,
        0,
    )

    before = llm_server.requests
    env.runpytest(
        "--token-budget", "--token-budget-json=none.json", "--record-mode=none", "-W", "error"
    ).assert_outcomes(passed=2)
    assert llm_server.requests - before == 1  # only test_live, which has no cassette
    run = read_artifact(env, "none.json")
    replayed = run["tests"]["test_vcr.py::test_recorded"]
    assert (
        replayed["calls"],
        replayed["total_tokens"],
        replayed["live_calls"],
        replayed["replayed_calls"],
    ) == (
        2,
        2046,
        0,
        2,
    )
    assert {
        k: replayed[k] for k in ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens")
    } == {
        "input_tokens": 1770,
        "cached_input_tokens": 1280,
        "output_tokens": 276,
        "reasoning_tokens": 128,
    }
    assert replayed["live_cost_usd"] == 0
    assert replayed["replayed_cost_usd"] == pytest.approx(once["live_cost_usd"])
    totals = run["totals"]
    assert (totals["calls"], totals["live_calls"], totals["replayed_calls"], totals["total_tokens"]) == (
        3,
        1,
        2,
        2054,
    )


# -- pytest-rerunfailures --------------------------------------------------------------------------

RERUN = (
    ASK
    + """
import pathlib

import pytest


@pytest.fixture
def around(oai):
    oai.embeddings.create(model="text-embedding-3-small", input="setup")
    yield
    oai.responses.create(model="o4-mini", input="teardown")


def attempt(name):
    counter = pathlib.Path(name)
    n = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(n))
    return n


def test_flaky(around, oai):
    n = attempt("flaky.txt")
    oai.chat.completions.create(model="gpt-4o-mini", messages=ASK)
    assert n > 1


@pytest.mark.token_budget(max_tokens=3000)
def test_flaky_marked(oai):
    n = attempt("marked.txt")
    oai.chat.completions.create(model="gpt-4o-mini", messages=ASK)
    assert n > 1


def test_steady(oai):
    oai.chat.completions.create(model="gpt-4o-mini", messages=ASK)
"""
)


@pytest.fixture
def rerun(env: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.RunResult:
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:randomly -p no:asyncio")  # rerunfailures on
    env.makepyfile(test_rerun=RERUN)
    return env.runpytest(
        "--token-budget", "--token-budget-json=run.json", "--token-budget-calls=calls.jsonl", "--reruns", "2"
    )


def test_rerunfailures_counts_every_attempt_on_the_one_test(
    env: pytest.Pytester, rerun: pytest.RunResult
) -> None:
    """The rule: a rerun test keeps ONE entry whose numbers are the sum over ALL its attempts (the
    failed attempt's setup, call and teardown calls included, phase by phase: they were really
    spent), with the outcome of the last attempt. The call log lists every attempt's calls."""
    assert rerun.parseoutcomes() == {"passed": 3, "rerun": 2}
    run = read_artifact(env)
    assert numbers(run) == {
        "test_rerun.py::test_flaky": (6, 2 * (8 + 1346 + 700)),
        "test_rerun.py::test_flaky_marked": (2, 2692),
        "test_rerun.py::test_steady": (1, 1346),
    }
    flaky = run["tests"]["test_rerun.py::test_flaky"]
    assert flaky["outcome"] == "passed"
    assert {p: (v["calls"], v["total_tokens"]) for p, v in flaky["phases"].items()} == {
        "setup": (2, 16),
        "call": (2, 2692),
        "teardown": (2, 1400),
    }
    assert (run["totals"]["calls"], run["totals"]["total_tokens"]) == (9, 8146)
    logged = [json.loads(line) for line in (env.path / "calls.jsonl").read_text().splitlines()]
    assert [line["test"].split("::")[1] for line in logged].count("test_flaky") == 6
    # the marker is judged on the running sum: the second attempt sees both attempts' 2,692 tokens
    marked = [v for v in run["verdicts"] if v["nodeid"] == "test_rerun.py::test_flaky_marked"]
    assert marked[-1]["actual"] == 2692
    assert marked[-1]["status"] == "warn"  # >= 80 % of 3,000


def test_rerunfailures_one_verdict_per_test(env: pytest.Pytester, rerun: pytest.RunResult) -> None:
    assert rerun.parseoutcomes() == {"passed": 3, "rerun": 2}
    names = [v["name"] for v in read_artifact(env)["verdicts"]]
    assert names.count("marker test_rerun.py::test_flaky_marked") == 1


# -- pytest-randomly -------------------------------------------------------------------------------


@pytest.mark.slow
def test_randomly_two_seeds_give_the_same_artifact(
    env: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:asyncio -p no:rerunfailures")
    env.makepyprojecttoml(
        "[tool.tokenbudget]\nenabled = true\n[tool.tokenbudget.per-test]\nmax-tokens = 3000\n"
    )
    body = SYNC + "".join(
        f"\n\ndef test_extra_{n}(oai):\n    for _ in range({n}):\n        oai.chat.completions.create("
        'model="gpt-4o-mini", messages=ASK)\n'
        for n in range(1, 4)
    )
    env.makepyfile(test_a=body, test_b=body)
    orders = []
    for seed in ("1", "2"):
        result = env.runpytest_subprocess(
            "-p", "randomly", f"--randomly-seed={seed}", "-v",
            f"--token-budget-json=seed{seed}.json", f"--token-budget-markdown=seed{seed}.md",
            f"--token-budget-csv=seed{seed}.csv", f"--token-budget-junit=seed{seed}.xml",
        )  # fmt: skip
        assert result.ret == 1  # test_extra_3 (4,038 tokens) exceeds the per-test 3,000 in each module
        result.assert_outcomes(passed=10, failed=2)
        assert f"Using --randomly-seed={seed}" in result.stdout.str()
        orders.append(re.findall(r"^(test_\w\.py::\w+) (?:PASSED|FAILED)", result.stdout.str(), re.MULTILINE))
    assert orders[0] != orders[1]  # really shuffled
    assert sorted(orders[0]) == sorted(orders[1])
    one, two = read_artifact(env, "seed1.json"), read_artifact(env, "seed2.json")
    assert json.dumps(without_times(one)) == json.dumps(without_times(two))
    for suffix in ("md", "csv", "xml"):
        assert (env.path / f"seed1.{suffix}").read_text() == (env.path / f"seed2.{suffix}").read_text()
    assert numbers(one)["test_a.py::test_extra_3"] == (3, 4038)
    assert (one["totals"]["calls"], one["totals"]["total_tokens"]) == (16, 2 * (2046 + 6 * 1346))
