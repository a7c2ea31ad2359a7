"""The `tracebus` command line (typer); the entry point is `tracebus.cli.main:app`."""
