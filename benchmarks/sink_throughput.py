"""Sink benchmark: traces/s per Langfuse sink worker, against the Langfuse SDK exporting itself.

    .venv/bin/python benchmarks/sink_throughput.py [--quick] [--json PATH] [--py-spy PATH]

The same generated traces (5–20 observations each, generations with model, usage and cost) go to
a fast local Langfuse stand-in (an HTTP acceptor in this process that gunzips and parses every
OTLP request and counts the distinct spans) two ways, one after the other:

- a real `tracebus sink langfuse` worker subprocess reads them as pre-published TraceDocuments
  from a topic of the embedded broker, for several TRACEBUS_BATCH_MAX_TRACES values;
- a subprocess of this script (`--sdk`, internal) creates them with the Langfuse v5 SDK
  (`start_observation`, `update`, `end` under `propagate_attributes`) and its own OTLP exporter
  sends them, timed until `flush()` returns;
- a sink worker with a routes file of 4 projects (the traces spread over them, stamped as the
  stream stamps them) at batch 100: 5 consumer groups, each reading the whole topic.

Reported per run: traces/s and spans/s, CPU seconds of the process per 1,000 traces, and the
tracebus/SDK ratio of traces per CPU second (per core).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gzip
import json
import os
import resource
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from random import Random
from typing import Any, NoReturn

from common import (
    NS_PER_MS,
    PASSAGES,
    QUESTIONS,
    Child,
    Headers,
    Profiler,
    add_profile_arguments,
    add_run_arguments,
    benchmark_parser,
    check,
    children_killed,
    cpu_seconds,
    embedded_broker,
    environment,
    find_result,
    fmt,
    hex_id,
    hottest_lines,
    in_round,
    median_run,
    new_table,
    plan_tree,
    prepare_profile_dir,
    print_report,
    produce,
    profile_summary,
    progress,
    ratio,
    run_child,
    wait_until,
    write_json,
)

from tracebus.schemas import PROJECT_HEADER, Cost, TraceDocument, Usage
from tracebus.schemas.traces import Observation, TraceAttributes, TraceSummary
from tracebus.sinks.langfuse import cost_details, usage_details

PARTITIONS = 8
ROUTED_PROJECTS, ROUTED_BATCH = 4, 100
TRACES_PATH = "/api/public/otel/v1/traces"
PUBLIC_KEY, SECRET_KEY = "pk-lf-benchmark", "sk-lf-benchmark"
AUTHORIZATION = "Basic " + base64.b64encode(f"{PUBLIC_KEY}:{SECRET_KEY}".encode()).decode()
TARGET_PER_CORE = 3.0
WORKER_COMMAND = [sys.executable, "-m", "tracebus.cli", "--log-level", "info", "sink", "langfuse"]
READY_LINE = "assigned ["  # the runtime logs its partitions once it has joined the group
SDK_LOGGERS = ("langfuse", "opentelemetry", "urllib3", "requests")
PACKAGES = ("tracebus", "langfuse", "opentelemetry-sdk", "aiokafka", "httpx", "protobuf")
# The AIOKafkaProducer of `publish`: like the stream worker's (acks=all, no compression, 50 ms).
WORKER_PRODUCER_SETTINGS = {
    "acks": "all",
    "linger_ms": 50,
    "max_batch_size": 1024 * 1024,
    "max_request_size": 4 * 1024 * 1024,
    "enable_idempotence": False,
}

# -- the workload: one plan per trace, rendered for tracebus and for the SDK -------------------

MIN_OBSERVATIONS, MAX_OBSERVATIONS = 5, 20
MODEL, PROVIDER = "gpt-4o", "openai"
# USD per token (gpt-4o): input, cached input, output.
PRICE_INPUT, PRICE_CACHED, PRICE_OUTPUT = 2.5e-6, 1.25e-6, 10e-6
SYSTEM_PROMPT = (
    "You are the support assistant of an online shop. Answer briefly and politely, cite the "
    "order data and the knowledge-base passages you were given, never promise refunds that the "
    "policy does not allow, and hand over to a human when the customer asks for one."
)
ANSWERS = [
    "Your order 4411 left our warehouse yesterday afternoon; the carrier expects to deliver it "
    "on Friday before noon. The tracking page updates overnight, so it should show the parcel "
    "tomorrow morning. I am sorry for the delay.",
    "Worn shoes can be returned within 30 days of delivery if they show no damage or marks on "
    "the soles. I started the return for you: print the label from the e-mail I just sent and "
    "drop the parcel at any post office.",
    "I have corrected the billing address on your account and sent the new invoice to your "
    "e-mail address; the old invoice number stays valid for your records, only the address on "
    "it has changed.",
    "The second charge is a pre-authorisation by your bank, not a payment: it expires within 5 "
    "working days and the amount is released automatically, so there is nothing to refund.",
    "Yes, we ship to Norway. Delivery to Oslo takes 3 to 5 working days, customs included; in "
    "winter the carrier sometimes needs one more day for addresses outside the city.",
]
# Words of the varying part of prompts and replies, so that payloads compress like real ones.
_WORDS = (
    "order parcel invoice refund return delivery carrier warehouse address customer account "
    "payment card subscription shipment tracking label policy discount voucher size colour "
    "shoes jacket shirt dress backpack charger headphones monday tuesday wednesday thursday "
    "friday morning evening yesterday tomorrow week month late early damaged missing wrong "
    "broken replaced cancelled confirmed pending approved declined urgent please thanks hello "
    "again still already never always maybe soon today number code reference email phone "
    "store online app website checkout basket price total tax customs oslo berlin paris madrid "
    "rome vienna lisbon dublin warsaw prague stockholm helsinki copenhagen amsterdam brussels"
)
VOCABULARY = _WORDS.split()
KIND_WEIGHTS = {"generation": 35, "tool": 20, "retriever": 15, "span": 20, "chain": 10}
ENVIRONMENT, RELEASE = "production", "2025.05.1"


@dataclass(frozen=True)
class NodePlan:
    """One observation as the app records it; usage and cost as tracebus fields (inclusive)."""

    observation_id: str
    parent: int | None  # index of the parent in the trace's nodes, which come parents first
    kind: str
    name: str
    start_ns: int
    end_ns: int
    input: Any
    output: Any
    metadata: dict[str, Any] | None = None
    level: str = "DEFAULT"
    status_message: str | None = None
    model: str | None = None
    model_parameters: dict[str, Any] | None = None
    usage: dict[str, int] | None = None
    cost: dict[str, float] | None = None
    completion_start_ns: int | None = None


@dataclass(frozen=True)
class TracePlan:
    trace_id: str
    name: str
    user_id: str
    session_id: str
    tags: list[str]
    metadata: dict[str, str]
    input: Any
    output: Any
    nodes: list[NodePlan]


def words(rng: Random, low: int, high: int) -> str:
    return " ".join(rng.choices(VOCABULARY, k=rng.randint(low, high)))


def plan_node(
    rng: Random, topic: int, kind: str, name: str, parent: int | None, start: int, end: int
) -> NodePlan:
    """Input and output of a few hundred bytes; generations with model, usage and cost."""
    observation_id = hex_id(rng, 64)
    error = rng.random() < 0.03
    common: dict[str, Any] = {
        "observation_id": observation_id,
        "parent": parent,
        "kind": kind,
        "name": name,
        "start_ns": start,
        "end_ns": end,
        "level": "ERROR" if error else "DEFAULT",
        "status_message": "TimeoutError: upstream took too long" if error else None,
    }
    question, answer = QUESTIONS[topic], ANSWERS[topic]
    if kind == "generation":
        prompt, completion = rng.randint(300, 4000), rng.randint(20, 600)
        cached = min(rng.choice((0, 0, 256, 1024)), prompt)
        cost_input = (prompt - cached) * PRICE_INPUT + cached * PRICE_CACHED
        cost_output = completion * PRICE_OUTPUT
        return NodePlan(
            **common,
            input=[
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": f"{question} {words(rng, 10, 30)}"},
            ],
            output={"role": "assistant", "content": f"{answer} {words(rng, 5, 25)}"},
            model=MODEL,
            model_parameters={"temperature": 0.2, "max_tokens": 1024},
            usage={
                "input_tokens": prompt,
                "input_cache_read_tokens": cached,
                "output_tokens": completion,
                "total_tokens": prompt + completion,
            },
            cost={
                "input": round(cost_input, 9),
                "input_cache_read": round(cached * PRICE_CACHED, 9),
                "output": round(cost_output, 9),
                "total": round(cost_input + cost_output, 9),
            },
            completion_start_ns=start + rng.randint(150, 600) * NS_PER_MS,
        )
    if kind == "tool":
        order = rng.randint(1000, 9999)
        return NodePlan(
            **common,
            input={"order_id": order, "fields": ["status", "eta", "carrier", "items"]},
            output={
                "order_id": order,
                "status": rng.choice(("shipped", "packed", "delivered")),
                "eta_days": rng.randint(1, 5),
                "carrier": "PostNord",
                "items": [{"sku": f"SKU-{rng.randint(10_000, 99_999)}", "qty": 1}] * 3,
            },
        )
    if kind == "retriever":
        return NodePlan(
            **common,
            input={"query": f"{question} {words(rng, 3, 8)}", "k": 3},
            output=[
                {"id": f"kb-{rng.randint(100, 999)}", "text": passage, "score": rng.random()}
                for passage in rng.sample(PASSAGES, 3)
            ],
        )
    if kind == "agent":
        return NodePlan(**common, input=question, output=answer, metadata={"route": "support"})
    return NodePlan(
        **common,
        input={"step": name, "question": question},
        output={"ok": True, "summary": words(rng, 15, 40)},
    )


def plan_traces(count: int, seed: int) -> list[TracePlan]:
    rng = Random(seed)
    start_ns = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
    plans = []
    for index in range(count):
        sizes = (MIN_OBSERVATIONS, MAX_OBSERVATIONS)
        tree = plan_tree(rng, start_ns + index * NS_PER_MS, sizes, KIND_WEIGHTS)
        topic = rng.randrange(len(QUESTIONS))
        nodes = [plan_node(rng, topic, *node) for node in tree]
        user = rng.randrange(10_000)
        plans.append(
            TracePlan(
                trace_id=hex_id(rng, 128),
                name="support-chat",
                user_id=f"user-{user}",
                session_id=f"session-{user}-{rng.randrange(5)}",
                tags=["benchmark", rng.choice(("web", "mobile"))],
                metadata={"tenant": rng.choice(("acme", "globex", "initech"))},
                input=QUESTIONS[topic],
                output=ANSWERS[topic],
                nodes=nodes,
            )
        )
    return plans


def trace_document(plan: TracePlan) -> TraceDocument:
    """The document the stream would publish for `plan` (cost from the price catalogue)."""
    observations = []
    for node in plan.nodes:
        parent = None if node.parent is None else plan.nodes[node.parent].observation_id
        ttft = (
            None
            if node.completion_start_ns is None
            else (node.completion_start_ns - node.start_ns) / NS_PER_MS
        )
        observations.append(
            Observation(
                observation_id=node.observation_id,
                parent_observation_id=parent,
                kind=node.kind,
                name=node.name,
                start_time_unix_nano=node.start_ns,
                end_time_unix_nano=node.end_ns,
                duration_ms=(node.end_ns - node.start_ns) / NS_PER_MS,
                level=node.level,
                status_message=node.status_message,
                input=node.input,
                output=node.output,
                metadata=node.metadata,
                model=node.model,
                provider=PROVIDER if node.model else None,
                model_parameters=node.model_parameters,
                usage=Usage(**node.usage) if node.usage else None,
                cost=Cost(**node.cost) if node.cost else None,
                cost_source="catalogue" if node.cost else None,
                completion_start_time_unix_nano=node.completion_start_ns,
                time_to_first_token_ms=ttft,
            )
        )
    start = min(node.start_ns for node in plan.nodes)
    end = max(node.end_ns for node in plan.nodes)
    usages = [node.usage for node in plan.nodes if node.usage]
    costs = [node.cost for node in plan.nodes if node.cost]
    return TraceDocument(
        schema_version=1,
        trace_id=plan.trace_id,
        revision=1,
        completed_by="root_ended",
        published_at_unix_nano=end + 200 * NS_PER_MS,
        trace=TraceAttributes(
            name=plan.name,
            user_id=plan.user_id,
            session_id=plan.session_id,
            tags=plan.tags,
            metadata=plan.metadata,
            release=RELEASE,
            environment=ENVIRONMENT,
            input=plan.input,
            output=plan.output,
        ),
        root_observation_id=plan.nodes[0].observation_id,
        observations=observations,
        summary=TraceSummary(
            start_time_unix_nano=start,
            end_time_unix_nano=end,
            duration_ms=(end - start) / NS_PER_MS,
            observation_count=len(plan.nodes),
            observations_by_kind=dict(Counter(node.kind for node in plan.nodes)),
            error_count=sum(node.level == "ERROR" for node in plan.nodes),
            usage=Usage(**{k: sum(u[k] for u in usages) for k in usages[0]}) if usages else Usage(),
            cost=Cost(**{k: round(sum(c[k] for c in costs), 9) for k in costs[0]})
            if costs
            else Cost(),
        ),
    )


# -- the fast stand-in: an HTTP/1.1 acceptor on a thread of this process ----------------------


@dataclass(frozen=True)
class Received:
    """One OTLP request, timed when its body had arrived (before the answer)."""

    at: float  # time.monotonic()
    wall: float  # time.time()
    spans: int
    new_spans: int  # spans not seen before in this run
    traces: int  # distinct trace ids in the request
    body_bytes: int
    raw_bytes: int  # after gunzip
    cpu_s: float | None  # process CPU seconds of the watched process at that moment
    handle_cpu_s: float  # CPU seconds this stand-in spent decoding the request


@dataclass
class _Run:
    watched_pid: int | None = None
    requests: list[Received] = field(default_factory=list)
    seen: set[tuple[bytes, bytes]] = field(default_factory=set)
    rejected: list[str] = field(default_factory=list)
    # Per span, the first time it arrived minus its end time: the end-to-end benchmark's latency.
    latencies_ms: list[float] = field(default_factory=list)


class FastStandIn:
    """Accepts what the Langfuse OTLP endpoint accepts (basic auth, ingestion version 4,
    protobuf, gzip or not) as fast as Python allows: one asyncio loop, keep-alive, no storage but
    the distinct (trace id, span id) pairs. Requests it cannot take get a 400 and are logged."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._lock = threading.Lock()
        self._run = _Run()
        self.port = 0
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        self._request_type = ExportTraceServiceRequest

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FastStandIn:
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        self.port = started.result(10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=64)
        return int(self._server.sockets[0].getsockname()[1])

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def reset(self, watched_pid: int | None = None) -> None:
        """Forget what was received; sample the CPU of `watched_pid` at every request."""
        with self._lock:
            self._run = _Run(watched_pid)

    def watch(self, pid: int) -> None:
        with self._lock:
            self._run.watched_pid = pid

    def snapshot(self) -> tuple[list[Received], int, list[str]]:
        """The requests of this run, its distinct spans, and its rejections."""
        with self._lock:
            run = self._run
            return list(run.requests), len(run.seen), list(run.rejected)

    def distinct_spans(self) -> int:
        with self._lock:
            return len(self._run.seen)

    def latencies_ms(self) -> list[float]:
        """Milliseconds from each distinct span's end time to its first arrival, in order."""
        with self._lock:
            return list(self._run.latencies_ms)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name:
                        headers[name.strip().lower()] = value.strip()
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    body = await _read_chunked(reader)
                else:
                    body = await reader.readexactly(int(headers.get("content-length") or 0))
                status, reply = self._handle(method, path.split("?", 1)[0], headers, body)
                writer.write(
                    f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
                    "Content-Type: application/json\r\n"
                    f"Content-Length: {len(reply)}\r\n\r\n".encode()
                    + reply
                )
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            writer.close()

    def _handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes]:
        if method != "POST" or path != TRACES_PATH:
            return 404, b'{"message":"Not found"}'
        arrived, wall, wall_ns = time.monotonic(), time.time(), time.time_ns()
        with self._lock:
            pid = self._run.watched_pid
        cpu = None
        if pid is not None:
            with contextlib.suppress(OSError, IndexError, ValueError):
                cpu = cpu_seconds(pid)
        began = time.thread_time()
        problem = None
        if headers.get("authorization") != AUTHORIZATION:
            problem = "wrong or missing basic authorization"
        elif headers.get("x-langfuse-ingestion-version") != "4":
            problem = f"ingestion version {headers.get('x-langfuse-ingestion-version')!r}"
        elif "application/x-protobuf" not in headers.get("content-type", ""):
            problem = f"content type {headers.get('content-type')!r}"
        raw = body
        keys: list[tuple[bytes, bytes]] = []
        ends: list[int] = []
        if problem is None:
            try:
                if headers.get("content-encoding", "").lower() == "gzip":
                    raw = gzip.decompress(body)
                request = self._request_type.FromString(raw)
                spans = [
                    span
                    for resource_spans in request.resource_spans
                    for scope_spans in resource_spans.scope_spans
                    for span in scope_spans.spans
                ]
                keys = [(span.trace_id, span.span_id) for span in spans]
                ends = [span.end_time_unix_nano for span in spans]
            except Exception as error:
                problem = f"undecodable body: {error!r}"
        with self._lock:
            run = self._run
            if problem is not None:
                run.rejected.append(problem)
                return 400, json.dumps({"message": problem}).encode()
            before = len(run.seen)
            for key, end in zip(keys, ends, strict=True):
                if key not in run.seen:
                    run.seen.add(key)
                    run.latencies_ms.append((wall_ns - end) / NS_PER_MS)
            run.requests.append(
                Received(
                    at=arrived,
                    wall=wall,
                    spans=len(keys),
                    new_spans=len(run.seen) - before,
                    traces=len({trace for trace, _ in keys}),
                    body_bytes=len(body),
                    raw_bytes=len(raw),
                    cpu_s=cpu,
                    handle_cpu_s=time.thread_time() - began,
                )
            )
        return 200, b"{}"


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


