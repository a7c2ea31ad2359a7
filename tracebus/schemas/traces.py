"""Schema version 1 of complete traces: what the stream publishes and every sink delivers.

A record on the traces topic is one `TraceDocument`, keyed by trace id. A trace is published
whole; when it outgrows the size limits it is published in numbered parts. Observations that
arrive after publication produce a new revision of the whole trace: a sink replaces what it
delivered for a lower revision, and ignores a revision it has already delivered."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field, JsonValue

from tracebus.schemas.models import (
    Cost,
    Level,
    Metadata,
    ObservationId,
    ObservationKind,
    ScoreEvent,
    ShortText,
    TraceId,
    Truncation,
    UnixNano,
    Usage,
    _Strict,
)


class CostSource(StrEnum):
    REPORTED = "reported"  # sent by the app (the provider's figure): authoritative
    OVERRIDE = "override"  # the operator's price file matched the model
    CATALOGUE = "catalogue"  # the maintained price catalogue (genai-prices) matched the model


class Completion(StrEnum):
    ROOT_ENDED = "root_ended"  # root ended, nothing open, grace period passed
    IDLE_TIMEOUT = "idle_timeout"  # no event for the idle timeout
    MAX_SIZE = "max_size"  # too many observations or bytes: published in parts
    EVICTED = "evicted"  # memory bound of the stream reached (overflow policy "publish")


class ObservationFlag(StrEnum):
    END_BEFORE_START = "end_before_start"  # end was before start: end set to start
    STILL_OPEN = "still_open"  # never ended: end set to the last event seen of the trace
    ORPHAN = "orphan"  # its parent never arrived
    LATE = "late"  # arrived after an earlier revision was published
    UNKNOWN_MODEL = "unknown_model"  # generation with usage but no price: cost left empty
    INCOMPLETE = "incomplete"  # only updates arrived: missing kind, name or start filled in


class TraceAttributes(_Strict):
    name: ShortText | None = None
    user_id: ShortText | None = None
    session_id: ShortText | None = None
    tags: list[ShortText] = Field(default_factory=list)
    metadata: Metadata = Field(default_factory=dict)
    release: ShortText | None = None
    environment: str | None = None
    input: JsonValue = None
    output: JsonValue = None


class Observation(_Strict):
    """The final state of one observation, with what the stream computed for it."""

    observation_id: ObservationId
    parent_observation_id: ObservationId | None = None
    kind: ObservationKind
    name: ShortText
    start_time_unix_nano: UnixNano
    end_time_unix_nano: UnixNano
    duration_ms: float = Field(ge=0)
    level: Level = Level.DEFAULT
    status_message: str | None = None
    input: JsonValue = None
    output: JsonValue = None
    metadata: Metadata | None = None
    model: ShortText | None = None
    provider: ShortText | None = None
    model_parameters: dict[str, str | int | float | bool | None] | None = None
    usage: Usage | None = Field(None, description="Inclusive buckets, as in the event schema.")
    cost: Cost | None = Field(None, description="USD; see cost_source.")
    cost_source: CostSource | None = None
    completion_start_time_unix_nano: UnixNano | None = None
    time_to_first_token_ms: float | None = Field(None, ge=0)
    flags: list[ObservationFlag] = Field(default_factory=list)
    truncated: list[Truncation] | None = None


class ObservationRef(_Strict):
    """An ancestor kept in another part, so each part can be placed in the tree on its own."""

    observation_id: ObservationId
    parent_observation_id: ObservationId | None = None
    start_time_unix_nano: UnixNano


class TraceSummary(_Strict):
    start_time_unix_nano: UnixNano
    end_time_unix_nano: UnixNano
    duration_ms: float = Field(ge=0)
    observation_count: int = Field(ge=0)
    observations_by_kind: dict[str, int] = Field(default_factory=dict)
    error_count: int = Field(0, ge=0)
    warning_count: int = Field(0, ge=0)
    usage: Usage = Field(default_factory=Usage, description="Sum over generations, by bucket.")
    cost: Cost = Field(default_factory=Cost, description="Sum over observations with a cost.")
    unpriced_generations: int = Field(0, ge=0, description="Generations with usage, no price.")


class TraceDocument(_Strict):
    schema_version: Literal[1]
    trace_id: TraceId
    project: ShortText | None = Field(
        None,
        description="The project of its first events record stamped with one (the "
        "tracebus-project header: the gateway's API key, or the producer's setting), if that "
        "came before the trace was first published; records of another project do not join "
        "the trace. Sinks route by it.",
    )
    revision: int = Field(ge=1, description="Increases when late observations re-publish.")
    part: int = Field(1, ge=1)
    parts: int | None = Field(
        None, ge=1, description="Number of parts; null on parts published before it was known."
    )
    completed_by: Completion
    published_at_unix_nano: UnixNano
    trace: TraceAttributes
    root_observation_id: ObservationId | None = Field(
        None, description="The observation without a parent in this trace, when there is one."
    )
    observations: list[Observation]
    ancestors: list[ObservationRef] = Field(
        default_factory=list, description="Ancestors of this part's observations kept elsewhere."
    )
    scores: list[ScoreEvent] = Field(
        default_factory=list,
        description="Scores of this part's observations; the first part also has the trace's "
        "own and those of observations in no part of this revision.",
    )
    summary: TraceSummary
