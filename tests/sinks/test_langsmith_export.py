"""LangSmithExporter against a strict local LangSmith: what arrives, and how failures surface."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from documents import MS, T0, TRACE_ID, document, observation, score, summarize
from standins.langsmith import LangSmithStandIn, ReceivedRequest

from tracebus.schemas import TraceDocument
from tracebus.schemas.models import Cost, Usage
from tracebus.schemas.traces import Observation, TraceAttributes
from tracebus.sinks.exporter import Exporter, ExportError
from tracebus.sinks.langsmith import LangSmithExporter, feedback_uuid, run_uuid, trace_uuid

PROJECT = "tracebus-tests"
ROOT = "a000000000000001"
RETRIEVER = "a000000000000002"
GENERATION = "a000000000000003"
TOOL = "a000000000000004"
FAILED = "a000000000000005"
EVENT = "a000000000000006"
LATE = "a000000000000007"
MESSAGES = [
    {"role": "system", "content": "You answer support questions."},
    {"role": "user", "content": "Where is my order?"},
]


def reference_document(*, revision: int = 1, late: bool = False) -> TraceDocument:
    """A support-chat trace with one observation of each interesting shape."""
    observations = [
        observation(
            ROOT,
            kind="agent",
            name="handle-request",
            end_ms=900,
            input={"question": "Where is my order?"},
            output="It ships tomorrow.",
        ),
        observation(
            RETRIEVER,
            ROOT,
            kind="retriever",
            name="order-lookup",
            start_ms=10,
            end_ms=60,
            input={"query": "order of user-42"},
            output=[{"id": "o-1", "status": "packed"}],
        ),
        observation(
            GENERATION,
            ROOT,
            kind="generation",
            name="answer",
            start_ms=100,
            end_ms=800,
            input=MESSAGES,
            output={"role": "assistant", "content": "It ships tomorrow."},
            model="gpt-4o",
            provider="openai",
            model_parameters={"temperature": 0.2, "max_tokens": 256},
            usage=Usage(
                input_tokens=1200,
                input_cache_read_tokens=1000,
                input_cache_creation_tokens=100,
                output_tokens=300,
                output_reasoning_tokens=120,
                total_tokens=1500,
            ),
            cost=Cost(
                input=0.003,
                input_cache_read=0.0005,
                output=0.0045,
                output_reasoning=0.0018,
                total=0.0075,
            ),
            cost_source="reported",
            completion_start_time_unix_nano=T0 + 450 * MS,
            time_to_first_token_ms=350,
        ),
        observation(
            TOOL,
            GENERATION,
            kind="tool",
            name="carrier-status",
            start_ms=200,
            end_ms=300,
            input={"tracking": "1Z999"},
            output="in transit",
        ),
        observation(
            FAILED,
            ROOT,
            kind="span",
            name="validate-reply",
            start_ms=810,
            end_ms=820,
            level="ERROR",
            status_message="schema mismatch: missing 'eta'",
        ),
        observation(EVENT, ROOT, kind="event", name="cache-miss", start_ms=5, end_ms=5),
    ]
    if late:
        observations.append(
            observation(LATE, ROOT, name="late-audit", start_ms=850, end_ms=890, flags=["late"])
        )
    return document(
        *observations,
        trace=TraceAttributes(
            name="support-chat",
            user_id="user-42",
            session_id="session-7",
            tags=["support", "beta"],
            metadata={"tenant": "acme"},
            release="v1.2.3",
            environment="production",
        ),
        root_observation_id=ROOT,
        revision=revision,
        scores=[
            score("helpfulness-1", GENERATION, 0.9, "NUMERIC"),
            score("verdict-1", None, "resolved", "CATEGORICAL"),
        ],
    )


def run_id(observation_id: str, start_ms: float) -> str:
    if observation_id == ROOT:
        return str(trace_uuid(TRACE_ID))
    return str(run_uuid(TRACE_ID, observation_id, T0 + int(start_ms * MS)))


async def export_with(
    standin: LangSmithStandIn, documents: Sequence[TraceDocument], **options: Any
) -> None:
    exporter = LangSmithExporter(standin.url, standin.api_key, project=PROJECT, **options)
    try:
        await exporter.export(documents)
    finally:
        await exporter.close()


def export(standin: LangSmithStandIn, *documents: TraceDocument, **options: Any) -> None:
    asyncio.run(export_with(standin, documents, **options))


def export_error(standin: LangSmithStandIn, *documents: TraceDocument, **options: Any) -> Any:
    with pytest.raises(ExportError) as caught:
        export(standin, *documents, **options)
    return caught.value


@pytest.fixture
def langsmith() -> Any:
    with LangSmithStandIn() as standin:
        yield standin


# -- delivery --------------------------------------------------------------------------------


def test_the_exporter_is_an_exporter_named_langsmith() -> None:
    exporter: Exporter = LangSmithExporter("http://127.0.0.1:1", "key", project=PROJECT)
    assert exporter.name == "langsmith"
    asyncio.run(exporter.close())


def test_the_reference_trace_arrives_as_complete_runs_in_one_request(
    langsmith: LangSmithStandIn,
) -> None:
    export(langsmith, reference_document())

    (request,) = langsmith.requests
    assert request.status == 202
    assert request.path == "/runs/multipart"
    assert request.headers["content-encoding"] == "gzip"
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    runs = langsmith.runs
    assert len(runs) == 6
    root_id = str(trace_uuid(TRACE_ID))
    for run in runs.values():
        assert run["trace_id"] == root_id
        assert run["session_name"] == PROJECT
        assert run["tags"] == ["support", "beta"]
        assert run["end_time"] is not None
        metadata = run["extra"]["metadata"]
        assert metadata["session_id"] == metadata["thread_id"] == "session-7"
        assert metadata["user_id"] == "user-42"
        assert metadata["tenant"] == "acme"
        assert metadata["environment"] == "production"
        assert metadata["revision_id"] == "v1.2.3"

    root = langsmith.run(root_id)
    assert root["name"] == "support-chat"
    assert root["run_type"] == "chain"
    assert "parent_run_id" not in root
    assert root["dotted_order"] == f"20260101T000000000000Z{root_id}"
    assert root["start_time"] == "2026-01-01T00:00:00+00:00"
    assert root["end_time"] == "2026-01-01T00:00:00.900000+00:00"
    assert root["inputs"] == {"question": "Where is my order?"}
    assert root["outputs"] == {"output": "It ships tomorrow."}
    assert root["extra"]["metadata"]["tracebus_kind"] == "agent"

    generation_id = run_id(GENERATION, 100)
    generation = langsmith.run(generation_id)
    assert generation["name"] == "answer"
    assert generation["run_type"] == "llm"
    assert generation["parent_run_id"] == root_id
    assert generation["dotted_order"] == (
        f"{root['dotted_order']}.20260101T000000100000Z{generation_id}"
    )
    assert generation["inputs"] == {"input": MESSAGES}
    assert generation["outputs"] == {
        "role": "assistant",
        "content": "It ships tomorrow.",
        "usage_metadata": {
            "input_tokens": 1200,
            "output_tokens": 300,
            "total_tokens": 1500,
            "input_token_details": {"cache_read": 1000, "cache_creation": 100},
            "output_token_details": {"reasoning": 120},
            "input_cost": 0.003,
            "output_cost": 0.0045,
            "total_cost": 0.0075,
            "input_cost_details": {"cache_read": 0.0005},
            "output_cost_details": {"reasoning": 0.0018},
        },
    }
    assert generation["events"] == [
        {"name": "new_token", "time": "2026-01-01T00:00:00.450000+00:00"}
    ]
    assert generation["extra"]["invocation_params"] == {"temperature": 0.2, "max_tokens": 256}
    metadata = generation["extra"]["metadata"]
    assert metadata["ls_provider"] == "openai"
    assert metadata["ls_model_name"] == "gpt-4o"
    assert metadata["ls_model_type"] == "chat"
    assert metadata["ls_temperature"] == 0.2
    assert metadata["tracebus_cost_source"] == "reported"
    assert "error" not in generation

    tool = langsmith.run(run_id(TOOL, 200))
    assert tool["run_type"] == "tool"
    assert tool["parent_run_id"] == generation_id
    assert tool["dotted_order"].startswith(f"{generation['dotted_order']}.20260101T000000200000Z")
    assert tool["inputs"] == {"tracking": "1Z999"}
    assert tool["outputs"] == {"output": "in transit"}

    retriever = langsmith.run(run_id(RETRIEVER, 10))
    assert retriever["run_type"] == "retriever"
    assert retriever["outputs"] == {"output": [{"id": "o-1", "status": "packed"}]}

    failed = langsmith.run(run_id(FAILED, 810))
    assert failed["run_type"] == "chain"
    assert failed["error"] == "schema mismatch: missing 'eta'"
    assert failed["extra"]["metadata"]["tracebus_level"] == "ERROR"

    event = langsmith.run(run_id(EVENT, 5))
    assert event["run_type"] == "chain"
    assert event["start_time"] == event["end_time"] == "2026-01-01T00:00:00.005000+00:00"

    feedback = langsmith.feedback
    helpfulness = feedback[str(feedback_uuid(TRACE_ID, "helpfulness-1"))]
    assert helpfulness["run_id"] == generation_id
    assert helpfulness["trace_id"] == root_id
    assert helpfulness["key"] == "helpfulness"
    assert helpfulness["score"] == 0.9
    verdict = feedback[str(feedback_uuid(TRACE_ID, "verdict-1"))]
    assert verdict["run_id"] == root_id
    assert verdict["value"] == "resolved"


def test_a_replay_is_answered_409_and_counts_as_delivered_without_duplicates(
    langsmith: LangSmithStandIn,
) -> None:
    export(langsmith, reference_document())
    stored = langsmith.runs

    export(langsmith, reference_document())  # no ExportError: already delivered

    first, replay = langsmith.requests[0], langsmith.requests[1]
    assert len(placements(first)) == 6
    assert placements(replay) == placements(first)
    assert langsmith.runs == stored
    assert len(langsmith.feedback) == 2
    replay_statuses = [request.status for request in langsmith.requests[1:]]
    assert set(replay_statuses) == {409}
    # The batch, then each of its 6 runs and 2 feedbacks alone, to be sure none was new.
    assert len(replay_statuses) == 1 + 6 + 2


def placements(request: ReceivedRequest) -> list[tuple[str, str, str | None, str]]:
    """Id, trace id, parent and dotted order of each run the request carried."""
    runs = [part.json() for part in request.parts if part.name.count(".") == 1]
    return [
        (run["id"], run["trace_id"], run.get("parent_run_id"), run["dotted_order"])
        for run in runs
        if "dotted_order" in run
    ]


def test_a_later_revision_delivers_its_late_observation_although_the_rest_is_known(
    langsmith: LangSmithStandIn,
) -> None:
    export(langsmith, reference_document())

    export(langsmith, reference_document(revision=2, late=True))

    late = langsmith.run(run_id(LATE, 850))
    assert late["name"] == "late-audit"
    assert late["extra"]["metadata"]["tracebus_revision"] == 2
    assert late["extra"]["metadata"]["tracebus_flags"] == ["late"]
    assert len(langsmith.runs) == 7


def test_several_documents_travel_in_one_request(langsmith: LangSmithStandIn) -> None:
    other = document(observation("b000000000000001"), trace_id="0af7651916cd43dd8448eb211c80319c")

    export(langsmith, reference_document(), other)

    assert len(langsmith.requests) == 1
    assert str(trace_uuid("0af7651916cd43dd8448eb211c80319c")) in langsmith.runs
    assert len(langsmith.runs) == 7


# -- orphans and missing roots ---------------------------------------------------------------

MISSING = "f00000000000000f"


@pytest.mark.parametrize(
    ("observations", "synthetic"),
    [
        (
            [observation(ROOT), observation(TOOL, MISSING, start_ms=5)],
            False,
        ),
        (
            [observation(TOOL, MISSING, start_ms=5), observation(LATE, "e00000000000000e")],
            True,
        ),
        (
            [observation(ROOT), observation(TOOL, start_ms=5)],
            True,
        ),
    ],
    ids=["orphan under the root", "only orphans", "two without a parent"],
)
def test_a_trace_with_orphans_or_without_one_root_arrives_as_one_tree(
    langsmith: LangSmithStandIn, observations: list[Observation], synthetic: bool
) -> None:
    doc = document(*observations)

    export(langsmith, doc)

    assert [request.status for request in langsmith.requests] == [202]
    root_id = str(trace_uuid(TRACE_ID))
    runs = langsmith.runs
    assert [run["id"] for run in runs.values() if "parent_run_id" not in run] == [root_id]
    assert langsmith.run(root_id)["extra"]["metadata"].get("tracebus_synthetic_root") is (
        True if synthetic else None
    )
    observed = {run["extra"]["metadata"].get("tracebus_observation_id") for run in runs.values()}
    assert {o.observation_id for o in observations} <= observed
    assert all(run["parent_run_id"] in runs for run in runs.values() if run["id"] != root_id)


def test_the_parts_of_a_trace_without_a_root_share_one_synthetic_root_sent_once(
    langsmith: LangSmithStandIn,
) -> None:
    first, second = observation(TOOL, MISSING, start_ms=5), observation(LATE, MISSING, start_ms=9)
    publication = {"parts": 2, "summary": summarize(first, second)}
    parts = [document(first, part=1, **publication), document(second, part=2, **publication)]

    export(langsmith, *parts)
    export(langsmith, parts[1])  # alone later: the root is known, the rest is delivered

    root = langsmith.run(trace_uuid(TRACE_ID))
    assert root["extra"]["metadata"]["tracebus_synthetic_root"] is True
    assert len(langsmith.runs) == 3
    assert langsmith.requests[0].status == 202
    assert {request.status for request in langsmith.requests[1:]} == {409}


def test_nothing_to_send_sends_nothing(langsmith: LangSmithStandIn) -> None:
    export(langsmith)
    assert langsmith.requests == []


def test_compression_can_be_turned_off(langsmith: LangSmithStandIn) -> None:
    export(langsmith, reference_document(), compression=None)

    (request,) = langsmith.requests
    assert "content-encoding" not in request.headers
    assert len(langsmith.runs) == 6


def test_the_workspace_is_named_in_x_tenant_id(langsmith: LangSmithStandIn) -> None:
    export(langsmith, reference_document(), workspace_id="ws-123")
    assert langsmith.requests[0].headers["x-tenant-id"] == "ws-123"


# -- failures --------------------------------------------------------------------------------


def test_a_trace_whose_parents_form_a_cycle_fails_permanently_before_any_request(
    langsmith: LangSmithStandIn,
) -> None:
    cycle = document(observation(ROOT), observation(TOOL, LATE), observation(LATE, TOOL))

    error = export_error(langsmith, reference_document(), cycle)

    assert not error.retryable
    assert error.whole_batch
    assert TRACE_ID in str(error)
    assert f"cycle: {TOOL} -> {LATE} -> {TOOL}" in str(error)
    assert langsmith.requests == []


def test_a_value_json_cannot_carry_fails_that_trace_permanently_before_any_request(
    langsmith: LangSmithStandIn,
) -> None:
    huge = document(observation(ROOT, input={"count": 2**70}))

    error = export_error(langsmith, huge)

    assert (error.retryable, error.whole_batch) == (False, True)
    assert TRACE_ID in str(error)
    assert langsmith.requests == []


@pytest.mark.parametrize(
    ("status", "retryable", "whole_batch"),
    [
        (500, True, False),
        (502, True, False),
        (503, True, False),
        (504, True, False),
        (413, False, True),
        (422, False, True),
        (400, False, True),
        (401, True, False),  # a bad key fails every trace alike: retried until it is fixed
        (403, True, False),
    ],
)
def test_an_error_status_becomes_an_export_error_of_its_kind(
    langsmith: LangSmithStandIn, status: int, retryable: bool, whole_batch: bool
) -> None:
    langsmith.fail_next(status)

    error = export_error(langsmith, reference_document())

    assert (error.status, error.retryable, error.whole_batch) == (status, retryable, whole_batch)
    assert "injected fault" in error.response
    assert langsmith.runs == {}


def test_429_is_retryable_after_the_time_langsmith_asks_for(langsmith: LangSmithStandIn) -> None:
    langsmith.fail_next(429, retry_after=7)

    error = export_error(langsmith, reference_document())

    assert (error.status, error.retryable, error.retry_after) == (429, True, 7.0)


def test_a_batch_langsmith_finds_too_large_is_rejected_whole() -> None:
    with LangSmithStandIn(max_body_bytes=2_000) as langsmith:
        error = export_error(langsmith, reference_document(), compression=None)
    assert (error.status, error.retryable, error.whole_batch) == (413, False, True)


def test_a_batch_over_the_configured_limit_is_refused_without_sending(
    langsmith: LangSmithStandIn,
) -> None:
    error = export_error(langsmith, reference_document(), max_body_bytes=1_000)

    assert (error.retryable, error.whole_batch) == (False, True)
    assert "exceeds the 1000-byte limit" in str(error)
    assert langsmith.requests == []


def test_a_wrong_api_key_is_a_retryable_401_that_never_shows_the_key(
    langsmith: LangSmithStandIn,
) -> None:
    exporter_key = "lsv2_pt_wrong_key_0123456789"

    async def run() -> None:
        exporter = LangSmithExporter(langsmith.url, exporter_key, project=PROJECT)
        try:
            await exporter.export([reference_document()])
        finally:
            await exporter.close()

    with pytest.raises(ExportError) as caught:
        asyncio.run(run())
    assert (caught.value.status, caught.value.retryable) == (401, True)
    assert exporter_key not in str(caught.value)


def test_an_answer_that_never_comes_is_a_retryable_timeout(langsmith: LangSmithStandIn) -> None:
    langsmith.hang_next()

    error = export_error(langsmith, reference_document(), timeout=0.2)

    assert error.retryable
    assert error.status is None
    assert "unreachable" in str(error)


def test_a_refused_connection_is_retryable_and_delivery_resumes_when_langsmith_is_back(
    langsmith: LangSmithStandIn,
) -> None:
    with langsmith.down():
        error = export_error(langsmith, reference_document())
    assert error.retryable and error.status is None

    export(langsmith, reference_document())
    assert len(langsmith.runs) == 6


def test_the_api_key_appears_in_no_error_and_no_repr(langsmith: LangSmithStandIn) -> None:
    errors: list[ExportError] = []
    for fault in (lambda: langsmith.fail_next(503), lambda: langsmith.fail_next(422)):
        fault()
        errors.append(export_error(langsmith, reference_document()))
    langsmith.hang_next()
    errors.append(export_error(langsmith, reference_document(), timeout=0.2))
    with langsmith.down():
        errors.append(export_error(langsmith, reference_document()))

    exporter = LangSmithExporter(langsmith.url, langsmith.api_key, project=PROJECT)
    texts = [repr(exporter), str(exporter)]
    for error in errors:
        texts += [str(error), repr(error), error.response or "", repr(error.__cause__)]
    assert all(langsmith.api_key not in text for text in texts)


def test_each_run_is_a_post_part_with_a_part_per_big_field_then_the_feedback(
    langsmith: LangSmithStandIn,
) -> None:
    export(langsmith, reference_document())

    (request,) = langsmith.requests
    names = [part.name for part in request.parts]
    generation_id = run_id(GENERATION, 100)
    assert names[:1] == [f"post.{run_id(ROOT, 0)}"]
    assert [name for name in names if generation_id in name] == [
        f"post.{generation_id}",
        f"post.{generation_id}.inputs",
        f"post.{generation_id}.outputs",
        f"post.{generation_id}.events",
        f"post.{generation_id}.extra",
    ]
    assert names[-2:] == [
        f"feedback.{feedback_uuid(TRACE_ID, 'helpfulness-1')}",
        f"feedback.{feedback_uuid(TRACE_ID, 'verdict-1')}",
    ]
    for part in request.parts:
        assert part.headers["content-type"] == "application/json"
        assert int(part.headers["content-length"]) == len(part.data)