# -- Kafka (parent) ----------------------------------------------------------------------------


def publish(
    bootstrap: str,
    topic: str,
    records: list[tuple[bytes, bytes]],
    headers: list[Headers] | None = None,
) -> None:
    """Publish like the stream worker's producer (acks=all, no compression, linger 50 ms)."""
    asyncio.run(produce(bootstrap, topic, records, WORKER_PRODUCER_SETTINGS, headers))


def routed_records(plans: list[TracePlan]) -> tuple[list[tuple[bytes, bytes]], list[Headers]]:
    """The traces spread over ROUTED_PROJECTS projects, as the stream publishes them: the
    project in the document and in the record's header."""
    records, headers = [], []
    for index, plan in enumerate(plans):
        project = f"project-{index % ROUTED_PROJECTS}"
        document = trace_document(plan).model_copy(update={"project": project})
        records.append(
            (plan.trace_id.encode(), document.model_dump_json(exclude_none=True).encode())
        )
        headers.append([(PROJECT_HEADER, project.encode())])
    return records, headers


def routes_file(work: Path, url: str) -> Path:
    """A route per project, each to the stand-in (which counts every project's spans alike)."""
    path = work / "routes.toml"
    path.write_text(
        "".join(
            f'[projects.project-{i}]\nlangfuse_host = "{url}"\n'
            f'langfuse_public_key = "{PUBLIC_KEY}"\nlangfuse_secret_key = "{SECRET_KEY}"\n'
            for i in range(ROUTED_PROJECTS)
        )
    )
    return path


