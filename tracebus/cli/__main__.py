"""`python -m tracebus.cli`: the same as the `tracebus` command."""

from tracebus.cli.main import app

app(prog_name="tracebus")
