"""A request's runs and feedback as tracebus events (pure: `translate`).

A `post` becomes a complete ObservationEvent (merged with any `patch` of the same run in the
request, as the SDK's own batching does), a lone `patch` an ObservationUpdateEvent with only what
it carries, a root run's attributes a TraceEvent and feedback a ScoreEvent. Event timestamps and
ids derive from the runs' contents, so a re-sent request repeats the same events and the stream
applies them once.

Not carried: attachment bytes (their names, types and sizes go into the observation's metadata)
and `serialized` (the SDK's description of the model object, not of the call)."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from tracebus.gateway.json_values import as_scalar, canonical_json, json_text, without_none
from tracebus.gateway.langsmith.checks import (
    Json,
    invalid,
    json_object,
    optional_uuid,
    timestamp_ns,
    uuid_of,
)
from tracebus.gateway.langsmith.directory import RunDirectory
from tracebus.gateway.langsmith.ids import RunIds, observation_id, resolve_ids
from tracebus.gateway.langsmith.operations import Ingest, RunOp
from tracebus.gateway.langsmith.usage import generation_usage, usage_and_cost

RUN_KINDS: dict[str, str] = {
    "llm": "generation",
    "tool": "tool",
    "retriever": "retriever",
    "chain": "chain",
    "embedding": "embedding",
    "prompt": "span",
    "parser": "span",
}
THREAD_KEYS = ("session_id", "thread_id", "conversation_id")
# Keys of extra.metadata that become fields of the observation instead.
_MAPPED_METADATA = frozenset({"ls_provider", "ls_model_name", "usage_metadata"})
_LS_PARAMETERS = (("ls_temperature", "temperature"), ("ls_max_tokens", "max_tokens"))
_FEEDBACK_SOURCES = {"api": "API", "model": "EVAL", "app": "ANNOTATION"}


def translate(ingest: Ingest, directory: RunDirectory, now_ns: int) -> list[tuple[str, Json]]:
    """Events for a request's runs and feedback, each with the label errors name it by; raises
    GatewayError(422) for the first run or feedback LangSmith would refuse or tracebus cannot
    represent. `now_ns` only stamps events whose runs carry no time of their own."""
    events: list[tuple[str, Json]] = []
    by_run: dict[uuid.UUID, list[RunOp]] = {}
    for op in ingest.runs:
        by_run.setdefault(uuid_of(op.run_id, f"run {op.run_id}", "id"), []).append(op)
    for run_id, ops in by_run.items():
        label = f"run {run_id}"
        posted = any(op.op == "post" for op in ops)
        run: Json = {}
        attachments: dict[str, Json] = {}
        for op in ops:
            # A patch overrides what it sets; None means "not given", as in the SDK's merge.
            run.update(without_none(op.run))
            attachments.update(op.attachments)
        ids = resolve_ids(run_id, run, posted, directory, label)
        directory.remember(ids.run, ids.trace)
        events.extend(
            (label, event) for event in _run_events(run, ids, posted, attachments, now_ns, label)
        )
    for feedback in ingest.feedback:
        label = f"feedback {feedback.get('id')}"
        events.append((label, _score(feedback, directory, now_ns, label)))
    return events


def _run_events(
    run: Json, ids: RunIds, posted: bool, attachments: dict[str, Json], now_ns: int, label: str
) -> list[Json]:
    extra = json_object(run.get("extra"), label, "extra")
    metadata = json_object(extra.get("metadata"), label, "extra.metadata")
    fields: Json = {"observation_id": observation_id(ids.run)}
    if ids.parent is not None:
        fields["parent_observation_id"] = observation_id(ids.parent)
    run_type = run.get("run_type")
    if run_type is not None or posted:
        if run_type not in RUN_KINDS:
            raise invalid(f"{label}: run_type {run_type!r} is not one of {', '.join(RUN_KINDS)}")
        fields["kind"] = RUN_KINDS[run_type]
    name = run.get("name")
    if name is not None or posted:
        if not isinstance(name, str) or not name:
            raise invalid(f"{label}: name is required")
        fields["name"] = name
    start_ns = timestamp_ns(run.get("start_time"), label, "start_time")
    if start_ns is None and posted:
        start_ns = ids.dotted_start_ns
        if start_ns is None:
            raise invalid(f"{label}: start_time is required")
    if start_ns is not None:
        fields["start_time_unix_nano"] = start_ns
    end_ns = timestamp_ns(run.get("end_time"), label, "end_time")
    if end_ns is not None:
        fields["end_time_unix_nano"] = end_ns
    if "inputs" in run:
        fields["input"] = json_object(run["inputs"], label, "inputs")
    outputs = json_object(run["outputs"], label, "outputs") if "outputs" in run else None
    usage_metadata = metadata.get("usage_metadata")
    if outputs is not None:
        usage_metadata = outputs.get("usage_metadata", usage_metadata)
        if usage_metadata is None and run.get("run_type") == "llm":
            usage_metadata = generation_usage(outputs)
        # usage_metadata becomes the observation's usage and cost: not a second copy in output.
        fields["output"] = {k: v for k, v in outputs.items() if k != "usage_metadata"}
    if "error" in run:
        if not isinstance(run["error"], str):
            raise invalid(f"{label}: error must be a string")
        fields["level"] = "ERROR"
        fields["status_message"] = run["error"]
    if usage_metadata is not None:
        usage, cost = usage_and_cost(usage_metadata, label)
        fields.update({"usage": usage, "cost": cost})
    fields.update(_model_fields(extra, metadata))
    first_token_ns = _first_token(run.get("events"), label)
    if first_token_ns is not None:
        fields["completion_start_time_unix_nano"] = first_token_ns
    observation_metadata = _observation_metadata(run, ids, metadata, extra, attachments, label)
    if observation_metadata:
        fields["metadata"] = observation_metadata
    # The run's own times order a post before its patch, and make a re-sent request repeat the
    # same event exactly.
    timestamp = end_ns or start_ns or now_ns
    event_type = "observation" if posted else "observation_update"
    event = _event(event_type, ids.trace, timestamp, without_none(fields))
    event["event_id"] = _event_id("post" if posted else "patch", ids.run, event)
    events = [event]
    if ids.is_root:
        trace_event = _trace_event(run, ids, metadata, extra, timestamp)
        if trace_event is not None:
            events.insert(0, trace_event)
    return events


def _model_fields(extra: Json, metadata: Json) -> Json:
    parameters = extra.get("invocation_params")
    if not isinstance(parameters, dict):
        parameters = {key: metadata[ls] for ls, key in _LS_PARAMETERS if ls in metadata}
        if "ls_stop" in metadata:
            parameters["stop"] = metadata["ls_stop"]
    model = metadata.get("ls_model_name")
    if not isinstance(model, str) or not model:
        candidates = (parameters.get("model"), parameters.get("model_name"))
        model = next((c for c in candidates if isinstance(c, str) and c), None)
    provider = metadata.get("ls_provider")
    return {
        "model": model,
        "provider": provider if isinstance(provider, str) and provider else None,
        "model_parameters": {k: as_scalar(v, default=str) for k, v in parameters.items()} or None,
    }


def _observation_metadata(
    run: Json,
    ids: RunIds,
    metadata: Json,
    extra: Json,
    attachments: dict[str, Json],
    label: str,
) -> Json:
    result = {key: value for key, value in metadata.items() if key not in _MAPPED_METADATA}
    result["langsmith_run_id"] = str(ids.run)
    if run.get("run_type") in ("prompt", "parser"):
        result["langsmith_run_type"] = run["run_type"]  # tracebus has no such kind: span
    tags = _tags(run.get("tags"), label)
    if tags and not ids.is_root:  # a root's tags are the trace's
        result["langsmith_tags"] = tags
    others = {
        k: v for k, v in extra.items() if k not in ("metadata", "runtime", "invocation_params")
    }
    if others:
        result["langsmith_extra"] = others
    events = [
        e for e in run.get("events") or () if e.get("name") not in ("new_token", "start", "end")
    ]
    if events:
        result["langsmith_events"] = events
    if run.get("reference_example_id") is not None:
        result["langsmith_reference_example_id"] = str(run["reference_example_id"])
    if attachments:
        # The bytes stay out of Kafka; what was attached stays visible.
        result["langsmith_attachments"] = attachments
    return result


def _trace_event(
    run: Json, ids: RunIds, metadata: Json, extra: Json, timestamp: int
) -> Json | None:
    fields: Json = {}
    if isinstance(run.get("name"), str):
        fields["name"] = run["name"]
    tags = _tags(run.get("tags"), f"run {ids.run}")
    if tags:
        fields["tags"] = tags
    thread = next((metadata[k] for k in THREAD_KEYS if metadata.get(k) not in (None, "")), None)
    if thread is not None:
        fields["session_id"] = str(thread)
    if metadata.get("user_id") not in (None, ""):
        fields["user_id"] = str(metadata["user_id"])
    if metadata.get("revision_id") not in (None, ""):
        fields["release"] = str(metadata["revision_id"])  # LangSmith's name for the app version
    trace_metadata = {
        "langsmith_project": run.get("session_name"),
        # The top-level session_id is LangSmith's project UUID, not a conversation thread.
        "langsmith_project_id": run.get("session_id"),
        "langsmith_runtime": extra.get("runtime") or None,
    }
    trace_metadata = without_none(trace_metadata)
    if trace_metadata:
        fields["metadata"] = trace_metadata
    if not fields:
        return None
    event = _event("trace", ids.trace, timestamp, fields)
    event["event_id"] = _event_id("trace", ids.run, event)
    return event


def _first_token(events: Any, label: str) -> int | None:
    if events is None:
        return None
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise invalid(f"{label}: events must be a list of objects")
    times = [
        timestamp_ns(event.get("time"), label, "events[].time")
        for event in events
        if event.get("name") == "new_token"
    ]
    return min((t for t in times if t is not None), default=None)


def _tags(value: Any, label: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
        raise invalid(f"{label}: tags must be a list of strings")
    return [tag for tag in value if tag]


def _score(feedback: Json, directory: RunDirectory, now_ns: int, label: str) -> Json:
    feedback_id = uuid_of(feedback.get("id"), label, "id")
    run_id = optional_uuid(feedback.get("run_id"), label, "run_id")
    trace = optional_uuid(feedback.get("trace_id"), label, "trace_id")
    if trace is None and run_id is not None:
        trace = directory.trace_of(run_id)
    if trace is None or trace.int == 0:
        raise invalid(f"{label}: trace_id is required")
    key = feedback.get("key")
    if not isinstance(key, str) or not key:
        raise invalid(f"{label}: key is required")
    fields: Json = {"score_id": f"langsmith-{feedback_id}", "name": key}
    fields.update(_score_value(feedback.get("score"), feedback.get("value"), label))
    if run_id is not None and run_id != trace:
        fields["observation_id"] = observation_id(run_id)
    comment = feedback.get("comment")
    if comment is not None:
        fields["comment"] = comment if isinstance(comment, str) else json_text(comment)
    source = json_object(feedback.get("feedback_source"), label, "feedback_source")
    fields["source"] = _FEEDBACK_SOURCES.get(str(source.get("type")), "API")
    metadata = {
        "langsmith_feedback_id": str(feedback_id),
        "langsmith_feedback_source": source or None,
        "correction": feedback.get("correction"),
        "extra": feedback.get("extra"),
        "feedback_config": feedback.get("feedback_config"),
        "feedback_group_id": feedback.get("feedback_group_id"),
        "comparative_experiment_id": feedback.get("comparative_experiment_id"),
    }
    fields["metadata"] = without_none(metadata)
    timestamp = (
        timestamp_ns(feedback.get("modified_at"), label, "modified_at")
        or timestamp_ns(feedback.get("created_at"), label, "created_at")
        or now_ns
    )
    event = _event("score", trace, timestamp, fields)
    event["event_id"] = _event_id("feedback", feedback_id, event)
    return event


def _score_value(score: Any, value: Any, label: str) -> Json:
    """LangSmith's `score` is a number or boolean, `value` a label (or any JSON); a tracebus score
    holds one value of one type, the score first."""
    for candidate in (score, value):
        if isinstance(candidate, bool):
            return {"value": candidate, "data_type": "BOOLEAN"}
        if isinstance(candidate, int | float):
            return {"value": float(candidate), "data_type": "NUMERIC"}
    if isinstance(value, str) and value:
        return {"value": value, "data_type": "CATEGORICAL"}
    if value is not None:
        return {"value": json_text(value), "data_type": "CATEGORICAL"}
    raise invalid(f"{label}: a feedback needs a score or a value")


def _event(event_type: str, trace: uuid.UUID, timestamp: int, fields: Json) -> Json:
    return {
        "schema_version": 1,
        "type": event_type,
        "trace_id": trace.hex,
        "timestamp_unix_nano": timestamp,
        **fields,
    }


def _event_id(op: str, subject: uuid.UUID, event: Json) -> str:
    """`ls:<op>:<run or feedback id>:<hash of the event>`, at most 61 characters: the same
    request sent twice gives the same ids; a changed run gives a new one."""
    digest = hashlib.blake2b(canonical_json(event), digest_size=8).hexdigest()
    return f"ls:{op}:{subject.hex}:{digest}"