# -- the tracebus sink worker (parent side) -----------------------------------------------------


@dataclass(frozen=True)
class Config:
    traces: int
    warmup: int
    batches: list[int]
    rounds: int
    seed: int
    timeout_s: float
    py_spy: str | None
    profile_dir: Path | None


@dataclass(frozen=True)
class Topics:
    traces: str = "bench.sink.traces"
    routed: str = "bench.sink.routed"
    dead_letter: str = "bench.sink.deadletter"
    profile: str = "bench.sink.profile"

    def partitions(self) -> dict[str, int]:
        return {
            self.traces: PARTITIONS,
            self.routed: PARTITIONS,
            self.profile: PARTITIONS,
            self.dead_letter: 1,
        }


def worker_env(bootstrap: str, url: str, topic: str, topics: Topics, batch: int) -> dict[str, str]:
    return {
        **os.environ,
        "TRACEBUS_BOOTSTRAP_SERVERS": bootstrap,
        "TRACEBUS_TRACES_TOPIC": topic,
        "TRACEBUS_DEAD_LETTER_TOPIC": topics.dead_letter,
        "TRACEBUS_GROUP_ID": f"bench-sink-{uuid.uuid4().hex[:8]}",  # reads from the start
        "TRACEBUS_LANGFUSE_HOST": url,
        "TRACEBUS_LANGFUSE_PUBLIC_KEY": PUBLIC_KEY,
        "TRACEBUS_LANGFUSE_SECRET_KEY": SECRET_KEY,
        "TRACEBUS_BATCH_MAX_TRACES": str(batch),
    }


