"""TraceDocuments for the sink tests: builders of small traces, and one reference trace.

`observation`, `document` and `score` build traces shaped for a test, on times in milliseconds
after T0 (2026-01-01T00:00:00Z, so dotted orders are easy to read). `reference_trace` is one
support-chat trace as the stream publishes it, with an observation of each interesting kind and
two scores, on times with nanoseconds (what a sink must not round away)."""

from __future__ import annotations

from typing import Any

from tracebus.schemas import ScoreEvent, TraceDocument
from tracebus.schemas.traces import Observation, ObservationRef, TraceAttributes, TraceSummary

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
OTHER_TRACE_ID = "5cf92f3577b34da6a3ce929d0e0e4737"
T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z in ns
MS = 1_000_000

# -- builders --------------------------------------------------------------------------------


def observation(
    observation_id: str,
    parent: str | None = None,
    *,
    start_ms: float = 0,
    end_ms: float = 10,
    kind: str = "span",
    name: str | None = None,
    **fields: Any,
) -> Observation:
    start, end = T0 + int(start_ms * MS), T0 + int(end_ms * MS)
    return Observation(
        observation_id=observation_id,
        parent_observation_id=parent,
        kind=kind,
        name=name or f"{kind}-{observation_id[-2:]}",
        start_time_unix_nano=start,
        end_time_unix_nano=end,
        duration_ms=max(end - start, 0) / MS,
        **fields,
    )


def document(
    *observations: Observation,
    ancestors: list[ObservationRef] | None = None,
    scores: list[ScoreEvent] | None = None,
    trace: TraceAttributes | None = None,
    trace_id: str = TRACE_ID,
    summary: TraceSummary | None = None,
    **fields: Any,
) -> TraceDocument:
    """A trace of `observations`, summarised from them unless `summary` is given (the parts of
    one publication share the summary of all their observations)."""
    ends = [o.end_time_unix_nano for o in observations] or [T0]
    return TraceDocument(
        schema_version=1,
        trace_id=trace_id,
        revision=fields.pop("revision", 1),
        completed_by="root_ended",
        published_at_unix_nano=max(ends),
        trace=trace or TraceAttributes(),
        observations=list(observations),
        ancestors=ancestors or [],
        scores=scores or [],
        summary=summary or summarize(*observations),
        **fields,
    )


def summarize(*observations: Observation) -> TraceSummary:
    starts = [o.start_time_unix_nano for o in observations] or [T0]
    ends = [o.end_time_unix_nano for o in observations] or [T0]
    return TraceSummary(
        start_time_unix_nano=min(starts),
        end_time_unix_nano=max(ends),
        duration_ms=(max(ends) - min(starts)) / MS,
        observation_count=len(observations),
    )


def score(score_id: str, observation_id: str | None, value: Any, data_type: str) -> ScoreEvent:
    return ScoreEvent(
        schema_version=1,
        event_id=f"event-{score_id}",
        trace_id=TRACE_ID,
        timestamp_unix_nano=T0 + 500 * MS,
        type="score",
        score_id=score_id,
        observation_id=observation_id,
        name="helpfulness",
        value=value,
        data_type=data_type,
    )


# -- the reference trace ---------------------------------------------------------------------

ROOT = "00f067aa0ba902b7"
GENERATION = "1a2b3c4d5e6f7081"
TOOL = "2b3c4d5e6f708192"
RETRIEVER = "3c4d5e6f708192a3"
FAILED = "4d5e6f708192a3b4"
REFERENCE_T0 = 1_746_100_800_123_456_789  # 2025-05-01T12:00:00.123456789Z, nanoseconds on purpose
HELPFULNESS_SCORE_ID = "helpfulness-4bf92f35"
RESOLVED_SCORE_ID = "resolved-4bf92f35"


