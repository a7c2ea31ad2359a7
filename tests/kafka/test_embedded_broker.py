"""The embedded broker starts ready with its topics, fails clearly, and stops cleanly."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from tracebus.kafka import BrokerError, EmbeddedBroker, describe_topics
from tracebus.kafka.broker import free_port


def test_start_waits_for_metadata_and_creates_the_topics() -> None:
    broker = EmbeddedBroker(port=free_port(), topics={"spans": 8, "dead": 1})
    broker.start()
    try:
        infos = asyncio.run(describe_topics(broker.bootstrap_servers, ["spans", "dead"]))
        assert {(i.name, i.partitions, i.error) for i in infos} == {
            ("spans", 8, None),
            ("dead", 1, None),
        }
    finally:
        broker.stop()
    assert not broker.running
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", broker.port)) != 0


def test_a_taken_port_is_reported_with_what_to_do(broker: EmbeddedBroker) -> None:
    with pytest.raises(BrokerError, match=rf"port {broker.port} on 127.0.0.1 is already in use"):
        EmbeddedBroker(port=broker.port).start()


def test_a_missing_binary_is_reported_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACEBUS_TANSU_BIN", "/nonexistent/tansu")
    with pytest.raises(
        BrokerError, match="TRACEBUS_TANSU_BIN=/nonexistent/tansu is not an executable"
    ):
        EmbeddedBroker(port=free_port()).start()


def test_a_broker_that_dies_during_start_up_is_reported_with_its_log(tmp_path: Path) -> None:
    failing = tmp_path / "tansu"
    failing.write_text("#!/bin/sh\necho 'storage engine unavailable' >&2\nexit 3\n")
    failing.chmod(0o755)
    with pytest.raises(BrokerError, match="exited with code 3 during start-up: storage engine"):
        EmbeddedBroker(port=free_port(), binary=str(failing)).start(timeout=10)
