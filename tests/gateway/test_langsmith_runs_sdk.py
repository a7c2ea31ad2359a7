"""Apps traced with the real langsmith SDK switch to tracebus by pointing LANGSMITH_ENDPOINT at
the gateway: real gateway and stream worker processes assemble their traces complete, and the
LangSmith sink delivers them with the root run's id preserved."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import langsmith
import pytest
from conftest import eventually, fresh_settings
from gateway_helpers import API_KEY, GatewayProcess
from langsmith import utils as ls_utils
from langsmith.run_trees import RunTree
from sink_helpers import SinkProcess
from standins.langsmith import LangSmithStandIn
from streams.stream_helpers import WorkerProcess, read_documents

from tracebus.config import KafkaSettings
from tracebus.gateway.langsmith.ids import observation_id
from tracebus.kafka import EmbeddedBroker
from tracebus.schemas import TraceDocument

STANDIN_KEY = "lsv2_pt_standin_secret"
REQUESTS = re.compile(
    r'tracebus_gateway_requests_total\{protocol="langsmith",route="(?P<route>[^"]+)",'
    r'status="(?P<status>\d+)"\} (?P<count>\S+)'
)


@dataclass
class Pipeline:
    settings: KafkaSettings
    gateway: GatewayProcess


@pytest.fixture(scope="module")
def pipeline(
    broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipeline]:
    settings = fresh_settings(broker.bootstrap_servers)
    logs = tmp_path_factory.mktemp("langsmith-gateway")
    worker = WorkerProcess(settings, logs)
    gateway = GatewayProcess(settings, logs)
    yield Pipeline(settings, gateway)
    refused = {key: n for key, n in answered(gateway).items() if not key[1].startswith("2")}
    codes = [gateway.stop(), worker.stop()]
    assert not refused, f"the gateway refused SDK requests: {refused}\n{gateway.log_tail()}"
    assert codes == [0, 0], [gateway.log_tail(), worker.log_tail()]


@pytest.fixture(autouse=True)
def no_langsmith_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK reads LANGSMITH_* / LANGCHAIN_* variables (sampling, metadata, endpoints)."""
    for name in list(os.environ):
        if name.startswith(("LANGSMITH_", "LANGCHAIN_")):
            monkeypatch.delenv(name)


def sdk_client(
    gateway: GatewayProcess, auto_batch_tracing: bool = True, **info_changes: Any
) -> langsmith.Client:
    """A client configured the way an app switches: only the endpoint and the key change.
    `info_changes` alter what the gateway's /info says, to steer the SDK's sending path."""
    variables = {"LANGSMITH_ENDPOINT": gateway.url, "LANGSMITH_API_KEY": API_KEY}
    info = None
    if info_changes:
        info = httpx.get(f"{gateway.url}/info").json()
        for key, value in info_changes.items():
            info[key].update(value)
    # The SDK caches what it read from the environment: cleared, it reads ours as an app's own
    # process would, and no later test inherits this endpoint.
    with mock.patch.dict(os.environ, variables):
        ls_utils.get_env_var.cache_clear()
        client = langsmith.Client(info=info, auto_batch_tracing=auto_batch_tracing)
    ls_utils.get_env_var.cache_clear()
    assert client.api_url == gateway.url
    return client


def answered(gateway: GatewayProcess) -> dict[tuple[str, str], float]:
    """LangSmith requests the gateway answered, by (route, status), from its /metrics."""
    counts: dict[tuple[str, str], float] = {}
    for line in httpx.get(f"{gateway.url}/metrics").text.splitlines():
        match = REQUESTS.match(line)
        if match:
            counts[match["route"], match["status"]] = float(match["count"])
    return counts


def document_of(
    settings: KafkaSettings,
    trace_id: uuid.UUID,
    ready: Callable[[TraceDocument], bool] = lambda _: True,
) -> TraceDocument:
    """The first whole document the stream publishes of a trace that is `ready` (a revision
    made after late events, say)."""

    def wanted(document: TraceDocument) -> bool:
        whole = document.part == document.parts == 1
        return document.trace_id == trace_id.hex and whole and ready(document)

    documents = read_documents(settings, lambda documents: any(map(wanted, documents)))
    return next(document for document in documents if wanted(document))


