"""tracebus: the asynchronous pipeline from LLM apps to Langfuse and LangSmith, on Kafka.

import tracebus

tb = tracebus.get_client()          # configured from TRACEBUS_* variables

with tb.trace("chat", user_id="u-1", session_id="s-1") as root:
    with tb.generation("answer", model="gpt-4o", input=messages) as llm:
        llm.update(output=reply, usage={"input_tokens": 812, "output_tokens": 64})

@tracebus.observe(kind="tool")
def search(query: str) -> list[str]: ...
"""

from tracebus.kafka.connection import KafkaSecurity
from tracebus.producers import (
    Client,
    Observation,
    ProducerCounters,
    ProducerSettings,
    bind,
    configure,
    current_observation,
    get_client,
    observe,
)

__all__ = [
    "Client",
    "KafkaSecurity",
    "Observation",
    "ProducerCounters",
    "ProducerSettings",
    "bind",
    "configure",
    "current_observation",
    "get_client",
    "observe",
]
