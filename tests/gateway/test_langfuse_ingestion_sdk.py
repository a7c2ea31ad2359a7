"""Dify's Langfuse integration, unchanged, through a real gateway and a real stream worker: it
writes with the langfuse SDK Dify pins (4.x, installed beside the main venv's 5.x by `make`)
through the legacy ingestion endpoint, and complete, correct traces come out; one of them goes
on through the Langfuse sink to the strict Langfuse stand-in over OTLP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import eventually, fresh_settings
from gateway_helpers import LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY, PROJECT, GatewayProcess
from langfuse import Langfuse
from langfuse.api.core.api_error import ApiError
from sink_helpers import SinkProcess
from standins.langfuse import LangfuseStandIn
from streams.stream_helpers import WorkerProcess, read_documents

from tracebus.config import KafkaSettings
from tracebus.gateway.langfuse.ids import observation_id_for, trace_id_for
from tracebus.kafka import EmbeddedBroker
from tracebus.schemas import TraceDocument

DIFY_SDK = Path(sys.prefix) / "langfuse-dify"  # `make` installs Dify's pinned SDK here
DIFY_CLIENT = Path(__file__).with_name("langfuse_dify_client.py")
START = datetime(2026, 11, 26, 9)
STARTED_NS = 1_795_683_600_000_000_000  # START in Unix nanoseconds, read as UTC


@dataclass(frozen=True)
class Stack:
    settings: KafkaSettings
    gateway: GatewayProcess


@pytest.fixture(scope="module")
def stack(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    settings = fresh_settings(broker.bootstrap_servers)
    logs = tmp_path_factory.mktemp("langfuse-ingestion")
    gateway = GatewayProcess(settings, logs)
    stream = WorkerProcess(settings, logs)
    try:
        yield Stack(settings, gateway)
    finally:
        codes = [gateway.stop(), stream.stop()]
    assert codes == [0, 0], [gateway.log_tail(), stream.log_tail()]


def dify(
    stack: Stack, calls: list[dict[str, Any]], secret: str = LANGFUSE_SECRET_KEY, **plan: Any
) -> dict[str, Any]:
    """Run Dify's calls with its pinned SDK in a process of their own."""
    assert DIFY_SDK.is_dir(), f"Dify's langfuse SDK is not installed in {DIFY_SDK}: run make"
    request = {
        "host": stack.gateway.url,
        "public_key": LANGFUSE_PUBLIC_KEY,
        "secret_key": secret,
        "calls": calls,
        **plan,
    }
    completed = subprocess.run(
        [sys.executable, str(DIFY_CLIENT)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(DIFY_SDK), "TZ": "UTC"},
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    result: dict[str, Any] = json.loads(completed.stdout)
    assert result["version"].startswith("4."), result["version"]
    assert result["module"].startswith(str(DIFY_SDK)), result["module"]
    return result


def at(seconds: float) -> str:
    """A time Dify reads from its database: naive, `seconds` after START."""
    return (START + timedelta(seconds=seconds)).isoformat(timespec="microseconds")


def ns(seconds: float) -> int:
    return STARTED_NS + round(seconds * 1000) * 1_000_000


def node_metadata(node: str, node_type: str, status: str = "succeeded") -> dict[str, Any]:
    return {"node_name": node, "node_type": node_type, "status": status, "total_tokens": 150}


def chatflow(message_id: str, workflow_run_id: str, llm_node: str, tool_node: str) -> list[Any]:
    """What Dify sends for one chatflow message: trace, workflow span, then its nodes."""
    metadata = {"workflow_run_id": workflow_run_id, "app_id": "app-1", "user_id": "end-user-7"}
    return [
        {
            "kind": "trace",
            "body": {
                "id": message_id,
                "user_id": "end-user-7",
                "name": "message",
                "input": {"query": "What is tracebus?"},
                "output": {"answer": "A pipeline."},
                "metadata": metadata,
                "session_id": "conversation-3",
                "tags": ["message", "workflow"],
                "version": "2026-11-01 10:00:00",
            },
        },
        {
            "kind": "span",
            "body": {
                "id": workflow_run_id,
                "trace_id": message_id,
                "name": "workflow",
                "start_time": at(0),
                "end_time": at(3),
                "input": {"query": "What is tracebus?"},
                "output": {"answer": "A pipeline."},
                "metadata": metadata,
                "level": "DEFAULT",
                "status_message": "",
            },
        },
        {
            "kind": "generation",
            "body": {
                "id": llm_node,
                "trace_id": message_id,
                "name": "LLM",
                "model": "gpt-4o",
                "start_time": at(0.5),
                "completion_start_time": at(0.9),
                "end_time": at(2.5),
                "input": [{"role": "user", "text": "What is tracebus?"}],
                "output": {"text": "A pipeline.", "usage": {"prompt_tokens": 120}},
                "metadata": node_metadata("LLM", "llm"),
                "level": "DEFAULT",
                "status_message": "",
                "parent_observation_id": workflow_run_id,
                "usage": {"input": 120, "output": 30, "total": 150, "unit": "TOKENS"},
            },
        },
        {
            "kind": "span",
            "body": {
                "id": tool_node,
                "trace_id": message_id,
                "name": "Knowledge Retrieval",
                "start_time": at(0.1),
                "end_time": at(0.4),
                "input": {"query": "tracebus"},
                "output": {},
                "metadata": node_metadata("Knowledge Retrieval", "knowledge-retrieval", "failed"),
                "level": "ERROR",
                "status_message": "",
                "parent_observation_id": workflow_run_id,
            },
        },
    ]


def latest(documents: list[TraceDocument], trace_id: str) -> TraceDocument | None:
    mine = [d for d in documents if d.trace_id == trace_id]
    return max(mine, key=lambda d: d.revision, default=None)


def until_complete(expected: dict[str, int]) -> Any:
    """Until every trace's latest revision has its expected number of observations: Dify sends
    one request per event, so a first revision may have gone out before the last node came."""

    def done(documents: list[TraceDocument]) -> bool:
        return all(
            (d := latest(documents, trace_id)) is not None and len(d.observations) == count
            for trace_id, count in expected.items()
        )

    return done


def test_a_dify_chatflow_arrives_as_one_complete_trace(stack: Stack) -> None:
    message_id, run_id, llm_node, tool_node = (str(uuid.uuid4()) for _ in range(4))

    result = dify(stack, chatflow(message_id, run_id, llm_node, tool_node))

    assert all(r["errors"] == [] and len(r["successes"]) == 1 for r in result["responses"])
    assert all(r["successes"][0]["status"] == 201 for r in result["responses"])
    trace_id = trace_id_for(message_id)
    assert trace_id == message_id.replace("-", "")
    documents = read_documents(stack.settings, until_complete({trace_id: 3}))
    document = latest(documents, trace_id)
    assert document is not None
    assert document.trace.name == "message"
    assert (document.trace.user_id, document.trace.session_id) == ("end-user-7", "conversation-3")
    assert document.trace.tags == ["message", "workflow"]
    assert document.trace.input == {"query": "What is tracebus?"}
    assert document.trace.metadata["langfuse_version"] == "2026-11-01 10:00:00"
    workflow_id = observation_id_for(run_id)
    assert document.root_observation_id == workflow_id
    by_name = {o.name: o for o in document.observations}
    workflow, llm, retrieval = by_name["workflow"], by_name["LLM"], by_name["Knowledge Retrieval"]
    assert (workflow.kind, workflow.start_time_unix_nano, workflow.end_time_unix_nano) == (
        "span",
        ns(0),
        ns(3),
    )
    assert workflow.metadata is not None and workflow.metadata["langfuse_observation_id"] == run_id
    assert (llm.kind, llm.parent_observation_id, llm.model) == ("generation", workflow_id, "gpt-4o")
    assert llm.observation_id == observation_id_for(llm_node)
    assert llm.usage is not None
    assert (llm.usage.input_tokens, llm.usage.output_tokens, llm.usage.total_tokens) == (
        120,
        30,
        150,
    )
    assert llm.completion_start_time_unix_nano == ns(0.9)
    assert llm.time_to_first_token_ms == pytest.approx(400)
    assert llm.cost is not None and llm.cost.total is not None and llm.cost.total > 0
    assert llm.input == [{"role": "user", "text": "What is tracebus?"}]
    assert (retrieval.level, retrieval.parent_observation_id) == ("ERROR", workflow_id)
    assert retrieval.status_message is None  # Dify's "" means no message
    assert document.summary.error_count == 1


def test_a_plain_workflow_and_a_message_trace_with_dify_s_own_mistakes(stack: Stack) -> None:
    """A plain workflow (nodes flat under the trace), a message trace with the reported price,
    and what Langfuse itself refuses: Dify's moderation span without an id."""
    run_id, start_node, llm_node = (str(uuid.uuid4()) for _ in range(3))
    message_id = str(uuid.uuid4())
    calls = [
        {
            "kind": "trace",
            "body": {"id": run_id, "name": "workflow", "tags": ["workflow"], "user_id": "u-1"},
        },
        {
            "kind": "span",
            "body": {
                "id": start_node,
                "trace_id": run_id,
                "name": "Start",
                "start_time": at(0),
                "end_time": at(0.01),
                "level": "DEFAULT",
                "status_message": "",
            },
        },
        {
            "kind": "generation",
            "body": {
                "id": llm_node,
                "trace_id": run_id,
                "name": "LLM",
                "model": "gpt-4o-mini",
                "start_time": at(0.02),
                "end_time": at(1),
                "level": "DEFAULT",
                "usage": {"input": 10, "output": 5, "total": 15, "unit": "TOKENS"},
            },
        },
        {"kind": "trace", "body": {"id": message_id, "name": "message", "tags": ["message"]}},
        {
            "kind": "generation",
            "body": {
                "id": str(uuid.uuid4()),
                "trace_id": message_id,
                "name": "llm",
                "model": "some-private-model",
                "start_time": at(0),
                "end_time": at(2),
                "level": "DEFAULT",
                "usage": {
                    "input": 200,
                    "output": 40,
                    "total": 240,
                    "unit": "TOKENS",
                    "totalCost": 0.0125,
                },
            },
        },
        {
            "kind": "span",
            "body": {"trace_id": message_id, "name": "moderation", "start_time": at(0)},
        },
    ]

    responses = dify(stack, calls)["responses"]

    assert all(r["errors"] == [] for r in responses[:-1])
    moderation = responses[-1]
    assert moderation["successes"] == []
    [error] = moderation["errors"]
    assert (error["status"], error["message"]) == (400, "Invalid request data")
    assert json.loads(error["error"]) == [
        {
            "code": "invalid_type",
            "expected": "string",
            "path": ["body", "id"],
            "message": "Invalid input: expected string, received undefined",
        }
    ]
    workflow_trace, message_trace = trace_id_for(run_id), trace_id_for(message_id)
    documents = read_documents(
        stack.settings, until_complete({workflow_trace: 2, message_trace: 1})
    )
    workflow = latest(documents, workflow_trace)
    assert workflow is not None and workflow.trace.name == "workflow"
    assert {o.parent_observation_id for o in workflow.observations} == {None}
    assert workflow.summary.usage.total_tokens == 15
    message = latest(documents, message_trace)
    assert message is not None
    [generation] = message.observations
    assert generation.cost is not None and generation.cost.total == pytest.approx(0.0125)
    assert generation.cost_source == "reported"


def test_dify_s_api_check_and_the_current_sdk_s_auth_check_and_health(stack: Stack) -> None:
    assert dify(stack, [], auth_check=True)["auth_check"] is True
    refused = dify(stack, [], secret="sk-lf-wrong", auth_check=True)["auth_check"]
    assert refused.startswith("UnauthorizedError") and "invalid API key" in refused

    client = Langfuse(
        public_key=LANGFUSE_PUBLIC_KEY,
        secret_key=LANGFUSE_SECRET_KEY,
        host=stack.gateway.url,
        tracing_enabled=False,
    )
    assert client.auth_check() is True
    assert client.api.projects.get().data[0].id == PROJECT
    health = client.api.health.health()
    assert health.status == "OK" and health.version
    # The SDK keeps one client per public key, so the wrong secret goes with a key of its own.
    wrong = Langfuse(
        public_key="pk-lf-unknown",
        secret_key="sk-lf-wrong",
        host=stack.gateway.url,
        tracing_enabled=False,
    )
    with pytest.raises(ApiError) as refusal:
        wrong.auth_check()
    assert (refusal.value.status_code, refusal.value.body) == (401, {"message": "invalid API key"})


def test_a_dify_trace_reaches_langfuse_over_otlp(stack: Stack, tmp_path: Path) -> None:
    message_id, run_id, llm_node, tool_node = (str(uuid.uuid4()) for _ in range(4))
    trace_id = trace_id_for(message_id)
    with LangfuseStandIn("pk-lf-dest", "sk-lf-dest") as langfuse:
        sink = SinkProcess(
            "langfuse",
            stack.settings,
            tmp_path,
            TRACEBUS_LANGFUSE_HOST=langfuse.url,
            TRACEBUS_LANGFUSE_PUBLIC_KEY="pk-lf-dest",
            TRACEBUS_LANGFUSE_SECRET_KEY="sk-lf-dest",
        )
        try:
            dify(stack, chatflow(message_id, run_id, llm_node, tool_node))
            eventually(
                lambda: len({s.span_id for s in langfuse.spans if s.trace_id == trace_id}) == 3,
                90,
                "the chatflow's three spans at the Langfuse stand-in",
            )
        finally:
            code = sink.stop()
        assert code == 0, sink.log_tail()
        spans = {s.name: s for s in langfuse.spans if s.trace_id == trace_id}
    llm = spans["LLM"]
    assert llm.span_id == observation_id_for(llm_node)
    assert llm.parent_span_id == observation_id_for(run_id)
    assert llm.attributes["langfuse.observation.type"] == "generation"
    assert llm.json("langfuse.observation.usage_details") == {
        "input": 120,
        "output": 30,
        "total": 150,
    }
    assert all(s.attributes["langfuse.trace.name"] == "message" for s in spans.values())
    assert spans["Knowledge Retrieval"].attributes["langfuse.observation.level"] == "ERROR"


def test_a_batch_of_creates_updates_and_a_score_is_merged_into_one_trace(stack: Stack) -> None:
    """The batches Langfuse's v2 SDKs send: creates, then updates of the same observations and
    a score, several per request."""
    trace, span, generation = str(uuid.uuid4()), "span-17", "generation-18"

    def envelope(event_type: str, second: float, **body: Any) -> dict[str, Any]:
        return {
            "id": str(uuid.uuid4()),
            "type": event_type,
            "timestamp": at(second) + "Z",
            "body": body,
        }

    batches = [
        [
            envelope("trace-create", 0, id=trace, name="support-chat", userId="u-9", tags=["v2"]),
            envelope("span-create", 0, id=span, traceId=trace, name="agent", startTime=at(0) + "Z"),
            envelope(
                "generation-create",
                0.1,
                id=generation,
                traceId=trace,
                parentObservationId=span,
                name="answer",
                startTime=at(0.1) + "Z",
                model="gpt-4o",
                modelParameters={"temperature": 0.3},
                input=[{"role": "user", "content": "hi"}],
            ),
        ],
        [
            envelope(
                "generation-update",
                1,
                id=generation,
                traceId=trace,
                endTime=at(1) + "Z",
                output={"content": "hello"},
                usage={"input": 1000, "output": 10, "unit": "TOKENS"},
            ),
            envelope("span-update", 1.1, id=span, traceId=trace, endTime=at(1.1) + "Z"),
            envelope(
                "score-create", 1.2, traceId=trace, observationId=generation, name="ok", value=1
            ),
        ],
    ]
    auth = (LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY)
    for batch in batches:
        response = httpx.post(
            f"{stack.gateway.url}/api/public/ingestion", json={"batch": batch}, auth=auth
        )
        assert response.status_code == 207 and response.json()["errors"] == [], response.text

    trace_id = trace_id_for(trace)
    documents = read_documents(stack.settings, until_complete({trace_id: 2}))
    document = latest(documents, trace_id)
    assert document is not None and document.trace.tags == ["v2"]
    answer = next(o for o in document.observations if o.name == "answer")
    assert (answer.start_time_unix_nano, answer.end_time_unix_nano) == (ns(0.1), ns(1))
    assert answer.input == [{"role": "user", "content": "hi"}]
    assert answer.output == {"content": "hello"}
    assert answer.model_parameters == {"temperature": 0.3}
    assert answer.usage is not None and answer.usage.total_tokens == 1010
    assert answer.flags == []  # complete: created, then updated
    [score] = document.scores
    assert (score.name, score.value, score.observation_id) == ("ok", 1.0, answer.observation_id)
