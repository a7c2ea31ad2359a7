"""The background sender: moves buffered events to Kafka, one record per trace per round."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from tracebus.producers.buffer import Entry, EventBuffer
from tracebus.producers.settings import ProducerSettings
from tracebus.schemas import PROJECT_HEADER, encode_batch

log = logging.getLogger("tracebus.producer")
_RECORD_ENVELOPE_BYTES = 128
_FIRST_BACKOFF_S = 0.05


class KafkaSender:
    """Sends until stopped; events leave the buffer only once Kafka has acknowledged them."""

    def __init__(
        self,
        settings: ProducerSettings,
        kafka: dict[str, Any],
        buffer: EventBuffer,
        snapshot: Callable[[Any], bytes | None],
        on_round: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._kafka = kafka  # `kafka_options`: the servers, encryption and authentication
        self._buffer = buffer
        self._snapshot = snapshot
        self._on_round = on_round
        project = settings.project
        self._headers = [(PROJECT_HEADER, project.encode())] if project is not None else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._stopping = False
        self.sent_events = 0
        self.sent_records = 0
        self.coalesced = 0
        self.failed_sends = 0
        self.last_error: str | None = None

    def wake(self) -> None:
        """Skip the rest of the linger time; callable from any thread. A sender waiting to retry
        after a failure keeps waiting, so a busy app cannot turn an outage into a retry storm."""
        self._signal(self._wake)

    def stop(self) -> None:
        """Deliver what is buffered, then stop; callable from any thread."""
        self._stopping = True
        self._signal(self._wake)
        self._signal(self._stop)

    def _signal(self, event: asyncio.Event | None) -> None:
        loop = self._loop
        if loop is not None and event is not None and not event.is_set() and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        producer: AIOKafkaProducer | None = None
        backoff = _FIRST_BACKOFF_S
        try:
            while True:
                if producer is None:
                    producer = await self._connect()
                if producer is not None:
                    if (
                        not self._stopping
                        and self._buffer.queued_bytes < self._settings.batch_max_bytes
                    ):
                        await self._pause(self._wake, self._settings.linger_ms / 1000)
                    entries = self._buffer.take(
                        self._settings.batch_max_bytes, self._settings.batch_max_events
                    )
                    delivered = await self._deliver(producer, entries) if entries else True
                    self._on_round()
                    if not entries and self._stopping:
                        return
                    if delivered:
                        backoff = _FIRST_BACKOFF_S
                        continue
                self._on_round()
                if self._stopping:
                    # close() already spent its flush budget waiting; what is left stays counted.
                    return
                await self._pause(self._stop, backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, self._settings.retry_backoff_max_s)
        finally:
            if producer is not None:
                await producer.stop()
            self._on_round()

    async def _pause(self, until: asyncio.Event | None, seconds: float) -> None:
        assert until is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(until.wait(), seconds)
        if until is self._wake:
            until.clear()

    async def _connect(self) -> AIOKafkaProducer | None:
        settings = self._settings
        producer = AIOKafkaProducer(
            **self._kafka,
            client_id="tracebus-producer",
            acks="all" if settings.acks == "all" else 1,
            compression_type=None if settings.compression == "none" else settings.compression,
            linger_ms=2,
            max_batch_size=max(settings.max_record_bytes, 512 * 1024),
            max_request_size=settings.max_record_bytes + _RECORD_ENVELOPE_BYTES * 8,
            request_timeout_ms=settings.request_timeout_ms,
            enable_idempotence=False,
        )
        try:
            await producer.start()
        except (KafkaError, OSError) as error:
            await producer.stop()
            self._note_failure(f"cannot connect to Kafka at {settings.bootstrap_servers}: {error}")
            return None
        log.info("producer connected to %s", settings.bootstrap_servers)
        return producer

    def _note_failure(self, message: str) -> None:
        self.failed_sends += 1
        if message != self.last_error:
            log.warning("%s; events stay buffered and are retried", message)
        self.last_error = message

    def _records(
        self, entries: list[Entry]
    ) -> tuple[list[tuple[str, bytes, list[Entry]]], list[Entry]]:
        """Group entries by trace into record values; returns the records and the superseded."""
        by_trace: dict[str, list[Entry]] = {}
        superseded: list[Entry] = []
        for entry in entries:
            payload = entry[1]
            if not isinstance(payload, bytes):
                # An open observation: snapshot it now, unless its end snapshot is already queued.
                payload = self._snapshot(payload)
                if payload is None:
                    superseded.append(entry)
                    continue
                entry = (entry[0], payload, entry[2])
            by_trace.setdefault(entry[0], []).append(entry)
        limit = self._settings.max_record_bytes - _RECORD_ENVELOPE_BYTES
        records = []
        for trace_id, group in by_trace.items():
            part: list[Entry] = []
            size = 0
            for entry in group:
                if part and size + len(entry[1]) + 1 > limit:
                    records.append((trace_id, encode_batch(trace_id, [e[1] for e in part]), part))
                    part, size = [], 0
                part.append(entry)
                size += len(entry[1]) + 1
            records.append((trace_id, encode_batch(trace_id, [e[1] for e in part]), part))
        return records, superseded

    async def _deliver(self, producer: AIOKafkaProducer, entries: list[Entry]) -> bool:
        records, superseded = self._records(entries)
        self._buffer.settle(superseded)
        self.coalesced += len(superseded)
        topic, headers = self._settings.events_topic, self._headers
        futures: list[asyncio.Future[Any]] = []
        failed: list[Entry] = []
        error: BaseException | None = None
        for index, (trace_id, value, _) in enumerate(records):
            try:
                futures.append(
                    await producer.send(topic, value, key=trace_id.encode(), headers=headers)
                )
            except (KafkaError, OSError) as send_error:
                error = send_error
                for _, _, part in records[index:]:
                    failed.extend(part)
                records = records[:index]
                break
        results = await asyncio.gather(*futures, return_exceptions=True)
        delivered: list[Entry] = []
        for (_, _, part), result in zip(records, results, strict=True):
            if isinstance(result, BaseException):
                error = result
                failed.extend(part)
            else:
                delivered.extend(part)
                self.sent_records += 1
        self.sent_events += len(delivered)
        self._buffer.settle(delivered)
        if failed:
            self._buffer.requeue(failed)
            self._note_failure(f"sending to {topic} failed: {error!r}")
            return False
        return True
