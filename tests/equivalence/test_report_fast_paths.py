"""The reports' fast paths give the very text of the plain ways they replace.

Each test holds one fast path against a plain reference (the code it replaced): remembered money,
token and call-count texts; the per-test table row that skips the caveat properties; the CSV row
filled into a template instead of written by csv.writer.
"""

from __future__ import annotations

import csv
import io
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

# Private names (terminal._tokens, _calls, _cost, _heaviest_row, units._dollars): each fast path
# is pinned to the plain code it replaced; no public call reaches them one by one.
from pytest_tokenbudget import units as fmt
from pytest_tokenbudget.model import Call, Caveats, Run, Tally, TestUsage, Usage
from pytest_tokenbudget.report import export, terminal


def plain_money(value: float | None, *, known: bool = True) -> str:
    """``fmt.money`` as it was before its text was remembered."""
    if value is None:
        return "unknown"
    if value == 0:
        text = "$0"
    elif abs(value) >= 100:
        text = f"${value:,.2f}"
    elif abs(value) >= 0.01:
        text = f"${value:.4f}".rstrip("0").rstrip(".")
    else:
        text = f"${value:.6f}".rstrip("0").rstrip(".")
    return text if known else f"≥{text}"


amounts = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True),
    st.floats(min_value=-1e-5, max_value=1e-5),  # around the 6-decimal cut-off
    st.sampled_from([0.0, -0.0, 0.005, 0.0099999, 0.01, 99.995, 99.999, 100.0, 1e300, 5e-324]),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.booleans(),
)


@settings(max_examples=500, deadline=None)
@given(values=st.lists(amounts, min_size=1, max_size=6), known=st.booleans())
def test_money_remembered_is_money(values: list[float], known: bool) -> None:
    """Catches a cache keyed too loosely (``1`` and ``1.0``, ``0.0`` and ``-0.0``, known and not)
    or a changed rounding: each value is formatted twice, next to its equal twins."""
    for value in values:
        twins = [value, value, -value] + ([float(value)] if not isinstance(value, float) else [])
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            twins.append(int(value))
        for twin in twins:
            assert fmt.money(twin, known=known) == plain_money(twin, known=known)
            assert fmt.money(twin, known=not known) == plain_money(twin, known=not known)
    assert fmt.money(None) == "unknown"


def test_money_zero_has_no_sign_whichever_comes_first() -> None:
    """0.0 and -0.0 share a cache entry: catches a first -0.0 leaving ``$-0`` for both."""
    for order in ((-0.0, 0.0), (0.0, -0.0)):
        fmt._dollars.cache_clear()
        assert [fmt.money(v) for v in order] == ["$0", "$0"]
    fmt._dollars.cache_clear()
    assert [fmt.money(v) for v in (-1e-9, -0.0)] == ["$-0", "$0"]


@settings(max_examples=300, deadline=None)
@given(counts=st.lists(st.integers(min_value=-(10**15), max_value=10**15), min_size=1, max_size=8))
def test_remembered_counts_are_plain(counts: list[int]) -> None:
    """The remembered token and call-count texts of the per-test table; an int and the equal float
    must keep their own text (catches ``typed=False``)."""
    for count in counts:
        for value in (count, float(count), count):
            assert terminal._tokens(value) == f"{value:,}"
            assert terminal._calls(value) == f"{value:,} call" + ("" if value == 1 else "s")


def test_remembered_counts_keep_their_type() -> None:
    assert [terminal._tokens(v) for v in (1, 1.0, 1)] == ["1", "1.0", "1"]
    assert [terminal._calls(v) for v in (1, 1.0, 2, 2.0)] == ["1 call", "1.0 call", "2 calls", "2.0 calls"]


def plain_heaviest_row(entry: TestUsage) -> tuple[str, ...]:
    """A row of the per-test table, cell by cell, as ``terminal.render`` built it before."""
    total = entry.total
    return (
        ("~" if total.estimated_calls else "") + fmt.tokens(total.total_tokens),
        fmt.tokens(total.input_tokens),
        fmt.tokens(total.output_tokens),
        terminal._cost(total),
        f"{total.calls:,} call" + ("" if total.calls == 1 else "s"),
        entry.nodeid,
    )


