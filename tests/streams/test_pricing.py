"""The price book: what a generation costs, from the operator's price file or from genai-prices."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import genai_prices
import pytest

from tracebus.schemas import CostSource, Usage
from tracebus.streams.pricing import (
    PriceBook,
    PriceFileError,
    PriceSchedule,
    find_in_catalogue,
    load_overrides,
)

NOON_UTC = 1_748_779_200_000_000_000  # 2025-06-01T12:00:00Z
EVENING_UTC = NOON_UTC + 8 * 3600 * 1_000_000_000  # 20:00Z, DeepSeek's off-peak hours
MTOK = 1_000_000


@pytest.fixture(scope="module")
def catalogue_only() -> PriceBook:
    return PriceBook.load(None)


def book_with(tmp_path: Path, toml: str) -> PriceBook:
    path = tmp_path / "prices.toml"
    path.write_text(toml, encoding="utf-8")
    return PriceBook.load(path)


def catalogue_says(
    provider: str, model: str, usage: Usage, at_unix_nano: int
) -> genai_prices.types.PriceCalculation:
    """genai-prices' own calculation of the same usage, as an oracle for our arithmetic."""
    same_usage = genai_prices.Usage(
        input_tokens=usage.input_tokens,
        cache_read_tokens=usage.input_cache_read_tokens,
        cache_write_tokens=usage.input_cache_creation_tokens,
        input_audio_tokens=usage.input_audio_tokens,
        output_tokens=usage.output_tokens,
        output_reasoning_tokens=usage.output_reasoning_tokens,
        output_audio_tokens=usage.output_audio_tokens,
    )
    moment = datetime.fromtimestamp(at_unix_nano / 1e9, tz=UTC)
    return genai_prices.calc_price(
        same_usage, model, provider_id=provider, genai_request_timestamp=moment
    )


# Catalogue prices, checked against the providers' published price lists.


def test_gpt_4o_costs_2_50_in_and_10_out_per_million_with_cache_reads_at_1_25(catalogue_only):
    usage = Usage(input_tokens=1_000_000, input_cache_read_tokens=400_000, output_tokens=100_000)

    priced = catalogue_only.cost("openai", "gpt-4o", usage, NOON_UTC)

    assert priced is not None
    assert priced.source == CostSource.CATALOGUE
    assert priced.cost.input_cache_read == pytest.approx(0.50)  # 400k at $1.25
    assert priced.cost.input == pytest.approx(1.50 + 0.50)  # 600k uncached at $2.50, plus reads
    assert priced.cost.output == pytest.approx(1.00)  # 100k at $10
    assert priced.cost.total == pytest.approx(3.00)


def test_claude_sonnet_4_prices_cache_writes_at_3_75_and_reads_at_0_30(catalogue_only):
    usage = Usage(
        input_tokens=1_000_000,
        input_cache_read_tokens=500_000,
        input_cache_creation_tokens=100_000,
        output_tokens=1_000_000,
    )

    priced = catalogue_only.cost("anthropic", "claude-sonnet-4", usage, NOON_UTC)

    assert priced is not None
    assert priced.cost.input_cache_read == pytest.approx(0.15)
    assert priced.cost.input_cache_creation == pytest.approx(0.375)
    assert priced.cost.input == pytest.approx(400_000 * 3 / MTOK + 0.15 + 0.375)
    assert priced.cost.output == pytest.approx(15.0)


def test_gemini_2_5_pro_charges_the_long_context_rate_on_all_tokens_above_200k_input(
    catalogue_only,
):
    short = catalogue_only.cost(
        "google", "gemini-2.5-pro", Usage(input_tokens=200_000, output_tokens=1000), NOON_UTC
    )
    long = catalogue_only.cost(
        "google", "gemini-2.5-pro", Usage(input_tokens=200_001, output_tokens=1000), NOON_UTC
    )

    assert short is not None and long is not None
    assert short.cost.input == pytest.approx(200_000 * 1.25 / MTOK)
    assert short.cost.output == pytest.approx(1000 * 10 / MTOK)
    assert long.cost.input == pytest.approx(200_001 * 2.50 / MTOK)
    assert long.cost.output == pytest.approx(1000 * 15 / MTOK)


