"""What ``--token-budget-otel`` costs a whole suite, with its receiver down and with it up.

The suite of ``bench_suite.py`` whose tests make one mocked OpenAI call each (the openai SDK on an
in-process ``httpx2.MockTransport``) runs in fresh ``python -m pytest`` processes, interleaved:
``--token-budget`` alone; with ``--token-budget-otel`` and ``OTEL_EXPORTER_OTLP_ENDPOINT`` at a
port where nothing listens (the export must neither fail nor slow the run: target ≤ 1.02×); and
with it at a loopback receiver that accepts every request (the export's own cost: 1 + 2 spans per
test, and the metrics). Only this plugin is loaded (``PYTEST_DISABLE_PLUGIN_AUTOLOAD``), so the
test extra's other plugins' start-up does not dilute the ratio. Medians of the repetitions; each
ratio also as its range over the repetitions (each run over the plugin-only run next to it).

Whole processes on a shared 2-CPU machine drift by tens of per cent, so the script also measures
the two parts the export adds to a run whose receiver is down, in this process: the per-call
bookkeeping (CallRecords' recorder observer and ledger listener, on real openai calls through the
capture, timed call by call in turns with capture alone, as ``bench_calls.py`` does) and the end
of the session (:func:`export_run` against the closed port: one refused TCP connect), and states
the ratio they make for the suite: (suite + calls × per-call cost + end cost) ÷ suite.

Needs the ``[otel]`` extra::

    python benchmarks/bench_otel_export.py [--tests 2000] [--reps 5] [--json results/otel-export.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench_calls import chat, openai_client
from bench_suite import compare, make_suite, row

from pytest_tokenbudget.capture import Capture
from pytest_tokenbudget.ledger import Ledger, Owner
from pytest_tokenbudget.model import Call, Run, Usage
from pytest_tokenbudget.plugin.otel import CallRecords
from pytest_tokenbudget.report.otel import export_run


class _Discard(BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver that reads each request and answers 200 (and counts them)."""

    received = 0

    def log_message(self, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        type(self).received += 1
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def check_down_run(folder: Path, endpoint: str) -> str:
    """One run against the down receiver: it must pass and print exactly one OpenTelemetry line."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *PLUGIN, "--token-budget-otel"]
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if "OpenTelemetry" in line]
    if done.returncode != 0 or len(lines) != 1 or "cannot reach the receiver" not in lines[0]:
        raise SystemExit(f"the down-receiver run is not as expected (exit {done.returncode}): {lines}")
    return lines[0]


PLUGIN = ["-p", "pytest_tokenbudget.plugin", "--token-budget"]


def per_call_cost(calls: int) -> dict[str, Any]:
    """The export's per-call work: real openai calls through the capture alone and through the capture
    with CallRecords' observer and listener, each call timed alone, the two in turns (alternating
    order), medians compared."""
    one = chat(openai_client())
    sides = []
    for with_role in (False, True):
        ledger = Ledger(keep_calls=False)
        ledger.push_owner(Owner("bench::test", "call"))
        capture = Capture(ledger)
        if with_role:
            records = CallRecords()  # wired as Session._compose wires it
            capture.recorder.observers.append(records.time)
            ledger.add_listener(records.keep, "the OpenTelemetry export")
        sides.append(capture)
    timings: tuple[list[float], list[float]] = ([], [])

    def timed(side: int) -> None:
        sides[side].install()
        start = time.perf_counter()
        one()
        timings[side].append(time.perf_counter() - start)
        sides[side].uninstall()

    for _ in range(200):  # warm-up: imports, caches, the SDK's lazy set-up
        timed(0)
        timed(1)
    del timings[0][:], timings[1][:]
    for index in range(calls):
        for side in (0, 1) if index % 2 == 0 else (1, 0):
            timed(side)
    plain, observed = (statistics.median(t) for t in timings)
    return {
        "per_call_capture_us": round(plain * 1e6, 2),
        "per_call_capture_and_role_us": round(observed * 1e6, 2),
        "per_call_role_us": round((observed - plain) * 1e6, 2),
    }


def end_cost_down(tests: int, endpoint: str) -> float:
    """Seconds :func:`export_run` takes for ``tests`` tests of one call each, the receiver down."""
    run = Run()
    call = Call("t", "call", "openai", "openai.chat", "api.openai.com", "gpt-4o-mini", Usage(12, 0, 0, 3, 0))
    for i in range(tests):
        run.usage_for(f"test_mocked.py::test_call[{i}]").add_call(call)
    now = time.time_ns()
    start = time.perf_counter()
    result = export_run(run, started_ns=now, ended_ns=now, environ={"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
    seconds = time.perf_counter() - start
    assert "cannot reach the receiver" in result.problem, result
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--calls", type=int, default=3000, help="calls each way for the per-call cost")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Discard)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    up = f"http://127.0.0.1:{server.server_address[1]}"
    down = f"http://127.0.0.1:{closed_port()}"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = make_suite(root, "mocked", args.tests)
        pycache = root / "pycache"
        line = check_down_run(folder, down)
        # The endpoint is per variant: an environment variable set by a tiny -p plugin of its own.
        for name, endpoint in (("down", down), ("up", up)):
            (folder / f"endpoint_{name}.py").write_text(
                f"import os\nos.environ['OTEL_EXPORTER_OTLP_ENDPOINT'] = {endpoint!r}\n"
            )
        variants = {
            "plugin": PLUGIN,
            "down": ["-p", "endpoint_down", *PLUGIN, "--token-budget-otel"],
            "up": ["-p", "endpoint_up", *PLUGIN, "--token-budget-otel"],
        }
        times = compare(folder, variants, args.reps, pycache)
    server.shutdown()
    parts = per_call_cost(args.calls)
    end = end_cost_down(args.tests, down)
    suite = statistics.median(t.wall for t in times["plugin"])
    added = args.tests * parts["per_call_role_us"] / 1e6 + end
    derived = {
        "end_of_session_down_s": round(end, 5),
        **parts,
        "derived_ratio_down": round((suite + added) / suite, 4),
    }
    results = [
        row(f"{args.tests} tests, 1 call each: export, receiver down", times["plugin"], times["down"]),
        row(f"{args.tests} tests, 1 call each: export, receiver up", times["plugin"], times["up"]),
    ]
    machine = f"{platform.machine()} · Python {platform.python_version()} · {os.cpu_count()} CPUs"
    print(f"--token-budget-otel ÷ --token-budget alone ({machine}), median of {args.reps}")
    print(f"down-receiver run says: {line}")
    print(f"{'benchmark':<50} {'without':>8} {'with':>8} {'ratio':>7} {'range':>15} {'cpu ratio':>10}")
    for r in results:
        low, high = r["ratio_range"]
        print(
            f"{r['benchmark']:<50} {r['without_s']:>7.2f}s {r['with_s']:>7.2f}s {r['ratio']:>6.3f}× "
            f"{low:>6.3f}–{high:<6.3f}  {r['cpu_ratio']:>8.3f}×"
        )
    print(f"requests the receiver accepted: {_Discard.received}")
    print(
        f"in this process: the role's bookkeeping {derived['per_call_role_us']:.2f} µs a call "
        f"(the call through capture alone: {derived['per_call_capture_us']:.1f} µs); "
        f"the end of a session with the receiver down {derived['end_of_session_down_s'] * 1000:.2f} ms"
    )
    print(f"→ the {args.tests}-test suite with the receiver down: {derived['derived_ratio_down']:.4f}×")
    if args.json:
        payload = {"machine": machine, "results": results, "parts": derived}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
