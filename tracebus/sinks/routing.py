"""Per-project destinations: each trace is delivered through its project's exporter.

A trace's project is the one its events records were stamped with (`TraceDocument.project`).
A routes file gives a project its own destination settings (a Langfuse project's keys, a
LangSmith project name); traces of other projects, and traces without one, go to the sink's
own destination, or are dead-lettered when it has none (a redrive delivers them once the
project has a route).

One sink group delivers every project: a project whose destination fails holds the others
back while it is retried, as one destination would."""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path

from tracebus.schemas import TraceDocument
from tracebus.sinks.exporter import Exporter, ExportError


class RoutesError(ValueError):
    """The routes file cannot be used; the message says why, never a setting's value."""


def load_routes(path: Path, fields: frozenset[str]) -> dict[str, dict[str, str]]:
    """The `[projects.<name>]` tables of a TOML routes file: per project, the destination
    settings it overrides, named as the sink's options are (`fields`)."""
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise RoutesError(f"cannot read routes file {path}: {error}") from None
    projects = document.get("projects")
    if set(document) != {"projects"} or not isinstance(projects, dict) or not projects:
        raise RoutesError(f"{path}: expected only [projects.<name>] tables")
    routes = {}
    for project, table in projects.items():
        if not isinstance(table, dict) or not table:
            raise RoutesError(f"{path}: projects.{project} must be a table of settings")
        unknown = sorted(set(table) - fields)
        if unknown:
            known = ", ".join(sorted(fields))
            raise RoutesError(f"{path}: projects.{project}: unknown {unknown} (known: {known})")
        if not all(isinstance(value, str) and value for value in table.values()):
            raise RoutesError(f"{path}: projects.{project}: every setting must be a string")
        routes[project] = dict(table)
    return routes


class RoutedExporter:
    """Splits each batch by project and exports the parts concurrently, each through its
    project's exporter (`default` for the others)."""

    def __init__(self, name: str, routes: Mapping[str, Exporter], default: Exporter | None) -> None:
        self.name = name
        self._routes = dict(routes)
        self._default = default

    def __repr__(self) -> str:
        return f"RoutedExporter(projects={sorted(self._routes)}, default={self._default!r})"

    def _route(self, document: TraceDocument) -> Exporter | None:
        project = document.project
        return self._routes.get(project, self._default) if project else self._default

    async def export(self, documents: Sequence[TraceDocument]) -> None:
        parts: dict[Exporter | None, list[TraceDocument]] = {}
        for document in documents:
            parts.setdefault(self._route(document), []).append(document)
        unrouted = parts.pop(None, None)
        if unrouted:
            whose = sorted(
                {f"project {d.project!r}" if d.project else "no project" for d in unrouted}
            )
            # In a batch with routed traces, the runtime bisects down to these alone.
            raise ExportError(
                f"no destination for traces of {' or '.join(whose)}: the routes file names no "
                "such project and the sink has no destination of its own",
                retryable=False,
                whole_batch=bool(parts),
            )
        errors: list[ExportError] = []
        for result in await asyncio.gather(
            *(exporter.export(part) for exporter, part in parts.items()), return_exceptions=True
        ):
            if isinstance(result, ExportError):
                errors.append(result)
            elif isinstance(result, BaseException):
                raise result
        if not errors:
            return
        retryable = [e for e in errors if e.retryable]
        if retryable:
            # The whole batch again (what went through is delivered again, idempotently),
            # no sooner than every destination that said when asked.
            raise max(retryable, key=lambda e: e.retry_after or 0.0)
        first = errors[0]
        if len(parts) == 1:
            raise first
        # Bisected until each part is one project's, whose own error then decides.
        raise ExportError(
            str(first),
            retryable=False,
            status=first.status,
            response=first.response,
            whole_batch=True,
        )

    async def close(self) -> None:
        exporters = [*self._routes.values(), *([self._default] if self._default else [])]
        await asyncio.gather(*(exporter.close() for exporter in exporters))