def reference_trace(**changes: Any) -> TraceDocument:
    """A support-chat trace with one of each interesting observation, and two scores; `changes`
    replace top-level fields of the document as JSON (e.g. `trace={}`, `observations=[]`)."""
    fields: dict[str, Any] = {
        "schema_version": 1,
        "trace_id": TRACE_ID,
        "revision": 2,
        "completed_by": "root_ended",
        "published_at_unix_nano": REFERENCE_T0 + 5_000 * MS,
        "trace": {
            "name": "support-chat",
            "user_id": "user-42",
            "session_id": "session-7",
            "tags": ["beta", "support"],
            "metadata": {"tenant": "acme"},
            "release": "2025.05.1",
            "environment": "Production",
            "input": {"question": "How do I rotate my API key?"},
            "output": "Open Settings → API keys and click Rotate.",
        },
        "root_observation_id": ROOT,
        "observations": [
            _reference_observation(
                ROOT, "agent", "answer-question", 0, 2_500, metadata={"route": "faq"}
            ),
            _reference_observation(
                GENERATION,
                "generation",
                "chat",
                100,
                1_900,
                model="gpt-4o-2024-08-06",
                provider="openai",
                model_parameters={"temperature": 0.2, "max_tokens": 512, "stream": True},
                input=[{"role": "user", "content": "How do I rotate my API key?"}],
                output={"role": "assistant", "content": "Open Settings → API keys."},
                usage={
                    "input_tokens": 812,
                    "input_cache_read_tokens": 512,
                    "output_tokens": 64,
                    "output_reasoning_tokens": 16,
                    "total_tokens": 876,
                },
                cost={
                    "input": 0.00203,
                    "input_cache_read": 0.00064,
                    "output": 0.00064,
                    "output_reasoning": 0.00016,
                    "total": 0.00267,
                },
                cost_source="reported",
                completion_start_time_unix_nano=REFERENCE_T0 + 450 * MS,
                time_to_first_token_ms=350.0,
            ),
            _reference_observation(
                TOOL,
                "tool",
                "search_docs",
                1_950,
                2_100,
                input={"query": "rotate api key"},
                output=["docs/keys.md"],
            ),
            _reference_observation(
                RETRIEVER,
                "retriever",
                "vector-lookup",
                2_100,
                2_300,
                input="rotate api key",
                output=[{"id": "doc-1", "score": 0.91}],
            ),
            _reference_observation(
                FAILED,
                "span",
                "rerank",
                2_300,
                2_400,
                level="ERROR",
                status_message="reranker timed out after 100 ms",
            ),
        ],
        "scores": [
            {
                "schema_version": 1,
                "type": "score",
                "event_id": "ev-score-1",
                "trace_id": TRACE_ID,
                "timestamp_unix_nano": REFERENCE_T0 + 4_000 * MS,
                "score_id": HELPFULNESS_SCORE_ID,
                "observation_id": GENERATION,
                "name": "helpfulness",
                "value": 0.9,
                "data_type": "NUMERIC",
                "comment": "clear and short",
            },
            {
                "schema_version": 1,
                "type": "score",
                "event_id": "ev-score-2",
                "trace_id": TRACE_ID,
                "timestamp_unix_nano": REFERENCE_T0 + 4_100 * MS,
                "score_id": RESOLVED_SCORE_ID,
                "name": "resolved",
                "value": True,
                "data_type": "BOOLEAN",
                "source": "EVAL",
            },
        ],
        "summary": {
            "start_time_unix_nano": REFERENCE_T0,
            "end_time_unix_nano": REFERENCE_T0 + 2_500 * MS,
            "duration_ms": 2_500.0,
            "observation_count": 5,
        },
    }
    return TraceDocument.model_validate({**fields, **changes})


def _reference_observation(
    observation_id: str, kind: str, name: str, start_ms: int, end_ms: int, **fields: Any
) -> dict[str, Any]:
    return {
        "observation_id": observation_id,
        "parent_observation_id": ROOT if observation_id != ROOT else None,
        "kind": kind,
        "name": name,
        "start_time_unix_nano": REFERENCE_T0 + start_ms * MS,
        "end_time_unix_nano": REFERENCE_T0 + end_ms * MS,
        "duration_ms": float(end_ms - start_ms),
        **fields,
    }
