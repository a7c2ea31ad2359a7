"""A complete trace as LangSmith runs and feedback: the pure mapping, no I/O.

Every run is complete (end time, outputs, error) so it is sent once, as a single `post`.
Values are plain JSON apart from `start_time`, `end_time` and `created_at`, which are aware UTC
datetimes serialised as the SDK does (orjson, ISO 8601)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import JsonValue

from tracebus.schemas import Level, ObservationKind, ScoreDataType, ScoreSource, TraceDocument
from tracebus.schemas.models import Cost, ScoreEvent, Usage
from tracebus.schemas.traces import Observation
from tracebus.sinks.langsmith.ids import feedback_uuid, trace_uuid
from tracebus.sinks.langsmith.tree import (
    Placement,
    RootKind,
    RunTree,
    place_runs,
    trace_end_unix_nano,
    utc_datetime,
)

RUN_TYPES: dict[str, str] = {
    ObservationKind.GENERATION: "llm",
    ObservationKind.TOOL: "tool",
    ObservationKind.RETRIEVER: "retriever",
    ObservationKind.EMBEDDING: "embedding",
}
DEFAULT_RUN_TYPE = "chain"
SYNTHETIC_ROOT_NAME = "trace"  # the synthetic root's name when the trace has none
# LangChain's conventions for the model parameters LangSmith shows next to the model.
_LS_PARAMETERS = {"temperature": "ls_temperature", "max_tokens": "ls_max_tokens", "stop": "ls_stop"}
_FEEDBACK_SOURCE_TYPES = {ScoreSource.EVAL: "model"}  # LangSmith knows "api" and "model"

Run = dict[str, Any]
Feedback = dict[str, Any]


@dataclass(frozen=True)
class LangSmithTrace:
    """What one TraceDocument becomes: runs ordered parents first, then feedback."""

    runs: list[Run] = field(default_factory=list)
    feedback: list[Feedback] = field(default_factory=list)


def langsmith_trace(document: TraceDocument, *, project: str) -> LangSmithTrace:
    """Map `document` to LangSmith runs in project `project`; raises TreeError when the
    observations cannot form one tree (see tree.py for how orphans and missing roots are
    placed)."""
    tree = place_runs(document)
    runs = [
        _run(document, observation, tree.placements[observation.observation_id], project)
        for observation in document.observations
    ]
    if tree.root_kind == RootKind.SYNTHETIC:
        runs.append(_synthetic_root_run(document, tree.root, project))
    runs.sort(key=lambda run: run["dotted_order"])
    feedback = [_feedback(document, score, tree) for score in document.scores]
    return LangSmithTrace(runs, feedback)


def run_type(kind: str) -> str:
    return RUN_TYPES.get(kind, DEFAULT_RUN_TYPE)


def as_object(value: JsonValue, key: str) -> dict[str, JsonValue]:
    """LangSmith inputs and outputs are JSON objects: anything else is wrapped under `key`."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    return {key: value}


def usage_metadata(usage: Usage | None, cost: Cost | None) -> dict[str, Any] | None:
    """LangSmith's UsageMetadata: both use inclusive buckets, so counts carry over as they are."""
    metadata: dict[str, Any] = {}
    if usage is not None:
        input_tokens = usage.input_tokens or 0
        output_tokens = usage.output_tokens or 0
        metadata["input_tokens"] = input_tokens
        metadata["output_tokens"] = output_tokens
        metadata["total_tokens"] = (
            usage.total_tokens if usage.total_tokens is not None else input_tokens + output_tokens
        )
        _put_details(
            metadata,
            "input_token_details",
            cache_read=usage.input_cache_read_tokens,
            cache_creation=usage.input_cache_creation_tokens,
            audio=usage.input_audio_tokens,
        )
        _put_details(
            metadata,
            "output_token_details",
            reasoning=usage.output_reasoning_tokens,
            audio=usage.output_audio_tokens,
        )
    if cost is not None:
        _put_details(metadata, None, input_cost=cost.input, output_cost=cost.output)
        total = cost.total
        if total is None and cost.input is not None and cost.output is not None:
            total = cost.input + cost.output
        _put_details(metadata, None, total_cost=total)
        _put_details(
            metadata,
            "input_cost_details",
            cache_read=cost.input_cache_read,
            cache_creation=cost.input_cache_creation,
            audio=cost.input_audio,
        )
        _put_details(
            metadata,
            "output_cost_details",
            reasoning=cost.output_reasoning,
            audio=cost.output_audio,
        )
    return metadata or None


