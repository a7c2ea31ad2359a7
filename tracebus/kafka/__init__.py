"""Kafka plumbing: the embedded broker for local runs and tests, and topic administration."""

from tracebus.kafka.broker import BrokerError, EmbeddedBroker
from tracebus.kafka.topics import create_topics, describe_topics, wait_for_broker

__all__ = ["BrokerError", "EmbeddedBroker", "create_topics", "describe_topics", "wait_for_broker"]
