"""The app-side SDK: emit traces in microseconds, delivered to Kafka in the background."""

from tracebus.producers.client import Client, ProducerCounters, Redactor
from tracebus.producers.context import bind, current_observation
from tracebus.producers.decorator import observe
from tracebus.producers.default import configure, get_client
from tracebus.producers.observation import Observation
from tracebus.producers.settings import ProducerSettings

__all__ = [
    "Client",
    "Observation",
    "ProducerCounters",
    "ProducerSettings",
    "Redactor",
    "bind",
    "configure",
    "current_observation",
    "get_client",
    "observe",
]
