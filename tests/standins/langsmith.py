"""A strict stand-in for LangSmith's run ingestion API, served on a real local HTTP port.

It accepts what LangSmith accepts on `POST /runs/multipart` (multipart/form-data, optionally
gzip- or zstd-compressed as a whole) and answers `GET /info` like LangSmith. It checks every run
the way the server does (UUID ids, trace id = first dotted-order segment = root run id, dotted
order format and prefixes, run types, usage_metadata keys) and, like the server, rejects the
whole batch with 422 when one run is bad. A run or feedback id received before makes the whole
request answer 409 "payload already received" and nothing of it is stored.

Runs in its own threads, so sync tests and async code can both talk to it:

    with LangSmithStandIn() as langsmith:
        exporter = LangSmithExporter(langsmith.url, langsmith.api_key, project="p")
        langsmith.fail_next(429, retry_after=7)  # the next request answers 429
        langsmith.hang_next()                    # the next request never gets an answer
        with langsmith.down(): ...               # connections refused until the block ends
"""

from __future__ import annotations

import hmac
import json
import re
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from typing import Any

from . import server
from .server import Reply, StandInServer

RUN_TYPES = frozenset({"tool", "chain", "llm", "retriever", "embedding", "prompt", "parser"})
RUN_FIELDS = frozenset({"inputs", "outputs", "events", "extra", "error", "serialized"})
# langsmith.schemas.UsageMetadata and its detail TypedDicts (SDK 0.15).
USAGE_KEYS = frozenset(
    {
        "input_tokens",
        "output_tokens",
        "total_tokens",
        "input_token_details",
        "output_token_details",
        "input_cost",
        "output_cost",
        "total_cost",
        "input_cost_details",
        "output_cost_details",
    }
)
USAGE_DETAIL_KEYS = {
    "input_token_details": frozenset(
        {
            "audio",
            "cache_creation",
            "cache_read",
            "cache_read_over_200k",
            "ephemeral_5m_input_tokens",
            "ephemeral_1h_input_tokens",
        }
    ),
    "output_token_details": frozenset({"audio", "reasoning"}),
    "input_cost_details": frozenset({"audio", "cache_creation", "cache_read"}),
    "output_cost_details": frozenset({"audio", "reasoning"}),
}
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_SEGMENT = rf"\d{{8}}T\d{{12}}Z{_UUID}"
DOTTED_ORDER = re.compile(rf"^{_SEGMENT}(\.{_SEGMENT})*$")
_SEGMENT_TIME_LENGTH = len("20240531T095804831161Z")
_DISPOSITION_NAME = re.compile(r'^form-data;\s*name="([^"]+)"$')
MULTIPART_PATH = "/runs/multipart"
CONFLICT = {"error": "Conflict: payload already received: payloads already received"}


@dataclass(frozen=True)
class ReceivedPart:
    name: str
    headers: dict[str, str]  # lower-case names
    data: bytes

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass(frozen=True)
class ReceivedRequest(server.ReceivedRequest):
    """A request as it arrived (API key removed), its parts, and the status it got (None: no
    answer)."""

    parts: list[ReceivedPart] = field(default_factory=list)


