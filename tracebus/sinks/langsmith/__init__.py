"""LangSmith sink: complete traces as runs and feedback through multipart ingestion."""

from tracebus.sinks.langsmith.exporter import DEFAULT_API_URL, LangSmithExporter
from tracebus.sinks.langsmith.ids import feedback_uuid, run_uuid, trace_uuid
from tracebus.sinks.langsmith.runs import LangSmithTrace, langsmith_trace, usage_metadata
from tracebus.sinks.langsmith.tree import Placement, RootKind, RunTree, TreeError, place_runs

__all__ = [
    "DEFAULT_API_URL",
    "LangSmithExporter",
    "LangSmithTrace",
    "Placement",
    "RootKind",
    "RunTree",
    "TreeError",
    "feedback_uuid",
    "langsmith_trace",
    "place_runs",
    "run_uuid",
    "trace_uuid",
    "usage_metadata",
]
