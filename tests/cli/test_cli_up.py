"""`tracebus up`: broker plus continuous demo traffic until SIGTERM or --duration."""

from __future__ import annotations

import json
from pathlib import Path

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


def jsonl_traces(directory: Path) -> list[dict[str, object]]:
    return [json.loads(line) for f in directory.glob("*.jsonl") for line in f.open()]


def test_up_demo_runs_the_whole_pipeline_into_jsonl_files_until_sigterm(tmp_path: Path) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    out = tmp_path / "traces"
    with cli_process(
        "up",
        "--demo",
        "--port",
        str(port),
        "--partitions",
        "2",
        "--rate",
        "50",
        "--duration",
        "120",
        "--out",
        str(out),
    ) as process:
        broker_answers(address, process, timeout=20)
        poll(
            lambda: sum(end_offsets(address, "tracebus.events").values()) >= 10,
            timeout=20,
            what="demo records in tracebus.events",
            process=process,
        )
        poll(
            lambda: len(jsonl_traces(out)) >= 10,
            timeout=60,
            what="complete traces delivered to the jsonl files",
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
    assert table_int(stdout, "traces published (stream)") >= 10
    assert f"complete traces go to: {out}/ (jsonl)" in stdout
    assert all(d["summary"]["observation_count"] >= 1 for d in jsonl_traces(out))
    assert not port_accepts(port)


def test_up_stops_by_itself_after_duration(tmp_path: Path) -> None:
    port = free_port()
    with cli_process(
        "up", "--port", str(port), "--duration", "1", "--out", str(tmp_path)
    ) as process:
        stdout, stderr = process.communicate(timeout=20)

    assert process.returncode == 0, stdout + stderr
    assert "records in tracebus.events" in stdout
    assert "stopped (duration reached)" in stdout
    assert not port_accepts(port)
