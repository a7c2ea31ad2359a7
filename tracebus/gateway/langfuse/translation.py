"""Langfuse ingestion events as contract events, or the reason Langfuse (or tracebus) refuses
them, one event at a time.

Langfuse's validation is reproduced, including what its worker drops later out of the sender's
sight (annotation scores without a config), so the sender learns of it. Where Langfuse would
report success and silently drop an event, the gateway keeps it instead:

- a `trace-create` or `score-create` without `body.id` gets an id derived from the envelope id
  (a retried batch maps to the same trace or score);
- a legacy `observation-create` without `body.id` likewise;
- an observation without `traceId` (Langfuse SDKs before 2.0) is a trace of its own, with an id
  derived from the observation id, like the wrapper trace Langfuse makes for it.

Two things tracebus cannot represent are refused per event with the reason: updates without
`traceId` (the gateway keeps no state to find the observation's trace) and scores of sessions or
dataset runs (tracebus scores belong to a trace). `sdk-log` events are validated and, as in
Langfuse, reported in neither list.

Langfuse-only fields (version, public, external id, prompt, observation environment, score
config) are kept in metadata under `langfuse_*` keys; "" in an optional text field means "not
set", as Dify sends it; list and object model parameters (`stop`) become their JSON text."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tracebus.gateway.json_values import is_number, is_scalar, json_text, without_none
from tracebus.gateway.langfuse.ids import (
    contract_id,
    event_id_for,
    is_hashed,
    observation_id_for,
    trace_id_for,
)
from tracebus.gateway.langfuse.usage import usage_and_cost
from tracebus.gateway.langfuse.validation import Fields, Issues, js_type
from tracebus.schemas import Level

INVALID = "Invalid request data"

_CREATES = {
    "span-create": "span",
    "generation-create": "generation",
    "event-create": "event",
    "agent-create": "agent",
    "tool-create": "tool",
    "chain-create": "chain",
    "retriever-create": "retriever",
    "evaluator-create": "evaluator",
    "embedding-create": "embedding",
    "guardrail-create": "guardrail",
}
# A span-update carries no kind: Langfuse uses it on agents, tools and the like too.
_UPDATES = {"span-update": None, "generation-update": "generation"}
_LEGACY = ("observation-create", "observation-update")
_LEGACY_TYPES = ("GENERATION", "SPAN", "EVENT")
_EVENT_TYPES = (
    "trace-create",
    "score-create",
    *_CREATES,
    *_UPDATES,
    "sdk-log",
    "dataset-run-item-create",
    *_LEGACY,
)
_LEVELS = tuple(level.value for level in Level)
_SCORE_SOURCES = ("API", "EVAL", "ANNOTATION")
_SCORE_TYPES = ("NUMERIC", "CATEGORICAL", "BOOLEAN", "CORRECTION", "TEXT")
_TEXT_SCORE_MAX_LENGTH = 500
_TRACE_NAME_MAX_LENGTH = 1000


@dataclass
class Accepted:
    """An ingestion event translated into a contract event."""

    envelope_id: str
    event: dict[str, Any]
    is_update: bool
    observation_id: str | None = None


@dataclass
class Rejected:
    """An ingestion event refused, as one entry of the 207's `errors`."""

    envelope_id: str
    error: str

    def entry(self) -> dict[str, Any]:
        return {"id": self.envelope_id, "status": 400, "message": INVALID, "error": self.error}


Outcome = Accepted | Rejected | None  # None: an sdk-log, reported in neither list


def _environment(value: Any) -> str:
    """Langfuse's public environment name: lower case, no `langfuse` prefix, at most 40 of
    [a-z0-9_-], else 'default'."""
    if not isinstance(value, str):
        return "default"
    name = re.sub(r"^(?:langfuse[-_]?)+", "", value.lower())[:40]
    return name if name and re.fullmatch(r"[a-z0-9_-]+", name) else "default"


def _metadata(value: Any) -> dict[str, Any]:
    """Langfuse metadata as an object: a non-object value is kept under `metadata`, as
    Langfuse keeps it."""
    if value is None:
        return {}
    return dict(value) if isinstance(value, dict) else {"metadata": value}


def _text(value: str | None) -> str | None:
    """An optional text field; Langfuse clients send "" for "not set"."""
    return value or None