def tracebus_figures(requests: list[Received]) -> dict[str, Any]:
    """Rates between the first and the last request: what arrived after the first request,
    over the time between them (the first request's spans were read and encoded before the
    window opened, so they are not counted); CPU likewise between the two samples."""
    ordered = sorted(requests, key=lambda r: r.at)
    first, last = ordered[0], ordered[-1]
    later = ordered[1:]
    seconds = last.at - first.at
    traces = sum(r.traces for r in later)
    spans = sum(r.new_spans for r in later)
    cpu = None
    if first.cpu_s is not None and last.cpu_s is not None:
        cpu = last.cpu_s - first.cpu_s
    figures: dict[str, Any] = {
        "requests": len(ordered),
        "traces_per_request": statistics.fmean(r.traces for r in ordered),
        "window_traces": traces,
        "window_spans": spans,
        "seconds": seconds,
        "traces_per_s": traces / seconds if seconds > 0 else None,
        "spans_per_s": spans / seconds if seconds > 0 else None,
        "cpu_s": cpu,
    }
    if cpu is not None and traces:
        figures["cpu_s_per_1k_traces"] = cpu / traces * 1000
        figures["cpu_share"] = cpu / seconds if seconds > 0 else None
    return figures


def payload_figures(requests: list[Received]) -> dict[str, Any]:
    spans = sum(r.spans for r in requests) or 1
    return {
        "gzip_bytes_per_span": sum(r.body_bytes for r in requests) / spans,
        "protobuf_bytes_per_span": sum(r.raw_bytes for r in requests) / spans,
        "standin_cpu_ms_per_request": statistics.fmean(r.handle_cpu_s for r in requests) * 1000,
    }


