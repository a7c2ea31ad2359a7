"""Gateway benchmark: requests/s and spans/s per `tracebus gateway` process, per protocol, against
raw aiokafka writing the very records the gateway wrote.

    .venv/bin/python benchmarks/gateway_throughput.py [--quick] [--json PATH]

One gateway process runs on the embedded broker. For each protocol, this process sends
pre-built requests shaped like the official clients' (OTLP/HTTP protobuf as the OpenTelemetry
exporter sends it, Langfuse legacy batches of one trace as Dify sends them, LangSmith
`/runs/multipart` with inputs and outputs in their own parts as the SDK sends them) with
`--concurrency` requests in flight, and times them until the last answer. Every answer must be
a success; the gateway's own metrics must count every event.

Reported per protocol: requests/s, spans/s, latency p50/p99 (a request is answered only once
Kafka has acknowledged its events), the gateway's CPU per 1,000 spans, and — as the ceiling —
spans/s of one aiokafka producer re-sending exactly the records the gateway wrote (same keys,
values, acks=all, lz4), with the ratio gateway/ceiling. Client and gateway share the machine's
cores: the figures are per gateway process on a loaded machine, not an isolated server.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from random import Random
from typing import Any

import httpx
import orjson
from common import (
    NS_PER_MS,
    QUESTIONS,
    Child,
    PlannedNode,
    add_run_arguments,
    benchmark_parser,
    children_killed,
    cpu_seconds,
    embedded_broker,
    environment,
    fmt,
    hex_id,
    new_table,
    open_consumer,
    plan_tree,
    print_report,
    produce,
    progress,
    ratio,
    read_to_end,
    topic_partitions,
    wait_until,
    write_json,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status
from prometheus_client.parser import text_string_to_metric_families

from tracebus.kafka.broker import free_port
from tracebus.otlp_attributes import key_values

KEY = "bench-gateway-key"
KIND_WEIGHTS = {"generation": 4, "tool": 3, "retriever": 2, "span": 1, "chain": 1}
SIZES = (5, 20)
START_NS = 1_790_000_000_000_000_000
LANGSMITH_RUN_TYPES = {
    "generation": "llm",
    "tool": "tool",
    "retriever": "retriever",
    "agent": "chain",
    "chain": "chain",
    "span": "chain",
}


@dataclass
class Workload:
    """Requests of one protocol, ready to send."""

    protocol: str
    path: str
    headers: dict[str, str]
    bodies: list[bytes]
    spans: int  # observations in all bodies


@dataclass
class Result:
    protocol: str
    requests: int
    spans: int
    seconds: float
    latencies_ms: list[float] = field(repr=False)
    gateway_cpu_s: float
    events_counted: float
    ceiling_seconds: float | None = None
    ceiling_records: int = 0

    def figures(self) -> dict[str, Any]:
        ceiling = self.spans / self.ceiling_seconds if self.ceiling_seconds else None
        quantiles = statistics.quantiles(self.latencies_ms, n=100)
        return {
            "protocol": self.protocol,
            "requests": self.requests,
            "spans": self.spans,
            "seconds": self.seconds,
            "requests_per_s": self.requests / self.seconds,
            "spans_per_s": self.spans / self.seconds,
            "latency_p50_ms": quantiles[49],
            "latency_p99_ms": quantiles[98],
            "gateway_cpu_ms_per_1k_spans": self.gateway_cpu_s / self.spans * 1e6,
            "events_counted_by_gateway": self.events_counted,
            "ceiling_records": self.ceiling_records,
            "ceiling_spans_per_s": ceiling,
            "ratio_to_ceiling": ratio(self.spans / self.seconds, ceiling),
        }


# -- request bodies --------------------------------------------------------------------------


def otlp_workload(trees: list[list[PlannedNode]], rng: Random, per_request: int) -> Workload:
    bodies = []
    for first in range(0, len(trees), per_request):
        spans = []
        for tree in trees[first : first + per_request]:
            trace_id = bytes.fromhex(hex_id(rng, 128))
            span_ids = [bytes.fromhex(hex_id(rng, 64)) for _ in tree]
            for index, node in enumerate(tree):
                attributes: dict[str, object] = {
                    "langfuse.observation.type": node.kind,
                    "user.id": "customer-17",
                    "session.id": f"chat-{trace_id.hex()[:8]}",
                    "langfuse.observation.input": rng.choice(QUESTIONS),
                }
                if node.kind == "generation":
                    attributes |= {
                        "gen_ai.system": "openai",
                        "gen_ai.request.model": "gpt-4o-mini",
                        "gen_ai.usage.input_tokens": rng.randint(200, 4000),
                        "gen_ai.usage.output_tokens": rng.randint(20, 400),
                    }
                spans.append(
                    Span(
                        trace_id=trace_id,
                        span_id=span_ids[index],
                        parent_span_id=b"" if node.parent is None else span_ids[node.parent],
                        name=node.name,
                        kind=Span.SPAN_KIND_INTERNAL,
                        start_time_unix_nano=node.start_ns,
                        end_time_unix_nano=node.end_ns,
                        attributes=key_values(attributes),
                        status=Status(code=Status.STATUS_CODE_OK),
                    )
                )
        request = ExportTraceServiceRequest(
            resource_spans=[
                ResourceSpans(
                    resource={"attributes": key_values({"service.name": "shop-assistant"})},
                    scope_spans=[ScopeSpans(scope={"name": "bench"}, spans=spans)],
                )
            ]
        )
        bodies.append(request.SerializeToString())
    return Workload(
        "otlp",
        "/v1/traces",
        {"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {KEY}"},
        bodies,
        sum(len(tree) for tree in trees),
    )


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="microseconds")


def langfuse_workload(trees: list[list[PlannedNode]], rng: Random) -> Workload:
    """One trace per request, every observation created complete — the way Dify sends."""
    bodies = []
    for tree in trees:
        trace_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in tree]
        batch: list[dict[str, Any]] = [
            {
                "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "type": "trace-create",
                "timestamp": _iso(tree[0].start_ns),
                "body": {
                    "id": trace_id,
                    "name": "workflow",
                    "userId": "customer-17",
                    "sessionId": f"chat-{trace_id[:8]}",
                    "tags": ["workflow"],
                    "input": {"query": rng.choice(QUESTIONS)},
                },
            }
        ]
        for index, node in enumerate(tree):
            body: dict[str, Any] = {
                "id": ids[index],
                "traceId": trace_id,
                "parentObservationId": None if node.parent is None else ids[node.parent],
                "name": node.name,
                "startTime": _iso(node.start_ns),
                "endTime": _iso(node.end_ns),
                "input": {"query": rng.choice(QUESTIONS)},
                "level": "DEFAULT",
            }
            kind = "span"
            if node.kind == "generation":
                kind = "generation"
                body |= {
                    "model": "gpt-4o-mini",
                    "usage": {
                        "input": rng.randint(200, 4000),
                        "output": rng.randint(20, 400),
                        "unit": "TOKENS",
                    },
                }
            batch.append(
                {
                    "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    "type": f"{kind}-create",
                    "timestamp": _iso(node.end_ns),
                    "body": body,
                }
            )
        bodies.append(orjson.dumps({"batch": batch}))
    token = base64.b64encode(f"pk-lf-bench:{KEY}".encode()).decode()
    return Workload(
        "langfuse",
        "/api/public/ingestion",
        {"Content-Type": "application/json", "Authorization": f"Basic {token}"},
        bodies,
        sum(len(tree) for tree in trees),
    )


def _part(name: str, payload: bytes) -> bytes:
    return (
        f'Content-Disposition: form-data; name="{name}"\r\n'
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload


def langsmith_workload(trees: list[list[PlannedNode]], rng: Random, per_request: int) -> Workload:
    """Complete runs posted once, inputs and outputs in their own parts, as the SDK sends."""
    boundary = "tracebus-bench-boundary"
    bodies = []
    for first in range(0, len(trees), per_request):
        parts = []
        for tree in trees[first : first + per_request]:
            ids = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in tree]
            dotted: list[str] = []
            for index, node in enumerate(tree):
                start = datetime.fromtimestamp(node.start_ns / 1e9, UTC)
                segment = f"{start:%Y%m%dT%H%M%S%fZ}{ids[index]}"
                dotted.append(
                    segment if node.parent is None else f"{dotted[node.parent]}.{segment}"
                )
                run = {
                    "id": str(ids[index]),
                    "trace_id": str(ids[0]),
                    "dotted_order": dotted[index],
                    "parent_run_id": None if node.parent is None else str(ids[node.parent]),
                    "name": node.name,
                    "run_type": LANGSMITH_RUN_TYPES[node.kind],
                    "start_time": _iso(node.start_ns),
                    "end_time": _iso(node.end_ns),
                    "session_name": "shop-assistant",
                }
                outputs: dict[str, Any] = {"answer": "ok"}
                extra: dict[str, Any] = {"metadata": {"thread_id": f"chat-{ids[0].hex[:8]}"}}
                if node.kind == "generation":
                    extra["metadata"] |= {"ls_provider": "openai", "ls_model_name": "gpt-4o-mini"}
                    input_tokens, output_tokens = rng.randint(200, 4000), rng.randint(20, 400)
                    outputs["usage_metadata"] = {
                        "input_tokens": input_tokens,
                        "output_tokens": output_tokens,
                        "total_tokens": input_tokens + output_tokens,
                    }
                run_id = run["id"]
                parts.append(_part(f"post.{run_id}", orjson.dumps(run)))
                inputs = {"question": rng.choice(QUESTIONS)}
                parts.append(_part(f"post.{run_id}.inputs", orjson.dumps(inputs)))
                parts.append(_part(f"post.{run_id}.outputs", orjson.dumps(outputs)))
                parts.append(_part(f"post.{run_id}.extra", orjson.dumps(extra)))
        separator = f"--{boundary}\r\n".encode()
        body = b"".join(separator + part + b"\r\n" for part in parts)
        bodies.append(body + f"--{boundary}--\r\n".encode())
    return Workload(
        "langsmith",
        "/runs/multipart",
        {"Content-Type": f"multipart/form-data; boundary={boundary}", "x-api-key": KEY},
        bodies,
        sum(len(tree) for tree in trees),
    )


# -- running ---------------------------------------------------------------------------------


async def send_all(url: str, workload: Workload, concurrency: int) -> tuple[float, list[float]]:
    """Send every body with `concurrency` requests in flight: seconds in all, latency of each."""
    queue = list(reversed(workload.bodies))
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

        async def worker() -> None:
            while queue:
                body = queue.pop()
                started = time.perf_counter()
                response = await client.post(workload.path, content=body, headers=workload.headers)
                latencies.append((time.perf_counter() - started) * 1000)
                if response.status_code >= 300 and response.status_code != 207:
                    raise RuntimeError(
                        f"{workload.protocol}: {response.status_code} {response.text}"
                    )
                if response.status_code == 207 and response.json().get("errors"):
                    raise RuntimeError(f"{workload.protocol}: {response.text[:500]}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, latencies


def events_counted(url: str, protocol: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        if family.name == "tracebus_gateway_events":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels.get("protocol") == protocol:
                    return sample.value
    return 0.0


async def ceiling_seconds(bootstrap: str, topic: str, ceiling_topic: str) -> tuple[float, int]:
    """Seconds for one aiokafka producer to re-send every record the gateway wrote to `topic`."""
    async with open_consumer(bootstrap) as consumer:
        partitions = await topic_partitions(consumer, topic)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records = await read_to_end(consumer, ends, time.monotonic() + 120)
    pairs = [(r.key, r.value) for r in records]
    settings = {
        "acks": "all",
        "compression_type": "lz4",
        "linger_ms": 2,
        "enable_idempotence": False,
    }
    return await produce(bootstrap, ceiling_topic, pairs, settings), len(pairs)


def run_protocol(
    url: str, gateway: Child, workload: Workload, bootstrap: str, concurrency: int
) -> Result:
    progress(f"{workload.protocol}: {len(workload.bodies)} requests, {workload.spans} spans")
    cpu_before = cpu_seconds(gateway.process.pid)
    seconds, latencies = asyncio.run(send_all(url, workload, concurrency))
    cpu = cpu_seconds(gateway.process.pid) - cpu_before
    return Result(
        workload.protocol,
        len(workload.bodies),
        workload.spans,
        seconds,
        latencies,
        cpu,
        events_counted(url, workload.protocol),
    )


def main() -> None:
    parser = benchmark_parser(__doc__ or "")
    add_run_arguments(parser, quick="60 traces per protocol", timeout=600)
    parser.add_argument("--traces", type=int, default=1500, help="traces per protocol")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument(
        "--per-request", type=int, default=5, help="traces per OTLP/LangSmith request"
    )
    args = parser.parse_args()
    traces = 60 if args.quick else args.traces
    rng = Random(7)
    trees = [plan_tree(rng, START_NS + i * NS_PER_MS, SIZES, KIND_WEIGHTS) for i in range(traces)]
    workloads: list[Callable[[], Workload]] = [
        lambda: otlp_workload(trees, rng, args.per_request),
        lambda: langfuse_workload(trees, rng),
        lambda: langsmith_workload(trees, rng, args.per_request),
    ]
    results: list[Result] = []
    topics = {f"events-{name}": 4 for name in ("otlp", "langfuse", "langsmith")}
    topics |= {f"ceiling-{name}": 4 for name in ("otlp", "langfuse", "langsmith")}
    with children_killed(), embedded_broker(topics, "tracebus-bench-gateway-") as (bootstrap, work):
        for build in workloads:
            workload = build()
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            gateway = Child(
                [
                    sys.executable,
                    "-m",
                    "tracebus.cli",
                    "gateway",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--rate-limit",
                    "0",
                ],
                work / f"gateway-{workload.protocol}.log",
                env={
                    **os.environ,
                    "TRACEBUS_BOOTSTRAP_SERVERS": bootstrap,
                    "TRACEBUS_EVENTS_TOPIC": f"events-{workload.protocol}",
                    "TRACEBUS_API_KEYS": f"bench={KEY}",
                },
            )
            problem = wait_until(functools.partial(_healthy, url), gateway, args.timeout)
            if problem:
                raise SystemExit(f"gateway did not start: {problem}")
            result = run_protocol(url, gateway, workload, bootstrap, args.concurrency)
            gateway.stop()
            progress(f"{workload.protocol}: ceiling (raw aiokafka, same records)")
            result.ceiling_seconds, result.ceiling_records = asyncio.run(
                ceiling_seconds(
                    bootstrap, f"events-{workload.protocol}", f"ceiling-{workload.protocol}"
                )
            )
            results.append(result)
    figures = [r.figures() for r in results]
    table = new_table(
        "tracebus gateway — one process, embedded broker",
        ["protocol"],
        [
            "requests/s",
            "spans/s",
            "p50 ms",
            "p99 ms",
            "CPU ms/1k spans",
            "ceiling spans/s",
            "ratio",
        ],
    )
    for f in figures:
        table.add_row(
            f["protocol"],
            fmt(f["requests_per_s"]),
            fmt(f["spans_per_s"]),
            fmt(f["latency_p50_ms"], 1),
            fmt(f["latency_p99_ms"], 1),
            fmt(f["gateway_cpu_ms_per_1k_spans"]),
            fmt(f["ceiling_spans_per_s"]),
            fmt(f["ratio_to_ceiling"], 2, "×"),
            f"{f['events_counted_by_gateway']:,.0f} events acked",
        )
    print_report([table], [], 110)
    write_json(
        args.json,
        {
            "benchmark": "gateway_throughput",
            "environment": environment(["aiohttp", "aiokafka", "httpx"]),
            "traces_per_protocol": traces,
            "concurrency": args.concurrency,
            "results": figures,
        },
    )


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


if __name__ == "__main__":
    main()
