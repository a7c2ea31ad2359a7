"""`tracebus --help` and each command's help: commands, examples, env vars, exit codes."""

from __future__ import annotations

import pytest
from cli_helpers import run_cli

COMMANDS = ["up", "broker", "demo", "topics", "schemas"]


def test_top_level_help_lists_every_command_with_an_example_and_the_exit_codes() -> None:
    result = run_cli("--help")
    assert result.exit_code == 0, result.output
    for command in COMMANDS:
        assert f" {command} " in result.output
        assert f"tracebus {command} " in result.output, f"no example for {command}"
    assert "Exit codes" in result.output
    for code in ("0 ok", "1 check failed", "2 usage", "3 Kafka broker unreachable", "5 a worker"):
        assert code in result.output
    assert "TRACEBUS_LOG_LEVEL" in result.output
    assert "TRACEBUS_KAFKA_SECURITY_PROTOCOL" in result.output


def test_no_arguments_shows_help() -> None:
    result = run_cli()
    assert "Usage: tracebus" in result.output
    assert result.exit_code == 2


@pytest.mark.parametrize(
    ("group", "subcommands"), [("topics", ["create", "describe"]), ("schemas", ["export", "check"])]
)
def test_groups_list_their_subcommands(group: str, subcommands: list[str]) -> None:
    result = run_cli(group, "--help")
    assert result.exit_code == 0, result.output
    for subcommand in subcommands:
        assert f" {subcommand} " in result.output


@pytest.mark.parametrize(
    ("command", "env_vars"),
    [
        (["up"], ["TRACEBUS_BROKER_PORT", "TRACEBUS_BROKER_HOST", "TRACEBUS_PARTITIONS"]),
        (["broker"], ["TRACEBUS_BROKER_PORT", "TRACEBUS_BROKER_HOST", "TRACEBUS_EVENTS_TOPIC"]),
        (["demo"], ["TRACEBUS_BOOTSTRAP_SERVERS", "TRACEBUS_EVENTS_TOPIC"]),
        (["topics", "create"], ["TRACEBUS_BOOTSTRAP_SERVERS", "TRACEBUS_PARTITIONS"]),
        (["topics", "describe"], ["TRACEBUS_BOOTSTRAP_SERVERS", "TRACEBUS_DEAD_LETTER_TOPIC"]),
        (["schemas", "export"], []),
        (["schemas", "check"], []),
    ],
)
def test_command_help_has_an_example_and_its_env_vars(
    command: list[str], env_vars: list[str]
) -> None:
    result = run_cli(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Example" in result.output
    assert f"tracebus {' '.join(command)}" in result.output
    for env_var in env_vars:
        assert env_var in result.output


def test_invalid_option_value_is_a_usage_error() -> None:
    result = run_cli("topics", "describe", env={"TRACEBUS_PARTITIONS": "0"})
    assert result.exit_code == 2
    assert "TRACEBUS_PARTITIONS" in result.output


def test_version() -> None:
    result = run_cli("--version")
    assert result.exit_code == 0
    assert result.output.startswith("tracebus ")
