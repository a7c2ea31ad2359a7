"""`tracebus sink DESTINATION`: a delivery worker for one destination."""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass, fields, replace
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
from tracebus.sinks.routing import (
    EVERY_TRACE,
    NoDestination,
    Route,
    RoutesError,
    load_routes,
    routes_of,
)
from tracebus.sinks.settings import SinkSettings
from tracebus.stopping import StopDeadline

if TYPE_CHECKING:
    from tracebus.sinks.runtime import DeliveryRuntime, ReplayRange

DESTINATION_PANEL = "Destination"
DEFAULT_LANGFUSE_HOST = "https://cloud.langfuse.com"
DEFAULT_LANGSMITH_ENDPOINT = "https://api.smith.langchain.com"
DEFAULT_LANGSMITH_PROJECT = "tracebus"


class Destination(StrEnum):
    JSONL = "jsonl"
    LANGFUSE = "langfuse"
    LANGSMITH = "langsmith"


def _option(envvar: str, help: str) -> typer.models.OptionInfo:
    return typer.Option(envvar=envvar, help=help, rich_help_panel=DESTINATION_PANEL)


# The jsonl destination's directory: for `sink jsonl`, and for a replay or backfill to it.
JsonlDir = Annotated[Path, _option("TRACEBUS_JSONL_DIR", "jsonl: directory of the rotated files.")]
DEFAULT_JSONL_DIR = Path("tracebus-data/traces")


