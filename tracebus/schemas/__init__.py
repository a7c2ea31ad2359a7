"""The versioned wire contract between producers, the stream and the sinks."""

from tracebus.schemas.codec import (
    DEFAULT_MAX_RECORD_BYTES,
    Problem,
    SchemaError,
    decode_batch,
    encode_batch,
    json_default,
    validate_event,
)
from tracebus.schemas.ids import (
    TraceParent,
    format_traceparent,
    new_event_id,
    new_observation_id,
    new_trace_id,
    parse_traceparent,
)
from tracebus.schemas.limits import EventTooLarge, Limits, serialize_event
from tracebus.schemas.models import (
    SCHEMA_VERSION,
    AnyEvent,
    Cost,
    EventBatch,
    Level,
    ObservationEvent,
    ObservationKind,
    ObservationUpdateEvent,
    ScoreDataType,
    ScoreEvent,
    ScoreSource,
    TraceEvent,
    Usage,
)
from tracebus.schemas.traces import (
    Completion,
    CostSource,
    ObservationFlag,
    TraceDocument,
)
from tracebus.schemas.usage import normalize_usage

__all__ = [
    "DEFAULT_MAX_RECORD_BYTES",
    "SCHEMA_VERSION",
    "AnyEvent",
    "Completion",
    "Cost",
    "CostSource",
    "EventBatch",
    "EventTooLarge",
    "Level",
    "Limits",
    "ObservationEvent",
    "ObservationFlag",
    "ObservationKind",
    "ObservationUpdateEvent",
    "Problem",
    "SchemaError",
    "ScoreDataType",
    "ScoreEvent",
    "ScoreSource",
    "TraceDocument",
    "TraceEvent",
    "TraceParent",
    "Usage",
    "decode_batch",
    "encode_batch",
    "format_traceparent",
    "json_default",
    "new_event_id",
    "new_observation_id",
    "new_trace_id",
    "normalize_usage",
    "parse_traceparent",
    "serialize_event",
    "validate_event",
]
