"""`tracebus up`: the local stack (broker, stream, sinks), optionally with demo traffic."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Annotated

import typer
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from rich.live import Live
from rich.table import Table

from tracebus.cli.broker import print_banner, running_broker
from tracebus.cli.common import (
    DEFAULT_BROKER_HOST,
    DEFAULT_BROKER_PORT,
    DEFAULT_DEAD_LETTER_TOPIC,
    DEFAULT_EVENTS_TOPIC,
    DEFAULT_PARTITIONS,
    DEFAULT_TRACES_TOPIC,
    BrokerHost,
    BrokerPort,
    DeadLetterTopic,
    EventsTopic,
    ExitCode,
    Partitions,
    StopSignals,
    TracesTopic,
    build_settings,
    console,
    fail,
)
from tracebus.cli.demo import DEMO_PANEL, Rate, Seed
from tracebus.cli.supervisor import Child, Supervisor
from tracebus.demo import DemoStats, run_demo
from tracebus.kafka import EmbeddedBroker
from tracebus.ops.topic_reader import offset_bounds
from tracebus.producers import Client, ProducerSettings

REFRESH_S = 0.5
PLAIN_REPORT_EVERY_S = 10.0


class RecordCounter:
    """Records in a topic (sum of its partitions' end offsets), through one kept consumer."""

    def __init__(self, bootstrap_servers: str, topic: str) -> None:
        self._servers = bootstrap_servers
        self._topic = topic
        self._loop = asyncio.new_event_loop()
        self._consumer: AIOKafkaConsumer | None = None

    def count(self) -> int | None:
        """The count, or None when the broker does not answer within a second."""
        try:
            return self._loop.run_until_complete(asyncio.wait_for(self._count(), 1.0))
        except (TimeoutError, KafkaError, OSError):
            return None

    async def _count(self) -> int:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._servers,
                client_id="tracebus-up",
                enable_auto_commit=False,
            )
            await consumer.start()
            self._consumer = consumer
        partitions = self._consumer.partitions_for_topic(self._topic)
        if not partitions:
            await self._consumer.topics()  # refreshes metadata
            partitions = self._consumer.partitions_for_topic(self._topic) or set()
        bounds = await offset_bounds(
            self._consumer,
            [TopicPartition(self._topic, partition) for partition in partitions],
            probe_timeout=0.3,
        )
        return sum(b.end for b in bounds.values())

    def close(self) -> None:
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(asyncio.wait_for(self._consumer.stop(), 2.0))
        self._loop.close()


class DemoThread(threading.Thread):
    """Runs `run_demo` until `stop` is set; keeps the live stats and any crash."""

    def __init__(self, client: Client, rate: float, seed: int, stop: threading.Event) -> None:
        super().__init__(name="tracebus-demo", daemon=True)
        self.client = client
        self.rate = rate
        self.seed = seed
        self.stop_event = stop
        self.stats = DemoStats()
        self.error: BaseException | None = None

    def run(self) -> None:
        def keep(stats: DemoStats) -> None:
            self.stats = stats

        try:
            run_demo(
                self.client,
                None,
                self.rate,
                seed=self.seed,
                on_trace=keep,
                should_stop=self.stop_event.is_set,
                sleep=self.stop_event.wait,
            )
        except Exception as error:  # reported by the main thread, which then shuts down
            self.error = error


class StackView:
    """What the rest of the stack did: traces published by the stream, delivered by sinks."""

    def __init__(self, supervisor: Supervisor, traces: RecordCounter, out: Path) -> None:
        self.supervisor = supervisor
        self.traces = traces
        self.out = out

    def rows(self) -> list[tuple[str, str]]:
        published = self.traces.count()
        rows = [("traces published (stream)", "?" if published is None else f"{published:,}")]
        rows.append((f"traces in {self.out}/", f"{self._jsonl_lines():,}"))
        for child in self.supervisor.children:
            restarts = f", {child.restarts} restarts" if child.restarts else ""
            rows.append((f"process {child.name}", f"{child.state}{restarts}"))
        return rows

    def _jsonl_lines(self) -> int:
        return sum(f.read_bytes().count(b"\n") for f in self.out.glob("*.jsonl"))