def _put_details(target: dict[str, Any], key: str | None, **values: Any) -> None:
    present = {name: value for name, value in values.items() if value is not None}
    if not present:
        return
    if key is None:
        target.update(present)
    else:
        target[key] = present


def _run(
    document: TraceDocument, observation: Observation, placement: Placement, project: str
) -> Run:
    is_root = placement.parent_run_id is None
    trace = document.trace
    end_time = utc_datetime(observation.end_time_unix_nano)
    if observation.kind == ObservationKind.EVENT or end_time < placement.start_time:
        end_time = placement.start_time  # an event is an instant; LangSmith has no such run
    inputs = observation.input
    outputs = observation.output
    if is_root:
        inputs = trace.input if inputs is None else inputs
        outputs = trace.output if outputs is None else outputs
    run = _run_head(document, placement)
    run |= {
        "name": (trace.name or observation.name) if is_root else observation.name,
        "run_type": run_type(observation.kind),
        "start_time": placement.start_time,
        "end_time": end_time,
        "session_name": project,
    }
    if trace.tags:
        run["tags"] = list(trace.tags)
    run["inputs"] = as_object(inputs, "input")
    run["outputs"] = _outputs(outputs, observation)
    if observation.completion_start_time_unix_nano is not None:
        first_token = utc_datetime(observation.completion_start_time_unix_nano)
        run["events"] = [{"name": "new_token", "time": first_token.isoformat()}]
    run["extra"] = _extra(document, observation, placement)
    if observation.level == Level.ERROR:
        run["error"] = observation.status_message or "ERROR"
    return run


def _synthetic_root_run(document: TraceDocument, root: Placement, project: str) -> Run:
    """The root run of a trace none of whose observations can be it (see tree.py).

    It holds only what belongs to the trace, so every part of a publication makes the same run:
    LangSmith answers 409 to the repeats and the exporter sends it once per request."""
    trace = document.trace
    run = _run_head(document, root)
    run |= {
        "name": trace.name or SYNTHETIC_ROOT_NAME,
        "run_type": DEFAULT_RUN_TYPE,
        "start_time": root.start_time,
        "end_time": max(utc_datetime(trace_end_unix_nano(document)), root.start_time),
        "session_name": project,
    }
    if trace.tags:
        run["tags"] = list(trace.tags)
    run["inputs"] = as_object(trace.input, "input")
    run["outputs"] = as_object(trace.output, "output")
    metadata = {**trace.metadata, **_trace_metadata(document), "tracebus_synthetic_root": True}
    run["extra"] = {"metadata": metadata}
    return run


def _run_head(document: TraceDocument, placement: Placement) -> Run:
    """Ids and dotted order, first in the run as the SDK orders them."""
    run: Run = {"id": str(placement.run_id), "trace_id": str(trace_uuid(document.trace_id))}
    if placement.parent_run_id is not None:
        run["parent_run_id"] = str(placement.parent_run_id)
    run["dotted_order"] = placement.dotted_order
    return run


def _outputs(value: JsonValue, observation: Observation) -> dict[str, JsonValue]:
    outputs = as_object(value, "output")
    usage = usage_metadata(observation.usage, observation.cost)
    if usage is not None:
        # LangSmith reads usage_metadata from outputs first; a copy keeps the document intact.
        outputs = {**outputs, "usage_metadata": usage}
    return outputs


