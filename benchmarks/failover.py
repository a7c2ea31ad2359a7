"""Failover benchmark: how long traces wait when one of two stream workers stops or dies.

Two `tracebus stream` workers share the events topic's partitions on the embedded broker while
a client sends complete traces at a steady rate. Then one worker is stopped (SIGTERM: it leaves
its consumer group, and the other takes its partitions at once) or killed (SIGKILL: the group
waits for the dead member's session to time out, `TRACEBUS_SESSION_TIMEOUT_S`); the other
worker restores the moved traces from the changelog and publishes them. Each scenario runs on
topics of its own; the table shows the latency (the client's end of a trace → its document on
the traces topic) of the traces sent before the event, the worst one of those sent after it,
and the failover gap: the excess of the worst over the usual (p50 before). The embedded broker
answers every join after half the session timeout: after a stop the other worker waits for
that rejoin; Apache Kafka answers once every member has rejoined."""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, NamedTuple

from aiokafka import AIOKafkaConsumer
from common import (
    MS_PER_S,
    RECORDS_METRIC,
    Child,
    add_run_arguments,
    benchmark_parser,
    children_killed,
    created_topics,
    embedded_broker,
    environment,
    fmt,
    new_table,
    print_report,
    progress,
    stream_metrics,
    wait_until,
    write_json,
)

import tracebus
from tracebus.kafka.broker import free_port

PARTITIONS = 8
WORKER_COMMAND = [sys.executable, "-m", "tracebus.cli", "--log-level", "warning", "stream"]
WORKER_ENV = {"TRACEBUS_GRACE_S": "0.5", "TRACEBUS_TICK_S": "0.1", "TRACEBUS_STORE": "memory"}
PACKAGES = ("tracebus", "faust-streaming", "aiokafka")


class Scenario(NamedTuple):
    event: str  # "stop" (SIGTERM) or "kill" (SIGKILL)
    session_timeout_s: float

    @property
    def name(self) -> str:
        return f"{self.event}, {self.session_timeout_s:g} s session"


class Config(NamedTuple):
    scenarios: list[Scenario]
    rate: float  # traces per second
    before_s: float  # load with both workers running, before the event
    after_s: float  # load after the event
    timeout_s: float


class Documents:
    """Every document's trace id and broker timestamp (ms), read in a thread of its own."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.published: dict[str, list[int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._read(bootstrap, topic),))
        self._thread.start()

    async def _read(self, bootstrap: str, topic: str) -> None:
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            while not self._stop.is_set():
                batches = await consumer.getmany(timeout_ms=200)
                for record in (r for batch in batches.values() for r in batch):
                    assert record.key is not None
                    self.published.setdefault(record.key.decode(), []).append(record.timestamp)
        finally:
            await consumer.stop()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(30)


def records_handled(port: int) -> float:
    """The worker's count of event records handled (0 until it serves its metrics)."""
    try:
        return stream_metrics(port).get(RECORDS_METRIC, 0.0)
    except OSError:
        return 0.0


def send_for(client: tracebus.Client, seconds: float, rate: float, sent: dict[str, float]) -> None:
    """Complete traces (a root and one span) at `rate` per second for `seconds`; each one's end
    time (epoch seconds) by trace id."""
    start = time.monotonic()
    for number in range(int(seconds * rate)):
        time.sleep(max(0.0, start + number / rate - time.monotonic()))
        with client.trace("failover") as root, client.span("step"):
            pass
        sent[root.trace_id] = time.time()


