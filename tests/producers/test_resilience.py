"""Delivery through broker outages, full buffers, forks and interpreter exit."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

from conftest import read_batches

import tracebus
from tracebus.config import KafkaSettings
from tracebus.kafka import EmbeddedBroker
from tracebus.kafka.broker import free_port
from tracebus.schemas import EventBatch, ObservationEvent


def ended_names(batches: list[EventBatch]) -> list[str]:
    return [
        e.name
        for b in batches
        for e in b.events
        if isinstance(e, ObservationEvent) and e.end_time_unix_nano is not None
    ]


def settings_on_a_dead_port(kafka: KafkaSettings) -> KafkaSettings:
    return kafka.model_copy(update={"bootstrap_servers": f"127.0.0.1:{free_port()}"})


def test_events_wait_for_a_broker_that_is_down_and_arrive_once_it_is_up(
    kafka: KafkaSettings,
) -> None:
    offline = settings_on_a_dead_port(kafka)
    client = tracebus.Client(**offline.model_dump(), linger_ms=5, retry_backoff_max_s=0.2)
    for i in range(40):
        with client.trace(f"trace-{i:02d}"), client.span(f"step-{i:02d}"):
            pass
    assert not client.flush(0.5)
    assert client.counters.sent == 0 and client.counters.buffered >= 80
    assert "cannot connect to Kafka" in (client.counters.last_error or "")

    port = int(offline.bootstrap_servers.rsplit(":", 1)[1])
    with EmbeddedBroker(port=port, topics=offline.topic_partitions()):
        assert client.flush(20)
        batches = read_batches(offline, lambda b: len(ended_names(b)) >= 80)
        client.close()
    names = ended_names(batches)
    assert sorted(names) == sorted(
        [f"trace-{i:02d}" for i in range(40)] + [f"step-{i:02d}" for i in range(40)]
    )
    counters = client.counters
    assert counters.dropped == 0 and counters.buffered == 0
    assert counters.accepted == counters.sent + counters.coalesced


def test_a_full_buffer_drops_the_oldest_events_and_counts_them(kafka: KafkaSettings) -> None:
    offline = settings_on_a_dead_port(kafka)
    client = tracebus.Client(
        **offline.model_dump(), buffer_max_bytes=64 * 1024, linger_ms=5, retry_backoff_max_s=0.2
    )
    for i in range(200):
        client.event(f"event-{i:03d}", input="x" * 1000)
    counters = client.counters
    assert counters.dropped > 0
    assert counters.buffered_bytes <= 64 * 1024
    assert counters.accepted == counters.buffered + counters.dropped

    port = int(offline.bootstrap_servers.rsplit(":", 1)[1])
    with EmbeddedBroker(port=port, topics=offline.topic_partitions()):
        assert client.flush(20)
        client.close()
        expected = 200 - (client.counters.dropped + client.counters.coalesced) // 2
        batches = read_batches(offline, lambda b: len(ended_names(b)) >= expected)
    delivered = sorted(ended_names(batches))  # one trace per event: spread over partitions
    # Whatever was dropped was older than everything delivered.
    assert delivered == [f"event-{i:03d}" for i in range(200 - len(delivered), 200)]
    final = client.counters
    assert final.accepted == final.sent + final.coalesced + final.dropped


def test_a_forked_child_sends_its_own_events_and_not_the_parents(kafka: KafkaSettings) -> None:
    client = tracebus.Client(**kafka.model_dump(), linger_ms=5)
    with client.trace("before-fork"):
        pass
    assert client.flush(10)
    client.settings.linger_ms = 60_000  # keep the next event buffered across the fork
    with client.trace("parent-pending"):
        pass
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            with client.trace("child"):
                pass
            # Its own observation snapshot and trace attributes: nothing of the parent's.
            if client.flush(10) and client.counters.sent == 2:
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert client.flush(10)
    batches = read_batches(kafka, lambda b: len(ended_names(b)) >= 3)
    assert sorted(ended_names(batches)) == ["before-fork", "child", "parent-pending"]
    client.close()


def test_buffered_events_are_flushed_when_the_interpreter_exits(kafka: KafkaSettings) -> None:
    script = textwrap.dedent(f"""
        import tracebus
        client = tracebus.Client(bootstrap_servers={kafka.bootstrap_servers!r},
                                 events_topic={kafka.events_topic!r}, linger_ms=60_000)
        with client.trace("exiting"):
            pass
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert ended_names(read_batches(kafka, lambda b: bool(ended_names(b)))) == ["exiting"]


def test_close_with_the_broker_down_returns_within_its_timeout_and_reports(
    kafka: KafkaSettings,
) -> None:
    client = tracebus.Client(**settings_on_a_dead_port(kafka).model_dump(), linger_ms=5)
    with client.trace("never-delivered"):
        pass
    started = time.monotonic()
    assert client.close(timeout=1.0) is False
    assert time.monotonic() - started < 5
    counters = client.counters
    assert counters.buffered == counters.accepted == 3 and counters.sent == 0
