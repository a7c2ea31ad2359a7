"""Scores as bodies of Langfuse's `POST /api/public/scores`."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from tracebus.schemas import ScoreDataType, ScoreEvent, ScoreSource, TraceDocument
from tracebus.sinks.langfuse.environment import langfuse_environment
from tracebus.sinks.langfuse.otlp import METADATA_KEY

# A fixed namespace so score ids are stable across processes and releases.
_SCORE_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://tracebus.dev/langfuse/score")


def score_bodies(documents: Sequence[TraceDocument]) -> list[dict[str, Any]]:
    return [score_body(document, score) for document in documents for score in document.scores]


def score_uuid(trace_id: str, score_id: str) -> uuid.UUID:
    """The id Langfuse stores a score under: a UUIDv5 of the trace and score ids.

    Langfuse score ids are unique per project; the app's need only be unique in their trace.
    Two traces with a score "helpfulness-1" make two scores, and sending one again updates it."""
    return uuid.uuid5(_SCORE_NAMESPACE, f"{trace_id}:{score_id}")


def score_body(document: TraceDocument, score: ScoreEvent) -> dict[str, Any]:
    """One score, with its own id so that sending it again updates it instead of adding one.

    The app's score id is kept in metadata. The API accepts only the API source without a
    score config: ANNOTATION requires a config id and EVAL is refused, so those are sent as
    API with the original source in metadata."""
    block: dict[str, str] = {"score_id": score.score_id}
    if score.source != ScoreSource.API:
        block["source"] = str(score.source)
    metadata = {**(score.metadata or {}), METADATA_KEY: block}
    body: dict[str, Any] = {
        "id": str(score_uuid(document.trace_id, score.score_id)),
        "traceId": document.trace_id,
        "name": score.name,
        "value": _value(score),
        "dataType": str(score.data_type),
        "source": str(ScoreSource.API),
        "observationId": score.observation_id,
        "comment": score.comment,
        "metadata": metadata,
        "environment": langfuse_environment(document.trace.environment),
    }
    return {key: value for key, value in body.items() if value is not None}


def _value(score: ScoreEvent) -> float | str:
    # Langfuse wants BOOLEAN scores as the numbers 0 and 1.
    if score.data_type == ScoreDataType.BOOLEAN:
        return 1 if score.value else 0
    if score.data_type == ScoreDataType.NUMERIC:
        return float(score.value)
    return str(score.value)
