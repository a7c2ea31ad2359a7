"""`tracebus sink DESTINATION`: a delivery worker for one destination."""

from __future__ import annotations

import asyncio
import os
import signal
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tracebus.cli.common import (
    DEFAULT_BOOTSTRAP_SERVERS,
    DEFAULT_DEAD_LETTER_TOPIC,
    DEFAULT_TIMEOUT,
    DEFAULT_TRACES_TOPIC,
    BootstrapServers,
    DeadLetterTopic,
    ExitCode,
    Timeout,
    TracesTopic,
    build_settings,
    console,
    fail,
    require_broker,
    tune_garbage_collector,
)
from tracebus.sinks.exporter import Exporter
from tracebus.sinks.settings import SinkSettings

if TYPE_CHECKING:
    from tracebus.sinks.runtime import DeliveryRuntime

DESTINATION_PANEL = "Destination"


class Destination(StrEnum):
    JSONL = "jsonl"
    LANGFUSE = "langfuse"
    LANGSMITH = "langsmith"


def _option(envvar: str, help: str) -> typer.models.OptionInfo:
    return typer.Option(envvar=envvar, help=help, rich_help_panel=DESTINATION_PANEL)


def sink(
    destination: Annotated[Destination, typer.Argument(help="Where to deliver traces.")],
    bootstrap_servers: BootstrapServers = DEFAULT_BOOTSTRAP_SERVERS,
    traces_topic: TracesTopic = DEFAULT_TRACES_TOPIC,
    dead_letter_topic: DeadLetterTopic = DEFAULT_DEAD_LETTER_TOPIC,
    timeout: Timeout = DEFAULT_TIMEOUT,
    out: Annotated[
        Path, _option("TRACEBUS_JSONL_DIR", "jsonl: directory of the rotated files.")
    ] = Path("tracebus-data/traces"),
    langfuse_host: Annotated[
        str, _option("TRACEBUS_LANGFUSE_HOST", "Langfuse base URL.")
    ] = "https://cloud.langfuse.com",
    langfuse_public_key: Annotated[
        str | None, _option("TRACEBUS_LANGFUSE_PUBLIC_KEY", "Langfuse public key.")
    ] = None,
    langfuse_secret_key: Annotated[
        str | None, _option("TRACEBUS_LANGFUSE_SECRET_KEY", "Langfuse secret key.")
    ] = None,
    langsmith_endpoint: Annotated[
        str, _option("TRACEBUS_LANGSMITH_ENDPOINT", "LangSmith API URL.")
    ] = "https://api.smith.langchain.com",
    langsmith_api_key: Annotated[
        str | None, _option("TRACEBUS_LANGSMITH_API_KEY", "LangSmith API key.")
    ] = None,
    langsmith_project: Annotated[
        str, _option("TRACEBUS_LANGSMITH_PROJECT", "LangSmith project (session) name.")
    ] = "tracebus",
    metrics_port: Annotated[
        int | None,
        typer.Option(envvar="TRACEBUS_METRICS_PORT", help="Serve Prometheus metrics here."),
    ] = None,
) -> None:
    """Deliver complete traces to one destination, with retries and dead letters.

    Run several with the same destination to share the partitions. Offsets are committed only
    after delivery, so stopping or crashing re-delivers instead of losing; destinations see
    each trace once (deterministic ids). Batching, retry and back-off settings come from
    TRACEBUS_* variables: see tracebus.sinks.SinkSettings.
    """
    settings = build_settings(
        SinkSettings,
        bootstrap_servers=bootstrap_servers,
        traces_topic=traces_topic,
        dead_letter_topic=dead_letter_topic,
        metrics_port=metrics_port,
    )
    exporter = _exporter(
        destination,
        out,
        langfuse_host,
        langfuse_public_key,
        langfuse_secret_key,
        langsmith_endpoint,
        langsmith_api_key,
        langsmith_project,
    )
    require_broker(settings.bootstrap_servers, timeout)
    from tracebus.observability import serve_metrics
    from tracebus.sinks.runtime import DeliveryRuntime

    tune_garbage_collector()
    runtime = DeliveryRuntime(exporter, settings)
    if settings.metrics_port is not None:
        serve_metrics(settings.metrics_port, runtime.metrics.registry, runtime.heartbeat)
    console.print(f"sink {destination} delivering from {settings.traces_topic} ({exporter!r})")
    asyncio.run(_run_until_signalled(runtime))
    console.print(f"sink {destination} stopped")


def exporter_from_environment(destination: Destination, out: Path) -> Exporter:
    """The destination's exporter with credentials from TRACEBUS_* variables."""
    env = os.environ
    return _exporter(
        destination,
        out,
        env.get("TRACEBUS_LANGFUSE_HOST", "https://cloud.langfuse.com"),
        env.get("TRACEBUS_LANGFUSE_PUBLIC_KEY"),
        env.get("TRACEBUS_LANGFUSE_SECRET_KEY"),
        env.get("TRACEBUS_LANGSMITH_ENDPOINT", "https://api.smith.langchain.com"),
        env.get("TRACEBUS_LANGSMITH_API_KEY"),
        env.get("TRACEBUS_LANGSMITH_PROJECT", "tracebus"),
    )


def _exporter(
    destination: Destination,
    out: Path,
    langfuse_host: str,
    langfuse_public_key: str | None,
    langfuse_secret_key: str | None,
    langsmith_endpoint: str,
    langsmith_api_key: str | None,
    langsmith_project: str,
) -> Exporter:
    if destination is Destination.JSONL:
        from tracebus.sinks.jsonl import JsonlExporter

        return JsonlExporter(out)
    if destination is Destination.LANGFUSE:
        if not (langfuse_public_key and langfuse_secret_key):
            fail(
                "langfuse needs TRACEBUS_LANGFUSE_PUBLIC_KEY and TRACEBUS_LANGFUSE_SECRET_KEY",
                ExitCode.USAGE,
            )
        from tracebus.sinks.langfuse import LangfuseExporter

        return LangfuseExporter(langfuse_host, langfuse_public_key, langfuse_secret_key)
    if not langsmith_api_key:
        fail("langsmith needs TRACEBUS_LANGSMITH_API_KEY", ExitCode.USAGE)
    from tracebus.sinks.langsmith import LangSmithExporter

    return LangSmithExporter(langsmith_endpoint, langsmith_api_key, project=langsmith_project)


async def _run_until_signalled(runtime: DeliveryRuntime) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await runtime.run(stop)
