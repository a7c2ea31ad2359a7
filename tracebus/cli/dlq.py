"""`tracebus dlq list|show|redrive`: inspect dead letters and send them back once fixed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import orjson
import typer
from aiokafka.errors import KafkaError
from rich.table import Table
from rich.text import Text

from tracebus.cli.common import (
    DEFAULT_BOOTSTRAP_SERVERS,
    DEFAULT_DEAD_LETTER_TOPIC,
    DEFAULT_EVENTS_TOPIC,
    DEFAULT_TIMEOUT,
    DEFAULT_TRACES_TOPIC,
    BootstrapServers,
    DeadLetterTopic,
    EventsTopic,
    ExitCode,
    Timeout,
    TracesTopic,
    build_settings,
    console,
    err_console,
    fail,
    progress_bar,
    require_broker,
    safe_servers,
)
from tracebus.config import KafkaSettings
from tracebus.ops.deadletters import (
    DEFAULT_MAX_SCAN,
    RESPONSE_HEADER,
    SOURCE_HEADER,
    DeadLetterPage,
    dead_letter_at,
    list_dead_letters,
)
from tracebus.ops.redrive import (
    DEFAULT_PROGRESS_GROUP,
    OffsetRange,
    RedriveFailed,
    RedriveReport,
    RedriveRequest,
    redrive_dead_letters,
)
from tracebus.ops.topic_reader import MissingTopicError

T = TypeVar("T")
HEX_PREVIEW_BYTES = 256
DRY_RUN_ROWS = 100

app = typer.Typer(
    help="Dead letters: list them, show one in full, redrive them to where they came from.",
    no_args_is_help=True,
)

StageFilter = Annotated[
    str | None,
    typer.Option(
        "--stage",
        help="Only dead letters of this stage: stream, stream:publish (trace documents the "
        "traces topic refused), sink:langfuse, sink:langsmith, … (stream and sink also mean "
        "every stage under them).",
    ),
]
ProgressGroup = Annotated[
    str,
    typer.Option(
        envvar="TRACEBUS_REDRIVE_GROUP",
        help="Consumer groups keeping redrive progress: <this>.<stage> on the dead-letter topic.",
    ),
]


def run_against_kafka(work: Callable[[], Coroutine[Any, Any, T]], bootstrap_servers: str) -> T:
    """Run `work`; exit 1 when a topic is missing, 3 when Kafka stops answering."""
    try:
        return asyncio.run(work())
    except MissingTopicError as error:
        fail(
            f"{error}: create the tracebus topics with `tracebus topics create`",
            ExitCode.CHECK_FAILED,
        )
    except (ConnectionError, KafkaError, OSError, TimeoutError) as error:
        fail(
            f"cannot talk to Kafka at {safe_servers(bootstrap_servers)}: {error}",
            ExitCode.UNREACHABLE,
        )


def _utc(timestamp_ms: int) -> str:
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / (1024 * 1024):.1f} MiB"


def _shorten(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _place(partition: int, offset: int) -> str:
    """Where a dead letter is: its offset, as `partition/offset` outside partition 0."""
    return str(offset) if partition == 0 else f"{partition}/{offset}"


def _letters_table(
    page: DeadLetterPage, topic: str, newest_first: bool, reason_width: int
) -> Table:
    order = "newest first" if newest_first else "oldest first"
    table = Table(
        title=f"dead letters in {topic} ({order})",
        caption=f"{len(page.letters)} shown · {page.examined} of {page.in_topic} examined · "
        "details: tracebus dlq show OFFSET",
    )
    table.add_column("offset", justify="right")
    table.add_column("time (UTC)", no_wrap=True)
    table.add_column("stage", no_wrap=True)
    table.add_column("reason")
    table.add_column("status", justify="right")
    table.add_column("source", no_wrap=True)
    table.add_column("key / trace id", no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    for letter in page.letters:
        source = letter.source
        table.add_row(
            _place(letter.partition, letter.offset),
            _utc(letter.timestamp_ms),
            Text(letter.stage or "-"),
            Text(_shorten(letter.reason, reason_width) or "-"),
            Text(letter.status or "-"),
            Text(str(source) if source else letter.header(SOURCE_HEADER) or "-"),
            Text(letter.key_text or "-"),
            _size(letter.size),
        )
    return table


def _settings(**values: Any) -> KafkaSettings:
    return build_settings(KafkaSettings, **values)


@app.command(
    "list",
    epilog="Examples: [cyan]tracebus dlq list[/cyan] · "
    "[cyan]tracebus dlq list --stage sink:langfuse --limit 50[/cyan] · "
    "[cyan]tracebus dlq list --from-beginning[/cyan]",
)
def list_command(
    bootstrap_servers: BootstrapServers = DEFAULT_BOOTSTRAP_SERVERS,
    dead_letter_topic: DeadLetterTopic = DEFAULT_DEAD_LETTER_TOPIC,
    timeout: Timeout = DEFAULT_TIMEOUT,
    stage: StageFilter = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, help="Dead letters to show at most.")
    ] = 20,
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Oldest first instead of newest first.")
    ] = False,
    scan: Annotated[
        int,
        typer.Option(
            min=1, help="Read at most this many dead letters per partition looking for matches."
        ),
    ] = DEFAULT_MAX_SCAN,
    reason_width: Annotated[
        int, typer.Option(min=10, help="Characters of the reason shown (the rest is cut).")
    ] = 60,
) -> None:
    """List dead letters with why and where they failed, newest first."""
    settings = _settings(bootstrap_servers=bootstrap_servers, dead_letter_topic=dead_letter_topic)
    require_broker(settings.bootstrap_servers, timeout)
    page = run_against_kafka(
        lambda: list_dead_letters(
            settings.bootstrap_servers,
            settings.dead_letter_topic,
            limit=limit,
            stage=stage,
            newest_first=not from_beginning,
            max_scan=scan,
            idle_timeout=timeout,
        ),
        settings.bootstrap_servers,
    )
    if not page.letters:
        of_stage = f" of stage {stage}" if stage else ""
        console.print(
            f"no dead letters{of_stage} in {settings.dead_letter_topic} "
            f"({page.examined} of {page.in_topic} examined)"
        )
        return
    console.print(
        _letters_table(page, settings.dead_letter_topic, not from_beginning, reason_width)
    )


# -- show -----------------------------------------------------------------------------------------


def _pretty_json(data: bytes | str) -> str | None:
    """`data` indented if it is JSON; None if it is not."""
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return orjson.dumps(parsed, option=orjson.OPT_INDENT_2).decode()


def _hex_preview(data: bytes, limit: int = HEX_PREVIEW_BYTES) -> str:
    """`offset  hex bytes  printable` lines, 16 bytes each, of the first `limit` bytes."""
    lines = []
    for start in range(0, min(len(data), limit), 16):
        chunk = data[start : min(start + 16, limit)]
        printable = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{start:08x}  {chunk.hex(' '):<47}  {printable}")
    return "\n".join(lines)


@app.command(
    "show",
    epilog="Examples: [cyan]tracebus dlq show 42[/cyan] · "
    "[cyan]tracebus dlq show 42 -b kafka:9092 > letter.txt[/cyan]",
)
def show(
    offset: Annotated[int, typer.Argument(min=0, help="Offset of the dead letter.")],
    partition: Annotated[
        int,
        typer.Option(min=0, help="Partition of the dead-letter topic (tracebus creates one)."),
    ] = 0,
    bootstrap_servers: BootstrapServers = DEFAULT_BOOTSTRAP_SERVERS,
    dead_letter_topic: DeadLetterTopic = DEFAULT_DEAD_LETTER_TOPIC,
    timeout: Timeout = DEFAULT_TIMEOUT,
) -> None:
    """Show one dead letter: every header (the destination's response too) and its value,
    indented when it is JSON, else as hex. Exits 1 when there is no such offset."""
    settings = _settings(bootstrap_servers=bootstrap_servers, dead_letter_topic=dead_letter_topic)
    require_broker(settings.bootstrap_servers, timeout)
    letter = run_against_kafka(
        lambda: dead_letter_at(
            settings.bootstrap_servers, settings.dead_letter_topic, offset, partition, timeout
        ),
        settings.bootstrap_servers,
    )
    if letter is None:
        fail(
            f"no dead letter at offset {offset} of {settings.dead_letter_topic}[{partition}]: "
            "see `tracebus dlq list`",
            ExitCode.CHECK_FAILED,
        )
    table = Table(title=f"dead letter {offset} of {settings.dead_letter_topic}[{partition}]")
    table.add_column("field", no_wrap=True)
    table.add_column("value")
    table.add_row("time (UTC)", _utc(letter.timestamp_ms))
    table.add_row("key", Text(letter.key_text if letter.key_text is not None else "(none)"))
    table.add_row("size", f"{letter.size} bytes")
    for name, raw in letter.headers:
        text = raw.decode("utf-8", "replace")
        if name == RESPONSE_HEADER:
            text = _pretty_json(raw) or text
        table.add_row(Text(name), Text(text))
    console.print(table)
    pretty = _pretty_json(letter.value) if letter.value else None
    if pretty is not None:
        console.print(f"[b]value[/b] ({letter.size} bytes, JSON):")
        console.print(Text(pretty))
    else:
        shown = min(letter.size, HEX_PREVIEW_BYTES)
        console.print(f"[b]value[/b] ({letter.size} bytes, not JSON; first {shown} as hex):")
        console.print(Text(_hex_preview(letter.value)))


# -- redrive --------------------------------------------------------------------------------------


def _offset_range(text: str | None) -> OffsetRange | None:
    if text is None:
        return None
    try:
        return OffsetRange.parse(text)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


def _routes_table(report: RedriveReport) -> Table:
    title = "would redrive (dry run)" if report.dry_run else "redriven"
    table = Table(title=title)
    table.add_column("stage")
    table.add_column("to topic")
    table.add_column("dead letters", justify="right")
    for (stage, topic), count in sorted(report.routes().items()):
        table.add_row(Text(stage), Text(topic), str(count))
    return table


def _dry_run_table(report: RedriveReport) -> Table:
    table = Table(title="dead letters a redrive would send (dry run)")
    table.add_column("offset", justify="right")
    table.add_column("stage")
    table.add_column("key / trace id")
    table.add_column("to")
    for letter in report.redriven[:DRY_RUN_ROWS]:
        partition = letter.target_partition
        where = letter.topic if partition is None else f"{letter.topic}[{partition}]"
        table.add_row(
            _place(letter.partition, letter.offset),
            Text(letter.stage),
            Text(letter.key or "-"),
            Text(where),
        )
    if len(report.redriven) > DRY_RUN_ROWS:
        table.caption = f"the first {DRY_RUN_ROWS} of {len(report.redriven)}"
    return table


def _summary(report: RedriveReport) -> str:
    verb = "would redrive" if report.dry_run else "redriven"
    parts = [f"{verb} {len(report.redriven)} of {report.examined} dead letters examined"]
    if report.already_redriven:
        parts.append(f"{report.already_redriven} redriven before (--all re-sends them)")
    if report.other_stages:
        parts.append(f"{report.other_stages} of other stages")
    if report.unredrivable:
        parts.append(f"{len(report.unredrivable)} cannot be redriven")
    return "; ".join(parts)


def _print_report(report: RedriveReport) -> None:
    if report.redriven:
        console.print(_dry_run_table(report) if report.dry_run else _routes_table(report))
    console.print(_summary(report))
    if report.dry_run:
        console.print("dry run: nothing sent, progress unchanged")


@app.command(
    "redrive",
    epilog="Examples: [cyan]tracebus dlq redrive --stage sink:langfuse --dry-run[/cyan] · "
    "[cyan]tracebus dlq redrive --stage stream[/cyan] · "
    "[cyan]tracebus dlq redrive --offsets 120-180[/cyan] · "
    "[cyan]tracebus dlq redrive --all[/cyan]"
    "\n\nExits 1 when some selected dead letters cannot be redriven (no or unknown stage), "
    "3 when Kafka stops answering (the progress made is kept; run again to continue).",
)
def redrive_command(
    stage: StageFilter = None,
    offsets: Annotated[
        str | None,
        typer.Option(
            "--offsets",
            metavar="A-B",
            help="Only these dead-letter offsets (A-B or A), even if redriven before.",
        ),
    ] = None,
    everything: Annotated[
        bool,
        typer.Option("--all", help="Every dead letter, even those redriven before."),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be sent; send and commit nothing.")
    ] = False,
    progress_group: ProgressGroup = DEFAULT_PROGRESS_GROUP,
    bootstrap_servers: BootstrapServers = DEFAULT_BOOTSTRAP_SERVERS,
    events_topic: EventsTopic = DEFAULT_EVENTS_TOPIC,
    traces_topic: TracesTopic = DEFAULT_TRACES_TOPIC,
    dead_letter_topic: DeadLetterTopic = DEFAULT_DEAD_LETTER_TOPIC,
    timeout: Timeout = DEFAULT_TIMEOUT,
) -> None:
    """Re-send dead letters to where they came from, once the cause is fixed.

    Stream dead letters go back to the events topic, sink dead letters to the traces topic,
    with their key and source partition, marked tracebus-redriven-from: <dead-letter offset>.

    [b]Sink dead letters reach every sink:[/b] the traces topic is read by all of them. They
    carry tracebus-only-sink: <name>, which the other sinks skip; and destinations receive
    traces idempotently (deterministic ids), so a second delivery would change nothing.

    Each dead letter is redriven once: progress is committed per stage after each re-send, in
    the consumer group <progress group>.<stage> on the dead-letter topic, so the next redrive
    sends only what is new. --offsets and --all choose regardless of that progress. A letter
    that fails again becomes a new dead letter.
    """
    if everything and offsets is not None:
        fail("--offsets and --all exclude each other", ExitCode.USAGE)
    request = RedriveRequest(
        stage=stage,
        offsets=_offset_range(offsets),
        everything=everything,
        dry_run=dry_run,
        progress_group=progress_group,
    )
    settings = _settings(
        bootstrap_servers=bootstrap_servers,
        events_topic=events_topic,
        traces_topic=traces_topic,
        dead_letter_topic=dead_letter_topic,
    )
    require_broker(settings.bootstrap_servers, timeout)
    progress = progress_bar(stream=err_console)
    task = progress.add_task("examining dead letters", total=None)

    def examined(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    async def work() -> RedriveReport:
        try:
            return await redrive_dead_letters(
                settings, request, idle_timeout=timeout, on_examined=examined
            )
        except RedriveFailed as failure:
            progress.stop()
            _print_report(failure.report)
            raise failure.cause from None

    try:
        with progress:
            report = run_against_kafka(work, settings.bootstrap_servers)
    except KeyboardInterrupt:
        fail(
            "interrupted: what was redriven is committed; run again to continue",
            ExitCode.INTERRUPTED,
        )
    _print_report(report)
    if report.unredrivable:
        listed = ", ".join(
            f"{_place(u.partition, u.offset)} ({u.why})" for u in report.unredrivable[:10]
        )
        more = f" and {len(report.unredrivable) - 10} more" if len(report.unredrivable) > 10 else ""
        fail(f"cannot redrive dead letters at offsets {listed}{more}", ExitCode.CHECK_FAILED)
