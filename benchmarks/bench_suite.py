"""Start-up and whole-suite overhead: real pytest runs, with the plugin ÷ without, side by side.

Benchmarks 3 and 4 of issue 9. Each figure is the median of interleaved repetitions
(without, off, on, without, off, on …) of a fresh ``python -m pytest`` process on a generated
suite, so drift and caches hit every variant alike. Each process reads compiled bytecode from a
private cache (``PYTHONPYCACHEPREFIX``, filled by a warm-up round), as an installed package does:
without it an editable install under ``PYTHONDONTWRITEBYTECODE`` recompiles the plugin's sources
at every start (~100 ms, a cost no installed user pays). Both wall-clock and CPU time (user +
system of the child) are recorded; on a shared machine CPU time is the steadier of the two.

* start-up: ``pytest --collect-only`` on a small suite — plugin installed but off, and on
  (``--token-budget``), against ``-p no:tokenbudget`` (absolute milliseconds are the targets);
* suite: 2,000 tests that call no LLM, and 2,000 tests that make one mocked OpenAI call each
  (the openai SDK on an in-process ``httpx2.MockTransport``), with ``--token-budget`` ÷ without;
  and the no-call suite with a plugin registering the same per-test hooks with empty bodies, which
  separates what pytest's hook calls cost from the work done in them;
* the first LLM call's one-offs, per process (per xdist worker): genai-prices reading its price
  data, tiktoken loading an encoding — each when installed (see :func:`first_call_one_offs`).

Whole-process times drift on a shared machine, so each row also gives the range of the ratio over
the repetitions (each ``with`` run over the ``without`` run next to it). ``--hooks`` adds a
steadier figure for the per-test part: the plugin's hooks under cProfile in an in-process run of
each suite (see :func:`profile_hooks`).

    python benchmarks/bench_suite.py [--reps 5] [--tests 2000] [--hooks] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, NamedTuple

SMALL_SUITE = """
def test_{i}():
    assert {i} == {i}
"""

MOCKED_CALL_CONFTEST = """
import json

import httpx2
import openai
import pytest

BODY = json.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini-2024-07-18",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
}).encode()


def _handler(request):
    return httpx2.Response(200, headers={"content-type": "application/json"}, content=BODY)


@pytest.fixture(scope="session")
def llm():
    http = httpx2.Client(transport=httpx2.MockTransport(_handler))
    client = openai.OpenAI(api_key="sk-bench", http_client=http, max_retries=0)
    yield client
    http.close()
"""

MOCKED_CALL_TEST = """
import pytest


@pytest.mark.parametrize("i", range({n}))
def test_call(llm, i):
    reply = llm.chat.completions.create(model="gpt-4o-mini", messages=[{{"role": "user", "content": "hi"}}])
    assert reply.usage.total_tokens == 15
"""

NO_CALL_TEST = """
import pytest


@pytest.mark.parametrize("i", range({n}))
def test_plain(i):
    assert i >= 0
"""


EMPTY_HOOKS_PLUGIN = """
import pytest


class EmptyHooks:
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item):
        pass

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_call(self, item):
        pass

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_teardown(self, item, nextitem):
        pass

    def pytest_runtest_logfinish(self, nodeid):
        pass

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef, request):
        return (yield)

    def pytest_fixture_post_finalizer(self, fixturedef):
        pass

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item, call):
        return (yield)

    def pytest_runtest_logreport(self, report):
        pass


def pytest_configure(config):
    config.pluginmanager.register(EmptyHooks(), "empty-hooks")
"""
"""The per-test hooks the plugin registers, with empty bodies: what pytest's hook calls cost alone."""


def make_suite(root: Path, kind: str, tests: int) -> Path:
    """Write a suite of ``kind`` (small | plain | mocked) under ``root``; return its folder."""
    folder = root / kind
    folder.mkdir()
    (folder / "pytest.ini").write_text("[pytest]\n")  # own rootdir: no pyproject of this project
    if kind == "small":
        for module in range(10):
            body = "".join(SMALL_SUITE.format(i=i) for i in range(module * 10, module * 10 + 10))
            (folder / f"test_small_{module}.py").write_text(body)
    elif kind == "plain":
        (folder / "test_plain.py").write_text(textwrap.dedent(NO_CALL_TEST.format(n=tests)))
        (folder / "empty_hooks.py").write_text(EMPTY_HOOKS_PLUGIN)  # -p empty_hooks (cwd on sys.path)
    else:
        (folder / "conftest.py").write_text(MOCKED_CALL_CONFTEST)
        (folder / "test_mocked.py").write_text(textwrap.dedent(MOCKED_CALL_TEST.format(n=tests)))
    return folder


class Timing(NamedTuple):
    wall: float
    cpu: float


