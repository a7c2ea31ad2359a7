"""`tracebus up`: the stack, demo traffic and gateway until SIGTERM or --duration, and the
figures of its summary."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from cli_helpers import (
    broker_answers,
    cli_process,
    end_offsets,
    poll,
    port_accepts,
    stop,
    table_int,
    table_value,
)

from tracebus.cli.up import TraceFiles, WorkerTotals
from tracebus.kafka.broker import free_port
from tracebus.ops.scrape import Snapshot


def jsonl_traces(directory: Path) -> list[dict[str, object]]:
    return [json.loads(line) for f in directory.glob("*.jsonl") for line in f.open()]


def http_status(port: int, path: str) -> int | None:
    """The status of GET http://127.0.0.1:PORT/PATH; None when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def otlp_trace(trace_id: str) -> bytes:
    """One finished root span, as an OpenTelemetry exporter sends it (OTLP/JSON)."""
    now = time.time_ns()
    span = {
        "traceId": trace_id,
        "spanId": uuid.uuid4().hex[:16],
        "name": "via-gateway",
        "kind": 2,
        "startTimeUnixNano": str(now - 250_000_000),
        "endTimeUnixNano": str(now),
    }
    service = {"key": "service.name", "value": {"stringValue": "up-test"}}
    resource_spans = {
        "resource": {"attributes": [service]},
        "scopeSpans": [{"scope": {"name": "test"}, "spans": [span]}],
    }
    return json.dumps({"resourceSpans": [resource_spans]}).encode()


def post_json(port: int, path: str, body: bytes) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


def seconds(cell: str) -> float:
    return float(cell.removesuffix("s").replace(",", ""))


def test_up_demo_runs_the_whole_pipeline_into_jsonl_files_until_sigterm(tmp_path: Path) -> None:
    port, gateway_port = free_port(), free_port()
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
        "--gateway-port",
        str(gateway_port),
    ) as process:
        broker_answers(address, process, timeout=20)
        poll(
            lambda: http_status(gateway_port, "/healthz") == 200,
            timeout=30,
            what="the gateway answers /healthz",
            process=process,
        )
        poll(
            lambda: sum(end_offsets(address, "tracebus.events").values()) >= 10,
            timeout=20,
            what="demo records in tracebus.events",
            process=process,
        )
        # An app instrumented with OpenTelemetry, pointed at the gateway without a key.
        gateway_trace = uuid.uuid4().hex
        assert post_json(gateway_port, "/v1/traces", otlp_trace(gateway_trace)) == 200
        poll(
            lambda: (
                len(jsonl_traces(out)) >= 10
                and gateway_trace in {d["trace_id"] for d in jsonl_traces(out)}
            ),
            timeout=60,
            what="complete traces, the gateway's too, delivered to the jsonl files",
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
    # Delivered per sink (the sink's own metrics), cost and latency (the traces it wrote).
    assert table_int(stdout, "delivered to jsonl") >= 10
    assert table_int(stdout, "sink dead letters") == 0
    assert table_int(stdout, "events via gateway") >= 1
    assert float(table_value(stdout, "cost so far (USD)")) > 0
    p50 = seconds(table_value(stdout, "trace latency p50"))
    assert 0 < p50 <= seconds(table_value(stdout, "trace latency p95"))
    assert table_value(stdout, "process gateway") == "running"
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    for variable in ("LANGFUSE_HOST", "LANGSMITH_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        assert f"{variable}={gateway_url}" in stdout
    assert not port_accepts(port)
    assert not port_accepts(gateway_port)


def test_up_stops_by_itself_after_duration(tmp_path: Path) -> None:
    port = free_port()
    with cli_process(
        "up", "--port", str(port), "--duration", "1", "--out", str(tmp_path), "--gateway-port", "0"
    ) as process:
        stdout, stderr = process.communicate(timeout=20)

    assert process.returncode == 0, stdout + stderr
    assert "records in tracebus.events" in stdout
    assert "stopped (duration reached)" in stdout
    assert "gateway" not in stdout
    assert not port_accepts(port)


def test_up_refuses_a_gateway_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        gateway_port = taken.getsockname()[1]
        with cli_process(
            "up",
            "--port",
            str(free_port()),
            "--out",
            str(tmp_path),
            "--gateway-port",
            str(gateway_port),
        ) as process:
            stdout, stderr = process.communicate(timeout=20)

    assert process.returncode == 2, stdout + stderr
    assert f"port {gateway_port} on 127.0.0.1 is already in use" in stderr
    assert "--gateway-port 0" in stderr


def test_up_refuses_the_security_settings_of_a_kafka_cluster(tmp_path: Path) -> None:
    """Its broker is a local one without TLS or SASL: its workers could not connect."""
    security = {"TRACEBUS_KAFKA_SECURITY_PROTOCOL": "SSL"}
    with cli_process("up", "--port", str(free_port()), "--out", str(tmp_path), env=security) as up:
        stdout, stderr = up.communicate(timeout=20)
    assert up.returncode == 2, stdout + stderr
    assert "unset the TRACEBUS_KAFKA_* security settings" in stderr


def test_worker_totals_add_counters_up_across_restarts_and_keep_the_last_gauges() -> None:
    totals = WorkerTotals()
    assert totals.get("delivered") is None

    totals.update(101, Snapshot("url", 0.0, values={"delivered": 5, "open traces": 3}))
    totals.update(101, Snapshot("url", 1.0, values={"delivered": 8, "open traces": 4}))
    totals.update(101, Snapshot("url", 2.0, error="ConnectError"))  # exiting: kept as it was
    totals.update(202, Snapshot("url", 3.0, values={"delivered": 2, "open traces": 1}))

    assert totals.get("delivered") == 10
    assert totals.get("open traces") == 1


def trace_line(trace_id: str, revision: int, cost: float | None, duration_ms: float) -> bytes:
    summary: dict[str, object] = {"duration_ms": duration_ms}
    if cost is not None:
        summary["cost"] = {"total": cost}
    document = {"trace_id": trace_id, "revision": revision, "part": 1, "summary": summary}
    return json.dumps(document).encode() + b"\n"


def test_trace_files_count_this_runs_complete_lines_once_per_trace_at_its_latest_revision(
    tmp_path: Path,
) -> None:
    earlier = tmp_path / "traces-earlier.jsonl"
    earlier.write_bytes(trace_line("a" * 32, 1, 100.0, 9_000))  # an earlier run's
    files = TraceFiles(tmp_path)
    assert (files.cost_usd, files.latency_ms(0.5)) == (0.0, None)

    current = tmp_path / "traces-now.jsonl"
    half = trace_line("c" * 32, 1, 0.5, 3_000)
    current.write_bytes(
        trace_line("b" * 32, 1, 0.25, 1_000)
        + trace_line("d" * 32, 1, None, 2_000)  # an unpriced model: no cost
        + half[:20]
    )
    files.refresh()
    assert files.cost_usd == 0.25
    assert (files.latency_ms(0.5), files.latency_ms(0.95)) == (1_000, 2_000)

    with current.open("ab") as file:
        file.write(half[20:] + trace_line("b" * 32, 2, 0.75, 4_000) + trace_line("b" * 32, 1, 9, 1))
    files.refresh()
    assert files.cost_usd == 0.75 + 0.5
    assert (files.latency_ms(0.5), files.latency_ms(0.95)) == (3_000, 4_000)