def _trace_metadata(document: TraceDocument) -> dict[str, Any]:
    """The metadata keys every run of the trace carries, its None values left out."""
    trace = document.trace
    keys: dict[str, Any] = {
        "user_id": trace.user_id,
        # Every run carries the thread key, or LangSmith leaves its tokens out of thread totals.
        "session_id": trace.session_id,
        "thread_id": trace.session_id,
        "environment": trace.environment,
        "release": trace.release,
        "revision_id": trace.release,  # LangSmith's name for the app version
        "tracebus_trace_id": document.trace_id,
        "tracebus_revision": document.revision,
    }
    return {key: value for key, value in keys.items() if value is not None}


def _extra(
    document: TraceDocument, observation: Observation, placement: Placement
) -> dict[str, Any]:
    parameters = observation.model_parameters or {}
    is_llm = run_type(observation.kind) == "llm"
    # Ours win over user keys of the same name: LangSmith gives these keys a meaning.
    ours: dict[str, Any] = {
        **_trace_metadata(document),
        "ls_provider": observation.provider,
        "ls_model_name": observation.model,
        "ls_model_type": "chat" if is_llm and observation.model else None,
        **{ls_key: parameters.get(key) for key, ls_key in _LS_PARAMETERS.items()},
        "tracebus_observation_id": observation.observation_id,
        "tracebus_kind": observation.kind,
        "tracebus_level": None if observation.level == Level.DEFAULT else observation.level,
        "tracebus_status_message": (
            None if observation.level == Level.ERROR else observation.status_message
        ),
        "tracebus_time_to_first_token_ms": observation.time_to_first_token_ms,
        "tracebus_cost_source": observation.cost_source,
        "tracebus_flags": observation.flags or None,
        "tracebus_truncated": (
            [truncation.model_dump() for truncation in observation.truncated]
            if observation.truncated
            else None
        ),
        "tracebus_usage_other": observation.usage.other if observation.usage else None,
        "tracebus_cost_other": observation.cost.other if observation.cost else None,
        # The tree LangSmith shows is not the app's here: say so, and what the app said.
        "tracebus_attached_to_root": placement.attached_to_root or None,
        "tracebus_missing_parent": placement.missing_parent,
    }
    metadata = {
        **document.trace.metadata,
        **(observation.metadata or {}),
        **{key: value for key, value in ours.items() if value is not None},
    }
    extra: dict[str, Any] = {"metadata": metadata}
    if observation.model_parameters:
        extra["invocation_params"] = dict(observation.model_parameters)
    return extra


def _feedback(document: TraceDocument, score: ScoreEvent, tree: RunTree) -> Feedback:
    target = tree.placements.get(score.observation_id or "", tree.root)
    extra: dict[str, Any] = dict(score.metadata or {})
    if score.observation_id is not None and score.observation_id not in tree.placements:
        # Its observation is in another part of the trace: the run id needs that
        # observation's start time, so the score goes to the trace and says where it belongs.
        extra["tracebus_observation_id"] = score.observation_id
    feedback: Feedback = {
        "id": str(feedback_uuid(score.trace_id, score.score_id)),
        "run_id": str(target.run_id),
        "trace_id": str(trace_uuid(document.trace_id)),
        "key": score.name,
    }
    if score.data_type == ScoreDataType.CATEGORICAL:
        feedback["value"] = score.value
    else:
        feedback["score"] = score.value
    if score.comment is not None:
        feedback["comment"] = score.comment
    feedback["feedback_source"] = {
        "type": _FEEDBACK_SOURCE_TYPES.get(score.source, "api"),
        "metadata": {"tracebus_source": score.source, "tracebus_score_id": score.score_id},
    }
    feedback["created_at"] = utc_datetime(score.timestamp_unix_nano)
    feedback["start_time"] = target.start_time  # lets LangSmith find the run quickly
    if extra:
        feedback["extra"] = extra
    return feedback
