"""What the benchmarks share: command line, child processes, /proc readers, Kafka, report.

The benchmarks run as scripts (`.venv/bin/python benchmarks/NAME.py`): Python puts a script's
own folder first on `sys.path`, so they import this module as `common`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from importlib import metadata
from pathlib import Path
from random import Random
from typing import Any, NamedTuple, NoReturn

from tracebus.config import KafkaSettings
from tracebus.kafka import EmbeddedBroker, create_topics
from tracebus.kafka.broker import free_port

RESULT_PREFIX = "BENCHMARK-RESULT "  # a child's result: this prefix and one line of JSON
NS_PER_MS = 1_000_000
MS_PER_S = 1000

# -- command line ----------------------------------------------------------------------------


def benchmark_parser(doc: str) -> argparse.ArgumentParser:
    """A parser described by the first paragraph of the benchmark's docstring."""
    return argparse.ArgumentParser(description=doc.split("\n\n")[0])


def add_run_arguments(
    parser: argparse.ArgumentParser, *, quick: str, timeout: float, per: str = "run"
) -> None:
    """`--quick` (a smoke run: `quick`), `--json PATH` and `--timeout` (seconds per `per`)."""
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {quick}")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument("--timeout", type=float, default=timeout, help=f"limit per {per}, seconds")


def add_profile_arguments(parser: argparse.ArgumentParser, *, what: str) -> None:
    """`--py-spy PATH` (to do `what`) and `--profile-dir`; see `prepare_profile_dir`."""
    parser.add_argument("--py-spy", help=f"py-spy executable: {what}")
    parser.add_argument("--profile-dir", type=Path, help="where py-spy writes (with --py-spy)")


def prepare_profile_dir(args: argparse.Namespace, prefix: str) -> None:
    """With `--py-spy` and no `--profile-dir`, a new temporary folder; the folder exists after."""
    if args.py_spy and args.profile_dir is None:
        args.profile_dir = Path(tempfile.mkdtemp(prefix=prefix))
    if args.profile_dir:
        args.profile_dir.mkdir(parents=True, exist_ok=True)