def traced_app(client: langsmith.Client, question: str) -> tuple[str, uuid.UUID]:
    """An app as people write it: nested @traceable functions, one of them an LLM call that
    reports usage, with metadata, tags and a thread id."""

    @langsmith.traceable(run_type="retriever", name="search-docs")
    def search(query: str) -> list[str]:
        return [f"doc about {query}"]

    @langsmith.traceable(
        run_type="llm",
        name="answer",
        metadata={"ls_provider": "openai", "ls_model_name": "gpt-4o-mini"},
    )
    def answer(query: str, docs: list[str]) -> dict[str, Any]:
        return {
            "choices": [{"message": {"role": "assistant", "content": f"{query}: {docs[0]}"}}],
            "usage_metadata": {
                "input_tokens": 120,
                "output_tokens": 30,
                "total_tokens": 150,
                "input_token_details": {"cache_read": 100},
            },
        }

    @langsmith.traceable(name="support-chat", tags=["beta"], metadata={"thread_id": "t-42"})
    def chat(query: str) -> str:
        root = langsmith.get_current_run_tree()
        root_ids.append(root.id)
        reply = answer(query, search(query))
        return reply["choices"][0]["message"]["content"]

    root_ids: list[uuid.UUID] = []
    with langsmith.tracing_context(enabled=True, client=client, project_name="shop-app"):
        text = chat(question)
    return text, root_ids[0]


@pytest.mark.parametrize("compressed", [True, False], ids=["zstd", "plain"])
def test_traceable_functions_arrive_as_one_complete_trace(
    pipeline: Pipeline, compressed: bool
) -> None:
    flags = {} if compressed else {"instance_flags": {"zstd_compression_enabled": False}}
    client = sdk_client(pipeline.gateway, **flags)
    text, root_id = traced_app(client, "refunds")
    client.flush()
    assert (client.compressed_traces is not None) == compressed

    document = document_of(pipeline.settings, root_id)
    by_name = {o.name: o for o in document.observations}
    assert sorted(by_name) == ["answer", "search-docs", "support-chat"]
    root, search, answer = by_name["support-chat"], by_name["search-docs"], by_name["answer"]
    assert document.root_observation_id == root.observation_id == observation_id(root_id)
    assert search.parent_observation_id == answer.parent_observation_id == root.observation_id
    assert (root.kind, search.kind, answer.kind) == ("chain", "retriever", "generation")
    assert all(o.end_time_unix_nano >= o.start_time_unix_nano for o in document.observations)
    assert root.input == {"query": "refunds"} and root.output == {"output": text}
    assert search.output == {"output": ["doc about refunds"]}
    assert (answer.model, answer.provider) == ("gpt-4o-mini", "openai")
    assert answer.usage is not None
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (120, 30)
    assert answer.usage.input_cache_read_tokens == 100
    assert "usage_metadata" not in answer.output
    assert document.trace.name == "support-chat"
    assert document.trace.session_id == "t-42"
    assert document.trace.tags == ["beta"]
    assert document.trace.metadata["langsmith_project"] == "shop-app"
    assert root.metadata["langsmith_run_id"] == str(root_id)
    assert not any(o.flags for o in document.observations)