def _model_parameters(fields: Fields) -> dict[str, Any] | None:
    """Model parameters; lists and objects (e.g. `stop`) as their JSON text, since the contract
    keeps scalars only."""
    parameters = fields.mapping("modelParameters")
    if parameters is None:
        return None
    result: dict[str, Any] = {}
    for key, value in parameters.items():
        if is_scalar(value):
            result[key] = value
        elif (isinstance(value, list) and all(isinstance(v, str) for v in value)) or (
            isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        ):
            result[key] = json_text(value)
        else:
            fields.issues.add(
                (*fields.at("modelParameters"), key), "Invalid input", "invalid_union"
            )
    return result


def _base(event_id: str, trace_id: str, timestamp_ns: int) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "event_id": event_id,
        "trace_id": trace_id,
        "timestamp_unix_nano": timestamp_ns,
    }


def _trace(envelope_id: str, timestamp_ns: int, fields: Fields) -> Outcome:
    body, issues = fields.body, fields.issues
    langfuse_id = fields.identifier("id")
    name = fields.string("name", max_length=_TRACE_NAME_MAX_LENGTH)
    tags = body.get("tags")
    if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        issues.expected(fields.at("tags"), "array", tags)
    attributes = {
        "name": _text(name),
        "user_id": _text(fields.string("userId")),
        "session_id": _text(fields.string("sessionId")),
        "release": _text(fields.string("release")),
    }
    extras: dict[str, Any] = {
        "langfuse_version": _text(fields.string("version")),
        "langfuse_external_id": _text(fields.string("externalId")),
        "langfuse_public": fields.boolean("public"),
    }
    fields.time("timestamp")
    if issues.items:
        return Rejected(envelope_id, issues.render())
    trace_key = langfuse_id or f"envelope:{envelope_id}"
    trace_id = trace_id_for(trace_key)
    if langfuse_id is not None and is_hashed(trace_id, langfuse_id):
        extras["langfuse_trace_id"] = langfuse_id
    environment = body.get("environment")
    event = {
        **_base(event_id_for(envelope_id, "trace-create", langfuse_id), trace_id, timestamp_ns),
        "type": "trace",
        **attributes,
        "tags": [t for t in tags if t] if tags else None,
        "metadata": {**_metadata(body.get("metadata")), **without_none(extras)} or None,
        "environment": None if environment is None else _environment(environment),
        "input": body.get("input"),
        "output": body.get("output"),
    }
    return Accepted(envelope_id, without_none(event), is_update=False)


def _observation(envelope_id: str, timestamp_ns: int, event_type: str, fields: Fields) -> Outcome:
    body, issues = fields.body, fields.issues
    legacy = event_type in _LEGACY
    is_update = event_type in _UPDATES or event_type == "observation-update"
    langfuse_id = fields.identifier("id", required=not legacy)
    if legacy:
        legacy_type = fields.choice("type", _LEGACY_TYPES, required=True)
        kind = legacy_type.lower() if legacy_type else None
    else:
        kind = _CREATES.get(event_type) or _UPDATES.get(event_type)
    langfuse_trace_id = fields.identifier("traceId")
    values: dict[str, Any] = {
        "name": _text(fields.string("name")),
        "start_time_unix_nano": fields.time("startTime"),
        "end_time_unix_nano": fields.time("endTime"),
        "completion_start_time_unix_nano": fields.time("completionStartTime"),
        "level": fields.choice("level", _LEVELS),
        "status_message": _text(fields.string("statusMessage")),
        "model": _text(fields.string("model")),
        "model_parameters": _model_parameters(fields),
    }
    parent = _text(fields.string("parentObservationId"))
    extras: dict[str, Any] = {
        "langfuse_version": _text(fields.string("version")),
        "langfuse_prompt_name": _text(fields.string("promptName")),
        "langfuse_prompt_version": fields.integer("promptVersion"),
    }
    if bool(extras["langfuse_prompt_name"]) != bool(extras["langfuse_prompt_version"]):
        issues.add(fields.path, "Invalid input")
    environment = _environment(body.get("environment"))
    if environment != "default":
        extras["langfuse_environment"] = environment
    values["usage"], values["cost"] = usage_and_cost(fields)
    if issues.items:
        return Rejected(envelope_id, issues.render())
    if is_update and langfuse_id is None:
        return Rejected(envelope_id, "tracebus needs body.id to know which observation to update")
    if is_update and langfuse_trace_id is None:
        return Rejected(
            envelope_id,
            "tracebus needs body.traceId on updates: the gateway keeps no state to find the "
            "trace of an earlier observation",
        )
    observation_key = langfuse_id or f"envelope:{envelope_id}"
    observation_id = observation_id_for(observation_key)
    if observation_id != observation_key:
        extras["langfuse_observation_id"] = observation_key
    # Langfuse SDKs before 2.0 sent observations without a trace; Langfuse wraps each in a trace
    # of its own, named by the observation.
    trace_key = langfuse_trace_id or observation_key
    trace_id = trace_id_for(trace_key)
    if is_hashed(trace_id, trace_key):
        extras["langfuse_trace_id"] = trace_key
    event = {
        **_base(event_id_for(envelope_id, event_type, langfuse_id), trace_id, timestamp_ns),
        "type": "observation_update" if is_update else "observation",
        "observation_id": observation_id,
        "parent_observation_id": observation_id_for(parent) if parent else None,
        "kind": kind,
        **values,
        "input": body.get("input"),
        "output": body.get("output"),
        "metadata": {**_metadata(body.get("metadata")), **without_none(extras)} or None,
    }
    if not is_update:
        # The contract's snapshot needs a name and a start; Langfuse leaves the name empty and
        # starts the observation at the event's time. An event is an instant.
        event["name"] = event["name"] or kind
        event["start_time_unix_nano"] = event["start_time_unix_nano"] or timestamp_ns
        if kind == "event":
            event["end_time_unix_nano"] = event["start_time_unix_nano"]
    return Accepted(envelope_id, without_none(event), is_update, observation_id)


