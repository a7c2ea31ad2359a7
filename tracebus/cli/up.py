"""`tracebus up`: the local stack (broker, stream, sinks, gateway), optionally with demo
traffic, and a live summary of what it did."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import orjson
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
from tracebus.cli.sink import Destination, unconfigured
from tracebus.cli.supervisor import Child, Supervisor
from tracebus.demo import DemoStats, run_demo
from tracebus.kafka import EmbeddedBroker
from tracebus.kafka.broker import free_port
from tracebus.kafka.connection import KafkaSecurity, kafka_options
from tracebus.ops.scrape import WORKER_METRICS, Snapshot, scrape
from tracebus.ops.topic_reader import FETCH_WAIT_MS, offset_bounds
from tracebus.producers import Client, ProducerSettings

STREAM = "stream"
SINK_PREFIX = "sink-"
GATEWAY = "gateway"
REFRESH_S = 0.5
PLAIN_REPORT_EVERY_S = 10.0
SCRAPE_TIMEOUT_S = 0.5
DEFAULT_GATEWAY_PORT = 4318
LOCALHOST = "127.0.0.1"
_COUNTERS = {metric.label for metric in WORKER_METRICS if metric.counter}


class Probe:
    """What `up` reads from the running stack, on one event loop of its own: record counts
    through a kept group-less consumer per topic (a consumer's metadata narrows to the topic it
    was last assigned), worker metrics through one kept HTTP client."""

    def __init__(self, bootstrap_servers: str) -> None:
        self._servers = bootstrap_servers
        self._loop = asyncio.new_event_loop()
        self._consumers: dict[str, AIOKafkaConsumer] = {}
        self._http: httpx.AsyncClient | None = None

    def count(self, topic: str) -> int | None:
        """Records in `topic` (sum of its partitions' end offsets); None when the broker does
        not answer within a second."""
        try:
            return self._loop.run_until_complete(asyncio.wait_for(self._count(topic), 1.0))
        except (TimeoutError, KafkaError, OSError):
            return None

    async def _count(self, topic: str) -> int:
        consumer = self._consumers.get(topic)
        if consumer is None:
            consumer = AIOKafkaConsumer(
                **kafka_options(self._servers),
                client_id="tracebus-up",
                enable_auto_commit=False,
                # A fetch waiting at the end for new records delays the next count by as long.
                fetch_max_wait_ms=FETCH_WAIT_MS,
            )
            await consumer.start()
            self._consumers[topic] = consumer
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer.topics()  # refreshes metadata
            partitions = consumer.partitions_for_topic(topic) or set()
        bounds = await offset_bounds(
            consumer,
            [TopicPartition(topic, partition) for partition in partitions],
            probe_timeout=0.3,
        )
        return sum(b.end for b in bounds.values())

    def scrape(self, addresses: list[str]) -> list[Snapshot]:
        """One scrape of each endpoint; one that does not answer has `error` set."""
        return self._loop.run_until_complete(self._scrape(addresses))

    async def _scrape(self, addresses: list[str]) -> list[Snapshot]:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=SCRAPE_TIMEOUT_S)
        return list(await asyncio.gather(*(scrape(self._http, a) for a in addresses)))

    def close(self) -> None:
        for consumer in self._consumers.values():
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(asyncio.wait_for(consumer.stop(), 2.0))
        if self._http is not None:
            self._loop.run_until_complete(self._http.aclose())
        self._loop.close()


class WorkerTotals:
    """A supervised worker's figures since `up` started: counters summed over its processes
    (a restarted worker counts from zero again), gauges as last scraped."""

    def __init__(self) -> None:
        self._pid: int | None = None
        self._current: dict[str, float] = {}
        self._exited: dict[str, float] = {}  # counters of the worker's earlier processes

    def update(self, pid: int, snapshot: Snapshot) -> None:
        if snapshot.error is not None:
            return  # starting, restarting or busy: keep what is known
        if pid != self._pid:
            for label, value in self._current.items():
                if label in _COUNTERS:
                    self._exited[label] = self._exited.get(label, 0.0) + value
            self._pid = pid
        self._current = snapshot.values

    def get(self, label: str) -> float | None:
        """The figure; None before the worker was first scraped."""
        if label not in self._current and label not in self._exited:
            return None
        return self._exited.get(label, 0.0) + self._current.get(label, 0.0)


class TraceFiles:
    """Cost and latency of the traces the jsonl sink writes during this run, read
    incrementally: each refresh parses only the lines appended since the previous one."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        # Files already there are earlier runs': only what this run appends counts.
        self._read = {path: path.stat().st_size for path in directory.glob("*.jsonl")}
        # trace id → (revision, part, cost, duration) of its latest document: a late revision
        # replaces the earlier one, like in every sink.
        self._latest: dict[str, tuple[int, int, float, float]] = {}
        self.cost_usd = 0.0
        self._durations: list[float] | None = []  # sorted; None: to sort again

    def refresh(self) -> None:
        for path in sorted(self.directory.glob("*.jsonl")):
            start = self._read.get(path, 0)
            try:
                with path.open("rb") as file:
                    file.seek(start)
                    data = file.read()
            except FileNotFoundError:
                continue  # removed by someone else since the glob
            # A line still being written is read whole at the next refresh.
            complete = data.rfind(b"\n") + 1
            for line in data[:complete].splitlines():
                try:
                    self._add(orjson.loads(line))
                except (ValueError, KeyError, TypeError):
                    continue  # not a trace document: a summary is no reason to stop the stack
            self._read[path] = start + complete

    def _add(self, document: dict[str, Any]) -> None:
        trace_id, revision, part = document["trace_id"], document["revision"], document["part"]
        known = self._latest.get(trace_id)
        if known is not None and known[:2] >= (revision, part):
            return  # a replay's copy or an earlier revision
        summary = document["summary"]
        cost = summary.get("cost", {}).get("total", 0.0)
        self._latest[trace_id] = (revision, part, cost, summary["duration_ms"])
        self.cost_usd += cost - (known[2] if known is not None else 0.0)
        self._durations = None

    def latency_ms(self, quantile: float) -> float | None:
        """The trace duration below which `quantile` of the traces are (nearest rank)."""
        if self._durations is None:
            self._durations = sorted(latest[3] for latest in self._latest.values())
        if not self._durations:
            return None
        rank = max(math.ceil(quantile * len(self._durations)) - 1, 0)
        return self._durations[rank]


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
    """What the stack did: records in, traces published by the stream, delivered per sink,
    their cost and latency. `refresh` reads it all; `rows` shows what was read last."""

    def __init__(
        self, probe: Probe, supervisor: Supervisor, settings: ProducerSettings, out: Path
    ) -> None:
        self.probe = probe
        self.supervisor = supervisor
        self.settings = settings
        self.files = TraceFiles(out)
        self.records: int | None = None
        self.published: int | None = None
        self.workers = {child.name: WorkerTotals() for child in supervisor.children}

    def refresh(self) -> None:
        self.records = self.probe.count(self.settings.events_topic)
        self.published = self.probe.count(self.settings.traces_topic)
        running = [
            (child.name, child.process.pid, f"{LOCALHOST}:{child.metrics_port}")
            for child in self.supervisor.children
            if child.process is not None and child.state == "running" and child.metrics_port
        ]
        snapshots = self.probe.scrape([address for _, _, address in running])
        for (name, pid, _), snapshot in zip(running, snapshots, strict=True):
            self.workers[name].update(pid, snapshot)
        self.files.refresh()

    def figure(self, child: str, label: str) -> str:
        value = self.workers[child].get(label)
        return "?" if value is None else f"{value:,.0f}"

    def sinks(self) -> list[str]:
        return [c.name for c in self.supervisor.children if c.name.startswith(SINK_PREFIX)]

    def rows(self) -> list[tuple[str, str]]:
        names = {child.name for child in self.supervisor.children}
        rows = [(f"records in {self.settings.events_topic}", _count(self.records))]
        if GATEWAY in names:
            rows.append(("events via gateway", self.figure(GATEWAY, "gateway events")))
        rows.append(("traces published (stream)", _count(self.published)))
        rows.append(("traces open (stream)", self.figure(STREAM, "open traces")))
        for sink in self.sinks():
            rows.append(
                (f"delivered to {sink.removeprefix(SINK_PREFIX)}", self.figure(sink, "delivered"))
            )
        for label in ("retries", "dead letters"):
            values = [self.workers[sink].get(label) or 0.0 for sink in self.sinks()]
            rows.append((f"sink {label}", f"{sum(values):,.0f}"))
        rows.append(("cost so far (USD)", f"{self.files.cost_usd:,.4f}"))
        for quantile in (0.5, 0.95):
            latency = self.files.latency_ms(quantile)
            shown = "-" if latency is None else f"{latency / 1000:,.2f}s"
            rows.append((f"trace latency p{quantile * 100:.0f}", shown))
        for child in self.supervisor.children:
            restarts = f", {child.restarts} restarts" if child.restarts else ""
            rows.append((f"process {child.name}", f"{child.state}{restarts}"))
        return rows

    def plain(self) -> list[str]:
        """The main figures as `name=value` pairs, for logs."""
        delivered = [
            f"delivered_{sink.removeprefix(SINK_PREFIX)}={self.figure(sink, 'delivered')}"
            for sink in self.sinks()
        ]
        return [
            f"records={_count(self.records)}",
            f"published={_count(self.published)}",
            *delivered,
            f"cost_usd={self.files.cost_usd:.4f}",
        ]


def _count(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def _summary(started: float, demo: DemoThread | None, status: str, stack: StackView) -> Table:
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
    for what, value in stack.rows():
        table.add_row(what, value)
    return table


def _plain(demo: DemoThread | None, stack: StackView) -> str:
    parts = stack.plain()
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
    gateway_port: Annotated[
        int,
        typer.Option(
            min=0,
            max=65535,
            help="Port of the gateway for Langfuse, LangSmith and OpenTelemetry clients, on "
            "127.0.0.1; 0 for no gateway.",
        ),
    ] = DEFAULT_GATEWAY_PORT,
) -> None:
    """Start the local stack: embedded broker, stream worker, sinks and gateway; demo traffic
    with --demo.

    The jsonl sink always runs; the Langfuse sink joins when TRACEBUS_LANGFUSE_PUBLIC_KEY and
    TRACEBUS_LANGFUSE_SECRET_KEY are set, the LangSmith sink when TRACEBUS_LANGSMITH_API_KEY
    is, or when every project in TRACEBUS_ROUTES_FILE has that destination's keys. The gateway
    accepts any API key unless TRACEBUS_API_KEYS=project=key,… is set.
    Crashed processes are restarted with back-off. Shows a live summary until Ctrl-C or
    SIGTERM, then stops everything cleanly: records in, traces published by the stream and
    delivered per sink (the workers' metrics), and the cost and latency p50/p95 of the traces
    written by the jsonl sink during this run.
    """
    settings = build_settings(
        ProducerSettings,
        bootstrap_servers=f"{host}:{port}",
        events_topic=events_topic,
        traces_topic=traces_topic,
        dead_letter_topic=dead_letter_topic,
        partitions=partitions,
    )
    if build_settings(KafkaSecurity).security_protocol != "PLAINTEXT":
        fail(
            "tracebus up runs a local broker without TLS or SASL: unset the TRACEBUS_KAFKA_* "
            "security settings (they are for your Kafka cluster)",
            ExitCode.USAGE,
        )
    if gateway_port and _port_taken(gateway_port):
        fail(
            f"port {gateway_port} on {LOCALHOST} is already in use: choose another one for the "
            "gateway with --gateway-port, or --gateway-port 0 for no gateway",
            ExitCode.USAGE,
        )
    with StopSignals() as stop:
        try:
            with running_broker(host, port, settings) as broker:
                print_banner(broker, settings)
                supervisor = _start_stack(settings, out, gateway_port)
                try:
                    _serve(broker, settings, stop, demo, rate, seed, duration, supervisor, out)
                finally:
                    supervisor.stop()
        except KeyboardInterrupt:
            fail("interrupted twice: stopped without waiting", ExitCode.INTERRUPTED)
    console.print(f"stopped ({stop.received or 'duration reached'})")


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOCALHOST, port))
        except OSError:
            return True
    return False


