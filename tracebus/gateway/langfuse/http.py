"""The Langfuse routes: the legacy batch ingestion endpoint answered as Langfuse answers it
(207 with `successes` and per-event `errors`, request-level failures with `{"message": ...}`),
and what the Langfuse SDKs read besides (health, the key's project)."""

from __future__ import annotations

import importlib.metadata
from typing import Any

import orjson
from aiohttp import web

from tracebus.gateway.langfuse.translation import (
    INVALID,
    Accepted,
    Rejected,
    langfuse_order,
    translate,
)
from tracebus.gateway.langfuse.validation import js_type
from tracebus.gateway.protocol import Adapter, Call, GatewayError, Route

INGESTION_PATH = "/api/public/ingestion"
HEALTH_PATH = "/api/public/health"
PROJECTS_PATH = "/api/public/projects"
_VERSION = importlib.metadata.version("tracebus")


def _bad_envelope(*problems: str) -> web.Response:
    return web.json_response({"message": INVALID, "errors": list(problems)}, status=400)


async def _ingest(call: Call) -> web.Response:
    try:
        envelope = orjson.loads(call.body)
    except orjson.JSONDecodeError as error:
        return _bad_envelope(f"body is not JSON: {error}")
    batch = envelope.get("batch") if isinstance(envelope, dict) else None
    if not isinstance(batch, list):
        return _bad_envelope(f"Invalid input: expected array, received {js_type(batch)}")
    accepted: list[Accepted] = []
    errors: list[dict[str, Any]] = []
    for raw in batch:
        outcome = translate(raw)
        if isinstance(outcome, Accepted):
            if problem := call.publisher.problem(outcome.event):
                outcome = Rejected(outcome.envelope_id, f"not a valid tracebus event: {problem}")
            else:
                accepted.append(outcome)
        if isinstance(outcome, Rejected):
            errors.append(outcome.entry())
    ordered = langfuse_order(accepted)
    await call.publisher.publish([a.event for a in ordered], call.caller)
    successes = [{"id": a.envelope_id, "status": 201} for a in ordered]
    return web.json_response({"successes": successes, "errors": errors}, status=207)


async def _health(call: Call) -> web.Response:
    return web.json_response({"status": "OK", "version": _VERSION})


async def _projects(call: Call) -> web.Response:
    """What the Langfuse SDKs' `auth_check()` reads: the key's project."""
    project = call.caller.project
    return web.json_response(
        {
            "data": [
                {
                    "id": project,
                    "name": project,
                    "organization": {"id": "tracebus", "name": "tracebus"},
                    "metadata": {},
                }
            ]
        }
    )


# Langfuse names its errors on the ingestion endpoint; elsewhere it answers with a message only.
_ERROR_NAMES = {
    400: "InvalidRequestError",
    401: "UnauthorizedError",
    403: "ForbiddenError",
    404: "LangfuseNotFoundError",
    405: "MethodNotAllowedError",
    503: "ServiceUnavailableError",
}


def _render_error(request: web.Request, error: GatewayError) -> web.Response:
    body: dict[str, Any] = {"message": error.message}
    if error.status == 429:
        body["code"] = "rate_limited"
    elif request.path == INGESTION_PATH and error.status in _ERROR_NAMES:
        body = {"error": _ERROR_NAMES[error.status], **body}
    return web.json_response(body, status=error.status)


ADAPTER = Adapter(
    name="langfuse",
    routes=(
        Route("POST", INGESTION_PATH, _ingest),
        Route("GET", HEALTH_PATH, _health, authenticated=False),
        Route("GET", PROJECTS_PATH, _projects),
    ),
    render_error=_render_error,
)
