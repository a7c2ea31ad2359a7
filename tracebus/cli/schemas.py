"""`tracebus schemas export|check`: the wire contract as JSON Schema files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tracebus.cli.common import ExitCode, console, fail
from tracebus.schemas.export import stale_json_schemas, write_json_schemas

app = typer.Typer(
    help="Export the event contract as JSON Schema files, or check exported files are current.",
    no_args_is_help=True,
)


@app.command(
    "export",
    epilog="Example: [cyan]tracebus schemas export --out schemas[/cyan]",
)
def export(
    out: Annotated[
        Path,
        typer.Option("--out", "-o", file_okay=False, help="Directory to write the files into."),
    ] = Path("schemas"),
) -> None:
    """Write one JSON Schema file per event model (for producers in other languages)."""
    try:
        written = write_json_schemas(out)
    except OSError as error:
        fail(f"cannot write schemas to {out}: {error.strerror or error}", ExitCode.USAGE)
    for path in written:
        console.print(f"wrote {path}")


@app.command(
    "check",
    epilog="Example (CI): [cyan]tracebus schemas check --dir schemas[/cyan]"
    "\n\nExits with code 1 and lists the files when any is missing or out of date.",
)
def check(
    directory: Annotated[
        Path,
        typer.Option("--dir", "-d", file_okay=False, help="Directory holding the exported files."),
    ] = Path("schemas"),
) -> None:
    """Check the exported JSON Schema files match the models."""
    stale = stale_json_schemas(directory)
    if stale:
        for name in stale:
            console.print(f"stale: {directory / name}")
        fail(
            f"{len(stale)} schema file(s) in {directory} are missing or out of date; "
            f"run `tracebus schemas export --out {directory}`",
            ExitCode.CHECK_FAILED,
        )
    console.print(f"schema files in {directory} are up to date")
