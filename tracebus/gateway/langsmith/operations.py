"""A LangSmith request as run operations and feedback: from the parts of a multipart body (a
run's main part and its out-of-band field and attachment parts merged), from a `/runs/batch`
body, or from a single run's JSON."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from tracebus.gateway.langsmith.checks import Json, invalid
from tracebus.gateway.langsmith.multipart import Part

# A run's fields that the SDK may send as parts of their own (`post.<id>.outputs`).
RUN_FIELDS = frozenset({"inputs", "outputs", "events", "extra", "error", "serialized"})


@dataclass
class RunOp:
    """One `post` or `patch` of a run: its JSON with the out-of-band field parts merged in."""

    op: str  # "post" or "patch"
    run_id: str  # as the part name or the body gives it
    run: Json
    attachments: dict[str, Json] = field(default_factory=dict)
    has_main: bool = True  # False while only field parts of it have arrived


@dataclass
class Ingest:
    runs: list[RunOp] = field(default_factory=list)
    feedback: list[Json] = field(default_factory=list)


def ingest_from_parts(parts: Iterable[Part]) -> Ingest:
    """Runs, feedback and attachments of a multipart request, in the order they came."""
    ingest = Ingest()
    latest: dict[tuple[str, str], RunOp] = {}
    latest_of_run: dict[str, RunOp] = {}
    for part in parts:
        event, _, rest = part.name.partition(".")
        part_id, _, detail = rest.partition(".")
        if not part_id:
            raise invalid(f"unsupported part name {part.name!r}")
        if event == "attachment" and detail:
            op = latest_of_run.get(part_id)
            if op is None:
                op = RunOp("patch", part_id, {"id": part_id})
                ingest.runs.append(op)
                latest_of_run[part_id] = op
            op.attachments[detail] = {"content_type": part.content_type, "bytes": len(part.data)}
            continue
        value = _json_part(part)
        if event == "feedback" and not detail:
            ingest.feedback.append(with_id(value, part_id, part.name, "feedback"))
        elif event in ("post", "patch") and not detail:
            run = with_id(value, part_id, part.name, "run")
            op = latest.get((event, part_id))
            if op is not None and not op.has_main:
                op.run = {**run, **op.run}
                op.has_main = True
            else:
                op = RunOp(event, part_id, run)
                ingest.runs.append(op)
            latest[(event, part_id)] = latest_of_run[part_id] = op
        elif event in ("post", "patch") and detail in RUN_FIELDS:
            op = latest.get((event, part_id))
            if op is None:
                op = RunOp(event, part_id, {}, has_main=False)
                ingest.runs.append(op)
                latest[(event, part_id)] = latest_of_run[part_id] = op
            op.run[detail] = value
        else:
            raise invalid(f"unsupported part name {part.name!r}")
    for op in ingest.runs:
        if not op.has_main:
            fields = ", ".join(sorted(op.run))
            raise invalid(
                f"parts {op.op}.{op.run_id}.{{{fields}}} sent without {op.op}.{op.run_id}"
            )
    return ingest


def _json_part(part: Part) -> Any:
    if part.content_type.partition(";")[0].strip().lower() != "application/json":
        raise invalid(f"part {part.name} must be application/json, not {part.content_type!r}")
    try:
        return orjson.loads(part.data)
    except orjson.JSONDecodeError as error:
        raise invalid(f"part {part.name} is not valid JSON: {error}") from None


def with_id(value: Any, part_id: str, part_name: str, what: str) -> Json:
    """The run or feedback `part_name` carries for `part_id`: its id filled in when it has none;
    refused when it names another UUID."""
    if not isinstance(value, dict):
        raise invalid(f"part {part_name}: a {what} is a JSON object")
    given = value.get("id")
    if given is None:
        return {**value, "id": part_id}
    # Usually the part names the run by the very id it carries: no UUIDs to parse then.
    if given != part_id and _same_uuid(given, part_id) is False:
        raise invalid(f"part {part_name} carries {what} id {given!r}")
    return value


def _same_uuid(a: Any, b: str) -> bool | None:
    """Whether two ids name the same UUID; None when one is no UUID (reported later)."""
    try:
        return uuid.UUID(str(a)) == uuid.UUID(b)
    except ValueError:
        return None


def ingest_from_batch(body: bytes) -> Ingest:
    """`POST /runs/batch`: `{"post": [run, …], "patch": [run, …]}`."""
    document = json_body(body)
    if not isinstance(document, dict):
        raise invalid('a batch is a JSON object {"post": [...], "patch": [...]}')
    ingest = Ingest()
    for op in ("post", "patch"):
        runs = document.get(op) or []
        if not isinstance(runs, list):
            raise invalid(f"{op} must be a list of runs")
        for index, run in enumerate(runs):
            if not isinstance(run, dict) or run.get("id") is None:
                raise invalid(f"{op}[{index}] is not a run with an id")
            ingest.runs.append(RunOp(op, str(run["id"]), run))
    return ingest


def json_body(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise invalid(f"the body is not valid JSON: {error}") from None
