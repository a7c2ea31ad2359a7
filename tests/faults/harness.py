"""The fault suite's pipeline: real stream and sink worker processes between a broker and the
strict Langfuse and LangSmith stand-ins, a steady load from the producer SDK, and the checks made
after each scenario, by id, at the stand-ins and on the dead-letter topic.

`TRACEBUS_FAULT_ITERATIONS` (default 1, the short form run in CI) repeats each fault that many
times; the long form (`make report`) sets more.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from conftest import eventually
from sink_helpers import SinkProcess, sink_group
from standins.langfuse import LangfuseStandIn
from standins.langsmith import LangSmithStandIn
from streams.stream_helpers import WorkerProcess
from whereabouts import stream_app_id, whereabouts
from workers import CliWorker

import tracebus
from tracebus.config import KafkaSettings
from tracebus.ops.deadletters import DeadLetter, list_dead_letters

ITERATIONS = max(1, int(os.environ.get("TRACEBUS_FAULT_ITERATIONS", "1")))
# Fault moments and victims are drawn from this seed; a failing run prints it to re-run.
SEED = int(os.environ.get("TRACEBUS_FAULT_SEED", str(random.SystemRandom().randrange(10**6))))
# Resident memory a worker may reach under these loads: several times what they use (about
# 100-150 MiB), far below what a leak of the traffic (or of retried batches) would take.
RSS_BOUND_BYTES = 600 * 1024 * 1024
# The long form's report runner reads what each scenario saw from here (JSON lines).
REPORT_PATH = os.environ.get("TRACEBUS_FAULT_REPORT")
DELIVERY_TIMEOUT_S = 180.0  # a loaded 2-core CI machine, after faults that cost their own time
# What differs between alike dead-letter reasons: ids, sizes, versions, event indexes.
_ALIKE = re.compile(r"\b[0-9a-f]{32}\b|\b[0-9a-f]{16}\b|-?\d{3,}|'[^']*'|(?<=\[)\d+(?=\])")

# Never give up on a batch (a scenario's faults must be outlived, not dead-lettered), and small
# batches, so that a fault hits some requests of a scenario rather than all of its traffic.
SINK_ENV = {"TRACEBUS_RETRY_MAX_ELAPSED_S": "0", "TRACEBUS_BATCH_MAX_TRACES": "20"}


def rss_bytes(pid: int) -> int:
    """VmRSS of a running process (0 once it has exited)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


# -- load ------------------------------------------------------------------------------------


class SteadyLoad:
    """An app sending `rate` traces per second through the SDK from a thread of the test, each
    a root span with a retriever and a generation; every id it emitted is kept for the checks."""

    def __init__(self, settings: KafkaSettings, rate: float) -> None:
        self.client = tracebus.Client(**settings.model_dump(), linger_ms=5)
        self.traces: dict[str, list[str]] = {}  # trace id → its observation ids
        self._interval = 1.0 / rate
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="steady-load", daemon=True)

    def __enter__(self) -> SteadyLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop emitting and wait until the broker has everything (after any network cut)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        flushed = self.client.flush(90)
        self.client.close()
        assert flushed, f"the SDK could not deliver its buffer: {self.client.counters}"
        assert self.client.counters.dropped == 0, self.client.counters

    def wait_for(self, count: int) -> None:
        """Until `count` more traces have been emitted than now (a moment within the load)."""
        target = len(self.traces) + count
        eventually(lambda: len(self.traces) >= target, 60, f"{count} more traces emitted")

    def _run(self) -> None:
        due = time.monotonic()
        number = 0
        while not self._stop.is_set():
            number += 1
            with self.client.trace(f"chat-{number}", user_id="u-1", session_id="s-1") as root:
                with self.client.retriever("search", input={"q": "where"}) as search:
                    search.update(output=["a", "b"])
                with self.client.generation("answer", model="gpt-4o", provider="openai") as llm:
                    llm.update(output="hi", usage={"input_tokens": 100, "output_tokens": 10})
            self.traces[root.trace_id] = [root.id, search.id, llm.id]
            due += self._interval
            self._stop.wait(max(0.0, due - time.monotonic()))


# -- the pipeline ----------------------------------------------------------------------------


@dataclass
class Worker:
    """A worker process and how to start it again, as a supervisor (compose, Kubernetes) would."""

    name: str
    start: Callable[[], CliWorker]
    process: CliWorker = field(init=False)
    restarts: int = 0

    def __post_init__(self) -> None:
        self.process = self.start()

    @property
    def alive(self) -> bool:
        return self.process.process.poll() is None


