"""`tracebus gateway`: accept traces over the Langfuse, LangSmith and OpenTelemetry protocols."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from tracebus.cli.common import (
    DEFAULT_BOOTSTRAP_SERVERS,
    DEFAULT_DEAD_LETTER_TOPIC,
    DEFAULT_EVENTS_TOPIC,
    DEFAULT_PARTITIONS,
    DEFAULT_TRACES_TOPIC,
    BootstrapServers,
    DeadLetterTopic,
    EventsTopic,
    ExitCode,
    Partitions,
    TracesTopic,
    build_settings,
    fail,
    tune_garbage_collector,
)
from tracebus.gateway.settings import GatewaySettings

GATEWAY_PANEL = "Gateway"
log = logging.getLogger("tracebus.gateway")


def gateway(
    bootstrap_servers: BootstrapServers = DEFAULT_BOOTSTRAP_SERVERS,
    events_topic: EventsTopic = DEFAULT_EVENTS_TOPIC,
    traces_topic: TracesTopic = DEFAULT_TRACES_TOPIC,
    dead_letter_topic: DeadLetterTopic = DEFAULT_DEAD_LETTER_TOPIC,
    partitions: Partitions = DEFAULT_PARTITIONS,
    host: Annotated[
        str,
        typer.Option(
            envvar="TRACEBUS_HOST", help="Address to listen on.", rich_help_panel=GATEWAY_PANEL
        ),
    ] = "0.0.0.0",
    port: Annotated[
        int,
        typer.Option(
            "--port",
            "-p",
            envvar="TRACEBUS_PORT",
            help="HTTP port (4318 is OTLP/HTTP's).",
            rich_help_panel=GATEWAY_PANEL,
        ),
    ] = 4318,
    api_keys_file: Annotated[
        Path | None,
        typer.Option(
            envvar="TRACEBUS_API_KEYS_FILE",
            exists=True,
            dir_okay=False,
            help="TOML file of \\[projects.<name>] tables with keys = \\[...]. Keys can also come "
            "from TRACEBUS_API_KEYS=project=key,project=key (never a flag: it would show in ps).",
            rich_help_panel=GATEWAY_PANEL,
        ),
    ] = None,
    allow_anonymous: Annotated[
        bool,
        typer.Option(
            envvar="TRACEBUS_ALLOW_ANONYMOUS",
            help="Accept requests without a known key, as project 'default' (local use only).",
            rich_help_panel=GATEWAY_PANEL,
        ),
    ] = False,
    rate_limit: Annotated[
        float,
        typer.Option(
            envvar="TRACEBUS_RATE_LIMIT_PER_S",
            help="Requests per second per API key (429 with Retry-After beyond); 0 = none.",
            rich_help_panel=GATEWAY_PANEL,
        ),
    ] = 200.0,
    max_body_bytes: Annotated[
        int,
        typer.Option(
            envvar="TRACEBUS_MAX_BODY_BYTES",
            help="Largest request body as sent; larger ones get 413.",
            rich_help_panel=GATEWAY_PANEL,
        ),
    ] = 16 * 1024 * 1024,
) -> None:
    """Run the gateway: apps keep their Langfuse, LangSmith or OpenTelemetry instrumentation and
    point it here; their traces go to Kafka and from there to every configured sink.

    A request is answered only once Kafka has acknowledged its events; while Kafka is
    unavailable the gateway answers 503 with Retry-After, so the client's own retries keep the
    data. Run several gateways behind a load balancer to scale.

    \b
    Endpoints (point the SDK's host or endpoint setting at http://HOST:PORT):
      OpenTelemetry  POST /v1/traces, /api/public/otel/v1/traces (protobuf or JSON)
      Langfuse       POST /api/public/ingestion (legacy batch), GET /api/public/health
      LangSmith      POST /runs/multipart, /runs/batch, GET /info
      Operations     GET /healthz (503 while Kafka is unreachable), GET /metrics
    """
    from tracebus.gateway.auth import KeyFileError, KeyRing, load_key_file, parse_key_pairs

    settings = build_settings(
        GatewaySettings,
        bootstrap_servers=bootstrap_servers,
        events_topic=events_topic,
        traces_topic=traces_topic,
        dead_letter_topic=dead_letter_topic,
        partitions=partitions,
        host=host,
        port=port,
        api_keys_file=api_keys_file,
        allow_anonymous=allow_anonymous,
        rate_limit_per_s=rate_limit,
        max_body_bytes=max_body_bytes,
    )
    try:
        pairs = parse_key_pairs(settings.api_keys.get_secret_value()) if settings.api_keys else []
        if settings.api_keys_file is not None:
            pairs += load_key_file(settings.api_keys_file)
    except KeyFileError as error:
        fail(str(error), ExitCode.USAGE)
    if not pairs and not settings.allow_anonymous:
        fail(
            "no API keys: set TRACEBUS_API_KEYS=project=key or --api-keys-file, "
            "or --allow-anonymous for local use",
            ExitCode.USAGE,
        )
    from aiohttp import web

    from tracebus.gateway.adapters import ADAPTERS
    from tracebus.gateway.app import SERVER_OPTIONS, Gateway

    tune_garbage_collector()
    service = Gateway(settings, KeyRing(pairs, settings.allow_anonymous), ADAPTERS)
    log.info(
        "gateway on %s:%d with %d API keys%s",
        settings.host,
        settings.port,
        len(pairs),
        " (anonymous allowed)" if settings.allow_anonymous else "",
    )
    try:
        web.run_app(
            service.application(),
            host=settings.host,
            port=settings.port,
            print=None,
            access_log=None,
            shutdown_timeout=settings.ack_timeout_s,
            **SERVER_OPTIONS,
        )
    except OSError as error:
        fail(f"cannot listen on {settings.host}:{settings.port}: {error}", ExitCode.USAGE)
