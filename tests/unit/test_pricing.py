"""Prices: genai-prices cross-checks, overrides, aliases, unknown prices, provenance.

Prices in real sessions: sessions/test_pricing_session.py.
"""

from __future__ import annotations

import random
import textwrap
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import pytest

from pytest_tokenbudget.config import ConfigError, resolve
from pytest_tokenbudget.model import Call, Usage

# _genai_quote (private): the one genai-prices lookup, cross-checked against genai-prices' calc_price
from pytest_tokenbudget.pricing.prices import Pricer, Rates, _genai_quote, input_cost, merge_provenance

genai_prices = pytest.importorskip("genai_prices")
from genai_prices import Usage as PricesUsage  # noqa: E402
from genai_prices import calc_price  # noqa: E402


def _reference(usage: Usage, model: str, provider: str) -> float:
    """genai-prices' own answer for the same usage."""
    prices_usage = PricesUsage(
        input_tokens=usage.input_tokens,
        cache_read_tokens=usage.cached_input_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        output_tokens=usage.output_tokens,
    )
    return float(calc_price(prices_usage, model, provider_id=provider).total_price)


def _pricer(table: str) -> Pricer:
    data = textwrap.dedent(table)
    import tomllib

    settings = resolve(tomllib.loads(data)["tool"]["tokenbudget"], {}, pyproject=Path("p.toml"), root=Path())
    return Pricer.from_settings(settings)


# -- genai-prices ---------------------------------------------------------------------------------


def test_openai_cached_input_at_its_own_rate() -> None:
    usage = Usage(input_tokens=10_000, cached_input_tokens=4_000, output_tokens=500, reasoning_tokens=200)
    cost = Pricer().cost_of("openai", "gpt-4o-mini", usage, host="api.openai.com")
    # 6,000 × $0.15 + 4,000 × $0.075 + 500 × $0.60 per million (reasoning is part of output)
    assert cost == pytest.approx(0.0015)
    assert cost == pytest.approx(_reference(usage, "gpt-4o-mini", "openai"), abs=1e-12)


def test_anthropic_cache_read_and_write_at_their_own_rates() -> None:
    usage = Usage(input_tokens=10_000, cached_input_tokens=6_000, cache_write_tokens=3_000, output_tokens=800)
    cost = Pricer().cost_of("anthropic", "claude-sonnet-4-5", usage)
    # 1,000 × $3 + 6,000 × $0.30 + 3,000 × $3.75 + 800 × $15 per million
    assert cost == pytest.approx(0.02805)
    assert cost == pytest.approx(_reference(usage, "claude-sonnet-4-5", "anthropic"), abs=1e-12)


def test_gemini_and_vertex_use_googles_prices() -> None:
    usage = Usage(input_tokens=2_000, cached_input_tokens=1_000, output_tokens=300)
    expected = _reference(usage, "gemini-2.0-flash", "google")
    pricer = Pricer()
    assert pricer.cost_of("google", "gemini-2.0-flash", usage) == pytest.approx(expected, abs=1e-12)
    assert pricer.cost_of("google-vertex", "gemini-2.0-flash", usage) == pytest.approx(expected, abs=1e-12)


def test_tiered_prices_go_through_genai_prices() -> None:
    """Above 200k input tokens Claude Sonnet 4.5 costs more: the tier applies to the whole call."""
    small, large = (
        Usage(input_tokens=100_000, output_tokens=1_000),
        Usage(input_tokens=300_000, output_tokens=1_000),
    )
    pricer = Pricer()
    assert pricer.cost_of("anthropic", "claude-sonnet-4-5", small) == pytest.approx(0.315)
    assert pricer.cost_of("anthropic", "claude-sonnet-4-5", large) == pytest.approx(
        _reference(large, "claude-sonnet-4-5", "anthropic"), abs=1e-12
    )
    assert pricer.cost_of("anthropic", "claude-sonnet-4-5", large) > 3 * 0.3  # not the base rate


