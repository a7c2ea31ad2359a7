"""LangSmith's run ingestion API, so that an app traced with the langsmith SDK (`@traceable`,
RunTree, LangChain) switches to tracebus by pointing `LANGSMITH_ENDPOINT` at the gateway.

Routes: `GET /info` (what the SDK reads before sending), `POST /runs/multipart` (the SDK's
default, zstd-compressed when /info allows it), `POST /runs/batch` (its JSON fallback),
`POST /runs` + `PATCH /runs/{run_id}` (the simple REST path) and `POST /feedback`.

Translation (pure, in `translate`): trace id = the LangSmith trace UUID's 32 hex digits, so a
trace's root run keeps its id through tracebus to the LangSmith sink; observation id = a hash of
the run UUID (also applied to parent and feedback run ids, so the tree holds). A `post` becomes
a complete ObservationEvent (merged with any `patch` of the same run in the request, as the
SDK's own batching does), a lone `patch` an ObservationUpdateEvent with only what it carries, a
root run's attributes a TraceEvent and feedback a ScoreEvent. Event timestamps and ids derive
from the runs' contents, so a re-sent request repeats the same events and the stream applies
them once. Like LangSmith, one invalid run or feedback rejects the whole request (422 naming
it) and nothing of it is published.

Not carried: attachment bytes (their names, types and sizes go into the observation's metadata)
and `serialized` (the SDK's description of the model object, not of the call)."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web

from tracebus.gateway.protocol import Adapter, Call, GatewayError, Route

SERVER_VERSION = "0.12.0"  # the SDK sends feedback through multipart only from 0.8.10 on
# The SDK splits its batches at this many bytes of run JSON; multipart framing and the op that
# crosses the line come on top, so it stays a MiB under the gateway's default body limit.
SIZE_LIMIT_BYTES = 15 * 1024 * 1024
RUN_KINDS: dict[str, str] = {
    "llm": "generation",
    "tool": "tool",
    "retriever": "retriever",
    "chain": "chain",
    "embedding": "embedding",
    "prompt": "span",
    "parser": "span",
}
RUN_FIELDS = frozenset({"inputs", "outputs", "events", "extra", "error", "serialized"})
THREAD_KEYS = ("session_id", "thread_id", "conversation_id")
DOTTED_ORDER_TIME_FORMAT = "%Y%m%dT%H%M%S%fZ"
_SEGMENT_TIME_LENGTH = len("20240531T095804831161Z")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_OBSERVATION_ID_BYTES = 8
# Keys of extra.metadata that become fields of the observation instead.
_MAPPED_METADATA = frozenset({"ls_provider", "ls_model_name", "usage_metadata"})
_LS_PARAMETERS = (("ls_temperature", "temperature"), ("ls_max_tokens", "max_tokens"))
_INPUT_TOKEN_DETAILS = {
    "cache_read": "input_cache_read_tokens",
    "cache_creation": "input_cache_creation_tokens",
    "audio": "input_audio_tokens",
}
_OUTPUT_TOKEN_DETAILS = {"reasoning": "output_reasoning_tokens", "audio": "output_audio_tokens"}
_INPUT_COST_DETAILS = {
    "cache_read": "input_cache_read",
    "cache_creation": "input_cache_creation",
    "audio": "input_audio",
}
_OUTPUT_COST_DETAILS = {"reasoning": "output_reasoning", "audio": "output_audio"}
_TOKEN_KEYS = frozenset({"input_tokens", "output_tokens", "total_tokens"})
_COST_KEYS = {"input_cost": "input", "output_cost": "output", "total_cost": "total"}
_FEEDBACK_SOURCES = {"api": "API", "model": "EVAL", "app": "ANNOTATION"}
_NAME_PARAMETER = re.compile(r'(?:^|;)\s*name="([^"]*)"')
_BOUNDARY_PARAMETER = re.compile(r'(?:^|;)\s*boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)
_LENGTH_PARAMETER = re.compile(r";\s*length=(\d+)")
_DIRECTORY_CAPACITY = 50_000

Json = dict[str, Any]


def _invalid(message: str) -> GatewayError:
    return GatewayError(422, message)


# -- the request as operations ----------------------------------------------------------------


@dataclass
class RunOp:
    """One `post` or `patch` of a run: its JSON with the out-of-band field parts merged in."""

    op: str  # "post" or "patch"
    run_id: str  # as the part name or the body gives it
    run: Json
    attachments: dict[str, Json] = field(default_factory=dict)
    has_main: bool = True  # False while only field parts of it have arrived


@dataclass
class Ingest:
    runs: list[RunOp] = field(default_factory=list)
    feedback: list[Json] = field(default_factory=list)


@dataclass(frozen=True)
class Part:
    name: str
    content_type: str  # without a length parameter
    data: bytes


def parse_multipart(body: bytes, content_type: str) -> list[Part]:
    """The parts of a multipart/form-data body. A part's declared length (Content-Length or the
    `length=` parameter LangSmith also accepts) says where its data ends, so binary attachments
    may contain anything; without one the data ends at the next delimiter."""
    media_type, _, parameters = content_type.partition(";")
    if media_type.strip().lower() != "multipart/form-data":
        raise GatewayError(415, f"expected multipart/form-data, got {media_type.strip()!r}")
    match = _BOUNDARY_PARAMETER.search(parameters)
    if match is None:
        raise _invalid("multipart/form-data without a boundary")
    delimiter = b"--" + (match.group(1) or match.group(2)).encode()
    start = body.find(delimiter)
    if start < 0 or (start > 0 and body[start - 2 : start] != b"\r\n"):
        raise _invalid("malformed multipart body: no opening delimiter")
    position = start + len(delimiter)
    parts: list[Part] = []
    while not body.startswith(b"--", position):
        if position >= len(body):
            raise _invalid("malformed multipart body: no closing delimiter")
        if not body.startswith(b"\r\n", position):
            raise _invalid("malformed multipart body: a delimiter is not followed by CRLF")
        head_end = body.find(b"\r\n\r\n", position)
        if head_end < 0:
            raise _invalid("malformed multipart body: part headers never end")
        name, part_type, length = _part_head(body[position + 2 : head_end].decode("latin-1"))
        data_start = head_end + 4
        closing = b"\r\n" + delimiter
        if length is not None:
            data_end = data_start + length
            if not body.startswith(closing, data_end):
                raise _invalid(f"part {name} declares {length} bytes but no delimiter follows them")
        else:
            data_end = body.find(closing, data_start)
            if data_end < 0:
                raise _invalid(f"malformed multipart body: part {name} is never closed")
        parts.append(Part(name, part_type, body[data_start:data_end]))
        position = data_end + len(closing)
    return parts


def _part_head(head: str) -> tuple[str, str, int | None]:
    headers: dict[str, str] = {}
    for line in head.split("\r\n"):
        key, colon, value = line.partition(":")
        if not colon:
            raise _invalid(f"malformed multipart part header {line!r}")
        headers[key.strip().lower()] = value.strip()
    disposition = headers.get("content-disposition", "")
    match = _NAME_PARAMETER.search(disposition.partition(";")[2])
    if not disposition.lower().startswith("form-data") or match is None:
        raise _invalid("a multipart part without a form-data name")
    name = match.group(1)
    content_type = headers.get("content-type")
    if not content_type:
        raise _invalid(f"part {name} has no Content-Type")
    if "content-encoding" in headers:
        raise _invalid(f"part {name} has its own Content-Encoding, which is not allowed")
    declared = headers.get("content-length")
    parameter = _LENGTH_PARAMETER.search(content_type)
    if declared is None and parameter is not None:
        declared = parameter.group(1)
    if declared is not None and not declared.isdigit():
        raise _invalid(f"part {name} has Content-Length {declared!r}")
    bare_type = _LENGTH_PARAMETER.sub("", content_type)
    return name, bare_type, int(declared) if declared is not None else None


def ingest_from_parts(parts: Iterable[Part]) -> Ingest:
    """Runs, feedback and attachments of a multipart request, in the order they came."""
    ingest = Ingest()
    latest: dict[tuple[str, str], RunOp] = {}
    latest_of_run: dict[str, RunOp] = {}
    for part in parts:
        event, _, rest = part.name.partition(".")
        part_id, _, detail = rest.partition(".")
        if not part_id:
            raise _invalid(f"unsupported part name {part.name!r}")
        if event == "attachment" and detail:
            op = latest_of_run.get(part_id)
            if op is None:
                op = RunOp("patch", part_id, {"id": part_id})
                ingest.runs.append(op)
                latest_of_run[part_id] = op
            op.attachments[detail] = {"content_type": part.content_type, "bytes": len(part.data)}
            continue
        value = _json_part(part)
        if event == "feedback" and not detail:
            ingest.feedback.append(_with_id(value, part_id, part.name, "feedback"))
        elif event in ("post", "patch") and not detail:
            run = _with_id(value, part_id, part.name, "run")
            op = latest.get((event, part_id))
            if op is not None and not op.has_main:
                op.run = {**run, **op.run}
                op.has_main = True
            else:
                op = RunOp(event, part_id, run)
                ingest.runs.append(op)
            latest[(event, part_id)] = latest_of_run[part_id] = op
        elif event in ("post", "patch") and detail in RUN_FIELDS:
            op = latest.get((event, part_id))
            if op is None:
                op = RunOp(event, part_id, {}, has_main=False)
                ingest.runs.append(op)
                latest[(event, part_id)] = latest_of_run[part_id] = op
            op.run[detail] = value
        else:
            raise _invalid(f"unsupported part name {part.name!r}")
    for op in ingest.runs:
        if not op.has_main:
            fields = ", ".join(sorted(op.run))
            raise _invalid(
                f"parts {op.op}.{op.run_id}.{{{fields}}} sent without {op.op}.{op.run_id}"
            )
    return ingest


def _json_part(part: Part) -> Any:
    if part.content_type.partition(";")[0].strip().lower() != "application/json":
        raise _invalid(f"part {part.name} must be application/json, not {part.content_type!r}")
    try:
        return orjson.loads(part.data)
    except orjson.JSONDecodeError as error:
        raise _invalid(f"part {part.name} is not valid JSON: {error}") from None


def _with_id(value: Any, part_id: str, part_name: str, what: str) -> Json:
    if not isinstance(value, dict):
        raise _invalid(f"part {part_name}: a {what} is a JSON object")
    given = value.get("id")
    if given is None:
        return {**value, "id": part_id}
    if _same_uuid(given, part_id) is False:
        raise _invalid(f"part {part_name} carries {what} id {given!r}")
    return value


def _same_uuid(a: Any, b: str) -> bool | None:
    """Whether two ids name the same UUID; None when one is no UUID (reported later)."""
    try:
        return uuid.UUID(str(a)) == uuid.UUID(b)
    except ValueError:
        return None


def ingest_from_batch(body: bytes) -> Ingest:
    """`POST /runs/batch`: `{"post": [run, …], "patch": [run, …]}`."""
    document = _json_body(body)
    if not isinstance(document, dict):
        raise _invalid('a batch is a JSON object {"post": [...], "patch": [...]}')
    ingest = Ingest()
    for op in ("post", "patch"):
        runs = document.get(op) or []
        if not isinstance(runs, list):
            raise _invalid(f"{op} must be a list of runs")
        for index, run in enumerate(runs):
            if not isinstance(run, dict) or run.get("id") is None:
                raise _invalid(f"{op}[{index}] is not a run with an id")
            ingest.runs.append(RunOp(op, str(run["id"]), run))
    return ingest


def _json_body(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise _invalid(f"the body is not valid JSON: {error}") from None


# -- translation --------------------------------------------------------------------------------


class RunDirectory:
    """The trace of each run this process saw lately. LangSmith's simple path lets a child run
    or a patch leave out trace_id and dotted_order (its server looks the run up); this is the
    gateway's bounded memory of it, so such a request succeeds when the run's post came
    through the same gateway process."""

    def __init__(self, capacity: int = _DIRECTORY_CAPACITY) -> None:
        self._traces: OrderedDict[int, uuid.UUID] = OrderedDict()
        self._capacity = capacity

    def remember(self, run_id: uuid.UUID, trace_id: uuid.UUID) -> None:
        self._traces[run_id.int] = trace_id
        self._traces.move_to_end(run_id.int)
        if len(self._traces) > self._capacity:
            self._traces.popitem(last=False)

    def trace_of(self, run_id: uuid.UUID) -> uuid.UUID | None:
        return self._traces.get(run_id.int)


def observation_id(run_id: uuid.UUID) -> str:
    """The W3C span id of a run: a hash of its UUID. Not its first 8 bytes, which in a UUIDv7
    are a millisecond timestamp and 12 random bits: runs started together would collide."""
    digest = hashlib.blake2b(run_id.bytes, digest_size=_OBSERVATION_ID_BYTES).hexdigest()
    return digest if digest != "0" * 16 else "0" * 15 + "1"


@dataclass(frozen=True)
class _Ids:
    run: uuid.UUID
    trace: uuid.UUID
    parent: uuid.UUID | None
    dotted_start_ns: int | None  # the run's start as its dotted_order says

    @property
    def is_root(self) -> bool:
        return self.run == self.trace


def translate(ingest: Ingest, directory: RunDirectory, now_ns: int) -> list[tuple[str, Json]]:
    """Events for a request's runs and feedback, each with the label errors name it by; raises
    GatewayError(422) for the first run or feedback LangSmith would refuse or tracebus cannot
    represent. `now_ns` only stamps events whose runs carry no time of their own."""
    events: list[tuple[str, Json]] = []
    by_run: dict[uuid.UUID, list[RunOp]] = {}
    for op in ingest.runs:
        by_run.setdefault(_uuid(op.run_id, f"run {op.run_id}", "id"), []).append(op)
    for run_id, ops in by_run.items():
        label = f"run {run_id}"
        posted = any(op.op == "post" for op in ops)
        run: Json = {}
        attachments: dict[str, Json] = {}
        for op in ops:
            # A patch overrides what it sets; None means "not given", as in the SDK's merge.
            run.update({key: value for key, value in op.run.items() if value is not None})
            attachments.update(op.attachments)
        ids = _resolve_ids(run_id, run, posted, directory, label)
        directory.remember(ids.run, ids.trace)
        events.extend(
            (label, event) for event in _run_events(run, ids, posted, attachments, now_ns, label)
        )
    for feedback in ingest.feedback:
        label = f"feedback {feedback.get('id')}"
        events.append((label, _score(feedback, directory, now_ns, label)))
    return events


def _resolve_ids(
    run_id: uuid.UUID, run: Json, posted: bool, directory: RunDirectory, label: str
) -> _Ids:
    parent = _optional_uuid(run.get("parent_run_id"), label, "parent_run_id")
    trace = _optional_uuid(run.get("trace_id"), label, "trace_id")
    dotted_order = run.get("dotted_order")
    dotted_start_ns = None
    if dotted_order is not None:
        segments = _dotted_order(dotted_order, label)
        if segments[-1][1] != run_id:
            raise _invalid(
                f"{label}: the last part of dotted_order {dotted_order} is not the run id"
            )
        if trace is not None and segments[0][1] != trace:
            raise _invalid(f"{label}: trace_id {trace} does not match first part of dotted_order")
        if parent is None and posted and len(segments) != 1:
            raise _invalid(f"{label}: dotted_order must contain a single part for root runs")
        if parent is not None and len(segments) < 2:
            raise _invalid(f"{label}: dotted_order must contain at least two parts for child runs")
        if parent is not None and segments[-2][1] != parent:
            raise _invalid(
                f"{label}: parent_run_id {parent} is not the second-to-last part of dotted_order"
            )
        trace = segments[0][1]
        dotted_start_ns = segments[-1][0]
    if trace is None:
        if posted and parent is None:
            trace = run_id
        else:
            trace = directory.trace_of(run_id)
            if trace is None and parent is not None:
                trace = directory.trace_of(parent)
    if trace is None:
        raise _invalid(
            f"{label}: trace_id (or dotted_order) is required: this gateway has not seen "
            "the run's trace"
        )
    if trace.int == 0:
        raise _invalid(f"{label}: the nil UUID is no trace id")
    if posted and parent is None and trace != run_id:
        raise _invalid(
            f"{label}: a run without parent_run_id is a root run, whose id must be its "
            f"trace_id ({trace})"
        )
    if parent is not None and run_id == trace:
        raise _invalid(f"{label}: the root run of trace {trace} cannot have a parent_run_id")
    return _Ids(run_id, trace, parent, dotted_start_ns)


def _dotted_order(value: Any, label: str) -> list[tuple[int, uuid.UUID]]:
    """(start in ns, run id) of each segment of a dotted order."""
    if not isinstance(value, str) or not value:
        raise _invalid(f"{label}: dotted_order must be a string")
    segments = []
    for segment in value.split("."):
        try:
            started = datetime.strptime(segment[:_SEGMENT_TIME_LENGTH], DOTTED_ORDER_TIME_FORMAT)
            run_id = uuid.UUID(segment[_SEGMENT_TIME_LENGTH:])
        except ValueError:
            raise _invalid(
                f"{label}: invalid dotted_order {value!r}: each part is "
                f"{DOTTED_ORDER_TIME_FORMAT} followed by the run's UUID"
            ) from None
        segments.append((_unix_nano(started.replace(tzinfo=UTC)), run_id))
    return segments


def _run_events(
    run: Json, ids: _Ids, posted: bool, attachments: dict[str, Json], now_ns: int, label: str
) -> list[Json]:
    extra = _object(run.get("extra"), label, "extra")
    metadata = _object(extra.get("metadata"), label, "extra.metadata")
    fields: Json = {"observation_id": observation_id(ids.run)}
    if ids.parent is not None:
        fields["parent_observation_id"] = observation_id(ids.parent)
    run_type = run.get("run_type")
    if run_type is not None or posted:
        if run_type not in RUN_KINDS:
            raise _invalid(f"{label}: run_type {run_type!r} is not one of {', '.join(RUN_KINDS)}")
        fields["kind"] = RUN_KINDS[run_type]
    name = run.get("name")
    if name is not None or posted:
        if not isinstance(name, str) or not name:
            raise _invalid(f"{label}: name is required")
        fields["name"] = name
    start_ns = _time(run.get("start_time"), label, "start_time")
    if start_ns is None and posted:
        start_ns = ids.dotted_start_ns
        if start_ns is None:
            raise _invalid(f"{label}: start_time is required")
    if start_ns is not None:
        fields["start_time_unix_nano"] = start_ns
    end_ns = _time(run.get("end_time"), label, "end_time")
    if end_ns is not None:
        fields["end_time_unix_nano"] = end_ns
    if "inputs" in run:
        fields["input"] = _object(run["inputs"], label, "inputs")
    outputs = _object(run["outputs"], label, "outputs") if "outputs" in run else None
    usage_metadata = metadata.get("usage_metadata")
    if outputs is not None:
        usage_metadata = outputs.get("usage_metadata", usage_metadata)
        if usage_metadata is None and run.get("run_type") == "llm":
            usage_metadata = _generation_usage(outputs)
        # usage_metadata becomes the observation's usage and cost: not a second copy in output.
        fields["output"] = {k: v for k, v in outputs.items() if k != "usage_metadata"}
    if "error" in run:
        if not isinstance(run["error"], str):
            raise _invalid(f"{label}: error must be a string")
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
    event = _event(
        event_type, ids.trace, timestamp, {k: v for k, v in fields.items() if v is not None}
    )
    event["event_id"] = _event_id("post" if posted else "patch", ids.run, event)
    events = [event]
    if ids.is_root:
        trace_event = _trace_event(run, ids, metadata, extra, timestamp)
        if trace_event is not None:
            events.insert(0, trace_event)
    return events


def _generation_usage(outputs: Json) -> Any:
    """LangChain's tracer leaves an LLM run's usage in its serialised chat message
    (`generations[i][j].message.kwargs.usage_metadata`), where LangSmith's server finds it."""
    for batch in outputs.get("generations") or ():
        for generation in batch if isinstance(batch, list) else ():
            message = generation.get("message") if isinstance(generation, dict) else None
            kwargs = message.get("kwargs") if isinstance(message, dict) else None
            if isinstance(kwargs, dict) and kwargs.get("usage_metadata") is not None:
                return kwargs["usage_metadata"]
    return None


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
        "model_parameters": {k: _scalar(v) for k, v in parameters.items()} or None,
    }


