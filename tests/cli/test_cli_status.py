"""`tracebus status`: consumer-group lag, dead letters per stage, workers' metrics."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from cli_helpers import kafka_options, poll, run_cli
from conftest import fresh_settings
from ops.ops_helpers import (
    commit_offsets,
    metrics_endpoint,
    routed_sink_registry,
    sink_letter,
    stream_letter,
    worker_registry,
    write_letters,
    write_records,
)
from streams.stream_helpers import WORKER_ENV
from workers import CliWorker

import tracebus
from tracebus.config import KafkaSettings
from tracebus.kafka import EmbeddedBroker
from tracebus.kafka.broker import free_port


def topic_options(kafka: KafkaSettings) -> list[str]:
    """Broker and topic options; status and redrive have no --partitions."""
    return kafka_options(kafka)[:-2]


def cells_of(output: str, first_cell: str) -> list[str]:
    """The cells of the table line whose first cell is `first_cell`."""
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.split("│") if cell.strip()]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in:\n{output}")


def test_status_shows_the_lag_of_groups_with_committed_offsets(kafka: KafkaSettings) -> None:
    suffix = uuid.uuid4().hex[:6]
    sink_group, stream_group = f"tracebus-sink-test{suffix}", f"stream-{suffix}"
    write_records(kafka.bootstrap_servers, kafka.traces_topic, {0: 5, 1: 3})
    write_records(kafka.bootstrap_servers, kafka.events_topic, {2: 4})
    traces = kafka.traces_topic
    commit_offsets(
        kafka.bootstrap_servers,
        sink_group,
        {TopicPartition(traces, 0): 2, TopicPartition(traces, 1): 3},
    )
    commit_offsets(
        kafka.bootstrap_servers, stream_group, {TopicPartition(kafka.events_topic, 2): 4}
    )

    result = run_cli("status", *topic_options(kafka), "--stream-app-id", stream_group, "-v")

    assert result.exit_code == 0, result.output
    assert cells_of(result.stdout, sink_group)[1:] == [
        f"sink:test{suffix}",
        traces,
        "3",
        "0",
        "Empty",
    ]
    assert cells_of(result.stdout, stream_group)[1:4] == ["stream", kafka.events_topic, "0"]
    # --verbose: a row per partition: group, topic, partition, committed, end, lag.
    partition_rows = [
        cells
        for line in result.stdout.splitlines()
        if (cells := [c.strip() for c in line.split("│") if c.strip()])
        and cells[:2] == [sink_group, traces]
        and len(cells) == 6
    ]
    assert [cells[2:] for cells in partition_rows] == [
        ["0", "2", "5", "3"],
        ["1", "3", "3", "0"],
        ["2", "-", "0", "0"],
        ["3", "-", "0", "0"],
    ]


@pytest.fixture
def own_broker() -> Iterator[EmbeddedBroker]:
    """A broker of this test's own: its workers use the default group names."""
    embedded = EmbeddedBroker(port=free_port())
    embedded.start()
    yield embedded
    embedded.stop()


def test_status_finds_the_groups_of_running_workers_and_shows_named_empty_ones(
    own_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    kafka = fresh_settings(own_broker.bootstrap_servers)
    env = kafka.worker_env()
    # Default app id and group: tracebus-stream and tracebus-sink-jsonl, which the embedded
    # broker does not list before they commit.
    stream_metrics, sink_metrics = free_port(), free_port()
    stream = CliWorker(
        ["stream", "--metrics-port", str(stream_metrics)],
        {**env, **WORKER_ENV},
        tmp_path / "stream.log",
    )
    sink = CliWorker(
        ["sink", "jsonl", "--out", str(tmp_path / "traces"), "--metrics-port", str(sink_metrics)],
        {**env, "TRACEBUS_LINGER_MS": "50"},
        tmp_path / "sink.log",
    )
    try:

        def running_groups() -> str | None:
            result = run_cli("status", *topic_options(kafka), "-g", "nobody")
            assert result.exit_code == 0, result.output
            shown = "tracebus-stream" in result.stdout and "tracebus-sink-jsonl" in result.stdout
            return result.stdout if shown else None

        before = poll(running_groups, 60, "both workers' groups in the status", sink.process)
        assert cells_of(before, "nobody")[1:4] == ["other", "-", "nothing committed"]

        client = tracebus.Client(**kafka.model_dump(), linger_ms=5)
        with client.trace("status-check"):
            pass
        assert client.close(10)

        def caught_up() -> str | None:
            result = run_cli(
                "status",
                *topic_options(kafka),
                *("-m", f"127.0.0.1:{stream_metrics}", "-m", f"127.0.0.1:{sink_metrics}"),
                *("--rate-window", "0.2"),
            )
            assert result.exit_code == 0, result.output
            sink_row = cells_of(result.stdout, "tracebus-sink-jsonl")
            stream_row = cells_of(result.stdout, "tracebus-stream")
            done = sink_row[3] == stream_row[3] == "0" and "(nothing" not in result.stdout
            return result.stdout if done else None

        after = poll(caught_up, 60, "both groups committed everything", stream.process)
        # group, role, topic, lag, members, state, then the figures of the group's workers:
        # delivered/s, retries, dead letters, open traces.
        sink_row = cells_of(after, "tracebus-sink-jsonl")
        assert sink_row[1:5] == ["sink:jsonl", kafka.traces_topic, "0", "1"]
        assert sink_row[6:] == ["0.0", "0", "0", "-"]
        stream_row = cells_of(after, "tracebus-stream")
        assert stream_row[1:5] == ["stream", kafka.events_topic, "0", "1"]
        assert stream_row[6:9] == ["-", "-", "0"]
        assert stream_row[9].isdigit()
        assert list((tmp_path / "traces").glob("*.jsonl"))
    finally:
        for worker in (sink, stream):
            assert worker.stop() == 0, worker.log_tail()


def test_status_counts_dead_letters_per_stage_and_what_is_left_to_redrive(
    kafka: KafkaSettings,
) -> None:
    write_letters(
        kafka,
        [
            stream_letter(kafka, "trace-a", 0, 0),
            sink_letter(kafka, "langfuse", "trace-b", 0, 0),
            sink_letter(kafka, "langfuse", "trace-c", 0, 1),
        ],
    )
    redriven = run_cli(
        "dlq", "redrive", *topic_options(kafka), "--stage", "sink:langfuse", "--offsets", "0-1"
    )
    assert redriven.exit_code == 0, redriven.output

    result = run_cli("status", *topic_options(kafka))

    assert result.exit_code == 0, result.output
    assert cells_of(result.stdout, "sink:langfuse")[1:] == ["2", "1"]
    assert cells_of(result.stdout, "stream")[1:] == ["1", "1"]
    assert "(all read)" in result.stdout


def test_status_shows_the_metrics_of_the_workers_it_scrapes(kafka: KafkaSettings) -> None:
    registry, _, _ = worker_registry()

    with metrics_endpoint(registry) as address:
        result = run_cli(
            "status", *topic_options(kafka), "--metrics", address, "--rate-window", "0.1"
        )

    assert result.exit_code == 0, result.output
    assert f"http://{address}/metrics (sink:langfuse, stream)" in result.stdout
    for metric, value in [
        ("records", "160"),
        ("delivered", "38"),
        ("retries", "5"),
        ("dead letters", "5"),
        ("open traces", "7"),
        ("pending", "3"),
    ]:
        assert cells_of(result.stdout, metric)[1] == value
    assert cells_of(result.stdout, "delivered")[2] == "0.0/s"
    assert cells_of(result.stdout, "pending")[2] == "-"


def test_status_shows_each_routes_group_with_the_figures_of_that_route(
    kafka: KafkaSettings,
) -> None:
    destination = f"langfuse{uuid.uuid4().hex[:6]}"  # groups of this test's own
    group = f"tracebus-sink-{destination}"
    write_records(kafka.bootstrap_servers, kafka.traces_topic, {0: 4})
    for route, offset in ((group, 4), (f"{group}.shop", 1)):
        commit_offsets(
            kafka.bootstrap_servers, route, {TopicPartition(kafka.traces_topic, 0): offset}
        )

    with metrics_endpoint(routed_sink_registry(destination)) as address:
        result = run_cli(
            "status", *topic_options(kafka), "--metrics", address, "--rate-window", "0"
        )

    assert result.exit_code == 0, result.output
    # group, role, topic, lag, members, state, delivered/s, retries, dead letters, open traces
    own, shop = cells_of(result.stdout, group), cells_of(result.stdout, f"{group}.shop")
    assert (own[1], own[3], own[-2]) == (f"sink:{destination}", "0", "0")
    assert (shop[1], shop[3], shop[-2]) == (f"sink:{destination}.shop", "3", "2")


def test_an_endpoint_that_cannot_be_scraped_exits_1(kafka: KafkaSettings) -> None:
    address = f"127.0.0.1:{free_port()}"

    result = run_cli("status", *topic_options(kafka), "--metrics", address, "--rate-window", "0")

    assert result.exit_code == 1, result.output
    assert f"cannot scrape http://{address}/metrics" in result.stderr


def test_an_unreachable_broker_exits_3() -> None:
    address = f"127.0.0.1:{free_port()}"

    result = run_cli("status", "--bootstrap-servers", address, "--timeout", "0.3")

    assert result.exit_code == 3, result.output
    assert f"no Kafka broker answers at {address}" in result.stderr
