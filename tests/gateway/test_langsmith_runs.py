"""The LangSmith adapter's parsing and translation (pure), and its answers over HTTP: what
LangSmith accepts becomes tracebus events; what it refuses is refused whole, with the reason."""

from __future__ import annotations

import asyncio
import copy
import re
import uuid
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from conftest import read_batches
from gateway_helpers import in_process_gateway
from langsmith._internal._multipart import RewindableMultipartBody
from langsmith._internal._operations import (
    serialize_feedback_dict,
    serialize_run_dict,
    serialized_feedback_operation_to_multipart_parts_and_context,
    serialized_run_operation_to_multipart_parts_and_context,
)

from tracebus.config import KafkaSettings
from tracebus.gateway.langsmith import ADAPTER
from tracebus.gateway.langsmith.directory import RunDirectory
from tracebus.gateway.langsmith.ids import observation_id
from tracebus.gateway.langsmith.multipart import parse_multipart
from tracebus.gateway.langsmith.operations import (
    Ingest,
    RunOp,
    ingest_from_batch,
    ingest_from_parts,
)
from tracebus.gateway.langsmith.translation import translate
from tracebus.gateway.langsmith.usage import usage_and_cost
from tracebus.gateway.protocol import GatewayError
from tracebus.schemas import validate_event

KEY = "ls-adapter-secret"
ROOT = uuid.UUID("01936b2a-0000-7000-8000-000000000001")
CHILD = uuid.UUID("01936b2a-0001-7000-8000-000000000002")
GRANDCHILD = uuid.UUID("01936b2a-0002-7000-8000-000000000003")
FEEDBACK = uuid.UUID("01936b2a-0003-7000-8000-000000000004")
STRANGER = uuid.UUID("01936b2a-0004-7000-8000-000000000005")  # never posted
T0 = datetime(2026, 11, 26, 9, 0, 0, 123456, tzinfo=UTC)
T0_NS = 1_795_683_600_123_456_000
NOW_NS = 1_800_000_000_000_000_000


def segment(run_id: uuid.UUID, seconds: int = 0) -> str:
    return T0.replace(second=seconds).strftime("%Y%m%dT%H%M%S%fZ") + str(run_id)


def at(seconds: int) -> str:
    return T0.replace(second=seconds).isoformat()


def root_run(**fields: Any) -> dict[str, Any]:
    """A root run as the SDK's RunTree posts it once finished (post and patch merged)."""
    return {
        "id": str(ROOT),
        "trace_id": str(ROOT),
        "dotted_order": segment(ROOT),
        "name": "support-chat",
        "run_type": "chain",
        "start_time": at(0),
        "end_time": at(3),
        "session_name": "shop-app",
        "tags": ["beta"],
        "inputs": {"question": "refund?"},
        "outputs": {"answer": "yes"},
        "extra": {
            "metadata": {"thread_id": "t-1", "user_id": "u-7", "revision_id": "v2"},
            "runtime": {"sdk": "langsmith-py", "sdk_version": "0.15.1"},
        },
        **fields,
    }


def llm_run(**fields: Any) -> dict[str, Any]:
    return {
        "id": str(CHILD),
        "trace_id": str(ROOT),
        "parent_run_id": str(ROOT),
        "dotted_order": f"{segment(ROOT)}.{segment(CHILD, 1)}",
        "name": "answer",
        "run_type": "llm",
        "start_time": at(1),
        "end_time": at(2),
        "inputs": {"messages": [{"role": "user", "content": "refund?"}]},
        "outputs": {
            "content": "yes",
            "usage_metadata": {
                "input_tokens": 120,
                "output_tokens": 30,
                "total_tokens": 150,
                "input_token_details": {"cache_read": 100, "ephemeral_5m_input_tokens": 20},
                "output_token_details": {"reasoning": 10},
                "input_cost": 0.001,
                "output_cost": 0.002,
                "total_cost": 0.003,
            },
        },
        "events": [
            {"name": "new_token", "time": "2026-11-26T09:00:01.500000+00:00"},
            {"name": "new_token", "time": "2026-11-26T09:00:01.700000+00:00"},
        ],
        "extra": {
            "metadata": {
                "ls_provider": "openai",
                "ls_model_name": "gpt-4o",
                "ls_model_type": "chat",
                "thread_id": "t-1",
            },
            "invocation_params": {"temperature": 0.2, "stop": ["\n"], "model": "gpt-4o"},
        },
        **fields,
    }


