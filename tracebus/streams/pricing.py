"""Prices for the stream's cost enrichment: the operator's price file first, then genai-prices.

Price file (TOML, optional), a list of entries tried top to bottom; the first match wins::

    [[price]]
    model = "gpt-4o*"            # required: a glob over the whole model name
    provider = "azure"           # optional: the entry then applies to this provider only
    input_per_mtok = 2.5         # required, USD per million tokens
    output_per_mtok = 10         # required
    input_cache_read_per_mtok = 1.25      # optional: the parts of input and output below are
    input_cache_creation_per_mtok = 3.125 # priced at the input (or output) rate when absent
    input_audio_per_mtok = 40
    output_reasoning_per_mtok = 10
    output_audio_per_mtok = 80

Patterns are shell globs (`fnmatch`): `*` any run of characters, `?` one character, `[abc]` one
of a set; they must match the whole model name and ignore case. A `provider` compares to the
observation's provider ignoring case; an entry with a provider never matches an observation
without one. Entries of the file are counted from 1 in errors, as a reader counts them.

Catalogue rule: with a provider, the model must be listed by that provider, found by genai-prices
by id or alias (`google` also answers to `vertex`/`gemini`, `aws` to `bedrock`, ...) or by the
providers it resells (`azure` has OpenAI's models). An unrecognised provider prices nothing: its
prices are unknown even when the model name is familiar. Without a provider, the model name must
identify one, by the catalogue's own name patterns (`gpt-` is OpenAI, `claude` Anthropic, `gemini`
Google); names it claims for no provider (say `llama-3-70b`) are not priced.

Costs use the bucket meaning of `Usage`: a part of input (cache read, cache creation, audio) is
priced at its own rate when the model has one and at the input rate otherwise, and the rest of
input at the input rate; likewise for output. The parts are taken as disjoint (cached audio does
not exist for the contract). When the parts add up to more than their total, the app broke the
inclusive rule, and the total is taken to be the sum of its parts. A per-request fee goes in
`other["requests"]`, which is outside `total`, as `Cost` defines it.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import math
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from genai_prices import data_snapshot
from genai_prices.types import ModelInfo, ModelPrice, TieredPrices

from tracebus.schemas import Cost, CostSource

_TOKENS_PER_MTOK = 1_000_000
_NS_PER_S = 1_000_000_000
DEFAULT_CACHE_SIZE = 4096


class PriceFileError(ValueError):
    """A price file that cannot be used; says which file, entry (from 1) and field."""

    def __init__(
        self, path: Path, problem: str, *, index: int | None = None, field: str | None = None
    ) -> None:
        where = str(path)
        if index is not None:
            where += f": [[price]] entry {index}"
        if field is not None:
            where += f", field '{field}'"
        super().__init__(f"{where}: {problem}")
        self.path = path
        self.index = index
        self.field = field


class TokenCounts(Protocol):
    """The token buckets `charge` reads: a `Usage`, or anything with the same attributes."""

    @property
    def input_tokens(self) -> int | None: ...
    @property
    def input_cache_read_tokens(self) -> int | None: ...
    @property
    def input_cache_creation_tokens(self) -> int | None: ...
    @property
    def input_audio_tokens(self) -> int | None: ...
    @property
    def output_tokens(self) -> int | None: ...
    @property
    def output_reasoning_tokens(self) -> int | None: ...
    @property
    def output_audio_tokens(self) -> int | None: ...


class PricedCost(NamedTuple):
    """`fields` is the `Cost` as pydantic dumps it with `exclude_none`, which is what a document
    carries: building and dumping the model for every generation cost more than pricing it (a
    tuple, too, is built faster than a frozen dataclass)."""

    fields: dict[str, Any]
    source: CostSource

    @property
    def cost(self) -> Cost:
        return Cost(**self.fields)


@dataclass(frozen=True, slots=True)
class Rate:
    """USD per million tokens. Catalogue rates can step up with the request's input size: above a
    step's threshold of input tokens, its rate applies to all the tokens (the providers' rule)."""

    base: float
    steps: tuple[tuple[int, float], ...] = ()  # (more than this many input tokens, rate), rising

    def at(self, input_tokens: int) -> float:
        for threshold, rate in reversed(self.steps):
            if input_tokens > threshold:
                return rate
        return self.base


@dataclass(frozen=True, slots=True)
class BucketRates:
    """Every bucket's rate with fallbacks applied, for one input size."""

    input: float
    input_cache_read: float
    input_cache_creation: float
    input_audio: float
    output: float
    output_reasoning: float
    output_audio: float


