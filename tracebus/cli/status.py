"""`tracebus status`: consumer-group lag, dead letters per stage, and the workers' own numbers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated

import typer
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
    fail,
    require_broker,
    safe_servers,
)
from tracebus.cli.dlq import ProgressGroup, run_against_kafka
from tracebus.cli.sink import Destination
from tracebus.config import KafkaSettings
from tracebus.ops.deadletters import DEFAULT_MAX_SCAN, DeadLetterSummary, summarize_by_stage
from tracebus.ops.groups import DEFAULT_STREAM_APP_ID, GroupStatus, group_statuses
from tracebus.ops.redrive import DEFAULT_PROGRESS_GROUP, awaiting_redrive
from tracebus.ops.scrape import WORKER_METRICS, WorkerReport, scrape_workers
from tracebus.ops.topic_reader import MissingTopicError

STATUS_PANEL = "Status"


@dataclass(frozen=True)
class Overview:
    groups: list[GroupStatus]
    dead_letters: DeadLetterSummary | None  # None: no dead-letter topic
    awaiting_redrive: dict[str, int]
    workers: list[WorkerReport]


async def _dead_letters(
    settings: KafkaSettings, max_scan: int, progress_group: str, timeout: float
) -> tuple[DeadLetterSummary | None, dict[str, int]]:
    servers, topic = settings.bootstrap_servers, settings.dead_letter_topic
    try:
        summary = await summarize_by_stage(servers, topic, max_scan, timeout)
    except MissingTopicError:
        return None, {}
    return summary, await awaiting_redrive(servers, topic, summary, progress_group)


async def _overview(
    settings: KafkaSettings,
    stream_app_id: str,
    groups: list[str],
    metrics: list[str],
    max_scan: int,
    rate_window: float,
    progress_group: str,
    timeout: float,
) -> Overview:
    # The scrapes' rate window overlaps the Kafka reads instead of adding to them.
    workers = (
        asyncio.create_task(scrape_workers(metrics, rate_window, timeout)) if metrics else None
    )
    destinations = [destination.value for destination in Destination]
    statuses = await group_statuses(settings, stream_app_id, groups, destinations)
    summary, awaiting = await _dead_letters(settings, max_scan, progress_group, timeout)
    return Overview(statuses, summary, awaiting, await workers if workers else [])


def _number(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:,.2f}"


# Columns of the groups table taken from the scraped workers of each group's role:
# (heading, WorkerMetric label, per second).
GROUP_FIGURES = (
    ("delivered/s", "delivered", True),
    ("retries", "retries", False),
    ("dead letters", "dead letters", False),
    ("open traces", "open traces", False),
)


def _group_figure(workers: list[WorkerReport], role: str, label: str, per_second: bool) -> str:
    """The sum over the scraped workers in `role` (the members of one group); "-" if none."""
    sources = [(w.role_per_second if per_second else w.role_values).get(role) for w in workers]
    values = [source[label] for source in sources if source and label in source]
    if not values:
        return "-"
    return f"{sum(values):,.1f}" if per_second else _number(sum(values))


def _groups_table(groups: list[GroupStatus], servers: str, workers: list[WorkerReport]) -> Table:
    table = Table(title=f"consumer groups on {safe_servers(servers)}")
    # Names are what the operator acts on: wrapped when narrow, never cut short.
    for name in ("group", "role", "topic"):
        table.add_column(name, overflow="fold")
    table.add_column("lag", justify="right")
    table.add_column("members", justify="right")
    table.add_column("state")
    scraped = [worker for worker in workers if worker.error is None]
    for heading, _, _ in GROUP_FIGURES if scraped else ():
        table.add_column(heading, justify="right")
    for group in groups:
        if not group.partitions:  # a --group that committed nothing on the tracebus topics
            lag = "nothing committed"
        elif group.has_commits:
            lag = f"{group.lag:,}"
        else:
            lag = f"{group.lag:,} (nothing committed)"
        figures = (
            [_group_figure(scraped, group.role, label, rate) for _, label, rate in GROUP_FIGURES]
            if scraped
            else []
        )
        table.add_row(
            Text(group.group),
            Text(group.role),
            Text(", ".join(group.topics) or "-"),
            lag,
            "?" if group.members is None else str(group.members),
            Text(group.state or "?"),
            *figures,
        )
    return table


def _partitions_table(groups: list[GroupStatus]) -> Table:
    table = Table(title="committed and end offsets per partition")
    table.add_column("group")
    table.add_column("topic")
    table.add_column("partition", justify="right")
    table.add_column("committed", justify="right")
    table.add_column("end", justify="right")
    table.add_column("lag", justify="right")
    for group in groups:
        for p in group.partitions:
            committed = "-" if p.committed is None else f"{p.committed:,}"
            table.add_row(
                Text(group.group),
                Text(p.topic),
                str(p.partition),
                committed,
                f"{p.bounds.end:,}",
                f"{p.lag:,}",
            )
    return table


def _dead_letters_table(summary: DeadLetterSummary, awaiting: dict[str, int], topic: str) -> Table:
    read = "all" if summary.complete else f"newest {summary.examined:,} of {summary.in_topic:,}"
    table = Table(title=f"dead letters in {topic} ({read} read)")
    table.add_column("stage")
    table.add_column("dead letters", justify="right")
    table.add_column("not redriven yet", justify="right")
    for stage in summary.stages:
        pending = awaiting.get(stage.stage)
        table.add_row(
            Text(stage.stage or "(no stage header)"),
            f"{stage.count:,}",
            "-" if pending is None else f"{pending:,}",
        )
    return table


def _worker_table(worker: WorkerReport) -> Table:
    roles = ", ".join(worker.roles) or "no tracebus metrics"
    table = Table(title=f"{worker.url} ({roles})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("per second", justify="right")
    for metric in WORKER_METRICS:
        if metric.label not in worker.values:
            continue
        rate = worker.per_second.get(metric.label)
        table.add_row(
            metric.label,
            _number(worker.values[metric.label]),
            "-" if rate is None else f"{rate:,.1f}/s",
        )
    return table


def status(
    bootstrap_servers: BootstrapServers = DEFAULT_BOOTSTRAP_SERVERS,
    events_topic: EventsTopic = DEFAULT_EVENTS_TOPIC,
    traces_topic: TracesTopic = DEFAULT_TRACES_TOPIC,
    dead_letter_topic: DeadLetterTopic = DEFAULT_DEAD_LETTER_TOPIC,
    timeout: Timeout = DEFAULT_TIMEOUT,
    group: Annotated[
        list[str] | None,
        typer.Option(
            "--group",
            "-g",
            help="Also show this consumer group (repeatable).",
            rich_help_panel=STATUS_PANEL,
        ),
    ] = None,
    stream_app_id: Annotated[
        str,
        typer.Option(
            envvar="TRACEBUS_APP_ID",
            help="The stream workers' app id, which is their consumer group.",
            rich_help_panel=STATUS_PANEL,
        ),
    ] = DEFAULT_STREAM_APP_ID,
    metrics: Annotated[
        list[str] | None,
        typer.Option(
            "--metrics",
            "-m",
            metavar="URL",
            help="Prometheus endpoint of a worker, e.g. 127.0.0.1:9464 (repeatable).",
            rich_help_panel=STATUS_PANEL,
        ),
    ] = None,
    rate_window: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Seconds between the two scrapes that give per-second rates; 0 for none.",
            rich_help_panel=STATUS_PANEL,
        ),
    ] = 1.0,
    dlq_scan: Annotated[
        int,
        typer.Option(
            min=1,
            help="Dead letters read at most per partition to count them by stage.",
            rich_help_panel=STATUS_PANEL,
        ),
    ] = DEFAULT_MAX_SCAN,
    progress_group: ProgressGroup = DEFAULT_PROGRESS_GROUP,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Committed and end offsets of every partition.",
            rich_help_panel=STATUS_PANEL,
        ),
    ] = False,
) -> None:
    """Consumer-group lag, dead letters per stage and, with --metrics, worker throughput.

    Worker throughput: records, delivered, retries, dead letters, open traces, pending, with
    per-second rates from two scrapes --rate-window apart; per worker, and summed over the
    workers of each group (delivered/s, retries, dead letters, open traces columns).

    Groups shown: the stream's (its app id) and every tracebus-sink-* group that has members
    or committed offsets, and any --group even without either.
    Lag is the end offset minus the committed offset, summed over partitions (from the log
    start where nothing is committed). Exits 1 when a metrics endpoint cannot be scraped.
    """
    settings = build_settings(
        KafkaSettings,
        bootstrap_servers=bootstrap_servers,
        events_topic=events_topic,
        traces_topic=traces_topic,
        dead_letter_topic=dead_letter_topic,
    )
    require_broker(settings.bootstrap_servers, timeout)
    overview = run_against_kafka(
        lambda: _overview(
            settings,
            stream_app_id,
            group or [],
            metrics or [],
            dlq_scan,
            rate_window,
            progress_group,
            timeout,
        ),
        settings.bootstrap_servers,
    )
    if overview.groups:
        console.print(_groups_table(overview.groups, settings.bootstrap_servers, overview.workers))
        if verbose:
            console.print(_partitions_table(overview.groups))
    else:
        console.print(
            "no tracebus consumer groups yet: they appear once `tracebus stream` and "
            "`tracebus sink` workers have run"
        )
    topic = settings.dead_letter_topic
    if overview.dead_letters is None:
        console.print(f"dead-letter topic {topic} does not exist (`tracebus topics create`)")
    elif not overview.dead_letters.stages:
        console.print(f"no dead letters in {topic}")
    else:
        console.print(_dead_letters_table(overview.dead_letters, overview.awaiting_redrive, topic))
    for worker in overview.workers:
        if worker.error is None:
            console.print(_worker_table(worker))
    failed = [worker for worker in overview.workers if worker.error is not None]
    if failed:
        fail(
            "cannot scrape " + "; ".join(f"{w.url}: {w.error}" for w in failed),
            ExitCode.CHECK_FAILED,
        )
