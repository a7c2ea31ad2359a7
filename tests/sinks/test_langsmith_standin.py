"""The LangSmith stand-in is as strict as LangSmith: what it accepts, refuses, and injects."""

from __future__ import annotations

import gzip
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import httpx
import orjson
import pytest
import zstandard
from documents import document, observation
from standins.langsmith import CONFLICT, LangSmithStandIn

from tracebus.sinks.langsmith import langsmith_trace
from tracebus.sinks.langsmith.multipart import Part, encode, run_parts

PROJECT = "tracebus-tests"
BOUNDARY = "standinboundary"
Run = dict[str, Any]


@pytest.fixture
def langsmith() -> Iterator[LangSmithStandIn]:
    with LangSmithStandIn(max_body_bytes=64_000) as standin:
        yield standin


def two_runs() -> tuple[Run, Run]:
    """A valid root and child, as plain JSON (what arrives on the wire)."""
    doc = document(
        observation("a000000000000001", start_ms=1, end_ms=9),
        observation("a000000000000002", "a000000000000001", start_ms=2, end_ms=3),
    )
    root, child = orjson.loads(orjson.dumps(langsmith_trace(doc, project=PROJECT).runs))
    return root, child


def multipart(*runs: Run, feedback: Sequence[dict[str, Any]] = ()) -> bytes:
    parts = [part for run in runs for part in run_parts(run)]
    parts += [Part(f"feedback.{item['id']}", orjson.dumps(item)) for item in feedback]
    return encode(parts, BOUNDARY)


def post(
    standin: LangSmithStandIn,
    body: bytes,
    *,
    api_key: str | None = None,
    encoding: str | None = None,
    timeout: float = 5.0,
) -> httpx.Response:
    headers = {
        "x-api-key": standin.api_key if api_key is None else api_key,
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
    }
    if encoding:
        headers["Content-Encoding"] = encoding
    return httpx.post(
        f"{standin.url}/runs/multipart", content=body, headers=headers, timeout=timeout
    )


def raw_part(name: str, head: str, data: bytes) -> bytes:
    disposition = f'Content-Disposition: form-data; name="{name}"\r\n'
    return f"--{BOUNDARY}\r\n{disposition}{head}\r\n".encode() + data + b"\r\n"


def test_valid_runs_are_accepted_with_202_and_stored_with_their_fields(
    langsmith: LangSmithStandIn,
) -> None:
    root, child = two_runs()

    response = post(langsmith, multipart(root, child))

    assert response.status_code == 202
    assert langsmith.run(child["id"]) == child
    assert set(langsmith.runs) == {root["id"], child["id"]}


def test_info_answers_like_langsmith_with_the_batch_limits(langsmith: LangSmithStandIn) -> None:
    info = httpx.get(f"{langsmith.url}/info").json()
    assert info["batch_ingest_config"]["size_limit_bytes"] == 64_000
    assert info["batch_ingest_config"]["use_multipart_endpoint"] is True


@pytest.mark.parametrize("api_key", ["", "lsv2_pt_someone_else"])
def test_requests_without_the_api_key_are_refused_401(
    langsmith: LangSmithStandIn, api_key: str
) -> None:
    response = post(langsmith, multipart(*two_runs()), api_key=api_key)
    assert response.status_code == 401
    assert langsmith.runs == {}
    assert "x-api-key" not in langsmith.requests[0].headers


def _set(run: str, key: str, value: Any) -> Callable[[Run, Run], None]:
    def change(root: Run, child: Run) -> None:
        (root if run == "root" else child)[key] = value

    return change


def _root_with_two_segments(root: Run, child: Run) -> None:
    root["dotted_order"] = f"{root['dotted_order']}.{root['dotted_order']}"


def _millisecond_dotted_order(root: Run, child: Run) -> None:
    child["dotted_order"] = child["dotted_order"].replace("002000Z", "002Z")


def _other_parent_prefix(root: Run, child: Run) -> None:
    child["dotted_order"] = child["dotted_order"].replace("000000001000Z", "000000000500Z", 1)


def _child_before_parent(root: Run, child: Run) -> None:
    child["dotted_order"] = child["dotted_order"].replace("000000002000Z", "000000000500Z")
    child["start_time"] = "2026-01-01T00:00:00.000500+00:00"