def _summary(
    started: float,
    records: int | None,
    events_topic: str,
    demo: DemoThread | None,
    status: str,
    stack: StackView | None = None,
) -> Table:
    table = Table(title=f"tracebus up — {status}", show_header=False, min_width=56)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("uptime", f"{time.monotonic() - started:,.0f}s")
    if demo is not None:
        stats = demo.stats
        counters = demo.client.counters
        table.add_row("demo traces sent", f"{stats.traces:,}")
        table.add_row("  failed (ERROR)", f"{stats.failed_traces:,}")
        table.add_row("events accepted", f"{counters.accepted:,}")
        table.add_row("events sent", f"{counters.sent:,}")
        table.add_row("events coalesced", f"{counters.coalesced:,}")
        table.add_row("events buffered", f"{counters.buffered:,}")
        table.add_row("events dropped", f"{counters.dropped:,}")
        if counters.last_error:
            table.add_row("last producer error", counters.last_error)
    shown = "?" if records is None else f"{records:,}"
    table.add_row(f"records in {events_topic}", shown)
    for what, value in stack.rows() if stack is not None else ():
        table.add_row(what, value)
    return table


def _plain(records: int | None, demo: DemoThread | None) -> str:
    parts = [f"records={'?' if records is None else records}"]
    if demo is not None:
        counters = demo.client.counters
        parts[:0] = [
            f"traces={demo.stats.traces}",
            f"accepted={counters.accepted}",
            f"sent={counters.sent}",
            f"buffered={counters.buffered}",
            f"dropped={counters.dropped}",
        ]
    return "up: " + " ".join(parts)


def up(
    demo: Annotated[
        bool,
        typer.Option(
            "--demo/--no-demo",
            help="Also send demo LLM-app traffic continuously.",
            rich_help_panel=DEMO_PANEL,
        ),
    ] = False,
    rate: Rate = 20.0,
    seed: Seed = 0,
    duration: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            metavar="SECONDS",
            help="Stop after this many seconds (default: run until Ctrl-C or SIGTERM).",
        ),
    ] = None,
    port: BrokerPort = DEFAULT_BROKER_PORT,
    host: BrokerHost = DEFAULT_BROKER_HOST,
    partitions: Partitions = DEFAULT_PARTITIONS,
    events_topic: EventsTopic = DEFAULT_EVENTS_TOPIC,
    traces_topic: TracesTopic = DEFAULT_TRACES_TOPIC,
    dead_letter_topic: DeadLetterTopic = DEFAULT_DEAD_LETTER_TOPIC,
    out: Annotated[
        Path,
        typer.Option(
            envvar="TRACEBUS_JSONL_DIR", help="Where the jsonl sink writes complete traces."
        ),
    ] = Path("tracebus-data/traces"),
) -> None:
    """Start the local stack: embedded broker, stream worker and sinks; demo traffic with --demo.

    The jsonl sink always runs; the Langfuse sink joins when TRACEBUS_LANGFUSE_PUBLIC_KEY and
    TRACEBUS_LANGFUSE_SECRET_KEY are set, the LangSmith sink when TRACEBUS_LANGSMITH_API_KEY
    is. Crashed processes are restarted with back-off. Shows a live summary until Ctrl-C or
    SIGTERM, then stops everything cleanly.
    """
    settings = build_settings(
        ProducerSettings,
        bootstrap_servers=f"{host}:{port}",
        events_topic=events_topic,
        traces_topic=traces_topic,
        dead_letter_topic=dead_letter_topic,
        partitions=partitions,
    )
    with StopSignals() as stop:
        try:
            with running_broker(host, port, settings) as broker:
                print_banner(broker, settings)
                supervisor = _start_stack(settings, out)
                try:
                    _serve(broker, settings, stop, demo, rate, seed, duration, supervisor, out)
                finally:
                    supervisor.stop()
        except KeyboardInterrupt:
            fail("interrupted twice: stopped without waiting", ExitCode.INTERRUPTED)
    console.print(f"stopped ({stop.received or 'duration reached'})")


