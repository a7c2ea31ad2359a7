"""Helpers of the dead-letter and status tests: letters as the stream and sinks write them,
committed offsets of a consumer group, Prometheus endpoints with tracebus metrics."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry, start_http_server

from tracebus.config import KafkaSettings
from tracebus.sinks.metrics import SinkMetricFamilies, SinkMetrics
from tracebus.streams.metrics import StreamMetrics


@dataclass(frozen=True)
class Letter:
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def stream_letter(
    settings: KafkaSettings,
    trace_id: str,
    partition: int,
    offset: int,
    reason: str = "malformed JSON: expected value at line 1 column 1",
    value: bytes = b"not json at all",
) -> Letter:
    """A dead letter as `tracebus.streams.app` writes it."""
    return Letter(
        trace_id.encode(),
        value,
        [
            ("tracebus-reason", reason.encode()),
            ("tracebus-source", f"{settings.events_topic}/{partition}/{offset}".encode()),
            ("tracebus-stage", b"stream"),
        ],
    )


def sink_letter(
    settings: KafkaSettings,
    sink: str,
    trace_id: str,
    partition: int,
    offset: int,
    status: int = 400,
    response: str = '{"error":"invalid span","field":"start_time"}',
    reason: str = "rejected by the destination: invalid span",
) -> Letter:
    """A dead letter as `tracebus.sinks.runtime` writes it."""
    return Letter(
        trace_id.encode(),
        f'{{"trace_id":"{trace_id}","revision":1}}'.encode(),
        [
            ("tracebus-reason", reason.encode()),
            ("tracebus-stage", f"sink:{sink}".encode()),
            ("tracebus-status", str(status).encode()),
            ("tracebus-response", response.encode()),
            ("tracebus-source", f"{settings.traces_topic}/{partition}/{offset}".encode()),
        ],
    )


def write_letters(settings: KafkaSettings, letters: list[Letter]) -> list[int]:
    """Append `letters` to the dead-letter topic, in order; returns their offsets."""

    async def write() -> list[int]:
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
        await producer.start()
        try:
            sent = [
                await producer.send(
                    settings.dead_letter_topic,
                    letter.value,
                    key=letter.key,
                    partition=0,
                    headers=letter.headers,
                )
                for letter in letters
            ]
            return [(await future).offset for future in sent]
        finally:
            await producer.stop()

    return asyncio.run(write())


def write_records(bootstrap_servers: str, topic: str, per_partition: dict[int, int]) -> None:
    """`count` plain records into each partition of `topic`."""

    async def write() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
        await producer.start()
        try:
            for partition, count in per_partition.items():
                for i in range(count):
                    await producer.send(topic, f"r{i}".encode(), partition=partition)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(write())


def commit_offsets(bootstrap_servers: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    """Commit `offsets` for `group`, as a consumer of that group would after reading."""

    async def commit() -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            consumer.assign(list(offsets))
            await consumer.commit(offsets)
        finally:
            await consumer.stop()

    asyncio.run(commit())


def end_offsets(bootstrap_servers: str, topic: str, partitions: int) -> dict[int, int]:
    async def fetch() -> dict[int, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers)
        await consumer.start()
        try:
            ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
            return {tp.partition: offset for tp, offset in ends.items()}
        finally:
            await consumer.stop()

    return asyncio.run(fetch())


@contextlib.contextmanager
def metrics_endpoint(registry: CollectorRegistry) -> Iterator[str]:
    """Serve `registry` over HTTP like a worker's --metrics-port; yields `127.0.0.1:PORT`."""
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield f"127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def routed_sink_registry(destination: str = "langfuse") -> CollectorRegistry:
    """The metrics of a sink with a route for project shop: its own destination delivered 5
    traces; shop's 7, dead-lettered 2, and is failing."""
    families = SinkMetricFamilies()
    own = SinkMetrics(destination, families)
    shop = SinkMetrics(destination, families, "shop")
    own.delivered.inc(5)
    shop.delivered.inc(7)
    shop.dead_letter("rejected", 2)
    shop.failing.set(1)
    return families.registry


def worker_registry() -> tuple[CollectorRegistry, StreamMetrics, SinkMetrics]:
    """One registry with a stream's and a Langfuse sink's metrics, as `tracebus up` could have."""
    registry = CollectorRegistry()
    stream = StreamMetrics(registry)
    sink = SinkMetrics("langfuse", SinkMetricFamilies(registry))
    stream.records.inc(120)
    stream.dead_letters.labels("invalid").inc(2)
    stream.dead_letters.labels("internal").inc(1)
    stream.open_traces.set(7)
    sink.records.inc(40)
    sink.delivered.inc(38)
    sink.retries.inc(5)
    sink.dead_letter("rejected", 2)
    sink.pending.set(3)
    return registry, stream, sink
