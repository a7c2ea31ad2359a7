"""Scraping workers' Prometheus endpoints: totals of the tracebus metrics, rates of counters."""

from __future__ import annotations

import asyncio

import httpx

from ops.ops_helpers import metrics_endpoint, routed_sink_registry, worker_registry
from tracebus.kafka.broker import free_port
from tracebus.ops.groups import group_role
from tracebus.ops.scrape import compare, metrics_url, scrape, scrape_workers


def test_addresses_become_metrics_urls() -> None:
    assert metrics_url("127.0.0.1:9464") == "http://127.0.0.1:9464/metrics"
    assert metrics_url("http://worker:9464") == "http://worker:9464/metrics"
    assert metrics_url("https://worker/prom/metrics") == "https://worker/prom/metrics"


def test_a_scrape_sums_each_metric_over_its_labels_and_workers() -> None:
    registry, _, _ = worker_registry()
    with metrics_endpoint(registry) as address:
        (report,) = asyncio.run(scrape_workers([address], rate_window=0))

    assert report.error is None
    assert report.roles == ["sink:langfuse", "stream"]
    assert report.values == {
        "records": 160,
        "events applied": 0,
        "traces published": 0,
        "delivered": 38,
        "retries": 5,
        "dead letters": 5,
        "open traces": 7,
        "pending": 3,
        "consumer lag": 0,
        "destination failing": 0,
    }
    assert report.per_second == {}


def test_a_sink_with_routes_has_the_role_of_each_routes_group_with_that_routes_figures() -> None:
    with metrics_endpoint(routed_sink_registry()) as address:
        (report,) = asyncio.run(scrape_workers([address], rate_window=0))

    assert report.roles == ["sink:langfuse", "sink:langfuse.shop"]
    assert group_role("tracebus-sink-langfuse.shop", "tracebus-stream") == "sink:langfuse.shop"
    assert report.values["delivered"] == 12
    own, shop = report.role_values["sink:langfuse"], report.role_values["sink:langfuse.shop"]
    assert (own["delivered"], own["dead letters"], own["destination failing"]) == (5, 0, 0)
    assert (shop["delivered"], shop["dead letters"], shop["destination failing"]) == (7, 2, 1)


def test_counters_get_a_rate_between_two_scrapes() -> None:
    registry, _, sink = worker_registry()

    async def twice() -> tuple:
        async with httpx.AsyncClient() as client:
            first = await scrape(client, address)
            sink.delivered.inc(10)
            sink.pending.set(0)
            return first, await scrape(client, address)

    with metrics_endpoint(registry) as address:
        first, second = asyncio.run(twice())

    report = compare(first, second)
    elapsed = second.taken_at - first.taken_at
    assert report.per_second["delivered"] == 10 / elapsed
    assert report.per_second["records"] == 0
    assert "pending" not in report.per_second  # a gauge: its value is the news
    assert report.values["pending"] == 0


def test_an_endpoint_that_does_not_answer_is_reported() -> None:
    (report,) = asyncio.run(scrape_workers([f"127.0.0.1:{free_port()}"], rate_window=0))

    assert report.error is not None and "ConnectError" in report.error
    assert report.values == {}
