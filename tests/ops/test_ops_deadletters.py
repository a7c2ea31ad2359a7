"""Reading the dead-letter topic: what a dead letter says, bounded listings, counts per stage."""

from __future__ import annotations

import asyncio

import pytest

from ops.ops_helpers import Letter, sink_letter, stream_letter, write_letters
from tracebus.config import KafkaSettings
from tracebus.ops import (
    DeadLetter,
    MissingTopicError,
    Source,
    dead_letter_at,
    list_dead_letters,
    summarize_by_stage,
)
from tracebus.ops.deadletters import sink_name, stage_matches


def test_a_dead_letter_exposes_the_headers_the_stream_and_sinks_write() -> None:
    letter = DeadLetter(
        partition=0,
        offset=7,
        timestamp_ms=0,
        key=b"trace-1",
        value=b"{}",
        headers=(
            ("tracebus-reason", b"rejected"),
            ("tracebus-stage", b"sink:langfuse"),
            ("tracebus-status", b"400"),
            ("tracebus-response", b'{"error":"bad"}'),
            ("tracebus-source", b"tracebus.traces/3/41"),
        ),
    )
    assert (letter.stage, letter.reason, letter.status) == ("sink:langfuse", "rejected", "400")
    assert letter.response == '{"error":"bad"}'
    assert letter.source == Source("tracebus.traces", 3, 41)
    assert (letter.key_text, letter.size) == ("trace-1", 2)
    assert DeadLetter(0, 0, 0, None, b"").stage == ""


@pytest.mark.parametrize("text", [None, "", "topic", "topic/1", "topic/x/2", "/1/2"])
def test_a_malformed_source_is_none(text: str | None) -> None:
    assert Source.parse(text) is None


def test_stage_filters_match_exactly_and_sink_matches_every_sink() -> None:
    assert stage_matches(None, "anything")
    assert stage_matches("stream", "stream")
    assert stage_matches("sink", "sink:langfuse")
    assert stage_matches("sink:langfuse", "sink:langfuse")
    assert not stage_matches("sink:langfuse", "sink:langsmith")
    assert not stage_matches("stream", "sink:langfuse")
    assert (sink_name("sink:langsmith"), sink_name("sink:"), sink_name("stream")) == (
        "langsmith",
        None,
        None,
    )


def mixed_letters(kafka: KafkaSettings, count: int) -> list[Letter]:
    """Every tenth a stream dead letter, the others Langfuse ones."""
    return [
        stream_letter(kafka, f"trace-{i}", i % 4, i)
        if i % 10 == 0
        else sink_letter(kafka, "langfuse", f"trace-{i}", i % 4, i)
        for i in range(count)
    ]


def test_newest_first_finds_the_newest_matches_reading_back_from_the_end(
    kafka: KafkaSettings,
) -> None:
    write_letters(kafka, mixed_letters(kafka, 450))

    page = asyncio.run(
        list_dead_letters(kafka.bootstrap_servers, kafka.dead_letter_topic, limit=3, stage="stream")
    )

    assert [letter.offset for letter in page.letters] == [440, 430, 420]
    assert page.in_topic == 450
    assert page.examined < 450  # the first window back from the end had enough


def test_oldest_first_and_the_scan_bound(kafka: KafkaSettings) -> None:
    write_letters(kafka, mixed_letters(kafka, 50))
    servers, topic = kafka.bootstrap_servers, kafka.dead_letter_topic

    oldest = asyncio.run(
        list_dead_letters(servers, topic, limit=2, stage="stream", newest_first=False)
    )
    assert [letter.offset for letter in oldest.letters] == [0, 10]
    assert oldest.examined == 11

    bounded = asyncio.run(list_dead_letters(servers, topic, limit=10, stage="stream", max_scan=15))
    assert [letter.offset for letter in bounded.letters] == [40]  # among offsets 35–49 only
    assert (bounded.examined, bounded.complete) == (15, False)


def test_one_dead_letter_by_offset(kafka: KafkaSettings) -> None:
    write_letters(kafka, mixed_letters(kafka, 3))
    servers, topic = kafka.bootstrap_servers, kafka.dead_letter_topic

    letter = asyncio.run(dead_letter_at(servers, topic, 1))

    assert letter is not None
    assert (letter.offset, letter.stage, letter.key_text) == (1, "sink:langfuse", "trace-1")
    assert asyncio.run(dead_letter_at(servers, topic, 3)) is None
    assert asyncio.run(dead_letter_at(servers, topic, 0, partition=5)) is None


def test_counts_per_stage_most_first(kafka: KafkaSettings) -> None:
    letters = [*mixed_letters(kafka, 20), sink_letter(kafka, "langsmith", "trace-x", 0, 0)]
    write_letters(kafka, letters)

    summary = asyncio.run(summarize_by_stage(kafka.bootstrap_servers, kafka.dead_letter_topic))

    assert [(s.stage, s.count) for s in summary.stages] == [
        ("sink:langfuse", 18),
        ("stream", 2),
        ("sink:langsmith", 1),
    ]
    assert summary.stages[1].positions == [(0, 0), (0, 10)]
    assert summary.complete

    bounded = asyncio.run(
        summarize_by_stage(kafka.bootstrap_servers, kafka.dead_letter_topic, max_scan=5)
    )
    assert sum(s.count for s in bounded.stages) == 5
    assert (bounded.examined, bounded.in_topic) == (5, 21)


def test_a_missing_dead_letter_topic_is_reported_not_created(kafka: KafkaSettings) -> None:
    missing = kafka.dead_letter_topic + "-missing"
    with pytest.raises(MissingTopicError):
        asyncio.run(list_dead_letters(kafka.bootstrap_servers, missing, limit=1))
    # Still missing: looking did not auto-create it.
    with pytest.raises(MissingTopicError):
        asyncio.run(summarize_by_stage(kafka.bootstrap_servers, missing))
