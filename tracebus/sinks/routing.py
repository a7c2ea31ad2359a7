"""Per-project destinations: each project's traces through a consumer group of its own.

A trace's project is the one its events records were stamped with (`TraceDocument.project`;
the stream stamps it on the trace's records of the traces topic too, so a sink filters
without decoding). A routes file gives a project its own destination settings (a Langfuse
project's keys, a LangSmith project name). The sink then runs one delivery runtime per route,
each in a consumer group of its own, and one for every other trace: the sink's own
destination, or dead letters when it has none (a redrive delivers them once the project has a
route). A project whose destination fails is retried alone; the others go on."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tracebus.schemas import TraceDocument
from tracebus.sinks.exporter import ExportError


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


@dataclass(frozen=True)
class Route:
    """Which traces one delivery runtime takes: one project's (`project`), or, for the sink's
    own destination, every trace whose project no other route takes (`routed`)."""

    project: str | None = None
    routed: frozenset[str] = frozenset()

    @property
    def takes_the_rest(self) -> bool:
        """This route also takes what names no project, and dead-letters what is unreadable."""
        return self.project is None

    def takes(self, project: str | None) -> bool:
        if self.project is not None:
            return project == self.project
        return project is None or project not in self.routed

    def group(self, sink_group: str) -> str:
        """The route's consumer group, beside the sink's own (`sink_group`)."""
        return sink_group if self.project is None else f"{sink_group}.{self.project}"


EVERY_TRACE = Route()


def routes_of(projects: Sequence[str]) -> list[Route]:
    """One route per project, then the one of the sink's own destination."""
    return [*(Route(p) for p in projects), Route(routed=frozenset(projects))]


class NoDestination:
    """The sink's own destination when it has none: every trace it gets is dead-lettered."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return "NoDestination()"

    async def export(self, documents: Sequence[TraceDocument]) -> None:
        whose = sorted({f"project {d.project!r}" if d.project else "no project" for d in documents})
        raise ExportError(
            f"no destination for traces of {' or '.join(whose)}: the routes file names no "
            "such project and the sink has no destination of its own",
            retryable=False,
            # Each trace is dead-lettered with the reason of its own project.
            whole_batch=len(whose) > 1,
        )

    async def close(self) -> None:
        return None
