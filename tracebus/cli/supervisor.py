"""Child processes of `tracebus up`: started, restarted with back-off on a crash, stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from rich.markup import escape

from tracebus.cli.common import console

_FIRST_BACKOFF_S = 1.0
_MAX_BACKOFF_S = 30.0


@dataclass
class Child:
    """One supervised `tracebus` command; its output is shown prefixed by its name.

    `env` is added to the supervisor's environment for this child only; `metrics_port` is where
    it serves /metrics and /healthz, if anywhere."""

    name: str
    arguments: list[str]
    env: dict[str, str] = field(default_factory=dict)
    metrics_port: int | None = None
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    backoff: float = _FIRST_BACKOFF_S
    restart_at: float | None = None
    last_exit: int | None = None
    _reader: threading.Thread | None = field(default=None, repr=False)

    @property
    def state(self) -> str:
        if self.process is not None and self.process.poll() is None:
            return "running"
        return "restarting" if self.restart_at is not None else "stopped"


class Supervisor:
    def __init__(self, children: list[Child], env: dict[str, str]) -> None:
        self.children = children
        self._env = {**os.environ, **env}
        self._stopping = False

    def start(self) -> None:
        for child in self.children:
            self._spawn(child)

    def _spawn(self, child: Child) -> None:
        child.process = subprocess.Popen(
            [sys.executable, "-m", "tracebus.cli", "--log-level", "warning", *child.arguments],
            env={**self._env, **child.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        child.restart_at = None
        child._reader = threading.Thread(
            target=self._relay, args=(child, child.process), daemon=True, name=f"log-{child.name}"
        )
        child._reader.start()

    def _relay(self, child: Child, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip()
            if line:
                console.print(f"[dim]\\[{child.name}][/dim] {escape(line)}", highlight=False)

    def poll(self) -> None:
        """Restart children that exited, after a back-off that doubles per crash."""
        if self._stopping:
            return
        now = time.monotonic()
        for child in self.children:
            process = child.process
            if child.restart_at is None and process is not None and process.poll() is not None:
                child.last_exit = process.returncode
                child.restart_at = now + child.backoff
                console.print(
                    f"[yellow]{child.name} exited with {process.returncode}; restarting in "
                    f"{child.backoff:.0f}s[/yellow]"
                )
                child.backoff = min(child.backoff * 2, _MAX_BACKOFF_S)
            elif child.restart_at is not None and now >= child.restart_at:
                child.restarts += 1
                self._spawn(child)

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping = True
        running = [c.process for c in self.children if c.process and c.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in running:
            try:
                process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