class Rejected(Exception):
    """The request as a whole is refused with `status`."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class _Server(ThreadingHTTPServer):
    # The exporter resends up to 8 items at once after a 409: beyond the default listen backlog
    # of 5, a connection waits for the 1 s SYN retransmit and the tests become slow and flaky.
    request_queue_size = 64


class LangSmithStandIn(StandInServer):
    thread_name = "langsmith-standin"
    secret_header = "x-api-key"
    error_key = "detail"
    too_large_message = "Request Entity Too Large"
    server_class = _Server
    request_class = ReceivedRequest

    def __init__(
        self,
        api_key: str = "lsv2_pt_standin_secret",
        *,
        max_body_bytes: int = 20 * 1024 * 1024,
        hang_limit_seconds: float = 30.0,
    ) -> None:
        super().__init__(max_body_bytes=max_body_bytes, hang_limit_seconds=hang_limit_seconds)
        self.api_key = api_key
        self._runs: dict[str, dict[str, Any]] = {}
        self._feedback: dict[str, dict[str, Any]] = {}

    # -- what was received ------------------------------------------------------------------

    @property
    def runs(self) -> dict[str, dict[str, Any]]:
        """Stored runs by id: the `post.<id>` JSON with its field parts merged in."""
        with self._lock:
            return dict(self._runs)

    def run(self, run_id: uuid.UUID | str) -> dict[str, Any]:
        return self.runs[str(run_id)]

    @property
    def feedback(self) -> dict[str, dict[str, Any]]:
        """Stored feedback by id."""
        with self._lock:
            return dict(self._feedback)

    # -- request handling (called from server threads) --------------------------------------

    def _logged(self, path: str) -> bool:
        return path == MULTIPART_PATH  # `requests`: every request to `/runs/multipart`

    def _answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply | None:
        fault = self._take_fault() if path == MULTIPART_PATH else None
        if fault is not None and fault.hang:
            self._log(method, path, headers, None)
            self._hang()
            return None
        if fault is not None and fault.status is not None:
            reply, parts = self._fault_reply(fault), []
        else:
            reply, parts = self._handle(method, path, headers, body)
        self._log(method, path, headers, reply.status, parts=parts)
        return reply

    def _handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[Reply, list[ReceivedPart]]:
        """The reply to one request, and the parts it carried."""
        if path == "/info" and method == "GET":
            return Reply(200, self._info()), []
        if path != MULTIPART_PATH:
            return Reply(404, {"detail": "Not Found"}), []
        if method != "POST":
            return Reply(405, {"detail": "Method Not Allowed"}), []
        if not hmac.compare_digest(headers.get("x-api-key", "").encode(), self.api_key.encode()):
            return Reply(401, {"detail": "Invalid token"}), []  # never echo what was sent
        try:
            parts = parse_multipart(
                decode_body(body, headers.get("content-encoding"), self.max_body_bytes),
                headers.get("content-type", ""),
            )
        except Rejected as rejected:
            return Reply(rejected.status, {"detail": rejected.detail}), []
        with self._lock:
            try:
                runs, feedback = validate_batch(parts, self._runs)
            except Rejected as rejected:
                reply = Reply(rejected.status, {"detail": rejected.detail})
            else:
                if any(key in self._runs for key in runs) or any(
                    key in self._feedback for key in feedback
                ):
                    reply = Reply(409, CONFLICT)
                else:
                    self._runs.update(runs)
                    self._feedback.update(feedback)
                    reply = Reply(202, {})
        return reply, parts

    def _info(self) -> dict[str, Any]:
        return {
            "version": "0.12.0",
            "license_expiration_time": None,
            "batch_ingest_config": {
                "use_multipart_endpoint": True,
                "scale_up_qsize_trigger": 1000,
                "scale_up_nthreads_limit": 16,
                "scale_down_nempty_trigger": 4,
                "size_limit": 100,
                "size_limit_bytes": self.max_body_bytes,
            },
            "instance_flags": {},
        }


# -- body decoding ---------------------------------------------------------------------------


def decode_body(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body without its whole-request Content-Encoding (gzip, zstd or none)."""
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding == "gzip":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            data = inflater.decompress(body, limit + 1)
        except zlib.error as error:
            raise Rejected(400, f"invalid gzip body: {error}") from error
        if len(data) > limit:
            raise Rejected(413, "Request Entity Too Large")
        if not inflater.eof:
            raise Rejected(400, "truncated gzip body")
        return data
    if encoding == "zstd":
        import zstandard  # only needed when a client compresses with zstd, as the SDK can

        try:
            reader = zstandard.ZstdDecompressor().stream_reader(body)
            data = reader.read(limit + 1)
        except zstandard.ZstdError as error:
            raise Rejected(400, f"invalid zstd body: {error}") from error
        if len(data) > limit:
            raise Rejected(413, "Request Entity Too Large")
        return data
    raise Rejected(415, f"unsupported Content-Encoding {encoding}")


# -- multipart parsing -----------------------------------------------------------------------


def parse_multipart(body: bytes, content_type: str) -> list[ReceivedPart]:
    """The parts of a multipart/form-data body; each must name itself and carry its
    Content-Type and length (header or `length=` parameter), without its own encoding."""
    media_type, _, parameters = content_type.partition(";")
    if media_type.strip().lower() != "multipart/form-data":
        raise Rejected(400, f"expected multipart/form-data, got {media_type.strip()!r}")
    match = re.search(r'boundary="?([^";]+)"?', parameters)
    if match is None:
        raise Rejected(400, "multipart/form-data without a boundary")
    delimiter = b"\r\n--" + match.group(1).encode()
    chunks = (b"\r\n" + body).split(delimiter)
    if chunks[0] != b"" or len(chunks) < 2 or not chunks[-1].startswith(b"--"):
        raise Rejected(400, "malformed multipart body")
    parts: list[ReceivedPart] = []
    for chunk in chunks[1:-1]:
        if not chunk.startswith(b"\r\n") or b"\r\n\r\n" not in chunk:
            raise Rejected(400, "malformed multipart part")
        head, _, data = chunk[2:].partition(b"\r\n\r\n")
        parts.append(_part(head.decode("latin-1"), data))
    return parts