@pytest.mark.parametrize(
    ("provider", "model", "usage", "at"),
    [
        (
            "openai",
            "gpt-4o",
            Usage(
                input_tokens=12_000,
                input_cache_read_tokens=3000,
                output_tokens=800,
                output_reasoning_tokens=300,
            ),
            NOON_UTC,
        ),
        (
            "anthropic",
            "claude-3-5-sonnet",
            Usage(
                input_tokens=9000,
                input_cache_read_tokens=4000,
                input_cache_creation_tokens=2000,
                output_tokens=700,
            ),
            NOON_UTC,
        ),
        (
            "google",
            "gemini-2.5-pro",
            Usage(input_tokens=350_000, input_cache_read_tokens=100_000, output_tokens=5000),
            NOON_UTC,
        ),
        (
            "google",
            "gemini-2.5-flash",
            Usage(input_tokens=5000, input_audio_tokens=2000, output_tokens=400),
            NOON_UTC,
        ),
        (
            "perplexity",
            "sonar-deep-research",
            Usage(input_tokens=1000, output_tokens=5000, output_reasoning_tokens=4000),
            NOON_UTC,
        ),
        ("deepseek", "deepseek-chat", Usage(input_tokens=5000, output_tokens=500), NOON_UTC),
        ("deepseek", "deepseek-chat", Usage(input_tokens=5000, output_tokens=500), EVENING_UTC),
    ],
)
def test_catalogue_costs_agree_with_genai_prices_own_calculation(
    catalogue_only, provider, model, usage, at
):
    expected = catalogue_says(provider, model, usage, at)

    priced = catalogue_only.cost(provider, model, usage, at)

    assert priced is not None
    assert priced.cost.input == pytest.approx(float(expected.input_price))
    assert priced.cost.output == pytest.approx(float(expected.output_price))
    assert priced.cost.total == pytest.approx(float(expected.total_price))


def test_a_price_schedule_follows_the_moment_of_the_call(catalogue_only):
    usage = Usage(input_tokens=1_000_000, output_tokens=0)

    peak = catalogue_only.cost("deepseek", "deepseek-chat", usage, NOON_UTC)
    off_peak = catalogue_only.cost("deepseek", "deepseek-chat", usage, EVENING_UTC)

    assert peak is not None and off_peak is not None
    assert off_peak.cost.total < peak.cost.total


def test_parts_without_a_rate_of_their_own_are_priced_as_their_whole(catalogue_only):
    # gpt-4o lists no reasoning rate; gpt-4o-audio-preview lists no cache-read rate.
    reasoning = catalogue_only.cost(
        "openai", "gpt-4o", Usage(output_tokens=1000, output_reasoning_tokens=1000), NOON_UTC
    )
    cached = catalogue_only.cost(
        "openai",
        "gpt-4o-audio-preview",
        Usage(input_tokens=1000, input_cache_read_tokens=1000),
        NOON_UTC,
    )

    assert reasoning is not None and cached is not None
    assert reasoning.cost.output_reasoning == pytest.approx(1000 * 10 / MTOK)
    assert cached.cost.input_cache_read == pytest.approx(1000 * 2.5 / MTOK)


def test_reasoning_has_its_own_rate_where_the_catalogue_lists_one(catalogue_only):
    usage = Usage(output_tokens=1000, output_reasoning_tokens=1000)

    priced = catalogue_only.cost("perplexity", "sonar-deep-research", usage, NOON_UTC)

    assert priced is not None
    assert priced.cost.output_reasoning == pytest.approx(1000 * 3 / MTOK)  # not the $8 output


def test_cost_reports_exactly_the_parts_the_usage_reports(catalogue_only):
    priced = catalogue_only.cost(
        "openai", "gpt-4o", Usage(input_tokens=10, output_tokens=10), NOON_UTC
    )

    assert priced is not None
    assert priced.cost.model_dump(exclude_none=True).keys() == {"input", "output", "total"}


def test_a_per_request_fee_goes_in_other_outside_the_total(catalogue_only):
    priced = catalogue_only.cost(
        "perplexity", "sonar", Usage(input_tokens=1_000_000, output_tokens=0), NOON_UTC
    )

    assert priced is not None
    assert priced.cost.other == {"requests": pytest.approx(12 / 1000)}
    assert priced.cost.total == pytest.approx(1.0)


def test_a_model_listed_as_free_costs_nothing(catalogue_only):
    priced = catalogue_only.cost(
        "openai", "omni-moderation-latest", Usage(input_tokens=5000, output_tokens=0), NOON_UTC
    )

    assert priced is not None
    assert priced.cost.total == 0


# What is not priced: never a guess.


