"""Shared fixtures: one real embedded broker per test session, fresh topics per test."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from kafka_proxy import KafkaProxy
from workers import CliWorker

from tracebus.config import KafkaSettings
from tracebus.kafka import EmbeddedBroker, create_topics
from tracebus.kafka.broker import free_port
from tracebus.schemas import EventBatch, decode_batch


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test's report carries the log tails of the worker processes it started, since
    CI keeps nothing else of them."""
    report = yield
    if report.failed:
        for worker in CliWorker.started:
            report.sections.append((f"worker log {worker.log_path.name}", worker.log_tail(80)))
    if report.when == "teardown":
        CliWorker.started.clear()
    return report


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    embedded = EmbeddedBroker(port=free_port())
    embedded.start()
    yield embedded
    embedded.stop()


@pytest.fixture(scope="module")
def proxied() -> Iterator[tuple[KafkaProxy, EmbeddedBroker]]:
    """A broker of its own that every client reaches through a proxy the test controls."""
    port = free_port()
    with KafkaProxy(f"127.0.0.1:{port}") as proxy:
        broker = EmbeddedBroker(port=port, advertised=proxy.address)
        with broker:
            yield proxy, broker


def fresh_settings(bootstrap_servers: str, partitions: int = 4) -> KafkaSettings:
    """Settings with newly created topics of their own, so tests never see each other's data."""
    suffix = uuid.uuid4().hex[:8]
    settings = KafkaSettings(
        bootstrap_servers=bootstrap_servers,
        events_topic=f"events-{suffix}",
        traces_topic=f"traces-{suffix}",
        dead_letter_topic=f"deadletter-{suffix}",
        partitions=partitions,
    )
    asyncio.run(create_topics(bootstrap_servers, settings.topic_partitions()))
    return settings


@pytest.fixture
def kafka(broker: EmbeddedBroker) -> KafkaSettings:
    """Settings pointing at the session broker, with topics of this test's own."""
    return fresh_settings(broker.bootstrap_servers)


def consume(
    bootstrap_servers: str,
    topic: str,
    until: Callable[[list[ConsumerRecord]], bool],
    timeout: float = 20.0,
) -> list[ConsumerRecord]:
    """Read `topic` from the start until `until(records)` holds; fail at the timeout."""

    async def read() -> list[ConsumerRecord]:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap_servers,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout
        try:
            while not until(records):
                if time.monotonic() > deadline:
                    raise AssertionError(f"condition not met within {timeout}s: {records!r:.2000}")
                for partition_records in (await consumer.getmany(timeout_ms=200)).values():
                    records.extend(partition_records)
        finally:
            await consumer.stop()
        return records

    return asyncio.run(read())


def read_records(
    settings: KafkaSettings,
    until: Callable[[list[EventBatch]], bool],
    timeout: float = 20.0,
) -> list[tuple[bytes, EventBatch]]:
    """Event batches of the events topic, with their keys, until `until(batches)` holds."""
    decoded: dict[int, EventBatch] = {}

    def batches(records: list[ConsumerRecord]) -> list[EventBatch]:
        return [decoded.setdefault(id(r), decode_batch(r.value)) for r in records]

    records = consume(
        settings.bootstrap_servers, settings.events_topic, lambda r: until(batches(r)), timeout
    )
    return [(record.key, batch) for record, batch in zip(records, batches(records), strict=True)]


def read_batches(
    settings: KafkaSettings,
    until: Callable[[list[EventBatch]], bool],
    timeout: float = 20.0,
) -> list[EventBatch]:
    """Consume the events topic from the start until `until(batches)` holds; fail at timeout."""
    return [batch for _, batch in read_records(settings, until, timeout)]


def eventually(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll an observer outside this process (a stand-in, a file, a metrics endpoint) until
    `condition` holds; fail naming `what` at the timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
