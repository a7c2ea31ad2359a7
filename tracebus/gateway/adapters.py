"""Every protocol the gateway speaks."""

from tracebus.gateway import langfuse, langsmith, otlp
from tracebus.gateway.protocol import Adapter

ADAPTERS: tuple[Adapter, ...] = (otlp.ADAPTER, langfuse.ADAPTER, langsmith.ADAPTER)
