"""What the commands share: exit codes, options bound to `TRACEBUS_*`, output, signals, logging."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from enum import IntEnum, StrEnum
from types import FrameType, TracebackType
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from aiokafka.errors import KafkaError
from pydantic import ValidationError
from pydantic_settings import BaseSettings
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from tracebus.config import KafkaSettings
from tracebus.kafka import KafkaAuthenticationError, wait_for_broker
from tracebus.kafka.connection import KafkaSecurity

SettingsT = TypeVar("SettingsT", bound=BaseSettings)


class ExitCode(IntEnum):
    OK = 0
    CHECK_FAILED = 1
    USAGE = 2
    UNREACHABLE = 3
    WORKER_FAILED = 4
    STOP_TIMED_OUT = 5
    INTERRUPTED = 130


EXIT_CODES_HELP = (
    "[b]Exit codes:[/b] 0 ok · 1 check failed (stale schemas, missing topics) · "
    "2 usage, configuration or broker start-up error · 3 Kafka broker unreachable · "
    "4 a worker stopped on an error it must not go past (its log says which) · "
    "5 a worker's stop outlasted TRACEBUS_STOP_TIMEOUT_S (it exited as if killed)."
    "\n\nEvery option marked \\[env var: …] can also be set in that environment variable. "
    "Kafka with TLS or SASL: TRACEBUS_KAFKA_SECURITY_PROTOCOL (SSL, SASL_SSL, …), "
    "TRACEBUS_KAFKA_SASL_MECHANISM, _SASL_USERNAME, _SASL_PASSWORD, TRACEBUS_KAFKA_SSL_CAFILE, "
    "_SSL_CERTFILE, _SSL_KEYFILE."
)

# soft_wrap: messages stay on one line in logs and pipes; tables still fit the width.
console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str, code: ExitCode) -> NoReturn:
    """Print `message` on stderr (no traceback) and exit with `code`."""
    err_console.print(f"[bold red]error:[/bold red] {escape(message)}")
    raise typer.Exit(int(code))


_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


def safe_servers(servers: str) -> str:
    """Bootstrap servers for display: any `user:password@` part is hidden."""
    return _USERINFO.sub("***@", servers)


# -- options ------------------------------------------------------------------------------------

_defaults = KafkaSettings.model_fields
KAFKA_PANEL = "Kafka"
BROKER_PANEL = "Embedded broker"

BootstrapServers = Annotated[
    str,
    typer.Option(
        "--bootstrap-servers",
        "-b",
        envvar="TRACEBUS_BOOTSTRAP_SERVERS",
        help="Kafka bootstrap servers, comma separated.",
        rich_help_panel=KAFKA_PANEL,
    ),
]
EventsTopic = Annotated[
    str,
    typer.Option(
        envvar="TRACEBUS_EVENTS_TOPIC",
        help="Topic apps send events to.",
        rich_help_panel=KAFKA_PANEL,
    ),
]
TracesTopic = Annotated[
    str,
    typer.Option(
        envvar="TRACEBUS_TRACES_TOPIC",
        help="Topic of complete traces.",
        rich_help_panel=KAFKA_PANEL,
    ),
]
DeadLetterTopic = Annotated[
    str,
    typer.Option(
        envvar="TRACEBUS_DEAD_LETTER_TOPIC",
        help="Topic of records that could not be processed.",
        rich_help_panel=KAFKA_PANEL,
    ),
]
Partitions = Annotated[
    int,
    typer.Option(
        envvar="TRACEBUS_PARTITIONS",
        min=1,
        help="Partitions of the events and traces topics (the dead-letter topic has 1).",
        rich_help_panel=KAFKA_PANEL,
    ),
]
Timeout = Annotated[
    float,
    typer.Option(
        "--timeout",
        min=0.0,
        help="Seconds to wait for the broker to answer before giving up (exit code 3).",
        rich_help_panel=KAFKA_PANEL,
    ),
]
BrokerPort = Annotated[
    int,
    typer.Option(
        "--port",
        "-p",
        envvar="TRACEBUS_BROKER_PORT",
        min=1,
        max=65535,
        help="Port the embedded broker listens on.",
        rich_help_panel=BROKER_PANEL,
    ),
]
BrokerHost = Annotated[
    str,
    typer.Option(
        "--host",
        envvar="TRACEBUS_BROKER_HOST",
        help="Address the embedded broker listens on (and advertises).",
        rich_help_panel=BROKER_PANEL,
    ),
]

DEFAULT_BOOTSTRAP_SERVERS: str = _defaults["bootstrap_servers"].default
DEFAULT_EVENTS_TOPIC: str = _defaults["events_topic"].default
DEFAULT_TRACES_TOPIC: str = _defaults["traces_topic"].default
DEFAULT_DEAD_LETTER_TOPIC: str = _defaults["dead_letter_topic"].default
DEFAULT_PARTITIONS: int = _defaults["partitions"].default
DEFAULT_TIMEOUT = 5.0
DEFAULT_BROKER_PORT = 9092
DEFAULT_BROKER_HOST = "127.0.0.1"


def build_settings(cls: type[SettingsT], **values: Any) -> SettingsT:
    """Settings from the options (which already include `TRACEBUS_*`); exit 2 when invalid."""
    try:
        return cls(**values)
    except ValidationError as error:
        # Only field names and reasons: values could be secrets.
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc']) or 'settings'}: {problem['msg']}"
            for problem in error.errors(include_url=False, include_input=False)
        )
        fail(f"invalid configuration: {problems}", ExitCode.USAGE)


def require_broker(bootstrap_servers: str, timeout: float) -> None:
    """Return once Kafka answers at `bootstrap_servers`; else exit 3 with a clear message
    (exit 2 when the TRACEBUS_KAFKA_* security settings are invalid)."""
    build_settings(KafkaSecurity)

    async def wait() -> None:
        # wait_for_broker checks its deadline between attempts; bound a hanging connect too.
        await asyncio.wait_for(wait_for_broker(bootstrap_servers, timeout), timeout + 3.0)

    try:
        asyncio.run(wait())
    except KafkaAuthenticationError as error:
        fail(f"{error} (TRACEBUS_KAFKA_SASL_* settings)", ExitCode.USAGE)
    except (TimeoutError, KafkaError, OSError):
        fail(
            f"no Kafka broker answers at {safe_servers(bootstrap_servers)} "
            f"(waited {timeout:g}s): start one with `tracebus up` or `tracebus broker`, "
            "or point --bootstrap-servers / TRACEBUS_BOOTSTRAP_SERVERS at yours",
            ExitCode.UNREACHABLE,
        )


def progress_bar(amount: ProgressColumn | None = None, stream: Console = console) -> Progress:
    """The bar of long work: what it is (the task's description), how much of it is done (a
    count of the total unless `amount` shows it otherwise, as bytes), how long it has taken."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        amount or MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stream,
    )


