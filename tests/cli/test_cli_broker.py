"""`tracebus broker` runs until SIGTERM; a taken port is a clear usage error."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from cli_helpers import (
    broker_answers,
    cli_process,
    end_offsets,
    poll,
    port_accepts,
    run_cli,
    stop,
)

from tracebus.kafka.broker import free_port


def test_broker_serves_the_topics_until_sigterm() -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    with cli_process("broker", "--port", str(port), "--partitions", "2") as process:
        broker_answers(address, process, timeout=20)
        # The topics are created right after the broker answers.
        poll(lambda: end_offsets(address, "tracebus.events"), 10, "topics exist", process)
        assert end_offsets(address, "tracebus.events") == {0: 0, 1: 0}
        assert end_offsets(address, "tracebus.deadletter") == {0: 0}

        code, stdout, stderr = stop(process)

    assert code == 0, stderr
    assert f"broker listening on {address}" in stdout
    for topic in ("tracebus.events", "tracebus.traces", "tracebus.deadletter"):
        assert topic in stdout
    assert "broker stopped (SIGTERM)" in stdout
    assert not port_accepts(port), "the broker process outlived the command"


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("command", ["broker", "up"])
def test_port_in_use_is_a_clear_error_with_exit_code_2(command: str, taken_port: int) -> None:
    result = run_cli(command, "--port", str(taken_port))

    assert result.exit_code == 2, result.output
    assert f"port {taken_port} on 127.0.0.1 is already in use" in result.stderr
    assert "--port" in result.stderr
    assert "Traceback" not in result.output


def test_port_comes_from_tracebus_broker_port(taken_port: int) -> None:
    result = run_cli("broker", env={"TRACEBUS_BROKER_PORT": str(taken_port)})
    assert result.exit_code == 2
    assert f"port {taken_port}" in result.stderr