@dataclass(frozen=True, slots=True)
class RateCard:
    """A model's rates by `Usage` bucket; a part without a rate is priced as its whole."""

    input: Rate
    output: Rate
    input_cache_read: Rate | None = None
    input_cache_creation: Rate | None = None
    input_audio: Rate | None = None
    output_reasoning: Rate | None = None
    output_audio: Rate | None = None
    per_request: float | None = None  # USD
    # The rates when none depends on input size, resolved once so most calls skip resolving.
    fixed_rates: BucketRates | None = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rates = (
            self.input,
            self.output,
            self.input_cache_read,
            self.input_cache_creation,
            self.input_audio,
            self.output_reasoning,
            self.output_audio,
        )
        stepped = any(rate is not None and rate.steps for rate in rates)
        object.__setattr__(self, "fixed_rates", None if stepped else _flat_rates(self, 0))


def _flat_rates(card: RateCard, input_tokens: int) -> BucketRates:
    def part(rate: Rate | None, whole: float) -> float:
        return whole if rate is None else rate.at(input_tokens)

    input_rate = card.input.at(input_tokens)
    output_rate = card.output.at(input_tokens)
    return BucketRates(
        input=input_rate,
        input_cache_read=part(card.input_cache_read, input_rate),
        input_cache_creation=part(card.input_cache_creation, input_rate),
        input_audio=part(card.input_audio, input_rate),
        output=output_rate,
        output_reasoning=part(card.output_reasoning, output_rate),
        output_audio=part(card.output_audio, output_rate),
    )


def charge(card: RateCard, usage: TokenCounts) -> dict[str, Any] | None:
    """The cost of `usage` at `card`'s rates, as `Cost` dumps it with `exclude_none`; None when
    usage has no priced bucket at all."""
    cache_read = usage.input_cache_read_tokens or 0
    cache_creation = usage.input_cache_creation_tokens or 0
    input_audio = usage.input_audio_tokens or 0
    reasoning = usage.output_reasoning_tokens or 0
    output_audio = usage.output_audio_tokens or 0
    input_parts = cache_read + cache_creation + input_audio
    output_parts = reasoning + output_audio
    input_tokens = max(usage.input_tokens or 0, input_parts)
    output_tokens = max(usage.output_tokens or 0, output_parts)
    reported = usage.input_tokens is not None or usage.output_tokens is not None
    if not reported and not input_parts + output_parts:
        return None  # e.g. only total_tokens: no split to price, and 0 would be a wrong answer

    rates = card.fixed_rates or _flat_rates(card, input_tokens)
    cache_read_cost = cache_read * rates.input_cache_read / _TOKENS_PER_MTOK
    cache_creation_cost = cache_creation * rates.input_cache_creation / _TOKENS_PER_MTOK
    input_audio_cost = input_audio * rates.input_audio / _TOKENS_PER_MTOK
    reasoning_cost = reasoning * rates.output_reasoning / _TOKENS_PER_MTOK
    output_audio_cost = output_audio * rates.output_audio / _TOKENS_PER_MTOK
    input_cost = (
        (input_tokens - input_parts) * rates.input / _TOKENS_PER_MTOK
        + cache_read_cost
        + cache_creation_cost
        + input_audio_cost
    )
    output_cost = (
        (output_tokens - output_parts) * rates.output / _TOKENS_PER_MTOK
        + reasoning_cost
        + output_audio_cost
    )

    # Parts appear exactly where the usage reports them, so cost and usage have the same shape.
    # The fields go in `Cost`'s order, so that the dict reads as the model's dump.
    fields: dict[str, Any] = {"input": input_cost}
    if usage.input_cache_read_tokens is not None:
        fields["input_cache_read"] = cache_read_cost
    if usage.input_cache_creation_tokens is not None:
        fields["input_cache_creation"] = cache_creation_cost
    if usage.input_audio_tokens is not None:
        fields["input_audio"] = input_audio_cost
    fields["output"] = output_cost
    if usage.output_reasoning_tokens is not None:
        fields["output_reasoning"] = reasoning_cost
    if usage.output_audio_tokens is not None:
        fields["output_audio"] = output_audio_cost
    fields["total"] = input_cost + output_cost
    amounts = [*fields.values()]
    if card.per_request is not None:
        fields["other"] = {"requests": card.per_request}
        amounts.append(card.per_request)
    # The fields are in the model's order, and `Cost` validates a float that is not negative
    # (nor NaN) into itself: such fields are their own dump, without building the model (that
    # took longer than the pricing). Anything else, which pydantic may convert or refuse, goes
    # through it.
    for amount in amounts:
        if type(amount) is not float or not amount >= 0:
            return Cost(**fields).model_dump(exclude_none=True)
    return fields


