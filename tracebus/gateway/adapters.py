"""Every protocol the gateway speaks."""

from tracebus.gateway import langfuse_ingestion, langsmith_runs, otlp
from tracebus.gateway.protocol import Adapter

ADAPTERS: tuple[Adapter, ...] = (otlp.ADAPTER, langfuse_ingestion.ADAPTER, langsmith_runs.ADAPTER)