def test_an_unknown_model_has_no_price(catalogue_only):
    usage = Usage(input_tokens=10, output_tokens=10)

    assert catalogue_only.cost("openai", "gpt-nonexistent-9", usage, NOON_UTC) is None
    assert catalogue_only.cost(None, "my-finetune", usage, NOON_UTC) is None
    assert catalogue_only.cost("openai", None, usage, NOON_UTC) is None


def test_a_model_priced_by_the_second_or_character_has_no_token_price(catalogue_only):
    usage = Usage(input_tokens=10, output_tokens=10)

    assert catalogue_only.cost("openai", "whisper-1", usage, NOON_UTC) is None
    assert catalogue_only.cost("openai", "tts-1", usage, NOON_UTC) is None


def test_usage_without_input_or_output_counts_has_no_price(catalogue_only):
    assert catalogue_only.cost("openai", "gpt-4o", Usage(total_tokens=500), NOON_UTC) is None


def test_parts_larger_than_their_whole_make_the_whole_their_sum(tmp_path):
    book = book_with(
        tmp_path,
        """
        [[price]]
        model = "acme-1"
        input_per_mtok = 1
        output_per_mtok = 2
        input_cache_read_per_mtok = 0.5
        """,
    )
    usage = Usage(input_tokens=100, input_cache_read_tokens=300, output_reasoning_tokens=50)

    priced = book.cost(None, "acme-1", usage, NOON_UTC)

    assert priced is not None
    assert priced.cost.input == pytest.approx(300 * 0.5 / MTOK)
    assert priced.cost.output == pytest.approx(50 * 2 / MTOK)


# Providers: which catalogue entry a (provider, model) pair finds.


def test_without_a_provider_the_catalogue_recognises_the_model_name(catalogue_only):
    usage = Usage(input_tokens=100_000, output_tokens=0)

    gpt = catalogue_only.cost(None, "gpt-4o", usage, NOON_UTC)
    claude = catalogue_only.cost(None, "claude-sonnet-4", usage, NOON_UTC)
    gemini = catalogue_only.cost(None, "gemini-2.5-pro", usage, NOON_UTC)

    assert gpt is not None and claude is not None and gemini is not None
    totals = (gpt.cost.total, claude.cost.total, gemini.cost.total)
    assert totals == pytest.approx((0.25, 0.30, 0.125))  # $2.50, $3, $1.25 per MTok
    assert catalogue_only.cost(None, "llama-3-70b", usage, NOON_UTC) is None  # claimed by none


def test_providers_are_found_by_alias_and_resellers_by_what_they_resell(catalogue_only):
    usage = Usage(input_tokens=100_000, output_tokens=0)

    vertex = catalogue_only.cost("gcp.vertex_ai", "gemini-2.5-pro", usage, NOON_UTC)
    azure = catalogue_only.cost("azure", "gpt-4o", usage, NOON_UTC)

    assert vertex is not None and azure is not None
    assert (vertex.cost.total, azure.cost.total) == pytest.approx((0.125, 0.25))


def test_an_unrecognised_provider_prices_nothing_even_for_a_familiar_model(catalogue_only):
    usage = Usage(input_tokens=10, output_tokens=10)

    assert catalogue_only.cost("my-gateway", "gpt-4o", usage, NOON_UTC) is None


def test_model_names_ignore_case_and_dated_snapshots_find_their_model(catalogue_only):
    usage = Usage(input_tokens=1_000_000, output_tokens=0)

    for model in ("GPT-4o", "gpt-4o-2024-08-06"):
        priced = catalogue_only.cost("openai", model, usage, NOON_UTC)
        assert priced is not None and priced.cost.total == pytest.approx(2.5), model


# The price file.


def test_the_price_file_replaces_a_catalogue_model_and_adds_an_unknown_one(tmp_path):
    book = book_with(
        tmp_path,
        """
        [[price]]
        model = "gpt-4o"
        input_per_mtok = 1
        output_per_mtok = 4

        [[price]]
        model = "acme-llm-*"
        input_per_mtok = 0.5
        output_per_mtok = 1.5
        """,
    )
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)

    replaced = book.cost("openai", "gpt-4o", usage, NOON_UTC)
    added = book.cost("acme", "acme-llm-large", usage, NOON_UTC)
    untouched = book.cost("openai", "gpt-4o-mini", usage, NOON_UTC)

    assert replaced is not None and added is not None and untouched is not None
    assert (replaced.source, replaced.cost.total) == (CostSource.OVERRIDE, pytest.approx(5.0))
    assert (added.source, added.cost.total) == (CostSource.OVERRIDE, pytest.approx(2.0))
    assert untouched.source == CostSource.CATALOGUE


