"""Existing instrumentation, unchanged, through a real gateway: the OpenTelemetry SDK's OTLP/HTTP
exporter and the langfuse SDK (5.x) send spans, and complete, correct traces come out of a real
stream worker — and on through the Langfuse sink to the strict Langfuse stand-in."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import eventually, fresh_settings
from gateway_helpers import API_KEY, PROJECT, GatewayProcess
from langfuse import Langfuse, propagate_attributes
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from sink_helpers import SinkProcess
from standins.langfuse import LangfuseStandIn
from streams.stream_helpers import WorkerProcess, of_traces, read_documents

from tracebus.config import KafkaSettings
from tracebus.kafka import EmbeddedBroker
from tracebus.schemas import TraceDocument

STANDIN_PUBLIC_KEY, STANDIN_SECRET_KEY = "pk-lf-standin", "sk-lf-standin"
# A second project, whose traces the Langfuse sink routes to a Langfuse project of its own.
OPS_API_KEY, OPS_PUBLIC_KEY, OPS_SECRET_KEY = "tb-ops-secret", "pk-lf-ops", "sk-lf-ops"
# The gateway takes an API key as the Basic password too, so this pair needs no key of its own;
# a public key no other test uses keeps the langfuse SDK's per-key singleton to this module.
SDK_PUBLIC_KEY = "pk-lf-otlp-sdks"


@dataclass
class Pipeline:
    settings: KafkaSettings
    gateway: GatewayProcess
    langfuse: LangfuseStandIn
    ops_langfuse: LangfuseStandIn

    def document(self, trace_id: str) -> TraceDocument:
        """The trace as the stream published it (its latest revision)."""
        documents = read_documents(self.settings, of_traces({trace_id}))
        return max((d for d in documents if d.trace_id == trace_id), key=lambda d: d.revision)


@pytest.fixture(scope="module")
def pipeline(
    broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipeline]:
    settings = fresh_settings(broker.bootstrap_servers)
    logs: Path = tmp_path_factory.mktemp("otlp-sdks")
    with (
        LangfuseStandIn(STANDIN_PUBLIC_KEY, STANDIN_SECRET_KEY) as langfuse,
        LangfuseStandIn(OPS_PUBLIC_KEY, OPS_SECRET_KEY) as ops_langfuse,
    ):
        routes = logs / "routes.toml"
        routes.write_text(
            f'[projects.ops]\nlangfuse_host = "{ops_langfuse.url}"\n'
            f'langfuse_public_key = "{OPS_PUBLIC_KEY}"\nlangfuse_secret_key = "{OPS_SECRET_KEY}"\n'
        )
        gateway = GatewayProcess(settings, logs, [f"ops={OPS_API_KEY}"])
        workers = [
            gateway,
            WorkerProcess(settings, logs),
            SinkProcess(
                "langfuse",
                settings,
                logs,
                TRACEBUS_LANGFUSE_HOST=langfuse.url,
                TRACEBUS_LANGFUSE_PUBLIC_KEY=STANDIN_PUBLIC_KEY,
                TRACEBUS_LANGFUSE_SECRET_KEY=STANDIN_SECRET_KEY,
                TRACEBUS_ROUTES_FILE=str(routes),
            ),
        ]
        try:
            yield Pipeline(settings, gateway, langfuse, ops_langfuse)
        finally:
            codes = [worker.stop() for worker in workers]
        assert codes == [0, 0, 0], [worker.log_tail() for worker in workers]


def test_opentelemetry_sdk_spans_come_out_of_the_stream_as_a_complete_trace(
    pipeline: Pipeline,
) -> None:
    resource = Resource.create({"service.name": "shop-api", "deployment.environment.name": "prod"})
    provider = TracerProvider(resource=resource)
    exporter = OTLPSpanExporter(
        endpoint=f"{pipeline.gateway.url}/v1/traces", headers={"x-api-key": API_KEY}
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("shop.agent", "2.0.0")
    with tracer.start_as_current_span(
        "handle-question", attributes={"user.id": "u-7", "session.id": "s-3"}
    ) as root:
        with tracer.start_as_current_span(
            "chat gpt-4o",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.request.temperature": 0.3,
                "gen_ai.usage.input_tokens": 1000,
                "gen_ai.usage.output_tokens": 100,
                "gen_ai.input.messages": json.dumps([{"role": "user", "content": "Weather?"}]),
                "gen_ai.output.messages": json.dumps([{"role": "assistant", "content": "Sunny"}]),
            },
        ):
            pass
        with tracer.start_as_current_span(
            "execute_tool get_weather",
            attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "get_weather"},
        ) as tool:
            tool.set_status(Status(StatusCode.ERROR, "weather service down"))
    provider.shutdown()
    trace_id = format(root.get_span_context().trace_id, "032x")
    root_id = format(root.get_span_context().span_id, "016x")

    document = pipeline.document(trace_id)
    assert document.completed_by == "root_ended"
    trace = document.trace
    assert (trace.name, trace.user_id, trace.session_id, trace.environment) == (
        "handle-question",
        "u-7",
        "s-3",
        "prod",
    )
    by_name = {o.name: o for o in document.observations}
    assert set(by_name) == {"handle-question", "chat gpt-4o", "get_weather"}
    assert document.root_observation_id == root_id
    assert {o.parent_observation_id for o in document.observations} == {None, root_id}
    chat = by_name["chat gpt-4o"]
    assert (chat.kind, chat.model, chat.provider) == ("generation", "gpt-4o", "openai")
    assert chat.model_parameters == {"temperature": 0.3}
    assert chat.usage is not None and chat.usage.model_dump(exclude_none=True) == {
        "input_tokens": 1000,
        "output_tokens": 100,
        "total_tokens": 1100,
    }
    assert chat.input == [{"role": "user", "content": "Weather?"}]
    assert chat.output == [{"role": "assistant", "content": "Sunny"}]
    assert chat.cost_source == "catalogue" and chat.cost is not None and chat.cost.total
    tool = by_name["get_weather"]
    assert (tool.kind, tool.level, tool.status_message) == ("tool", "ERROR", "weather service down")
    assert document.summary.error_count == 1


def test_a_langfuse_sdk_trace_reaches_langfuse_through_tracebus_as_the_sdk_sent_it(
    pipeline: Pipeline,
) -> None:
    langfuse = Langfuse(
        public_key=SDK_PUBLIC_KEY,
        secret_key=API_KEY,
        base_url=pipeline.gateway.url,
        tracer_provider=TracerProvider(),
        environment="staging",
        release="v9",
    )
    usage_details = {"input": 800, "input_cached_tokens": 200, "output": 40, "total": 1040}
    cost_details = {
        "input": 0.002,
        "input_cached_tokens": 0.0001,
        "output": 0.0004,
        "total": 0.0025,
    }
    with (
        langfuse.start_as_current_observation(
            name="support-chat", as_type="agent", input={"question": "Weather?"}
        ) as root,
        propagate_attributes(
            user_id="u-7", session_id="s-3", tags=["beta"], metadata={"tier": "gold"}
        ),
    ):
        with langfuse.start_as_current_observation(
            name="answer", as_type="generation", model="gpt-4o", metadata={"attempt": 1}
        ) as generation:
            generation.update(
                output="Sunny", usage_details=usage_details, cost_details=cost_details
            )
        root.update(output={"answer": "Sunny"})
    langfuse.flush()
    langfuse.shutdown()

    document = pipeline.document(root.trace_id)
    trace = document.trace
    assert (trace.name, trace.user_id, trace.session_id, trace.tags) == (
        "support-chat",
        "u-7",
        "s-3",
        ["beta"],
    )
    assert (trace.environment, trace.release, trace.metadata) == ("staging", "v9", {"tier": "gold"})
    by_name = {o.name: o for o in document.observations}
    support, answer = by_name["support-chat"], by_name["answer"]
    assert (support.kind, support.input, support.output) == (
        "agent",
        {"question": "Weather?"},
        {"answer": "Sunny"},
    )
    assert (answer.kind, answer.model, answer.output) == ("generation", "gpt-4o", "Sunny")
    assert answer.parent_observation_id == support.observation_id == root.id
    assert answer.metadata is not None and answer.metadata["attempt"] == 1
    assert answer.usage is not None and answer.usage.model_dump(exclude_none=True) == {
        "input_tokens": 1000,
        "input_cache_read_tokens": 200,
        "output_tokens": 40,
        "total_tokens": 1040,
    }
    assert answer.cost_source == "reported"

    standin = pipeline.langfuse
    eventually(
        lambda: (
            {s.name for s in standin.spans if s.trace_id == root.trace_id}
            == {"support-chat", "answer"}
        ),
        60,
        "the trace at the Langfuse stand-in",
    )
    delivered = standin.span(answer.observation_id)
    assert delivered.json("langfuse.observation.usage_details") == usage_details
    assert delivered.json("langfuse.observation.cost_details") == pytest.approx(cost_details)
    assert delivered.attributes["user.id"] == "u-7"
    assert delivered.attributes["langfuse.environment"] == "staging"


def test_each_api_keys_project_reaches_the_langfuse_project_its_route_names(
    pipeline: Pipeline,
) -> None:
    trace_ids = {}
    for api_key in (API_KEY, OPS_API_KEY):
        provider = TracerProvider()
        exporter = OTLPSpanExporter(
            endpoint=f"{pipeline.gateway.url}/v1/traces", headers={"x-api-key": api_key}
        )
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        with provider.get_tracer("routing").start_as_current_span(f"of-{api_key}") as root:
            pass
        provider.shutdown()
        trace_ids[api_key] = format(root.get_span_context().trace_id, "032x")

    assert pipeline.document(trace_ids[API_KEY]).project == PROJECT
    assert pipeline.document(trace_ids[OPS_API_KEY]).project == "ops"

    def trace_ids_at(standin: LangfuseStandIn) -> set[str]:
        return {s.trace_id for s in standin.spans} & set(trace_ids.values())

    eventually(
        lambda: (
            trace_ids_at(pipeline.langfuse) == {trace_ids[API_KEY]}
            and trace_ids_at(pipeline.ops_langfuse) == {trace_ids[OPS_API_KEY]}
        ),
        60,
        "each trace at its own project's stand-in",
    )
