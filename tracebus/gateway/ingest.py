"""The gateway's way into Kafka: validate translated events, write them one record per trace,
and return only once Kafka has acknowledged every record."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from tracebus.gateway.protocol import Caller, GatewayError
from tracebus.gateway.settings import GatewaySettings
from tracebus.kafka.connection import kafka_options
from tracebus.schemas import (
    PROJECT_HEADER,
    EventTooLarge,
    Limits,
    SchemaError,
    encode_batch,
    serialize_event,
    validate_event,
)

log = logging.getLogger("tracebus.gateway")
_ENVELOPE_BYTES = 128
_RECONNECT_S = 2.0


class KafkaPublisher:
    """Keeps one producer connected (reconnecting in the background) and publishes through it."""

    def __init__(self, settings: GatewaySettings) -> None:
        self._settings = settings
        self._event_limit = settings.max_record_bytes - _ENVELOPE_BYTES
        defaults = Limits()
        self._limits = Limits(
            max_field_bytes=min(defaults.max_field_bytes, self._event_limit // 2),
            max_event_bytes=min(defaults.max_event_bytes, self._event_limit),
        )
        self._producer: AIOKafkaProducer | None = None
        self._connecting: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._producer is not None

    async def start(self) -> None:
        """Connect now if Kafka answers, else keep trying in the background; requests meanwhile
        get 503, so the gateway can start before the broker."""
        self._connecting = asyncio.create_task(self._connect_until_done())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._connecting), self._settings.ack_timeout_s)

    async def stop(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def _connect_until_done(self) -> None:
        settings = self._settings
        while True:
            producer = AIOKafkaProducer(
                **kafka_options(settings.bootstrap_servers),
                client_id="tracebus-gateway",
                acks="all",
                compression_type="lz4",
                linger_ms=2,
                max_batch_size=max(settings.max_record_bytes, 512 * 1024),
                max_request_size=settings.max_record_bytes + _ENVELOPE_BYTES * 8,
                request_timeout_ms=int(settings.ack_timeout_s * 1000),
                enable_idempotence=False,
            )
            try:
                await producer.start()
            except (KafkaError, OSError) as error:
                await producer.stop()
                log.warning("Kafka not reachable yet (%s); retrying", type(error).__name__)
                await asyncio.sleep(_RECONNECT_S)
                continue
            self._producer = producer
            log.info("gateway connected to Kafka")
            return

    def problem(self, event: dict[str, Any]) -> str | None:
        """Also cuts `event`'s oversized fields in place, recording each cut, the way the
        producer SDK does: every protocol gets the same limits."""
        try:
            # Raises EventTooLarge past the limits, which fit an event into one record.
            serialize_event(event, self._limits)
            validate_event(event)
        except (EventTooLarge, SchemaError) as error:
            return str(error)
        return None

    async def publish(self, events: Sequence[dict[str, Any]], caller: Caller) -> None:
        if not events:
            return
        producer = self._producer
        if producer is None:
            raise self._unavailable("the gateway is not connected to Kafka yet")
        headers = [(PROJECT_HEADER, caller.project.encode())]
        topic = self._settings.events_topic
        try:
            async with asyncio.timeout(self._settings.ack_timeout_s):
                pending = [
                    await producer.send(topic, value, key=trace_id.encode(), headers=headers)
                    for trace_id, value in self._records(events)
                ]
                await asyncio.gather(*pending)
        except (KafkaError, OSError, TimeoutError) as error:
            raise self._unavailable(f"Kafka did not acknowledge the events ({error!r})") from None

    def _records(self, events: Sequence[dict[str, Any]]) -> list[tuple[str, bytes]]:
        """Events grouped by trace in arrival order, packed into records under the size limit
        (each event, having passed `problem`, fits one record on its own)."""
        by_trace: dict[str, list[bytes]] = {}
        for event in events:
            by_trace.setdefault(event["trace_id"], []).append(orjson.dumps(event))
        limit = self._event_limit
        records: list[tuple[str, bytes]] = []
        for trace_id, encoded in by_trace.items():
            part: list[bytes] = []
            size = 0
            for event in encoded:
                if part and size + len(event) + 1 > limit:
                    records.append((trace_id, encode_batch(trace_id, part)))
                    part, size = [], 0
                part.append(event)
                size += len(event) + 1
            records.append((trace_id, encode_batch(trace_id, part)))
        return records

    def _unavailable(self, reason: str) -> GatewayError:
        return GatewayError(
            503, f"{reason}; retry later", retry_after_s=self._settings.retry_after_s
        )
