"""Schema version 1 of the wire contract: the events apps send and the record that carries them.

A Kafka record on the events topic is one `EventBatch`: events of a single trace, keyed by its
trace id. Events are upserts keyed by their ids: fields present override earlier values, fields
absent leave them unchanged. The Python producer always sends complete observation snapshots, so
the latest snapshot of an observation is its state.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, model_validator

from tracebus.schemas.ids import (
    OBSERVATION_ID_PATTERN,
    TRACE_ID_PATTERN,
    observation_id_problem,
    trace_id_problem,
)

SCHEMA_VERSION = 1
# An events record's project, when it has one, travels in this header (UTF-8, 1-1000
# characters): the gateway sets it from the API key, a producer from its settings. A trace
# belongs to the project of its first stamped record, and its documents name it
# (`TraceDocument.project`); records without one join any trace.
PROJECT_HEADER = "tracebus-project"
MAX_PROJECT_CHARS = 1000


def _valid_trace_id(value: str) -> str:
    if problem := trace_id_problem(value):
        raise ValueError(problem)
    return value


def _valid_observation_id(value: str) -> str:
    if problem := observation_id_problem(value):
        raise ValueError(problem)
    return value


TraceId = Annotated[
    str,
    AfterValidator(_valid_trace_id),
    Field(
        description="W3C trace id: 32 lowercase hex characters, not all zero. The Kafka key.",
        json_schema_extra={"pattern": TRACE_ID_PATTERN, "not": {"const": "0" * 32}},
    ),
]
ObservationId = Annotated[
    str,
    AfterValidator(_valid_observation_id),
    Field(
        description="W3C span id: 16 lowercase hex characters, not all zero.",
        json_schema_extra={"pattern": OBSERVATION_ID_PATTERN, "not": {"const": "0" * 16}},
    ),
]
UnixNano = Annotated[int, Field(ge=0, description="Nanoseconds since the Unix epoch, UTC.")]
TokenCount = Annotated[int, Field(ge=0)]
Usd = Annotated[float, Field(ge=0)]
ShortText = Annotated[str, Field(min_length=1, max_length=1000)]
Metadata = Annotated[
    dict[str, JsonValue],
    Field(description="Free-form JSON object; later events merge into it key by key."),
]


class ObservationKind(StrEnum):
    SPAN = "span"
    GENERATION = "generation"
    TOOL = "tool"
    RETRIEVER = "retriever"
    AGENT = "agent"
    CHAIN = "chain"
    EMBEDDING = "embedding"
    EVENT = "event"
    GUARDRAIL = "guardrail"
    EVALUATOR = "evaluator"


class Level(StrEnum):
    DEBUG = "DEBUG"
    DEFAULT = "DEFAULT"
    WARNING = "WARNING"
    ERROR = "ERROR"


class ScoreDataType(StrEnum):
    NUMERIC = "NUMERIC"
    CATEGORICAL = "CATEGORICAL"
    BOOLEAN = "BOOLEAN"


class ScoreSource(StrEnum):
    API = "API"
    EVAL = "EVAL"
    ANNOTATION = "ANNOTATION"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=True)


class Truncation(_Strict):
    """A field whose serialised size exceeded the configured limit and was cut."""

    field: str = Field(description="Name of the truncated field, e.g. 'input'.")
    original_bytes: int = Field(ge=0, description="Size of the field's JSON before truncation.")
    kept_bytes: int = Field(ge=0, description="Bytes of that JSON kept in the truncated value.")


class Usage(_Strict):
    """Token counts. Buckets are inclusive: `input_tokens` counts every input token, and the
    `input_*` buckets are parts of it (not additional); likewise for output. `other` holds
    provider-specific buckets that are counted in none of the totals."""

    input_tokens: TokenCount | None = Field(
        None, description="All input tokens, including cache reads, cache creation and audio."
    )
    input_cache_read_tokens: TokenCount | None = Field(
        None, description="Input tokens read from the prompt cache; included in input_tokens."
    )
    input_cache_creation_tokens: TokenCount | None = Field(
        None, description="Input tokens written to the prompt cache; included in input_tokens."
    )
    input_audio_tokens: TokenCount | None = Field(
        None, description="Audio input tokens; included in input_tokens."
    )
    output_tokens: TokenCount | None = Field(
        None, description="All output tokens, including reasoning and audio."
    )
    output_reasoning_tokens: TokenCount | None = Field(
        None, description="Reasoning tokens; included in output_tokens."
    )
    output_audio_tokens: TokenCount | None = Field(
        None, description="Audio output tokens; included in output_tokens."
    )
    total_tokens: TokenCount | None = Field(
        None, description="input_tokens + output_tokens, when the provider reports it."
    )
    other: dict[str, TokenCount] | None = Field(
        None, description="Provider-specific buckets, counted in none of the fields above."
    )


class Cost(_Strict):
    """Cost in USD as reported by the provider, with the same bucket meaning as `Usage`:
    `input` includes the `input_*` parts, `output` the `output_*` parts, `total` is the sum."""

    input: Usd | None = None
    input_cache_read: Usd | None = None
    input_cache_creation: Usd | None = None
    input_audio: Usd | None = None
    output: Usd | None = None
    output_reasoning: Usd | None = None
    output_audio: Usd | None = None
    total: Usd | None = None
    other: dict[str, Usd] | None = Field(None, description="Costs counted in no field above.")


class _Event(_Strict):
    schema_version: Literal[1] = Field(description="Version of this contract; this is version 1.")
    event_id: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="Unique per event; a consumer applies an event id once.",
    )
    trace_id: TraceId
    timestamp_unix_nano: UnixNano = Field(description="When the event was emitted.")
    truncated: list[Truncation] | None = Field(
        None, description="Fields cut to the size limit, with their original sizes."
    )


class TraceEvent(_Event):
    """Trace-level attributes. Absent fields leave earlier values; tags accumulate."""

    type: Literal["trace"]
    name: ShortText | None = None
    user_id: ShortText | None = None
    session_id: ShortText | None = None
    tags: list[ShortText] | None = None
    metadata: Metadata | None = None
    release: ShortText | None = None
    environment: Annotated[str, Field(pattern=r"^[a-z0-9_-]{1,40}$")] | None = None
    input: JsonValue = None
    output: JsonValue = None


class _ObservationFields(_Event):
    """What an observation can carry besides its identity; every field optional here."""

    observation_id: ObservationId
    parent_observation_id: ObservationId | None = Field(
        None, description="Parent span id; absent for the trace's root observation."
    )
    end_time_unix_nano: UnixNano | None = None
    status_message: str | None = None
    input: JsonValue = None
    output: JsonValue = None
    metadata: Metadata | None = None
    model: ShortText | None = Field(None, description="Model name as sent to the provider.")
    provider: ShortText | None = Field(None, description="Model provider, e.g. 'openai'.")
    model_parameters: dict[str, str | int | float | bool | None] | None = None
    usage: Usage | None = None
    cost: Cost | None = Field(None, description="Cost reported by the app or provider, USD.")
    completion_start_time_unix_nano: UnixNano | None = Field(
        None, description="When the first output token arrived (time to first token)."
    )

    @model_validator(mode="after")
    def _not_its_own_parent(self) -> _ObservationFields:
        if self.parent_observation_id == self.observation_id:
            raise ValueError("an observation cannot be its own parent")
        return self


class ObservationEvent(_ObservationFields):
    """A snapshot of one observation (span) of a trace; `end_time_unix_nano` absent = still open."""

    type: Literal["observation"]
    kind: ObservationKind
    name: ShortText
    start_time_unix_nano: UnixNano
    level: Level = Level.DEFAULT


class ObservationUpdateEvent(_ObservationFields):
    """A partial update of one observation, for protocols that create an observation and then
    patch it (Langfuse's span-update, LangSmith's patch). Fields present override the
    observation's earlier values by event timestamp; absent fields leave them. If no
    `observation` event for it ever arrives, the stream publishes it from its updates alone,
    flagged `incomplete`."""

    type: Literal["observation_update"]
    kind: ObservationKind | None = None
    name: ShortText | None = None
    start_time_unix_nano: UnixNano | None = None
    level: Level | None = None


class ScoreEvent(_Event):
    """An evaluation of a trace or of one observation of it."""

    type: Literal["score"]
    score_id: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="Stable id: sending the same score again updates it, never duplicates it.",
    )
    observation_id: ObservationId | None = None
    name: ShortText
    value: bool | float | str
    data_type: ScoreDataType
    comment: str | None = None
    source: ScoreSource = ScoreSource.API
    metadata: Metadata | None = None

    @model_validator(mode="after")
    def _value_matches_data_type(self) -> ScoreEvent:
        expected: dict[str, type | tuple[type, ...]] = {
            ScoreDataType.NUMERIC: (int, float),
            ScoreDataType.CATEGORICAL: str,
            ScoreDataType.BOOLEAN: bool,
        }
        wanted = expected[self.data_type]
        is_bool = isinstance(self.value, bool)
        if not isinstance(self.value, wanted) or (is_bool != (self.data_type == "BOOLEAN")):
            raise ValueError(f"value {self.value!r} does not fit data_type {self.data_type}")
        return self


Event = Annotated[
    TraceEvent | ObservationEvent | ObservationUpdateEvent | ScoreEvent,
    Field(discriminator="type"),
]


class EventBatch(_Strict):
    """One Kafka record: events of a single trace, in the order they happened."""

    schema_version: Literal[1]
    trace_id: TraceId
    events: list[Event] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_trace_per_batch(self) -> EventBatch:
        for event in self.events:
            if event.trace_id != self.trace_id:
                raise ValueError(f"event {event.event_id} belongs to trace {event.trace_id}")
        return self


AnyEvent = TraceEvent | ObservationEvent | ObservationUpdateEvent | ScoreEvent