def _worker(name: str, arguments: list[str]) -> Child:
    """A stream or sink worker serving its metrics on a free port, for the summary."""
    port = free_port()
    return Child(name, arguments, env={"TRACEBUS_METRICS_PORT": str(port)}, metrics_port=port)


def _start_stack(settings: ProducerSettings, out: Path, gateway_port: int) -> Supervisor:
    children = [
        _worker(STREAM, ["stream"]),
        _worker(f"{SINK_PREFIX}jsonl", ["sink", "jsonl", "--out", str(out)]),
    ]
    destinations = [f"{out}/ (jsonl)"]
    with_routes = "TRACEBUS_ROUTES_FILE" in os.environ
    for destination, title in (
        (Destination.LANGFUSE, "Langfuse"),
        (Destination.LANGSMITH, "LangSmith"),
    ):
        problem = unconfigured(destination)
        if problem is None:
            children.append(_worker(f"{SINK_PREFIX}{destination}", ["sink", destination.value]))
            destinations.append(title)
        elif with_routes:
            console.print(f"no {title} sink: {problem}")
    # A local dev stack: without keys configured, any client may send.
    anonymous = not (
        os.environ.get("TRACEBUS_API_KEYS") or os.environ.get("TRACEBUS_API_KEYS_FILE")
    )
    if gateway_port:
        arguments = ["gateway", "--host", LOCALHOST, "--port", str(gateway_port)]
        if anonymous:
            arguments.append("--allow-anonymous")
        children.append(Child(GATEWAY, arguments, metrics_port=gateway_port))
    supervisor = Supervisor(children, settings.worker_env())
    supervisor.start()
    console.print(f"complete traces go to: {', '.join(destinations)}")
    if len(destinations) == 1:
        console.print(
            "(set TRACEBUS_LANGFUSE_PUBLIC_KEY/SECRET_KEY or TRACEBUS_LANGSMITH_API_KEY "
            "to deliver to Langfuse or LangSmith too)"
        )
    if gateway_port:
        _print_gateway(f"http://{LOCALHOST}:{gateway_port}", anonymous)
    scraped = " ".join(f"-m {LOCALHOST}:{c.metrics_port}" for c in children if c.metrics_port)
    console.print(f"status: tracebus status -b {settings.bootstrap_servers} {scraped}")
    return supervisor


