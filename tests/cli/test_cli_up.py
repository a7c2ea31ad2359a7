"""`tracebus up`: broker plus continuous demo traffic until SIGTERM or --duration."""

from __future__ import annotations

from cli_helpers import (
    broker_answers,
    cli_process,
    end_offsets,
    poll,
    port_accepts,
    stop,
    table_int,
)

from tracebus.kafka.broker import free_port


def test_up_demo_streams_traffic_until_sigterm() -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    with cli_process(
        "up", "--demo", "--port", str(port), "--partitions", "2", "--rate", "50", "--duration", "60"
    ) as process:
        broker_answers(address, process, timeout=20)
        poll(
            lambda: sum(end_offsets(address, "tracebus.events").values()) >= 10,
            timeout=20,
            what="demo records in tracebus.events",
            process=process,
        )

        code, stdout, stderr = stop(process)

    assert code == 0, stdout + stderr
    assert f"broker listening on {address}" in stdout
    traces = table_int(stdout, "demo traces sent")
    assert traces >= 10
    assert table_int(stdout, "events sent") > traces
    assert table_int(stdout, "events buffered") == 0
    assert table_int(stdout, "events dropped") == 0
    assert table_int(stdout, "records in tracebus.events") >= 10
    assert "stopped (SIGTERM)" in stdout
    assert not port_accepts(port)


def test_up_stops_by_itself_after_duration() -> None:
    port = free_port()
    with cli_process("up", "--port", str(port), "--duration", "1") as process:
        stdout, stderr = process.communicate(timeout=20)

    assert process.returncode == 0, stdout + stderr
    assert "records in tracebus.events" in stdout
    assert "stopped (duration reached)" in stdout
    assert not port_accepts(port)
