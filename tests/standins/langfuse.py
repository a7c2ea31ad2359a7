"""A strict stand-in for Langfuse's ingestion API, served on a real local HTTP port.

It accepts what a Langfuse v4 server accepts on `POST /api/public/otel/v1/traces` (OTLP protobuf,
optionally gzip) and `POST /api/public/scores` (one score as JSON), and is stricter where the
real server would accept a request and then drop or rewrite its content later, out of sight of the
sender (bad types, bad environments, malformed JSON attributes): such requests get a 400 here.

Spans are stored like Langfuse v4 stores them: one row per (trace id, span id, start time), a
re-send with the same key replacing the row. `receipts` counts how often each key arrived.

Runs in its own threads, so sync tests and async code can both talk to it:

    with LangfuseStandIn() as langfuse:
        exporter = LangfuseExporter(langfuse.url, langfuse.public_key, langfuse.secret_key)
        langfuse.fail_next(503)          # the next request answers 503
        with langfuse.down(): ...        # connections refused until the block ends
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
import uuid
import zlib
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from .server import Fault, Reply, StandInServer
from .server import ReceivedRequest as ReceivedRequest

TRACES_PATH = "/api/public/otel/v1/traces"
SCORES_PATH = "/api/public/scores"
ENDPOINTS = {TRACES_PATH: "traces", SCORES_PATH: "scores"}
SUPPORTED_INGESTION_VERSION = 4

OBSERVATION_TYPES = frozenset(
    {
        "span",
        "generation",
        "event",
        "embedding",
        "agent",
        "tool",
        "chain",
        "retriever",
        "guardrail",
        "evaluator",
    }
)
LEVELS = frozenset({"DEBUG", "DEFAULT", "WARNING", "ERROR"})
ENVIRONMENT = re.compile(r"(?!langfuse)[a-z0-9_-]{1,40}")
STRING_ATTRIBUTES = (
    "langfuse.trace.name",
    "user.id",
    "session.id",
    "langfuse.trace.input",
    "langfuse.trace.output",
    "langfuse.release",
    "langfuse.environment",
    "langfuse.observation.type",
    "langfuse.observation.level",
    "langfuse.observation.status_message",
    "langfuse.observation.input",
    "langfuse.observation.output",
    "langfuse.observation.model.name",
    "langfuse.observation.completion_start_time",
)
JSON_OBJECT_ATTRIBUTES = (
    "langfuse.trace.metadata",
    "langfuse.observation.metadata",
    "langfuse.observation.model.parameters",
    "langfuse.observation.usage_details",
    "langfuse.observation.cost_details",
)
SCORE_FIELDS = frozenset(
    {
        "id",
        "traceId",
        "observationId",
        "sessionId",
        "datasetRunId",
        "name",
        "value",
        "dataType",
        "configId",
        "comment",
        "metadata",
        "environment",
        "queueId",
        "source",
    }
)
TEXT_SCORE_MAX_LENGTH = 500


class SpanKey(NamedTuple):
    """What identifies a stored span in Langfuse v4."""

    trace_id: str
    span_id: str
    start_time_unix_nano: int


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as decoded from a request; ids as lowercase hex, attribute values as Python."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    start_time_unix_nano: int
    end_time_unix_nano: int
    status_code: int
    status_message: str
    attributes: dict[str, Any]
    resource_attributes: dict[str, Any]
    scope_name: str
    scope_version: str

    @property
    def key(self) -> SpanKey:
        return SpanKey(self.trace_id, self.span_id, self.start_time_unix_nano)

    def json(self, attribute: str) -> Any:
        """The value of a JSON-text attribute, parsed."""
        return json.loads(self.attributes[attribute])


class LangfuseStandIn(StandInServer):
    thread_name = "langfuse-standin"
    secret_header = "authorization"
    error_key = "message"
    too_large_message = "Request body too large"
    methods = ("POST", "GET", "PUT", "DELETE")
    length_checked = frozenset({"POST"})

    def __init__(
        self,
        public_key: str = "pk-lf-standin",
        secret_key: str = "sk-lf-standin",
        *,
        max_body_bytes: int = 16 * 1024 * 1024,
        hang_limit_seconds: float = 30.0,
    ) -> None:
        super().__init__(max_body_bytes=max_body_bytes, hang_limit_seconds=hang_limit_seconds)
        self.public_key = public_key
        self.secret_key = secret_key
        self._spans: dict[SpanKey, ReceivedSpan] = {}
        self._receipts: Counter[SpanKey] = Counter()
        self._scores: dict[str, dict[str, Any]] = {}
        self._score_receipts: Counter[str] = Counter()

    # -- faults -----------------------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        *,
        count: int = 1,
        retry_after: int | str | None = None,
        endpoint: str | None = None,
    ) -> None:
        """The next `count` requests (to "traces", "scores" or any `endpoint`) answer `status`
        without being stored, with a Retry-After header when given."""
        self._add_faults(Fault.failure(status, retry_after, endpoint), count)

    def hang_next(
        self, *, count: int = 1, endpoint: str | None = None, after_recording: bool = False
    ) -> None:
        """The next `count` requests never get an answer (until `stop`); with
        `after_recording` they are stored first, like a response lost on its way back."""
        fault = Fault(endpoint, hang=not after_recording, hang_after_recording=after_recording)
        self._add_faults(fault, count)

    # -- what was received ------------------------------------------------------------------

    @property
    def spans(self) -> list[ReceivedSpan]:
        """The stored rows, one per span key, by start time."""
        with self._lock:
            rows = list(self._spans.values())
        return sorted(rows, key=lambda span: (span.start_time_unix_nano, span.span_id))

    def span(self, span_id: str) -> ReceivedSpan:
        """The one stored row of `span_id`; fails when there is none or more than one."""
        rows = [span for span in self.spans if span.span_id == span_id]
        assert len(rows) == 1, f"{len(rows)} rows stored for span {span_id}"
        return rows[0]

    @property
    def receipts(self) -> dict[SpanKey, int]:
        """How many accepted requests carried each span key."""
        with self._lock:
            return dict(self._receipts)

    @property
    def scores(self) -> dict[str, dict[str, Any]]:
        """The stored scores by id, each the body last received."""
        with self._lock:
            return dict(self._scores)

    @property
    def score_receipts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._score_receipts)

    # -- request handling (called from server threads) --------------------------------------

    def _answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply | None:
        reply = self._handle(method, path, headers, body)
        self._log(method, path, headers, reply.status if reply else None)
        return reply

    def _handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply | None:
        """The reply to one request, None to leave it unanswered."""
        endpoint = ENDPOINTS.get(path)
        if endpoint is None:
            return Reply(404, {"message": "Not found"})
        fault = self._take_fault(endpoint)
        if fault is not None and fault.hang:
            self._hang()
            return None
        if fault is not None and fault.status is not None:
            return self._fault_reply(fault)
        if method != "POST":
            return Reply(405, {"message": "Method not allowed"})
        if not self._authorized(headers.get("authorization", "")):
            # Never echo what was sent: it may be a secret.
            return Reply(401, {"message": "Invalid credentials"})
        if endpoint == "traces":
            reply = self._ingest_spans(headers, body)
        else:
            reply = self._ingest_score(headers, body)
        if fault is not None and fault.hang_after_recording:
            self._hang()
            return None
        return reply

    def _authorized(self, authorization: str) -> bool:
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            credentials = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            return False
        expected = f"{self.public_key}:{self.secret_key}".encode()
        return hmac.compare_digest(credentials, expected)

    def _ingest_spans(self, headers: dict[str, str], body: bytes) -> Reply:
        version = headers.get("x-langfuse-ingestion-version")
        if version is None or not version.strip().isdigit():
            return _bad_request(
                "x-langfuse-ingestion-version header missing or not a number "
                f"(this stand-in requires {SUPPORTED_INGESTION_VERSION}: the direct write path)"
            )
        if int(version) != SUPPORTED_INGESTION_VERSION:
            return _bad_request(
                f"Unsupported x-langfuse-ingestion-version {version}; "
                f"this stand-in requires {SUPPORTED_INGESTION_VERSION}"
            )
        if "application/x-protobuf" not in headers.get("content-type", ""):
            return _bad_request("Invalid content type: expected application/x-protobuf")
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding == "gzip":
            try:
                body = _gunzip(body, self.max_body_bytes)
            except _TooLarge:
                return Reply(413, {"message": "Decompressed body too large"})
            except ValueError as error:
                return _bad_request(f"Failed to decompress body: {error}")
        elif encoding != "identity":
            return _bad_request(f"Unsupported Content-Encoding {encoding!r}: only gzip")
        request = ExportTraceServiceRequest()
        try:
            request.ParseFromString(body)
        except DecodeError as error:
            return _bad_request(f"Failed to decode ExportTraceServiceRequest: {error}")
        spans, problems = decode_export(request)
        if problems:
            # Like the server's id validation: one bad span rejects the whole export.
            return Reply(400, {"message": "Invalid OTLP export", "errors": problems})
        with self._lock:
            for span in spans:
                self._spans[span.key] = span
                self._receipts[span.key] += 1
        return Reply(200, {})

    def _ingest_score(self, headers: dict[str, str], body: bytes) -> Reply:
        if "application/json" not in headers.get("content-type", ""):
            return _bad_request("Invalid content type: expected application/json")
        try:
            score = json.loads(body)
        except ValueError as error:
            return _bad_request(f"Invalid JSON: {error}")
        if not isinstance(score, dict):
            return _bad_request("Expected one score object")
        if problems := score_problems(score):
            return Reply(400, {"message": "Invalid score", "errors": problems})
        score_id = score.get("id") or str(uuid.uuid4())
        with self._lock:
            self._scores[score_id] = score
            self._score_receipts[score_id] += 1
        return Reply(200, {"id": score_id})


class _TooLarge(Exception):
    pass


def _gunzip(body: bytes, limit: int) -> bytes:
    """Decompress, refusing to inflate beyond `limit` bytes (a gzip bomb stays small here)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as error:
        raise ValueError(str(error)) from error
    if len(data) > limit:
        raise _TooLarge
    if not inflater.eof:
        raise ValueError("truncated gzip stream")
    return data


