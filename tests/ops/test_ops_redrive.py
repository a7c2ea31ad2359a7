"""Redrive: dead letters go back where they came from, once each, with progress kept per stage."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.structs import ConsumerRecord
from conftest import consume

from ops.ops_helpers import Letter, end_offsets, sink_letter, stream_letter, write_letters
from tracebus.config import KafkaSettings
from tracebus.ops import (
    DeadLetter,
    OffsetRange,
    RedriveReport,
    RedriveRequest,
    redrive_dead_letters,
)
from tracebus.ops.redrive import Target, progress_group, target_of


def run(kafka: KafkaSettings, request: RedriveRequest | None = None) -> RedriveReport:
    return asyncio.run(redrive_dead_letters(kafka, request or RedriveRequest()))


def offsets_sent(report: RedriveReport) -> list[int]:
    return [letter.offset for letter in report.redriven]


def headers(record: ConsumerRecord) -> dict[str, str]:
    return {name: value.decode() for name, value in record.headers}


@pytest.mark.parametrize(
    ("text", "expected"), [("10-20", (10, 20)), ("7", (7, 7)), (" 3 - 4 ", (3, 4))]
)
def test_offset_ranges(text: str, expected: tuple[int, int]) -> None:
    parsed = OffsetRange.parse(text)
    assert (parsed.first, parsed.last) == expected
    assert expected[0] in parsed and expected[1] + 1 not in parsed


@pytest.mark.parametrize("text", ["", "a-b", "5-", "-5", "9-3", "1-2-3"])
def test_malformed_offset_ranges_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        OffsetRange.parse(text)


def test_offsets_and_everything_exclude_each_other() -> None:
    with pytest.raises(ValueError):
        RedriveRequest(offsets=OffsetRange(1, 2), everything=True)


def read_back(letter: Letter, offset: int, partition: int = 0) -> DeadLetter:
    """`letter` as read from the dead-letter topic at `partition`/`offset`."""
    return DeadLetter(partition, offset, 0, letter.key, letter.value, tuple(letter.headers))


def test_targets_keep_the_key_and_source_partition_and_mark_the_origin(
    kafka: KafkaSettings,
) -> None:
    partitions = {kafka.events_topic: 4, kafka.traces_topic: 4}

    stream = target_of(read_back(stream_letter(kafka, "t", 2, 5), 12), kafka, partitions)
    assert stream == Target(kafka.events_topic, 2, [("tracebus-redriven-from", b"12")])

    # The record's project, which the stream's dead letter kept, stamps it again.
    of_shop = stream_letter(kafka, "t", 2, 5)
    of_shop.headers.append(("tracebus-project", b"shop"))
    assert target_of(read_back(of_shop, 13), kafka, partitions) == Target(
        kafka.events_topic,
        2,
        [("tracebus-redriven-from", b"13"), ("tracebus-project", b"shop")],
    )

    sink = target_of(read_back(sink_letter(kafka, "langfuse", "t", 3, 9), 4, 1), kafka, partitions)
    assert sink == Target(
        kafka.traces_topic,
        3,
        [("tracebus-redriven-from", b"1/4"), ("tracebus-only-sink", b"langfuse")],
    )
    # A sink's dead letter keeps the trace's project too: the redrive reaches its route again.
    routed = sink_letter(kafka, "langfuse", "t", 3, 9)
    routed.headers.append(("tracebus-project", b"shop"))
    assert target_of(read_back(routed, 5, 1), kafka, partitions) == Target(
        kafka.traces_topic,
        3,
        [
            ("tracebus-redriven-from", b"1/5"),
            ("tracebus-project", b"shop"),
            ("tracebus-only-sink", b"langfuse"),
        ],
    )

    # A source partition the topic no longer has: the key chooses.
    moved = target_of(read_back(stream_letter(kafka, "t", 9, 0), 0), kafka, partitions)
    assert isinstance(moved, Target) and moved.partition is None

    enricher = read_back(Letter(None, b"", [("tracebus-stage", b"enricher")]), 0)
    assert target_of(enricher, kafka, partitions) == "unknown stage 'enricher'"
    no_stage = read_back(Letter(None, b"", []), 0)
    assert target_of(no_stage, kafka, partitions) == "no tracebus-stage header"


def test_redrive_sends_each_dead_letter_back_once(kafka: KafkaSettings) -> None:
    write_letters(
        kafka,
        [
            stream_letter(kafka, "trace-a", 2, 5, value=b'{"bad": true}'),
            sink_letter(kafka, "langfuse", "trace-b", 3, 9),
        ],
    )

    first = run(kafka)

    assert offsets_sent(first) == [0, 1]
    events = consume(kafka.bootstrap_servers, kafka.events_topic, lambda r: len(r) >= 1)
    assert [(r.partition, r.key, r.value) for r in events] == [(2, b"trace-a", b'{"bad": true}')]
    assert headers(events[0]) == {"tracebus-redriven-from": "0"}
    traces = consume(kafka.bootstrap_servers, kafka.traces_topic, lambda r: len(r) >= 1)
    assert [(r.partition, r.key) for r in traces] == [(3, b"trace-b")]
    assert headers(traces[0]) == {"tracebus-redriven-from": "1", "tracebus-only-sink": "langfuse"}

    second = run(kafka)
    assert (offsets_sent(second), second.already_redriven) == ([], 2)

    write_letters(kafka, [sink_letter(kafka, "langfuse", "trace-c", 0, 1)])
    third = run(kafka)
    assert (offsets_sent(third), third.already_redriven) == ([2], 2)


def test_a_dry_run_sends_and_commits_nothing(kafka: KafkaSettings) -> None:
    write_letters(kafka, [stream_letter(kafka, "trace-a", 1, 0)])

    dry = run(kafka, RedriveRequest(dry_run=True))

    assert offsets_sent(dry) == [0]
    assert end_offsets(kafka.bootstrap_servers, kafka.events_topic, 4) == dict.fromkeys(range(4), 0)
    assert offsets_sent(run(kafka)) == [0]  # still due


def test_redriving_one_stage_leaves_the_others_due(kafka: KafkaSettings) -> None:
    write_letters(
        kafka,
        [
            stream_letter(kafka, "trace-a", 0, 0),
            sink_letter(kafka, "langfuse", "trace-b", 0, 0),
            stream_letter(kafka, "trace-c", 0, 1),
            sink_letter(kafka, "langsmith", "trace-d", 0, 1),
        ],
    )

    langfuse = run(kafka, RedriveRequest(stage="sink:langfuse"))
    assert (offsets_sent(langfuse), langfuse.other_stages) == ([1], 3)

    every_sink = run(kafka, RedriveRequest(stage="sink"))
    assert offsets_sent(every_sink) == [3]

    rest = run(kafka)
    assert (offsets_sent(rest), rest.already_redriven) == ([0, 2], 2)


def test_all_and_offsets_resend_even_what_was_redriven(kafka: KafkaSettings) -> None:
    write_letters(kafka, [stream_letter(kafka, f"trace-{i}", 0, i) for i in range(4)])
    assert offsets_sent(run(kafka)) == [0, 1, 2, 3]

    assert offsets_sent(run(kafka, RedriveRequest(everything=True))) == [0, 1, 2, 3]
    assert offsets_sent(run(kafka, RedriveRequest(offsets=OffsetRange(1, 2)))) == [1, 2]
    assert offsets_sent(run(kafka)) == []


def test_a_range_above_the_progress_does_not_move_it(kafka: KafkaSettings) -> None:
    write_letters(kafka, [stream_letter(kafka, f"trace-{i}", 0, i) for i in range(4)])

    assert offsets_sent(run(kafka, RedriveRequest(offsets=OffsetRange(2, 3)))) == [2, 3]

    # Offsets 0 and 1 were skipped: they, and so 2 and 3 after them, are still due.
    assert offsets_sent(run(kafka)) == [0, 1, 2, 3]


def test_a_range_from_the_progress_on_moves_it(kafka: KafkaSettings) -> None:
    write_letters(kafka, [stream_letter(kafka, f"trace-{i}", 0, i) for i in range(4)])

    assert offsets_sent(run(kafka, RedriveRequest(offsets=OffsetRange(0, 1)))) == [0, 1]

    assert offsets_sent(run(kafka)) == [2, 3]


def test_dead_letters_without_a_known_stage_are_reported_not_sent(kafka: KafkaSettings) -> None:
    write_letters(kafka, [stream_letter(kafka, "trace-a", 0, 0)])
    write_letters(
        kafka, [Letter(b"k", b"v", [("tracebus-stage", b"enricher")]), Letter(b"k", b"v", [])]
    )

    report = run(kafka)

    assert offsets_sent(report) == [0]
    assert [(u.offset, u.why) for u in report.unredrivable] == [
        (1, "unknown stage 'enricher'"),
        (2, "no tracebus-stage header"),
    ]


def test_progress_groups_are_named_per_stage() -> None:
    assert progress_group("tracebus-dlq-redrive", "sink:langfuse") == (
        "tracebus-dlq-redrive.sink.langfuse"
    )
    assert progress_group("ops", "stream") == "ops.stream"
