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
    DEFAULT_JSONL_DIR,
    Delivery,
    Destination,
    JsonlDir,
    deliveries_from_environment,
    delivery_runtimes,
)
from tracebus.kafka import delete_topics
from tracebus.ops.backfill import Scope, Selection, archive_files, load, select
from tracebus.ops.groups import admin_client, committed_offsets
from tracebus.sinks.runtime import ReplayRange
from tracebus.sinks.settings import SinkSettings


def backfill(
    destination: Annotated[Destination, typer.Argument(help="The destination to deliver to.")],
    archive: Annotated[
        list[Path] | None,
        typer.Argument(
            exists=True,
            show_default=False,
            help="jsonl files of trace documents, or directories of them (the jsonl sink's --out).",
        ),
    ] = None,
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
    resume: Annotated[
        str | None,
        typer.Option(
            metavar="TOPIC",
            help="Go on with an interrupted backfill from where it stopped: the topic it named.",
        ),
    ] = None,
    out: JsonlDir = DEFAULT_JSONL_DIR,
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
    end. Ctrl-C stops after what is in flight and keeps the topic: --resume TOPIC goes on from
    there. Destinations see no duplicates: a second run replaces what the first delivered.
    Credentials and the routes file come from the same TRACEBUS_* variables as `tracebus sink`.
    Exits 0 when every chosen document is delivered or dead-lettered, 1 when lines of the
    archive could not be read (each listed with its reason; the rest are still delivered),
    130 when interrupted.
    """
    if (resume is None) == (not archive):
        fail(
            "name the archive to read, or --resume the topic of an interrupted backfill",
            ExitCode.USAGE,
        )
    if resume is not None and (since or until or project):
        fail(
            "--resume goes on with the interrupted backfill's own choice of traces",
            ExitCode.USAGE,
        )
    topic = resume or f"{traces_topic}.backfill-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
    settings = build_settings(
        SinkSettings,
        bootstrap_servers=bootstrap_servers,
        traces_topic=topic,
        dead_letter_topic=dead_letter_topic,
        group_id=f"{topic}.{destination}",
    )
    routed = deliveries_from_environment(destination, out, project)
    files = archive_files(archive or [])
    if archive and not files:
        fail(f"no {', '.join(map(str, archive))} file ends in .jsonl", ExitCode.USAGE)
    require_broker(settings.bootstrap_servers, timeout)
    selection = None
    if resume is None:
        scope = Scope(since_ns=_unix_nano(since), until_ns=_unix_nano(until), project=project)
        selection = _read(files, scope)
        _print_selection(selection)
        if selection.chosen:
            _load(settings, selection)
    if resume is not None or (selection is not None and selection.chosen):
        _deliver(destination, settings, routed)
    else:
        console.print("nothing to backfill")
    if selection is not None and selection.unreadable:
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


def _load(settings: SinkSettings, selection: Selection) -> None:
    """Into the run's topic; a load that does not finish leaves no topic behind (a backfill
    can resume delivering, not loading)."""
    try:
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
    except BaseException:
        _delete(settings.bootstrap_servers, settings.traces_topic)
        raise


def _deliver(destination: Destination, settings: SinkSettings, routed: list[Delivery]) -> None:
    """From where the run's group is on its topic to the topic's end; the topic is deleted
    once all of it is delivered, and kept for --resume otherwise."""
    topic = settings.traces_topic
    groups = [route.group(settings.group(destination)) for route, _ in routed]
    resume = f"tracebus backfill {destination} --resume {topic}"
    try:
        span = asyncio.run(_unfinished(settings.bootstrap_servers, topic, groups))
        runtimes = delivery_runtimes(routed, settings, span)
        complete = span.total == 0 or asyncio.run(
            deliver_with_progress(runtimes, span.total, "deliver")
        )
    except BaseException:
        err_console.print(f"stopped before the end: `{resume}` goes on from there", markup=False)
        raise
    if not complete:
        fail(
            f"interrupted: {delivery_summary(runtimes)}; `{resume}` goes on from there",
            ExitCode.INTERRUPTED,
        )
    _delete(settings.bootstrap_servers, topic)
    console.print(f"backfilled {destination}: {delivery_summary(runtimes)}")


async def _unfinished(bootstrap_servers: str, topic: str, groups: list[str]) -> ReplayRange:
    """The topic's records past what the slowest of the routes' `groups` committed (all of
    them where one committed nothing): a faster route delivers some again, which its
    destination replaces."""
    whole = await replay_range(bootstrap_servers, topic, None, None, None, None)
    partitions = list(whole.end)
    async with admin_client(bootstrap_servers) as admin:
        committed = [await committed_offsets(admin, group, partitions) for group in groups]
    start = {p: max(min(c[p] or 0 for c in committed), whole.start[p]) for p in partitions}
    return ReplayRange(start=start, end=whole.end)


def _delete(bootstrap_servers: str, topic: str) -> None:
    try:
        asyncio.run(delete_topics(bootstrap_servers, [topic]))
    except (KafkaError, ConnectionError) as error:
        err_console.print(f"could not delete the backfill topic {topic} ({error}): delete it")