def run_tracebus(
    standin: FastStandIn,
    bootstrap: str,
    topics: Topics,
    workload: dict[str, int],
    batch: int,
    config: Config,
    work: Path,
    routes: Path | None = None,
) -> dict[str, Any]:
    """A sink worker delivering the whole topic; with `routes`, the routed topic."""
    row: dict[str, Any] = {"implementation": "tracebus", "batch_max_traces": batch}
    if routes is None:
        env = worker_env(bootstrap, standin.url, topics.traces, topics, batch)
    else:
        row["routed_projects"] = ROUTED_PROJECTS
        env = worker_env(bootstrap, standin.url, topics.routed, topics, batch)
        env["TRACEBUS_ROUTES_FILE"] = str(routes)
    standin.reset()
    started = time.monotonic()
    worker = Child(WORKER_COMMAND, work / f"sink-{batch}-{uuid.uuid4().hex[:4]}.log", env)
    standin.watch(worker.process.pid)
    expected = workload["spans"]
    try:
        error = wait_until(lambda: standin.distinct_spans() >= expected, worker, config.timeout_s)
    finally:
        code = worker.stop()
    requests, distinct, rejected = standin.snapshot()
    row.update(exit_code=code, distinct_spans=distinct, expected_spans=expected)
    if rejected:
        error = f"{len(rejected)} request(s) rejected, e.g. {rejected[0]}"
    if error is not None or not requests:
        row["error"] = f"{error}; {distinct:,} of {expected:,} spans; log: {worker.log_tail()}"
        return row
    row["startup_s"] = min(r.at for r in requests) - started
    row.update(tracebus_figures(requests))
    row.update(payload_figures(requests))
    return row


def run_profiled(
    standin: FastStandIn,
    bootstrap: str,
    topics: Topics,
    records: list[tuple[bytes, bytes]],
    expected: int,
    batch: int,
    config: Config,
    work: Path,
) -> dict[str, Any]:
    """A worker on an empty topic; once it has joined, py-spy attaches and the records are
    published: the profile holds the whole delivery and little of the start-up."""
    assert config.py_spy is not None and config.profile_dir is not None
    standin.reset()
    env = worker_env(bootstrap, standin.url, topics.profile, topics, batch)
    worker = Child(WORKER_COMMAND, work / "sink-profiled.log", env)
    profiler = None
    path = config.profile_dir / f"sink-langfuse-batch{batch}.txt"
    try:
        error = wait_until(lambda: READY_LINE in worker.log_text(), worker, 60)
        if error is None:
            profiler = Profiler(config.py_spy, worker.process.pid, path)
            time.sleep(1.0)
            publish(bootstrap, topics.profile, records)
            error = wait_until(
                lambda: standin.distinct_spans() >= expected, worker, config.timeout_s
            )
    finally:
        if profiler is not None:
            profiler.stop()
        worker.stop()
    row: dict[str, Any] = {"batch_max_traces": batch, "profile": str(path)}
    if error is not None:
        row["error"] = error
    if path.exists():
        row["summary"] = profile_summary(path)
    return row


# -- the Langfuse SDK (child side) --------------------------------------------------------------


@dataclass(frozen=True)
class SdkCall:
    """What the app passes to the SDK for one observation, prepared before timing."""

    parent: int | None
    start: dict[str, Any]
    update: dict[str, Any]


def sdk_calls(plan: TracePlan) -> list[SdkCall]:
    calls = []
    for node in plan.nodes:
        start: dict[str, Any] = {"name": node.name, "as_type": node.kind, "input": node.input}
        update: dict[str, Any] = {"output": node.output}
        if node.metadata:
            start["metadata"] = node.metadata
        if node.model:
            start.update(model=node.model, model_parameters=node.model_parameters)
        if node.usage:
            update["usage_details"] = usage_details(Usage(**node.usage))
        if node.cost:
            update["cost_details"] = cost_details(Cost(**node.cost))
        if node.completion_start_ns is not None:
            update["completion_start_time"] = datetime.fromtimestamp(
                time.time() + (node.completion_start_ns - node.start_ns) / 1e9, UTC
            )
        if node.level != "DEFAULT":
            update.update(level=node.level, status_message=node.status_message)
        calls.append(SdkCall(node.parent, start, update))
    return calls


