"""`tracebus dlq list|show|redrive` on dead letters written as the stream and sinks write them."""

from __future__ import annotations

import pytest
from cli_helpers import end_offsets, run_cli
from conftest import consume
from ops.ops_helpers import Letter, sink_letter, stream_letter, write_letters

from tracebus.config import KafkaSettings
from tracebus.kafka.broker import free_port


def options(kafka: KafkaSettings) -> list[str]:
    return [
        "--bootstrap-servers",
        kafka.bootstrap_servers,
        "--dead-letter-topic",
        kafka.dead_letter_topic,
    ]


def redrive_options(kafka: KafkaSettings) -> list[str]:
    return [
        *options(kafka),
        "--events-topic",
        kafka.events_topic,
        "--traces-topic",
        kafka.traces_topic,
    ]


def row(output: str, first_cell: str) -> str:
    """The table line whose first cell is `first_cell`."""
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.split("│") if cell.strip()]
        if cells and cells[0] == first_cell:
            return line
    raise AssertionError(f"no row {first_cell!r} in:\n{output}")


def three_letters(kafka: KafkaSettings) -> None:
    write_letters(
        kafka,
        [
            stream_letter(kafka, "trace-a", 2, 5, reason="malformed JSON: " + "x" * 200),
            sink_letter(kafka, "langfuse", "trace-b", 3, 9, status=400),
            sink_letter(kafka, "langsmith", "trace-c", 1, 4, status=503),
        ],
    )


def test_list_shows_the_newest_first_with_why_where_and_what(kafka: KafkaSettings) -> None:
    three_letters(kafka)

    result = run_cli("dlq", "list", *options(kafka))

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines.index(row(result.stdout, "2")) < lines.index(row(result.stdout, "0"))
    langfuse = row(result.stdout, "1")
    for cell in ("sink:langfuse", "rejected by the destination", "400", "trace-b"):
        assert cell in langfuse
    assert f"{kafka.traces_topic}/3/9" in langfuse
    stream = row(result.stdout, "0")
    assert "stream" in stream and "trace-a" in stream and "15 B" in stream
    assert "x" * 60 not in stream and "…" in stream  # long reasons are cut
    assert "3 shown" in result.stdout


def test_list_filters_by_stage_limits_and_reads_from_the_beginning(kafka: KafkaSettings) -> None:
    three_letters(kafka)

    def first_cells(*args: str) -> list[str]:
        result = run_cli("dlq", "list", *options(kafka), *args)
        assert result.exit_code == 0, result.output
        return [
            cells[0]
            for line in result.stdout.splitlines()
            if (cells := [c.strip() for c in line.split("│") if c.strip()]) and cells[0].isdigit()
        ]

    assert first_cells("--stage", "sink:langfuse") == ["1"]
    assert first_cells("--stage", "sink") == ["2", "1"]
    assert first_cells("--limit", "1") == ["2"]
    assert first_cells("--from-beginning", "--limit", "2") == ["0", "1"]
    empty = run_cli("dlq", "list", *options(kafka), "--stage", "sink:jsonl")
    assert empty.exit_code == 0 and "no dead letters of stage sink:jsonl" in empty.stdout


def test_show_prints_every_header_and_a_json_value_indented(kafka: KafkaSettings) -> None:
    three_letters(kafka)

    result = run_cli("dlq", "show", "1", *options(kafka))

    assert result.exit_code == 0, result.output
    for header, value in [
        ("tracebus-reason", "rejected by the destination: invalid span"),
        ("tracebus-stage", "sink:langfuse"),
        ("tracebus-status", "400"),
        ("tracebus-source", f"{kafka.traces_topic}/3/9"),
    ]:
        assert header in row(result.stdout, header) and value in row(result.stdout, header)
    assert '"error": "invalid span"' in result.stdout  # the response, indented
    assert '  "trace_id": "trace-b"' in result.stdout
    assert "(35 bytes, JSON)" in result.stdout


def test_show_previews_a_value_that_is_not_json_as_hex(kafka: KafkaSettings) -> None:
    write_letters(kafka, [stream_letter(kafka, "trace-a", 0, 0, value=bytes(range(40)))])

    result = run_cli("dlq", "show", "0", *options(kafka))

    assert result.exit_code == 0, result.output
    assert "not JSON; first 40 as hex" in result.stdout
    assert "00000000  00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f  ................" in (
        result.stdout
    )
    assert "00000020  20 21 22 23 24 25 26 27" in result.stdout


def test_show_of_an_offset_without_a_dead_letter_exits_1(kafka: KafkaSettings) -> None:
    result = run_cli("dlq", "show", "0", *options(kafka))

    assert result.exit_code == 1, result.output
    assert "no dead letter at offset 0" in result.stderr


