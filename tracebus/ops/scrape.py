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
    # The same, per role: a sink process delivers for several routes.
    role_values: dict[str, dict[str, float]] = field(default_factory=dict)
    # stream, gateway, sink:<destination>, sink:<destination>.<project> (a route's)
    roles: list[str] = field(default_factory=list)
    error: str | None = None


_KINDS = {"tracebus_stream_": "stream", "tracebus_gateway_": "gateway", "tracebus_sink_": "sink"}


def _kind(family: str) -> str | None:
    """Which kind of worker exports `family`."""
    return next((kind for prefix, kind in _KINDS.items() if family.startswith(prefix)), None)


def _role(kind: str, labels: dict[str, str]) -> str | None:
    """The role a sample of a `kind` family shows, named as `tracebus.ops.groups.group_role`
    names groups: a sink's is its destination's, or its route's."""
    if kind != "sink":
        return kind
    if "destination" not in labels:
        return None
    project = labels.get("project")
    return f"sink:{labels['destination']}" + (f".{project}" if project else "")


def parse_metrics(url: str, text: str, taken_at: float) -> Snapshot:
    """A snapshot of the tracebus metrics in Prometheus text `text`."""
    wanted = {family: metric for metric in WORKER_METRICS for family in metric.families}
    snapshot = Snapshot(url, taken_at)
    roles: set[str] = set()
    shown: dict[str, set[str]] = {}  # kind → the labels of its metrics in the text
    for family in text_string_to_metric_families(text):
        kind = _kind(family.name)
        if kind is None:
            continue
        metric = wanted.get(family.name)
        if metric is not None:
            shown.setdefault(kind, set()).add(metric.label)
        if kind != "sink":
            roles.add(kind)
        # Counters expose `<name>_total` (and `<name>_created`, a timestamp), gauges `<name>`.
        names = {family.name, f"{family.name}_total"}
        for sample in family.samples:
            role = _role(kind, sample.labels)
            if role is None:
                continue
            roles.add(role)
            if metric is not None and sample.name in names:
                for values in (snapshot.values, snapshot.role_values.setdefault(role, {})):
                    values[metric.label] = values.get(metric.label, 0.0) + sample.value
    # A metric a worker shows is 0 before it counted anything (a labelled one has no sample).
    for role in roles:
        for label in shown.get(role.partition(":")[0], ()):
            snapshot.values.setdefault(label, 0.0)
            snapshot.role_values.setdefault(role, {}).setdefault(label, 0.0)
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
    role_values: dict[str, dict[str, float]] = field(default_factory=dict)
    role_per_second: dict[str, dict[str, float]] = field(default_factory=dict)


def compare(first: Snapshot, second: Snapshot) -> WorkerReport:
    """`second`'s values, with the per-second rate of each counter since `first`."""
    elapsed = second.taken_at - first.taken_at
    if first.error is not None or second.error is not None or elapsed <= 0:
        elapsed = 0.0
    return WorkerReport(
        second.url,
        second.roles,
        second.values,
        _rates(first.values, second.values, elapsed),
        second.error,
        second.role_values,
        {
            role: _rates(first.role_values.get(role, {}), values, elapsed)
            for role, values in second.role_values.items()
        },
    )


def _rates(first: dict[str, float], second: dict[str, float], elapsed: float) -> dict[str, float]:
    """Per second, the change of each counter between two scrapes `elapsed` seconds apart."""
    rates: dict[str, float] = {}
    if elapsed <= 0:
        return rates
    for metric in WORKER_METRICS:
        if metric.counter and metric.label in first and metric.label in second:
            change = second[metric.label] - first[metric.label]
            # A restart resets counters: no rate rather than a negative one.
            if change >= 0:
                rates[metric.label] = change / elapsed
    return rates


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
