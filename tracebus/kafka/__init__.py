"""Kafka plumbing: the embedded broker for local runs and tests, topic administration, and
leaving consumer groups (`groups`)."""

from tracebus.kafka.broker import BrokerError, EmbeddedBroker
from tracebus.kafka.topics import (
    KafkaAuthenticationError,
    TopicCreationError,
    create_topics,
    delete_topics,
    describe_topics,
    wait_for_broker,
)

__all__ = [
    "BrokerError",
    "EmbeddedBroker",
    "KafkaAuthenticationError",
    "TopicCreationError",
    "create_topics",
    "delete_topics",
    "describe_topics",
    "wait_for_broker",
]
