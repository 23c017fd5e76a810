"""What ``--token-budget-otel`` costs a whole suite, with its receiver down and with it up.

The suite of ``bench_suite.py`` whose tests make one mocked OpenAI call each (the openai SDK on an
in-process ``httpx2.MockTransport``) runs in fresh ``python -m pytest`` processes, interleaved:
``--token-budget`` alone; with ``--token-budget-otel`` and ``OTEL_EXPORTER_OTLP_ENDPOINT`` at a
port where nothing listens (the export must neither fail nor slow the run: target ≤ 1.02×); and
with it at a loopback receiver that accepts every request (the export's own cost: 1 + 2 spans per
test, and the metrics). Only this plugin is loaded (``PYTEST_DISABLE_PLUGIN_AUTOLOAD``), so the
test extra's other plugins' start-up does not dilute the ratio. Medians of the repetitions; each
ratio also as its range over the repetitions (each run over the plugin-only run next to it).

Needs the ``[otel]`` extra::

    python benchmarks/bench_otel_export.py [--tests 2000] [--reps 5] [--json results/otel-export.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench_suite import compare, make_suite, row


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=5)
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
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