# -- signals ------------------------------------------------------------------------------------


class StopSignals:
    """While active, Ctrl-C and SIGTERM set `event` instead of killing the process.

    Long-running commands poll `event` and shut down cleanly. A second signal raises
    KeyboardInterrupt, for when a clean shutdown takes too long."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.event.is_set():
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name
        self.event.set()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


# -- logging ------------------------------------------------------------------------------------


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class _SingleLineFormatter(logging.Formatter):
    """`time level=… logger=… message`, with newlines (tracebacks too) escaped onto one line."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", "\\n")


class RepeatedRecords(logging.Filter):
    """Lets each kind of record from the client libraries (aiokafka, Faust) pass once per
    `window` seconds; the next one to pass says how many were held back meanwhile.

    They log every attempt of their retry loops: a worker cut off from its broker wrote about
    40 lines a second, burying whatever else its log said. tracebus's own records pass as they
    come: each is written to be read."""

    _MAX_KINDS = 1_000  # messages formatted before logging make a kind each: bound them

    def __init__(self, window: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window = window
        self.clock = clock
        # (logger, level, message template) → when one last passed, how many held back since
        self._kinds: dict[tuple[str, int, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "tracebus" or record.name.startswith("tracebus."):
            return True
        kind = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        with self._lock:
            last = self._kinds.get(kind)
            if last is not None and now - last[0] < self.window:
                self._kinds[kind] = (last[0], last[1] + 1)
                return False
            if len(self._kinds) >= self._MAX_KINDS:
                self._kinds.clear()
            self._kinds[kind] = (now, 0)
        if last is not None and last[1]:
            # No `%` added: the message may be a template its arguments are formatted into.
            record.msg = f"{kind[2]} ({last[1]} more like it in the {now - last[0]:.0f} s before)"
        return True


_HANDLER_NAME = "tracebus-cli"


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is now (it may be swapped, e.g. by test runners)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_logging(level: LogLevel) -> None:
    """Log to stderr at `level`; calling again replaces the CLI's handler, not others'."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    handler = _StderrHandler()
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(RepeatedRecords())
    handler.setFormatter(
        _SingleLineFormatter(
            "%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
            datefmt="%Y-%m-%dT%H:%M:%S%z",
        )
    )
    root.addHandler(handler)
    root.setLevel(level.value.upper())
    # aiokafka logs every refused connection at ERROR, which the commands already report
    # once, clearly: its records show only when asked for detail.
    verbose = level in (LogLevel.DEBUG, LogLevel.INFO)
    logging.getLogger("aiokafka").setLevel(level.value.upper() if verbose else logging.CRITICAL)


def tune_garbage_collector() -> None:
    """For worker processes: they allocate many short-lived objects per record (pydantic
    models, protobuf messages), and a larger first-generation threshold cut the sink's CPU per
    trace by about a fifth (benchmarks/sink_throughput.py)."""
    gc.set_threshold(50_000, 20, 100)
