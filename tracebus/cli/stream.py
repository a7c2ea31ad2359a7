"""`tracebus stream`: run a stream worker that assembles events into complete traces."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
    fail,
    require_broker,
    tune_garbage_collector,
)
from tracebus.streams.settings import StreamSettings

STREAM_PANEL = "Stream"


def stream(
    bootstrap_servers: BootstrapServers = DEFAULT_BOOTSTRAP_SERVERS,
    events_topic: EventsTopic = DEFAULT_EVENTS_TOPIC,
    traces_topic: TracesTopic = DEFAULT_TRACES_TOPIC,
    dead_letter_topic: DeadLetterTopic = DEFAULT_DEAD_LETTER_TOPIC,
    partitions: Partitions = DEFAULT_PARTITIONS,
    timeout: Timeout = DEFAULT_TIMEOUT,
    grace: Annotated[
        float,
        typer.Option(
            envvar="TRACEBUS_GRACE_S",
            help="Seconds to wait after a trace looks complete.",
            rich_help_panel=STREAM_PANEL,
        ),
    ] = 2.0,
    idle_timeout: Annotated[
        float,
        typer.Option(
            envvar="TRACEBUS_IDLE_TIMEOUT_S",
            help="Publish an incomplete trace after this many seconds without events.",
            rich_help_panel=STREAM_PANEL,
        ),
    ] = 30.0,
    price_file: Annotated[
        Path | None,
        typer.Option(
            envvar="TRACEBUS_PRICE_FILE",
            exists=True,
            dir_okay=False,
            help="TOML price overrides (model pattern → USD per million tokens).",
            rich_help_panel=STREAM_PANEL,
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            envvar="TRACEBUS_METRICS_PORT",
            help="Serve Prometheus metrics on this port.",
            rich_help_panel=STREAM_PANEL,
        ),
    ] = None,
) -> None:
    """Run a stream worker: events → complete traces with latency, tokens and cost.

    Run several workers with the same settings to share the partitions; a worker that dies is
    replaced by the others, which restore its traces from the changelog. More settings (late
    window, size limits, memory bound, store) come from TRACEBUS_* variables: see
    tracebus.streams.StreamSettings.
    """
    settings = build_settings(
        StreamSettings,
        bootstrap_servers=bootstrap_servers,
        events_topic=events_topic,
        traces_topic=traces_topic,
        dead_letter_topic=dead_letter_topic,
        partitions=partitions,
        grace_s=grace,
        idle_timeout_s=idle_timeout,
        price_file=price_file,
        metrics_port=metrics_port,
    )
    require_broker(settings.bootstrap_servers, timeout)
    from tracebus.observability import serve_metrics
    from tracebus.stopping import StopDeadline
    from tracebus.streams.app import StreamWorker, run_worker
    from tracebus.streams.pricing import PriceBook, PriceFileError

    try:
        pricing = PriceBook.load(settings.price_file)
    except PriceFileError as error:
        fail(str(error), ExitCode.USAGE)
    tune_garbage_collector()
    worker = StreamWorker(settings, pricing)
    if settings.metrics_port is not None:
        serve_metrics(settings.metrics_port, worker.metrics.registry, worker.heartbeat)
    deadline = StopDeadline(settings.stop_timeout_s, ExitCode.STOP_TIMED_OUT)
    if run_worker(worker.app, deadline) != ExitCode.OK:
        fail("the stream worker stopped on an error (see its log)", ExitCode.WORKER_FAILED)