class _Constraint(Protocol):
    def active(self, request_timestamp: datetime) -> bool: ...


@dataclass(frozen=True, slots=True)
class PriceSchedule:
    """A model's rate cards over time. The first card is the default; a later card replaces it
    while its constraint holds (a start date, or daily off-peak hours). None: not token-priced."""

    first: RateCard | None
    later: tuple[tuple[_Constraint | None, RateCard | None], ...] = ()

    def at(self, at_unix_nano: int) -> RateCard | None:
        if not self.later:
            return self.first
        moment = datetime.fromtimestamp(at_unix_nano // _NS_PER_S, tz=UTC)
        for constraint, card in reversed(self.later):
            if constraint is None or constraint.active(moment):
                return card
        return self.first


CatalogueLookup = Callable[[str | None, str], PriceSchedule | None]


def find_in_catalogue(provider: str | None, model: str) -> PriceSchedule | None:
    """The genai-prices schedule of `model`, by the catalogue rule of the module docstring."""
    # The snapshot's own finder caches every miss forever; a stream sees unbounded model names.
    providers = data_snapshot.get_snapshot().providers
    model_ref = model.lower()
    if provider is None:
        claimants = (p for p in providers if p.model_match and p.model_match.is_match(model_ref))
        found = next(claimants, None)
    else:
        found = data_snapshot.find_provider_by_id(providers, provider)
    if found is None:
        return None
    info = found.find_model(model_ref, all_providers=providers)
    return None if info is None else _schedule_of(info)


def _schedule_of(info: ModelInfo) -> PriceSchedule:
    if isinstance(info.prices, ModelPrice):
        return PriceSchedule(_card_of(info.prices))
    first, *later = info.prices
    return PriceSchedule(
        _card_of(first.prices),
        tuple((conditional.constraint, _card_of(conditional.prices)) for conditional in later),
    )


def _card_of(prices: ModelPrice) -> RateCard | None:
    listed = {key: value for key, value in vars(prices).items() if value is not None}
    if not listed:
        return RateCard(input=Rate(0.0), output=Rate(0.0))  # the catalogue lists it as free
    if "input_mtok" not in listed and "output_mtok" not in listed:
        return None  # priced per second, character or page: tokens cannot price it

    def rate(key: str) -> Rate | None:
        value = listed.get(key)
        if value is None:
            return None
        if isinstance(value, TieredPrices):
            steps = tuple((tier.start, float(tier.price)) for tier in value.tiers)
            return Rate(float(value.base), steps)
        return Rate(float(value))

    # Catalogue prices for finer buckets (image tokens, 1-hour cache writes, cached audio) price
    # parts the contract does not report; those tokens stay in their whole, as genai-prices does.
    per_thousand_requests = listed.get("requests_kcount")
    return RateCard(
        input=rate("input_mtok") or Rate(0.0),
        output=rate("output_mtok") or Rate(0.0),
        input_cache_read=rate("cache_read_mtok"),
        input_cache_creation=rate("cache_write_mtok"),
        input_audio=rate("input_audio_mtok"),
        output_reasoning=rate("output_reasoning_mtok"),
        output_audio=rate("output_audio_mtok"),
        per_request=(
            float(per_thousand_requests) / 1000
            if isinstance(per_thousand_requests, Decimal)
            else None
        ),
    )


@dataclass(frozen=True, slots=True)
class PriceOverride:
    """One entry of the price file: `model` is a glob, see the module docstring."""

    model: str
    rates: RateCard
    provider: str | None = None
    _pattern: re.Pattern[str] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_pattern", re.compile(fnmatch.translate(self.model.lower())))

    def matches(self, provider: str | None, model: str) -> bool:
        if self.provider is not None and (
            provider is None or provider.lower() != self.provider.lower()
        ):
            return False
        return self._pattern.match(model.lower()) is not None


@dataclass(frozen=True, slots=True)
class _Resolved:
    schedule: PriceSchedule
    source: CostSource


class PriceBook:
    """Prices generations: `cost()` answers from a bounded cache of resolved models, so only the
    first call for a (provider, model) pays for searching the overrides and the catalogue."""

    def __init__(
        self,
        overrides: Sequence[PriceOverride] = (),
        *,
        catalogue: CatalogueLookup = find_in_catalogue,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        self._overrides = tuple(overrides)
        self._catalogue = catalogue
        self._resolve = functools.lru_cache(maxsize=cache_size)(self._resolve_uncached)

    @classmethod
    def load(cls, override_path: Path | None) -> PriceBook:
        """The catalogue, behind the price file at `override_path` when there is one."""
        overrides = load_overrides(override_path) if override_path is not None else ()
        data_snapshot.get_snapshot()  # the catalogue's import takes ~0.25 s: not on a message
        return cls(overrides)

    def cost(
        self, provider: str | None, model: str | None, usage: TokenCounts, at_unix_nano: int
    ) -> PricedCost | None:
        """The cost of `usage` on `model` at the given moment; None when no price is known."""
        if model is None:
            return None
        resolved = self._resolve(provider, model)
        if resolved is None:
            return None
        card = resolved.schedule.at(at_unix_nano)
        if card is None:
            return None
        fields = charge(card, usage)
        return None if fields is None else PricedCost(fields, resolved.source)

    def _resolve_uncached(self, provider: str | None, model: str) -> _Resolved | None:
        for override in self._overrides:
            if override.matches(provider, model):
                return _Resolved(PriceSchedule(override.rates), CostSource.OVERRIDE)
        schedule = self._catalogue(provider, model)
        return None if schedule is None else _Resolved(schedule, CostSource.CATALOGUE)


_RATE_FIELDS = {
    "input_per_mtok": "input",
    "output_per_mtok": "output",
    "input_cache_read_per_mtok": "input_cache_read",
    "input_cache_creation_per_mtok": "input_cache_creation",
    "input_audio_per_mtok": "input_audio",
    "output_reasoning_per_mtok": "output_reasoning",
    "output_audio_per_mtok": "output_audio",
}
_REQUIRED_RATES = ("input_per_mtok", "output_per_mtok")
_ENTRY_FIELDS = {"model", "provider", *_RATE_FIELDS}


def load_overrides(path: Path) -> tuple[PriceOverride, ...]:
    """The entries of a price file, in file order; raises `PriceFileError` on any problem."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise PriceFileError(path, f"cannot be read: {error.strerror or error}") from error
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise PriceFileError(path, f"is not valid TOML: {error}") from error

    unknown = sorted(set(document) - {"price"})
    if unknown:
        raise PriceFileError(path, f"unknown top-level key {unknown[0]!r}; expected [[price]]")
    entries = document.get("price", [])
    if not isinstance(entries, list):
        raise PriceFileError(path, "'price' must be an array of tables, written [[price]]")
    return tuple(_override(path, index, entry) for index, entry in enumerate(entries, start=1))


def _override(path: Path, index: int, entry: object) -> PriceOverride:
    def problem(field: str, text: str) -> PriceFileError:
        return PriceFileError(path, text, index=index, field=field)

    if not isinstance(entry, Mapping):
        raise PriceFileError(path, "must be a table", index=index)
    for field in entry:
        if field not in _ENTRY_FIELDS:
            raise problem(field, f"unknown; expected one of {', '.join(sorted(_ENTRY_FIELDS))}")

    model = entry.get("model")
    if not isinstance(model, str) or not model.strip():
        raise problem("model", "required: a non-empty glob of model names")
    provider = entry.get("provider")
    if provider is not None and (not isinstance(provider, str) or not provider.strip()):
        raise problem("provider", "must be a non-empty string when given")
    for field in _REQUIRED_RATES:
        if field not in entry:
            raise problem(field, "required: USD per million tokens")

    rates: dict[str, Rate] = {}
    for field, bucket in _RATE_FIELDS.items():
        if field not in entry:
            continue
        value = entry[field]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise problem(field, f"must be a number of USD per million tokens, got {value!r}")
        if not math.isfinite(value) or value < 0:
            raise problem(field, f"must be a finite number >= 0, got {value!r}")
        rates[bucket] = Rate(float(value))
    return PriceOverride(model=model, provider=provider, rates=RateCard(**rates))
