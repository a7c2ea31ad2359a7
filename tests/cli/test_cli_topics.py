"""`tracebus topics create|describe` against the session broker."""

from __future__ import annotations

import asyncio
import uuid

from cli_helpers import kafka_options, run_cli

from tracebus.config import KafkaSettings
from tracebus.kafka import EmbeddedBroker, describe_topics
from tracebus.kafka.broker import free_port


def fresh_settings(broker: EmbeddedBroker) -> KafkaSettings:
    suffix = uuid.uuid4().hex[:8]
    return KafkaSettings(
        bootstrap_servers=broker.bootstrap_servers,
        events_topic=f"cli-events-{suffix}",
        traces_topic=f"cli-traces-{suffix}",
        dead_letter_topic=f"cli-deadletter-{suffix}",
        partitions=3,
    )


def test_describe_reports_missing_topics_without_creating_them(broker: EmbeddedBroker) -> None:
    settings = fresh_settings(broker)

    result = run_cli("topics", "describe", *kafka_options(settings))

    assert result.exit_code == 1, result.output
    for topic in settings.topic_partitions():
        assert topic in result.stdout
    assert result.stdout.count("missing") == 3
    assert "tracebus topics create" in result.stderr
    # Describing must not have auto-created them: still missing.
    assert run_cli("topics", "describe", *kafka_options(settings)).exit_code == 1


def test_create_then_describe(broker: EmbeddedBroker) -> None:
    settings = fresh_settings(broker)

    result = run_cli("topics", "create", *kafka_options(settings))

    assert result.exit_code == 0, result.output
    assert result.stdout.count("created") == 3
    described = asyncio.run(
        describe_topics(settings.bootstrap_servers, list(settings.topic_partitions()))
    )
    assert {info.name: info.partitions for info in described} == settings.topic_partitions()

    again = run_cli("topics", "create", *kafka_options(settings))
    assert again.exit_code == 0, again.output
    assert "created" not in again.stdout

    # The bootstrap servers from TRACEBUS_BOOTSTRAP_SERVERS, the rest from options.
    options = kafka_options(settings)[2:]
    described_cli = run_cli(
        "topics",
        "describe",
        *options,
        env={"TRACEBUS_BOOTSTRAP_SERVERS": settings.bootstrap_servers},
    )
    assert described_cli.exit_code == 0, described_cli.output
    for topic, partitions in settings.topic_partitions().items():
        line = next(line for line in described_cli.stdout.splitlines() if topic in line)
        assert f" {partitions} " in line
        assert "ok" in line


def test_unreachable_broker_exits_3_with_a_clear_message() -> None:
    address = f"127.0.0.1:{free_port()}"
    for command in ("create", "describe"):
        result = run_cli("topics", command, "--bootstrap-servers", address, "--timeout", "0.3")
        assert result.exit_code == 3, result.output
        assert f"no Kafka broker answers at {address}" in result.stderr
        assert "Traceback" not in result.output


def test_create_uses_the_replication_factor_asked_for(broker: EmbeddedBroker) -> None:
    settings = fresh_settings(broker)

    result = run_cli(
        "topics",
        "create",
        *kafka_options(settings),
        env={"TRACEBUS_REPLICATION_FACTOR": "3"},
    )

    assert result.exit_code == 0, result.output
    described = asyncio.run(
        describe_topics(settings.bootstrap_servers, list(settings.topic_partitions()))
    )
    assert {info.replicas for info in described} == {3}
    line = next(line for line in result.stdout.splitlines() if settings.events_topic in line)
    cells = [cell.strip() for cell in line.strip("│ ").split("│")]
    assert cells == [settings.events_topic, str(settings.partitions), "3", "created"]
