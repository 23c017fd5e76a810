"""pytest-xdist: every distribution mode gives the serial run's numbers, verdicts and reports.

One suite of 16 tests in three modules (a module-scoped fixture that calls an LLM, a class,
parametrized tests, a marker overrun, tests without calls, a threaded test, a call recorded by
hand) runs once serially and once under each xdist mode; every run writes every report. A crashed
worker (``os._exit`` after a call) shows what survives a lost worker.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from llm_server import LLMServer
from pytester_session import OPT_IN_PLUGINS

pytest.importorskip("xdist")
pytestmark = pytest.mark.slow  # every test reads the suite's xdist runs (subprocesses)

CONFTEST = """
import os

import httpx2
import pytest

URL = os.environ["LLM_URL"]
ASK = [{"role": "user", "content": "Where is my order #4417?"}]


def post(path, stream=False, **body):
    with httpx2.Client(base_url=URL, timeout=30) as client:
        if stream:
            with client.stream("POST", path, json={**body, "stream": True}) as response:
                for _ in response.iter_bytes():
                    pass
        else:
            client.post(path, json=body).raise_for_status()


def ask_chat():
    post("/v1/chat/completions", model="gpt-4o-mini", messages=ASK)


def pytest_runtest_logreport(report):
    # SHIPPED_LOG: what the controller received from the workers, by report attribute
    log = os.environ.get("SHIPPED_LOG")
    if log and report.when == "teardown" and not os.environ.get("PYTEST_XDIST_WORKER"):
        with open(log, "a") as out:
            for name in ("tokenbudget", "tokenbudget_verdicts", "tokenbudget_outside"):
                value = getattr(report, name, None)
                if value is not None:
                    text = value if isinstance(value, str) else ""
                    out.write(f"{name}\\t{type(value).__name__}\\t{text}\\n")


@pytest.fixture
def chat():
    return ask_chat
"""

ALPHA = """
import pytest
from conftest import post


@pytest.fixture(scope="module")
def index():
    post("/v1/embeddings", model="text-embedding-3-small", input=["doc one", "doc two"])
    return "index"


def test_search(index, chat):
    chat()


def test_rank(index):
    assert index == "index"


@pytest.mark.parametrize("n", [1, 2, 3])
def test_param(chat, n):
    for _ in range(n):
        chat()


@pytest.mark.token_budget(max_tokens=2000)
def test_over_budget(chat):
    chat()
    chat()  # 2 x 1,346 tokens > 2,000


def test_plain():
    assert 1 + 1 == 2
"""

BETA = """
import threading

from conftest import post


class TestAgent:
    def test_plan(self):
        post("/v1/responses", model="o4-mini", input="plan the refund")

    def test_act(self, chat):
        chat()

    def test_idle(self):
        pass