def test_patterns_are_globs_over_the_whole_name_ignoring_case(tmp_path):
    book = book_with(
        tmp_path,
        """
        [[price]]
        model = "acme-?-*"
        input_per_mtok = 1
        output_per_mtok = 1
        """,
    )
    usage = Usage(input_tokens=1, output_tokens=1)

    assert book.cost(None, "acme-7-chat", usage, NOON_UTC) is not None
    assert book.cost(None, "ACME-7-Chat", usage, NOON_UTC) is not None
    assert book.cost(None, "acme-77-chat", usage, NOON_UTC) is None  # ? is one character
    assert book.cost(None, "my-acme-7-chat", usage, NOON_UTC) is None  # whole name only


def test_the_first_matching_entry_wins(tmp_path):
    book = book_with(
        tmp_path,
        """
        [[price]]
        model = "acme-mini*"
        input_per_mtok = 1
        output_per_mtok = 0

        [[price]]
        model = "acme-*"
        input_per_mtok = 10
        output_per_mtok = 0
        """,
    )
    usage = Usage(input_tokens=1_000_000, output_tokens=0)

    mini = book.cost(None, "acme-mini-2", usage, NOON_UTC)
    large = book.cost(None, "acme-large", usage, NOON_UTC)

    assert mini is not None and large is not None
    assert (mini.cost.total, large.cost.total) == pytest.approx((1.0, 10.0))


def test_an_entry_with_a_provider_applies_to_that_provider_only(tmp_path):
    book = book_with(
        tmp_path,
        """
        [[price]]
        model = "gpt-4o"
        provider = "Azure"
        input_per_mtok = 2
        output_per_mtok = 8
        """,
    )
    usage = Usage(input_tokens=1_000_000, output_tokens=0)

    azure = book.cost("azure", "gpt-4o", usage, NOON_UTC)
    openai = book.cost("openai", "gpt-4o", usage, NOON_UTC)
    unnamed = book.cost(None, "gpt-4o", usage, NOON_UTC)

    assert azure is not None and openai is not None and unnamed is not None
    assert (azure.source, azure.cost.total) == (CostSource.OVERRIDE, pytest.approx(2.0))
    assert (openai.source, unnamed.source) == (CostSource.CATALOGUE, CostSource.CATALOGUE)


def test_an_entry_prices_parts_at_their_rate_or_else_at_the_whole_rate(tmp_path):
    book = book_with(
        tmp_path,
        """
        [[price]]
        model = "with-cache-rate"
        input_per_mtok = 2
        output_per_mtok = 8
        input_cache_read_per_mtok = 0.5
        output_reasoning_per_mtok = 4

        [[price]]
        model = "without"
        input_per_mtok = 2
        output_per_mtok = 8
        """,
    )
    usage = Usage(
        input_tokens=1000,
        input_cache_read_tokens=600,
        output_tokens=100,
        output_reasoning_tokens=40,
    )

    with_rate = book.cost(None, "with-cache-rate", usage, NOON_UTC)
    without = book.cost(None, "without", usage, NOON_UTC)

    assert with_rate is not None and without is not None
    assert with_rate.cost.input_cache_read == pytest.approx(600 * 0.5 / MTOK)
    assert with_rate.cost.input == pytest.approx((400 * 2 + 600 * 0.5) / MTOK)
    assert with_rate.cost.output == pytest.approx((60 * 8 + 40 * 4) / MTOK)
    assert without.cost.input_cache_read == pytest.approx(600 * 2 / MTOK)
    assert without.cost.input == pytest.approx(1000 * 2 / MTOK)
    assert without.cost.output_reasoning == pytest.approx(40 * 8 / MTOK)


def test_an_empty_price_file_leaves_the_catalogue(tmp_path):
    assert load_overrides(_written(tmp_path, "")) == ()


def _written(tmp_path: Path, toml: str) -> Path:
    path = tmp_path / "prices.toml"
    path.write_text(toml, encoding="utf-8")
    return path


GOOD_ENTRY = 'model = "a"\ninput_per_mtok = 1\noutput_per_mtok = 1\n'