def sink(
    destination: Annotated[Destination, typer.Argument(help="Where to deliver traces.")],
    bootstrap_servers: BootstrapServers = DEFAULT_BOOTSTRAP_SERVERS,
    traces_topic: TracesTopic = DEFAULT_TRACES_TOPIC,
    dead_letter_topic: DeadLetterTopic = DEFAULT_DEAD_LETTER_TOPIC,
    timeout: Timeout = DEFAULT_TIMEOUT,
    out: JsonlDir = DEFAULT_JSONL_DIR,
    langfuse_host: Annotated[
        str, _option("TRACEBUS_LANGFUSE_HOST", "Langfuse base URL.")
    ] = DEFAULT_LANGFUSE_HOST,
    langfuse_public_key: Annotated[
        str | None, _option("TRACEBUS_LANGFUSE_PUBLIC_KEY", "Langfuse public key.")
    ] = None,
    langfuse_secret_key: Annotated[
        str | None, _option("TRACEBUS_LANGFUSE_SECRET_KEY", "Langfuse secret key.")
    ] = None,
    langsmith_endpoint: Annotated[
        str, _option("TRACEBUS_LANGSMITH_ENDPOINT", "LangSmith API URL.")
    ] = DEFAULT_LANGSMITH_ENDPOINT,
    langsmith_api_key: Annotated[
        str | None, _option("TRACEBUS_LANGSMITH_API_KEY", "LangSmith API key.")
    ] = None,
    langsmith_project: Annotated[
        str, _option("TRACEBUS_LANGSMITH_PROJECT", "LangSmith project (session) name.")
    ] = DEFAULT_LANGSMITH_PROJECT,
    routes: Annotated[
        Path | None,
        _option(
            "TRACEBUS_ROUTES_FILE",
            "TOML file of per-project destinations: \\[projects.NAME] tables of the settings "
            "above (langfuse_public_key = ..., langsmith_project = ...) that the project's "
            "traces use instead, each project in a consumer group of its own "
            "(<group>.<project>), so one failing destination holds back no other. Traces of "
            "other projects go to the destination above, or are dead-lettered when it has no "
            "credentials.",
        ),
    ] = None,
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

    Example, each project's traces to its own Langfuse project:

        tracebus sink langfuse --routes routes.toml

    with routes.toml holding \\[projects.shop] langfuse_public_key = "pk-lf-...",
    langfuse_secret_key = "sk-lf-..." (the project is the one the gateway's API key, or the
    producer's TRACEBUS_PROJECT, stamped on the trace's records).
    """
    settings = build_settings(
        SinkSettings,
        bootstrap_servers=bootstrap_servers,
        traces_topic=traces_topic,
        dead_letter_topic=dead_letter_topic,
        metrics_port=metrics_port,
    )
    options = DestinationOptions(
        langfuse_host,
        langfuse_public_key,
        langfuse_secret_key,
        langsmith_endpoint,
        langsmith_api_key,
        langsmith_project,
    )
    routed = deliveries(destination, out, options, routes)
    require_broker(settings.bootstrap_servers, timeout)
    from tracebus.observability import Heartbeats, serve_metrics

    tune_garbage_collector()
    runtimes = delivery_runtimes(routed, settings)
    if settings.metrics_port is not None:
        registry = runtimes[0].metrics.registry
        serve_metrics(settings.metrics_port, registry, Heartbeats([r.heartbeat for r in runtimes]))
    for runtime in runtimes:
        console.print(
            f"sink {runtime.label} delivering from {settings.traces_topic} as group "
            f"{runtime.group} ({runtime.exporter!r})"
        )
    deadline = StopDeadline(settings.stop_timeout_s, ExitCode.STOP_TIMED_OUT)
    asyncio.run(_run_until_signalled(runtimes, deadline))
    console.print(f"sink {destination} stopped")


@dataclass(frozen=True)
class DestinationOptions:
    """Where and as whom a sink delivers; a route replaces some of them for its project."""

    langfuse_host: str = DEFAULT_LANGFUSE_HOST
    langfuse_public_key: str | None = None
    langfuse_secret_key: str | None = None
    langsmith_endpoint: str = DEFAULT_LANGSMITH_ENDPOINT
    langsmith_api_key: str | None = None
    langsmith_project: str = DEFAULT_LANGSMITH_PROJECT

    def missing(self, destination: Destination) -> list[str]:
        """The credentials `destination` needs that these options lack."""
        if destination is Destination.LANGFUSE:
            needed = ["langfuse_public_key", "langfuse_secret_key"]
        elif destination is Destination.LANGSMITH:
            needed = ["langsmith_api_key"]
        else:
            needed = []
        return [name for name in needed if not getattr(self, name)]


ROUTE_SETTINGS = frozenset(field.name for field in fields(DestinationOptions))


def _options_from_environment() -> tuple[DestinationOptions, Path | None]:
    """The sink's destination options and routes file from TRACEBUS_* variables."""
    env = os.environ
    options = DestinationOptions(
        **{
            name: env[variable]
            for name in ROUTE_SETTINGS
            if (variable := f"TRACEBUS_{name.upper()}") in env
        }
    )
    routes = env.get("TRACEBUS_ROUTES_FILE")
    return options, Path(routes) if routes else None


def deliveries_from_environment(
    destination: Destination, out: Path, project: str | None = None
) -> list[Delivery]:
    """The destination's routes (or `project`'s alone) with credentials and routes file from
    TRACEBUS_* variables."""
    return deliveries(destination, out, *_options_from_environment(), project)


def unconfigured(destination: Destination) -> str | None:
    """Why the TRACEBUS_* variables do not give `tracebus sink DESTINATION` the credentials it
    needs, neither its own nor in a routes file for every project; None when they do."""
    options, routes_file = _options_from_environment()
    missing = options.missing(destination)
    if not missing:
        return None
    own = " and ".join(f"TRACEBUS_{name.upper()}" for name in missing)
    if routes_file is None:
        return f"no {own}"
    try:
        routes = load_routes(routes_file, ROUTE_SETTINGS)
    except RoutesError as error:
        return str(error)
    lacking = sorted(
        p for p, route in routes.items() if replace(options, **route).missing(destination)
    )
    return (
        f"no {own}, nor {destination} credentials for {lacking} in {routes_file}"
        if lacking
        else None
    )


Delivery = tuple[Route, Exporter]


def deliveries(
    destination: Destination,
    out: Path,
    options: DestinationOptions,
    routes_file: Path | None,
    project: str | None = None,
) -> list[Delivery]:
    """Each route of the sink with the exporter of its destination: one route, for every
    trace, without a routes file; with `project`, the one route of that project's traces."""
    if destination is Destination.JSONL:
        from tracebus.sinks.jsonl import JsonlExporter

        # One archive of every project: the documents name theirs.
        return [(EVERY_TRACE if project is None else Route(project), JsonlExporter(out))]
    try:
        routes = {} if routes_file is None else load_routes(routes_file, ROUTE_SETTINGS)
    except RoutesError as error:
        fail(str(error), ExitCode.USAGE)
    if project is not None:
        if project not in routes:
            return [(Route(project), _destination(destination, options))]
        routed = replace(options, **routes[project])
        return [(Route(project), _destination(destination, routed, project))]
    if not routes:
        return [(EVERY_TRACE, _destination(destination, options))]
    exporters = [
        _destination(destination, replace(options, **settings), name)
        for name, settings in routes.items()
    ]
    own = (
        NoDestination(destination.value)
        if options.missing(destination)
        else _destination(destination, options)
    )
    return list(zip(routes_of(list(routes)), [*exporters, own], strict=True))


def delivery_runtimes(
    routed: list[Delivery], settings: SinkSettings, replay: ReplayRange | None = None
) -> list[DeliveryRuntime]:
    """A runtime per route, their metrics in one registry."""
    from tracebus.sinks.metrics import SinkMetricFamilies
    from tracebus.sinks.runtime import DeliveryRuntime

    families = SinkMetricFamilies()
    return [
        DeliveryRuntime(exporter, settings, families, replay, route) for route, exporter in routed
    ]


def _destination(
    destination: Destination, options: DestinationOptions, project: str | None = None
) -> Exporter:
    """The exporter of the sink's own destination, or of `project`'s route."""
    missing = options.missing(destination)
    if missing and project is None:
        variables = " and ".join(f"TRACEBUS_{name.upper()}" for name in missing)
        fail(f"{destination} needs {variables}", ExitCode.USAGE)
    if missing:
        names = " and ".join(missing)
        fail(f"project {project}: {destination} needs {names} in the routes file", ExitCode.USAGE)
    if destination is Destination.LANGFUSE:
        from tracebus.sinks.langfuse import LangfuseExporter

        assert options.langfuse_public_key and options.langfuse_secret_key
        return LangfuseExporter(
            options.langfuse_host, options.langfuse_public_key, options.langfuse_secret_key
        )
    from tracebus.sinks.langsmith import LangSmithExporter

    assert options.langsmith_api_key
    return LangSmithExporter(
        options.langsmith_endpoint, options.langsmith_api_key, project=options.langsmith_project
    )


async def _run_until_signalled(runtimes: list[DeliveryRuntime], deadline: StopDeadline) -> None:
    """Run until SIGTERM/SIGINT or a runtime's failure; the stop that follows either is bound by
    `deadline`."""
    from tracebus.sinks.runtime import run_together

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    async def arm_once_stopping() -> None:
        await stop.wait()
        deadline.arm()

    arming = asyncio.create_task(arm_once_stopping())
    try:
        await run_together(runtimes, stop)
    finally:
        arming.cancel()