def sdk_trace(langfuse: Any, propagate: Any, plan: TracePlan, calls: list[SdkCall]) -> None:
    """Start the observations parents first, end them children first, as an app would."""
    with propagate(
        user_id=plan.user_id,
        session_id=plan.session_id,
        tags=plan.tags,
        trace_name=plan.name,
        metadata=plan.metadata,
    ):
        observations: list[Any] = []
        for call in calls:
            parent = langfuse if call.parent is None else observations[call.parent]
            observations.append(parent.start_observation(**call.start))
        for call, observation in zip(reversed(calls), reversed(observations), strict=True):
            observation.update(**call.update)
            observation.end()


def sdk_main(args: argparse.Namespace) -> NoReturn:
    run_child(lambda: sdk_run(args), SDK_LOGGERS)  # os._exit: the SDK's handlers would flush


def sdk_run(args: argparse.Namespace) -> dict[str, Any]:
    """Create `--traces` traces with the SDK after `--warmup` (flushed, not timed); timed from
    the first observation started until `flush()` returned."""
    from langfuse import Langfuse, propagate_attributes

    plans = plan_traces(args.warmup + args.traces, args.seed)
    prepared = [(plan, sdk_calls(plan)) for plan in plans]
    warmup, timed = prepared[: args.warmup], prepared[args.warmup :]
    langfuse = Langfuse(
        public_key=PUBLIC_KEY,
        secret_key=SECRET_KEY,
        base_url=args.url,
        environment=ENVIRONMENT,
        release=RELEASE,
        timeout=30,
    )
    for plan, calls in warmup:
        sdk_trace(langfuse, propagate_attributes, plan, calls)
    langfuse.flush()
    spans = sum(len(calls) for _, calls in timed)
    usage_before, thread_before = resource.getrusage(resource.RUSAGE_SELF), time.thread_time()
    wall_start, start = time.time(), time.perf_counter()
    for plan, calls in timed:
        sdk_trace(langfuse, propagate_attributes, plan, calls)
    created = time.perf_counter()
    caller_cpu = time.thread_time() - thread_before
    langfuse.flush()
    end = time.perf_counter()
    usage_after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (usage_after.ru_utime - usage_before.ru_utime) + (
        usage_after.ru_stime - usage_before.ru_stime
    )
    return {
        "traces": len(timed),
        "spans": spans,
        "warmup_spans": sum(len(calls) for _, calls in warmup),
        "seconds": end - start,
        "create_s": created - start,
        "flush_s": end - created,
        "wall_start": wall_start,
        "wall_end": wall_start + (end - start),
        "cpu_s": cpu,
        "caller_cpu_s": caller_cpu,
    }


def run_sdk(
    standin: FastStandIn, workload: dict[str, int], config: Config, work: Path
) -> dict[str, Any]:
    row: dict[str, Any] = {"implementation": "sdk"}
    total = workload["spans"] + workload["warmup_spans"]
    env = {
        **os.environ,
        # Large enough that no span is dropped: the SDK's default queue (2,048 spans) drops
        # whatever it cannot export in time, and what is measured here is delivery.
        "OTEL_BSP_MAX_QUEUE_SIZE": str(total + 1024),
    }
    command = [sys.executable, str(Path(__file__).resolve()), "--sdk", "--url", standin.url]
    command += ["--traces", str(config.traces), "--warmup", str(config.warmup)]
    command += ["--seed", str(config.seed)]
    standin.reset()
    child = Child(command, work / f"sdk-{uuid.uuid4().hex[:4]}.log", env)
    try:
        error = wait_until(lambda: child.process.poll() is not None, child, config.timeout_s)
        if error is not None and child.process.poll() is not None:
            error = None  # it exited: its result line, or its failure, is in the log
    finally:
        child.stop()
    requests, distinct, rejected = standin.snapshot()
    result = find_result(child.log_text())
    row.update(distinct_spans=distinct, expected_spans=total)
    if rejected:
        row["error"] = f"{len(rejected)} request(s) rejected, e.g. {rejected[0]}"
        return row
    if result is None:
        row["error"] = error or f"no result: {child.log_tail()}"
        return row
    if distinct < total:
        row["error"] = f"the stand-in received {distinct:,} of {total:,} spans"
    seconds = result["seconds"]
    row.update(result)
    row.update(
        requests=len(requests),
        traces_per_request=statistics.fmean(r.traces for r in requests) if requests else None,
        traces_per_s=result["traces"] / seconds,
        spans_per_s=result["spans"] / seconds,
        cpu_s_per_1k_traces=result["cpu_s"] / result["traces"] * 1000,
        caller_cpu_s_per_1k_traces=result["caller_cpu_s"] / result["traces"] * 1000,
        exporter_cpu_s_per_1k_traces=(result["cpu_s"] - result["caller_cpu_s"])
        / result["traces"]
        * 1000,
        cpu_share=result["cpu_s"] / seconds,
        last_request_after_flush_s=max(r.wall for r in requests) - result["wall_end"],
    )
    row.update(payload_figures(requests))
    return row


# -- report ----------------------------------------------------------------------------------------


