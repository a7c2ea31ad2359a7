"""Scores as bodies of Langfuse's `POST /api/public/scores`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tracebus.schemas import ScoreDataType, ScoreEvent, ScoreSource, TraceDocument
from tracebus.sinks.langfuse.environment import langfuse_environment
from tracebus.sinks.langfuse.otlp import METADATA_KEY


def score_bodies(documents: Sequence[TraceDocument]) -> list[dict[str, Any]]:
    return [score_body(document, score) for document in documents for score in document.scores]


def score_body(document: TraceDocument, score: ScoreEvent) -> dict[str, Any]:
    """One score, with its own id so that sending it again updates it instead of adding one.

    The API accepts only the API source without a score config: ANNOTATION requires a config
    id and EVAL is refused, so those are sent as API with the original source in metadata."""
    metadata = dict(score.metadata or {})
    if score.source != ScoreSource.API:
        metadata[METADATA_KEY] = {"source": str(score.source)}
    body: dict[str, Any] = {
        "id": score.score_id,
        "traceId": document.trace_id,
        "name": score.name,
        "value": _value(score),
        "dataType": str(score.data_type),
        "source": str(ScoreSource.API),
        "observationId": score.observation_id,
        "comment": score.comment,
        "metadata": metadata or None,
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