class Pipeline:
    """Stream workers, Langfuse and LangSmith sink workers of one set of topics, delivering to
    the stand-ins; worker crashes other than the ones a test causes are counted and restarted."""

    def __init__(
        self,
        settings: KafkaSettings,
        log_dir: Path,
        langfuse: LangfuseStandIn,
        langsmith: LangSmithStandIn,
        *,
        streams: int = 1,
        langfuse_sinks: int = 1,
        stream_env: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.langfuse = langfuse
        self.langsmith = langsmith
        langfuse_env = {
            **SINK_ENV,
            "TRACEBUS_LANGFUSE_HOST": langfuse.url,
            "TRACEBUS_LANGFUSE_PUBLIC_KEY": langfuse.public_key,
            "TRACEBUS_LANGFUSE_SECRET_KEY": langfuse.secret_key,
        }
        langsmith_env = {
            **SINK_ENV,
            "TRACEBUS_GROUP_ID": f"langsmith-{settings.traces_topic}",
            "TRACEBUS_LANGSMITH_ENDPOINT": langsmith.url,
            "TRACEBUS_LANGSMITH_API_KEY": langsmith.api_key,
        }
        self.workers = [
            *(
                Worker(
                    f"stream-{n}", lambda: WorkerProcess(settings, log_dir, **(stream_env or {}))
                )
                for n in range(streams)
            ),
            *(
                Worker(
                    f"sink-langfuse-{n}",
                    lambda: SinkProcess("langfuse", settings, log_dir, **langfuse_env),
                )
                for n in range(langfuse_sinks)
            ),
            Worker(
                "sink-langsmith-0",
                lambda: SinkProcess("langsmith", settings, log_dir, **langsmith_env),
            ),
        ]
        self.peak_rss: Counter[str] = Counter()
        self._restarting = threading.Lock()  # the supervisor must not restart a killed worker too
        self.crashes: list[str] = []  # workers found dead that no test killed, with their logs
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._watcher.start()

    def of_kind(self, prefix: str) -> list[Worker]:
        return [w for w in self.workers if w.name.startswith(prefix)]

    def kill(self, worker: Worker) -> None:
        """SIGKILL `worker` and start it again at once (a supervisor's restart)."""
        with self._restarting:
            worker.process.kill()
            worker.process = worker.start()
            worker.restarts += 1

    def stop(self, check: bool = True) -> None:
        """Stop every worker (SIGTERM: they drain and commit); with `check`, fail if one did not
        exit 0 or one had crashed before."""
        self._stop.set()
        self._watcher.join()
        codes = {w.name: w.process.stop() for w in self.workers}
        if not check:
            return
        failed = {name: code for name, code in codes.items() if code != 0}
        tails = [w.process.log_tail() for w in self.workers if w.name in failed]
        assert not failed, f"workers exited with {failed}: {tails}"
        assert not self.crashes, f"workers crashed on their own: {self.crashes}"

    def _watch(self) -> None:
        while not self._stop.wait(0.25):
            with self._restarting:
                for worker in self.workers:
                    pid = worker.process.process.pid
                    self.peak_rss[worker.name] = max(self.peak_rss[worker.name], rss_bytes(pid))
                    if not worker.alive and not self._stop.is_set():
                        self.crashes.append(f"{worker.name}: {worker.process.log_tail(15)}")
                        worker.process = worker.start()
                        worker.restarts += 1


@contextmanager
def pipeline(
    settings: KafkaSettings,
    log_dir: Path,
    *,
    streams: int = 1,
    langfuse_sinks: int = 1,
    stream_env: dict[str, str] | None = None,
) -> Iterator[Pipeline]:
    """A running pipeline with fresh stand-ins; stopped (and checked for clean exits) after."""
    with LangfuseStandIn() as langfuse, LangSmithStandIn() as langsmith:
        running = Pipeline(
            settings,
            log_dir,
            langfuse,
            langsmith,
            streams=streams,
            langfuse_sinks=langfuse_sinks,
            stream_env=stream_env,
        )
        try:
            yield running
        except BaseException:
            running.stop(check=False)  # the failure that got here is the one to report
            raise
        running.stop()


# -- checks ----------------------------------------------------------------------------------


def run_ids(langsmith: LangSmithStandIn) -> Counter[str]:
    """Stored LangSmith runs per trace (trace ids as W3C hex)."""
    return Counter(uuid.UUID(run["trace_id"]).hex for run in langsmith.runs.values())


def wait_for_delivery(
    running: Pipeline,
    traces: dict[str, list[str]],
    langsmith_traces: dict[str, list[str]] | None = None,
) -> None:
    """Until the Langfuse stand-in holds every observation of `traces`, and the LangSmith one
    every observation of `langsmith_traces` (default: the same)."""
    wanted = {o for observations in traces.values() for o in observations}
    runs_wanted = {
        t: len(o) for t, o in (traces if langsmith_traces is None else langsmith_traces).items()
    }

    def langfuse_done() -> bool:
        return wanted <= {key.span_id for key in running.langfuse.receipts}

    def langsmith_done() -> bool:
        runs = run_ids(running.langsmith)
        return all(runs[t] >= n for t, n in runs_wanted.items())

    try:
        eventually(langfuse_done, DELIVERY_TIMEOUT_S, f"Langfuse to hold {len(wanted)} spans")
    except AssertionError:
        missing = wanted - {key.span_id for key in running.langfuse.receipts}
        lacking = sorted(t for t, observations in traces.items() if missing & set(observations))
        groups = [stream_app_id(running.settings), sink_group(running.settings)]
        raise AssertionError(
            f"Langfuse lacks {len(missing)} of {len(wanted)} spans, of {len(lacking)} traces\n"
            + asyncio.run(whereabouts(running.settings, set(lacking), groups))
        ) from None
    eventually(langsmith_done, DELIVERY_TIMEOUT_S, f"LangSmith to hold {len(runs_wanted)} traces")


@dataclass
class Outcome:
    """What a scenario left at the stand-ins, for the checks and the long report."""

    traces: int
    spans: int
    redelivered_spans: int  # spans the Langfuse stand-in received more than once (replaced)
    langsmith_conflicts: int  # LangSmith requests answered 409 (already received)
    dead_letters: list[DeadLetter]
    peak_rss: dict[str, int]
    restarts: dict[str, int]

    def figures(self) -> dict[str, object]:
        """What the long report shows of it."""
        return {
            "traces": self.traces,
            "spans": self.spans,
            "redelivered_spans": self.redelivered_spans,
            "langsmith_conflicts": self.langsmith_conflicts,
            "dead_letters": letter_counts(self.dead_letters),
            "peak_rss_mib": {name: round(rss / 2**20) for name, rss in self.peak_rss.items()},
            "restarts": self.restarts,
        }


def check_outcome(
    running: Pipeline,
    traces: dict[str, list[str]],
    *,
    redelivery_allowed: bool,
) -> Outcome:
    """Every emitted trace delivered once at each stand-in and nothing else, worker memory
    within bounds. Re-sent spans (the same row replaced) are allowed only where a worker could
    not know that a request had succeeded (a SIGKILL, a cut connection)."""
    rows = Counter(key.span_id for key in running.langfuse.receipts)
    emitted = Counter(o for observations in traces.values() for o in observations)
    stored_traces = {key.trace_id for key in running.langfuse.receipts}
    assert stored_traces == set(traces), "Langfuse holds other traces than emitted"
    for span_id, count in emitted.items():
        assert rows[span_id] == count, f"span {span_id}: {rows[span_id]} rows, not {count}"
    receipts = running.langfuse.receipts
    redelivered = sum(1 for count in receipts.values() if count > 1)
    if not redelivery_allowed:
        assert redelivered == 0, f"{redelivered} spans were sent to Langfuse more than once"
    runs = run_ids(running.langsmith)
    for trace_id, observations in traces.items():
        assert runs[trace_id] == len(observations), f"LangSmith runs of {trace_id}: {runs}"
    assert set(runs) == set(traces), "LangSmith holds other traces than emitted"
    conflicts = sum(1 for r in running.langsmith.requests if r.status == 409)
    check_memory(running)
    return Outcome(
        traces=len(traces),
        spans=sum(emitted.values()),
        redelivered_spans=redelivered,
        langsmith_conflicts=conflicts,
        dead_letters=dead_letters(running.settings),
        peak_rss=dict(running.peak_rss),
        restarts={w.name: w.restarts for w in running.workers},
    )


def check_memory(running: Pipeline) -> None:
    for name, peak in running.peak_rss.items():
        assert peak < RSS_BOUND_BYTES, f"{name} reached {peak / 2**20:.0f} MiB"


def dead_letters(settings: KafkaSettings) -> list[DeadLetter]:
    page = asyncio.run(
        list_dead_letters(
            settings.bootstrap_servers,
            settings.dead_letter_topic,
            limit=100_000,
            newest_first=False,
            idle_timeout=5,
        )
    )
    assert page.complete
    return page.letters


def letter_counts(letters: list[DeadLetter]) -> dict[str, int]:
    """Dead letters by stage and reason, trace ids and sizes left out so that alike ones count
    together."""
    return dict(
        Counter(f"{letter.stage}: {_ALIKE.sub('…', letter.reason)[:70]}" for letter in letters)
    )


def record(scenario: str, started: float, **figures: object) -> None:
    """One line of the long report (when `TRACEBUS_FAULT_REPORT` names a file)."""
    if REPORT_PATH is None:
        return
    line = {
        "scenario": scenario,
        "iterations": ITERATIONS,
        "seed": SEED,
        "seconds": round(time.monotonic() - started, 1),
        **figures,
    }
    with open(REPORT_PATH, "a") as report:
        report.write(json.dumps(line) + "\n")