def _bad_request(message: str) -> Reply:
    return Reply(400, {"message": message})


def _plain(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_plain(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind)


def _attributes(key_values: Any) -> dict[str, Any]:
    pairs: list[KeyValue] = list(key_values)
    return {pair.key: _plain(pair.value) for pair in pairs}


def decode_export(request: ExportTraceServiceRequest) -> tuple[list[ReceivedSpan], list[str]]:
    """The spans of an export request, and what Langfuse would object to in them."""
    spans: list[ReceivedSpan] = []
    problems: list[str] = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for raw in scope_spans.spans:
                span, span_problems = _decode_span(raw, resource, scope_spans.scope)
                problems.extend(span_problems)
                if span is not None:
                    spans.append(span)
    return spans, problems


def _decode_span(
    raw: Span, resource: dict[str, Any], scope: InstrumentationScope
) -> tuple[ReceivedSpan | None, list[str]]:
    problems = []
    if len(raw.trace_id) != 16 or not any(raw.trace_id):
        problems.append(f"span {raw.span_id.hex() or '?'}: traceId must be 16 bytes, not all zero")
    if len(raw.span_id) != 8 or not any(raw.span_id):
        problems.append(f"span {raw.span_id.hex() or '?'}: spanId must be 8 bytes, not all zero")
    if raw.parent_span_id and (len(raw.parent_span_id) != 8 or not any(raw.parent_span_id)):
        problems.append(f"span {raw.span_id.hex()}: parentSpanId must be empty or 8 bytes")
    if problems:
        return None, problems
    span = ReceivedSpan(
        trace_id=raw.trace_id.hex(),
        span_id=raw.span_id.hex(),
        parent_span_id=raw.parent_span_id.hex() or None,
        name=raw.name,
        start_time_unix_nano=raw.start_time_unix_nano,
        end_time_unix_nano=raw.end_time_unix_nano,
        status_code=raw.status.code,
        status_message=raw.status.message,
        attributes=_attributes(raw.attributes),
        resource_attributes=resource,
        scope_name=scope.name,
        scope_version=scope.version,
    )
    return span, [f"span {span.span_id}: {problem}" for problem in span_problems(span)]


def span_problems(span: ReceivedSpan) -> list[str]:
    """Why Langfuse would reject, drop or silently rewrite (part of) this span."""
    problems = []
    if not span.start_time_unix_nano or not span.end_time_unix_nano:
        problems.append("start and end time are required")
    elif span.start_time_unix_nano > span.end_time_unix_nano:
        problems.append("ends before it starts")
    attributes = span.attributes
    for key in (*STRING_ATTRIBUTES, *JSON_OBJECT_ATTRIBUTES):
        if key in attributes and not isinstance(attributes[key], str):
            problems.append(f"{key} must be a string")
    observation_type = attributes.get("langfuse.observation.type")
    if observation_type not in OBSERVATION_TYPES:
        problems.append(f"langfuse.observation.type {observation_type!r} is not a known type")
    level = attributes.get("langfuse.observation.level")
    if level is not None and level not in LEVELS:
        problems.append(f"langfuse.observation.level {level!r} is not a level")
    environment = attributes.get("langfuse.environment")
    if isinstance(environment, str) and not ENVIRONMENT.fullmatch(environment):
        problems.append(f"langfuse.environment {environment!r} would be rewritten to 'default'")
    tags = attributes.get("langfuse.trace.tags")
    if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        problems.append("langfuse.trace.tags must be an array of strings")
    start = attributes.get("langfuse.observation.completion_start_time")
    if isinstance(start, str) and not _is_iso_8601(start):
        problems.append(f"completion_start_time {start!r} is not ISO-8601")
    objects = {}
    for key in JSON_OBJECT_ATTRIBUTES:
        value = attributes.get(key)
        if isinstance(value, str):
            try:
                objects[key] = json.loads(value)
            except ValueError:
                problems.append(f"{key} is not JSON")
                continue
            if not isinstance(objects[key], dict):
                problems.append(f"{key} is not a JSON object")
                del objects[key]
    for name, count in objects.get("langfuse.observation.usage_details", {}).items():
        if not _is_count(count):
            problems.append(f"usage_details.{name} = {count!r} is not a non-negative integer")
    for name, usd in objects.get("langfuse.observation.cost_details", {}).items():
        if not _is_number(usd) or usd < 0:
            problems.append(f"cost_details.{name} = {usd!r} is not a non-negative number")
    for name, value in objects.get("langfuse.observation.model.parameters", {}).items():
        if not (isinstance(value, str) or _is_number(value)):
            problems.append(f"model.parameters.{name} = {value!r} is not a string or number")
    return problems


def score_problems(score: dict[str, Any]) -> list[str]:
    """Why the scores API would reject this body, or accept it and drop the score later."""
    problems = [f"unknown field {name!r}" for name in score.keys() - SCORE_FIELDS]
    name = score.get("name")
    if not isinstance(name, str) or not name:
        problems.append("name must be a non-empty string")
    score_id = score.get("id")
    if score_id is not None and not (
        isinstance(score_id, str) and 0 < len(score_id) <= 800 and "\r" not in score_id
    ):
        problems.append("id must be a string of 1 to 800 characters without carriage returns")
    if not any(isinstance(score.get(key), str) for key in ("traceId", "sessionId", "datasetRunId")):
        problems.append("one of traceId, sessionId, datasetRunId is required")
    if score.get("observationId") is not None and score.get("traceId") is None:
        problems.append("observationId requires traceId")
    problems.extend(_score_value_problems(score.get("dataType"), score.get("value")))
    source = score.get("source", "API")
    if source not in ("API", "ANNOTATION"):
        problems.append(f"source {source!r} is not API or ANNOTATION")
    if source == "ANNOTATION" and not score.get("configId"):
        problems.append("ANNOTATION scores require configId")
    environment = score.get("environment")
    if environment is not None and not (
        isinstance(environment, str) and ENVIRONMENT.fullmatch(environment)
    ):
        problems.append(f"environment {environment!r} is not a valid environment name")
    comment = score.get("comment")
    if comment is not None and not isinstance(comment, str):
        problems.append("comment must be a string")
    return problems


def _score_value_problems(data_type: Any, value: Any) -> list[str]:
    if data_type in ("NUMERIC", "BOOLEAN") and not _is_number(value):
        return [f"{data_type} value must be a number, got {value!r}"]
    if data_type == "BOOLEAN" and value not in (0, 1):
        return [f"BOOLEAN value must be 0 or 1, got {value!r}"]
    if data_type in ("CATEGORICAL", "CORRECTION", "TEXT") and not isinstance(value, str):
        return [f"{data_type} value must be a string, got {value!r}"]
    if data_type == "TEXT" and not 0 < len(value) <= TEXT_SCORE_MAX_LENGTH:
        return [f"TEXT value must have 1 to {TEXT_SCORE_MAX_LENGTH} characters"]
    if data_type is None and not (isinstance(value, str) or _is_number(value)):
        return [f"value must be a string or a number, got {value!r}"]
    if data_type not in (None, "NUMERIC", "BOOLEAN", "CATEGORICAL", "CORRECTION", "TEXT"):
        return [f"unknown dataType {data_type!r}"]
    return []


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_iso_8601(text: str) -> bool:
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True