@pytest.mark.parametrize(
    ("second_entry", "field", "says"),
    [
        ('model = "b"\ninput_per_mtok = 1\n', "output_per_mtok", "required"),
        ('model = "b"\ninput_per_mtok = -1\noutput_per_mtok = 1\n', "input_per_mtok", ">= 0"),
        ('model = "b"\ninput_per_mtok = "2.5"\noutput_per_mtok = 1\n', "input_per_mtok", "number"),
        ('model = "b"\ninput_per_mtok = true\noutput_per_mtok = 1\n', "input_per_mtok", "number"),
        ('model = "b"\ninput_per_mtok = inf\noutput_per_mtok = 1\n', "input_per_mtok", "finite"),
        ("input_per_mtok = 1\noutput_per_mtok = 1\n", "model", "required"),
        ('model = ""\ninput_per_mtok = 1\noutput_per_mtok = 1\n', "model", "required"),
        ('model = "b"\nprovider = 3\ninput_per_mtok = 1\noutput_per_mtok = 1\n', "provider", ""),
        (GOOD_ENTRY + "input_per_mtoks = 1\n", "input_per_mtoks", "unknown"),
    ],
)
def test_a_bad_entry_is_reported_with_file_entry_and_field(tmp_path, second_entry, field, says):
    path = _written(tmp_path, f"[[price]]\n{GOOD_ENTRY}\n[[price]]\n{second_entry}")

    with pytest.raises(PriceFileError) as raised:
        PriceBook.load(path)

    assert (raised.value.path, raised.value.index, raised.value.field) == (path, 2, field)
    assert f"{path}: [[price]] entry 2, field '{field}'" in str(raised.value)
    assert says in str(raised.value)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("[[price]\nmodel = 'a'\n", "not valid TOML"),
        ("price = 3\n", "array of tables"),
        ("[[prices]]\nmodel = 'a'\n", "unknown top-level key 'prices'"),
    ],
)
def test_a_bad_file_is_reported_with_its_name(tmp_path, content, says):
    path = _written(tmp_path, content)

    with pytest.raises(PriceFileError) as raised:
        load_overrides(path)

    assert str(raised.value).startswith(f"{path}: ")
    assert says in str(raised.value)


def test_a_missing_file_is_reported_with_its_name(tmp_path):
    path = tmp_path / "absent.toml"

    with pytest.raises(PriceFileError, match=r"absent\.toml: cannot be read"):
        PriceBook.load(path)


# The cache in front of the catalogue.


class CountingCatalogue:
    """The real catalogue lookup, counting the calls that reach it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str | None, str]] = []

    def __call__(self, provider: str | None, model: str) -> PriceSchedule | None:
        self.calls.append((provider, model))
        return find_in_catalogue(provider, model)


def test_each_model_is_looked_up_in_the_catalogue_once():
    catalogue = CountingCatalogue()
    book = PriceBook(catalogue=catalogue)
    usage = Usage(input_tokens=1000, output_tokens=100)

    first = book.cost("openai", "gpt-4o", usage, NOON_UTC)
    again = [book.cost("openai", "gpt-4o", usage, NOON_UTC + i) for i in range(5)]
    for _ in range(3):
        book.cost(None, "unknown-model", usage, NOON_UTC)

    assert catalogue.calls == [("openai", "gpt-4o"), (None, "unknown-model")]
    assert all(priced == first for priced in again)


def test_the_cache_is_bounded_and_forgets_the_least_recently_used_model():
    catalogue = CountingCatalogue()
    book = PriceBook(catalogue=catalogue, cache_size=2)
    usage = Usage(input_tokens=1000, output_tokens=100)

    for model in ("gpt-4o", "gpt-4o-mini", "gpt-4o", "claude-sonnet-4", "gpt-4o-mini"):
        book.cost(None, model, usage, NOON_UTC)

    assert [model for _, model in catalogue.calls] == [
        "gpt-4o",
        "gpt-4o-mini",
        "claude-sonnet-4",
        "gpt-4o-mini",  # evicted by claude-sonnet-4, as gpt-4o was used more recently
    ]


def test_models_of_the_price_file_never_reach_the_catalogue(tmp_path):
    catalogue = CountingCatalogue()
    overrides = load_overrides(
        _written(tmp_path, '[[price]]\nmodel = "gpt-4o"\ninput_per_mtok = 1\noutput_per_mtok = 1')
    )
    book = PriceBook(overrides, catalogue=catalogue)

    book.cost("openai", "gpt-4o", Usage(input_tokens=1, output_tokens=1), NOON_UTC)

    assert catalogue.calls == []