def _scalar(value: Any) -> str | int | float | bool | None:
    """Model parameters are scalars in the contract; lists and objects (stop sequences, tool
    definitions, response formats) are kept as their JSON text."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return orjson.dumps(value, default=str).decode()


def _observation_metadata(
    run: Json,
    ids: _Ids,
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


def _trace_event(run: Json, ids: _Ids, metadata: Json, extra: Json, timestamp: int) -> Json | None:
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
    trace_metadata = {k: v for k, v in trace_metadata.items() if v is not None}
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
        raise _invalid(f"{label}: events must be a list of objects")
    times = [
        _time(event.get("time"), label, "events[].time")
        for event in events
        if event.get("name") == "new_token"
    ]
    return min((t for t in times if t is not None), default=None)


def _tags(value: Any, label: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
        raise _invalid(f"{label}: tags must be a list of strings")
    return [tag for tag in value if tag]


def usage_and_cost(usage_metadata: Any, label: str) -> tuple[Json | None, Json | None]:
    """LangSmith's UsageMetadata as the contract's Usage and Cost: both count inclusively
    (input_tokens includes the cache and audio details), so the numbers carry over. Detail
    keys the contract has no bucket for go to `other` under their LangSmith path."""
    if not isinstance(usage_metadata, dict):
        raise _invalid(f"{label}: usage_metadata must be an object")
    usage: Json = {}
    cost: Json = {}
    usage_other: Json = {}
    cost_other: Json = {}
    for key, value in usage_metadata.items():
        where = f"{label}: usage_metadata.{key}"
        if key in _TOKEN_KEYS:
            usage[key] = _tokens(value, where)
        elif key in _COST_KEYS:
            cost[_COST_KEYS[key]] = _usd(value, where)
        elif isinstance(value, dict):
            buckets = {
                "input_token_details": (_INPUT_TOKEN_DETAILS, usage, usage_other, _tokens),
                "output_token_details": (_OUTPUT_TOKEN_DETAILS, usage, usage_other, _tokens),
                "input_cost_details": (_INPUT_COST_DETAILS, cost, cost_other, _usd),
                "output_cost_details": (_OUTPUT_COST_DETAILS, cost, cost_other, _usd),
            }
            names, target, other, number = buckets.get(key, ({}, usage, usage_other, _tokens))
            for detail, amount in value.items():
                if amount is None:
                    continue
                counted = number(amount, f"{where}.{detail}")
                if detail in names:
                    target[names[detail]] = counted
                else:
                    other[f"{key}.{detail}"] = counted
        elif value is not None:
            usage_other[key] = _tokens(value, where)
    if "total_tokens" not in usage and ("input_tokens" in usage or "output_tokens" in usage):
        usage["total_tokens"] = usage.get("input_tokens", 0) + usage.get("output_tokens", 0)
    if usage_other:
        usage["other"] = usage_other
    if cost_other:
        cost["other"] = cost_other
    return usage or None, cost or None


def _tokens(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise _invalid(f"{where} must be a non-negative number, not {value!r}")
    return round(value)


def _usd(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise _invalid(f"{where} must be a non-negative number, not {value!r}")
    return float(value)


def _score(feedback: Json, directory: RunDirectory, now_ns: int, label: str) -> Json:
    feedback_id = _uuid(feedback.get("id"), label, "id")
    run_id = _optional_uuid(feedback.get("run_id"), label, "run_id")
    trace = _optional_uuid(feedback.get("trace_id"), label, "trace_id")
    if trace is None and run_id is not None:
        trace = directory.trace_of(run_id)
    if trace is None or trace.int == 0:
        raise _invalid(f"{label}: trace_id is required")
    key = feedback.get("key")
    if not isinstance(key, str) or not key:
        raise _invalid(f"{label}: key is required")
    fields: Json = {"score_id": f"langsmith-{feedback_id}", "name": key}
    fields.update(_score_value(feedback.get("score"), feedback.get("value"), label))
    if run_id is not None and run_id != trace:
        fields["observation_id"] = observation_id(run_id)
    comment = feedback.get("comment")
    if comment is not None:
        fields["comment"] = comment if isinstance(comment, str) else orjson.dumps(comment).decode()
    source = _object(feedback.get("feedback_source"), label, "feedback_source")
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
    fields["metadata"] = {k: v for k, v in metadata.items() if v is not None}
    timestamp = (
        _time(feedback.get("modified_at"), label, "modified_at")
        or _time(feedback.get("created_at"), label, "created_at")
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
        return {"value": orjson.dumps(value).decode(), "data_type": "CATEGORICAL"}
    raise _invalid(f"{label}: a feedback needs a score or a value")


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
    content = orjson.dumps(event, option=orjson.OPT_SORT_KEYS)
    digest = hashlib.blake2b(content, digest_size=8).hexdigest()
    return f"ls:{op}:{subject.hex}:{digest}"


# -- value checks -------------------------------------------------------------------------------


def _uuid(value: Any, label: str, key: str) -> uuid.UUID:
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise _invalid(f"{label}: {key} must be a UUID, got {value!r}")


def _optional_uuid(value: Any, label: str, key: str) -> uuid.UUID | None:
    return None if value is None else _uuid(value, label, key)


def _object(value: Any, label: str, key: str) -> Json:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _invalid(f"{label}: {key} must be a JSON object")
    return value


def _time(value: Any, label: str, key: str) -> int | None:
    """Nanoseconds since the epoch of an ISO 8601 time (naive = UTC: LangSmith's REST tutorial
    sends `datetime.utcnow().isoformat()`) or of epoch milliseconds (the JS SDK's numbers)."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return round(value * 1_000_000)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            moment = parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
            if moment >= _EPOCH:
                return _unix_nano(moment)
    raise _invalid(f"{label}: {key} must be an ISO 8601 timestamp, got {value!r}")


def _unix_nano(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1000


# -- HTTP -----------------------------------------------------------------------------------------


def _checked(events: Sequence[tuple[str, Json]], call: Call) -> list[Json]:
    """The events (oversized fields cut by the publisher's check), once every one satisfies the
    contract; else GatewayError(422) naming the first run or feedback that does not."""
    ready = []
    for label, event in events:
        problem = call.publisher.problem(event)
        if problem is not None:
            raise _invalid(f"{label}: {problem}")
        ready.append(event)
    return ready


class LangSmithRuns:
    """The handlers, sharing one run directory."""

    def __init__(self) -> None:
        self.directory = RunDirectory()

    async def info(self, call: Call) -> web.Response:
        limits = call.settings
        # The SDK bounds the uncompressed size of a batch; it may also send it uncompressed.
        size_limit = min(SIZE_LIMIT_BYTES, limits.max_body_bytes, limits.max_decoded_bytes)
        return web.json_response(
            {
                "version": SERVER_VERSION,
                "license_expiration_time": None,
                "batch_ingest_config": {
                    "use_multipart_endpoint": True,
                    "scale_up_qsize_trigger": 1000,
                    "scale_up_nthreads_limit": 16,
                    "scale_down_nempty_trigger": 4,
                    "size_limit": 100,
                    "size_limit_bytes": size_limit,
                },
                # Lets the SDK send zstd-compressed multipart bodies, which the gateway decodes.
                "instance_flags": {"zstd_compression_enabled": True},
            }
        )

    async def multipart(self, call: Call) -> web.Response:
        ingest = ingest_from_parts(parse_multipart(call.body, call.content_type))
        return await self._publish(call, ingest, 202, {})

    async def batch(self, call: Call) -> web.Response:
        return await self._publish(call, ingest_from_batch(call.body), 202, {})

    async def create_run(self, call: Call) -> web.Response:
        run = _json_body(call.body)
        if not isinstance(run, dict) or run.get("id") is None:
            raise _invalid("a run is a JSON object with an id")
        return await self._publish(call, Ingest(runs=[RunOp("post", str(run["id"]), run)]), 202, {})

    async def update_run(self, call: Call) -> web.Response:
        run_id = call.request.match_info["run_id"]
        run = _with_id(_json_body(call.body), run_id, f"PATCH /runs/{run_id}", "run")
        return await self._publish(call, Ingest(runs=[RunOp("patch", run_id, run)]), 202, {})

    async def create_feedback(self, call: Call) -> web.Response:
        feedback = _json_body(call.body)
        if not isinstance(feedback, dict) or feedback.get("id") is None:
            raise _invalid("a feedback is a JSON object with an id")
        await self._publish(call, Ingest(feedback=[feedback]), 200, {})
        return web.json_response(feedback)

    async def _publish(self, call: Call, ingest: Ingest, status: int, body: Json) -> web.Response:
        events = _checked(translate(ingest, self.directory, _now_ns()), call)
        await call.publisher.publish(events, call.caller)
        return web.json_response(body, status=status)


def _now_ns() -> int:
    return _unix_nano(datetime.now(UTC))


def _render_error(_: web.Request, error: GatewayError) -> web.Response:
    return web.json_response({"detail": error.message}, status=error.status)


def _adapter() -> Adapter:
    runs = LangSmithRuns()
    return Adapter(
        name="langsmith",
        routes=(
            Route("GET", "/info", runs.info, authenticated=False),
            Route("POST", "/runs/multipart", runs.multipart),
            Route("POST", "/runs/batch", runs.batch),
            Route("POST", "/runs", runs.create_run),
            Route("PATCH", "/runs/{run_id}", runs.update_run),
            Route("POST", "/feedback", runs.create_feedback),
        ),
        render_error=_render_error,
    )


ADAPTER = _adapter()
