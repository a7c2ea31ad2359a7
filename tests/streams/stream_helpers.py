"""Real stream worker processes for the tests, what they read, and readers of what they
publish."""

from __future__ import annotations

import asyncio
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer
from conftest import consume, eventually
from whereabouts import stream_app_id
from workers import CliWorker

import tracebus
from tracebus.config import KafkaSettings
from tracebus.schemas import TraceDocument

WORKER_ENV = {
    "TRACEBUS_GRACE_S": "0.3",
    "TRACEBUS_IDLE_TIMEOUT_S": "2",
    "TRACEBUS_LATE_WINDOW_S": "120",
    "TRACEBUS_MAX_OBSERVATIONS": "20",
    "TRACEBUS_TICK_S": "0.1",
}


class WorkerProcess(CliWorker):
    """`tracebus stream` in a subprocess, with its log kept for failures."""

    def __init__(self, settings: KafkaSettings, log_dir: Path, **env: str) -> None:
        environment = {
            **WORKER_ENV,
            **env,
            "TRACEBUS_APP_ID": stream_app_id(settings),
            **settings.worker_env(),
        }
        super().__init__(["stream"], environment, log_dir / f"stream-{uuid.uuid4().hex[:6]}.log")


def send_trace(client: tracebus.Client, name: str) -> str:
    """Send a finished trace (a root and one step) and wait until the broker has it; its id."""
    with client.trace(name) as root, client.span("step"):
        pass
    assert client.flush(10)
    return root.trace_id


def send_raw(
    settings: KafkaSettings,
    records: list[tuple[bytes | None, bytes]],
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    """Send event records (key, value) to the events topic as they are, in order, each with
    `headers`."""

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
        await producer.start()
        try:
            for key, value in records:
                await producer.send(settings.events_topic, value, key=key, headers=headers)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(send())


def read_documents(
    settings: KafkaSettings,
    until: Callable[[list[TraceDocument]], bool],
    timeout: float = 60.0,
) -> list[TraceDocument]:
    """Trace documents on the traces topic, until `until(documents)` holds."""
    decoded: dict[int, TraceDocument] = {}

    def documents(records: list) -> list[TraceDocument]:  # type: ignore[type-arg]
        return [
            decoded.setdefault(id(r), TraceDocument.model_validate(orjson.loads(r.value)))
            for r in records
        ]

    records = consume(
        settings.bootstrap_servers, settings.traces_topic, lambda r: until(documents(r)), timeout
    )
    return documents(records)


def of_traces(trace_ids: set[str], revisions: int = 1) -> Callable[[list[TraceDocument]], bool]:
    """Until every trace in `trace_ids` has been published at `revisions` or more."""

    def done(documents: list[TraceDocument]) -> bool:
        best = {}
        for d in documents:
            if d.trace_id in trace_ids and d.part == d.parts:
                best[d.trace_id] = max(best.get(d.trace_id, 0), d.revision)
        return len(best) == len(trace_ids) and min(best.values()) >= revisions

    return done


def metric(port: int, name: str) -> float:
    """The sum of a metric's samples on a worker's Prometheus endpoint (0 when unreachable)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return 0.0
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def poll_metric(port: int, name: str, at_least: float, timeout: float) -> None:
    eventually(lambda: metric(port, name) >= at_least, timeout, f"{name} ≥ {at_least}")
