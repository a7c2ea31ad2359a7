"""`tracebus topics create|describe`: the tracebus topics on a Kafka cluster."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import typer
from aiokafka.errors import KafkaError
from rich.table import Table

from tracebus.cli.common import (
    DEFAULT_BOOTSTRAP_SERVERS,
    DEFAULT_DEAD_LETTER_TOPIC,
    DEFAULT_EVENTS_TOPIC,
    DEFAULT_PARTITIONS,
    DEFAULT_TIMEOUT,
    DEFAULT_TRACES_TOPIC,
    BootstrapServers,
    DeadLetterTopic,
    EventsTopic,
    ExitCode,
    Partitions,
    Timeout,
    TracesTopic,
    build_settings,
    console,
    fail,
    require_broker,
    safe_servers,
)
from tracebus.config import KafkaSettings
from tracebus.kafka import TopicCreationError, create_topics, describe_topics

T = TypeVar("T")

app = typer.Typer(
    help="Create or inspect the tracebus topics (events, traces, dead letter) on Kafka.",
    no_args_is_help=True,
)


@dataclass(frozen=True)
class TopicRow:
    name: str
    expected: int
    partitions: int | None  # None: the topic does not exist
    error: str | None = None
    replicas: int | None = None

    @property
    def ok(self) -> bool:
        return self.partitions is not None and self.error is None


async def topic_rows(settings: KafkaSettings) -> list[TopicRow]:
    expected = settings.topic_partitions()
    infos = await describe_topics(settings.bootstrap_servers, list(expected))
    return [TopicRow(i.name, expected[i.name], i.partitions, i.error, i.replicas) for i in infos]


def _table(rows: list[TopicRow], created: set[str], bootstrap_servers: str) -> Table:
    table = Table(title=f"tracebus topics on {safe_servers(bootstrap_servers)}")
    table.add_column("topic")
    table.add_column("partitions", justify="right")
    table.add_column("replicas", justify="right")
    table.add_column("status")
    for row in rows:
        if row.error is not None:
            status = f"[red]{row.error}[/red]"
        elif row.partitions is None:
            status = "[red]missing[/red] (run `tracebus topics create`)"
        elif row.name in created:
            status = "[green]created[/green]"
        elif row.partitions != row.expected:
            status = f"[yellow]ok, configured for {row.expected}[/yellow]"
        else:
            status = "[green]ok[/green]"
        partitions = "-" if row.partitions is None else str(row.partitions)
        replicas = "-" if row.replicas is None else str(row.replicas)
        table.add_row(row.name, partitions, replicas, status)
    return table


def _settings(
    bootstrap_servers: str,
    events_topic: str,
    traces_topic: str,
    dead_letter_topic: str,
    partitions: int,
    replication_factor: int = 1,
) -> KafkaSettings:
    return build_settings(
        KafkaSettings,
        bootstrap_servers=bootstrap_servers,
        events_topic=events_topic,
        traces_topic=traces_topic,
        dead_letter_topic=dead_letter_topic,
        partitions=partitions,
        replication_factor=replication_factor,
    )


def _run_admin(work: Callable[[], Coroutine[Any, Any, T]], bootstrap_servers: str) -> T:
    try:
        return asyncio.run(work())
    except (ConnectionError, KafkaError, OSError) as error:
        fail(
            f"cannot talk to Kafka at {safe_servers(bootstrap_servers)}: {error}",
            ExitCode.UNREACHABLE,
        )


@app.command(
    "create",
    epilog="Example: [cyan]tracebus topics create -b kafka-1:9092 --partitions 24 "
    "--replication-factor 3[/cyan]",
)
def create(
    bootstrap_servers: BootstrapServers = DEFAULT_BOOTSTRAP_SERVERS,
    partitions: Partitions = DEFAULT_PARTITIONS,
    replication_factor: Annotated[
        int,
        typer.Option(
            envvar="TRACEBUS_REPLICATION_FACTOR",
            min=1,
            help="Replicas of each topic: 1 for a single broker, 3 on a production cluster.",
        ),
    ] = 1,
    events_topic: EventsTopic = DEFAULT_EVENTS_TOPIC,
    traces_topic: TracesTopic = DEFAULT_TRACES_TOPIC,
    dead_letter_topic: DeadLetterTopic = DEFAULT_DEAD_LETTER_TOPIC,
    timeout: Timeout = DEFAULT_TIMEOUT,
) -> None:
    """Create the tracebus topics that are missing; existing ones are left as they are."""
    settings = _settings(
        bootstrap_servers,
        events_topic,
        traces_topic,
        dead_letter_topic,
        partitions,
        replication_factor,
    )
    require_broker(settings.bootstrap_servers, timeout)

    async def create_and_describe() -> tuple[list[str], list[TopicRow]]:
        created = await create_topics(
            settings.bootstrap_servers, settings.topic_partitions(), settings.replication_factor
        )
        return created, await topic_rows(settings)

    try:
        created, rows = _run_admin(create_and_describe, settings.bootstrap_servers)
    except TopicCreationError as error:
        fail(str(error), ExitCode.CHECK_FAILED)
    console.print(_table(rows, set(created), settings.bootstrap_servers))
    if not all(row.ok for row in rows):
        fail("some topics could not be created (see the table)", ExitCode.CHECK_FAILED)


@app.command(
    "describe",
    epilog="Example: [cyan]TRACEBUS_BOOTSTRAP_SERVERS=kafka-1:9092 tracebus topics describe[/cyan]"
    "\n\nExits with code 1 when a topic is missing.",
)
def describe(
    bootstrap_servers: BootstrapServers = DEFAULT_BOOTSTRAP_SERVERS,
    partitions: Partitions = DEFAULT_PARTITIONS,
    events_topic: EventsTopic = DEFAULT_EVENTS_TOPIC,
    traces_topic: TracesTopic = DEFAULT_TRACES_TOPIC,
    dead_letter_topic: DeadLetterTopic = DEFAULT_DEAD_LETTER_TOPIC,
    timeout: Timeout = DEFAULT_TIMEOUT,
) -> None:
    """Show each tracebus topic with its partition count and status."""
    settings = _settings(
        bootstrap_servers, events_topic, traces_topic, dead_letter_topic, partitions
    )
    require_broker(settings.bootstrap_servers, timeout)
    rows = _run_admin(lambda: topic_rows(settings), settings.bootstrap_servers)
    console.print(_table(rows, set(), settings.bootstrap_servers))
    missing = [row.name for row in rows if not row.ok]
    if missing:
        fail(
            f"missing or failing topics: {', '.join(missing)}; create them with "
            "`tracebus topics create`",
            ExitCode.CHECK_FAILED,
        )