@pytest.mark.filterwarnings("ignore:Creating feedback for a run without session_id")
def test_run_trees_posted_then_patched_with_an_error_and_feedback(pipeline: Pipeline) -> None:
    client = sdk_client(pipeline.gateway)
    started = datetime.now(UTC)
    root = RunTree(
        name="pipeline",
        run_type="chain",
        inputs={"ticket": 7},
        client=client,
        project_name="shop-app",
        start_time=started,
        extra={"metadata": {"session_id": "s-9", "user_id": "u-1"}},
    )
    root.post()
    tool = root.create_child(name="lookup", run_type="tool", inputs={"id": 7})
    tool.post()
    client.flush()  # the posts travel alone: the patches arrive in later requests
    tool.end(error="TimeoutError: backend did not answer")
    tool.patch()
    root.end(outputs={"status": "escalated"}, end_time=started + timedelta(seconds=2))
    root.patch()
    client.create_feedback(
        root.id, "resolution", score=0.25, trace_id=root.trace_id, comment="slow"
    )
    client.create_feedback(tool.id, "blame", value="backend", trace_id=root.trace_id)
    client.flush()
    assert all(route != "/feedback" for route, _ in answered(pipeline.gateway))  # multipart

    document = document_of(pipeline.settings, root.id, lambda d: len(d.scores) == 2)
    by_name = {o.name: o for o in document.observations}
    assert by_name["lookup"].level == "ERROR"
    assert by_name["lookup"].status_message == "TimeoutError: backend did not answer"
    assert by_name["lookup"].parent_observation_id == by_name["pipeline"].observation_id
    assert by_name["pipeline"].output == {"status": "escalated"}
    assert by_name["pipeline"].duration_ms == pytest.approx(2000, abs=1)
    assert (document.trace.session_id, document.trace.user_id) == ("s-9", "u-1")
    scores = {s.name: s for s in document.scores}
    assert (scores["resolution"].value, scores["resolution"].comment) == (0.25, "slow")
    assert scores["resolution"].observation_id is None  # feedback on the root run: the trace's
    assert scores["blame"].value == "backend" and scores["blame"].data_type == "CATEGORICAL"
    assert scores["blame"].observation_id == by_name["lookup"].observation_id


def test_the_langsmith_sink_receives_the_trace_with_the_root_run_id_preserved(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    with LangSmithStandIn(STANDIN_KEY) as standin:
        sink = SinkProcess(
            "langsmith",
            pipeline.settings,
            tmp_path,
            TRACEBUS_LANGSMITH_ENDPOINT=standin.url,
            TRACEBUS_LANGSMITH_API_KEY=STANDIN_KEY,
        )
        try:
            client = sdk_client(pipeline.gateway)
            _, root_id = traced_app(client, "returns")
            client.flush()
            eventually(lambda: str(root_id) in standin.runs, 60, "the root run in LangSmith")
            eventually(
                lambda: sum(r["trace_id"] == str(root_id) for r in standin.runs.values()) == 3,
                30,
                "the trace's three runs",
            )
        finally:
            code = sink.stop()
        assert code == 0, sink.log_tail()
    root = standin.run(root_id)
    assert root["name"] == "support-chat" and root.get("parent_run_id") is None
    [llm] = [
        r for r in standin.runs.values() if r["trace_id"] == str(root_id) and r["name"] == "answer"
    ]
    assert llm["parent_run_id"] == str(root_id)
    assert llm["outputs"]["usage_metadata"]["input_tokens"] == 120
    assert llm["extra"]["metadata"]["ls_model_name"] == "gpt-4o-mini"
    assert llm["extra"]["metadata"]["thread_id"] == "t-42"


def test_an_sdk_told_to_use_runs_batch_gets_its_traces_through_too(pipeline: Pipeline) -> None:
    client = sdk_client(pipeline.gateway, batch_ingest_config={"use_multipart_endpoint": False})
    before = answered(pipeline.gateway).get(("/runs/batch", "202"), 0)
    _, root_id = traced_app(client, "batch")
    client.flush()
    assert answered(pipeline.gateway)[("/runs/batch", "202")] > before
    document = document_of(pipeline.settings, root_id)
    assert len(document.observations) == 3


def test_an_sdk_without_background_batching_posts_and_patches_each_run(
    pipeline: Pipeline,
) -> None:
    client = sdk_client(pipeline.gateway, auto_batch_tracing=False)
    before = answered(pipeline.gateway)
    _, root_id = traced_app(client, "one by one")
    after = answered(pipeline.gateway)
    for route in ("/runs", "/runs/{run_id}"):
        assert after[(route, "202")] - before.get((route, "202"), 0) == 3
    document = document_of(pipeline.settings, root_id)
    assert sorted(o.name for o in document.observations) == [
        "answer",
        "search-docs",
        "support-chat",
    ]
    assert not any(o.flags for o in document.observations)
