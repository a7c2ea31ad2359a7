"""A `tracebus` CLI command run as a real worker process for the tests, with its log kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

# The embedded broker answers a group join after half the session timeout (5 s at the workers'
# default of 10 s), and hands a killed worker's partitions on after all of it.
GROUP_ENV = {"TRACEBUS_SESSION_TIMEOUT_S": "4"}


class CliWorker:
    """`python -m tracebus.cli --log-level LEVEL ARGS` in a subprocess, its output in a log file,
    with `environment` over this process's own."""

    stop_timeout: float = 30.0  # seconds `stop` waits after SIGTERM before it kills
    started: ClassVar[list[CliWorker]] = []  # this test's; a failed test's report shows their logs

    def __init__(
        self,
        args: list[str],
        environment: dict[str, str],
        log_path: Path,
        log_level: str = "info",
    ) -> None:
        self.log_path = log_path
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tracebus.cli", "--log-level", log_level, *args],
                env={**os.environ, **GROUP_ENV, **environment},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        CliWorker.started.append(self)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode
