"""Helpers of the CLI tests: in-process runs, `tracebus` subprocesses, polling."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from standins.langfuse import LangfuseStandIn
from typer.testing import CliRunner, Result

from tracebus.cli.main import app
from tracebus.kafka import wait_for_broker
from tracebus.ops.topic_reader import offset_bounds

T = TypeVar("T")
# Wide help output so option names and env vars are not wrapped.
WIDE = {"COLUMNS": "200"}


def run_cli(*args: str, env: dict[str, str] | None = None) -> Result:
    """Run `tracebus ARGS` in this process."""
    return CliRunner().invoke(app, list(args), env={**WIDE, **(env or {})})


@contextmanager
def cli_process(*args: str, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    """`tracebus ARGS` as a subprocess (for commands that run until a signal), with no
    TRACEBUS_* variables but those of `env`; killed at exit."""
    inherited = {**os.environ, **WIDE, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}
    env = {
        **{key: value for key, value in inherited.items() if not key.startswith("TRACEBUS_")},
        **(env or {}),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "tracebus.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            # SIGTERM first: SIGKILL would orphan the broker process the command started.
            process.terminate()
            try:
                process.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()


def stop(process: subprocess.Popen[str], timeout: float = 20.0) -> tuple[int, str, str]:
    """SIGTERM the process; returns its exit code, stdout and stderr."""
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=timeout)
    return process.returncode, stdout, stderr


def poll(
    probe: Callable[[], T | None],
    timeout: float,
    what: str,
    process: subprocess.Popen[str] | None = None,
) -> T:
    """Call `probe` until it returns something truthy; fail after `timeout` or if `process` died."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if process is not None and process.poll() is not None:
            stdout, stderr = process.communicate()
            raise AssertionError(f"exited {process.returncode} before {what}: {stdout}{stderr}")
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.05)


def broker_answers(bootstrap_servers: str, process: subprocess.Popen[str], timeout: float) -> None:
    """Wait until a Kafka broker answers at `bootstrap_servers` (started by `process`)."""

    def answers() -> bool:
        try:
            asyncio.run(wait_for_broker(bootstrap_servers, 0.2))
        except TimeoutError:
            return False
        return True

    poll(answers, timeout, f"a broker answers at {bootstrap_servers}", process)


def end_offsets(bootstrap_servers: str, topic: str) -> dict[int, int]:
    """Partition → end offset of `topic` (empty when the topic does not exist)."""

    async def fetch() -> dict[int, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers)
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                await consumer.topics()
                partitions = consumer.partitions_for_topic(topic) or set()
            # Read to the real end: tansu's reported end can stop short of its last batch.
            bounds = await offset_bounds(consumer, [TopicPartition(topic, p) for p in partitions])
            return {tp.partition: b.end for tp, b in bounds.items()}
        finally:
            await consumer.stop()

    return asyncio.run(fetch())


def table_value(output: str, label: str) -> str:
    """The value next to `label` in a two-column rich table printed in `output`."""
    for line in output.splitlines():
        cells = [cell.strip() for cell in re.split(r"[│┃|]", line) if cell.strip()]
        if len(cells) == 2 and cells[0] == label:
            return cells[1]
    raise AssertionError(f"no {label!r} row in:\n{output}")


def table_int(output: str, label: str) -> int:
    return int(table_value(output, label).replace(",", ""))


def port_accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def kafka_options(settings: Any) -> list[str]:
    """CLI options naming the topics of a `KafkaSettings` (the `kafka` fixture's)."""
    return [
        "--bootstrap-servers",
        settings.bootstrap_servers,
        "--events-topic",
        settings.events_topic,
        "--traces-topic",
        settings.traces_topic,
        "--dead-letter-topic",
        settings.dead_letter_topic,
        "--partitions",
        str(settings.partitions),
    ]


# One trace per request, one request at a time, and a short drain: an interrupt
# then lands between deliveries that are easy to count.
ONE_DELIVERY_AT_A_TIME = {
    "TRACEBUS_BATCH_MAX_TRACES": "1",
    "TRACEBUS_MAX_IN_FLIGHT": "1",
    "TRACEBUS_DRAIN_TIMEOUT_S": "1",
}


def interrupted_mid_delivery(
    standin: LangfuseStandIn, delivered: int, *args: str, env: dict[str, str]
) -> tuple[int, str]:
    """`tracebus ARGS` (with `env` and ONE_DELIVERY_AT_A_TIME) delivering to `standin`, sent
    SIGTERM once `delivered` spans arrived and the next delivery hangs; its exit code and
    stderr."""
    with cli_process(*args, env={**env, **ONE_DELIVERY_AT_A_TIME}) as run:
        poll(lambda: len(standin.spans) >= delivered, 60, "deliveries", run)
        standin.hang_next()
        poll(lambda: standin.held == 1, 30, "a delivery in flight", run)
        code, _, stderr = stop(run)
    return code, stderr
