"""Real sink worker processes for the tests, and trace documents to feed them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRecord
from conftest import consume
from standins.langfuse import LangfuseStandIn
from workers import CliWorker

from tracebus.config import KafkaSettings
from tracebus.schemas import TraceDocument, new_observation_id, new_trace_id
from tracebus.schemas.traces import Observation, TraceAttributes, TraceSummary

START = 1_790_000_000_000_000_000


def document(name: str, revision: int = 1, input_value: object = None) -> TraceDocument:
    trace_id, root_id = new_trace_id(), new_observation_id()
    return TraceDocument(
        schema_version=1,
        trace_id=trace_id,
        revision=revision,
        parts=1,
        completed_by="root_ended",
        published_at_unix_nano=START + 10**9,
        trace=TraceAttributes(name=name, user_id="u-1"),
        root_observation_id=root_id,
        observations=[
            Observation(
                observation_id=root_id,
                kind="span",
                name=name,
                start_time_unix_nano=START,
                end_time_unix_nano=START + 5 * 10**8,
                duration_ms=500.0,
                input=input_value,
            )
        ],
        summary=TraceSummary(
            start_time_unix_nano=START,
            end_time_unix_nano=START + 5 * 10**8,
            duration_ms=500.0,
            observation_count=1,
        ),
    )


def of_project(name: str, project: str | None) -> TraceDocument:
    return document(name).model_copy(update={"project": project})


def langfuse_route(project: str, standin: LangfuseStandIn) -> str:
    """A routes-file table sending `project`'s traces to `standin`."""
    return (
        f"[projects.{project}]\n"
        f'langfuse_host = "{standin.url}"\n'
        f'langfuse_public_key = "{standin.public_key}"\n'
        f'langfuse_secret_key = "{standin.secret_key}"\n'
    )


@contextmanager
def project_standins(
    routes: Path, *projects: str, **options: Any
) -> Iterator[list[LangfuseStandIn]]:
    """A Langfuse stand-in per project that accepts that project's keys alone (`options` for
    each), and the routes file `routes` sending each project's traces to its own."""
    with ExitStack() as stack:
        standins = [
            stack.enter_context(LangfuseStandIn(f"pk-{p}", f"sk-{p}", **options)) for p in projects
        ]
        routes.write_text("".join(map(langfuse_route, projects, standins)))
        yield standins


def publish(settings: KafkaSettings, documents: list[TraceDocument]) -> None:
    """Documents on the traces topic as records without headers, as from a stream before it
    stamped their project: sinks then read the project from the document."""
    send_records(
        settings,
        [(d.trace_id.encode(), d.model_dump_json(exclude_none=True).encode()) for d in documents],
    )


def send_records(settings: KafkaSettings, records: list[tuple[bytes, bytes]]) -> None:
    """(key, value) records on the traces topic."""

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
        await producer.start()
        try:
            for key, value in records:
                await producer.send(settings.traces_topic, value, key=key)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(send())


def delivered_traces(standin: LangfuseStandIn) -> set[str]:
    """The traces a Langfuse stand-in has spans of."""
    return {span.key.trace_id for span in standin.spans}


def dead_letters(settings: KafkaSettings, count: int) -> list[ConsumerRecord]:
    """The first `count` records of the dead-letter topic, once it has them."""
    return consume(
        settings.bootstrap_servers, settings.dead_letter_topic, lambda r: len(r) >= count, 60
    )


def sink_group(settings: KafkaSettings) -> str:
    """The sink workers' consumer group in tests: one per set of topics."""
    return f"sink-{settings.traces_topic}"


class SinkProcess(CliWorker):
    """`tracebus sink DESTINATION` in a subprocess, with its log kept for failures."""

    stop_timeout = 40.0

    def __init__(
        self, destination: str, settings: KafkaSettings, log_dir: Path, **env: str
    ) -> None:
        environment = {
            "TRACEBUS_GROUP_ID": sink_group(settings),
            **settings.worker_env(),
            "TRACEBUS_LINGER_MS": "50",
            "TRACEBUS_RETRY_INITIAL_S": "0.1",
            "TRACEBUS_RETRY_MAX_S": "1",
            **env,
        }
        log_path = log_dir / f"sink-{destination}-{uuid.uuid4().hex[:6]}.log"
        super().__init__(["sink", destination], environment, log_path)