def _unknown_usage_key(root: Run, child: Run) -> None:
    child["outputs"] = {"usage_metadata": {"input_tokens": 1, "cached_tokens": 5}}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (_set("child", "trace_id", str(uuid.uuid4())), "does not match first part"),
        (_root_with_two_segments, "single part for root runs"),
        (_millisecond_dotted_order, "is not %Y%m%dT%H%M%S%fZ"),
        (_other_parent_prefix, "parent's dotted_order is not a prefix"),
        (_child_before_parent, "a child starts before its parent"),
        (_set("child", "run_type", "agent"), "run_type 'agent' is not one of"),
        (_set("child", "start_time", "yesterday"), "start_time must be an ISO 8601"),
        (_set("child", "end_time", "2025-01-01T00:00:00+00:00"), "end_time is before"),
        (_set("child", "inputs", ["not", "an", "object"]), "inputs must be a JSON object"),
        (_set("child", "session_name", None), "session_name or session_id is required"),
        (_unknown_usage_key, "Unexpected keys in usage metadata"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_one_invalid_run_makes_the_whole_batch_fail_with_422(
    langsmith: LangSmithStandIn, change: Callable[[Run, Run], None], problem: str
) -> None:
    root, child = two_runs()
    change(root, child)

    response = post(langsmith, multipart(root, child))

    assert response.status_code == 422
    assert problem in response.json()["detail"]
    assert langsmith.runs == {}  # the valid run of the batch was not stored either


def test_a_run_id_that_is_not_a_uuid_is_refused(langsmith: LangSmithStandIn) -> None:
    root, _ = two_runs()
    root["id"] = "not-a-uuid"
    response = post(langsmith, multipart(root))
    assert response.status_code == 422
    assert "id must be a UUID" in response.json()["detail"]


@pytest.mark.parametrize(
    ("head", "problem"),
    [
        ("Content-Length: 2\r\n", "has no Content-Type"),
        ("Content-Type: application/json\r\n", "neither Content-Length nor a length"),
        ("Content-Type: application/json\r\nContent-Length: 3\r\n", "declares 3 bytes but has 2"),
        (
            "Content-Type: application/json\r\nContent-Length: 2\r\nContent-Encoding: gzip\r\n",
            "its own Content-Encoding",
        ),
    ],
    ids=["no content type", "no length", "wrong length", "part encoding"],
)
def test_parts_need_a_content_type_and_a_length_and_no_encoding_of_their_own(
    langsmith: LangSmithStandIn, head: str, problem: str
) -> None:
    root, _ = two_runs()
    body = raw_part(f"post.{root['id']}", head, b"{}") + f"--{BOUNDARY}--\r\n".encode()

    response = post(langsmith, body)

    assert response.status_code == 422
    assert problem in response.json()["detail"]


def test_a_length_parameter_stands_in_for_content_length(langsmith: LangSmithStandIn) -> None:
    root, _ = two_runs()
    data = orjson.dumps(root)
    head = f"Content-Type: application/json; length={len(data)}\r\n"
    body = raw_part(f"post.{root['id']}", head, data) + f"--{BOUNDARY}--\r\n".encode()

    assert post(langsmith, body).status_code == 202


def test_fields_without_their_run_are_refused(langsmith: LangSmithStandIn) -> None:
    _, child = two_runs()
    body = encode([part for part in run_parts(child) if "." in part.name[5:]], BOUNDARY)
    response = post(langsmith, body)
    assert response.status_code == 422
    assert "sent without their run" in response.json()["detail"]


def test_feedback_needs_a_trace_id(langsmith: LangSmithStandIn) -> None:
    feedback = {"id": str(uuid.uuid4()), "key": "helpfulness", "score": 1}
    response = post(langsmith, multipart(feedback=[feedback]))
    assert response.status_code == 422
    assert "trace_id is required" in response.json()["detail"]


def test_a_run_received_before_makes_the_batch_409_and_nothing_new_is_stored(
    langsmith: LangSmithStandIn,
) -> None:
    root, child = two_runs()
    assert post(langsmith, multipart(root)).status_code == 202

    response = post(langsmith, multipart(root, child))

    assert response.status_code == 409
    assert response.json() == CONFLICT
    assert set(langsmith.runs) == {root["id"]}


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [("gzip", gzip.compress), ("zstd", zstandard.ZstdCompressor().compress)],
)
def test_a_compressed_body_is_accepted(
    langsmith: LangSmithStandIn, encoding: str, compress: Callable[[bytes], bytes]
) -> None:
    response = post(langsmith, compress(multipart(*two_runs())), encoding=encoding)
    assert response.status_code == 202
    assert len(langsmith.runs) == 2


def test_a_body_over_the_limit_is_refused_413_even_once_inflated(
    langsmith: LangSmithStandIn,
) -> None:
    root, _ = two_runs()
    root["inputs"] = {"text": "x" * 70_000}
    body = multipart(root)

    assert post(langsmith, body).status_code == 413
    assert post(langsmith, gzip.compress(body), encoding="gzip").status_code == 413
    assert langsmith.runs == {}


def test_injected_failures_answer_in_order_then_requests_succeed_again(
    langsmith: LangSmithStandIn,
) -> None:
    langsmith.fail_next(429, count=2, retry_after=3)
    body = multipart(*two_runs())

    throttled = [post(langsmith, body) for _ in range(2)]

    assert [response.status_code for response in throttled] == [429, 429]
    assert throttled[0].headers["retry-after"] == "3"
    assert langsmith.runs == {}
    assert post(langsmith, body).status_code == 202


def test_a_hung_request_gets_no_answer_before_the_client_gives_up(
    langsmith: LangSmithStandIn,
) -> None:
    langsmith.hang_next()
    with pytest.raises(httpx.ReadTimeout):
        post(langsmith, multipart(*two_runs()), timeout=0.1)
    assert langsmith.requests[0].status is None


def test_down_refuses_connections_and_comes_back_on_the_same_port(
    langsmith: LangSmithStandIn,
) -> None:
    url = langsmith.url
    with langsmith.down(), pytest.raises(httpx.ConnectError):
        post(langsmith, multipart(*two_runs()))
    assert langsmith.url == url
    assert post(langsmith, multipart(*two_runs())).status_code == 202
