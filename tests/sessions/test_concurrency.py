"""Many threads and tasks in one test: every call recorded, each charged to the test that made it."""

from __future__ import annotations

import json

import pytest

SUITE = """
import asyncio
import json
import threading

import httpx2
import pytest

BODY = json.dumps({"id": "x", "object": "chat.completion", "model": "gpt-4o-mini", "choices": [],
                   "usage": {"prompt_tokens": 3, "completion_tokens": 2}}).encode()
URL = "https://api.openai.com/v1/chat/completions"


def answer(request):
    return httpx2.Response(200, content=BODY, headers={"content-type": "application/json"})


def test_before(token_usage):
    with httpx2.Client(transport=httpx2.MockTransport(answer)) as client:
        client.post(URL, json={})


def test_32_threads_of_1000_calls(token_usage):
    def work():
        with httpx2.Client(transport=httpx2.MockTransport(answer)) as client:
            for _ in range(1000):
                client.post(URL, json={})

    threads = [threading.Thread(target=work) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert token_usage.calls == 32_000


def test_1000_concurrent_tasks(token_usage):
    async def handler(request):
        await asyncio.sleep(0.01)  # all 1,000 in flight at once
        return answer(request)

    async def main():
        async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as client:
            await asyncio.gather(*(client.post(URL, json={}) for _ in range(1000)))

    asyncio.run(main())
    assert token_usage.calls == 1000



def test_after(token_usage):
    with httpx2.Client(transport=httpx2.MockTransport(answer)) as client:
        client.post(URL, json={})
    assert token_usage.calls == 1
"""


@pytest.mark.slow
def test_threads_and_tasks_all_recorded_none_misattributed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_load=SUITE)
    result = pytester.runpytest("--token-budget", "--token-budget-json=run.json", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    run = json.loads((pytester.path / "run.json").read_text())
    calls = {name.split("::")[1]: entry["calls"] for name, entry in run["tests"].items() if "::" in name}
    assert calls == {
        "test_before": 1,
        "test_32_threads_of_1000_calls": 32_000,
        "test_1000_concurrent_tasks": 1000,
        "test_after": 1,
    }
    assert run["totals"]["calls"] == 33_002
    assert run["totals"]["total_tokens"] == 33_002 * 5
    assert run["tests"]["test_load.py::test_32_threads_of_1000_calls"]["input_tokens"] == 96_000


LEAKY = """
import json
import threading

import httpx2

BODY = json.dumps({"id": "x", "object": "chat.completion", "model": "gpt-4o-mini", "choices": [],
                   "usage": {"prompt_tokens": 3, "completion_tokens": 2}}).encode()
URL = "https://api.openai.com/v1/chat/completions"
go_on, done = threading.Event(), threading.Event()
go_late, done_late = threading.Event(), threading.Event()


def call():
    transport = httpx2.MockTransport(
        lambda request: httpx2.Response(200, content=BODY, headers={"content-type": "application/json"}))
    with httpx2.Client(transport=transport) as client:
        client.post(URL, json={})


def leaked(start, finished):
    start.wait(10)
    call()
    finished.set()


def test_leaks_a_thread():
    threading.Thread(target=leaked, args=(go_on, done), daemon=True).start()
    threading.Thread(target=leaked, args=(go_late, done_late), daemon=True).start()


def test_running_when_the_leaked_thread_calls(token_usage):
    go_on.set()
    assert done.wait(10)
    assert token_usage.calls == 1  # charged to the test running when the request left


def after_the_last_test():  # not a test: called by the conftest
    go_late.set()
    assert done_late.wait(10)
"""

LEAKY_CONFTEST = """
import pytest


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session):  # after the last test, before the session finishes
    result = yield
    import test_leaky
    test_leaky.after_the_last_test()
    return result
"""


def test_a_leaked_threads_calls_are_charged_by_the_rule_and_never_lost(pytester: pytest.Pytester) -> None:
    """README "Who is charged": a call belongs to whoever runs when its request leaves — a thread
    leaked from one test is charged to the test running then, and after the last test to
    ``<session>``; nothing is dropped."""
    pytester.makepyfile(test_leaky=LEAKY)
    pytester.makeconftest(LEAKY_CONFTEST)
    result = pytester.runpytest("--token-budget", "--token-budget-json=run.json", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    run = json.loads((pytester.path / "run.json").read_text())
    calls = {name: entry["calls"] for name, entry in run["tests"].items()}
    assert calls == {
        "test_leaky.py::test_leaks_a_thread": 0,
        "test_leaky.py::test_running_when_the_leaked_thread_calls": 1,
        "<session>": 1,
    }
    assert run["totals"]["calls"] == 2
