"""`tracebus demo`: realistic LLM-app traffic through the producer SDK into Kafka."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Annotated

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
    StopSignals,
    Timeout,
    TracesTopic,
    build_settings,
    console,
    fail,
    progress_bar,
    require_broker,
    safe_servers,
)
from tracebus.demo import DemoStats, run_demo
from tracebus.kafka import create_topics
from tracebus.producers import Client, ProducerCounters, ProducerSettings

DEMO_PANEL = "Demo"

Rate = Annotated[
    float,
    typer.Option(
        "--rate",
        "-r",
        min=0.0,
        metavar="R/s",
        help="Traces per second; 0 sends as fast as possible.",
        rich_help_panel=DEMO_PANEL,
    ),
]
Seed = Annotated[
    int,
    typer.Option(
        help="Seed of the generated content: same seed, same runs.", rich_help_panel=DEMO_PANEL
    ),
]


def counters_table(counters: ProducerCounters, title: str = "producer counters") -> Table:
    table = Table(title=title)
    table.add_column("counter")
    table.add_column("value", justify="right")
    for field in dataclasses.fields(counters):
        value = getattr(counters, field.name)
        if value is None:
            continue
        table.add_row(field.name, f"{value:,}" if isinstance(value, int) else str(value))
    return table


def stats_table(stats: DemoStats, title: str = "demo traffic") -> Table:
    table = Table(title=title)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("traces", f"{stats.traces:,}")
    table.add_row("failed traces (ERROR)", f"{stats.failed_traces:,}")
    table.add_row("traces with a WARNING", f"{stats.warnings:,}")
    table.add_row("observations", f"{stats.observations:,}")
    table.add_row("generations", f"{stats.generations:,}")
    table.add_row("scores", f"{stats.scores:,}")
    table.add_row("tokens in / out", f"{stats.input_tokens:,} / {stats.output_tokens:,}")
    table.add_row("simulated cost", f"${stats.cost_usd:,.4f}")
    for app, count in sorted(stats.apps.items()):
        table.add_row(f"  app {app}", f"{count:,}")
    return table


def demo(
    traces: Annotated[
        int,
        typer.Option("--traces", "-n", min=1, help="Traces to send.", rich_help_panel=DEMO_PANEL),
    ] = 100,
    rate: Rate = 50.0,
    seed: Seed = 0,
    bootstrap_servers: BootstrapServers = DEFAULT_BOOTSTRAP_SERVERS,
    partitions: Partitions = DEFAULT_PARTITIONS,
    events_topic: EventsTopic = DEFAULT_EVENTS_TOPIC,
    traces_topic: TracesTopic = DEFAULT_TRACES_TOPIC,
    dead_letter_topic: DeadLetterTopic = DEFAULT_DEAD_LETTER_TOPIC,
    timeout: Timeout = DEFAULT_TIMEOUT,
    flush_timeout: Annotated[
        float,
        typer.Option(
            min=0.0, help="Seconds to wait for Kafka to acknowledge every event at the end."
        ),
    ] = 15.0,
) -> None:
    """Send realistic LLM-app traces (workflows with LLM calls, tools, retrieval, agents) to Kafka.

    Missing topics are created first. Other producer settings (compression, sampling,
    environment, ...) come from their TRACEBUS_* variables.
    """
    settings = build_settings(
        ProducerSettings,
        bootstrap_servers=bootstrap_servers,
        events_topic=events_topic,
        traces_topic=traces_topic,
        dead_letter_topic=dead_letter_topic,
        partitions=partitions,
    )
    require_broker(settings.bootstrap_servers, timeout)
    try:
        asyncio.run(create_topics(settings.bootstrap_servers, settings.topic_partitions()))
    except (ConnectionError, KafkaError, OSError) as error:
        fail(f"cannot create topics: {error}", ExitCode.UNREACHABLE)

    client = Client(settings)
    target = safe_servers(settings.bootstrap_servers)
    pace = f"{rate:g}/s" if rate else "max rate"
    with (
        StopSignals() as stop,
        progress_bar() as progress,
    ):
        task = progress.add_task(f"demo traces → {settings.events_topic} ({pace})", total=traces)
        stats = run_demo(
            client,
            traces,
            rate,
            seed=seed,
            on_trace=lambda _: progress.advance(task),
            should_stop=stop.event.is_set,
            sleep=stop.event.wait,
        )
        progress.update(task, description=f"flushing to {target}")
        delivered = client.close(flush_timeout)
        progress.update(task, description=f"sent to {settings.events_topic} on {target}")
    counters = client.counters
    console.print(stats_table(stats))
    console.print(counters_table(counters))
    if stop.received:
        console.print(f"stopped by {stop.received} after {stats.traces} of {traces} traces")
    if not delivered:
        fail(
            f"{counters.buffered:,} events were not acknowledged by Kafka within "
            f"{flush_timeout:g}s (last error: {counters.last_error})",
            ExitCode.UNREACHABLE,
        )