def test_threads(chat):
    threads = [threading.Thread(target=chat) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
"""

GAMMA = """
import pytest
from conftest import ASK, post


def test_claude():
    post("/v1/messages", model="claude-sonnet-4-6", max_tokens=64, messages=ASK)


def test_claude_stream():
    post("/v1/messages", stream=True, model="claude-sonnet-4-6", max_tokens=64, messages=ASK)


@pytest.mark.parametrize("word", ["left", "right"])
def test_no_call(word):
    assert word


def test_by_hand(token_usage):
    token_usage.record(model="in-house-llm", input_tokens=100, output_tokens=20)
"""

PYPROJECT = """
[tool.tokenbudget]
enabled = true

[tool.tokenbudget.per-test]
max-tokens = 6000
"""

FIXTURE = "<module fixture index>"
EMBEDDING_MODEL = "openai-compatible/text-embedding-3-small"
INT_FIELDS = (
    "calls", "input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens",
    "reasoning_tokens", "total_tokens", "live_calls", "replayed_calls", "manual_calls",
    "estimated_calls", "unparsed_calls", "failed_calls", "unmetered_calls",
)  # fmt: skip
COST_FIELDS = ("cost_usd", "live_cost_usd", "replayed_cost_usd")

# Per test of the suite: (calls, total_tokens) in the serial run.
EXPECTED = {
    "test_alpha.py::test_search": (1, 1346),
    "test_alpha.py::test_rank": (0, 0),
    "test_alpha.py::test_param[1]": (1, 1346),
    "test_alpha.py::test_param[2]": (2, 2692),
    "test_alpha.py::test_param[3]": (3, 4038),
    "test_alpha.py::test_over_budget": (2, 2692),
    "test_alpha.py::test_plain": (0, 0),
    "test_beta.py::TestAgent::test_plan": (1, 700),
    "test_beta.py::TestAgent::test_act": (1, 1346),
    "test_beta.py::TestAgent::test_idle": (0, 0),
    "test_beta.py::test_threads": (3, 4038),
    "test_gamma.py::test_claude": (1, 3068),
    "test_gamma.py::test_claude_stream": (1, 2295),
    "test_gamma.py::test_no_call[left]": (0, 0),
    "test_gamma.py::test_no_call[right]": (0, 0),
    "test_gamma.py::test_by_hand": (1, 120),
    FIXTURE: (1, 8),
}

MODES = {
    "n2": ("-n", "2"),
    "n4": ("-n", "4"),
    "loadfile": ("-n", "2", "--dist", "loadfile"),
    "loadscope": ("-n", "2", "--dist", "loadscope"),
    "worksteal": ("-n", "2", "--dist", "worksteal"),
}


# -- running the suite ----------------------------------------------------------------------------


class Suite:
    """The suite in a folder, run in subprocesses (each run once, its results kept for every test).

    Not pytester_session.run_session: a module-scoped folder shared by every test here, each xdist
    mode run once and kept, with only this plugin and xdist loaded (no pytester per test)."""

    def __init__(self, path: Path, url: str) -> None:
        self.path = path
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "GITHUB_"))}
        # Only the plugins under test: the test extra autoloads hypothesis, langsmith, anyio … whose
        # imports cost each xdist worker a second or more on a 2-CPU runner.
        self.env.update(
            LLM_URL=url, PYTEST_ADDOPTS=OPT_IN_PLUGINS, COLUMNS="200", PYTEST_DISABLE_PLUGIN_AUTOLOAD="1"
        )
        self.env.pop("CI", None)
        self.results: dict[str, subprocess.CompletedProcess[str]] = {}
        self.seconds: dict[str, float] = {}

    def run(self, name: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        if name not in self.results:
            out = f"out/{name}"
            command = [
                sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider",
                "-p", "xdist.plugin", "-p", "pytest_tokenbudget.plugin",
                f"--token-budget-json={out}/run.json", f"--token-budget-junit={out}/junit.xml",
                f"--token-budget-markdown={out}/report.md", f"--token-budget-csv={out}/tests.csv",
                f"--token-budget-calls={out}/calls.jsonl", *args,
            ]  # fmt: skip
            start = time.perf_counter()
            self.results[name] = subprocess.run(
                command,
                cwd=self.path,
                env={**self.env, **env},
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            self.seconds[name] = time.perf_counter() - start
        return self.results[name]

    def artifact(self, name: str) -> dict[str, Any]:
        return json.loads((self.path / "out" / name / "run.json").read_text())

    def text(self, name: str, file: str) -> str:
        return (self.path / "out" / name / file).read_text()


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory, llm_server: LLMServer) -> Suite:
    path = tmp_path_factory.mktemp("xdist-suite")
    (path / "pyproject.toml").write_text(PYPROJECT)
    for name, text in {
        "conftest": CONFTEST,
        "test_alpha": ALPHA,
        "test_beta": BETA,
        "test_gamma": GAMMA,
    }.items():
        (path / f"{name}.py").write_text(text)
    return Suite(path, llm_server.url)


def without_times(run: dict[str, Any]) -> dict[str, Any]:
    """The artifact without what legitimately changes from one run to the next.

    Found by diffing serial and xdist artifacts of this suite: only ``meta.started`` and
    ``meta.finished`` differ (wall-clock timestamps of each run). Everything else in ``meta`` —
    exit status, ``partial``, versions, platform, price provenance (``priced_at`` is a date) — and
    every other section must be byte-identical: the artifact records no worker ids, durations or
    scheduling order (``canonicalise`` sorts tests and verdicts).
    """
    meta = {key: value for key, value in run["meta"].items() if key not in ("started", "finished")}
    return {**run, "meta": meta}


def token_section(stdout: str) -> list[str]:
    """The plugin's terminal section, without the lines naming the report files."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if "= token budget =" in line)
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("="))
    return [line for line in lines[start:end] if not line.startswith(("JSON run artifact:", "report: "))]


def without_context(lines: list[str]) -> list[str]:
    return [line for line in lines if not line.startswith("context window: at most")]


def call_log(suite: Suite, name: str) -> list[dict[str, Any]]:
    """The call log's lines without ``duration_s`` (each call's own wall time differs per run)."""
    lines = [json.loads(line) for line in suite.text(name, "calls.jsonl").splitlines()]
    for line in lines:
        assert line.pop("duration_s") >= 0
    return lines


# -- the serial run ------------------------------------------------------------------------------