def _part(head: str, data: bytes) -> ReceivedPart:
    headers: dict[str, str] = {}
    for line in head.split("\r\n"):
        name, colon, value = line.partition(":")
        if not colon:
            raise Rejected(400, f"malformed part header {line!r}")
        headers[name.strip().lower()] = value.strip()
    disposition = _DISPOSITION_NAME.match(headers.get("content-disposition", ""))
    if disposition is None:
        raise Rejected(422, "a part without a form-data name")
    name = disposition.group(1)
    content_type = headers.get("content-type")
    if not content_type:
        raise Rejected(422, f"part {name} has no Content-Type")
    if "content-encoding" in headers:
        raise Rejected(422, f"part {name} has its own Content-Encoding, which is not allowed")
    declared = headers.get("content-length")
    if declared is None:
        length = re.search(r";\s*length=(\d+)", content_type)
        declared = length.group(1) if length else None
    if declared is None:
        raise Rejected(422, f"part {name} has neither Content-Length nor a length parameter")
    if not declared.isdigit() or int(declared) != len(data):
        raise Rejected(422, f"part {name} declares {declared} bytes but has {len(data)}")
    return ReceivedPart(name, headers, data)


# -- validation ------------------------------------------------------------------------------


def validate_batch(
    parts: list[ReceivedPart], known_runs: dict[str, dict[str, Any]]
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Runs and feedback of a batch, by id; raises Rejected(422) for the whole batch when any
    part or run is invalid, as LangSmith does."""
    runs: dict[str, dict[str, Any]] = {}
    run_fields: dict[str, dict[str, Any]] = {}
    feedback: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for part in parts:
        if part.name in seen:
            raise Rejected(422, f"part {part.name} appears twice")
        seen.add(part.name)
        if not part.headers["content-type"].startswith("application/json"):
            raise Rejected(422, f"part {part.name} is not application/json")
        try:
            value = part.json()
        except ValueError as error:
            raise Rejected(422, f"part {part.name} is not JSON: {error}") from error
        event, _, rest = part.name.partition(".")
        part_id, _, run_field = rest.partition(".")
        if event == "feedback" and not run_field:
            feedback[part_id] = _valid_feedback(part_id, value)
        elif event == "post" and not run_field:
            runs[part_id] = value
        elif event == "post" and run_field in RUN_FIELDS:
            run_fields.setdefault(part_id, {})[run_field] = value
        else:
            raise Rejected(
                422,
                f"unsupported part {part.name} (this stand-in takes post.* and feedback.* parts)",
            )
    for run_id, fields in run_fields.items():
        if run_id not in runs:
            raise Rejected(422, f"fields {sorted(fields)} sent without their run post.{run_id}")
        for name, value in fields.items():
            if name in runs[run_id]:
                raise Rejected(422, f"run {run_id}: {name} given inline and as a part")
            runs[run_id][name] = value
    for run_id, run in runs.items():
        if problem := run_problem(run_id, run, {**known_runs, **runs}):
            raise Rejected(422, f"run {run_id}: {problem}")
    return runs, feedback


def run_problem(run_id: str, run: Any, all_runs: dict[str, dict[str, Any]]) -> str | None:
    """What LangSmith would reject in `run` (posted as `post.<run_id>`), or None."""
    if not isinstance(run, dict):
        return "a run is a JSON object"
    for key in ("id", "trace_id"):
        if not _is_uuid(run.get(key)):
            return f"{key} must be a UUID, got {run.get(key)!r}"
    if run["id"] != run_id:
        return f"part name says {run_id} but id is {run['id']}"
    if not run.get("name") or not isinstance(run["name"], str):
        return "name is required"
    if run.get("run_type") not in RUN_TYPES:
        return f"run_type {run.get('run_type')!r} is not one of {sorted(RUN_TYPES)}"
    if not run.get("session_name") and not run.get("session_id"):
        return "session_name or session_id is required"
    start = _timestamp(run.get("start_time"))
    if start is None:
        return "start_time must be an ISO 8601 timestamp"
    if run.get("end_time") is not None:
        end = _timestamp(run["end_time"])
        if end is None:
            return "end_time must be an ISO 8601 timestamp"
        if end < start:
            return "end_time is before start_time"
    if problem := _dotted_order_problem(run, start, all_runs):
        return problem
    for key in ("inputs", "outputs", "extra"):
        if key in run and not isinstance(run[key], dict):
            return f"{key} must be a JSON object"
    if "events" in run and not isinstance(run["events"], list):
        return "events must be a list"
    if "error" in run and not isinstance(run["error"], str):
        return "error must be a string"
    if "tags" in run and not (
        isinstance(run["tags"], list) and all(isinstance(tag, str) for tag in run["tags"])
    ):
        return "tags must be a list of strings"
    for usage in (
        (run.get("outputs") or {}).get("usage_metadata"),
        ((run.get("extra") or {}).get("metadata") or {}).get("usage_metadata"),
    ):
        if usage is not None and (problem := usage_metadata_problem(usage)):
            return problem
    return None


def _dotted_order_problem(
    run: dict[str, Any], start: datetime, all_runs: dict[str, dict[str, Any]]
) -> str | None:
    dotted_order = run.get("dotted_order")
    if not isinstance(dotted_order, str) or not DOTTED_ORDER.match(dotted_order):
        return f"dotted_order {dotted_order!r} is not %Y%m%dT%H%M%S%fZ<uuid>[.…]"
    segments = dotted_order.split(".")
    ids = [segment[_SEGMENT_TIME_LENGTH:] for segment in segments]
    times = [segment[:_SEGMENT_TIME_LENGTH] for segment in segments]
    if ids[0] != run["trace_id"]:
        return "trace_id does not match first part of dotted_order"
    if ids[-1] != run["id"]:
        return "the last part of dotted_order is not the run id"
    if times != sorted(times):
        return "dotted_order times go backwards: a child starts before its parent"
    if times[-1] != start.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ"):
        return "the last part of dotted_order is not the run's start_time"
    parent_run_id = run.get("parent_run_id")
    if parent_run_id is None:
        if len(segments) != 1:
            return "dotted_order must contain a single part for root runs"
        if run["id"] != run["trace_id"]:
            return "a root run's id must be its trace_id"
        return None
    if not _is_uuid(parent_run_id):
        return f"parent_run_id must be a UUID, got {parent_run_id!r}"
    if len(segments) < 2 or ids[-2] != parent_run_id:
        return "parent_run_id is not the second-to-last part of dotted_order"
    parent = all_runs.get(parent_run_id)
    if parent is not None and not dotted_order.startswith(f"{parent.get('dotted_order')}."):
        return "the parent's dotted_order is not a prefix of the run's"
    return None


def usage_metadata_problem(usage: Any) -> str | None:
    """What langsmith.schemas.UsageMetadata does not allow in `usage`, or None."""
    if not isinstance(usage, dict):
        return "usage_metadata must be an object"
    if unexpected := set(usage) - USAGE_KEYS:
        return f"Unexpected keys in usage metadata: {sorted(unexpected)}"
    for key, value in usage.items():
        if key in USAGE_DETAIL_KEYS:
            if not isinstance(value, dict):
                return f"usage_metadata.{key} must be an object"
            if unexpected := set(value) - USAGE_DETAIL_KEYS[key]:
                return f"Unexpected keys in usage_metadata.{key}: {sorted(unexpected)}"
            values = list(value.values())
        else:
            values = [value]
        for number in values:
            if isinstance(number, bool) or not isinstance(number, int | float) or number < 0:
                return f"usage_metadata.{key} must hold non-negative numbers"
    return None


def _valid_feedback(feedback_id: str, feedback: Any) -> dict[str, Any]:
    if not isinstance(feedback, dict):
        raise Rejected(422, f"feedback {feedback_id} is not a JSON object")
    if feedback.get("id") != feedback_id or not _is_uuid(feedback_id):
        raise Rejected(422, f"feedback part {feedback_id} carries id {feedback.get('id')!r}")
    if not _is_uuid(feedback.get("trace_id")):
        raise Rejected(422, f"feedback {feedback_id}: trace_id is required in multipart")
    if feedback.get("run_id") is not None and not _is_uuid(feedback["run_id"]):
        raise Rejected(422, f"feedback {feedback_id}: run_id must be a UUID")
    if not feedback.get("key") or not isinstance(feedback["key"], str):
        raise Rejected(422, f"feedback {feedback_id}: key is required")
    score = feedback.get("score")
    if score is not None and not isinstance(score, int | float):
        raise Rejected(422, f"feedback {feedback_id}: score must be a number or a boolean")
    return feedback


def _is_uuid(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None
