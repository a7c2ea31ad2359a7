"""`tracebus broker`: the embedded Kafka-compatible broker, with the tracebus topics."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from tracebus.cli.common import (
    DEFAULT_BROKER_HOST,
    DEFAULT_BROKER_PORT,
    DEFAULT_DEAD_LETTER_TOPIC,
    DEFAULT_EVENTS_TOPIC,
    DEFAULT_PARTITIONS,
    DEFAULT_TRACES_TOPIC,
    BrokerHost,
    BrokerPort,
    DeadLetterTopic,
    EventsTopic,
    ExitCode,
    Partitions,
    StopSignals,
    TracesTopic,
    build_settings,
    console,
    fail,
)
from tracebus.config import KafkaSettings
from tracebus.kafka import BrokerError, EmbeddedBroker


@contextlib.contextmanager
def running_broker(host: str, port: int, settings: KafkaSettings) -> Iterator[EmbeddedBroker]:
    """Start the embedded broker with the topics of `settings`; stop it on exit.

    A broker that cannot start exits with code 2 and the reason, without a traceback; the
    broker keeps its log in a temporary file of its own, removed when it stops."""
    broker = EmbeddedBroker(port=port, host=host, topics=settings.topic_partitions())
    try:
        try:
            broker.start()
        except BrokerError as error:
            message = str(error)
            if "already in use" in message:
                message += (
                    f". If a Kafka broker already runs there, use it instead: "
                    f"`tracebus demo --bootstrap-servers {host}:{port}`"
                )
            fail(message, ExitCode.USAGE)
        yield broker
    finally:
        broker.stop()


def print_banner(broker: EmbeddedBroker, settings: KafkaSettings) -> None:
    console.print(
        f"[bold green]broker listening on {broker.bootstrap_servers}[/bold green] "
        "(embedded tansu, in-memory storage: data is gone when it stops)"
    )
    for topic, partitions in settings.topic_partitions().items():
        console.print(f"  topic {topic} ({partitions} partition{'s' if partitions > 1 else ''})")
    console.print(
        f"send traces with TRACEBUS_BOOTSTRAP_SERVERS={broker.bootstrap_servers}; stop with Ctrl-C"
    )


def broker(
    port: BrokerPort = DEFAULT_BROKER_PORT,
    host: BrokerHost = DEFAULT_BROKER_HOST,
    partitions: Partitions = DEFAULT_PARTITIONS,
    events_topic: EventsTopic = DEFAULT_EVENTS_TOPIC,
    traces_topic: TracesTopic = DEFAULT_TRACES_TOPIC,
    dead_letter_topic: DeadLetterTopic = DEFAULT_DEAD_LETTER_TOPIC,
) -> None:
    """Run the embedded Kafka-compatible broker with the tracebus topics until Ctrl-C/SIGTERM.

    For local development and tests; it keeps everything in memory. Production uses Apache
    Kafka (create the topics there with `tracebus topics create`).
    """
    settings = build_settings(
        KafkaSettings,
        bootstrap_servers=f"{host}:{port}",
        events_topic=events_topic,
        traces_topic=traces_topic,
        dead_letter_topic=dead_letter_topic,
        partitions=partitions,
    )
    with StopSignals() as stop:
        try:
            with running_broker(host, port, settings) as embedded:
                print_banner(embedded, settings)
                while not stop.event.wait(0.5):
                    if not embedded.running:
                        fail(
                            f"the broker stopped unexpectedly: {embedded.log_tail()}",
                            ExitCode.USAGE,
                        )
        except KeyboardInterrupt:
            fail("interrupted twice: stopped without waiting", ExitCode.INTERRUPTED)
    console.print(f"broker stopped ({stop.received or 'exited'})")