def test_serial_run_numbers(suite: Suite) -> None:
    result = suite.run("serial")
    assert result.returncode == 1, result.stdout  # the marker overrun fails its test
    assert "1 failed, 15 passed" in result.stdout
    run = suite.artifact("serial")
    assert {nodeid: (t["calls"], t.get("total_tokens", 0)) for nodeid, t in run["tests"].items()} == EXPECTED
    assert (run["totals"]["calls"], run["totals"]["total_tokens"]) == (18, 23689)
    assert run["tests"]["test_alpha.py::test_over_budget"]["outcome"] == "failed"
    assert run["meta"]["exit_status"] == 1
    assert run["meta"]["partial"] is False
    verdicts = [(v["name"], v["status"]) for v in run["verdicts"]]
    assert ("marker test_alpha.py::test_over_budget", "exceeded") in verdicts
    assert sum(status == "ok" for _, status in verdicts) == 10  # the per-test default, each test that called
    assert len(call_log(suite, "serial")) == 18


# -- every xdist mode gives the serial run -----------------------------------------------------


@pytest.mark.parametrize("mode", list(MODES))
def test_xdist_mode_equals_the_serial_run(suite: Suite, mode: str) -> None:
    serial = suite.run("serial")
    result = suite.run(mode, *MODES[mode])
    assert result.returncode == serial.returncode == 1, result.stdout + result.stderr
    assert "1 failed, 15 passed" in result.stdout
    workers = int(MODES[mode][1])
    assert f"{workers} workers [16 items]" in result.stdout
    assert len(set(re.findall(r"\[(gw\d+)\]", result.stdout))) >= 2  # really spread over workers

    # The module fixture ``index`` is requested by test_search and test_rank, the first two tests
    # collected. Every mode hands a worker a contiguous block of at least two tests (loadfile and
    # loadscope the whole module), so it is set up once, as in the serial run. Were the two split
    # over workers, the fixture would really run (and be counted) twice.
    serial_run, xdist_run = suite.artifact("serial"), suite.artifact(mode)
    assert json.dumps(without_times(xdist_run)) == json.dumps(without_times(serial_run))  # same bytes
    assert {k: (t["calls"], t.get("total_tokens", 0)) for k, t in xdist_run["tests"].items()} == EXPECTED

    for report in ("junit.xml", "report.md", "tests.csv"):
        # none of them holds a time, duration or worker id: identical bytes, no masking needed
        assert suite.text(mode, report) == suite.text("serial", report), report
    junit = ET.fromstring(suite.text(mode, "junit.xml")).find("testsuite")
    assert junit is not None
    assert (junit.get("tests"), junit.get("failures")) == ("11", "1")
    rows = list(csv.DictReader(io.StringIO(suite.text(mode, "tests.csv"))))
    assert len(rows) == 17
    assert call_log(suite, mode) == call_log(suite, "serial")  # same calls, same order
    # The "context window: at most … in TEST" line names the first of tied tests in arrival order:
    # see test_terminal_context_line_does_not_depend_on_scheduling below.
    assert without_context(token_section(result.stdout)) == without_context(token_section(serial.stdout))
    leftovers = [p.name for p in (suite.path / "out" / mode).iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_workers_ship_usage_as_json_text(suite: Suite, tmp_path: Path) -> None:
    """A test's usage and verdicts cross from worker to controller as one JSON string each: execnet
    serialises nested dicts in pure Python (~150 µs a test both ways, against ~2 µs for a string)."""
    log = tmp_path / "shipped.tsv"
    result = suite.run("n2-shipped", "-n", "2", SHIPPED_LOG=str(log))
    assert result.returncode == 1, result.stdout + result.stderr
    rows = [line.split("\t") for line in log.read_text().splitlines()]
    assert {name for name, _, _ in rows} >= {"tokenbudget", "tokenbudget_verdicts"}
    assert {kind for _, kind, _ in rows} == {"str"}
    entries = [json.loads(text) for name, _, text in rows if name == "tokenbudget"]
    calls = {k: v[0] for k, v in EXPECTED.items() if v[0] and k != FIXTURE}
    assert sorted(entry["calls"] for entry in entries) == sorted(calls.values())
    verdicts = [v for name, _, text in rows if name == "tokenbudget_verdicts" for v in json.loads(text)]
    assert {v["kind"] for v in verdicts} >= {"marker", "test-default"}
    suite.run("serial")
    assert json.dumps(without_times(suite.artifact("n2-shipped"))) == json.dumps(
        without_times(suite.artifact("serial"))
    )


# -- a worker that dies ----------------------------------------------------------------------------

CRASH = """
import os

import pytest
from conftest import post


@pytest.fixture(scope="module")
def warm():
    post("/v1/embeddings", model="text-embedding-3-small", input="warm the cache")


def test_before(chat):
    chat()


def test_crash(warm, chat):
    chat()
    if os.environ.get("CRASH") == "1":
        os._exit(1)


@pytest.mark.parametrize("n", range(4))
def test_after(chat, n):
    chat()
"""

CRASHED = "test_crash.py::test_crash"


@pytest.fixture(scope="module")
def crashed(tmp_path_factory: pytest.TempPathFactory, llm_server: LLMServer) -> Suite:
    """The crash suite run serially (``test_crash`` does not exit) and under ``-n 2`` (it does)."""
    path = tmp_path_factory.mktemp("xdist-crash")
    (path / "pyproject.toml").write_text("[tool.tokenbudget]\nenabled = true\n")
    (path / "conftest.py").write_text(CONFTEST)
    (path / "test_crash.py").write_text(CRASH)
    suite = Suite(path, llm_server.url)
    assert suite.run("serial").returncode == 0
    before = llm_server.requests
    suite.run("n2", "-n", "2", CRASH="1")
    suite.requests = llm_server.requests - before  # type: ignore[attr-defined]
    return suite


def test_crashed_worker_keeps_every_other_tests_calls(crashed: Suite) -> None:
    result = crashed.results["n2"]
    assert result.returncode == 1
    assert "replacing crashed worker" in result.stdout
    assert f"FAILED {CRASHED} - worker 'gw" in result.stdout
    assert "1 failed, 5 passed" in result.stdout
    # every call really left: the fixture's, the crashed test's, the five others'
    assert crashed.requests == 7  # type: ignore[attr-defined]
    serial, run = crashed.artifact("serial"), crashed.artifact("n2")
    tests = {
        k: v for k, v in serial["tests"].items() if k.startswith("test_crash.py::test_") and k != CRASHED
    }
    assert len(tests) == 5
    for nodeid, entry in tests.items():
        assert run["tests"][nodeid] == entry, nodeid  # shipped with each teardown report: all there
    assert run["meta"]["exit_status"] == 1


def test_crashed_worker_loses_at_most_the_crashed_tests_calls(crashed: Suite) -> None:
    serial, run = crashed.artifact("serial"), crashed.artifact("n2")
    lost = serial["tests"][CRASHED]
    assert (lost["calls"], lost["total_tokens"]) == (1, 1346)
    assert serial["totals"]["calls"] - run["totals"]["calls"] <= lost["calls"]
    assert serial["totals"]["total_tokens"] - run["totals"]["total_tokens"] <= lost["total_tokens"]
    assert "<module fixture warm>" in run["tests"]  # set up (and paid for) on the worker that died


def test_crashed_worker_call_log_keeps_every_completed_call(crashed: Suite) -> None:
    logged = call_log(crashed, "n2")
    run = crashed.artifact("n2")
    # every call the artifact counts is in the log; the log also keeps the crashed test's calls
    # that completed before the worker died (written line by line), the artifact cannot
    extra = len(logged) - run["totals"]["calls"]
    assert extra == sum(1 for line in logged if line["test"] == CRASHED) == 1
    assert {line["test"] for line in logged} >= {k for k, v in run["tests"].items() if v["calls"]}
    assert [p.name for p in (crashed.path / "out" / "n2").iterdir() if p.name.startswith(".")] == []


def test_crashed_worker_is_reported(crashed: Suite) -> None:
    run = crashed.artifact("n2")
    section = " ".join(token_section(crashed.results["n2"].stdout)).lower()
    meta = json.dumps(run["meta"]).lower()
    assert "crash" in meta or "lost" in meta or "crash" in section or "lost worker" in section
    assert run["tests"][CRASHED]["outcome"] == "failed"


# -- the terminal section under xdist: a tie broken by arrival order ------------------------------

TIE_SLOW = """
import time


def test_first(chat):
    time.sleep(1.0)  # its report reaches the controller after test_z.py's
    chat()
"""


def test_terminal_context_line_does_not_depend_on_scheduling(
    tmp_path_factory: pytest.TempPathFactory, llm_server: LLMServer
) -> None:
    path = tmp_path_factory.mktemp("xdist-tie")
    (path / "pyproject.toml").write_text("[tool.tokenbudget]\nenabled = true\n")
    (path / "conftest.py").write_text(CONFTEST)
    (path / "test_a.py").write_text(TIE_SLOW)
    (path / "test_z.py").write_text("def test_last(chat):\n    chat()\n")
    suite = Suite(path, llm_server.url)
    serial = suite.run("serial")
    parallel = suite.run("loadfile", "-n", "2", "--dist", "loadfile")
    assert serial.returncode == parallel.returncode == 0
    assert json.dumps(without_times(suite.artifact("loadfile"))) == json.dumps(
        without_times(suite.artifact("serial"))
    )  # the artifact is fine
    assert token_section(parallel.stdout) == token_section(serial.stdout)
