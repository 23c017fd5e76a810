"""The HTML report in a real browser: headless Chromium (Debian's ``chromium`` package).

Chromium loads the report from a file, runs its scripts and prints the resulting DOM
(``--dump-dom``), or a screenshot. The report's own guard script counts any script error, console
error or content-policy violation on ``<html data-errors>``, and the table's script marks
``<html data-ready>`` when it has finished; the URL's hash drives the table the way a reader does
(``#sort=calls&dir=asc`` activates the column's header button). Chromium resolves no host name
here (``--host-resolver-rules``): the page could not reach the network if it tried.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import zlib
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_html_report import HOSTILE_IDS, Page, hostile_run

from pytest_tokenbudget.model import Call, Run, Usage
from pytest_tokenbudget.report import html
from pytest_tokenbudget.runs.baseline import compare
from pytest_tokenbudget.runs.history import save_run

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="no Chromium on PATH (Debian: apt-get install chromium): "
        "the HTML report is not checked in a browser",
    ),
]


def browser_run() -> Run:
    """Hostile ids, 120 ordinary tests of varied usage, a baseline comparison and an anatomy."""
    ids = tuple(f"tests/test_m{i % 7}.py::test_case[{i}]" for i in range(120)) + HOSTILE_IDS
    run = hostile_run(ids)
    for index, nodeid in enumerate(ids[:120]):  # calls 1..5 in an order that is not the tokens' order
        entry = run.tests[nodeid]
        for _ in range((index * 7) % 5):
            entry.add_call(
                Call(nodeid, "call", "anthropic", "anthropic.messages", "h", "claude", Usage(5, 0, 2, 1))
            )
    run.usage_for("tests/test_m0.py::test_quiet").outcome = "passed"
    base = hostile_run(ids[:100])
    run.comparison = compare(base, run) | {"source": "tokenbudget.baseline.json"}
    run.tests[ids[0]].anatomy = {"system": 50, "messages:user": 30, "tools": 20, "calls": 1}
    return run


def chromium(target: str, tmp: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    profile = tmp / f"profile-{abs(hash((target, flags)))}"
    command = [
        CHROMIUM, "--headless", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
        "--disable-extensions", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={profile}",
        "--window-size=1280,1600", "--hide-scrollbars", "--virtual-time-budget=3000",
        *(["--no-sandbox"] if os.geteuid() == 0 else []), *flags, target,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("html")
    history = folder / "runs"
    for day, tokens in ((1, 900), (2, 1400)):
        saved = Run(meta={"branch": "main", "commit": f"{day:08x}", "finished": f"2026-11-0{day}T06:00:00"})
        saved.usage_for("t.py::t").add_call(Call("t.py::t", "call", "p", "a", "h", "m", Usage(tokens)))
        save_run(saved, history, datetime(2026, 11, day, tzinfo=UTC))
    return html.write(browser_run(), folder / "report.html", history_dir=history)


@pytest.fixture(scope="module")
def views(report: Path) -> dict[str, str]:
    """The DOM after the scripts ran, for each view (the browsers run side by side)."""
    url = report.as_uri()
    jobs = {
        "sorted": (f"{url}#sort=calls&dir=asc", ()),
        "filtered": (f"{url}#q=TEST_IMG&show=calls", ()),
        "dark": (url, ("--force-dark-mode",)),
    }
    with ThreadPoolExecutor(max_workers=3) as pool:
        done = {
            name: pool.submit(chromium, target, report.parent, "--dump-dom", *flags)
            for name, (target, flags) in jobs.items()
        }
        results = {name: future.result() for name, future in done.items()}
    for name, result in results.items():
        assert result.returncode == 0, f"{name}: {result.stderr[-2000:]}"
    return {name: result.stdout for name, result in results.items()}


def root_attributes(dom: str) -> dict[str, str | None]:
    return next(attrs for tag, attrs in Page(dom).tags if tag == "html")


def test_the_scripts_run_without_an_error(views: dict[str, str]) -> None:
    for name, dom in views.items():
        root = root_attributes(dom)
        assert root.get("data-ready") == "true", name
        assert "data-errors" not in root, f"{name}: {root.get('data-error-text')}"


def test_activating_a_header_sorts_the_table(views: dict[str, str]) -> None:
    page = Page(views["sorted"])
    heads = {a["data-col"]: a.get("aria-sort") for t, a in page.tags if t == "th" and a.get("data-col")}
    assert heads["calls"] == "ascending"
    assert {v for k, v in heads.items() if k != "calls"} == {"none"}
    assert "Sorted by calls, ascending." in views["sorted"]
    calls = [int(cell) for cell in column(views["sorted"], 2)]
    assert calls == sorted(calls)
    assert calls[0] == 0  # the test without calls first
    assert calls[-1] > calls[0]
    first = Page(html.render(browser_run())).row_ids
    assert page.row_ids != first  # the rows moved: the page did sort, not the file


def test_every_test_id_is_in_the_page_as_text(views: dict[str, str]) -> None:
    run = browser_run()
    for dom in views.values():
        assert sorted(Page(dom).row_ids) == sorted(run.tests)
    for nodeid in HOSTILE_IDS:
        assert nodeid in Page(views["sorted"]).row_ids


def test_the_filter_hides_the_other_rows(views: dict[str, str]) -> None:
    dom = views["filtered"]
    visible = [nodeid for nodeid, hidden in rows_hidden(dom) if not hidden]
    assert visible == ["tests/test_y.py::test_img[<img src=x onerror=alert(4)>]"]
    total = len(browser_run().tests)
    assert f"1 of {total} rows" in dom


def test_dark_mode_follows_the_system(views: dict[str, str]) -> None:
    assert root_attributes(views["dark"]).get("data-scheme") == "dark"
    assert root_attributes(views["sorted"]).get("data-scheme") == "light"


def test_a_screenshot_of_each_view(report: Path, tmp_path: Path) -> None:
    shots = {"light": tmp_path / "light.png", "dark": tmp_path / "dark.png"}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [
            pool.submit(chromium, report.as_uri(), tmp_path, f"--screenshot={path}",
                        *(["--force-dark-mode"] if name == "dark" else []))
            for name, path in shots.items()
        ]  # fmt: skip
        for future in futures:
            assert future.result().returncode == 0
    for path in shots.values():
        assert path.stat().st_size > 50_000, f"{path.name}: {path.stat().st_size} bytes"
    light, dark = (brightness(path, rows=range(2, 12)) for path in shots.values())
    assert light > 200  # the page's background, above the banner
    assert dark < 60
    target = os.environ.get("TOKENBUDGET_SCREENSHOTS")  # keep them for a look: a folder
    if target:
        for name, path in shots.items():
            shutil.copy(path, Path(target) / f"html-report-{name}.png")


# -- reading the browser's output -------------------------------------------------------------------


def column(dom: str, index: int) -> list[str]:
    """The text of one column of the table of tests, in the DOM's row order (0 = the test id)."""
    import re

    body = dom[dom.index('<table id="tb-tests"') :]
    body = body[body.index("<tbody>") : body.index("</tbody>")]
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)
    return [re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)[index].replace(",", "") for row in rows]


def rows_hidden(dom: str) -> list[tuple[str, bool]]:
    import re
    from html import unescape

    body = dom[dom.index('<table id="tb-tests"') :]
    body = body[body.index("<tbody>") : body.index("</tbody>")]
    found = re.findall(r'<tr( hidden="")?[^>]*><th scope="row" class="id">(.*?)</th>', body, re.S)
    return [(unescape(nodeid), bool(hidden)) for hidden, nodeid in found]


def brightness(path: Path, rows: range) -> float:
    """Mean of the R, G and B values (0–255) of some pixel rows of an 8-bit RGB(A) PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, chunk = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = chunk
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    width, _, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8
    assert colour in (2, 6)
    channels = 3 if colour == 2 else 4
    stride = width * channels
    raw = zlib.decompress(idat)
    previous = bytearray(stride)
    total = count = 0
    for y in range(rows.stop):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, corner = previous[i], previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 255
        if y in rows:
            for x in range(width):
                total += sum(line[x * channels : x * channels + 3])
                count += 3
        previous = line
    return total / count
