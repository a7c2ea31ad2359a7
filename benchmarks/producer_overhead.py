"""Producer benchmark: caller overhead per span, and producer throughput to Kafka.

    .venv/bin/python benchmarks/producer_overhead.py [--quick] [--json PATH]

Part 1 runs the same nested workload (trace → span → generation) through tracebus, the Langfuse
v5 SDK, the LangSmith SDK and a dict+orjson floor, and reports caller-thread time per span.
Part 2 measures how fast a tracebus client gets events acknowledged by the broker, against
aiokafka and confluent-kafka producing the very records tracebus produced.

Every variant runs in its own subprocess (`--variant NAME`, internal), so that OpenTelemetry
tracer providers, SDK background threads and garbage of one do not disturb another; the parent
starts the embedded broker, runs the children one after another and prints the tables.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import os
import pickle
import statistics
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import util
from pathlib import Path
from random import Random, getrandbits
from typing import Any, NoReturn

import orjson
from common import (
    add_run_arguments,
    benchmark_parser,
    check,
    embedded_broker,
    environment,
    find_result,
    fmt,
    in_round,
    new_table,
    open_consumer,
    print_report,
    produce,
    progress,
    ratio,
    read_to_end,
    run_child,
    topic_partitions,
    write_json,
)

from tracebus.config import KafkaSettings
from tracebus.kafka.broker import free_port

SPANS_PER_TRACE = 3
PARTITIONS = 8
OVERHEAD_SETTINGS = KafkaSettings(
    events_topic="bench.overhead.events",
    traces_topic="bench.overhead.traces",
    dead_letter_topic="bench.overhead.deadletter",
    partitions=PARTITIONS,
)
CAPTURE_VARIANT = "capture-tracebus"
CAPTURE_BUFFER_BYTES = 4 * 1024**3  # the capture run must drop nothing
THROUGHPUT_TOPICS = {
    CAPTURE_VARIANT: "bench.throughput.capture",
    "throughput-tracebus": "bench.throughput.tracebus",
    "throughput-aiokafka": "bench.throughput.aiokafka",
    "throughput-aiokafka-single": "bench.throughput.aiokafka-single",
    "throughput-confluent": "bench.throughput.confluent",
}
WARMUP_TRACE_ID = "0" * 31 + "1"
FLOOR_QUEUE_LENGTH = 4096
SDK_LOGGERS = ("langfuse", "langsmith", "opentelemetry", "urllib3", "httpx", "httpcore")
PACKAGES = ("tracebus", "langfuse", "langsmith", "aiokafka", "confluent-kafka", "orjson")

# -- the workload: identical data for every variant ------------------------------------------

QUESTION = "What is the capital of France, and what is it famous for?"
MESSAGES = [
    {"role": "system", "content": "You are a concise assistant. Cite the documents you use."},
    {"role": "user", "content": QUESTION},
]
DOCUMENTS = [
    "Paris is the capital and most populous city of France.",
    "The Eiffel Tower was completed in 1889 for the World's Fair.",
    "The Louvre is the world's most-visited art museum.",
]
REPLY = {
    "role": "assistant",
    "content": "Paris is the capital of France; it is famous for the Eiffel Tower and the Louvre.",
}
INPUT_TOKENS, OUTPUT_TOKENS = 812, 64
USER_ID, SESSION_ID = "user-42", "session-7"
MODEL = "gpt-4o"


@dataclass(frozen=True)
class Options:
    """What a child process is asked to do (parsed from the internal flags)."""

    variant: str
    bootstrap: str
    topic: str
    traces: int
    warmup: int
    events: int
    trace_ids: int
    records: Path | None


def _nothing() -> dict[str, Any]:
    return {}


@dataclass
class Workload:
    """One trace of the workload, what to do after warm-up, and what once measured."""

    run_trace: Callable[[], object]
    finish: Callable[[], dict[str, Any]] = field(default=_nothing)
    settle: Callable[[], object] = field(default=_nothing)  # after warm-up, before measuring


@dataclass(frozen=True)
class Variant:
    label: str
    family: str  # "floor", "tracebus" or "sdk"
    api: str
    build: Callable[[Options], Workload]


def unreachable_url() -> str:
    """An http URL on loopback where nothing listens: exports fail fast with ECONNREFUSED."""
    return f"http://127.0.0.1:{free_port()}"


# -- floor: dict + orjson into a deque -----------------------------------------------------


class FloorSpan:
    """The least a tracer must do: a dict per span, serialised into a queue when it ends."""

    __slots__ = ("_record", "_sink")

    def __init__(
        self,
        sink: deque[bytes],
        name: str,
        kind: str,
        trace_id: str,
        parent_id: str | None,
        **fields: Any,
    ) -> None:
        self._sink = sink
        self._record: dict[str, Any] = {
            "trace_id": trace_id,
            "id": f"{getrandbits(64):016x}",
            "parent_id": parent_id,
            "kind": kind,
            "name": name,
            "start_ns": time.time_ns(),
            **fields,
        }

    @property
    def id(self) -> str:
        return str(self._record["id"])

    def update(self, **fields: Any) -> None:
        self._record.update(fields)

    def __enter__(self) -> FloorSpan:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._record["end_ns"] = time.time_ns()
        self._sink.append(orjson.dumps(self._record))


def build_floor(options: Options) -> Workload:
    # Bounded, as a stand-in for the consumer that drains a real queue: an ever-growing deque
    # would measure the cost of faulting in fresh memory pages instead of tracing work.
    sink: deque[bytes] = deque(maxlen=FLOOR_QUEUE_LENGTH)
    usage = {"input_tokens": INPUT_TOKENS, "output_tokens": OUTPUT_TOKENS}

    def run_trace() -> None:
        trace_id = f"{getrandbits(128):032x}"
        with FloorSpan(
            sink, "chat", "span", trace_id, None, user_id=USER_ID, session_id=SESSION_ID
        ) as root:
            with FloorSpan(sink, "retrieve", "span", trace_id, root.id, input=QUESTION) as span:
                span.update(output=DOCUMENTS)
                with FloorSpan(
                    sink, "answer", "generation", trace_id, span.id, model=MODEL, input=MESSAGES
                ) as llm:
                    llm.update(output=REPLY, usage=usage)
            root.update(output=REPLY["content"])

    return Workload(run_trace)


# -- tracebus --------------------------------------------------------------------------------


def tracebus_client(options: Options, **overrides: Any) -> Any:
    import tracebus

    return tracebus.Client(
        bootstrap_servers=options.bootstrap, events_topic=options.topic, **overrides
    )


def tracebus_delivery(client: Any) -> dict[str, Any]:
    """Wait for the background sender to deliver everything, and report its counters."""
    flushed = client.flush(timeout=30.0)
    counters = client.counters
    client.close(timeout=5.0)
    return {
        "flushed": flushed,
        "accepted": counters.accepted,
        "sent": counters.sent,
        "coalesced": counters.coalesced,
        "dropped": counters.dropped,
        "errors": counters.errors,
        "send_failures": counters.send_failures,
    }


def build_tracebus(options: Options) -> Workload:
    client = tracebus_client(options)
    usage = {"input_tokens": INPUT_TOKENS, "output_tokens": OUTPUT_TOKENS}

    def run_trace() -> None:
        with client.trace("chat", user_id=USER_ID, session_id=SESSION_ID, input=QUESTION) as root:
            with client.span("retrieve", input={"query": QUESTION}) as span:
                span.update(output=DOCUMENTS)
                with client.generation("answer", model=MODEL, input=MESSAGES) as llm:
                    llm.update(output=REPLY, usage=usage)
            root.update(output=REPLY["content"])

    return Workload(run_trace, lambda: tracebus_delivery(client), client.flush)


def build_tracebus_observe(options: Options) -> Workload:
    import tracebus

    client = tracebus_client(options)
    usage = {"input_tokens": INPUT_TOKENS, "output_tokens": OUTPUT_TOKENS}

    def current() -> Any:
        observation = tracebus.current_observation()
        assert observation is not None
        return observation

    @tracebus.observe(name="answer", kind="generation", client=client)
    def answer(messages: list[dict[str, str]]) -> dict[str, str]:
        current().update(model=MODEL, usage=usage)
        return REPLY

    @tracebus.observe(name="retrieve", kind="span", client=client)
    def retrieve(query: str) -> list[str]:
        answer(MESSAGES)
        return DOCUMENTS

    @tracebus.observe(name="chat", kind="span", client=client)
    def chat(question: str) -> str:
        current().update_trace(name="chat", user_id=USER_ID, session_id=SESSION_ID)
        retrieve(question)
        return REPLY["content"]

    return Workload(lambda: chat(QUESTION), lambda: tracebus_delivery(client), client.flush)


# -- Langfuse v5 -----------------------------------------------------------------------------


def langfuse_client() -> Any:
    from langfuse import Langfuse

    return Langfuse(
        public_key="pk-lf-benchmark",
        secret_key="sk-lf-benchmark",
        base_url=unreachable_url(),
        timeout=1,
    )


def build_langfuse(options: Options) -> Workload:
    from langfuse import propagate_attributes

    langfuse = langfuse_client()
    usage = {"input": INPUT_TOKENS, "output": OUTPUT_TOKENS}
    observe = langfuse.start_as_current_observation

    def run_trace() -> None:
        with observe(name="chat", as_type="span", input=QUESTION) as root:
            with (
                propagate_attributes(user_id=USER_ID, session_id=SESSION_ID),
                observe(name="retrieve", as_type="span", input={"query": QUESTION}) as span,
            ):
                span.update(output=DOCUMENTS)
                with observe(
                    name="answer", as_type="generation", model=MODEL, input=MESSAGES
                ) as llm:
                    llm.update(output=REPLY, usage_details=usage)
            root.update(output=REPLY["content"])

    return Workload(run_trace)


def build_langfuse_observe(options: Options) -> Workload:
    from langfuse import observe, propagate_attributes

    langfuse = langfuse_client()
    usage = {"input": INPUT_TOKENS, "output": OUTPUT_TOKENS}

    @observe(name="answer", as_type="generation")
    def answer(messages: list[dict[str, str]]) -> dict[str, str]:
        langfuse.update_current_generation(model=MODEL, usage_details=usage)
        return REPLY

    @observe(name="retrieve", as_type="span")
    def retrieve(query: str) -> list[str]:
        answer(MESSAGES)
        return DOCUMENTS

    @observe(name="chat", as_type="span")
    def chat(question: str) -> str:
        with propagate_attributes(user_id=USER_ID, session_id=SESSION_ID):
            retrieve(question)
        return REPLY["content"]

    return Workload(lambda: chat(QUESTION))


# -- LangSmith -------------------------------------------------------------------------------


def enable_langsmith_tracing() -> None:
    """Tracing on, towards an endpoint where nothing listens (set before langsmith is imported)."""
    os.environ.update(
        LANGSMITH_TRACING="true",
        LANGSMITH_ENDPOINT=unreachable_url(),
        LANGSMITH_API_KEY="lsv2_pt_benchmark",
        LANGSMITH_PROJECT="tracebus-benchmark",
    )


def langsmith_usage() -> dict[str, int]:
    return {
        "input_tokens": INPUT_TOKENS,
        "output_tokens": OUTPUT_TOKENS,
        "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS,
    }


def build_langsmith_traceable(options: Options) -> Workload:
    enable_langsmith_tracing()
    from langsmith import traceable

    trace_metadata = {"metadata": {"user_id": USER_ID, "session_id": SESSION_ID}}

    @traceable(run_type="llm", name="answer", metadata={"ls_model_name": MODEL})
    def answer(messages: list[dict[str, str]]) -> dict[str, Any]:
        return {"message": REPLY, "usage_metadata": langsmith_usage()}

    @traceable(run_type="retriever", name="retrieve")
    def retrieve(query: str) -> list[str]:
        answer(MESSAGES)
        return DOCUMENTS

    @traceable(run_type="chain", name="chat")
    def chat(question: str) -> str:
        retrieve(question)
        return REPLY["content"]

    return Workload(lambda: chat(QUESTION, langsmith_extra=trace_metadata))


def build_langsmith_runtree(options: Options) -> Workload:
    enable_langsmith_tracing()
    from langsmith.run_trees import RunTree

    def run_trace() -> None:
        root = RunTree(
            name="chat",
            run_type="chain",
            inputs={"question": QUESTION},
            extra={"metadata": {"user_id": USER_ID, "session_id": SESSION_ID}},
        )
        root.post()
        span = root.create_child("retrieve", "retriever", inputs={"query": QUESTION})
        span.post()
        llm = span.create_child(
            "answer",
            "llm",
            inputs={"messages": MESSAGES},
            extra={"metadata": {"ls_model_name": MODEL}},
        )
        llm.post()
        llm.set(usage_metadata=langsmith_usage())
        llm.end(outputs={"message": REPLY})
        llm.patch()
        span.end(outputs={"documents": DOCUMENTS})
        span.patch()
        root.end(outputs={"answer": REPLY["content"]})
        root.patch()

    return Workload(run_trace)


OVERHEAD_VARIANTS: dict[str, Variant] = {
    "floor": Variant("floor", "floor", "dict+orjson → deque", build_floor),
    "tracebus": Variant("tracebus", "tracebus", "context manager", build_tracebus),
    "tracebus-observe": Variant("tracebus", "tracebus", "@observe", build_tracebus_observe),
    "langfuse": Variant("langfuse", "sdk", "start_as_current_observation", build_langfuse),
    "langfuse-observe": Variant("langfuse", "sdk", "@observe", build_langfuse_observe),
    "langsmith-traceable": Variant("langsmith", "sdk", "@traceable", build_langsmith_traceable),
    "langsmith-runtree": Variant("langsmith", "sdk", "RunTree post/patch", build_langsmith_runtree),
}

# -- part 1: caller overhead (child side) ----------------------------------------------------


def time_traces(run_trace: Callable[[], object], count: int) -> list[int]:
    """Caller-thread nanoseconds of each of `count` traces."""
    clock = time.perf_counter_ns
    samples = [0] * count
    for index in range(count):
        start = clock()
        run_trace()
        samples[index] = clock() - start
    return samples


def percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    return ordered[max(math.ceil(fraction * len(ordered)) - 1, 0)]


def span_stats(samples_ns: list[int]) -> dict[str, float]:
    per_span = sorted(ns / SPANS_PER_TRACE / 1000 for ns in samples_ns)
    return {
        "p50_us": percentile(per_span, 0.50),
        "p90_us": percentile(per_span, 0.90),
        "p99_us": percentile(per_span, 0.99),
        "max_us": per_span[-1],
        "mean_us": statistics.fmean(per_span),
    }


def measure_overhead(options: Options) -> dict[str, Any]:
    variant = OVERHEAD_VARIANTS[options.variant]
    workload = variant.build(options)
    for _ in range(options.warmup):
        workload.run_trace()
    workload.settle()  # tracebus: the sender is connected and has sent the warm-up traces
    gc.collect()
    samples = time_traces(workload.run_trace, options.traces)
    return {"variant": options.variant, "samples_ns": samples, "after": workload.finish()}


# -- part 2: throughput to the broker (child side) -------------------------------------------


def producer_settings(bootstrap: str) -> Any:
    from tracebus.producers.settings import ProducerSettings

    return ProducerSettings(bootstrap_servers=bootstrap)


def aiokafka_options(bootstrap: str) -> dict[str, Any]:
    """The AIOKafkaProducer configuration the tracebus sender uses (see producers/sender.py)."""
    settings = producer_settings(bootstrap)
    return {
        "acks": "all" if settings.acks == "all" else 1,
        "compression_type": None if settings.compression == "none" else settings.compression,
        "linger_ms": 2,
        "max_batch_size": max(settings.max_record_bytes, 512 * 1024),
        "max_request_size": settings.max_record_bytes + 128 * 8,
        "request_timeout_ms": settings.request_timeout_ms,
        "enable_idempotence": False,
    }


def throughput_tracebus(options: Options) -> dict[str, Any]:
    """Emit `options.events` events, timed until flushed; the capture run never drops any."""
    capture = options.variant == CAPTURE_VARIANT
    client = tracebus_client(
        options, **({"buffer_max_bytes": CAPTURE_BUFFER_BYTES} if capture else {})
    )
    client.event("warm-up", trace_id=WARMUP_TRACE_ID)  # connect and load metadata first
    if not client.flush(timeout=30.0):
        raise RuntimeError(f"warm-up event not delivered: {client.counters}")
    sent_before = client.counters.sent
    rng = Random(7)
    trace_ids = [f"{rng.getrandbits(128):032x}" for _ in range(options.trace_ids)]
    usage = {"input_tokens": INPUT_TOKENS, "output_tokens": OUTPUT_TOKENS}
    count = len(trace_ids)
    start = time.perf_counter_ns()
    for index in range(options.events):
        client.generation(
            "answer",
            trace_id=trace_ids[index % count],
            model=MODEL,
            input=MESSAGES,
            output=REPLY,
            usage=usage,
        ).end()
    emitted = time.perf_counter_ns()
    flushed = client.flush(timeout=300.0)
    end = time.perf_counter_ns()
    counters = client.counters
    client.close(timeout=5.0)
    return {
        "variant": options.variant,
        "events": options.events,
        "trace_ids": count,
        "emit_s": (emitted - start) / 1e9,
        "elapsed_s": (end - start) / 1e9,
        "flushed": flushed,
        "sent": counters.sent - sent_before,
        "coalesced": counters.coalesced,
        "dropped": counters.dropped,
        "send_failures": counters.send_failures,
    }


def load_records(path: Path | None) -> list[tuple[bytes, bytes]]:
    if path is None:
        raise ValueError("--records is required for this variant")
    with path.open("rb") as file:
        records: list[tuple[bytes, bytes]] = pickle.load(file)
    return records


def one_event_per_record(records: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [
        (key, orjson.dumps(event))
        for key, value in records
        for event in orjson.loads(value)["events"]
    ]


def throughput_aiokafka(options: Options) -> dict[str, Any]:
    """The captured records sent by aiokafka, timed from the first send until the broker
    acknowledged every record (the topic's metadata loaded first, as for the warmed-up
    tracebus)."""
    records = load_records(options.records)
    if options.variant == "throughput-aiokafka-single":
        records = one_event_per_record(records)
    settings = aiokafka_options(options.bootstrap)
    elapsed = asyncio.run(produce(options.bootstrap, options.topic, records, settings))
    return {"variant": options.variant, "records": len(records), "elapsed_s": elapsed}


def send_with_confluent(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> float:
    from confluent_kafka import KafkaError, Producer

    failures: list[KafkaError] = []

    def delivered(error: KafkaError | None, _message: object) -> None:
        if error is not None:
            failures.append(error)

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "compression.type": "lz4",
            "linger.ms": 2,
            "enable.idempotence": False,  # the embedded broker (tansu) rejects idempotence
        }
    )
    producer.list_topics(topic, timeout=10)
    start = time.perf_counter_ns()
    for key, value in records:
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=delivered)
                break
            except BufferError:  # local queue full: serve delivery reports until there is room
                producer.poll(0.01)
        producer.poll(0)
    remaining = producer.flush(120)
    elapsed = (time.perf_counter_ns() - start) / 1e9
    if remaining or failures:
        raise RuntimeError(
            f"{remaining} records undelivered, {len(failures)} failed: {failures[:3]}"
        )
    return elapsed


def throughput_confluent(options: Options) -> dict[str, Any]:
    records = load_records(options.records)
    elapsed = send_with_confluent(options.bootstrap, options.topic, records)
    return {"variant": options.variant, "records": len(records), "elapsed_s": elapsed}


THROUGHPUT_TASKS: dict[str, Callable[[Options], dict[str, Any]]] = {
    CAPTURE_VARIANT: throughput_tracebus,
    "throughput-tracebus": throughput_tracebus,
    "throughput-aiokafka": throughput_aiokafka,
    "throughput-aiokafka-single": throughput_aiokafka,
    "throughput-confluent": throughput_confluent,
}
THROUGHPUT_LABELS = {
    "throughput-tracebus": "tracebus Client (emit → flush)",
    "throughput-aiokafka": "aiokafka, same records",
    "throughput-aiokafka-single": "aiokafka, 1 event/record",
    "throughput-confluent": "confluent-kafka, same records",
}


def child_main(options: Options) -> NoReturn:
    """Run one variant, print its result line and leave without waiting for SDK threads."""

    def task() -> dict[str, Any]:
        if options.variant in OVERHEAD_VARIANTS:
            return measure_overhead(options)
        return THROUGHPUT_TASKS[options.variant](options)

    run_child(task, SDK_LOGGERS)


# -- parent: orchestration -------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    traces: int
    warmup: int
    events: int
    trace_ids: int
    rounds: int
    timeout_s: float

    @property
    def traces_per_round(self) -> int:
        return math.ceil(self.traces / self.rounds)


def run_variant(variant: str, arguments: list[str], timeout: float) -> dict[str, Any]:
    """Run `--variant variant` in a subprocess; its result, or {"variant", "error"}."""
    command = [sys.executable, str(Path(__file__).resolve()), "--variant", variant, *arguments]
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"variant": variant, "error": f"timed out after {timeout:g}s"}
    result = find_result(completed.stdout)
    if result is not None:
        return result
    tail = " | ".join(completed.stderr.strip().splitlines()[-3:])
    return {"variant": variant, "error": f"exit code {completed.returncode}: {tail}"}


def interleaved(names: list[str], rounds: int) -> list[str]:
    """Every name once per round, alternating the order so that drift hits all alike."""
    return [n for r in range(rounds) for n in in_round(names, r)]


def merge_after(afters: list[dict[str, Any]]) -> dict[str, Any]:
    """Counters of several rounds: numbers add up, flags must hold in every round."""
    merged: dict[str, Any] = {}
    for after in afters:
        for key, value in after.items():
            if isinstance(value, bool):
                merged[key] = merged.get(key, True) and value
            else:
                merged[key] = merged.get(key, 0) + value
    return merged


def combine_overhead(name: str, runs: list[dict[str, Any]], warmup: int) -> dict[str, Any]:
    errors = [run["error"] for run in runs if "error" in run]
    if errors:
        return {"variant": name, "error": errors[0]}
    samples = [ns for run in runs for ns in run["samples_ns"]]
    return {
        "variant": name,
        "rounds": len(runs),
        "traces": len(samples),
        "spans": len(samples) * SPANS_PER_TRACE,
        "warmup_traces_per_round": warmup,
        **span_stats(samples),
        "p50_us_per_round": [span_stats(run["samples_ns"])["p50_us"] for run in runs],
        "after": merge_after([run["after"] for run in runs]),
    }


def run_overhead(bootstrap: str, config: Config) -> list[dict[str, Any]]:
    arguments = [
        "--bootstrap",
        bootstrap,
        "--topic",
        OVERHEAD_SETTINGS.events_topic,
        "--traces",
        str(config.traces_per_round),
        "--warmup",
        str(config.warmup),
    ]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in OVERHEAD_VARIANTS}
    for name in interleaved(list(OVERHEAD_VARIANTS), config.rounds):
        progress(f"overhead: {name}")
        runs[name].append(run_variant(name, arguments, config.timeout_s))
    return [combine_overhead(name, found, config.warmup) for name, found in runs.items()]


async def read_topic(bootstrap: str, topic: str, skip_key: bytes) -> list[tuple[bytes, bytes]]:
    """Every record of `topic` (but those keyed `skip_key`), ordered by timestamp."""
    async with open_consumer(bootstrap) as consumer:
        partitions = await topic_partitions(consumer, topic)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found = [
            (r.timestamp, r.partition, r.offset, r.key or b"", r.value or b"")
            for r in await read_to_end(consumer, ends)
            if r.key != skip_key
        ]
    found.sort()
    return [(key, value) for _, _, _, key, value in found]


@dataclass(frozen=True)
class Replay:
    """The records of the capture run, saved for the other producers to send."""

    path: Path
    records: int
    events: int


def save_tracebus_records(bootstrap: str, path: Path) -> Replay:
    topic = THROUGHPUT_TOPICS[CAPTURE_VARIANT]
    records = asyncio.run(read_topic(bootstrap, topic, WARMUP_TRACE_ID.encode()))
    with path.open("wb") as file:
        pickle.dump(records, file)
    events = sum(len(orjson.loads(value)["events"]) for _, value in records)
    return Replay(path, len(records), events)


def throughput_arguments(variant: str, bootstrap: str, config: Config, path: Path) -> list[str]:
    arguments = ["--bootstrap", bootstrap, "--topic", THROUGHPUT_TOPICS[variant]]
    if variant in (CAPTURE_VARIANT, "throughput-tracebus"):
        return [*arguments, "--events", str(config.events), "--trace-ids", str(config.trace_ids)]
    return [*arguments, "--records", str(path)]


def combine_throughput(name: str, runs: list[dict[str, Any]], replay: Replay) -> dict[str, Any]:
    """Median events/s over the rounds, counting delivered events only.

    tracebus rounds count the events they got acknowledged (`sent`); the others the events in
    the replayed records."""
    errors = [run["error"] for run in runs if "error" in run]
    if errors:
        return {"variant": name, "error": errors[0]}
    rates = [run.get("sent", replay.events) / run["elapsed_s"] for run in runs]
    row = {"records": replay.records, **runs[0], "rounds": len(runs)}
    row.update(
        events_in_records=replay.events,
        events_per_s=statistics.median(rates),
        events_per_s_per_round=rates,
        elapsed_s=statistics.median(run["elapsed_s"] for run in runs),
    )
    if name == "throughput-tracebus":
        row.update(
            emit_s=statistics.median(run["emit_s"] for run in runs),
            flushed=all(run["flushed"] for run in runs),
            sent=[run["sent"] for run in runs],
            lost=[run["dropped"] for run in runs],
            dropped=[run["dropped"] for run in runs],
        )
    return row


def capture_records(bootstrap: str, config: Config, path: Path) -> Replay | str:
    """An untimed tracebus run with an unbounded buffer makes the records the others replay."""
    progress("throughput: capturing the records of a tracebus run")
    arguments = throughput_arguments(CAPTURE_VARIANT, bootstrap, config, path)
    run = run_variant(CAPTURE_VARIANT, arguments, config.timeout_s)
    if "error" in run:
        return f"capture run: {run['error']}"
    # `sent` may exceed `events`: an observation the sender caught open is sent twice.
    if not run["flushed"] or run["dropped"] or run["sent"] < run["events"]:
        return f"capture run delivered {run['sent']} of {run['events']} events"
    return save_tracebus_records(bootstrap, path)


def run_throughput(bootstrap: str, config: Config, workdir: Path) -> list[dict[str, Any]]:
    names = [name for name in THROUGHPUT_TOPICS if name != CAPTURE_VARIANT]
    if util.find_spec("confluent_kafka") is None:
        names.remove("throughput-confluent")
    replay = capture_records(bootstrap, config, workdir / "records.pickle")
    if isinstance(replay, str):
        return [{"variant": "throughput-tracebus", "error": replay}]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for name in interleaved(names, config.rounds):
        progress(f"throughput: {name.removeprefix('throughput-')}")
        arguments = throughput_arguments(name, bootstrap, config, replay.path)
        runs[name].append(run_variant(name, arguments, config.timeout_s))
    rows = [combine_throughput(name, found, replay) for name, found in runs.items()]
    if "throughput-confluent" not in runs:
        rows.append({"variant": "throughput-confluent", "skipped": "confluent-kafka not installed"})
    return rows


# -- parent: figures and report ---------------------------------------------------------------


def by_variant(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["variant"]: row for row in rows if "error" not in row and "skipped" not in row}


def compute_ratios(
    overhead: list[dict[str, Any]], throughput: list[dict[str, Any]]
) -> dict[str, Any]:
    found = by_variant(overhead)

    def p50(name: str | None) -> float | None:
        return found[name]["p50_us"] if name in found else None

    sdk = [n for n, v in OVERHEAD_VARIANTS.items() if v.family == "sdk" and n in found]
    decorators = [n for n in sdk if OVERHEAD_VARIANTS[n].api in ("@observe", "@traceable")]
    fastest = min(sdk, key=lambda n: found[n]["p50_us"], default=None)
    fastest_decorator = min(decorators, key=lambda n: found[n]["p50_us"], default=None)
    rates = {k: v["events_per_s"] for k, v in by_variant(throughput).items()}
    return {
        "tracebus_p50_over_floor_p50": ratio(p50("tracebus"), p50("floor")),
        "tracebus_observe_p50_over_floor_p50": ratio(p50("tracebus-observe"), p50("floor")),
        "fastest_sdk": fastest,
        "fastest_sdk_p50_over_tracebus_p50": ratio(p50(fastest), p50("tracebus")),
        "fastest_sdk_decorator": fastest_decorator,
        "fastest_sdk_decorator_p50_over_tracebus_observe_p50": ratio(
            p50(fastest_decorator), p50("tracebus-observe")
        ),
        "tracebus_over_aiokafka_throughput": ratio(
            rates.get("throughput-tracebus"), rates.get("throughput-aiokafka")
        ),
        "tracebus_over_confluent_throughput": ratio(
            rates.get("throughput-tracebus"), rates.get("throughput-confluent")
        ),
    }


def overhead_note(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"ERROR {row['error']}"
    after = row["after"]
    if "sent" in after:
        expected = after["accepted"] - after["coalesced"]
        return f"sent {after['sent']:,}/{expected:,}, {after['dropped']} dropped"
    if OVERHEAD_VARIANTS[row["variant"]].family == "sdk":
        return "unreachable endpoint"
    return ""


def throughput_note(row: dict[str, Any]) -> str:
    if "error" in row or "skipped" in row:
        return str(row.get("error") or row.get("skipped"))
    if row["variant"] == "throughput-tracebus":
        lost = "/".join(f"{n:,}" for n in row["lost"])
        return f"lost {lost} (per round); emit {row['emit_s']:.2f} s"
    if row["variant"] == "throughput-aiokafka-single":
        return "informational"
    return ""


def overhead_table(report: dict[str, Any]) -> Any:
    config = report["config"]
    floor = by_variant(report["overhead"]).get("floor", {}).get("p50_us")
    table = new_table(
        f"Caller overhead per span ({config['spans']:,} spans per variant in "
        f"{config['rounds']} interleaved rounds; trace → span → generation)",
        ["variant", "API"],
        ["p50 µs", "p99 µs", "mean µs", "p50 ÷ floor"],
    )
    for row in report["overhead"]:
        variant = OVERHEAD_VARIANTS[row["variant"]]
        table.add_row(
            variant.label,
            variant.api,
            fmt(row.get("p50_us"), 2),
            fmt(row.get("p99_us"), 2),
            fmt(row.get("mean_us"), 2),
            fmt(ratio(row.get("p50_us"), floor), 2, "×"),
            overhead_note(row),
        )
    return table


def throughput_table(report: dict[str, Any]) -> Any:
    config = report["config"]
    table = new_table(
        f"Producer throughput ({config['events']:,} events over {config['trace_ids']:,} "
        f"traces, lz4, acks=all; median of {config['rounds']} rounds)",
        ["producer"],
        ["records", "events", "seconds", "events/s", "÷ aiokafka"],
    )
    rates = {k: v["events_per_s"] for k, v in by_variant(report["throughput"]).items()}
    for row in report["throughput"]:
        table.add_row(
            THROUGHPUT_LABELS[row["variant"]],
            fmt(row.get("records"), 0),
            fmt(row.get("events_in_records"), 0),
            fmt(row.get("elapsed_s"), 2),
            fmt(row.get("events_per_s"), 0),
            fmt(ratio(row.get("events_per_s"), rates.get("throughput-aiokafka")), 2, "×"),
            throughput_note(row),
        )
    return table


def summary_lines(ratios: dict[str, Any]) -> list[str]:
    floor = ratios["tracebus_p50_over_floor_p50"]
    sdk = ratios["fastest_sdk_p50_over_tracebus_p50"]
    decorator = ratios["fastest_sdk_decorator_p50_over_tracebus_observe_p50"]
    throughput = ratios["tracebus_over_aiokafka_throughput"]
    floor_check = check(floor, 3, at_most=True)
    return [
        f"tracebus p50 ÷ floor p50 = {fmt(floor, 2)} (target ≤ 3: {floor_check}); "
        f"tracebus @observe ÷ floor = {fmt(ratios['tracebus_observe_p50_over_floor_p50'], 2)}",
        f"fastest SDK ({ratios['fastest_sdk']}) p50 ÷ tracebus p50 = {fmt(sdk, 1)} "
        f"(target ≥ 5: {check(sdk, 5)})",
        f"fastest SDK decorator ({ratios['fastest_sdk_decorator']}) p50 ÷ tracebus @observe "
        f"p50 = {fmt(decorator, 1)}",
        f"tracebus ÷ raw aiokafka throughput = {fmt(throughput, 2)} "
        f"(target ≥ 0.8: {check(throughput, 0.8)})",
    ]


# -- command line -----------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--spans", type=int, default=10_002, help="spans measured per variant")
    parser.add_argument("--warmup", type=int, default=500, help="warm-up traces per child run")
    parser.add_argument("--events", type=int, default=100_000, help="events of the throughput run")
    parser.add_argument("--trace-ids", type=int, default=2_000, help="traces the events belong to")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs of each variant")
    add_run_arguments(parser, quick="1,500 spans, 10k events", timeout=600.0, per="child")
    internal = parser.add_argument_group("internal (one variant in a child process)")
    internal.add_argument("--variant", help=argparse.SUPPRESS)
    internal.add_argument("--bootstrap", help=argparse.SUPPRESS)
    internal.add_argument("--topic", help=argparse.SUPPRESS)
    internal.add_argument("--traces", type=int, default=0, help=argparse.SUPPRESS)
    internal.add_argument("--records", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.spans, args.warmup, args.events, args.trace_ids = 1_500, 100, 10_000, 200
        args.rounds = 1
    if min(args.spans, args.events, args.trace_ids, args.rounds) < 1 or args.warmup < 0:
        parser.error("counts must be positive")
    return args


def child_options(args: argparse.Namespace) -> Options:
    return Options(
        variant=args.variant,
        bootstrap=args.bootstrap,
        topic=args.topic,
        traces=args.traces,
        warmup=args.warmup,
        events=args.events,
        trace_ids=args.trace_ids,
        records=args.records,
    )


def run_benchmark(config: Config) -> dict[str, Any]:
    topics = OVERHEAD_SETTINGS.topic_partitions()
    topics.update(dict.fromkeys(THROUGHPUT_TOPICS.values(), PARTITIONS))
    with embedded_broker(topics, "tracebus-bench-") as (bootstrap, work):
        overhead = run_overhead(bootstrap, config)
        throughput = run_throughput(bootstrap, config, work)
    return {
        "config": {
            "spans": config.traces_per_round * config.rounds * SPANS_PER_TRACE,
            "spans_per_trace": SPANS_PER_TRACE,
            "rounds": config.rounds,
            "warmup_traces": config.warmup,
            "events": config.events,
            "trace_ids": config.trace_ids,
        },
        "environment": environment(PACKAGES),
        "overhead": overhead,
        "throughput": throughput,
        "ratios": compute_ratios(overhead, throughput),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.variant:
        child_main(child_options(args))
    config = Config(
        traces=math.ceil(args.spans / SPANS_PER_TRACE),
        warmup=args.warmup,
        events=args.events,
        trace_ids=args.trace_ids,
        rounds=args.rounds,
        timeout_s=args.timeout,
    )
    report = run_benchmark(config)
    tables = [overhead_table(report), throughput_table(report)]
    print_report(tables, summary_lines(report["ratios"]), 132)
    write_json(args.json, report)
    rows = report["overhead"] + report["throughput"]
    return 1 if any("error" in row for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