def _print_gateway(url: str, anonymous: bool) -> None:
    keys = (
        "any API key accepted; set TRACEBUS_API_KEYS=project=key to require one"
        if anonymous
        else "API keys from TRACEBUS_API_KEYS / TRACEBUS_API_KEYS_FILE"
    )
    console.print(f"gateway on {url} ({keys}); point existing apps at it:")
    for variable in ("LANGFUSE_HOST", "LANGSMITH_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        console.print(f"  {variable}={url}")


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
    probe = Probe(broker.bootstrap_servers)
    stack = StackView(probe, supervisor, settings, out)
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
            Live(_summary(started, demo, "running", stack), console=console, auto_refresh=False)
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
                stack.refresh()
                if live is not None:
                    live.update(_summary(started, demo, "running", stack), refresh=True)
                elif time.monotonic() - last_report >= PLAIN_REPORT_EVERY_S:
                    console.print(_plain(demo, stack))
                    last_report = time.monotonic()
            stop.event.set()  # also stops the demo thread
            if demo is not None:
                if live is not None:
                    live.update(_summary(started, demo, "flushing", stack), refresh=True)
                demo.join(10.0)
                delivered = demo.client.close(10.0 if problem is None else 2.0)
            # Before the workers stop (the caller stops them): their figures are still there.
            stack.refresh()
            final = _summary(started, demo, "stopped", stack)
            if live is not None:
                live.update(final, refresh=True)
    finally:
        if demo is not None:
            demo.client.close(1.0)
        probe.close()
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