def _score(envelope_id: str, timestamp_ns: int, fields: Fields) -> Outcome:
    body, issues = fields.body, fields.issues
    langfuse_id = fields.identifier("id")
    name = fields.string("name")
    if body.get("name") is None:
        issues.expected(fields.at("name"), "string", None)
    elif name == "":
        issues.too_small(fields.at("name"))
    trace_key = _text(fields.string("traceId"))
    session_id = _text(fields.string("sessionId"))
    dataset_run_id = _text(fields.string("datasetRunId"))
    observation_key = _text(fields.string("observationId"))
    comment = fields.string("comment")
    source = fields.choice("source", _SCORE_SOURCES) or "API"
    data_type = fields.choice("dataType", _SCORE_TYPES)
    config_id = _text(fields.string("configId"))
    extras: dict[str, Any] = {
        "langfuse_config_id": config_id,
        "langfuse_queue_id": _text(fields.string("queueId")),
        "langfuse_execution_trace_id": _text(fields.string("executionTraceId")),
    }
    value = body.get("value")
    if value_problem := _score_value_problem(data_type, value):
        issues.add(fields.at("value"), value_problem)
    if sum(t is not None for t in (trace_key, session_id, dataset_run_id)) != 1 or (
        observation_key and not trace_key
    ):
        issues.add(
            (*fields.path, "traceId", "sessionId", "datasetRunId", "observationId"),
            "Provide exactly one of the following: traceId (with optional observationId), "
            "sessionId or datasetRunId. ObservationId requires traceId.",
        )
    if issues.items:
        return Rejected(envelope_id, issues.render())
    if source == "ANNOTATION" and not config_id and data_type != "CORRECTION":
        # Langfuse's worker drops these after answering 201; the sender should know.
        return Rejected(
            envelope_id,
            "configId is required when source is ANNOTATION (except for CORRECTION scores).",
        )
    if trace_key is None:
        return Rejected(
            envelope_id,
            "tracebus keeps scores of traces and observations; scores of a session or a "
            "dataset run are not supported",
        )
    trace_id = trace_id_for(trace_key)
    if is_hashed(trace_id, trace_key):
        extras["langfuse_trace_id"] = trace_key
    observation_id = observation_id_for(observation_key) if observation_key else None
    if observation_key and observation_id != observation_key:
        extras["langfuse_observation_id"] = observation_key
    environment = _environment(body.get("environment"))
    if environment != "default":
        extras["langfuse_environment"] = environment
    contract_type, contract_value = _score_value(data_type, value)
    if data_type is not None and data_type != contract_type:
        extras["langfuse_data_type"] = data_type
    event = {
        **_base(event_id_for(envelope_id, "score-create", langfuse_id), trace_id, timestamp_ns),
        "type": "score",
        "score_id": contract_id("score", langfuse_id or f"envelope:{envelope_id}"),
        "observation_id": observation_id,
        "name": name,
        "value": contract_value,
        "data_type": contract_type,
        "comment": comment,
        "source": source,
        "metadata": {**_metadata(body.get("metadata")), **without_none(extras)} or None,
    }
    return Accepted(envelope_id, without_none(event), is_update=False)


