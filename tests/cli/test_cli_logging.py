"""Worker logs: one line per record, and a client library's retry loop does not bury them."""

from __future__ import annotations

import logging

import pytest

from tracebus.cli.common import LogLevel, RepeatedRecords, configure_logging


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(logger: str, msg: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(logger, level, __file__, 1, msg, args, None)


def test_a_retry_loops_records_pass_once_per_window_then_with_how_many_were_held_back() -> None:
    clock = Clock()
    repeated = RepeatedRecords(window=30, clock=clock)
    template = "Unable connect to node with id %s: %s"
    passed = []
    for attempt in range(300):  # an attempt every 100 ms for 30 s
        clock.now = attempt / 10
        each = record("aiokafka", template, 1, f"attempt {attempt}")
        if repeated.filter(each):
            passed.append(each)
    clock.now = 30.0
    after = record("aiokafka", template, 1, "attempt 300")
    assert repeated.filter(after)
    assert [r.getMessage() for r in passed] == ["Unable connect to node with id 1: attempt 0"]
    assert after.getMessage() == (
        "Unable connect to node with id 1: attempt 300 (299 more like it in the 30 s before)"
    )


def test_each_kind_of_record_passes_on_its_own() -> None:
    """A kind is the logger, the level and the message template."""
    repeated = RepeatedRecords(window=30, clock=Clock())
    kinds = [
        record("aiokafka", "Unable to update metadata from %s", [1]),
        record("aiokafka", "Unable to update metadata from %s", [1], level=logging.WARNING),
        record("aiokafka.consumer.fetcher", "Unable to update metadata from %s", [1]),
        record("aiokafka", "Failed fetch messages from %s: %s", 1, "NodeNotReadyError"),
    ]
    assert all(repeated.filter(each) for each in kinds)
    assert not any(repeated.filter(each) for each in kinds)


def test_tracebus_records_all_pass() -> None:
    repeated = RepeatedRecords(window=30, clock=Clock())
    records = [record("tracebus.sinks.runtime", "retrying batch of %d", 3) for _ in range(5)]
    assert all(repeated.filter(each) for each in records)


def test_the_cli_handler_holds_back_repeats(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    level = root.level
    try:
        configure_logging(LogLevel.INFO)
        for attempt in range(50):
            logging.getLogger("aiokafka").error("Unable connect to node: attempt %d", attempt)
            logging.getLogger("tracebus.test").info("step %d", attempt)
    finally:
        root.setLevel(level)
    lines = capsys.readouterr().err.splitlines()
    assert [line for line in lines if "logger=aiokafka " in line] == [
        line for line in lines if line.endswith("Unable connect to node: attempt 0")
    ]
    assert sum("logger=tracebus.test step" in line for line in lines) == 50
