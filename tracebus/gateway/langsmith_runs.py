"""Placeholder: the langsmith adapter is being written."""

from __future__ import annotations

from aiohttp import web

from tracebus.gateway.protocol import Adapter, GatewayError


def _render_error(request: web.Request, error: GatewayError) -> web.Response:
    return web.json_response({"message": error.message}, status=error.status)


ADAPTER = Adapter(name="langsmith", routes=(), render_error=_render_error)