def events_of(*ops: RunOp, feedback: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    ingest = Ingest(runs=list(ops), feedback=feedback or [])
    return [event for _, event in translate(ingest, RunDirectory(), NOW_NS)]


def post(run: dict[str, Any]) -> RunOp:
    return RunOp("post", run["id"], run)


def patch(run: dict[str, Any]) -> RunOp:
    return RunOp("patch", run["id"], run)


def without_ids(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != "event_id"}


# -- translation --------------------------------------------------------------------------------


def test_a_finished_root_run_becomes_a_trace_event_and_a_complete_observation() -> None:
    trace_event, observation = events_of(post(root_run()))

    assert without_ids(trace_event) == {
        "schema_version": 1,
        "type": "trace",
        "trace_id": ROOT.hex,
        "timestamp_unix_nano": T0_NS + 3 * 10**9,
        "name": "support-chat",
        "tags": ["beta"],
        "session_id": "t-1",
        "user_id": "u-7",
        "release": "v2",
        "metadata": {
            "langsmith_project": "shop-app",
            "langsmith_runtime": {"sdk": "langsmith-py", "sdk_version": "0.15.1"},
        },
    }
    assert without_ids(observation) == {
        "schema_version": 1,
        "type": "observation",
        "trace_id": ROOT.hex,
        "timestamp_unix_nano": T0_NS + 3 * 10**9,
        "observation_id": observation_id(ROOT),
        "kind": "chain",
        "name": "support-chat",
        "start_time_unix_nano": T0_NS,
        "end_time_unix_nano": T0_NS + 3 * 10**9,
        "input": {"question": "refund?"},
        "output": {"answer": "yes"},
        "metadata": {
            "thread_id": "t-1",
            "user_id": "u-7",
            "revision_id": "v2",
            "langsmith_run_id": str(ROOT),
        },
    }
    for event in (trace_event, observation):
        validate_event(event)


def test_an_llm_run_becomes_a_generation_with_model_usage_cost_and_first_token() -> None:
    [generation] = events_of(post(llm_run()))

    assert generation["kind"] == "generation"
    assert generation["parent_observation_id"] == observation_id(ROOT)
    assert (generation["model"], generation["provider"]) == ("gpt-4o", "openai")
    assert generation["model_parameters"] == {
        "temperature": 0.2,
        "stop": '["\\n"]',
        "model": "gpt-4o",
    }
    assert generation["usage"] == {
        "input_tokens": 120,
        "output_tokens": 30,
        "total_tokens": 150,
        "input_cache_read_tokens": 100,
        "output_reasoning_tokens": 10,
        "other": {"input_token_details.ephemeral_5m_input_tokens": 20},
    }
    assert generation["cost"] == {"input": 0.001, "output": 0.002, "total": 0.003}
    assert generation["output"] == {"content": "yes"}
    assert generation["completion_start_time_unix_nano"] == T0_NS - 123456000 + 1_500_000_000
    assert generation["metadata"] == {
        "ls_model_type": "chat",
        "thread_id": "t-1",
        "langsmith_run_id": str(CHILD),
    }
    validate_event(generation)


@pytest.mark.parametrize(
    ("run_type", "kind"),
    [
        ("llm", "generation"),
        ("tool", "tool"),
        ("retriever", "retriever"),
        ("chain", "chain"),
        ("embedding", "embedding"),
        ("prompt", "span"),
        ("parser", "span"),
    ],
)
def test_run_types_map_to_kinds(run_type: str, kind: str) -> None:
    [observation] = events_of(post(llm_run(run_type=run_type)))
    assert observation["kind"] == kind
    assert (observation["metadata"].get("langsmith_run_type") == run_type) == (kind == "span")


def test_usage_in_metadata_counts_when_outputs_have_none() -> None:
    extra = {"metadata": {"usage_metadata": {"input_tokens": 5, "output_tokens": 2}}}
    [observation] = events_of(post(llm_run(outputs={"content": "x"}, extra=extra)))
    assert observation["usage"] == {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7}
    assert "usage_metadata" not in observation.get("metadata", {})


def test_usage_of_a_langchain_chat_model_run_is_found_in_its_generations() -> None:
    message = {
        "lc": 1,
        "type": "constructor",
        "id": ["langchain", "schema", "messages", "AIMessage"],
        "kwargs": {"content": "hi", "usage_metadata": {"input_tokens": 9, "output_tokens": 1}},
    }
    outputs = {"generations": [[{"text": "hi", "message": message}]], "llm_output": None}
    [generation] = events_of(post(llm_run(outputs=outputs)))
    assert generation["usage"] == {"input_tokens": 9, "output_tokens": 1, "total_tokens": 10}


def test_usage_details_and_manual_costs_map_to_inclusive_buckets() -> None:
    usage, cost = usage_and_cost(
        {
            "input_tokens": 10,
            "output_tokens": 4,
            "input_token_details": {"audio": 3, "cache_creation": 2, "cache_read_over_200k": 1},
            "output_token_details": {"audio": 1},
            "input_cost_details": {"cache_read": 0.5, "surcharge": 0.1},
            "output_cost_details": {"reasoning": 0.25},
        },
        "run x",
    )
    assert usage == {
        "input_tokens": 10,
        "output_tokens": 4,
        "total_tokens": 14,
        "input_audio_tokens": 3,
        "input_cache_creation_tokens": 2,
        "output_audio_tokens": 1,
        "other": {"input_token_details.cache_read_over_200k": 1},
    }
    assert cost == {
        "input_cache_read": 0.5,
        "output_reasoning": 0.25,
        "other": {"input_cost_details.surcharge": 0.1},
    }


def test_an_error_sets_the_level_and_status_message() -> None:
    [observation] = events_of(post(llm_run(error="ValueError: boom", outputs=None)))
    assert (observation["level"], observation["status_message"]) == ("ERROR", "ValueError: boom")
    assert "output" not in observation and "usage" not in observation


def test_a_lone_patch_becomes_an_update_with_only_what_it_carries() -> None:
    update = {
        "id": str(CHILD),
        "trace_id": str(ROOT),
        "dotted_order": f"{segment(ROOT)}.{segment(CHILD, 1)}",
        "parent_run_id": str(ROOT),
        "name": None,  # the SDK's update_run sends unset fields as null
        "end_time": at(4),
        "outputs": {"content": "late"},
    }
    [event] = events_of(patch(update))
    assert without_ids(event) == {
        "schema_version": 1,
        "type": "observation_update",
        "trace_id": ROOT.hex,
        "timestamp_unix_nano": T0_NS + 4 * 10**9,
        "observation_id": observation_id(CHILD),
        "parent_observation_id": observation_id(ROOT),
        "end_time_unix_nano": T0_NS + 4 * 10**9,
        "output": {"content": "late"},
        "metadata": {"langsmith_run_id": str(CHILD)},
    }
    validate_event(event)


def test_a_post_and_its_patch_in_one_request_become_one_complete_observation() -> None:
    opened = root_run(end_time=None, outputs=None)
    closing = {"id": str(ROOT), "trace_id": str(ROOT), "end_time": at(5), "outputs": {"a": 1}}
    events = events_of(post(opened), patch(closing))
    assert [e["type"] for e in events] == ["trace", "observation"]
    observation = events[1]
    assert observation["end_time_unix_nano"] == T0_NS + 5 * 10**9
    assert observation["output"] == {"a": 1} and observation["name"] == "support-chat"


def test_the_trace_comes_from_dotted_order_or_the_root_or_an_earlier_run() -> None:
    directory = RunDirectory()
    no_trace_id = llm_run()
    del no_trace_id["trace_id"]
    root_only = {k: v for k, v in root_run().items() if k not in ("trace_id", "dotted_order")}
    grandchild = {
        "id": str(GRANDCHILD),
        "parent_run_id": str(CHILD),
        "name": "lookup",
        "run_type": "tool",
        "start_time": at(2),
    }
    ingest = Ingest(runs=[post(no_trace_id), post(root_only), post(grandchild)])
    events = [event for _, event in translate(ingest, directory, NOW_NS)]
    assert {event["trace_id"] for event in events} == {ROOT.hex}
    later = Ingest(runs=[patch({"id": str(GRANDCHILD), "end_time": at(3)})])
    [update] = [event for _, event in translate(later, directory, NOW_NS)]
    assert update["trace_id"] == ROOT.hex


def test_the_same_request_gives_the_same_event_ids_and_a_changed_run_new_ones() -> None:
    first = events_of(post(root_run()), post(llm_run()))
    again = events_of(post(root_run()), post(llm_run()))
    changed = events_of(post(root_run()), post(llm_run(outputs={"content": "no"})))
    ids = [event["event_id"] for event in first]
    assert ids == [event["event_id"] for event in again]
    assert ids[:2] == [e["event_id"] for e in changed[:2]] and ids[2] != changed[2]["event_id"]
    assert len(set(ids)) == 3
    assert all(re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", i) for i in ids)
    assert ids[2].startswith(f"ls:post:{CHILD.hex}:")


@pytest.mark.parametrize(
    ("feedback", "expected"),
    [
        (
            {"run_id": str(ROOT), "key": "helpful", "score": 0.8, "comment": "good"},
            {"name": "helpful", "value": 0.8, "data_type": "NUMERIC", "comment": "good"},
        ),
        (
            {"run_id": str(CHILD), "key": "correct", "score": True},
            {"name": "correct", "value": True, "data_type": "BOOLEAN"},
        ),
        (
            {"run_id": str(CHILD), "key": "topic", "value": "billing"},
            {"name": "topic", "value": "billing", "data_type": "CATEGORICAL"},
        ),
        (
            {"key": "stars", "score": 4, "feedback_source": {"type": "model"}},
            {"name": "stars", "value": 4.0, "data_type": "NUMERIC", "source": "EVAL"},
        ),
    ],
    ids=["number-on-root", "bool-on-child", "label", "from-a-model"],
)
def test_feedback_becomes_a_score_of_the_trace_or_of_its_run(
    feedback: dict[str, Any], expected: dict[str, Any]
) -> None:
    body = {"id": str(FEEDBACK), "trace_id": str(ROOT), **feedback}
    [score] = events_of(feedback=[body])
    validate_event(score)
    assert score["score_id"] == f"langsmith-{FEEDBACK}"
    assert score["trace_id"] == ROOT.hex
    assert score.get("observation_id") == (
        observation_id(CHILD) if feedback.get("run_id") == str(CHILD) else None
    )
    assert {k: score[k] for k in expected} == expected
    assert score["metadata"]["langsmith_feedback_id"] == str(FEEDBACK)


# -- multipart --------------------------------------------------------------------------------


def sdk_multipart(
    posts: list[dict[str, Any]] = (),  # type: ignore[assignment]
    patches: list[dict[str, Any]] = (),  # type: ignore[assignment]
    feedback: list[dict[str, Any]] = (),  # type: ignore[assignment]
) -> tuple[bytes, str]:
    """A /runs/multipart body encoded by the langsmith SDK itself."""
    parts = []
    for operation, runs in (("post", posts), ("patch", patches)):
        for run in runs:
            op = serialize_run_dict(operation, copy.deepcopy(run))  # type: ignore[arg-type]
            parts.extend(serialized_run_operation_to_multipart_parts_and_context(op)[0].parts)
    for item in feedback:
        op = serialize_feedback_dict(copy.deepcopy(item))
        parts.extend(serialized_feedback_operation_to_multipart_parts_and_context(op).parts)
    body = RewindableMultipartBody(parts, "boundary-x")
    return body.to_bytes(), body.content_type


def test_sdk_multipart_bodies_parse_into_runs_fields_attachments_and_feedback() -> None:
    picture = b"\x89PNG\r\n--boundary-x\r\nnot a delimiter: the length says where it ends"
    run = {**llm_run(), "attachments": {"screenshot": ("image/png", picture)}}
    closing = {"id": str(ROOT), "trace_id": str(ROOT), "end_time": at(3), "outputs": {"a": 1}}
    feedback = {"id": FEEDBACK, "trace_id": ROOT, "run_id": ROOT, "key": "k", "score": 1}
    body, content_type = sdk_multipart([run], [closing], [feedback])

    ingest = ingest_from_parts(parse_multipart(body, content_type))

    [posted, patched] = ingest.runs
    assert (posted.op, posted.run_id, patched.op) == ("post", str(CHILD), "patch")
    assert posted.run["outputs"]["content"] == "yes" and posted.run["extra"]["metadata"]
    assert posted.attachments == {
        "screenshot": {"content_type": "image/png", "bytes": len(picture)}
    }
    assert patched.run["outputs"] == {"a": 1}
    assert [f["key"] for f in ingest.feedback] == ["k"]
    events = [e for _, e in translate(ingest, RunDirectory(), NOW_NS)]
    [generation] = [e for e in events if e.get("name") == "answer"]
    assert generation["metadata"]["langsmith_attachments"] == posted.attachments


def test_a_part_length_given_as_a_content_type_parameter_is_honoured() -> None:
    data = b'{"id": "%s", "key": "k", "score": 1}' % str(FEEDBACK).encode()
    body = (
        b'--b\r\nContent-Disposition: form-data; name="feedback.%s"\r\n'
        b"Content-Type: application/json; length=%d\r\n\r\n%s\r\n--b--\r\n"
    ) % (str(FEEDBACK).encode(), len(data), data)
    [part] = parse_multipart(body, "multipart/form-data; boundary=b")
    assert (part.content_type, part.data) == ("application/json", data)


def multipart(*parts: tuple[str, str, bytes], length: bool = True) -> bytes:
    chunks = []
    for name, content_type, data in parts:
        head = f'--b\r\nContent-Disposition: form-data; name="{name}"\r\n'
        head += f"Content-Type: {content_type}\r\n" if content_type else ""
        head += f"Content-Length: {len(data)}\r\n" if length else ""
        chunks.append(head.encode() + b"\r\n" + data + b"\r\n")
    return b"".join(chunks) + b"--b--\r\n"


RUN_PART = f"post.{ROOT}"
VALID_RUN = orjson.dumps(root_run())


@pytest.mark.parametrize(
    ("body", "content_type", "status", "detail"),
    [
        (b"{}", "application/json", 415, "expected multipart/form-data, got 'application/json'"),
        (b"--b--\r\n", "multipart/form-data", 422, "multipart/form-data without a boundary"),
        (
            b"garbage",
            "multipart/form-data; boundary=b",
            422,
            "malformed multipart body: no opening delimiter",
        ),
        (
            multipart((RUN_PART, "application/json", VALID_RUN))[:-9],
            "multipart/form-data; boundary=b",
            422,
            f"part {RUN_PART} declares {len(VALID_RUN)} bytes but no delimiter follows them",
        ),
        (
            multipart((RUN_PART, "application/json", VALID_RUN), length=False)[:-9],
            "multipart/form-data; boundary=b",
            422,
            f"malformed multipart body: part {RUN_PART} is never closed",
        ),
        (
            multipart((RUN_PART, "application/json", VALID_RUN))[:-4],
            "multipart/form-data; boundary=b",
            422,
            "malformed multipart body: no closing delimiter",
        ),
        (
            multipart((RUN_PART, "", VALID_RUN)),
            "multipart/form-data; boundary=b",
            422,
            f"part {RUN_PART} has no Content-Type",
        ),
        (
            multipart((RUN_PART, "text/plain", VALID_RUN)),
            "multipart/form-data; boundary=b",
            422,
            f"part {RUN_PART} must be application/json, not 'text/plain'",
        ),
        (
            multipart((RUN_PART, "application/json", b'{"id": ')),
            "multipart/form-data; boundary=b",
            422,
            f"part {RUN_PART} is not valid JSON: unexpected end of data: line 1 column 8 (char 7)",
        ),
        (
            multipart((f"delete.{ROOT}", "application/json", b"{}")),
            "multipart/form-data; boundary=b",
            422,
            f"unsupported part name 'delete.{ROOT}'",
        ),
        (
            multipart((f"post.{ROOT}.secrets", "application/json", b"{}")),
            "multipart/form-data; boundary=b",
            422,
            f"unsupported part name 'post.{ROOT}.secrets'",
        ),
        (
            multipart((f"post.{ROOT}.inputs", "application/json", b"{}")),
            "multipart/form-data; boundary=b",
            422,
            f"parts post.{ROOT}.{{inputs}} sent without post.{ROOT}",
        ),
        (
            multipart((f"post.{CHILD}", "application/json", VALID_RUN)),
            "multipart/form-data; boundary=b",
            422,
            f"part post.{CHILD} carries run id '{ROOT}'",
        ),
    ],
    ids=[
        "not-multipart",
        "no-boundary",
        "no-delimiter",
        "short-part",
        "unclosed-part",
        "no-closing-delimiter",
        "no-content-type",
        "not-json-type",
        "bad-json",
        "unknown-event",
        "unknown-field",
        "field-without-run",
        "id-mismatch",
    ],
)
def test_malformed_multipart_is_refused_with_the_reason(
    body: bytes, content_type: str, status: int, detail: str
) -> None:
    with pytest.raises(GatewayError) as raised:
        ingest_from_parts(parse_multipart(body, content_type))
    assert (raised.value.status, raised.value.message) == (status, detail)


# -- invalid runs --------------------------------------------------------------------------------

R = f"run {ROOT}"
C = f"run {CHILD}"


@pytest.mark.parametrize(
    ("run", "detail"),
    [
        (root_run(id="not-a-uuid"), "run not-a-uuid: id must be a UUID, got 'not-a-uuid'"),
        (root_run(trace_id="123"), f"{R}: trace_id must be a UUID, got '123'"),
        (llm_run(parent_run_id=7), f"{C}: parent_run_id must be a UUID, got 7"),
        (
            root_run(trace_id=str(CHILD)),
            f"{R}: trace_id {CHILD} does not match first part of dotted_order",
        ),
        (
            root_run(dotted_order=f"{segment(ROOT)}.{segment(CHILD)}"),
            f"{R}: the last part of dotted_order {segment(ROOT)}.{segment(CHILD)} "
            "is not the run id",
        ),
        (
            root_run(dotted_order=f"{segment(CHILD)}.{segment(ROOT)}", trace_id=None),
            f"{R}: dotted_order must contain a single part for root runs",
        ),
        (
            llm_run(dotted_order=segment(CHILD), trace_id=None),
            f"{C}: dotted_order must contain at least two parts for child runs",
        ),
        (
            llm_run(parent_run_id=str(GRANDCHILD)),
            f"{C}: parent_run_id {GRANDCHILD} is not the second-to-last part of dotted_order",
        ),
        (
            root_run(dotted_order="2026-11-26" + str(ROOT)),
            f"{R}: invalid dotted_order '2026-11-26{ROOT}': each part is %Y%m%dT%H%M%S%fZ "
            "followed by the run's UUID",
        ),
        (
            llm_run(
                id=str(STRANGER), parent_run_id=str(GRANDCHILD), trace_id=None, dotted_order=None
            ),
            f"run {STRANGER}: trace_id (or dotted_order) is required: this gateway has not seen "
            "the run's trace",
        ),
        (
            root_run(trace_id=str(CHILD), dotted_order=None),
            f"{R}: a run without parent_run_id is a root run, whose id must be its trace_id "
            f"({CHILD})",
        ),
        (
            root_run(run_type="agent"),
            f"{R}: run_type 'agent' is not one of llm, tool, retriever, chain, embedding, "
            "prompt, parser",
        ),
        (root_run(name=""), f"{R}: name is required"),
        (
            root_run(start_time="yesterday"),
            f"{R}: start_time must be an ISO 8601 timestamp, got 'yesterday'",
        ),
        (root_run(inputs=["a"]), f"{R}: inputs must be a JSON object"),
        (root_run(error={"type": "x"}), f"{R}: error must be a string"),
        (root_run(tags="beta"), f"{R}: tags must be a list of strings"),
        (
            llm_run(outputs={"usage_metadata": {"input_tokens": -1}}),
            f"{C}: usage_metadata.input_tokens must be a non-negative number, not -1",
        ),
        (
            root_run(name="n" * 1001),
            f"{R}: trace.name: String should have at most 1000 characters",
        ),
    ],
    ids=[
        "bad-id",
        "bad-trace-id",
        "bad-parent",
        "trace-not-first",
        "last-not-run",
        "root-with-parts",
        "child-single-part",
        "parent-not-second-to-last",
        "malformed-dotted-order",
        "child-without-trace",
        "root-not-trace",
        "unknown-run-type",
        "no-name",
        "bad-time",
        "inputs-not-object",
        "error-not-string",
        "tags-not-list",
        "negative-tokens",
        "contract-violation",
    ],
)
def test_an_invalid_run_rejects_the_whole_request_naming_it(
    kafka: KafkaSettings, run: dict[str, Any], detail: str
) -> None:
    valid = llm_run() if run["id"] != str(CHILD) else root_run()

    async def scenario() -> None:
        async with gateway(kafka) as client:
            response = await client.post("/runs/batch", json={"post": [valid, run]})
            assert response.status_code == 422, response.text
            assert response.json() == {"detail": detail}
            # Nothing of the refused request was written: the next one's events come alone.
            response = await client.post("/runs/batch", json={"post": [root_run(name="ok")]})
            assert response.status_code == 202, response.text

    asyncio.run(scenario())
    [batch] = read_batches(kafka, lambda batches: len(batches) >= 1)
    assert [e.name for e in batch.events] == ["ok", "ok"]


# -- HTTP ---------------------------------------------------------------------------------------


def gateway(settings: KafkaSettings) -> AbstractAsyncContextManager[Any]:
    adapters = [ADAPTER]
    return in_process_gateway(settings, adapters, [("shop", KEY)], headers={"x-api-key": KEY})


def test_info_answers_what_the_sdk_reads(kafka: KafkaSettings) -> None:
    async def scenario() -> None:
        async with gateway(kafka) as client:
            response = await client.get("/info", headers={"x-api-key": ""})
            assert response.status_code == 200
            info = response.json()
            config = info["batch_ingest_config"]
            assert config["use_multipart_endpoint"] is True
            assert {"size_limit", "scale_up_nthreads_limit", "scale_up_qsize_trigger"} <= set(
                config
            )
            assert info["instance_flags"]["zstd_compression_enabled"] is True

    asyncio.run(scenario())


def test_multipart_is_accepted_with_202_and_repeats_publish_the_same_events(
    kafka: KafkaSettings,
) -> None:
    body, content_type = sdk_multipart([root_run(), llm_run()])

    async def scenario() -> None:
        async with gateway(kafka) as client:
            for _ in range(2):
                response = await client.post(
                    "/runs/multipart", content=body, headers={"Content-Type": content_type}
                )
                assert (response.status_code, response.json()) == (202, {})

    asyncio.run(scenario())
    first, second = read_batches(kafka, lambda batches: len(batches) >= 2)
    assert [e.event_id for e in first.events] == [e.event_id for e in second.events]
    assert [e.type for e in first.events] == ["trace", "observation", "observation"]


def test_the_simple_rest_path_posts_and_patches_runs_without_trace_ids(
    kafka: KafkaSettings,
) -> None:
    """LangSmith's REST tutorial: hex ids, naive UTC times, no trace_id or dotted_order."""
    root = {"id": ROOT.hex, "name": "flow", "run_type": "chain", "inputs": {"q": 1}}
    child = {**root, "id": CHILD.hex, "name": "step", "parent_run_id": ROOT.hex}

    async def scenario() -> None:
        async with gateway(kafka) as client:
            for run in (root, child):
                response = await client.post(
                    "/runs", json={**run, "start_time": "2026-11-26T09:00:00.000001"}
                )
                assert (response.status_code, response.json()) == (202, {})
            for run_id in (CHILD.hex, ROOT.hex):
                response = await client.patch(
                    f"/runs/{run_id}",
                    json={"outputs": {"done": True}, "end_time": "2026-11-26T09:00:01"},
                )
                assert response.status_code == 202, response.text
            response = await client.patch(f"/runs/{GRANDCHILD}", json={"outputs": {}})
            assert response.status_code == 422
            assert response.json() == {
                "detail": f"run {GRANDCHILD}: trace_id (or dotted_order) is required: this "
                "gateway has not seen the run's trace"
            }

    asyncio.run(scenario())
    batches = read_batches(kafka, lambda batches: len(batches) >= 4)
    events = [event for batch in batches for event in batch.events]
    assert {event.trace_id for event in events} == {ROOT.hex}
    [child_post] = [e for e in events if e.type == "observation" and e.name == "step"]
    assert child_post.parent_observation_id == observation_id(ROOT)
    assert child_post.start_time_unix_nano == 1_795_683_600_000_001_000
    assert [e.type for e in events[-2:]] == ["observation_update", "observation_update"]


def test_feedback_can_be_posted_on_its_own(kafka: KafkaSettings) -> None:
    feedback = {"id": str(FEEDBACK), "trace_id": str(ROOT), "run_id": str(ROOT), "key": "k"}

    async def scenario() -> None:
        async with gateway(kafka) as client:
            response = await client.post("/feedback", json={**feedback, "score": 1})
            assert (response.status_code, response.json()["id"]) == (200, str(FEEDBACK))
            response = await client.post("/feedback", json=feedback)
            assert response.json() == {
                "detail": f"feedback {FEEDBACK}: a feedback needs a score or a value"
            }

    asyncio.run(scenario())
    [batch] = read_batches(kafka, lambda batches: len(batches) >= 1)
    assert [(e.type, e.value) for e in batch.events] == [("score", 1.0)]


def test_errors_of_the_gateway_core_answer_in_langsmith_format(kafka: KafkaSettings) -> None:
    async def scenario() -> None:
        async with gateway(kafka) as client:
            response = await client.post("/runs/batch", json={}, headers={"x-api-key": "wrong"})
            assert (response.status_code, response.json()) == (401, {"detail": "invalid API key"})
            response = await client.post("/runs/batch", content=b"{", headers={})
            assert response.status_code == 422
            assert response.json()["detail"].startswith("the body is not valid JSON: ")

    asyncio.run(scenario())
    assert ingest_from_batch(b'{"post": null, "patch": []}').runs == []
