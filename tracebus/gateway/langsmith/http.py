"""The LangSmith routes: `GET /info` (what the SDK reads before sending), `POST /runs/multipart`
(the SDK's default, zstd-compressed when /info allows it), `POST /runs/batch` (its JSON
fallback), `POST /runs` + `PATCH /runs/{run_id}` (the simple REST path) and `POST /feedback`.
Like LangSmith, one invalid run or feedback rejects the whole request (422 naming it) and
nothing of it is published."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from tracebus.gateway.langsmith.checks import Json, invalid
from tracebus.gateway.langsmith.directory import RunDirectory
from tracebus.gateway.langsmith.multipart import parse_multipart
from tracebus.gateway.langsmith.operations import (
    Ingest,
    RunOp,
    ingest_from_batch,
    ingest_from_parts,
    json_body,
    with_id,
)
from tracebus.gateway.langsmith.translation import translate
from tracebus.gateway.protocol import Adapter, Call, GatewayError, Route
from tracebus.gateway.timestamps import now_unix_nano

SERVER_VERSION = "0.12.0"  # the SDK sends feedback through multipart only from 0.8.10 on
# The SDK splits its batches at this many bytes of run JSON; multipart framing and the op that
# crosses the line come on top, so it stays a MiB under the gateway's default body limit.
SIZE_LIMIT_BYTES = 15 * 1024 * 1024


def _checked(events: Sequence[tuple[str, Json]], call: Call) -> list[Json]:
    """The events (oversized fields cut by the publisher's check), once every one satisfies the
    contract; else GatewayError(422) naming the first run or feedback that does not."""
    ready = []
    for label, event in events:
        problem = call.publisher.problem(event)
        if problem is not None:
            raise invalid(f"{label}: {problem}")
        ready.append(event)
    return ready


class LangSmithRuns:
    """The handlers, sharing one run directory."""

    def __init__(self) -> None:
        self.directory = RunDirectory()

    async def info(self, call: Call) -> web.Response:
        limits = call.settings
        # The SDK bounds the uncompressed size of a batch; it may also send it uncompressed.
        size_limit = min(SIZE_LIMIT_BYTES, limits.max_body_bytes, limits.max_decoded_bytes)
        return web.json_response(
            {
                "version": SERVER_VERSION,
                "license_expiration_time": None,
                "batch_ingest_config": {
                    "use_multipart_endpoint": True,
                    "scale_up_qsize_trigger": 1000,
                    "scale_up_nthreads_limit": 16,
                    "scale_down_nempty_trigger": 4,
                    "size_limit": 100,
                    "size_limit_bytes": size_limit,
                },
                # Lets the SDK send zstd-compressed multipart bodies, which the gateway decodes.
                "instance_flags": {"zstd_compression_enabled": True},
            }
        )

    async def multipart(self, call: Call) -> web.Response:
        ingest = ingest_from_parts(parse_multipart(call.body, call.content_type))
        return await self._publish(call, ingest, 202, {})

    async def batch(self, call: Call) -> web.Response:
        return await self._publish(call, ingest_from_batch(call.body), 202, {})

    async def create_run(self, call: Call) -> web.Response:
        run = json_body(call.body)
        if not isinstance(run, dict) or run.get("id") is None:
            raise invalid("a run is a JSON object with an id")
        return await self._publish(call, Ingest(runs=[RunOp("post", str(run["id"]), run)]), 202, {})

    async def update_run(self, call: Call) -> web.Response:
        run_id = call.request.match_info["run_id"]
        run = with_id(json_body(call.body), run_id, f"PATCH /runs/{run_id}", "run")
        return await self._publish(call, Ingest(runs=[RunOp("patch", run_id, run)]), 202, {})

    async def create_feedback(self, call: Call) -> web.Response:
        feedback = json_body(call.body)
        if not isinstance(feedback, dict) or feedback.get("id") is None:
            raise invalid("a feedback is a JSON object with an id")
        await self._publish(call, Ingest(feedback=[feedback]), 200, {})
        return web.json_response(feedback)

    async def _publish(self, call: Call, ingest: Ingest, status: int, body: Json) -> web.Response:
        events = _checked(translate(ingest, self.directory, now_unix_nano()), call)
        await call.publisher.publish(events, call.caller)
        return web.json_response(body, status=status)


def _render_error(_: web.Request, error: GatewayError) -> web.Response:
    return web.json_response({"detail": error.message}, status=error.status)


def _adapter() -> Adapter:
    runs = LangSmithRuns()
    return Adapter(
        name="langsmith",
        routes=(
            Route("GET", "/info", runs.info, authenticated=False),
            Route("POST", "/runs/multipart", runs.multipart),
            Route("POST", "/runs/batch", runs.batch),
            Route("POST", "/runs", runs.create_run),
            Route("PATCH", "/runs/{run_id}", runs.update_run),
            Route("POST", "/feedback", runs.create_feedback),
        ),
        render_error=_render_error,
    )


ADAPTER = _adapter()
