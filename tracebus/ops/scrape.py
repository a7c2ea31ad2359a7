"""Scraping the Prometheus endpoints of tracebus workers: the few numbers an operator looks at."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class WorkerMetric:
    """One line of the summary: the sum of these metric families, over every label."""

    label: str
    families: tuple[str, ...]
    counter: bool  # counters get a per-second rate; gauges are shown as they are


WORKER_METRICS = (
    WorkerMetric("records", ("tracebus_stream_records", "tracebus_sink_records"), True),
    WorkerMetric("events applied", ("tracebus_stream_events",), True),
    WorkerMetric("traces published", ("tracebus_stream_traces_published",), True),
    WorkerMetric("delivered", ("tracebus_sink_delivered",), True),
    WorkerMetric("retries", ("tracebus_sink_retries",), True),
    WorkerMetric(
        "dead letters", ("tracebus_stream_dead_letters", "tracebus_sink_dead_letters"), True
    ),
    WorkerMetric("open traces", ("tracebus_stream_open_traces",), False),
    WorkerMetric("pending", ("tracebus_sink_pending",), False),
    WorkerMetric("consumer lag", ("tracebus_sink_consumer_lag",), False),
    WorkerMetric("destination failing", ("tracebus_sink_destination_failing",), False),
    WorkerMetric("gateway requests", ("tracebus_gateway_requests",), True),
    WorkerMetric("gateway events", ("tracebus_gateway_events",), True),
)


def metrics_url(address: str) -> str:
    """`host:port` → `http://host:port/metrics`; full URLs are kept."""
    url = address if "://" in address else f"http://{address}"
    scheme, _, rest = url.partition("://")
    return url if "/" in rest else f"{scheme}://{rest}/metrics"


@dataclass
class Snapshot:
    """What one scrape of one endpoint found."""

    url: str
    taken_at: float  # time.monotonic()
    values: dict[str, float] = field(default_factory=dict)  # WorkerMetric.label → value
    roles: list[str] = field(default_factory=list)  # stream, sink:<destination>, gateway
    error: str | None = None


def parse_metrics(url: str, text: str, taken_at: float) -> Snapshot:
    """A snapshot of the tracebus metrics in Prometheus text `text`."""
    wanted = {family: metric for metric in WORKER_METRICS for family in metric.families}
    snapshot = Snapshot(url, taken_at)
    roles: set[str] = set()
    for family in text_string_to_metric_families(text):
        if family.name.startswith("tracebus_stream_"):
            roles.add("stream")
        elif family.name.startswith("tracebus_gateway_"):
            roles.add("gateway")
        for sample in family.samples:
            if family.name.startswith("tracebus_sink_") and "destination" in sample.labels:
                roles.add(f"sink:{sample.labels['destination']}")
        metric = wanted.get(family.name)
        if metric is None:
            continue
        # Counters expose `<name>_total` (and `<name>_created`, a timestamp), gauges `<name>`.
        names = {family.name, f"{family.name}_total"}
        total = sum(sample.value for sample in family.samples if sample.name in names)
        snapshot.values[metric.label] = snapshot.values.get(metric.label, 0.0) + total
    snapshot.roles = sorted(roles)
    return snapshot


async def scrape(client: httpx.AsyncClient, address: str) -> Snapshot:
    """Scrape one endpoint; failures are reported in `Snapshot.error`, never raised."""
    url = metrics_url(address)
    try:
        response = await client.get(url)
        response.raise_for_status()
        return parse_metrics(url, response.text, time.monotonic())
    except httpx.HTTPError as error:
        return Snapshot(url, time.monotonic(), error=f"{type(error).__name__}: {error}")
    except ValueError as error:  # not the Prometheus text format
        return Snapshot(url, time.monotonic(), error=f"unreadable metrics: {error}")


@dataclass(frozen=True)
class WorkerReport:
    """The latest values of one endpoint and, for counters, their rate between two scrapes."""

    url: str
    roles: list[str]
    values: dict[str, float]
    per_second: dict[str, float]
    error: str | None = None


def compare(first: Snapshot, second: Snapshot) -> WorkerReport:
    """`second`'s values, with the per-second rate of each counter since `first`."""
    per_second: dict[str, float] = {}
    elapsed = second.taken_at - first.taken_at
    if first.error is None and second.error is None and elapsed > 0:
        for metric in WORKER_METRICS:
            if metric.counter and metric.label in first.values and metric.label in second.values:
                change = second.values[metric.label] - first.values[metric.label]
                # A restart resets counters: no rate rather than a negative one.
                if change >= 0:
                    per_second[metric.label] = change / elapsed
    return WorkerReport(second.url, second.roles, second.values, per_second, second.error)


async def scrape_workers(
    addresses: list[str], rate_window: float = 1.0, timeout: float = 5.0
) -> list[WorkerReport]:
    """Scrape every endpoint; with `rate_window` > 0, twice that far apart to get rates."""
    async with httpx.AsyncClient(timeout=timeout) as client:
        first = await asyncio.gather(*(scrape(client, address) for address in addresses))
        if rate_window <= 0:
            return [compare(snapshot, snapshot) for snapshot in first]
        # Rates need two samples: this wait is the measurement, not synchronisation.
        await asyncio.sleep(rate_window)
        second = await asyncio.gather(*(scrape(client, address) for address in addresses))
    return [compare(a, b) for a, b in zip(first, second, strict=True)]