def _score_value_problem(data_type: str | None, value: Any) -> str | None:
    """Why Langfuse refuses `value` for `data_type` (None: inferred from the value)."""
    number = is_number(value)
    if data_type in ("NUMERIC", "BOOLEAN") and not number:
        return f"Invalid input: expected number, received {js_type(value)}"
    if data_type == "BOOLEAN" and value not in (0, 1):
        return "Value must be a number equal to either 0 or 1 for data type BOOLEAN"
    if data_type in ("CATEGORICAL", "CORRECTION", "TEXT") and not isinstance(value, str):
        return f"Invalid input: expected string, received {js_type(value)}"
    if data_type == "TEXT" and not 1 <= len(value) <= _TEXT_SCORE_MAX_LENGTH:
        return f"Too big: expected string to have <={_TEXT_SCORE_MAX_LENGTH} characters"
    if data_type is None and not (number or isinstance(value, str)):
        return f"Invalid input: expected string | number, received {js_type(value)}"
    return None


def _score_value(data_type: str | None, value: Any) -> tuple[str, bool | float | str]:
    """The contract's data type and value. Langfuse infers NUMERIC for a number and CATEGORICAL
    for a string; its TEXT and CORRECTION scores are text, CATEGORICAL in the contract."""
    if data_type == "BOOLEAN":
        return "BOOLEAN", value == 1
    if isinstance(value, str):
        return "CATEGORICAL", value
    return "NUMERIC", float(value)


def _envelope(raw: Any) -> tuple[str, str, int, Fields] | Rejected:
    """The envelope's id, type, timestamp and body reader, or why Langfuse refuses it."""
    issues = Issues()
    if not isinstance(raw, dict):
        issues.expected((), "object", raw)
        return Rejected("unknown", issues.render())
    reported_id = raw["id"] if isinstance(raw.get("id"), str) else "unknown"
    event_type = raw.get("type")
    if event_type not in _EVENT_TYPES:
        issues.add(
            ("type",),
            "Invalid input",
            "invalid_union",
            errors=[],
            note="No matching discriminator",
            discriminator="type",
        )
        return Rejected(reported_id, issues.render())
    envelope = Fields(raw, issues, ())
    envelope_id = envelope.identifier("id", required=True)
    timestamp_ns = envelope.time("timestamp")
    if raw.get("timestamp") is None:
        issues.expected(("timestamp",), "string", None)
    body = raw.get("body")
    if not isinstance(body, dict):
        issues.expected(("body",), "object", body)
    if event_type == "dataset-run-item-create":
        issues.add((), "Dataset run item creation is only allowed for internal usage")
    if envelope_id is None or timestamp_ns is None or not isinstance(body, dict) or issues.items:
        return Rejected(reported_id, issues.render())
    return envelope_id, event_type, timestamp_ns, Fields(body, Issues())


def translate(raw: Any) -> Outcome:
    """One ingestion event as a contract event, or why Langfuse (or tracebus) refuses it."""
    envelope = _envelope(raw)
    if isinstance(envelope, Rejected):
        return envelope
    envelope_id, event_type, timestamp_ns, fields = envelope
    if event_type == "trace-create":
        return _trace(envelope_id, timestamp_ns, fields)
    if event_type == "score-create":
        return _score(envelope_id, timestamp_ns, fields)
    if event_type == "sdk-log":
        if fields.body.get("log") is None:
            fields.issues.add(fields.at("log"), "Invalid input", "invalid_union")
            return Rejected(envelope_id, fields.issues.render())
        return None
    return _observation(envelope_id, timestamp_ns, event_type, fields)


def langfuse_order(accepted: list[Accepted]) -> list[Accepted]:
    """Langfuse's processing order: creates by timestamp, then updates by timestamp. An update
    is dated no earlier than a create of the same observation in the batch, since the stream
    merges by timestamp and Langfuse applies the update last."""
    ordered = sorted(accepted, key=lambda a: (a.is_update, a.event["timestamp_unix_nano"]))
    created: dict[str, int] = {}
    for item in ordered:
        if item.observation_id is None:
            continue
        latest = max(item.event["timestamp_unix_nano"], created.get(item.observation_id, 0))
        if item.is_update:
            item.event["timestamp_unix_nano"] = latest
        else:
            created[item.observation_id] = latest
    return ordered