def test_redrive_sends_dead_letters_back_once_marked_with_their_origin(
    kafka: KafkaSettings,
) -> None:
    three_letters(kafka)

    first = run_cli("dlq", "redrive", *redrive_options(kafka))

    assert first.exit_code == 0, first.output
    assert "redriven 3 of 3 dead letters examined" in first.stdout
    assert "sink:langfuse" in row(first.stdout, "sink:langfuse")
    events = consume(kafka.bootstrap_servers, kafka.events_topic, lambda r: len(r) >= 1)
    assert [(r.partition, r.key, dict(r.headers)) for r in events] == [
        (2, b"trace-a", {"tracebus-redriven-from": b"0"})
    ]
    traces = consume(kafka.bootstrap_servers, kafka.traces_topic, lambda r: len(r) >= 2)
    assert sorted((r.partition, r.key, dict(r.headers)["tracebus-only-sink"]) for r in traces) == [
        (1, b"trace-c", b"langsmith"),
        (3, b"trace-b", b"langfuse"),
    ]

    second = run_cli("dlq", "redrive", *redrive_options(kafka))

    assert second.exit_code == 0, second.output
    assert "redriven 0 of 3" in second.stdout and "3 redriven before" in second.stdout
    assert sum(end_offsets(kafka.bootstrap_servers, kafka.events_topic).values()) == 1
    assert sum(end_offsets(kafka.bootstrap_servers, kafka.traces_topic).values()) == 2


def test_a_dry_run_lists_what_would_be_sent_and_sends_nothing(kafka: KafkaSettings) -> None:
    three_letters(kafka)

    dry = run_cli("dlq", "redrive", *redrive_options(kafka), "--stage", "sink", "--dry-run")

    assert dry.exit_code == 0, dry.output
    assert f"{kafka.traces_topic}[3]" in row(dry.stdout, "1")
    assert "would redrive 2 of 3" in dry.stdout and "nothing sent" in dry.stdout
    assert sum(end_offsets(kafka.bootstrap_servers, kafka.traces_topic).values()) == 0
    real = run_cli("dlq", "redrive", *redrive_options(kafka), "--stage", "sink")
    assert "redriven 2 of 3" in real.stdout  # the dry run left them due


def test_redrive_offsets_and_all(kafka: KafkaSettings) -> None:
    three_letters(kafka)
    assert run_cli("dlq", "redrive", *redrive_options(kafka)).exit_code == 0

    by_offsets = run_cli("dlq", "redrive", *redrive_options(kafka), "--offsets", "1-2")
    everything = run_cli("dlq", "redrive", *redrive_options(kafka), "--all")

    assert "redriven 2 of 2" in by_offsets.stdout, by_offsets.output
    assert "redriven 3 of 3" in everything.stdout, everything.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--offsets", "1-2", "--all"], "--offsets and --all exclude each other"),
        (["--offsets", "9-3"], "ends before it starts"),
    ],
)
def test_contradictory_redrive_options_exit_2(
    kafka: KafkaSettings, args: list[str], message: str
) -> None:
    result = run_cli("dlq", "redrive", *redrive_options(kafka), *args)

    assert result.exit_code == 2, result.output
    assert message in result.stderr


def test_dead_letters_of_unknown_stages_make_redrive_exit_1(kafka: KafkaSettings) -> None:
    unknown = Letter(b"trace-b", b"{}", [("tracebus-stage", b"enricher")])
    write_letters(kafka, [stream_letter(kafka, "trace-a", 0, 0), unknown])

    result = run_cli("dlq", "redrive", *redrive_options(kafka))

    assert result.exit_code == 1, result.output
    assert "redriven 1 of 2" in result.stdout
    assert "cannot redrive dead letters at offsets 1 (unknown stage 'enricher')" in result.stderr


def test_a_missing_dead_letter_topic_exits_1(kafka: KafkaSettings) -> None:
    missing = ["--dead-letter-topic", kafka.dead_letter_topic + "-missing"]
    result = run_cli("dlq", "list", "--bootstrap-servers", kafka.bootstrap_servers, *missing)

    assert result.exit_code == 1, result.output
    assert "does not exist" in result.stderr and "tracebus topics create" in result.stderr


@pytest.mark.parametrize("command", [["list"], ["show", "0"], ["redrive"]])
def test_an_unreachable_broker_exits_3(command: list[str]) -> None:
    address = f"127.0.0.1:{free_port()}"

    result = run_cli("dlq", *command, "--bootstrap-servers", address, "--timeout", "0.3")

    assert result.exit_code == 3, result.output
    assert f"no Kafka broker answers at {address}" in result.stderr