def run_pytest(folder: Path, args: list[str], pycache: Path) -> Timing:
    """Wall and CPU seconds of one fresh ``python -m pytest`` process (it must succeed)."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"pytest {' '.join(args)} failed in {folder}:\n{done.stdout[-2000:]}{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timing(elapsed, cpu)


def compare(
    folder: Path, variants: dict[str, list[str]], reps: int, pycache: Path
) -> dict[str, list[Timing]]:
    """Wall and CPU seconds per variant, one per interleaved repetition (after a warm-up round,
    which also compiles every module into the bytecode cache)."""
    times: dict[str, list[Timing]] = {name: [] for name in variants}
    for warm_up in variants.values():
        run_pytest(folder, warm_up, pycache)
    for _ in range(reps):
        for name, args in variants.items():
            times[name].append(run_pytest(folder, args, pycache))
    return times


def row(benchmark: str, without_runs: list[Timing], with_runs: list[Timing]) -> dict[str, Any]:
    """Medians, and the range of the per-repetition ratio (each run over its neighbour)."""
    without = Timing(*(statistics.median(t[i] for t in without_runs) for i in (0, 1)))
    with_ = Timing(*(statistics.median(t[i] for t in with_runs) for i in (0, 1)))
    ratios = [w.wall / o.wall for w, o in zip(with_runs, without_runs, strict=True)]
    cpu_ratios = [w.cpu / o.cpu for w, o in zip(with_runs, without_runs, strict=True)]
    return {
        "benchmark": benchmark,
        "without_s": round(without.wall, 4),
        "with_s": round(with_.wall, 4),
        "ratio": round(with_.wall / without.wall, 4),
        "ratio_range": [round(min(ratios), 4), round(max(ratios), 4)],
        "added_ms": round((with_.wall - without.wall) * 1000, 1),
        "without_cpu_s": round(without.cpu, 4),
        "with_cpu_s": round(with_.cpu, 4),
        "cpu_ratio": round(with_.cpu / without.cpu, 4),
        "cpu_ratio_range": [round(min(cpu_ratios), 4), round(max(cpu_ratios), 4)],
        "added_cpu_ms": round((with_.cpu - without.cpu) * 1000, 1),
    }


ONE_OFFS: dict[str, tuple[str, str]] = {
    # name: (module that must be installed, a script printing "<seconds> <worked>")
    "prices": (
        "genai_prices",
        """
import time
from pytest_tokenbudget.model import Call, Usage
from pytest_tokenbudget.pricing.prices import Pricer
call = Call("t", "call", "openai", "openai.chat", "api.openai.com", "gpt-4o-mini", Usage(12, 0, 0, 3, 0))
start = time.perf_counter()
Pricer().price(call)
print(time.perf_counter() - start, call.cost_usd is not None)
""",
    ),
    "tokenizer": (
        "tiktoken",
        """
