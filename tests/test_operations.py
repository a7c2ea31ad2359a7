"""On-call work on a running stack: a destination outage, then replay of the affected time
range (nothing duplicated), and `tracebus status` reading the live workers' figures."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from conftest import consume, eventually, fresh_settings
from sink_helpers import SinkProcess
from standins.langfuse import LangfuseStandIn
from streams.stream_helpers import WorkerProcess
from typer.testing import CliRunner

import tracebus
from tracebus.cli.main import app
from tracebus.kafka import EmbeddedBroker
from tracebus.kafka.broker import free_port

KEYS = {"TRACEBUS_LANGFUSE_PUBLIC_KEY": "pk-lf-test", "TRACEBUS_LANGFUSE_SECRET_KEY": "sk-lf-test"}


def cells_of(output: str, first_cell: str) -> list[str]:
    """The cells of the table line whose first cell is `first_cell`."""
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.split("│") if cell.strip()]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in:\n{output}")


def send_traces(client: tracebus.Client, prefix: str, count: int) -> set[str]:
    trace_ids = set()
    for i in range(count):
        with client.trace(f"{prefix}-{i}") as root, client.span("step"):
            pass
        trace_ids.add(root.trace_id)
    assert client.flush(10)
    return trace_ids


def test_an_outage_then_a_replay_of_its_time_range_delivers_everything_once(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = fresh_settings(broker.bootstrap_servers)
    sink_metrics, stream_metrics = free_port(), free_port()
    with LangfuseStandIn("pk-lf-test", "sk-lf-test") as langfuse:
        env = {**KEYS, "TRACEBUS_LANGFUSE_HOST": langfuse.url}
        workers = [
            WorkerProcess(settings, tmp_path, TRACEBUS_METRICS_PORT=str(stream_metrics)),
            # Give up quickly during the outage, as a sink configured for a short budget would.
            SinkProcess(
                "langfuse",
                settings,
                tmp_path,
                TRACEBUS_RETRY_MAX_ELAPSED_S="1",
                TRACEBUS_METRICS_PORT=str(sink_metrics),
                **env,
            ),
        ]
        client = tracebus.Client(**settings.model_dump(), linger_ms=5)
        try:
            before = send_traces(client, "before", 3)
            eventually(lambda: {s.key.trace_id for s in langfuse.spans} == before, 90, "before")
            outage_started = datetime.now(UTC).isoformat()
            with langfuse.down():
                during = send_traces(client, "during", 5)
                letters = consume(
                    settings.bootstrap_servers,
                    settings.dead_letter_topic,
                    lambda r: len({x.key for x in r}) >= 5,
                    timeout=90,
                )
            status = CliRunner().invoke(
                app,
                [
                    "status",
                    "-b",
                    settings.bootstrap_servers,
                    "--traces-topic",
                    settings.traces_topic,
                    "--dead-letter-topic",
                    settings.dead_letter_topic,
                    "-m",
                    f"127.0.0.1:{sink_metrics}",
                    "-m",
                    f"127.0.0.1:{stream_metrics}",
                    "--rate-window",
                    "0.1",
                ],
            )
            replay = CliRunner().invoke(
                app,
                [
                    "replay",
                    "langfuse",
                    "--since",
                    outage_started,
                    "-b",
                    settings.bootstrap_servers,
                    "--traces-topic",
                    settings.traces_topic,
                    "--dead-letter-topic",
                    settings.dead_letter_topic,
                ],
                env={**env, "TRACEBUS_JSONL_DIR": str(tmp_path)},
            )
        finally:
            client.close()
            codes = [w.stop() for w in workers]
        assert codes == [0, 0], [w.log_tail() for w in workers]

    assert {dict(x.headers)["tracebus-stage"] for x in letters} == {b"sink:langfuse"}
    assert status.exit_code == 0, status.output
    assert cells_of(status.output, "delivered")[1] == "3"
    assert cells_of(status.output, "traces published")[1] == "8"
    assert cells_of(status.output, "sink:langfuse")[1:] == ["5", "5"]
    assert cells_of(status.output, "destination failing")[1] == "0"
    assert replay.exit_code == 0, replay.output
    assert "5 delivered" in replay.output
    assert {s.key.trace_id for s in langfuse.spans} == before | during
    assert all(count == 1 for count in langfuse.receipts.values())


def test_dead_letters_redriven_after_the_fix_reach_only_their_own_destination(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = fresh_settings(broker.bootstrap_servers)
    jsonl_dir = tmp_path / "jsonl"
    with LangfuseStandIn("pk-lf-test", "sk-lf-test") as langfuse:
        langfuse.fail_next(404, endpoint="traces")  # e.g. a wrong host path, fixed later
        env = {**KEYS, "TRACEBUS_LANGFUSE_HOST": langfuse.url}
        workers = [
            WorkerProcess(settings, tmp_path),
            SinkProcess("langfuse", settings, tmp_path, **env),
            SinkProcess(
                "jsonl",
                settings,
                tmp_path,
                TRACEBUS_GROUP_ID=f"jsonl-{settings.traces_topic}",
                TRACEBUS_JSONL_DIR=str(jsonl_dir),
            ),
        ]
        client = tracebus.Client(**settings.model_dump(), linger_ms=5)

        def jsonl_lines() -> int:
            return sum(f.read_text().count("\n") for f in jsonl_dir.glob("*.jsonl"))

        try:
            rejected = send_traces(client, "rejected", 1)
            consume(settings.bootstrap_servers, settings.dead_letter_topic, bool, timeout=90)
            eventually(lambda: jsonl_lines() == 1, 30, "the jsonl copy")
            redrive = CliRunner().invoke(
                app,
                [
                    "dlq",
                    "redrive",
                    "--stage",
                    "sink:langfuse",
                    "-b",
                    settings.bootstrap_servers,
                    "--events-topic",
                    settings.events_topic,
                    "--traces-topic",
                    settings.traces_topic,
                    "--dead-letter-topic",
                    settings.dead_letter_topic,
                ],
            )
            assert redrive.exit_code == 0, redrive.output
            eventually(
                lambda: {s.key.trace_id for s in langfuse.spans} == rejected, 60, "redelivery"
            )
            after = send_traces(client, "after", 1)
            eventually(lambda: jsonl_lines() == 2, 30, "the next jsonl copy")
        finally:
            client.close()
            codes = [w.stop() for w in workers]
        assert codes == [0, 0, 0], [w.log_tail() for w in workers]
    # The redriven record went to the traces topic for Langfuse only: jsonl skipped it.
    assert jsonl_lines() == 2
    assert {s.key.trace_id for s in langfuse.spans} == rejected | after
