"""`tracebus backfill`: deliver archived trace documents (the jsonl sink's files) to one
destination."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated

import typer
from aiokafka.errors import KafkaError
from rich.progress import DownloadColumn
from rich.table import Table

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
    err_console,
    fail,
    progress_bar,
    require_broker,
)
from tracebus.cli.replay import (
    deliver_with_progress,
    delivery_summary,
    parse_time,
    replay_range,
)
from tracebus.cli.sink import (
    Delivery,
    Destination,
    deliveries_from_environment,
    delivery_runtimes,
)
from tracebus.kafka import delete_topics
from tracebus.ops.backfill import Scope, Selection, archive_files, load, select
from tracebus.sinks.settings import SinkSettings


def backfill(
    destination: Annotated[Destination, typer.Argument(help="The destination to deliver to.")],
    archive: Annotated[
        list[Path],
        typer.Argument(
            exists=True,
            help="jsonl files of trace documents, or directories of them (the jsonl sink's --out).",
        ),
    ],
    since: Annotated[
        str | None,
        typer.Option(help="Only traces that started at or after: ISO-8601, or 30d / 12h back."),
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Only traces that started before this time.")
    ] = None,
    project: Annotated[
        str | None,
        typer.Option(
            help="Only this project's traces, to its route of TRACEBUS_ROUTES_FILE or else the "
            "destination's own."
        ),
    ] = None,
    out: Annotated[
        Path, typer.Option(envvar="TRACEBUS_JSONL_DIR", help="jsonl: directory of the files.")
    ] = Path("tracebus-data/traces"),
    bootstrap_servers: BootstrapServers = DEFAULT_BOOTSTRAP_SERVERS,
    traces_topic: TracesTopic = DEFAULT_TRACES_TOPIC,
    dead_letter_topic: DeadLetterTopic = DEFAULT_DEAD_LETTER_TOPIC,
    timeout: Timeout = DEFAULT_TIMEOUT,
) -> None:
    """Deliver archived trace documents to one destination, e.g. one added after Kafka's
    retention dropped the traces it missed.

    Reads the archive (the jsonl sink's files: several revisions of a trace may be there, and
    only the highest of each part goes out), loads the chosen documents into a topic of this
    run's own, named after the traces topic, and delivers them from there with the same
    batching, retries, dead letters and routes as `tracebus sink`; the topic is deleted at the
    end. Destinations see no duplicates: a second run replaces what the first delivered.
    Credentials and the routes file come from the same TRACEBUS_* variables as `tracebus sink`.
    Exits 0 when every chosen document is delivered or dead-lettered, 1 when lines of the
    archive could not be read (each listed with its reason; the rest are still delivered).
    """
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    topic = f"{traces_topic}.backfill-{stamp}"
    settings = build_settings(
        SinkSettings,
        bootstrap_servers=bootstrap_servers,
        traces_topic=topic,
        dead_letter_topic=dead_letter_topic,
        group_id=f"tracebus-backfill-{destination}-{stamp}",
    )
    scope = Scope(
        since_ns=_unix_nano(since),
        until_ns=_unix_nano(until),
        project=project,
    )
    routed = deliveries_from_environment(destination, out, project)
    files = archive_files(archive)
    if not files:
        fail(f"no {', '.join(map(str, archive))} file ends in .jsonl", ExitCode.USAGE)
    require_broker(settings.bootstrap_servers, timeout)
    selection = _read(files, scope)
    _print_selection(selection)
    if selection.chosen:
        try:
            _deliver(destination, settings, selection, routed)
        finally:
            _delete(settings.bootstrap_servers, topic)
    else:
        console.print("nothing to backfill")
    if selection.unreadable:
        for example in selection.examples:
            err_console.print(f"unreadable: {example}", markup=False)
        fail(
            f"{selection.unreadable:,} line(s) of the archive are not trace documents "
            f"(the first {len(selection.examples)} listed above)",
            ExitCode.CHECK_FAILED,
        )


def _unix_nano(value: str | None) -> int | None:
    return None if value is None else int(parse_time(value).timestamp() * 1_000_000_000)


def _read(files: list[Path], scope: Scope) -> Selection:
    with progress_bar(DownloadColumn()) as progress:
        task = progress.add_task("read", total=sum(path.stat().st_size for path in files))
        return select(files, scope, lambda size: progress.advance(task, size))


def _print_selection(selection: Selection) -> None:
    table = Table("archive", "", title=None, show_header=False)
    table.add_row("files", f"{len(selection.files):,}")
    table.add_row("trace documents", f"{selection.documents:,}")
    table.add_row("out of the time range or project", f"{selection.outside:,}")
    table.add_row("earlier revisions and copies", f"{selection.superseded:,}")
    table.add_row("unreadable lines", f"{selection.unreadable:,}")
    table.add_row("to deliver", f"{selection.chosen:,}")
    console.print(table)


def _deliver(
    destination: Destination,
    settings: SinkSettings,
    selection: Selection,
    routed: list[Delivery],
) -> None:
    with progress_bar() as progress:
        task = progress.add_task("load", total=selection.chosen)
        asyncio.run(
            load(
                settings.bootstrap_servers,
                settings.traces_topic,
                settings.partitions,
                selection,
                lambda count: progress.advance(task, count),
            )
        )
    span = asyncio.run(
        replay_range(settings.bootstrap_servers, settings.traces_topic, None, None, None, None)
    )
    runtimes = delivery_runtimes(routed, settings, span)
    asyncio.run(deliver_with_progress(runtimes, span.total, "deliver"))
    console.print(f"backfilled {destination}: {delivery_summary(runtimes)}")


def _delete(bootstrap_servers: str, topic: str) -> None:
    try:
        asyncio.run(delete_topics(bootstrap_servers, [topic]))
    except (KafkaError, ConnectionError) as error:
        err_console.print(f"could not delete the backfill topic {topic} ({error}): delete it")