def run_scenario(bootstrap: str, work: Path, scenario: Scenario, config: Config) -> dict[str, Any]:
    suffix = uuid.uuid4().hex[:8]
    settings = created_topics(bootstrap, f"bench.failover.{suffix}", PARTITIONS)
    ports = [free_port(), free_port()]
    env = {
        **os.environ,
        **WORKER_ENV,
        **settings.worker_env(),
        "TRACEBUS_APP_ID": f"bench-failover-{suffix}",
        "TRACEBUS_SESSION_TIMEOUT_S": str(scenario.session_timeout_s),
    }
    client = tracebus.Client(**settings.model_dump(), linger_ms=5)
    documents = Documents(bootstrap, settings.traces_topic)
    sent_while_starting: dict[str, float] = {}
    sent_before: dict[str, float] = {}
    sent_after: dict[str, float] = {}
    workers: list[Child] = []
    try:
        for index, port in enumerate(ports):
            log = work / f"{suffix}-worker-{index}.log"
            workers.append(Child(WORKER_COMMAND, log, {**env, "TRACEBUS_METRICS_PORT": str(port)}))
        # Both workers hold partitions before the event: each has handled records.
        deadline = time.monotonic() + config.timeout_s
        while not all(records_handled(port) > 0 for port in ports):
            send_for(client, 1.0, config.rate, sent_while_starting)
            if time.monotonic() > deadline or any(w.process.poll() is not None for w in workers):
                return {
                    "error": f"the workers did not share the partitions: {workers[0].log_tail()}"
                }
        send_for(client, config.before_s, config.rate, sent_before)
        if scenario.event == "stop":
            workers[0].stop()
        else:
            workers[0].process.kill()
        send_for(client, config.after_s, config.rate, sent_after)
        client.flush(30)
        every = {**sent_while_starting, **sent_before, **sent_after}
        if error := wait_until(
            lambda: every.keys() <= documents.published.keys(), workers[1], config.timeout_s
        ):
            missing = len(every.keys() - documents.published.keys())
            return {"error": f"{missing} traces not published: {error}"}
    finally:
        client.close()
        documents.close()
        for worker in workers:
            worker.stop()
    return figures(sent_before, sent_after, documents.published)


def figures(
    before: dict[str, float], after: dict[str, float], published: dict[str, list[int]]
) -> dict[str, Any]:
    def latency_ms(trace_id: str, sent_at: float) -> float:
        return min(published[trace_id]) - sent_at * MS_PER_S

    usual = statistics.median(latency_ms(t, s) for t, s in before.items())
    worst = max(latency_ms(t, s) for t, s in after.items())
    return {
        "traces": len(before) + len(after),
        "p50_before_ms": usual,
        "worst_after_ms": worst,
        "gap_ms": worst - usual,
        # Documents after a trace's first: higher revisions of traces the departed worker had
        # marked `publishing` (the other cannot know whether they went out).
        "republished": sum(len(times) - 1 for times in published.values()),
    }


def run_benchmark(config: Config) -> dict[str, Any]:
    runs = []
    with embedded_broker({}, "tracebus-failover-") as (bootstrap, work):  # topics per scenario
        for scenario in config.scenarios:
            progress(scenario.name)
            runs.append(
                {"scenario": scenario._asdict(), **run_scenario(bootstrap, work, scenario, config)}
            )
    return {
        "config": {**config._asdict(), "scenarios": [s._asdict() for s in config.scenarios]},
        "environment": environment(PACKAGES),
        "runs": runs,
    }


def table(report: dict[str, Any]) -> Any:
    rows = new_table(
        "Failover: traces sent around one of two stream workers stopping or dying",
        ["event", "session"],
        ["traces", "p50 before", "worst after", "gap", "republished"],
    )
    for run in report["runs"]:
        scenario = run["scenario"]
        rows.add_row(
            scenario["event"],
            f"{scenario['session_timeout_s']:g} s",
            fmt(run.get("traces")),
            fmt(run.get("p50_before_ms"), suffix=" ms"),
            fmt(run.get("worst_after_ms"), suffix=" ms"),
            fmt(run.get("gap_ms"), suffix=" ms"),
            fmt(run.get("republished")),
            run.get("error", ""),
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__ or "")
    add_run_arguments(
        parser, quick="stop, and kill at a 10 s session, 20 s of load after each", timeout=120
    )
    parser.add_argument("--rate", type=float, default=50.0, help="traces per second")
    parser.add_argument("--after", type=float, default=25.0, help="seconds of load after the event")
    parser.add_argument(
        "--sessions",
        default="10,6",
        help="session timeouts (s) of the kill scenarios, comma separated",
    )
    args = parser.parse_args(argv)
    sessions = [10.0] if args.quick else [float(s) for s in args.sessions.split(",")]
    scenarios = [Scenario("stop", 10.0), *(Scenario("kill", s) for s in sessions)]
    config = Config(scenarios, args.rate, 5.0, 20.0 if args.quick else args.after, args.timeout)
    with children_killed():
        report = run_benchmark(config)
    write_json(args.json, report)
    print_report([table(report)], [], 110)
    return 1 if any("error" in run for run in report["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
