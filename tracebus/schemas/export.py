"""Export of the contract as JSON Schema files for producers written in other languages."""

from __future__ import annotations

from pathlib import Path

import orjson
from pydantic import BaseModel

from tracebus.schemas.models import (
    SCHEMA_VERSION,
    EventBatch,
    ObservationEvent,
    ObservationUpdateEvent,
    ScoreEvent,
    TraceEvent,
)
from tracebus.schemas.traces import TraceDocument

EXPORTED: dict[str, type[BaseModel]] = {
    "event-batch": EventBatch,
    "trace-event": TraceEvent,
    "observation-event": ObservationEvent,
    "observation-update-event": ObservationUpdateEvent,
    "score-event": ScoreEvent,
    "trace-document": TraceDocument,
}

SCHEMA_ID_BASE = "https://tracebus.dev/schemas"


def json_schemas() -> dict[str, bytes]:
    """File name → JSON Schema document, for every exported model."""
    documents = {}
    for stem, model in EXPORTED.items():
        schema = model.model_json_schema(mode="validation")
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"{SCHEMA_ID_BASE}/v{SCHEMA_VERSION}/{stem}.json",
            **schema,
        }
        documents[f"v{SCHEMA_VERSION}/{stem}.json"] = orjson.dumps(
            schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_APPEND_NEWLINE
        )
    return documents


def write_json_schemas(directory: Path) -> list[Path]:
    written = []
    for name, content in json_schemas().items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        written.append(path)
    return written


def stale_json_schemas(directory: Path) -> list[str]:
    """Names of schema files in `directory` that are missing or differ from the models."""
    return [
        name
        for name, content in json_schemas().items()
        if not (directory / name).is_file() or (directory / name).read_bytes() != content
    ]
