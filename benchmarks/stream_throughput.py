"""Stream benchmark: spans/s of one tracebus stream worker against a bare Faust agent and a raw
aiokafka ceiling.

    .venv/bin/python benchmarks/stream_throughput.py [--quick] [--json PATH]

Realistic traces (5–50 observations each, generations on gpt-4o with usage) are produced to
the events topic before anything consumes them, the way the SDK produces them (one record per
trace with all its events) and split into records of a few events each. Then, one after the
other on the same input: a raw aiokafka consume → group by trace → produce loop (the ceiling,
`--ceiling`, internal) in a subprocess of this script, the same grouping as the one agent of
the worker's Faust app (`--faust-agent`, internal: what Faust alone costs), and a real
`tracebus stream` worker subprocess. Each is timed from the moment it processed its first input
record to the last document it published; the three alternate for `--rounds` rounds (each run
on topics of its own) and the median round of each is reported, since one run swings by a third
on a shared machine.
The SDK input runs a fourth time per round: the worker again, held to a memory bound of a
quarter of the input's bytes, which is where a busy worker runs for good (the late window keeps
its published traces until the bound forgets them; once at the bound, each trace taken in
costs one forgotten). A last run measures the resident memory a worker needs per open trace.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import os
import signal
import statistics
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from random import Random
from typing import Any, NoReturn

import orjson
from common import (
    MS_PER_S,
    NS_PER_MS,
    PASSAGES,
    QUESTIONS,
    RECORDS_METRIC,
    Child,
    PlannedNode,
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
    open_consumer,
    plan_tree,
    prepare_profile_dir,
    print_report,
    produce,
    profile_summary,
    progress,
    ratio,
    read_to_end,
    rss_bytes,
    run_child,
    stream_metrics,
    topic_partitions,
    wait_until,
    write_json,
)

from tracebus.kafka.broker import free_port
from tracebus.schemas import Limits, encode_batch, json_default, normalize_usage, serialize_event

PARTITIONS = 8
MODEL, PROVIDER = "gpt-4o", "openai"
MIN_OBSERVATIONS, MAX_OBSERVATIONS = 5, 50
SPLIT_SPREAD = 40  # a split trace's records are this many records of other traces apart
WARMUP_TRACES = 100  # complete traces the memory worker handles before its baseline
STARTED_CPU_S = 1.0  # CPU seconds a worker has used once its interpreter is up (imports)
TARGET_RATIO, TARGET_SPANS_PER_S = 0.5, 50_000
# The at-bound run's TRACEBUS_MAX_OPEN_BYTES, as a share of the input's bytes (see above).
BOUND_SHARE = 0.25
WORKER_ENV = {
    "TRACEBUS_GRACE_S": "0.2",
    "TRACEBUS_TICK_S": "0.1",
    # Long enough that nothing here is published for being idle: traces complete by their root.
    "TRACEBUS_IDLE_TIMEOUT_S": "3600",
    "TRACEBUS_STORE": "memory",
}
LIMITS = Limits()
PACKAGES = ("tracebus", "faust-streaming", "aiokafka", "orjson", "pydantic")
# The AIOKafkaProducer of `send_input`: like the SDK's sender (lz4, acks=all, linger 2 ms).
SENDER_SETTINGS = {
    "acks": "all",
    "compression_type": "lz4",
    "linger_ms": 2,
    "max_batch_size": 1024 * 1024,
    "max_request_size": 1024 * 1024 + 1024,
    "enable_idempotence": False,
}

# -- the workload: realistic traces, serialised as the SDK serialises them --------------------

SYSTEM_PROMPT = (
    "You are the support assistant of an online shop. Answer briefly, cite the order data "
    "you were given, and never promise refunds the policy does not allow."
)
ANSWERS = [
    "Your order 4411 left our warehouse yesterday; the carrier expects to deliver it on Friday.",
    "Worn shoes can be returned within 30 days if they show no damage; I started the return.",
    "I have corrected the billing address and sent the new invoice to your e-mail address.",
    "The second charge is a pre-authorisation that expires within 5 days; nothing to refund.",
    "Yes, we ship to Norway; delivery to Oslo takes 3 to 5 working days, customs included.",
]
# (kind, weight) of the observations below the root; span/chain ones take children.
KIND_WEIGHTS = {"generation": 40, "tool": 20, "retriever": 10, "span": 20, "chain": 10}


@dataclass
class Workload:
    """The records of every input, and what they contain."""

    traces: int
    spans: int
    events: int
    event_bytes: int
    whole: list[tuple[bytes, bytes]] = field(default_factory=list)
    split: list[tuple[bytes, bytes]] = field(default_factory=list)


def plan_trace(rng: Random, start_ns: int) -> list[PlannedNode]:
    """A tree of 5–50 observations: an agent root, nested spans/chains, leaves of work."""
    return plan_tree(rng, start_ns, (MIN_OBSERVATIONS, MAX_OBSERVATIONS), KIND_WEIGHTS)


def observation_fields(rng: Random, node: PlannedNode) -> dict[str, Any]:
    """What an app would set with `update(...)` on an observation of this kind."""
    topic = rng.randrange(len(QUESTIONS))
    if node.kind == "generation":
        prompt, completion = rng.randint(300, 4000), rng.randint(20, 600)
        return {
            "input": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": QUESTIONS[topic]},
            ],
            "output": {"role": "assistant", "content": ANSWERS[topic]},
            "model": MODEL,
            "provider": PROVIDER,
            "model_parameters": {"temperature": 0.2, "max_tokens": 1024},
            "usage": normalize_usage(
                {
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                    "prompt_tokens_details": {"cached_tokens": rng.choice((0, 0, 256, 1024))},
                }
            ),
            "completion_start_ns": node.start_ns + rng.randint(150, 600) * NS_PER_MS,
        }
    if node.kind == "tool":
        return {
            "input": {"order_id": rng.randint(1000, 9999), "fields": ["status", "eta"]},
            "output": {"status": rng.choice(("shipped", "packed", "delivered")), "eta_days": 3},
        }
    if node.kind == "retriever":
        return {"input": {"query": QUESTIONS[topic], "k": 3}, "output": rng.sample(PASSAGES, 3)}
    if node.kind == "agent":
        return {
            "input": QUESTIONS[topic],
            "output": ANSWERS[topic],
            "metadata": {"route": "support"},
        }
    return {"input": {"step": node.name}, "output": {"ok": True}}


def observation_event(
    rng: Random,
    trace_id: str,
    observation_id: str,
    parent_id: str | None,
    node: PlannedNode,
    ended: bool,
) -> dict[str, Any]:
    """The dict `Client._observation_event` builds, keys in the same order."""
    fields = observation_fields(rng, node)
    level = "ERROR" if rng.random() < 0.03 else "DEFAULT"
    event: dict[str, Any] = {
        "schema_version": 1,
        "type": "observation",
        "event_id": hex_id(rng, 128),
        "trace_id": trace_id,
        "timestamp_unix_nano": node.end_ns if ended else node.start_ns,
        "observation_id": observation_id,
        "kind": node.kind,
        "name": node.name,
        "start_time_unix_nano": node.start_ns,
        "level": level,
    }
    if parent_id is not None:
        event["parent_observation_id"] = parent_id
    optional = {
        "end_time_unix_nano": node.end_ns if ended else None,
        "status_message": "TimeoutError: upstream took too long" if level == "ERROR" else None,
        "input": fields.get("input"),
        "output": fields.get("output") if ended else None,
        "metadata": fields.get("metadata"),
        "model": fields.get("model"),
        "provider": fields.get("provider"),
        "model_parameters": fields.get("model_parameters"),
        "usage": fields.get("usage") if ended else None,
        "cost": None,
        "completion_start_time_unix_nano": fields.get("completion_start_ns") if ended else None,
    }
    event.update((k, v) for k, v in optional.items() if v is not None)
    return event


def trace_events(rng: Random, start_ns: int, root_ends: bool = True) -> tuple[str, list[bytes]]:
    """One trace's serialised events in the order the SDK emits them.

    The SDK sends an observation when it ends (children before parents), then the trace event
    right after the root ends. A root that has not ended goes out as the sender's snapshot of
    an open observation, first in the record since it was queued when it started."""
    trace_id = hex_id(rng, 128)
    nodes = plan_trace(rng, start_ns)
    ids = [hex_id(rng, 64) for _ in nodes]
    events = [
        observation_event(
            rng,
            trace_id,
            ids[index],
            None if node.parent is None else ids[node.parent],
            node,
            ended=root_ends or index > 0,
        )
        for index, node in enumerate(nodes)
    ]
    if root_ends:
        order = sorted(range(len(nodes)), key=lambda i: (nodes[i].end_ns, -i))
        user = rng.randrange(10_000)
        events = [events[i] for i in order]
        events.append(
            {
                "schema_version": 1,
                "type": "trace",
                "event_id": hex_id(rng, 128),
                "trace_id": trace_id,
                "timestamp_unix_nano": nodes[0].end_ns,
                "name": "support-chat",
                "user_id": f"user-{user}",
                "session_id": f"session-{user}-{rng.randrange(5)}",
                "tags": ["benchmark", rng.choice(("web", "mobile"))],
            }
        )
    else:
        later = sorted(range(1, len(nodes)), key=lambda i: (nodes[i].end_ns, -i))
        events = [events[0]] + [events[i] for i in later]
    return trace_id, [serialize_event(e, LIMITS, json_default) for e in events]


def split_records(
    traces: list[tuple[str, list[bytes]]], per_record: int
) -> list[tuple[bytes, bytes]]:
    """Records of `per_record` events, a trace's records interleaved with other traces'."""
    placed: list[tuple[int, int, bytes, bytes]] = []
    for index, (trace_id, events) in enumerate(traces):
        for chunk, start in enumerate(range(0, len(events), per_record)):
            value = encode_batch(trace_id, events[start : start + per_record])
            placed.append((index + chunk * SPLIT_SPREAD, index, trace_id.encode(), value))
    placed.sort(key=lambda item: (item[0], item[1]))
    return [(key, value) for _, _, key, value in placed]


def build_workload(count: int, per_record: int, seed: int) -> Workload:
    rng = Random(seed)
    start_ns = time.time_ns()
    traces = [trace_events(rng, start_ns + i * NS_PER_MS) for i in range(count)]
    events = [e for _, trace in traces for e in trace]
    workload = Workload(
        traces=count,
        spans=sum(1 for e in events if e.startswith(b'{"schema_version":1,"type":"observation"')),
        events=len(events),
        event_bytes=sum(len(e) for e in events),
    )
    workload.whole = [(tid.encode(), encode_batch(tid, trace)) for tid, trace in traces]
    workload.split = split_records(traces, per_record)
    return workload


def open_trace_records(count: int, seed: int) -> list[tuple[bytes, bytes]]:
    """One record per trace whose root is still open: every other observation has ended."""
    rng = Random(seed)
    start_ns = time.time_ns()
    records = []
    for index in range(count):
        trace_id, events = trace_events(rng, start_ns + index * NS_PER_MS, root_ends=False)
        records.append((trace_id.encode(), encode_batch(trace_id, events)))
    return records


# -- Kafka helpers (parent) -------------------------------------------------------------------


def send_input(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    """Send `records` as the SDK's sender would (lz4, acks=all), all acknowledged on return."""
    asyncio.run(produce(bootstrap, topic, records, SENDER_SETTINGS))


@dataclass
class Output:
    """What a run published: (broker timestamp ms, value) of every record; and the CPU seconds
    its process had used at each poll, as (unix time s, CPU s)."""

    records: list[tuple[int, bytes]]
    cpu: list[tuple[float, float]]
    error: str | None = None


async def await_output(
    bootstrap: str, topic: str, traces: int, child: Child, timeout: float
) -> Output:
    """Wait (cheaply: end offsets only) until `topic` holds a document of each of `traces`
    traces, then read it all. The embedded broker's reported end can stop short of the last
    record, so the topic is also read once its end has not moved for a second. Gives up when
    the child dies or `timeout` runs out."""
    from aiokafka import TopicPartition

    async with open_consumer(bootstrap) as consumer:
        deadline = time.monotonic() + timeout
        records: list[tuple[int, bytes]] = []
        cpu: list[tuple[float, float]] = []
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        read_at = -1
        unchanged_since, previous = time.monotonic(), 0
        while True:
            with contextlib.suppress(OSError):
                cpu.append((time.time(), cpu_seconds(child.process.pid)))
            ends = await consumer.end_offsets(partitions)
            total = sum(ends.values())
            if total != previous:
                unchanged_since, previous = time.monotonic(), total
            stalled = total and time.monotonic() - unchanged_since >= 1.0
            if (total >= traces or stalled) and total != read_at:
                records = await read_all(consumer, partitions, ends, deadline)
                read_at = total
                if distinct_traces(records) >= traces:
                    with contextlib.suppress(OSError):  # a sample after the last document
                        cpu.append((time.time(), cpu_seconds(child.process.pid)))
                    return Output(records, cpu)
            if child.process.poll() is not None:
                return Output(records, cpu, f"exited with code {child.process.returncode}")
            if time.monotonic() >= deadline:
                error = f"timed out after {timeout:g} s with {total} documents"
                return Output(records, cpu, error)
            await asyncio.sleep(0.25)


async def read_all(
    consumer: Any, partitions: list[Any], ends: dict[Any, int], deadline: float
) -> list[tuple[int, bytes]]:
    """Every record from the beginning to `ends`, and any beyond (a short reported end)."""
    await consumer.seek_to_beginning(*partitions)
    found = await read_to_end(consumer, ends, deadline)
    while more := await consumer.getmany(timeout_ms=300):
        found.extend(record for batch in more.values() for record in batch)
    return [(r.timestamp, r.value or b"") for r in found]


def distinct_traces(records: list[tuple[int, bytes]]) -> int:
    return len({orjson.loads(value)["trace_id"] for _, value in records})


async def first_timestamp(bootstrap: str, topic: str, timeout: float = 30.0) -> int | None:
    """The earliest broker timestamp (ms) of `topic`: for a worker's changelog, when it
    processed its first record (a table write follows every record)."""
    async with open_consumer(bootstrap) as consumer:
        deadline = time.monotonic() + timeout
        first: list[int] = []
        partitions = await topic_partitions(consumer, topic)
        if not partitions:
            return None
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            if not ends[tp]:
                continue
            consumer.assign([tp])  # one partition at a time: only its first batch is fetched
            await consumer.seek_to_beginning(tp)
            while time.monotonic() < deadline:
                batch = (await consumer.getmany(tp, timeout_ms=500, max_records=1)).get(tp)
                if batch:
                    first.append(batch[0].timestamp)
                    break
        return min(first, default=None)


# -- CPU share and profiling ---------------------------------------------------------------------


def cpu_share(samples: list[tuple[float, float]], start: float, end: float) -> float | None:
    """CPU seconds per second between `start` and `end` (unix s), interpolating the samples."""

    def at(moment: float) -> float | None:
        for (t0, c0), (t1, c1) in itertools.pairwise(samples):
            if t0 <= moment <= t1:
                return c0 + (c1 - c0) * (moment - t0) / (t1 - t0) if t1 > t0 else c0
        return None

    used_start, used_end = at(start), at(end)
    if used_start is None or used_end is None or end <= start:
        return None
    return (used_end - used_start) / (end - start)


def profile_when_ready(binary: str, worker: Child, path: Path, timeout: float = 60.0) -> Profiler:
    """py-spy attached to a worker once its interpreter is up (or after `timeout` s). Not on
    Faust's "Ready" line: the worker logs at warning level, so that line never comes and the
    profile would start after the run."""
    pid = worker.process.pid
    wait_until(lambda: cpu_seconds(pid) >= STARTED_CPU_S, worker, timeout, interval=0.05)
    return Profiler(binary, pid, path)


# -- the ceilings (child side): the grouping alone, under raw aiokafka and under Faust ------------


class PendingTrace:
    __slots__ = ("observations", "open", "root_ended", "scores", "trace")

    def __init__(self) -> None:
        self.observations: dict[str, dict[str, Any]] = {}
        self.open: set[str] = set()
        self.root_ended = False
        self.trace: dict[str, Any] = {}
        self.scores: dict[str, dict[str, Any]] = {}


def merge_newer(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    if old is None:
        return new
    if new["timestamp_unix_nano"] >= old["timestamp_unix_nano"]:
        return {**old, **new}
    return {**new, **old}


class Grouping:
    """The ceilings' work: events grouped per trace; a trace whose root ended with nothing open
    goes out as one JSON document. Events of a trace already sent are counted as late and
    dropped. No validation, no enrichment, no durable state."""

    def __init__(self) -> None:
        self.pending: dict[str, PendingTrace] = {}
        self.sent: set[str] = set()
        self.counts = Counter[str]()
        self.first_record_ms: int | None = None

    def add(self, value: bytes) -> bytes | None:
        """Take a record's events; the trace's document when this record completed it."""
        if self.first_record_ms is None:
            self.first_record_ms = int(time.time() * MS_PER_S)
        counts = self.counts
        counts["records"] += 1
        record = orjson.loads(value)
        trace_id = record["trace_id"]
        if trace_id in self.sent:
            counts["late_events"] += len(record["events"])
            return None
        state = self.pending.get(trace_id)
        if state is None:
            state = self.pending[trace_id] = PendingTrace()
        for event in record["events"]:
            counts["events"] += 1
            kind = event["type"]
            if kind == "observation":
                oid = event["observation_id"]
                merged = merge_newer(state.observations.get(oid), event)
                state.observations[oid] = merged
                if "end_time_unix_nano" in merged:
                    state.open.discard(oid)
                    if "parent_observation_id" not in merged:
                        state.root_ended = True
                else:
                    state.open.add(oid)
            elif kind == "trace":
                state.trace = merge_newer(state.trace or None, event)
            else:
                score = event["score_id"]
                state.scores[score] = merge_newer(state.scores.get(score), event)
        if not state.root_ended or state.open:
            return None
        del self.pending[trace_id]
        self.sent.add(trace_id)
        counts["documents"] += 1
        document = {
            "schema_version": 1,
            "trace_id": trace_id,
            "trace": state.trace,
            "observations": list(state.observations.values()),
            "scores": list(state.scores.values()),
        }
        return orjson.dumps(document)

    def result(self) -> dict[str, Any]:
        return {
            **self.counts,
            "still_open": len(self.pending),
            "first_record_ms": self.first_record_ms,
        }


async def ceiling_loop(bootstrap: str, source: str, sink: str, group: str) -> dict[str, Any]:
    """`Grouping` in a raw aiokafka consume → produce loop, until SIGTERM; fetches and produces
    like the Faust worker (its fetch wait and sizes; acks=all, linger 50 ms, its batch sizes,
    no compression)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from tracebus.kafka.settings import FETCH_MAX_WAIT_MS
    from tracebus.streams.app import MAX_BATCH_BYTES, MAX_FETCH_BYTES
    from tracebus.streams.settings import MAX_REQUEST_BYTES

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        max_partition_fetch_bytes=MAX_FETCH_BYTES,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=50,
        enable_idempotence=False,
        max_batch_size=MAX_BATCH_BYTES,
        max_request_size=MAX_REQUEST_BYTES,
    )
    await producer.start()
    await consumer.start()
    grouping = Grouping()
    try:
        while not stop.is_set():
            fetched = await consumer.getmany(timeout_ms=100, max_records=2000)
            for batch in fetched.values():
                for record in batch:
                    document = grouping.add(record.value)
                    if document is not None:
                        await producer.send(sink, document, key=record.key)
        await producer.flush()
    finally:
        await consumer.stop()
        await producer.stop()
    return grouping.result()


def faust_agent() -> dict[str, Any]:
    """`Grouping` in a bare agent on the stream worker's own Faust app (`faust_app`, settings
    from the TRACEBUS_* environment), until SIGTERM: what Faust costs without tracebus's work
    (table, validation, enrichment, publication protocol)."""
    from tracebus.cli.common import ExitCode
    from tracebus.stopping import StopDeadline
    from tracebus.streams.app import faust_app, run_worker
    from tracebus.streams.settings import StreamSettings

    settings = StreamSettings()
    app = faust_app(settings)
    events = app.topic(settings.events_topic, key_type=bytes, value_type=bytes)
    grouping = Grouping()

    async def group(stream: Any) -> None:
        async for event in stream.events():
            document = grouping.add(event.message.value)
            if document is not None:
                await app.producer.send(
                    settings.traces_topic, event.message.key, document, None, None, None
                )

    app.agent(events, name="group")(group)
    run_worker(app, StopDeadline(settings.stop_timeout_s, ExitCode.STOP_TIMED_OUT))
    return grouping.result()


def ceiling_main(args: argparse.Namespace) -> NoReturn:
    if args.faust_agent:
        run_child(faust_agent)
    run_child(lambda: asyncio.run(ceiling_loop(args.bootstrap, args.source, args.sink, args.group)))


# -- runs (parent) -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    traces: int
    open_traces: int
    events_per_record: int
    seed: int
    timeout_s: float
    py_spy: str | None
    profile_dir: Path | None
    rounds: int = 1


@dataclass(frozen=True)
class Topics:
    events: str
    traces: str
    dead_letter: str
    ceiling: str

    @classmethod
    def named(cls, name: str) -> Topics:
        prefix = f"bench.stream.{name}"
        return cls(f"{prefix}.events", f"{prefix}.traces", f"{prefix}.deadletter", f"{prefix}.out")

    @classmethod
    def of_run(cls, name: str, round_: int, implementation: str) -> Topics:
        """Topics of their own for each run: the tracebus worker writes control records to its
        input topic, which no other run must read."""
        return cls.named(f"{name}.r{round_}.{implementation}")

    @property
    def run_name(self) -> str:
        """What `named` was given, e.g. `whole.r0.tracebus`: names the run's logs and profile."""
        return self.traces.removeprefix("bench.stream.").removesuffix(".traces")

    def partitions(self) -> dict[str, int]:
        return {self.events: PARTITIONS, self.traces: PARTITIONS, self.dead_letter: 1} | {
            self.ceiling: PARTITIONS
        }


def worker_env(bootstrap: str, topics: Topics, data_dir: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        **WORKER_ENV,
        **extra,
        "TRACEBUS_APP_ID": f"bench-stream-{uuid.uuid4().hex[:8]}",
        "TRACEBUS_BOOTSTRAP_SERVERS": bootstrap,
        "TRACEBUS_EVENTS_TOPIC": topics.events,
        "TRACEBUS_TRACES_TOPIC": topics.traces,
        "TRACEBUS_DEAD_LETTER_TOPIC": topics.dead_letter,
        "TRACEBUS_PARTITIONS": str(PARTITIONS),
        "TRACEBUS_DATA_DIR": str(data_dir),
    }


WORKER_COMMAND = [sys.executable, "-m", "tracebus.cli", "--log-level", "warning", "stream"]


def rates(
    output: Output, expected_traces: int, records: int, started_ms: int | None
) -> dict[str, Any]:
    """Spans/traces/records per second from the first input record processed (`started_ms`)
    to the last document published, by broker timestamps and the processes' own clocks.

    A trace is counted once, by its first document."""
    seen: set[str] = set()
    spans = extra = 0
    first = last = 0
    completed = Counter[str]()
    for timestamp, value in sorted(output.records, key=lambda r: r[0]):
        document = orjson.loads(value)
        if document["trace_id"] in seen:
            extra += 1
            continue
        seen.add(document["trace_id"])
        spans += len(document["observations"])
        completed[document.get("completed_by") or "complete"] += 1
        first = first or timestamp
        last = timestamp
    row: dict[str, Any] = {
        "documents": len(output.records),
        "traces": len(seen),
        "spans": spans,
        "records": records,
        "extra_documents": extra,
        "completed_by": dict(completed),
        "first_record_ms": started_ms,
        "first_document_ms": first or None,
        "last_document_ms": last or None,
    }
    if output.error is not None or len(seen) < expected_traces:
        row["error"] = output.error or f"{len(seen)} of {expected_traces} traces published"
    if started_ms is None or last <= started_ms:
        row.setdefault("error", "no time window: first record or documents missing")
        return row
    seconds = (last - started_ms) / MS_PER_S
    row.update(
        seconds=seconds,
        spans_per_s=spans / seconds,
        traces_per_s=len(seen) / seconds,
        records_per_s=records / seconds,
        cpu_share=cpu_share(output.cpu, started_ms / MS_PER_S, last / MS_PER_S),
    )
    return row


def run_tracebus(
    bootstrap: str,
    topics: Topics,
    workload: Workload,
    records: int,
    config: Config,
    work: Path,
    implementation: str = "tracebus",
    **extra_env: str,
) -> dict[str, Any]:
    env = worker_env(bootstrap, topics, work / "data", **extra_env)
    name = topics.run_name
    worker = Child(WORKER_COMMAND, work / f"tracebus-{name}.log", env)
    profiler = None
    try:
        if config.py_spy and config.profile_dir:
            profile = config.profile_dir / f"tracebus-{name}.txt"
            profiler = profile_when_ready(config.py_spy, worker, profile)
        output = asyncio.run(
            await_output(bootstrap, topics.traces, workload.traces, worker, config.timeout_s)
        )
        running = worker.process.poll() is None
        rss_after = rss_bytes(worker.process.pid) if running else None
        rss_peak = rss_bytes(worker.process.pid, "VmHWM") if running else None
    finally:
        if profiler is not None:
            profiler.stop()
        code = worker.stop()
    changelog = f"{env['TRACEBUS_APP_ID']}-traces-changelog"
    started_ms = asyncio.run(first_timestamp(bootstrap, changelog))
    row = {"implementation": implementation, **rates(output, workload.traces, records, started_ms)}
    row.update(
        exit_code=code, rss_after_bytes=rss_after, rss_peak_bytes=rss_peak, worker_env=extra_env
    )
    if started_ms is not None:
        row["startup_s"] = started_ms / MS_PER_S - worker.started
    if "error" in row:
        row["error"] += f"; worker log: {worker.log_tail()}"
    if profiler is not None:
        row["profile"] = str(profiler.path)
    return row


def run_ceiling(
    bootstrap: str, topics: Topics, workload: Workload, records: int, config: Config, work: Path
) -> dict[str, Any]:
    command = ["--ceiling", "--bootstrap", bootstrap, "--source", topics.events]
    command += ["--sink", topics.ceiling, "--group", f"bench-ceiling-{uuid.uuid4().hex[:8]}"]
    output = (bootstrap, topics.ceiling)
    return run_grouping("ceiling", command, None, output, workload, records, config, work)


def run_faust_agent(
    bootstrap: str, topics: Topics, workload: Workload, records: int, config: Config, work: Path
) -> dict[str, Any]:
    env = worker_env(bootstrap, topics, work / "data")
    output = (bootstrap, topics.traces)
    return run_grouping("faust", ["--faust-agent"], env, output, workload, records, config, work)


def run_grouping(
    implementation: str,
    arguments: list[str],
    env: dict[str, str] | None,
    output: tuple[str, str],
    workload: Workload,
    records: int,
    config: Config,
    work: Path,
) -> dict[str, Any]:
    """A run of `Grouping` in a child process of this script (`arguments` say which), timed by
    the documents it writes to `output` (bootstrap servers, topic)."""
    bootstrap, topic = output
    command = [sys.executable, str(Path(__file__).resolve()), *arguments]
    name = topic.removeprefix("bench.stream.")
    child = Child(command, work / f"{implementation}-{name}.log", env)
    try:
        documents = asyncio.run(
            await_output(bootstrap, topic, workload.traces, child, config.timeout_s)
        )
    finally:
        child.stop()
    counts = find_result(child.log_text()) or {}
    started_ms = counts.get("first_record_ms")
    row = {
        "implementation": implementation,
        **rates(documents, workload.traces, records, started_ms),
    }
    row.update(counts=counts, startup_s=started_ms and started_ms / MS_PER_S - child.started)
    if "error" in row:
        row["error"] += f"; log: {child.log_tail()}"
    return row


def wait_for_metric(port: int, name: str, at_least: float, child: Child, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    value = -1.0
    while time.monotonic() < deadline and child.process.poll() is None:
        with contextlib.suppress(OSError):
            value = stream_metrics(port).get(name, -1.0)
            if value >= at_least:
                return value
        time.sleep(0.2)
    raise RuntimeError(f"{name} reached {value:g}, not {at_least:g}: {child.log_tail()}")


def settled_rss(pid: int, seconds: float = 1.5) -> int:
    """Median of RSS samples over `seconds`, after the worker's last burst of work."""
    samples = []
    for _ in range(7):
        time.sleep(seconds / 7)
        samples.append(rss_bytes(pid))
    return int(statistics.median(samples))


def index_bytes(records: list[tuple[bytes, bytes]]) -> float:
    """Mean Python memory of a worker's `TraceState` for these records besides the record
    itself (which it shares with the table's store): event ids seen, observation flags."""
    import tracemalloc

    from tracebus.streams.assembly import TraceState, apply_events

    parsed = [orjson.loads(value) for _, value in records[:500]]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        states = []
        for record in parsed:
            state = TraceState(record["trace_id"], 0)
            apply_events(state, record["events"], 0, time.time_ns())
            states.append(state)
        return (tracemalloc.get_traced_memory()[0] - before) / len(states)
    finally:
        tracemalloc.stop()


def measure_memory(bootstrap: str, topics: Topics, config: Config, work: Path) -> dict[str, Any]:
    """RSS of a fresh worker before and after it holds `config.open_traces` open traces."""
    warmup = build_workload(WARMUP_TRACES, config.events_per_record, config.seed + 1).whole
    held = open_trace_records(config.open_traces, config.seed + 2)
    half = len(held) // 2
    port = free_port()
    env = worker_env(bootstrap, topics, work / "data", TRACEBUS_METRICS_PORT=str(port))
    worker = Child(WORKER_COMMAND, work / "tracebus-memory.log", env)
    pid = worker.process.pid
    try:
        send_input(bootstrap, topics.events, warmup)
        output = asyncio.run(
            await_output(bootstrap, topics.traces, WARMUP_TRACES, worker, config.timeout_s)
        )
        if output.error:
            raise RuntimeError(f"warm-up: {output.error}: {worker.log_tail()}")
        # Event records consumed so far (control records are not counted).
        consumed = wait_for_metric(port, RECORDS_METRIC, WARMUP_TRACES, worker, 30)
        samples = [(0, settled_rss(pid))]
        for part, held_so_far in ((held[:half], half), (held[half:], len(held))):
            send_input(bootstrap, topics.events, part)
            wait_for_metric(port, RECORDS_METRIC, consumed + held_so_far, worker, config.timeout_s)
            samples.append((held_so_far, settled_rss(pid)))
        metrics = stream_metrics(port)
    finally:
        worker.stop()
    before, after = samples[0][1], samples[-1][1]
    record_bytes = statistics.fmean(len(value) for _, value in held)
    return {
        "open_traces": len(held),
        "rss_samples": samples,
        "rss_before_bytes": before,
        "rss_after_bytes": after,
        "rss_per_open_trace_bytes": (after - before) / len(held),
        "rss_per_open_trace_second_half_bytes": (after - samples[1][1]) / (len(held) - half),
        "record_bytes_per_trace": record_bytes,
        "index_bytes_per_trace": index_bytes(held),
        "open_traces_gauge": metrics.get("tracebus_stream_open_traces"),
        "open_bytes_gauge": metrics.get("tracebus_stream_open_bytes"),
        "observations_per_trace": statistics.fmean(
            len(orjson.loads(value)["events"]) for _, value in held
        ),
    }


# -- report ----------------------------------------------------------------------------------------

IMPLEMENTATIONS = {
    "tracebus": "tracebus stream worker",
    "tracebus_at_bound": "tracebus at its memory bound",
    "faust": "bare Faust agent",
    "ceiling": "aiokafka ceiling",
}
INPUT_LABELS = {
    "whole": "1 record per trace (SDK)",
    "split": "{n} events per record",
}


def row_note(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"ERROR {row['error'][:160]}"
    notes = [f"joined in {fmt(row.get('startup_s'), 1)} s"]
    rounds = row.get("spans_per_s_per_round", [])
    if len(rounds) > 1:
        notes.append(f"median of {len(rounds)} rounds ({fmt(min(rounds))}–{fmt(max(rounds))})")
    if row["implementation"].startswith("tracebus"):
        done = row["completed_by"]
        notes.append(", ".join(f"{k} {v:,}" for k, v in sorted(done.items())))
    else:
        counts = row.get("counts", {})
        if counts.get("late_events"):
            notes.append(f"{counts['late_events']:,} late events dropped")
    if row["extra_documents"]:
        notes.append(f"{row['extra_documents']:,} re-published")
    return "; ".join(notes)


def throughput_table(report: dict[str, Any]) -> Any:
    config, workload = report["config"], report["workload"]
    table = new_table(
        f"Stream throughput, one worker each ({workload['traces']:,} traces, "
        f"{workload['spans']:,} spans, {workload['events']:,} events of "
        f"{workload['event_bytes'] / workload['events']:,.0f} B on average; "
        f"{PARTITIONS} partitions; grace {WORKER_ENV['TRACEBUS_GRACE_S']} s)",
        ["input", "implementation"],
        ["records", "spans", "seconds", "spans/s", "traces/s", "records/s", "CPU", "÷ ceiling"],
    )
    for name, rows in report["throughput"].items():
        label = INPUT_LABELS[name].format(n=config["events_per_record"])
        ceiling = rows["ceiling"].get("spans_per_s")
        for implementation, title in IMPLEMENTATIONS.items():
            row = rows.get(implementation)
            if row is None:
                continue
            table.add_row(
                label,
                title,
                fmt(row.get("records")),
                fmt(row.get("spans")),
                fmt(row.get("seconds"), 2),
                fmt(row.get("spans_per_s")),
                fmt(row.get("traces_per_s")),
                fmt(row.get("records_per_s")),
                fmt(None if row.get("cpu_share") is None else row["cpu_share"] * 100, 0, "%"),
                fmt(ratio(row.get("spans_per_s"), ceiling), 2, "×"),
                row_note(row),
            )
    return table


def summary_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    for name, rows in report["throughput"].items():
        label = INPUT_LABELS[name].format(n=report["config"]["events_per_record"])
        tracebus = rows["tracebus"].get("spans_per_s")
        share = ratio(tracebus, rows["ceiling"].get("spans_per_s"))
        faust = rows["faust"].get("spans_per_s")
        lines.append(
            f"{label}: tracebus {fmt(tracebus)} spans/s per worker "
            f"(target ≥ {TARGET_SPANS_PER_S:,}: {check(tracebus, TARGET_SPANS_PER_S)}), "
            f"{fmt(share, 2)}× the ceiling (target ≥ {TARGET_RATIO}×: "
            f"{check(share, TARGET_RATIO)}); the bare Faust agent, doing the ceiling's work on "
            f"the worker's Faust app, {fmt(ratio(faust, rows['ceiling'].get('spans_per_s')), 2)}"
            f"× the ceiling, tracebus {fmt(ratio(tracebus, faust), 2)}× the bare agent"
        )
    bound = report["throughput"]["whole"].get("tracebus_at_bound")
    if bound is not None:
        below = report["throughput"]["whole"]["tracebus"].get("spans_per_s")
        held = int(bound.get("worker_env", {}).get("TRACEBUS_MAX_OPEN_BYTES", 0))
        peak = bound.get("rss_peak_bytes")
        lines.append(
            f"at its memory bound (TRACEBUS_MAX_OPEN_BYTES {held / 1024 / 1024:,.1f} MiB, "
            f"{BOUND_SHARE:.0%} of the input; from then on each trace taken in forgets the oldest "
            f"published one): tracebus {fmt(bound.get('spans_per_s'))} spans/s, "
            f"{fmt(ratio(bound.get('spans_per_s'), below), 2)}× the worker below its bound; "
            f"peak RSS {fmt(ratio(peak, 1024 * 1024))} MiB"
        )
    memory = report["memory"]
    if "error" in memory:
        lines.append(f"memory per open trace: ERROR {memory['error']}")
    else:
        mib = 1024 * 1024
        lines.append(
            f"memory per open trace: {memory['open_traces']:,} open traces "
            f"({memory['observations_per_trace']:.1f} events each) took the worker's RSS from "
            f"{memory['rss_before_bytes'] / mib:,.0f} to {memory['rss_after_bytes'] / mib:,.0f} "
            f"MiB: {memory['rss_per_open_trace_bytes'] / 1024:,.1f} KiB per trace "
            f"(second half alone {memory['rss_per_open_trace_second_half_bytes'] / 1024:,.1f} "
            f"KiB); its record is {memory['record_bytes_per_trace'] / 1024:,.1f} KiB (held once, "
            "by the state and the table's store alike) and its index (event ids, observation "
            f"flags) {memory['index_bytes_per_trace'] / 1024:,.1f} KiB"
        )
        whole = report["throughput"].get("whole", {}).get("tracebus", {})
        if whole.get("rss_after_bytes") and whole.get("traces"):
            kept = whole["traces"]
            per_trace = (whole["rss_after_bytes"] - memory["rss_before_bytes"]) / kept
            lines.append(
                f"memory after publication: having published {kept:,} traces (none open; the "
                "table keeps published traces for the late window, TRACEBUS_LATE_WINDOW_S, "
                f"600 s by default) the worker's RSS was {whole['rss_after_bytes'] / mib:,.0f} "
                f"MiB: {per_trace / 1024:,.1f} KiB per published trace over the fresh worker's "
                "baseline above"
            )
    return lines


def profile_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    for name, rows in report["throughput"].items():
        profile = rows["tracebus"].get("profile_summary")
        if not profile:
            continue
        lines.append(f"py-spy, tracebus worker, {name} input ({profile['samples']:,} samples):")
        lines += hottest_lines(profile, 10)
    return lines


# -- orchestration ---------------------------------------------------------------------------------


def median_of_rounds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median spans/s, with the profile summary of the run that was profiled."""
    median = median_run(runs, "spans_per_s")
    profiled = [run for run in runs if run.get("profile_summary")]
    if profiled and "error" not in median:
        median["profile_summary"] = profiled[0]["profile_summary"]
    return median


def run_benchmark(config: Config) -> dict[str, Any]:
    progress(f"generating {config.traces:,} traces")
    workload = build_workload(config.traces, config.events_per_record, config.seed)
    inputs = {"whole": workload.whole, "split": workload.split}
    implementations = [
        ("ceiling", run_ceiling),
        ("faust", run_faust_agent),
        ("tracebus", run_tracebus),
    ]
    bound = str(int(sum(len(value) for _, value in workload.whole) * BOUND_SHARE))
    at_bound = functools.partial(
        run_tracebus, implementation="tracebus_at_bound", TRACEBUS_MAX_OPEN_BYTES=bound
    )
    implementations_of = {
        "whole": [*implementations, ("tracebus_at_bound", at_bound)],
        "split": implementations,
    }
    run_inputs = {
        Topics.of_run(name, round_, implementation): records
        for name, records in inputs.items()
        for round_ in range(config.rounds)
        for implementation, _ in implementations_of[name]
    }
    every_topic = {
        topic: count
        for topics in [*run_inputs, Topics.named("memory")]
        for topic, count in topics.partitions().items()
    }
    throughput: dict[str, dict[str, dict[str, Any]]] = {}
    with embedded_broker(every_topic, "tracebus-stream-bench-") as (bootstrap, work):
        for topics, records in run_inputs.items():
            progress(f"producing {len(records):,} records ({topics.run_name})")
            send_input(bootstrap, topics.events, records)
        for name, records in inputs.items():
            # Rounds alternate the implementations, so all meet the machine's ups and downs alike.
            runs: dict[str, list[dict[str, Any]]] = {
                impl: [] for impl, _ in implementations_of[name]
            }
            for round_ in range(config.rounds):
                # One profile is enough, and a profiled run is a slower one.
                round_config = config if round_ == 0 else replace(config, py_spy=None)
                for implementation, run in in_round(implementations_of[name], round_):
                    progress(f"{name}, round {round_ + 1} of {config.rounds}: {implementation}")
                    topics = Topics.of_run(name, round_, implementation)
                    try:
                        row = run(bootstrap, topics, workload, len(records), round_config, work)
                    except Exception as error:
                        row = {"implementation": implementation, "error": repr(error)}
                    if row.get("profile") and Path(row["profile"]).exists():
                        row["profile_summary"] = profile_summary(Path(row["profile"]))
                    runs[implementation].append(row)
            throughput[name] = {impl: median_of_rounds(r) for impl, r in runs.items()}
        progress(f"memory: {config.open_traces:,} open traces")
        try:
            memory = measure_memory(bootstrap, Topics.named("memory"), config, work)
        except Exception as error:
            memory = {"error": repr(error)}
    return {
        "config": {
            "traces": config.traces,
            "open_traces": config.open_traces,
            "events_per_record": config.events_per_record,
            "partitions": PARTITIONS,
            "worker_env": WORKER_ENV,
            "seed": config.seed,
            "rounds": config.rounds,
        },
        "workload": {
            "traces": workload.traces,
            "spans": workload.spans,
            "events": workload.events,
            "event_bytes": workload.event_bytes,
            "records": {name: len(records) for name, records in inputs.items()},
        },
        "environment": environment(PACKAGES),
        "throughput": throughput,
        "memory": memory,
        "targets": {"ratio": TARGET_RATIO, "spans_per_s": TARGET_SPANS_PER_S},
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--traces", type=int, default=4_000, help="traces of the throughput runs")
    parser.add_argument("--open-traces", type=int, default=5_000, help="open traces held (memory)")
    parser.add_argument(
        "--events-per-record", type=int, default=5, help="events per record of the split input"
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the generated traces")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="runs of each implementation on each input, alternating; the median is reported",
    )
    add_run_arguments(parser, quick="500 traces, 800 open, 1 round", timeout=120.0)
    add_profile_arguments(parser, what="profile the tracebus workers")
    internal = parser.add_argument_group("internal (the ceilings in child processes)")
    internal.add_argument("--ceiling", action="store_true", help=argparse.SUPPRESS)
    internal.add_argument("--faust-agent", action="store_true", help=argparse.SUPPRESS)
    internal.add_argument("--bootstrap", help=argparse.SUPPRESS)
    internal.add_argument("--source", help=argparse.SUPPRESS)
    internal.add_argument("--sink", help=argparse.SUPPRESS)
    internal.add_argument("--group", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.traces, args.open_traces, args.timeout, args.rounds = 500, 800, 45.0, 1
    if min(args.traces, args.open_traces, args.events_per_record) < 2:
        parser.error("counts must be at least 2")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    prepare_profile_dir(args, "tracebus-stream-profile-")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.ceiling or args.faust_agent:
        ceiling_main(args)
    config = Config(
        traces=args.traces,
        open_traces=args.open_traces,
        events_per_record=args.events_per_record,
        seed=args.seed,
        timeout_s=args.timeout,
        py_spy=args.py_spy,
        profile_dir=args.profile_dir,
        rounds=args.rounds,
    )
    with children_killed():
        report = run_benchmark(config)
    print_report([throughput_table(report)], summary_lines(report) + profile_lines(report), 160)
    write_json(args.json, report)
    rows = [row for rows in report["throughput"].values() for row in rows.values()]
    return 1 if any("error" in row for row in rows) or "error" in report["memory"] else 0


if __name__ == "__main__":
    sys.exit(main())
