"""The `tracebus` command line: `tracebus --help` lists the commands with examples."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer

from tracebus.cli import schemas, topics
from tracebus.cli.backfill import backfill
from tracebus.cli.broker import broker
from tracebus.cli.common import EXIT_CODES_HELP, LogLevel, configure_logging, console
from tracebus.cli.demo import demo
from tracebus.cli.dlq import app as dlq_app
from tracebus.cli.gateway import gateway
from tracebus.cli.replay import replay
from tracebus.cli.sink import sink
from tracebus.cli.status import status
from tracebus.cli.stream import stream
from tracebus.cli.up import up

app = typer.Typer(
    name="tracebus",
    help="tracebus: asynchronous, lossless tracing from LLM apps to Langfuse and LangSmith, "
    "over Kafka.\n\n"
    "Start here: [cyan]tracebus up --demo[/cyan] runs a local broker and sends demo traffic.\n\n"
    "\b\n"
    "[b]Examples[/b]\n"
    "  tracebus up --demo                     local broker + demo traffic\n"
    "  tracebus broker --port 19092           only the broker, with the topics\n"
    "  tracebus topics create -b kafka:9092   create the topics on your Kafka\n"
    "  tracebus topics describe               partitions and status of each topic\n"
    "  tracebus demo --traces 500 --rate 100  demo traffic to a running broker\n"
    "  tracebus stream -b kafka:9092          a stream worker (run several to scale)\n"
    "  tracebus sink langfuse                 deliver complete traces to Langfuse\n"
    "  tracebus gateway --port 4318           accept Langfuse/LangSmith/OTLP clients\n"
    "  tracebus status                        lag, dead letters, worker throughput\n"
    "  tracebus dlq redrive --stage stream    re-send dead letters once fixed\n"
    "  tracebus replay langfuse --since 2h    re-deliver the last two hours after an outage\n"
    "  tracebus backfill langsmith archive/   deliver archived traces (the jsonl sink's files)\n"
    "  tracebus schemas export --out schemas  JSON Schema files for other languages\n"
    "  tracebus schemas check --dir schemas   exit 1 if those files are stale\n\n"
    "[b]tracebus COMMAND --help[/b] shows each command's options and examples.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    rich_markup_mode="rich",
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        try:
            console.print(f"tracebus {version('tracebus')}")
        except PackageNotFoundError:
            console.print("tracebus (not installed)")
        raise typer.Exit()


@app.callback()
def main(
    log_level: Annotated[
        LogLevel,
        typer.Option(
            "--log-level",
            envvar="TRACEBUS_LOG_LEVEL",
            case_sensitive=False,
            help="Log verbosity; logs go to stderr, one line per record.",
        ),
    ] = LogLevel.WARNING,
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    configure_logging(log_level)


app.command(
    "up",
    epilog="Examples: [cyan]tracebus up --demo[/cyan] · "
    "[cyan]tracebus up --demo --rate 100 --port 19092[/cyan] · "
    "[cyan]tracebus up --demo --duration 30[/cyan]",
)(up)
app.command(
    "broker",
    epilog="Example: [cyan]tracebus broker --port 19092 --partitions 4[/cyan] "
    "(then TRACEBUS_BOOTSTRAP_SERVERS=127.0.0.1:19092 in your app)",
)(broker)
app.command(
    "stream",
    epilog="Example: [cyan]tracebus stream -b 127.0.0.1:9092 --metrics-port 9464[/cyan]",
)(stream)
app.command(
    "sink",
    epilog="Examples: [cyan]tracebus sink jsonl --out traces/[/cyan] · "
    "[cyan]TRACEBUS_LANGFUSE_PUBLIC_KEY=pk… TRACEBUS_LANGFUSE_SECRET_KEY=sk… "
    "tracebus sink langfuse[/cyan]",
)(sink)
app.command(
    "gateway",
    epilog="Example: [cyan]TRACEBUS_API_KEYS=shop=s3cret tracebus gateway --port 4318[/cyan] "
    "then LANGFUSE_HOST=http://127.0.0.1:4318 LANGFUSE_SECRET_KEY=s3cret in the app",
)(gateway)
app.command(
    "replay",
    epilog="Examples: [cyan]tracebus replay langfuse --since 2026-11-26T09:00 --until "
    "2026-11-26T10:30[/cyan] · [cyan]tracebus replay langsmith --from-offset 0[/cyan]",
)(replay)
app.command(
    "backfill",
    epilog="Examples: [cyan]tracebus backfill langsmith tracebus-data/traces --since 30d[/cyan] · "
    "[cyan]tracebus backfill langfuse restored/*.jsonl --project shop[/cyan]",
)(backfill)
app.add_typer(topics.app, name="topics")
app.add_typer(schemas.app, name="schemas")
app.add_typer(dlq_app, name="dlq")
app.command(
    "status",
    epilog="Examples: [cyan]tracebus status[/cyan] · "
    "[cyan]tracebus status -v --metrics 127.0.0.1:9464 --metrics 127.0.0.1:9465[/cyan]",
)(status)
app.command(
    "demo",
    epilog="Example: [cyan]tracebus demo --traces 500 --rate 100 -b 127.0.0.1:9092[/cyan]",
)(demo)
