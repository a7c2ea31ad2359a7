"""`tracebus replay`: re-deliver a range of the traces topic to one destination."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from aiokafka import AIOKafkaConsumer, TopicPartition

from tracebus.cli.common import (
    DEFAULT_BOOTSTRAP_SERVERS,
    DEFAULT_DEAD_LETTER_TOPIC,
    DEFAULT_TIMEOUT,
    DEFAULT_TRACES_TOPIC,
    BootstrapServers,
    DeadLetterTopic,
    ExitCode,
    StopSignals,
    Timeout,
    TracesTopic,
    build_settings,
    console,
    fail,
    progress_bar,
    require_broker,
)
from tracebus.cli.sink import (
    DEFAULT_JSONL_DIR,
    Destination,
    JsonlDir,
    deliveries_from_environment,
    delivery_runtimes,
)
from tracebus.kafka.connection import kafka_options
from tracebus.ops.topic_reader import offset_bounds
from tracebus.sinks.runtime import DeliveryRuntime, ReplayRange, run_together
from tracebus.sinks.settings import SinkSettings

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(value: str) -> datetime:
    """An ISO-8601 time (UTC if no zone) or a span back from now: 30m, 2h, 1d."""
    relative = _RELATIVE.match(value.strip())
    if relative:
        return datetime.now(UTC) - timedelta(seconds=float(relative[1]) * _UNITS[relative[2]])
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is neither ISO-8601 nor like 30m, 2h, 1d") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


async def replay_range(
    bootstrap_servers: str,
    topic: str,
    since: datetime | None,
    until: datetime | None,
    from_offset: int | None,
    to_offset: int | None,
) -> ReplayRange:
    """Per partition: where the range starts and where it ends (exclusive)."""
    consumer = AIOKafkaConsumer(**kafka_options(bootstrap_servers), enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(await _partitions(consumer, topic))]
        bounds = await offset_bounds(consumer, partitions)
        starts = {p: bounds[p].start for p in partitions}
        ends = {p: bounds[p].end for p in partitions}
        if since is not None:
            found = await consumer.offsets_for_times(
                {p: int(since.timestamp() * 1000) for p in partitions}
            )
            starts = {p: found[p].offset if found[p] else ends[p] for p in partitions}
        if until is not None:
            found = await consumer.offsets_for_times(
                {p: int(until.timestamp() * 1000) for p in partitions}
            )
            ends = {p: found[p].offset if found[p] else ends[p] for p in partitions}
        if from_offset is not None:
            starts = {p: max(starts[p], from_offset) for p in partitions}
        if to_offset is not None:
            ends = {p: min(ends[p], to_offset) for p in partitions}
        return ReplayRange(
            start=starts,
            end=ends,
            since_ms=None if since is None else int(since.timestamp() * 1000),
            until_ms=None if until is None else int(until.timestamp() * 1000),
        )
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        await consumer.topics()
        partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        fail(f"topic {topic} does not exist", ExitCode.CHECK_FAILED)
    return partitions


def replay(
    destination: Annotated[Destination, typer.Argument(help="The destination to re-deliver to.")],
    since: Annotated[
        str | None,
        typer.Option(help="Start of the range: ISO-8601 time, or 30m / 2h / 1d back from now."),
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="End of the range (exclusive); default: the topic's end.")
    ] = None,
    from_offset: Annotated[
        int | None, typer.Option(min=0, help="First offset, in every partition.")
    ] = None,
    to_offset: Annotated[
        int | None, typer.Option(min=0, help="End offset (exclusive), in every partition.")
    ] = None,
    project: Annotated[
        str | None,
        typer.Option(
            help="Only this project's traces, to its route of TRACEBUS_ROUTES_FILE or else the "
            "destination's own (after an outage of that project's destination alone).",
        ),
    ] = None,
    out: JsonlDir = DEFAULT_JSONL_DIR,
    bootstrap_servers: BootstrapServers = DEFAULT_BOOTSTRAP_SERVERS,
    traces_topic: TracesTopic = DEFAULT_TRACES_TOPIC,
    dead_letter_topic: DeadLetterTopic = DEFAULT_DEAD_LETTER_TOPIC,
    timeout: Timeout = DEFAULT_TIMEOUT,
) -> None:
    """Re-deliver a time or offset range of the traces topic to one destination.

    Runs through a consumer group of its own (the live sinks are not disturbed) with the
    same batching, retries and dead letters as `tracebus sink`. Destinations see no
    duplicates: every object has a deterministic id, so what they already have is replaced
    or acknowledged as known. Credentials and the routes file come from the same TRACEBUS_*
    variables as `tracebus sink`: each project's traces go to its route's destination
    (--project: one project's alone). Exits 0 when the whole range is delivered or
    dead-lettered.
    """
    if since is None and from_offset is None:
        fail("say where the replay starts: --since or --from-offset", ExitCode.USAGE)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    settings = build_settings(
        SinkSettings,
        bootstrap_servers=bootstrap_servers,
        traces_topic=traces_topic,
        dead_letter_topic=dead_letter_topic,
        group_id=f"tracebus-replay-{destination}-{stamp}",
    )
    require_broker(settings.bootstrap_servers, timeout)
    routed = deliveries_from_environment(destination, out, project)
    span = asyncio.run(
        replay_range(
            settings.bootstrap_servers,
            settings.traces_topic,
            parse_time(since) if since else None,
            parse_time(until) if until else None,
            from_offset,
            to_offset,
        )
    )
    if span.total == 0:
        console.print("nothing to replay in that range")
        return
    runtimes = delivery_runtimes(routed, settings, span)
    complete = asyncio.run(deliver_with_progress(runtimes, span.total, "replay"))
    if not complete:
        fail(
            f"interrupted: {delivery_summary(runtimes)} of {span.total:,} records; replay the "
            "same range again for the rest (destinations replace what they already have)",
            ExitCode.INTERRUPTED,
        )
    console.print(
        f"replayed {span.total:,} records to {destination}: {delivery_summary(runtimes)} "
        f"(group {settings.group(destination)})"
    )


def delivery_summary(runtimes: list[DeliveryRuntime]) -> str:
    counts = [runtime.counts for runtime in runtimes]
    return (
        f"{sum(c.delivered for c in counts):,} delivered, "
        f"{sum(c.superseded for c in counts):,} superseded by a higher revision, "
        f"{sum(c.retries for c in counts):,} retries, "
        f"{sum(c.dead_lettered for c in counts):,} dead-lettered"
    )


async def deliver_with_progress(runtimes: list[DeliveryRuntime], total: int, label: str) -> bool:
    """Run replaying runtimes to the end of their range, or until Ctrl-C or SIGTERM: they then
    deliver what they have taken on and commit, as a stopping sink does (a second signal
    stops at once). Each route's runtime reads the whole range: the bar shows how far the
    slowest is. True when the whole range was delivered or dead-lettered."""
    stop = asyncio.Event()
    with StopSignals() as signals, progress_bar() as progress:
        task = progress.add_task(label, total=total)
        running = asyncio.create_task(run_together(runtimes, stop))
        while not running.done():
            if signals.event.is_set():
                stop.set()
            progress.update(task, completed=min(r.replayed_records() for r in runtimes))
            await asyncio.wait([running], timeout=0.2)
        done = min(r.replayed_records() for r in runtimes)
        progress.update(task, completed=done)
        running.result()
    return done >= total
