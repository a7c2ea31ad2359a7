"""Dify's Langfuse provider, as far as it talks to Langfuse: run with the langfuse SDK Dify pins
(4.x) on PYTHONPATH, it sends each planned call the way Dify's `langfuse_trace.py` does — one
`api.ingestion.batch(batch=[event])` per trace, span or generation, with a fresh uuid4 envelope
id and the SDK's own bodies — and prints the SDK version and every response as JSON.

stdin: {"host", "public_key", "secret_key", "calls": [{"kind": "trace"|"span"|"generation",
"body": {...snake_case fields as Dify sets them; datetimes as ISO text}}], "auth_check": bool}
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import langfuse
from langfuse import Langfuse
from langfuse.api import (
    CreateGenerationBody,
    CreateSpanBody,
    IngestionEvent_GenerationCreate,
    IngestionEvent_SpanCreate,
    IngestionEvent_TraceCreate,
    TraceBody,
)
from langfuse.api.commons.types.usage import Usage
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

DATETIMES = ("start_time", "end_time", "completion_start_time")


def _dify_values(body: dict[str, Any]) -> dict[str, Any]:
    # Dify reads node times from its database as naive datetimes; the SDK adds the local zone.
    return {
        key: datetime.fromisoformat(value) if key in DATETIMES else value
        for key, value in body.items()
    }


def _event(kind: str, body: dict[str, Any]) -> Any:
    envelope = {"id": str(uuid.uuid4()), "timestamp": datetime.now(UTC).isoformat()}
    if kind == "trace":
        return IngestionEvent_TraceCreate(body=TraceBody(**body), **envelope)
    if kind == "span":
        return IngestionEvent_SpanCreate(body=CreateSpanBody(**_dify_values(body)), **envelope)
    values = _dify_values(body)
    if usage := values.pop("usage", None):
        values["usage"] = Usage(
            input=usage.get("input", 0) or 0,
            output=usage.get("output", 0) or 0,
            total=usage.get("total", 0) or 0,
            unit=usage.get("unit"),
            input_cost=usage.get("inputCost"),
            output_cost=usage.get("outputCost"),
            total_cost=usage.get("totalCost"),
        )
    return IngestionEvent_GenerationCreate(body=CreateGenerationBody(**values), **envelope)


def main() -> None:
    plan = json.load(sys.stdin)
    client = Langfuse(
        public_key=plan["public_key"],
        secret_key=plan["secret_key"],
        host=plan["host"],
        tracer_provider=TracerProvider(
            resource=Resource.create({"service.name": "dify-langfuse-app-trace"})
        ),
    )
    result: dict[str, Any] = {
        "version": importlib.metadata.version("langfuse"),
        "module": langfuse.__file__,
        "responses": [],
    }
    for call in plan["calls"]:
        response = client.api.ingestion.batch(batch=[_event(call["kind"], call["body"])])
        result["responses"].append(response.dict())
    if plan.get("auth_check"):
        try:
            result["auth_check"] = client.auth_check()
        except Exception as error:  # Dify's api_check reports any failure as its message
            result["auth_check"] = f"{type(error).__name__}: {error}"
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