def _start_stack(settings: ProducerSettings, out: Path) -> Supervisor:
    children = [
        Child("stream", ["stream"]),
        Child("sink-jsonl", ["sink", "jsonl", "--out", str(out)]),
    ]
    destinations = [f"{out}/ (jsonl)"]
    if os.environ.get("TRACEBUS_LANGFUSE_PUBLIC_KEY") and os.environ.get(
        "TRACEBUS_LANGFUSE_SECRET_KEY"
    ):
        children.append(Child("sink-langfuse", ["sink", "langfuse"]))
        destinations.append("Langfuse")
    if os.environ.get("TRACEBUS_LANGSMITH_API_KEY"):
        children.append(Child("sink-langsmith", ["sink", "langsmith"]))
        destinations.append("LangSmith")
    supervisor = Supervisor(
        children,
        {
            "TRACEBUS_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
            "TRACEBUS_EVENTS_TOPIC": settings.events_topic,
            "TRACEBUS_TRACES_TOPIC": settings.traces_topic,
            "TRACEBUS_DEAD_LETTER_TOPIC": settings.dead_letter_topic,
            "TRACEBUS_PARTITIONS": str(settings.partitions),
        },
    )
    supervisor.start()
    console.print(f"complete traces go to: {', '.join(destinations)}")
    if len(destinations) == 1:
        console.print(
            "(set TRACEBUS_LANGFUSE_PUBLIC_KEY/SECRET_KEY or TRACEBUS_LANGSMITH_API_KEY "
            "to deliver to Langfuse or LangSmith too)"
        )
    return supervisor


def _serve(
    broker: EmbeddedBroker,
    settings: ProducerSettings,
    stop: StopSignals,
    with_demo: bool,
    rate: float,
    seed: int,
    duration: float | None,
    supervisor: Supervisor,
    out: Path,
) -> None:
    started = time.monotonic()
    deadline = None if duration is None else started + duration
    counter = RecordCounter(broker.bootstrap_servers, settings.events_topic)
    stack = StackView(
        supervisor, RecordCounter(broker.bootstrap_servers, settings.traces_topic), out
    )
    demo: DemoThread | None = None
    if with_demo:
        demo = DemoThread(Client(settings), rate, seed, stop.event)
        demo.start()
        console.print(f"demo traffic: {rate:g} traces/s into {settings.events_topic}")
    interactive = console.is_terminal
    problem: str | None = None
    delivered = True
    try:
        live = (
            Live(
                _summary(started, 0, settings.events_topic, demo, "running"),
                console=console,
                auto_refresh=False,
            )
            if interactive
            else None
        )
        with live if live is not None else contextlib.nullcontext():
            last_report = started
            while True:
                now = time.monotonic()
                wait = REFRESH_S if deadline is None else max(0.0, min(REFRESH_S, deadline - now))
                if stop.event.wait(wait) or (deadline is not None and time.monotonic() >= deadline):
                    break
                if not broker.running:
                    problem = f"the broker stopped unexpectedly: {broker.log_tail()}"
                    break
                if demo is not None and demo.error is not None:
                    problem = f"demo traffic failed: {demo.error!r}"
                    break
                supervisor.poll()
                records = counter.count()
                if live is not None:
                    summary = _summary(
                        started, records, settings.events_topic, demo, "running", stack
                    )
                    live.update(summary, refresh=True)
                elif time.monotonic() - last_report >= PLAIN_REPORT_EVERY_S:
                    console.print(_plain(records, demo))
                    last_report = time.monotonic()
            stop.event.set()  # also stops the demo thread
            if demo is not None:
                if live is not None:
                    summary = _summary(started, None, settings.events_topic, demo, "flushing")
                    live.update(summary, refresh=True)
                demo.join(10.0)
                delivered = demo.client.close(10.0 if problem is None else 2.0)
            final = _summary(
                started, counter.count(), settings.events_topic, demo, "stopped", stack
            )
            if live is not None:
                live.update(final, refresh=True)
    finally:
        if demo is not None:
            demo.client.close(1.0)
        counter.close()
        stack.traces.close()
    if live is None:
        console.print(final)
    if problem is not None:
        fail(problem, ExitCode.USAGE)
    if demo is not None and not delivered:
        counters = demo.client.counters
        fail(
            f"{counters.buffered:,} demo events were not acknowledged before shutdown "
            f"(last error: {counters.last_error})",
            ExitCode.UNREACHABLE,
        )
