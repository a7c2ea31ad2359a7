"""The JSON Schema files in schemas/ are the contract for producers in other languages."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import orjson
import pytest

from tracebus.schemas.export import json_schemas, stale_json_schemas

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_checked_in_schema_files_match_the_models() -> None:
    stale = stale_json_schemas(SCHEMAS)
    assert not stale, f"stale JSON Schema files {stale}: run `make schemas` and commit them"


def test_every_schema_is_valid_draft_2020_12() -> None:
    for content in json_schemas().values():
        jsonschema.Draft202012Validator.check_schema(orjson.loads(content))


def batch_validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(orjson.loads(json_schemas()["v1/event-batch.json"]))


EVENT = {
    "schema_version": 1,
    "type": "observation",
    "event_id": "e1",
    "trace_id": TRACE,
    "timestamp_unix_nano": 2,
    "observation_id": "00f067aa0ba902b7",
    "kind": "tool",
    "name": "search",
    "start_time_unix_nano": 1,
    "input": {"q": "x"},
}


def test_the_batch_schema_accepts_what_the_models_accept() -> None:
    batch_validator().validate({"schema_version": 1, "trace_id": TRACE, "events": [EVENT]})


@pytest.mark.parametrize(
    "change",
    [
        {"trace_id": "0" * 32},
        {"kind": "llm"},
        {"observation_id": "xyz"},
        {"unexpected": True},
    ],
)
def test_the_batch_schema_rejects_what_the_models_reject(change: dict[str, object]) -> None:
    batch = {"schema_version": 1, "trace_id": TRACE, "events": [{**EVENT, **change}]}
    assert list(batch_validator().iter_errors(batch))