def median_run(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """A copy of the run with the median `key`, holding every run's `key` in run order as
    `<key>_per_round`; the first failed run instead when any failed."""
    failed = [run for run in runs if "error" in run]
    if failed:
        return failed[0]
    ordered = sorted(runs, key=lambda run: run[key])
    median = dict(ordered[(len(ordered) - 1) // 2])
    median[f"{key}_per_round"] = [run[key] for run in runs]
    return median


def write_json(path: Path | None, report: dict[str, Any], default: Any = None) -> None:
    """Every figure of `report` to `path` (`--json`), if given."""
    if path:
        path.write_text(json.dumps(report, indent=2, default=default) + "\n")


# -- child processes -------------------------------------------------------------------------


def run_child(task: Callable[[], dict[str, Any]], quiet: Iterable[str] = ()) -> NoReturn:
    """Run a child's task (the loggers `quiet` silenced), print its result line and leave with
    `os._exit`: SDK exporters retrying an unreachable endpoint, and exit handlers that would
    flush again, must not delay the exit. Exit status 1 (traceback on stderr) if it failed."""
    for name in quiet:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    code = 0
    try:
        result = task()
        sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    except Exception:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def find_result(output: str) -> dict[str, Any] | None:
    """The last result line a child printed (see `run_child`) in `output`, or None."""
    for line in reversed(output.splitlines()):
        if line.startswith(RESULT_PREFIX):
            result: dict[str, Any] = json.loads(line.removeprefix(RESULT_PREFIX))
            return result
    return None


_children: list[subprocess.Popen[bytes]] = []


class Child:
    """A subprocess with its output in a log file; killed on exit whatever happens (see
    `children_killed`)."""

    def __init__(self, command: list[str], log_path: Path, env: dict[str, str] | None = None):
        self.log_path = log_path
        self.started = time.time()
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        _children.append(self.process)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 5) -> str:
        return " | ".join(self.log_text().strip().splitlines()[-lines:])

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then SIGKILL after `timeout` seconds."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


def kill_children() -> None:
    for process in _children:
        if process.poll() is None:
            process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)


@contextlib.contextmanager
def children_killed() -> Iterator[None]:
    """SIGTERM exits (status 143) through the cleanup; on leaving, every `Child` still running
    is killed."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        yield
    finally:
        kill_children()


def wait_until(
    condition: Callable[[], object], child: Child, timeout: float, interval: float = 0.02
) -> str | None:
    """Poll `condition` until it holds; the reason it never did (the child exited, or `timeout`
    seconds passed), or None."""
    deadline = time.monotonic() + timeout
    while not condition():
        if child.process.poll() is not None:
            return f"exited with code {child.process.returncode}: {child.log_tail()}"
        if time.monotonic() >= deadline:
            return f"timed out after {timeout:g} s"
        time.sleep(interval)
    return None


class Profiler:
    """py-spy attached to a process, raw collapsed stacks at 100 Hz until stopped."""

    def __init__(self, binary: str, pid: int, path: Path) -> None:
        self.path = path
        command = [binary, "record", "--pid", str(pid), "--rate", "100", "--format", "raw"]
        self.child = Child([*command, "--output", str(path)], path.with_suffix(".log"))

    def stop(self) -> None:
        if self.child.process.poll() is None:
            self.child.process.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                self.child.process.wait(30)
            except subprocess.TimeoutExpired:
                self.child.process.kill()


# -- a stream worker's metrics ---------------------------------------------------------------

RECORDS_METRIC = "tracebus_stream_records_total"  # event records consumed (not control ones)


def stream_metrics(port: int) -> dict[str, float]:
    """A stream worker's Prometheus gauges and counters, by name (no labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = {}
    for line in text.splitlines():
        match = re.match(r"^(tracebus_stream_\w+) ([0-9.e+-]+)$", line)
        if match:
            found[match.group(1)] = float(match.group(2))
    return found


# -- /proc -----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """VmRSS of a process (or another memory field: VmHWM, its peak), from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} for pid {pid}")


# -- Kafka -----------------------------------------------------------------------------------


@contextlib.contextmanager
def embedded_broker(topics: dict[str, int], prefix: str) -> Iterator[tuple[str, Path]]:
    """An embedded broker (tansu) on a free port with `topics` (name → partitions), and a new
    temporary folder that holds its log (tansu.log): their bootstrap servers and the folder."""
    with tempfile.TemporaryDirectory(prefix=prefix) as directory:
        work = Path(directory)
        broker = EmbeddedBroker(port=free_port(), topics=topics, log_path=work / "tansu.log")
        with broker:
            yield broker.bootstrap_servers, work


def created_topics(bootstrap: str, prefix: str, partitions: int) -> KafkaSettings:
    """Settings naming the topics `<prefix>.events`, `.traces` and `.deadletter`, created before
    anyone uses them (the broker would auto-create them with its default partitions)."""
    settings = KafkaSettings(
        bootstrap_servers=bootstrap,
        events_topic=f"{prefix}.events",
        traces_topic=f"{prefix}.traces",
        dead_letter_topic=f"{prefix}.deadletter",
        partitions=partitions,
    )
    asyncio.run(create_topics(bootstrap, settings.topic_partitions()))
    return settings


Headers = list[tuple[str, bytes]]


async def produce(
    bootstrap: str,
    topic: str,
    records: list[tuple[bytes, bytes]],
    settings: dict[str, Any],
    headers: list[Headers] | None = None,
) -> float:
    """Send every (key, value) record, with the `headers` of the same index when given, with an
    AIOKafkaProducer configured by `settings`: the seconds from the first send until the broker
    acknowledged them all (the topic's metadata is loaded before)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **settings)
    await producer.start()
    try:
        await producer.partitions_for(topic)
        each = headers or [None] * len(records)
        start = time.perf_counter_ns()
        futures = [
            await producer.send(topic, value, key=key, headers=record_headers)
            for (key, value), record_headers in zip(records, each, strict=True)
        ]
        await asyncio.gather(*futures)
        return (time.perf_counter_ns() - start) / 1e9
    finally:
        await producer.stop()


@contextlib.asynccontextmanager
async def open_consumer(bootstrap: str) -> AsyncIterator[Any]:
    """A started AIOKafkaConsumer of no group (assign its partitions), stopped on leaving."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


async def topic_partitions(consumer: Any, topic: str) -> list[Any]:
    """The TopicPartitions of `topic`, none if it does not exist (metadata fetched first)."""
    from aiokafka import TopicPartition

    await consumer.topics()
    return [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]


async def read_to_end(
    consumer: Any, ends: dict[Any, int], deadline: float | None = None
) -> list[Any]:
    """The records (aiokafka ConsumerRecords) from the consumer's positions up to `ends`, the
    end offset of each partition; stops early once `deadline` (time.monotonic()) has passed."""
    records: list[Any] = []
    while any([await consumer.position(tp) < end for tp, end in ends.items()]):
        if deadline is not None and time.monotonic() >= deadline:
            break
        for batch in (await consumer.getmany(timeout_ms=500)).values():
            records.extend(batch)
    return records


# -- workload: the support chats of an online shop --------------------------------------------

QUESTIONS = [
    "Where is my order 4411? It was supposed to arrive on Monday and the tracking page is empty.",
    "Can I return a pair of shoes I bought three weeks ago if I have already worn them once?",
    "The invoice for my last purchase shows the wrong address; can you send a corrected one?",
    "Why was I charged twice for the same subscription this month, and when is it refunded?",
    "Do you ship to Norway, and how long does delivery usually take to Oslo in winter?",
]
PASSAGES = [
    "Orders leave the warehouse within 24 hours on working days; tracking updates nightly.",
    "Returns are accepted within 30 days of delivery for items in resellable condition.",
    "Invoices can be reissued with a corrected address by the support team at any time.",
    "Card pre-authorisations are released by the bank within 5 working days of the charge.",
    "International shipping covers the EU, Norway, Switzerland and the United Kingdom.",
]
TOOLS = ["lookup_order", "lookup_customer", "create_return", "send_email", "refund_status"]
CONTAINERS = frozenset({"agent", "span", "chain"})  # the kinds that take children


class PlannedNode(NamedTuple):
    """One observation of a planned trace; `parent` indexes the trace's nodes."""

    kind: str
    name: str
    parent: int | None
    start_ns: int
    end_ns: int


def hex_id(rng: Random, bits: int) -> str:
    return f"{rng.getrandbits(bits) or 1:0{bits // 4}x}"


def plan_tree(
    rng: Random, start_ns: int, sizes: tuple[int, int], kind_weights: dict[str, int]
) -> list[PlannedNode]:
    """A tree of `sizes` (low, high) observations, parents first: an agent root, nested
    containers (span, chain), leaves of work (kinds drawn by `kind_weights`); parents end after
    their children."""
    size = rng.randint(*sizes)
    kinds, weights = list(kind_weights), list(kind_weights.values())
    nodes: list[list[Any]] = [["agent", "handle-request", None, start_ns, 0]]
    containers = [0]
    for index in range(1, size):
        kind = rng.choices(kinds, weights)[0]
        name = {"tool": rng.choice(TOOLS), "retriever": "search-kb", "generation": "llm"}.get(
            kind, f"{kind}-{index}"
        )
        parent = rng.choice(containers[-3:])  # mostly recent containers: some depth
        nodes.append([kind, name, parent, start_ns + index * 15 * NS_PER_MS, 0])
        if kind in CONTAINERS:
            containers.append(index)
    durations_ms = {"generation": (300, 2500), "tool": (5, 200), "retriever": (20, 150)}
    for node in nodes:
        low, high = durations_ms.get(node[0], (1, 5))
        node[4] = node[3] + rng.randint(low, high) * NS_PER_MS
    for node in reversed(nodes):  # children come after their parents: ends bubble up
        if node[2] is not None:
            parent_node = nodes[node[2]]
            parent_node[4] = max(parent_node[4], node[4] + NS_PER_MS)
    return [PlannedNode(*node) for node in nodes]


# -- figures ---------------------------------------------------------------------------------


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    return None if numerator is None or not denominator else numerator / denominator


def fmt(value: float | None, digits: int = 0, suffix: str = "") -> str:
    return "—" if value is None else f"{value:,.{digits}f}{suffix}"


def check(value: float | None, target: float, at_most: bool = False) -> str:
    """The verdict on a target: PASS, MISS, or n/a without a figure."""
    if value is None:
        return "n/a"
    return "PASS" if (value <= target if at_most else value >= target) else "MISS"


def in_round(names: list[Any], index: int) -> list[Any]:
    """The order of round `index`: reversed every other round, so that drift hits all alike."""
    return names if index % 2 == 0 else names[::-1]


def versions(packages: Iterable[str]) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def environment(packages: Iterable[str], **extra: Any) -> dict[str, Any]:
    """Python, platform and CPUs, then `extra`, then the versions of `packages`."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        **extra,
        "packages": versions(packages),
    }


# -- py-spy profile summary ------------------------------------------------------------------

_FRAME = re.compile(r"^(?P<function>.+?) \((?P<file>[^()]+?)(?::\d+)?\)$")


def profile_summary(path: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive samples per function from py-spy's raw (collapsed) output."""
    own = Counter[str]()
    inclusive = Counter[str]()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        names = []
        for frame in stack.split(";"):
            match = _FRAME.match(frame)
            if match is None:
                names.append(frame)
                continue
            file = match.group("file")
            marker = file.rfind("tracebus/")
            where = file[marker:] if marker >= 0 else Path(file).name
            names.append(f"{match.group('function')} ({where})")
        if names:
            own[names[-1]] += count
        for name in set(names):
            inclusive[name] += count
    tracebus = [(n, c) for n, c in inclusive.most_common() if "(tracebus/" in n]
    return {"samples": total, "self": own.most_common(top), "tracebus_inclusive": tracebus[:top]}


def hottest_lines(summary: dict[str, Any], top: int) -> list[str]:
    """The `top` hottest tracebus functions (inclusive) and functions (self) of a summary."""
    total = summary["samples"] or 1
    lines = ["  hottest tracebus functions (inclusive):"]
    lines += [f"    {c / total:6.1%}  {n}" for n, c in summary["tracebus_inclusive"][:top]]
    lines.append("  hottest functions (self):")
    lines += [f"    {c / total:6.1%}  {n}" for n, c in summary["self"][:top]]
    return lines


# -- report ----------------------------------------------------------------------------------


def progress(message: str) -> None:
    print(f"  {message} …", file=sys.stderr, flush=True)


def new_table(title: str, left: Iterable[str], right: Iterable[str]) -> Any:
    """A rich table: the text columns `left`, the right-aligned figures `right`, then notes."""
    from rich import box
    from rich.table import Table

    table = Table(title=title, box=box.SIMPLE_HEAVY)
    for column in left:
        table.add_column(column)
    for column in right:
        table.add_column(column, justify="right")
    table.add_column("notes")
    return table


def print_report(tables: Iterable[Any], lines: Iterable[str], width: int) -> None:
    """The tables, then the lines as they are (no markup), at least `width` columns wide."""
    from rich.console import Console

    console = Console(width=max(Console().width, width))
    for table in tables:
        console.print(table)
    for line in lines:
        console.print(line, highlight=False, markup=False)