import time
from pytest_tokenbudget.tokens import tokenizer
start = time.perf_counter()
counted = tokenizer.count("hello", "gpt-4o-mini")
print(time.perf_counter() - start, counted.method == "tiktoken:o200k_base")
""",
    ),
}
"""What the first LLM call of a process pays once (per xdist worker too), when installed: the
first priced call (genai-prices reads its price data) and the first request estimate (tiktoken
loads o200k_base, from its cache: ``TOKENBUDGET_OFFLINE=1`` here, never a download)."""


def installed_extras() -> dict[str, str | None]:
    """Versions of the optional libraries the plugin uses when present (None: not installed); with
    them the first LLM call of each process pays their one-offs, so the suite rows differ."""
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {}
    for name in ("genai-prices", "tiktoken", "junit-xml"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def first_call_one_offs(reps: int, pycache: Path) -> dict[str, Any]:
    """Seconds of each one-off in a fresh process, bytecode cached (median and range); a string
    saying why when it cannot be measured here."""
    import importlib.util

    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPYCACHEPREFIX=str(pycache), TOKENBUDGET_OFFLINE="1")
    found: dict[str, Any] = {}
    for name, (module, script) in ONE_OFFS.items():
        if importlib.util.find_spec(module) is None:
            found[name] = f"{module} is not installed"
            continue
        seconds: list[float] = []
        for rep in range(reps + 1):  # the first fills the bytecode cache
            command = [sys.executable, "-c", script]
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            took, worked = done.stdout.split() if done.returncode == 0 else ("0", "False")
            if worked != "True":  # e.g. no o200k_base in tiktoken's cache (see the README)
                seconds = []
                break
            if rep:
                seconds.append(float(took))
        found[name] = (
            {"median_s": round(statistics.median(seconds), 4), "range_s": [min(seconds), max(seconds)]}
            if seconds
            else f"{module} did not work offline here"
        )
    return found


def profile_hooks(folder: Path, tests: int) -> dict[str, Any]:
    """The plugin's per-test cost, steadier than whole-process times: ``pytest --token-budget`` on
    ``folder`` in this process under cProfile, summing the time of pytest_tokenbudget functions
    entered from outside the package that run at least once per test (the hooks; start-up and the
    end of the session are left out). The profiler inflates every Python call several-fold, so the
    microseconds compare versions of the plugin, not real time; the call counts are exact."""
    import contextlib
    import cProfile
    import io
    import pstats

    import pytest

    cwd = os.getcwd()
    os.chdir(folder)
    profile = cProfile.Profile()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            profile.enable()
            code = pytest.main(["-q", "-p", "no:cacheprovider", "-p", "no:randomly", "--token-budget"])
            profile.disable()
    finally:
        os.chdir(cwd)
    if code != 0:
        raise SystemExit(f"in-process pytest failed in {folder} (exit {code})")
    stats: dict[Any, Any] = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    ours = [func for func in stats if "pytest_tokenbudget" in func[0]]
    hooks: dict[str, dict[str, float]] = {}
    for func in ours:
        calls = stats[func][1]
        callers = stats[func][4].items()
        entered = sum(edge[3] for caller, edge in callers if "pytest_tokenbudget" not in caller[0])
        if calls >= tests and entered:
            hooks[f"{Path(func[0]).name}:{func[2]}"] = {
                "calls_per_test": round(calls / tests, 2),
                "us_per_test": round(entered / tests * 1e6, 2),
            }
    return {
        "us_per_test": round(sum(h["us_per_test"] for h in hooks.values()), 1),
        "python_calls_per_test": round(sum(stats[f][1] for f in ours) / tests, 1),  # incl. one-offs
        "hooks": dict(sorted(hooks.items(), key=lambda kv: -kv[1]["us_per_test"])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--tests", type=int, default=2000)
    parser.add_argument("--hooks", action="store_true", help="also profile the per-test hooks in-process")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    hooks: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="tokenbudget-bench-") as tmp:
        root = Path(tmp)
        pycache = root / "pycache"
        small = make_suite(root, "small", 0)
        startup = compare(
            small,
            {
                "absent": ["--collect-only", "-p", "no:tokenbudget"],
                "off": ["--collect-only"],
                "on": ["--collect-only", "--token-budget"],
            },
            args.reps,
            pycache,
        )
        for variant in ("off", "on"):
            label = f"start-up, plugin {variant} (collect-only, 100 tests)"
            results.append(row(label, startup["absent"], startup[variant]))
        for kind, label in (("plain", "tests with no LLM call"), ("mocked", "tests with one mocked call")):
            folder = make_suite(root, kind, args.tests)
            variants = {"without": [], "with": ["--token-budget"]}
            if kind == "plain":
                variants["empty hooks"] = ["-p", "empty_hooks"]
            suite = compare(folder, variants, args.reps, pycache)
            results.append(row(f"suite, {args.tests:,} {label}", suite["without"], suite["with"]))
            if kind == "plain":
                empty = f"suite, {args.tests:,} {label}: the same hooks, empty"
                results.append(row(empty, suite["without"], suite["empty hooks"]))
            if args.hooks:
                hooks[label] = profile_hooks(folder, args.tests)
        one_offs = first_call_one_offs(args.reps, pycache)
    machine = f"{platform.machine()} · Python {platform.python_version()} · {os.cpu_count()} CPUs"
    extras = installed_extras()
    print(f"start-up and suite overhead ({machine}), median of {args.reps} interleaved repetitions")
    print("optional libraries: " + ", ".join(f"{k} {v or 'not installed'}" for k, v in extras.items()))
    print(f"{'benchmark':<52} {'without':>9} {'with':>9} {'ratio':>7} {'(range)':>15} {'added':>9}", end="")
    print(f"   {'CPU ratio':>9} {'(range)':>15} {'added':>9}")
    for r in results:
        low, high = r["ratio_range"]
        cpu_low, cpu_high = r["cpu_ratio_range"]
        print(
            f"{r['benchmark']:<52} {r['without_s']:>8.3f}s {r['with_s']:>8.3f}s "
            f"{r['ratio']:>6.3f}× ({low:.3f}–{high:.3f}) {r['added_ms']:>7.1f}ms   "
            f"{r['cpu_ratio']:>8.3f}× ({cpu_low:.3f}–{cpu_high:.3f}) {r['added_cpu_ms']:>7.1f}ms"
        )
    for name, found in one_offs.items():
        if isinstance(found, str):
            print(f"first-call one-off, {name}: not measured ({found})")
        else:
            low, high = found["range_s"]
            print(f"first-call one-off, {name}: {found['median_s']:.3f}s ({low:.3f}–{high:.3f}), per process")
    for label, found in hooks.items():
        print(
            f"per-test hooks under cProfile, {label}: {found['us_per_test']} µs a test "
            f"({found['python_calls_per_test']} calls of plugin functions a test, one-offs included)"
        )
        for name, hook in found["hooks"].items():
            print(f"  {name:<52} {hook['us_per_test']:>8.1f} µs  {hook['calls_per_test']:>5} calls a test")
    if args.json:
        document: dict[str, Any] = {"machine": machine, "optional_libraries": extras, "results": results}
        if hooks:
            document["hooks"] = hooks
        document["first_call_one_offs"] = one_offs
        args.json.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