calls = st.builds(
    Call,
    owner=st.just("tests/test_a.py::test_a"),
    phase=st.sampled_from(["setup", "call", "teardown"]),
    provider=st.sampled_from(["openai", "anthropic"]),
    api=st.just("openai.chat"),
    host=st.just("h"),
    model=st.sampled_from(["gpt-4o-mini", "claude-sonnet-4-5"]),
    usage=st.builds(Usage, *[st.integers(0, 10**7)] * 5) | st.just(Usage()),
    source=st.sampled_from(["live", "replayed", "mocked", "manual"]),
    state=st.sampled_from(["complete", "unparsed", "failed", "unmetered"]),
    estimated=st.booleans(),
    cost_usd=st.none() | st.floats(min_value=0, max_value=1e4) | st.sampled_from([0.0, 0.00042, 1e-9]),
)


@settings(max_examples=400, deadline=None)
@given(sequence=st.lists(calls, max_size=6), empty_caveats=st.booleans())
def test_heaviest_row_is_the_cells_one_by_one(sequence: list[Call], empty_caveats: bool) -> None:
    """The row of a tally without caveats skips the caveat properties: catches a fast path taken
    for a tally that has some (an estimated ``~`` or an unpriced ``≥`` / ``unknown`` lost)."""
    entry = TestUsage("tests/test_a.py::test_ü[ß]")
    for call in sequence:
        entry.add_call(call)
    if empty_caveats and entry.total.caveats is None:
        entry.total.caveats = Caveats()  # all zero: the slow path must give the same row
    assert terminal._heaviest_row(entry) == plain_heaviest_row(entry)


def test_heaviest_row_marks_estimated_and_unpriced() -> None:
    entry = TestUsage("t")
    entry.total = Tally(calls=2, input_tokens=1000, output_tokens=234, cost_usd=0.5, caveats=Caveats(1, 0, 1))
    assert terminal._heaviest_row(entry) == ("~1,234", "1,000", "234", "≥$0.5", "2 calls", "t")


def plain_csv(run: Run) -> str:
    """``export.render_csv`` as it was: csv.writer.writerow for every row."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(export.CSV_COLUMNS)
    for nodeid in sorted(run.tests):
        entry = run.tests[nodeid]
        tally = entry.total
        priced = tally.calls > tally.unpriced_calls
        writer.writerow(
            [
                nodeid,
                entry.kind,
                entry.outcome,
                entry.path,
                "" if entry.line is None else entry.line,
                tally.calls,
                tally.input_tokens,
                tally.cached_input_tokens,
                tally.cache_write_tokens,
                tally.output_tokens,
                tally.reasoning_tokens,
                tally.total_tokens,
                f"{tally.cost_usd:.6f}" if priced else "",
                str(tally.cost_known).lower(),
                tally.live_calls,
                f"{tally.live_cost_usd:.6f}",
                tally.estimated_calls,
                " ".join(sorted(entry.models)),
            ]
        )
    return out.getvalue()


names = st.text(alphabet=st.sampled_from('ab ,"\r\n\t|`ü日🚀'), max_size=12)


@pytest.mark.slow
@settings(max_examples=400, deadline=None)
@given(
    tests=st.lists(
        st.tuples(names, names, names, names, names, st.none() | st.integers(-5, 10**6), calls), max_size=6
    )
)
def test_csv_template_is_csv_writer(tests: list[tuple]) -> None:
    """Rows are filled into a template unless a cell may need quoting: catches a row written plain
    that csv.writer would have quoted (a comma, quote or line break in any text cell)."""
    run = Run()
    for nodeid, kind, outcome, path, model, line, call in tests:
        entry = run.usage_for(nodeid, kind or "test")
        entry.outcome, entry.path, entry.line = outcome, path, line
        call.model = model
        entry.add_call(call)
    assert export.render_csv(run) == plain_csv(run)


def test_csv_quotes_what_needs_quoting() -> None:
    run = Run()
    for nodeid in ("t,comma", 't"quote', "t\nnewline", "t\rreturn", "plain"):
        run.usage_for(nodeid).add_call(Call(nodeid, "call", "openai", "a", "h", "m,x", Usage(1, 0, 0, 1, 0)))
    text = export.render_csv(run)
    assert text == plain_csv(run)
    for quoted in ('"t,comma"', '"t""quote"', '"t\nnewline"', '"openai/m,x"'):
        assert quoted in text