@pytest.mark.parametrize(
    ("provider", "model"), [("anthropic", "claude-sonnet-4-5"), ("google", "gemini-2.5-pro")]
)
def test_tiered_prices_are_resolved_once_per_tier_and_agree_at_the_cliff(provider: str, model: str) -> None:
    """A tiered model is priced by flat rates per tier, made once: never genai-prices' calculation
    per call, and the same numbers on both sides of every tier start."""
    quote = _genai_quote(provider, model, datetime.now(tz=UTC))
    assert quote is not None
    assert quote.tiers is not None
    assert quote.model_price is None
    for start in quote.tiers.starts:
        for total in (start - 1, start, start + 1, 2 * start):
            usage = Usage(input_tokens=total, cached_input_tokens=total // 4, output_tokens=777)
            assert quote.cost(usage) == pytest.approx(_reference(usage, model, provider), rel=1e-12)


def test_every_genai_prices_model_is_priced_as_genai_prices_prices_it() -> None:
    """The fast path (flat rates applied in Python) agrees with genai-prices across its catalogue."""
    from genai_prices import data_snapshot

    rng = random.Random(7)
    now = datetime.now(tz=UTC)
    checked = 0
    for provider in data_snapshot.get_snapshot().providers:
        for model in provider.models:
            quote = _genai_quote(provider.id, model.id, now)
            if quote is None:
                continue
            total = rng.randint(0, 400_000)
            cached = rng.randint(0, total)
            usage = Usage(total, cached, rng.randint(0, total - cached), rng.randint(0, 8_000), 0)
            prices_usage = PricesUsage(
                input_tokens=usage.input_tokens,
                cache_read_tokens=usage.cached_input_tokens,
                cache_write_tokens=usage.cache_write_tokens,
                output_tokens=usage.output_tokens,
            )
            try:
                reference = float(model.get_prices(now).calc_price(prices_usage)["total_price"])
            except (ValueError, LookupError):
                continue  # a price genai-prices itself cannot apply to plain token counts
            assert quote.cost(usage) == pytest.approx(reference, rel=1e-9, abs=1e-12), (provider.id, model.id)
            checked += 1
    assert checked > 2_000


def test_provider_from_the_host_azure_bedrock_and_compatible_servers() -> None:
    usage = Usage(input_tokens=1_000, output_tokens=100)
    pricer = Pricer()
    assert pricer.cost_of("azure", "gpt-4o", usage) == pytest.approx(0.0035)
    assert pricer.cost_of("bedrock", "anthropic.claude-3-haiku-20240307-v1:0", usage) == pytest.approx(
        0.000375
    )
    # a proxy or gateway on another host serving a known model: priced by the model's name
    assert pricer.cost_of("openai-compatible", "gpt-4o-mini", usage) == pytest.approx(0.00021)


def test_unknown_models_and_local_servers_have_no_price_and_are_listed() -> None:
    usage = Usage(input_tokens=1_000, output_tokens=100)
    pricer = Pricer()
    assert pricer.cost_of("openai", "ft:gpt-4o-mini:acme::x1", usage) is None
    assert pricer.cost_of("openai", "ft:gpt-4o-mini:acme::x1", usage) is None
    assert pricer.cost_of("ollama", "llama3.2", usage) is None  # never a hosted model's price
    assert pricer.cost_of("openai-compatible", "my-private-model", usage) is None
    assert pricer.unknown() == [
        {"provider": "openai", "model": "ft:gpt-4o-mini:acme::x1", "calls": 2},
        {"provider": "ollama", "model": "llama3.2", "calls": 1},
        {"provider": "openai-compatible", "model": "my-private-model", "calls": 1},
    ]


def test_a_genai_prices_entry_without_prices_is_unknown_not_zero() -> None:
    """genai-prices lists some models with no price at all (``cerebras/qwen-3-coder-480b``, the
    ``:free`` tiers): their cost is unknown and they are listed, unless an override says 0."""
    from genai_prices import data_snapshot

    _, info = data_snapshot.get_snapshot().find_provider_model("qwen-3-coder-480b", None, "cerebras", None)
    assert not {k: v for k, v in vars(info.get_prices(datetime.now(tz=UTC))).items() if v is not None}
    usage = Usage(input_tokens=1_000, output_tokens=100)
    pricer = Pricer()
    assert pricer.cost_of("cerebras", "qwen-3-coder-480b", usage) is None
    assert pricer.cost_of("openrouter", "qwen/qwen3-coder:free", usage) is None
    assert pricer.unknown() == [
        {"provider": "cerebras", "model": "qwen-3-coder-480b", "calls": 1},
        {"provider": "openrouter", "model": "qwen/qwen3-coder:free", "calls": 1},
    ]
    free = _pricer(
        """
        [tool.tokenbudget.prices]
        "cerebras/qwen-3-coder-480b" = { input = 0, output = 0 }
        """
    )
    assert free.cost_of("cerebras", "qwen-3-coder-480b", usage) == 0.0
    assert free.unknown() == []


def test_listener_keeps_a_hooks_price_and_leaves_usage_free_calls_alone() -> None:
    pricer = Pricer()
    hooked = Call(
        "t", "call", "openai", "openai.chat", "h", "gpt-4o-mini", Usage(10, 0, 0, 10, 0), cost_usd=0.5
    )
    empty = Call("t", "call", "openai", "openai.chat", "h", "gpt-4o-mini", Usage())
    plain = Call("t", "call", "openai", "openai.chat", "h", "gpt-4o-mini", Usage(1_000_000, 0, 0, 0, 0))
    for call in (hooked, empty, plain):
        pricer.price(call)
    assert (hooked.cost_usd, empty.cost_usd, plain.cost_usd) == (0.5, None, pytest.approx(0.15))


def test_input_cost_for_tokenbudget_estimate() -> None:
    assert input_cost("gpt-4o-mini", 1_000_000) == pytest.approx(0.15)
    assert input_cost("no-such-model-anywhere", 1_000) is None


# -- [tool.tokenbudget.prices] and .aliases -----------------------------------------------------


def test_overrides_beat_genai_prices_exact_then_globs_in_order() -> None:
    pricer = _pricer(
        """
        [tool.tokenbudget.prices]
        "gpt-4o-mini" = { input = 1, output = 2 }
        "ft:gpt-4o-mini:acme::*" = { input = 0.3, output = 1.2, cached-input = 0.15, cache-write = 0.375 }
        "ft:*" = { input = 9, output = 9 }
        "local/*" = { input = 0, output = 0 }
        """
    )
    usage = Usage(
        input_tokens=1_000_000,
        cached_input_tokens=200_000,
        cache_write_tokens=100_000,
        output_tokens=1_000_000,
    )
    assert pricer.cost_of("openai", "gpt-4o-mini", usage) == pytest.approx(3.0)  # not genai-prices' 0.75
    assert pricer.cost_of("openai", "ft:gpt-4o-mini:acme::x1", usage) == pytest.approx(
        0.7 * 0.3 + 0.2 * 0.15 + 0.1 * 0.375 + 1.2
    )
    assert pricer.cost_of("openai", "ft:gpt-4.1:other::y", usage) == pytest.approx(18.0)
    assert pricer.cost_of("local", "llama3", usage) == 0.0  # free, and known to be free
    assert pricer.unknown() == []
    assert pricer.provenance()["calls_by_source"] == {"pyproject": 4}


def test_cache_rates_default_to_the_input_rate() -> None:
    rates = Rates(input=2.0, output=4.0)
    usage = Usage(
        input_tokens=1_000_000, cached_input_tokens=500_000, cache_write_tokens=100_000, output_tokens=0
    )
    assert rates.cost(usage) == pytest.approx(2.0)


def test_aliases_map_deployments_to_priced_models() -> None:
    pricer = _pricer(
        """
        [tool.tokenbudget.aliases]
        "prod-chat" = "gpt-4o-mini"
        "team-*" = "openai/gpt-4o"
        "azure/eu-deploy" = "my-model"
        [tool.tokenbudget.prices]
        "my-model" = { input = 5, output = 5 }
        """
    )
    usage = Usage(input_tokens=1_000_000, output_tokens=0)
    assert pricer.cost_of("azure", "prod-chat", usage) == pytest.approx(0.15)
    assert pricer.cost_of("openai-compatible", "team-large", usage) == pytest.approx(2.5)
    assert pricer.cost_of("azure", "eu-deploy", usage) == pytest.approx(5.0)
    assert pricer.cost_of("openai", "eu-deploy", usage) is None  # the alias names its provider


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('prices = "cheap"', "[tool.tokenbudget] prices: expected a table of model"),
        ('[tool.tokenbudget.prices]\n"m" = 3', "[tool.tokenbudget] prices.m: expected a table like"),
        (
            '[tool.tokenbudget.prices]\n"m" = { input = 1, output = 1, cached = 1 }',
            "[tool.tokenbudget] prices.m: unknown field 'cached'; expected input, output, cached-input",
        ),
        ('[tool.tokenbudget.prices]\n"m" = { input = 1 }', "prices.m: missing 'output'"),
        (
            '[tool.tokenbudget.prices]\n"ft:x" = { input = -1, output = 1 }',
            '[tool.tokenbudget] prices."ft:x".input: expected USD per million tokens, a number >= 0, got -1',
        ),
        (
            '[tool.tokenbudget.prices]\nm = { input = "1", output = 1 }',
            "prices.m.input: expected USD per million",
        ),
        ("[tool.tokenbudget.aliases]\nx = 3", "[tool.tokenbudget] aliases.x: expected a model name"),
    ],
)
def test_bad_price_tables_name_file_key_and_expectation(table: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _pricer("[tool.tokenbudget]\n" + table)
    assert str(info.value).startswith("p.toml: ")
    assert message in str(info.value)


# -- provenance -------------------------------------------------------------------------------------


def test_provenance_names_version_data_date_and_counts() -> None:
    pricer = Pricer()
    pricer.cost_of("openai", "gpt-4o-mini", Usage(input_tokens=10))
    info = pricer.provenance()
    assert info["source"] == "genai-prices"
    assert info["version"] == version("genai-prices")
    assert datetime.fromisoformat(info["data_date"]).date() <= datetime.now(tz=UTC).date()
    assert info["calls_by_source"] == {"genai-prices": 1}


def test_merge_provenance_sums_workers() -> None:
    p_m, q_n = {"provider": "p", "model": "m"}, {"provider": "q", "model": "n"}
    a = {"version": "1", "calls_by_source": {"genai-prices": 2}, "unknown": [{**p_m, "calls": 1}]}
    b = {
        "version": "1",
        "calls_by_source": {"genai-prices": 1, "pyproject": 3},
        "unknown": [{**p_m, "calls": 2}, {**q_n, "calls": 1}],
        "data_date": "2026-11-09",
    }
    merged = merge_provenance([a, b])
    assert merged["calls_by_source"] == {"genai-prices": 3, "pyproject": 3}
    assert merged["unknown"] == [
        {"provider": "p", "model": "m", "calls": 3},
        {"provider": "q", "model": "n", "calls": 1},
    ]
    assert merged["data_date"] == "2026-11-09"


# -- real sessions ---------------------------------------------------------------------------------