def median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median traces/s (the first error when any run failed)."""
    chosen = median_run(rows, "traces_per_s")
    if "error" not in chosen:
        chosen["cpu_s_per_1k_traces_per_round"] = [row.get("cpu_s_per_1k_traces") for row in rows]
    return chosen


def compute_ratios(report: dict[str, Any]) -> dict[str, Any]:
    sdk = report["sdk"]
    found = [row for row in report["tracebus"] if "error" not in row]
    best = max(found, key=lambda row: row["traces_per_s"], default=None)
    default = next((row for row in found if row["batch_max_traces"] == 100), None)

    def per_core(row: dict[str, Any] | None, key: str = "cpu_s_per_1k_traces") -> float | None:
        if row is None or "error" in sdk:
            return None
        return ratio(sdk.get(key), row.get("cpu_s_per_1k_traces"))

    routed = report["routed"]
    return {
        "routed_vs_unrouted_per_core": None
        if default is None or "error" in routed
        else ratio(default.get("cpu_s_per_1k_traces"), routed.get("cpu_s_per_1k_traces")),
        "best_batch_max_traces": best and best["batch_max_traces"],
        "per_core_best": per_core(best),
        "per_core_default_batch": per_core(default),
        "per_core_best_vs_sdk_exporter_threads": per_core(best, "exporter_cpu_s_per_1k_traces"),
        "wall_best": None if best is None else ratio(best["traces_per_s"], sdk.get("traces_per_s")),
    }


def row_note(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"ERROR {row['error'][:200]}"
    notes = []
    if row["implementation"] == "tracebus":
        notes.append(f"started in {row['startup_s']:.1f} s")
        notes.append(f"{row['requests']} requests of {row['traces_per_request']:,.0f} traces")
    else:
        notes.append(
            f"create {row['create_s']:.1f} s + flush {row['flush_s']:.1f} s; "
            f"{row['requests']} requests"
        )
        notes.append(
            f"caller thread {row['caller_cpu_s_per_1k_traces']:.2f} + other threads "
            f"{row['exporter_cpu_s_per_1k_traces']:.2f} CPU s/1k"
        )
    return "; ".join(notes)


def throughput_table(report: dict[str, Any]) -> Any:
    workload, config = report["workload"], report["config"]
    table = new_table(
        f"Langfuse delivery to a local stand-in ({workload['traces']:,} traces, "
        f"{workload['spans']:,} spans, {workload['document_bytes'] / workload['traces']:,.0f} B "
        f"per trace document; median of {config['rounds']} round(s))",
        ["implementation"],
        ["traces/s", "spans/s", "CPU s/1k traces", "CPU", "÷ SDK wall", "÷ SDK core"],
    )
    sdk = report["sdk"]
    rows = [*report["tracebus"], report["routed"], sdk]
    for row in rows:
        label = (
            f"tracebus sink, batch {row['batch_max_traces']}"
            if row["implementation"] == "tracebus"
            else "langfuse SDK (create + export)"
        )
        if "routed_projects" in row:
            label += f", {row['routed_projects']} projects routed"
        table.add_row(
            label,
            fmt(row.get("traces_per_s")),
            fmt(row.get("spans_per_s")),
            fmt(row.get("cpu_s_per_1k_traces"), 2),
            fmt(None if row.get("cpu_share") is None else row["cpu_share"] * 100, 0, "%"),
            fmt(ratio(row.get("traces_per_s"), sdk.get("traces_per_s")), 2, "×"),
            fmt(ratio(sdk.get("cpu_s_per_1k_traces"), row.get("cpu_s_per_1k_traces")), 2, "×"),
            row_note(row),
        )
    return table


def summary_lines(report: dict[str, Any]) -> list[str]:
    ratios, sdk = report["ratios"], report["sdk"]
    best = ratios["per_core_best"]
    verdict = check(best, TARGET_PER_CORE)
    routed = ratios["routed_vs_unrouted_per_core"]
    lines = [
        f"tracebus ÷ SDK per core (traces per CPU second), best batch "
        f"({ratios['best_batch_max_traces']}): {fmt(best, 2)}× (target ≥ {TARGET_PER_CORE:g}×: "
        f"{verdict}); default batch 100: {fmt(ratios['per_core_default_batch'], 2)}×; "
        f"against the SDK's threads other than the caller's alone: "
        f"{fmt(ratios['per_core_best_vs_sdk_exporter_threads'], 2)}×",
    ]
    lines.append(
        f"routing {ROUTED_PROJECTS} projects ({ROUTED_PROJECTS + 1} consumer groups, each reading "
        f"the whole topic) ÷ one destination, traces per CPU second at batch {ROUTED_BATCH}: "
        f"{fmt(routed, 2)}×"
    )
    payload = [
        f"{label} {row['gzip_bytes_per_span']:,.0f} B gzip / "
        f"{row['protobuf_bytes_per_span']:,.0f} B protobuf per span"
        for label, row in [
            ("tracebus", next((r for r in report["tracebus"] if "error" not in r), None)),
            ("SDK", sdk if "error" not in sdk else None),
        ]
        if row is not None
    ]
    if payload:
        lines.append("payload: " + "; ".join(payload))
    standin = [
        row["standin_cpu_ms_per_request"]
        for row in [*report["tracebus"], sdk]
        if "standin_cpu_ms_per_request" in row
    ]
    environment = report["environment"]
    lines.append(
        f"machine: {environment['cpus']} CPUs shared by the worker or SDK process, the broker "
        f"and the stand-in; 1-minute load average {environment['load_average_before'][0]:.2f} "
        f"before, {environment['load_average_after'][0]:.2f} after"
    )
    if standin:
        lines.append(
            f"stand-in: {min(standin):.1f}–{max(standin):.1f} ms CPU per request "
            "(gunzip, protobuf parse, span ids), on a thread of this script"
        )
    return lines


def profile_lines(report: dict[str, Any]) -> list[str]:
    profile = report.get("profile")
    if not profile:
        return []
    if "summary" not in profile:
        return [f"py-spy: no profile ({profile.get('error', 'no output')})"]
    summary = profile["summary"]
    return [
        f"py-spy, tracebus sink worker, batch {profile['batch_max_traces']} "
        f"({summary['samples']:,} samples, {profile['profile']}):",
        *hottest_lines(summary, 12),
    ]


# -- orchestration ---------------------------------------------------------------------------------


def run_benchmark(config: Config) -> dict[str, Any]:
    progress(f"generating {config.traces:,} traces")
    # The SDK child plans warm-up + timed traces with the same seed: the timed ones are these.
    plans = plan_traces(config.warmup + config.traces, config.seed)
    warmup, timed = plans[: config.warmup], plans[config.warmup :]
    records = [
        (plan.trace_id.encode(), trace_document(plan).model_dump_json(exclude_none=True).encode())
        for plan in timed
    ]
    routed_topic_records, routed_headers = routed_records(timed)
    workload = {
        "traces": len(timed),
        "spans": sum(len(plan.nodes) for plan in timed),
        "warmup_spans": sum(len(plan.nodes) for plan in warmup),
        "document_bytes": sum(len(value) for _, value in records),
    }
    load_before = os.getloadavg()
    topics = Topics()
    tracebus_runs: dict[int, list[dict[str, Any]]] = {batch: [] for batch in config.batches}
    sdk_runs: list[dict[str, Any]] = []
    routed_runs: list[dict[str, Any]] = []
    profile = None
    with (
        embedded_broker(topics.partitions(), "tracebus-sink-bench-") as (bootstrap, work),
        FastStandIn() as standin,
    ):
        progress(f"publishing {len(records):,} trace documents")
        publish(bootstrap, topics.traces, records)
        publish(bootstrap, topics.routed, routed_topic_records, routed_headers)
        routes = routes_file(work, standin.url)
        for round_index in range(config.rounds):
            runs_of: dict[int | str | None, list[dict[str, Any]]] = {
                None: sdk_runs,
                **tracebus_runs,
                "routed": routed_runs,
            }
            for run in in_round(list(runs_of), round_index):
                label = {None: "langfuse SDK", "routed": "tracebus routed"}.get(
                    run, f"tracebus batch {run}"
                )
                progress(f"round {round_index + 1}: {label}")
                try:
                    if run is None:
                        row = run_sdk(standin, workload, config, work)
                    elif run == "routed":
                        row = run_tracebus(
                            standin, bootstrap, topics, workload, ROUTED_BATCH, config, work, routes
                        )
                    else:
                        row = run_tracebus(
                            standin, bootstrap, topics, workload, int(run), config, work
                        )
                except Exception as error:
                    row = {"implementation": "sdk" if run is None else "tracebus"}
                    row.update(batch_max_traces=run, error=repr(error))
                runs_of[run].append(row)
        tracebus = [median_row(rows) for rows in tracebus_runs.values()]
        if config.py_spy:
            found = [row for row in tracebus if "error" not in row]
            best = max(found, key=lambda r: r["traces_per_s"], default=tracebus[0])
            progress(f"profiling a worker with py-spy (batch {best['batch_max_traces']})")
            profile = run_profiled(
                standin,
                bootstrap,
                topics,
                records,
                workload["spans"],
                best["batch_max_traces"],
                config,
                work,
            )
    report: dict[str, Any] = {
        "config": {
            "traces": config.traces,
            "warmup_traces_sdk": config.warmup,
            "batch_max_traces": config.batches,
            "rounds": config.rounds,
            "seed": config.seed,
            "partitions": PARTITIONS,
        },
        "workload": workload,
        "environment": environment(
            PACKAGES, load_average_before=load_before, load_average_after=os.getloadavg()
        ),
        "tracebus": tracebus,
        "sdk": median_row(sdk_runs),
        "routed": median_row(routed_runs),
        "runs": {"tracebus": tracebus_runs, "sdk": sdk_runs, "routed": routed_runs},
        "profile": profile,
        "target_per_core": TARGET_PER_CORE,
    }
    report["ratios"] = compute_ratios(report)
    return report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--traces", type=int, default=6_000, help="traces delivered per run")
    parser.add_argument("--warmup", type=int, default=200, help="SDK warm-up traces (untimed)")
    parser.add_argument(
        "--batch",
        type=int,
        action="append",
        help="TRACEBUS_BATCH_MAX_TRACES of a tracebus run (repeatable; default 50, 100, 250)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="runs of each, interleaved")
    parser.add_argument("--seed", type=int, default=7, help="seed of the generated traces")
    add_run_arguments(parser, quick="2,000 traces, 1 round", timeout=90.0)
    add_profile_arguments(parser, what="profile one more worker run")
    internal = parser.add_argument_group("internal (the SDK in a child process)")
    internal.add_argument("--sdk", action="store_true", help=argparse.SUPPRESS)
    internal.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.traces, args.warmup, args.rounds, args.timeout = 2_000, 100, 1, 40.0
        args.batch = args.batch or [100, 250]
    args.batch = args.batch or [50, 100, 250]
    if min(args.traces, args.rounds, *args.batch) < 1 or args.warmup < 0:
        parser.error("counts must be positive")
    prepare_profile_dir(args, "tracebus-sink-profile-")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.sdk:
        sdk_main(args)
    config = Config(
        traces=args.traces,
        warmup=args.warmup,
        batches=args.batch,
        rounds=args.rounds,
        seed=args.seed,
        timeout_s=args.timeout,
        py_spy=args.py_spy,
        profile_dir=args.profile_dir,
    )
    with children_killed():
        report = run_benchmark(config)
    print_report([throughput_table(report)], summary_lines(report) + profile_lines(report), 160)
    write_json(args.json, report, default=str)
    rows = [*report["tracebus"], report["routed"], report["sdk"]]
    return 1 if any("error" in row for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
