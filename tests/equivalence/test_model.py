"""A test's tallies (its total, each phase, each model) add up exactly.

However calls are split — recorded in one place, spread over xdist workers and merged, written to
an artifact and read back — a test's totals, phases and models come out the same.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_tokenbudget.model import Call, CallState, Run, Tally, TestUsage, Usage, Verdict
from pytest_tokenbudget.model.fields import TALLY_FIELDS
from pytest_tokenbudget.runs import baseline
from pytest_tokenbudget.runs.artifact import (
    _compact,  # private: the plain encoder the fast encoders must equal byte for byte
    _money,  # private: the remembered money text must equal the plain one
    dump_run,
    encode_tally,
    encode_test,
    encode_verdict,
    iter_run,
    load_run,
    write_atomic,
    write_run,
)

CALL_STATES = list(CallState)

calls = st.builds(
    lambda phase, model, tokens, cost: Call(
        owner="t.py::test_x",
        phase=phase,
        provider="openai",
        api="openai.chat",
        host="api.openai.com",
        model=model,
        usage=Usage(input_tokens=tokens[0], cached_input_tokens=tokens[1], output_tokens=tokens[2]),
        cost_usd=cost,
    ),
    st.sampled_from(["setup", "call", "teardown"]),
    st.sampled_from(["gpt-4o", "gpt-4o-mini"]),
    st.tuples(st.integers(5, 500), st.integers(0, 5), st.integers(0, 500)),
    st.sampled_from([None, 0.25, 0.5]),
)


def recorded(sequence: list[Call]) -> TestUsage:
    usage = TestUsage("t.py::test_x")
    for call in sequence:
        usage.add_call(call)
    return usage


@settings(max_examples=300, deadline=None)
@given(sequence=st.lists(calls, max_size=8), cuts=st.lists(st.integers(0, 8), max_size=3))
def test_split_merged_and_reread_tallies_equal_one_recording(sequence: list[Call], cuts: list[int]) -> None:
    whole = recorded(sequence)
    expected = whole.to_dict()
    points = sorted({c % (len(sequence) + 1) for c in cuts})
    merged = TestUsage("t.py::test_x")
    for start, end in zip([0, *points], [*points, len(sequence)], strict=True):
        merged.merge(recorded(sequence[start:end]))
    assert merged.to_dict() == expected
    reread = TestUsage.from_dict("t.py::test_x", expected)
    assert reread.to_dict() == expected
    reread.merge(recorded(sequence))
    doubled = recorded(sequence + sequence).to_dict()
    assert reread.to_dict() == doubled
    if sequence:
        phases = {call.phase for call in sequence}
        assert set(expected["phases"]) == phases
        assert sum(p["calls"] for p in expected["phases"].values()) == len(sequence)
        assert expected["input_tokens"] == sum(call.usage.input_tokens for call in sequence)


def test_each_phase_and_model_has_a_tally_of_its_own() -> None:
    usage = TestUsage("t.py::test_x")
    setup = Call("t", "setup", "openai", "openai.chat", "h", "m", Usage(input_tokens=10, output_tokens=1))
    call = Call("t", "call", "openai", "openai.chat", "h", "m", Usage(input_tokens=20, output_tokens=2))
    usage.add_call(setup)
    assert (usage.phases, usage.models) == ({"setup": usage.total}, {"openai/m": usage.total})
    assert usage.phases["setup"] is not usage.total is not usage.models["openai/m"]
    usage.add_call(call)
    assert {name: t.total_tokens for name, t in usage.phases.items()} == {"setup": 11, "call": 22}
    assert usage.models["openai/m"] == usage.total
    assert usage.total.total_tokens == 33
    assert usage.total.usage == Usage(input_tokens=30, output_tokens=3)
    assert Tally.from_dict(usage.total.to_dict()) == usage.total
    snapshot = TestUsage("t.py::test_x")
    snapshot.merge(usage)
    snapshot.add_call(call)  # the snapshot's tallies are its own: the entry it copied is unchanged
    assert (usage.total.calls, usage.phases["call"].calls, usage.models["openai/m"].calls) == (2, 1, 2)


# -- the artifact's fast encoder writes exactly what json.dumps would ---------------------------

any_calls = st.builds(
    lambda phase, model, tokens, cost, source, state, estimated: Call(
        owner="t.py::test_x",
        phase=phase,
        provider="openai",
        api="openai.chat",
        host="api.openai.com",
        model=model,
        usage=Usage(tokens[0], min(tokens[1], tokens[0]), 0, tokens[2], min(tokens[3], tokens[2])),
        source=source,
        state=state,
        estimated=estimated,
        cost_usd=cost,
    ),
    st.sampled_from(["setup", "call", "teardown", 'odd "phase"']),
    st.sampled_from(["gpt-4o", "gpt-4o-mini", 'm\u00e9t\u00e9o/"q"\\x', "\u6a21\u578b"]),
    st.tuples(*[st.integers(0, 10**12)] * 4),
    st.one_of(
        st.none(),
        st.floats(min_value=0, max_value=1e6, allow_nan=False),
        st.sampled_from([0.1 + 0.2, 1e-11, 3e-7, float("inf"), float("nan")]),
    ),
    st.sampled_from(["live", "replayed", "mocked", "manual"]),
    st.sampled_from(list(CALL_STATES)),
    st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(
    sequence=st.lists(any_calls, max_size=10),
    markers=st.lists(st.sampled_from(["slow", "agent", "n\u00e4me"]), max_size=2, unique=True),
    extras=st.booleans(),
    head=st.tuples(st.text(), st.text(), st.none() | st.integers() | st.booleans()),
)
def test_the_fast_test_encoder_writes_what_json_dumps_would(
    sequence: list[Call], markers: list[str], extras: bool, head: tuple[str, str, int | None]
) -> None:
    entry = recorded(sequence)
    entry.markers = tuple(markers)
    entry.outcome, entry.path, entry.line = head
    if extras:
        entry.anatomy = {"system": 3, "messages.user": 9}
        entry.context = {"max": 0.5, "model": "gpt-4o"}
        entry.stale = [{"cassette": "c.yaml", "drift": 1.0}]
    assert encode_test(entry) == _compact(entry.to_dict())
    for tally in [entry.total, *entry.models.values(), *entry.phases.values()]:
        assert encode_tally(tally) == _compact(tally.to_dict())


@pytest.mark.parametrize("amount", [-0.0, 1, float("nan"), 0.1 + 0.2])
def test_a_breakdown_equal_to_the_total_but_written_apart_is_written_as_itself(amount: float) -> None:
    """The encoder writes a breakdown equal to its test's total with the total's text; -0.0 and 1
    equal 0.0 and 1.0 but are written differently (and NaN equals nothing)."""
    total = Tally(calls=1, cost_usd=float(amount) if amount == amount else 0.0)
    entry = TestUsage("t.py::test_x", total=total)
    entry.phases["call"] = Tally(calls=1, cost_usd=amount)
    entry.models["openai/m"] = Tally(calls=1, live_cost_usd=amount, cost_usd=total.cost_usd)
    assert encode_test(entry) == _compact(entry.to_dict())


@given(
    st.lists(
        st.floats(allow_nan=False, allow_infinity=False)
        | st.sampled_from([0.0, -0.0, 0.1 + 0.2, 1e-11, 5e-11, 0.00042 * 3])
        | st.integers(-(10**6), 10**6),
        max_size=6,
    )
)
def test_remembered_money_text_is_rounded_money_text(amounts: list[float]) -> None:
    for amount in [*amounts, *amounts, *(float(a) for a in amounts)]:  # again: from memory
        assert _money(amount) == repr(round(amount, 10))


numbers = st.floats() | st.integers() | st.booleans() | st.none()


@given(
    st.builds(
        Verdict,
        name=st.text(),
        kind=st.text(),
        metric=st.text(),
        limit=numbers,
        actual=numbers,
        status=st.text(),
        message=st.text(),
        nodeid=st.text(),
        path=st.text(),
        line=numbers,
    )
)
def test_the_fast_verdict_encoder_writes_what_json_dumps_would(verdict: Verdict) -> None:
    assert encode_verdict(verdict) == _compact(verdict.to_dict())


def test_the_artifact_reads_back_as_the_run_it_was_written_from() -> None:
    run = Run()
    for index, call in enumerate(
        Call(f"t.py::test_{i % 3}", "call", "openai", "openai.chat", "h", "gpt-4o", Usage(10 + i, 0, 0, 2))
        for i in range(9)
    ):
        run.usage_for(call.owner).add_call(dataclasses.replace(call, cost_usd=index / 7))
    run.usage_for("t.py::test_none")
    assert json.loads(dump_run(run)) == json.loads(json.dumps(run.to_dict()))


def test_the_artifact_is_written_in_pieces_and_never_half(tmp_path: Path) -> None:
    """write_run streams the text dump_run returns; a failure mid-way leaves the last file whole."""
    run = Run()
    for i in range(50):
        run.usage_for(f"t.py::test_{i}").add_call(
            Call(f"t.py::test_{i}", "call", "openai", "openai.chat", "h", "gpt-4o", Usage(10 + i, 0, 0, 2))
        )
    target = tmp_path / "run.json"
    write_run(target, run)
    assert target.read_text(encoding="utf-8") == dump_run(run)

    def broken() -> Iterator[str]:
        yield from list(iter_run(run))[:3]
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError):
        write_atomic(target, broken())
    assert target.read_text(encoding="utf-8") == dump_run(run)
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temporary file left behind


def test_a_finished_run_sums_totals_and_models_once_and_hands_out_copies() -> None:
    run = Run()
    call = Call("t.py::test_a", "call", "openai", "openai.chat", "h", "gpt-4o", Usage(10, 0, 0, 2))
    run.usage_for(call.owner).add_call(call)
    with run.finished():
        first = run.totals()
        first.calls += 100  # a caller's copy: the cached sum is not touched
        run.models()["openai/gpt-4o"].input_tokens += 100
        run.usage_for("t.py::test_b").add_call(call)  # not seen inside the block (finished)
        assert (run.totals().calls, run.models()["openai/gpt-4o"].input_tokens) == (1, 10)
    assert (run.totals().calls, run.models()["openai/gpt-4o"].input_tokens) == (2, 20)  # recomputed


@settings(max_examples=200, deadline=None)
@given(
    weights=st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 3), st.sampled_from([0.0, 0.5, 1.0])), max_size=150
    ),
    n=st.sampled_from([0, 1, 3, 5, 99, 100, 200]),
)
def test_the_heaviest_few_are_the_head_of_the_whole_ranking(
    weights: list[tuple[int, int, float]], n: int
) -> None:
    """``heaviest(n)`` takes a heap for a few and a sort for many: both give the head of the one
    ranking (tokens, then cost, then node id), ties included; tests without calls are left out."""
    run = Run()
    for index, (calls, tokens, cost) in enumerate(weights):
        entry = run.usage_for(f"t.py::test_{index % 7}[{index}]")
        entry.total = Tally(calls=calls, input_tokens=tokens, cost_usd=cost)
    ranking = sorted(
        (t for t in run.tests.values() if t.total.calls),
        key=lambda t: (-t.total.total_tokens, -t.total.cost_usd, t.nodeid),
    )
    assert [t.nodeid for t in run.heaviest(n)] == [t.nodeid for t in ranking[:n]]


def test_a_finished_run_holds_off_the_garbage_collector_and_gives_it_back() -> None:
    """The reports are written without cyclic collections (each scans the whole heap); the
    collector's state is given back whatever happens in the block, and one the caller switched off
    stays off."""
    run = Run()
    assert gc.isenabled()
    with run.finished():
        assert not gc.isenabled()
        with run.finished():  # nested: still off, and not switched on by the inner block's end
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ZeroDivisionError), run.finished():
        1 / 0  # noqa: B018
    assert gc.isenabled()
    assert run._aggregates is None
    gc.disable()
    try:
        with run.finished():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def _rich_run() -> Run:
    """A run with every kind of entry and section the artifact has: one-phase and many-phase tests,
    several models, every caveat, markers, request inspection, fixtures, issues, verdicts and a
    comparison."""
    run = Run(meta={"started": "2026-12-01T00:00:00Z", "branch": "m\u00e9t\u00e9o"})

    def call(owner: str, phase: str = "call", **kwargs: Any) -> None:
        fields: dict[str, Any] = {"provider": "openai", "api": "openai.chat", "host": "h", "model": "gpt-4o"}
        fields.update(kwargs)
        kind = "test" if "::" in owner else "fixture"
        run.usage_for(owner, kind).add_call(Call(owner, phase, **fields))

    call("t.py::test_plain", usage=Usage(120, 20, 0, 30, 0), cost_usd=0.00042, source="replayed")
    for phase, model in (("setup", "gpt-4o"), ("call", "gpt-4o-mini"), ("teardown", "gpt-4o")):
        call('t.py::test_many[a|"b"]', phase, model=model, usage=Usage(50, 0, 10, 5, 2), cost_usd=0.1 + 0.2)
    call("t.py::test_caveats", usage=Usage(10, 0, 0, 1, 0), cost_usd=None, estimated=True)
    call("t.py::test_caveats", source="manual", usage=Usage(7, 0, 0, 7, 0), cost_usd=1e-11)
    call("t.py::test_caveats", state=CallState.UNPARSED, detail="not JSON")
    call("t.py::test_caveats", state=CallState.FAILED, status_code=500)
    call("t.py::test_caveats", state=CallState.UNMETERED, provider="anthropic", model="claude-x")
    call("t.py::test_caveats", model="gpt-4o-mini", usage=Usage(3, 0, 0, 0, 0), cost_usd=0.5, part=True)
    call("<session fixture corpus>", "setup", usage=Usage(1000, 0, 0, 0, 0), cost_usd=0.02)
    run.usage_for("t.py::test_no_llm").outcome = "passed"
    entry = run.tests["t.py::test_plain"]
    entry.markers, entry.path, entry.line, entry.outcome = ("slow", "n\u00e4me"), "t.py", 3, "passed"
    entry.anatomy = {"system": 40, "messages.user": 80, "peak:system": 40}
    entry.context = {"max": 0.25, "model": "gpt-4o", "warned_calls": 0}
    entry.stale = [{"cassette": "c.yaml", "drift": 1.5}]
    run.issues.append(dict.fromkeys(("test", "phase", "provider", "api", "model", "state", "detail"), "x"))
    run.verdicts += [
        Verdict("session", "session", "total_tokens", 1000.0, 1517.0, "exceeded", "over", "", "", None),
        Verdict(
            "marker t.py::test_plain",
            "marker",
            "cost_usd",
            0.05,
            0.00042,
            "ok",
            "ok \u2713",
            "t.py::x",
            "t.py",
            3,
        ),
    ]
    run.comparison = baseline.compare(Run(), run)
    return run


def _plain_artifact(run: Run) -> str:
    """The artifact's layout written from ``run.to_dict()`` by the standard library alone: small
    sections indented, the big collections one compact entry per line."""
    one_per_line = {"models", "providers", "files", "markers", "tests", "issues", "verdicts"}
    sections = []
    for key, value in run.to_dict().items():
        head = f"  {json.dumps(key, ensure_ascii=False)}: "
        if key in one_per_line and value:
            compact = functools.partial(json.dumps, ensure_ascii=False, separators=(",", ":"))
            if isinstance(value, dict):
                lines = [f"    {compact(k)}: {compact(v)}" for k, v in value.items()]
                sections.append(head + "{\n" + ",\n".join(lines) + "\n  }")
            else:
                sections.append(head + "[\n" + ",\n".join(f"    {compact(v)}" for v in value) + "\n  ]")
        else:
            sections.append(head + json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n  "))
    return "{\n" + ",\n".join(sections) + "\n}\n"


def test_the_fast_artifact_is_the_plain_data_byte_for_byte(tmp_path: Path) -> None:
    """The encoder's templates come from the fields the model declares once: what it writes is,
    byte for byte, ``run.to_dict()`` written by ``json`` in the artifact's layout."""
    run = _rich_run()
    assert run.tests["t.py::test_caveats"].total.caveats is not None  # the long template is used
    assert len(run.tests['t.py::test_many[a|"b"]'].phases) == 3
    write_run(tmp_path / "run.json", run)
    assert (tmp_path / "run.json").read_text(encoding="utf-8") == _plain_artifact(run)
    reread = load_run(tmp_path / "run.json")
    assert dump_run(reread) == _plain_artifact(reread) == _plain_artifact(run)


def test_a_tally_is_written_with_the_declared_fields_in_their_order() -> None:
    tally = _rich_run().tests["t.py::test_caveats"].total
    assert list(tally.to_dict()) == [field.name for field in TALLY_FIELDS]
    assert list(json.loads(encode_tally(tally))) == [field.name for field in TALLY_FIELDS]
    assert list(json.loads(encode_tally(Tally(calls=1)))) == [field.name for field in TALLY_FIELDS]
