"""The compact per-test tallies (one phase and one model share the test's total) add up exactly.

However calls are split — recorded in one place, spread over xdist workers and merged, written to
an artifact and read back — a test's totals, phases and models come out the same.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_tokenbudget.model import Call, Tally, TestUsage, Usage

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


def test_a_second_phase_gets_its_own_tally() -> None:
    usage = TestUsage("t.py::test_x")
    setup = Call("t", "setup", "openai", "openai.chat", "h", "m", Usage(input_tokens=10, output_tokens=1))
    call = Call("t", "call", "openai", "openai.chat", "h", "m", Usage(input_tokens=20, output_tokens=2))
    usage.add_call(setup)
    assert (usage.phase, dict(usage.phases)) == ("setup", {})  # no dict while there is one phase
    usage.add_call(call)
    assert usage.phase == ""
    assert {name: t.total_tokens for name, t in usage.phases.items()} == {"setup": 11, "call": 22}
    assert usage.total.total_tokens == 33
    assert usage.total.usage == Usage(input_tokens=30, output_tokens=3)
    assert Tally.from_dict(usage.total.to_dict()) == usage.total
