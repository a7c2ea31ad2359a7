"""The Langfuse sink: complete traces as OTLP spans, scores through the scores API."""

from tracebus.sinks.langfuse.details import cost_details, usage_details
from tracebus.sinks.langfuse.environment import langfuse_environment
from tracebus.sinks.langfuse.exporter import LangfuseExporter, encode_spans
from tracebus.sinks.langfuse.otlp import to_otlp_request
from tracebus.sinks.langfuse.scores import score_body, score_uuid

__all__ = [
    "LangfuseExporter",
    "cost_details",
    "encode_spans",
    "langfuse_environment",
    "score_body",
    "score_uuid",
    "to_otlp_request",
    "usage_details",
]
