"""What the strict HTTP stand-ins share: a real local HTTP server run in its own threads, a queue
of injected faults, and a log of the requests received (credentials removed).

A stand-in extends `StandInServer`, says how its errors look and which header holds the
credentials, and answers each request in `_answer`:

    with SomeStandIn() as standin:
        standin.fail_next(503)     # the next request answers 503
        standin.hang_next()        # the next request never gets an answer
        with standin.down(): ...   # connections refused until the block ends
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self
from urllib.parse import urlsplit


@dataclass(frozen=True)
class ReceivedRequest:
    """A request as it arrived (credentials removed) and the status it got (None: no answer)."""

    method: str
    path: str
    headers: dict[str, str]
    status: int | None


@dataclass(frozen=True)
class Fault:
    endpoint: str | None = None  # where it applies (a stand-in's own names), None for anywhere
    status: int | None = None  # answer with this status …
    retry_after: str | None = None
    hang: bool = False  # … or never answer
    hang_after_recording: bool = False  # store the request first, then never answer

    @classmethod
    def failure(
        cls, status: int, retry_after: int | str | None, endpoint: str | None = None
    ) -> Fault:
        after = None if retry_after is None else str(retry_after)
        return cls(endpoint, status=status, retry_after=after)


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    headers: tuple[tuple[str, str], ...] = ()


class StandInServer:
    """Lifecycle, faults and request log of a stand-in; subclasses answer in `_answer`."""

    thread_name: ClassVar[str]  # its serving thread is named f"{thread_name}-{port}"
    secret_header: ClassVar[str]  # left out of the request log (lower case)
    error_key: ClassVar[str]  # error bodies are {error_key: message}
    too_large_message: ClassVar[str]  # the message of a 413 for a body over max_body_bytes
    methods: ClassVar[tuple[str, ...]] = ("POST", "GET")  # others answer 501
    # Methods whose Content-Length must be a number; a POST must send one, others default to 0.
    length_checked: ClassVar[frozenset[str]] = frozenset({"POST", "GET"})
    server_class: ClassVar[type[ThreadingHTTPServer]] = ThreadingHTTPServer
    request_class: ClassVar[type[ReceivedRequest]] = ReceivedRequest

    def __init__(self, *, max_body_bytes: int, hang_limit_seconds: float) -> None:
        self.max_body_bytes = max_body_bytes
        self._hang_limit = hang_limit_seconds
        self._lock = threading.Lock()
        self._faults: deque[Fault] = deque()
        self._release_hung = threading.Event()
        self._held = 0
        self._requests: list[ReceivedRequest] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port = 0

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, like the real service's: the API paths go after it."""
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> None:
        """Listen on a free port of 127.0.0.1, or on the previous port after `go_down`."""
        handler = type("Handler", (_Handler,), {"standin": self, **_dispatch(self.methods)})
        self._server = self.server_class(("127.0.0.1", self._port), handler)
        self._port = self._server.server_address[1]
        self._release_hung.clear()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.01},  # shutdown() waits for one poll
            name=f"{self.thread_name}-{self._port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop listening; requests left hanging end without an answer."""
        self._release_hung.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None

    # -- faults -----------------------------------------------------------------------------

    def fail_next(
        self, status: int, *, count: int = 1, retry_after: int | str | None = None
    ) -> None:
        """The next `count` ingest requests answer `status` without being stored, with a
        Retry-After header when given (e.g. 429, 500, 503, 413, 422)."""
        self._add_faults(Fault.failure(status, retry_after), count)

    def hang_next(self, *, count: int = 1) -> None:
        """The next `count` ingest requests never get an answer (until `stop`)."""
        self._add_faults(Fault(hang=True), count)

    def go_down(self) -> None:
        """Stop listening: connections are refused until `come_back`."""
        self.stop()

    def come_back(self) -> None:
        """Listen again, on the same port."""
        self.start()

    @contextmanager
    def down(self) -> Iterator[None]:
        """Connections are refused inside the block."""
        self.go_down()
        try:
            yield
        finally:
            self.come_back()

    # -- what was received ------------------------------------------------------------------

    @property
    def held(self) -> int:
        """Requests being held unanswered now (a hang fault); they are in `requests` only once
        the hang ends."""
        with self._lock:
            return self._held

    @property
    def requests(self) -> list[ReceivedRequest]:
        """The requests received to logged paths, in arrival order, credentials removed."""
        with self._lock:
            return list(self._requests)

    # -- request handling (called from server threads) --------------------------------------

    def _answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply | None:
        """The reply to a request with a readable body, None to leave it unanswered; logs it."""
        raise NotImplementedError

    def _logged(self, path: str) -> bool:
        """Whether requests to `path` go into the request log."""
        return True

    def _log(
        self, method: str, path: str, headers: dict[str, str], status: int | None, **details: Any
    ) -> None:
        if not self._logged(path):
            return
        safe = {name: value for name, value in headers.items() if name != self.secret_header}
        with self._lock:
            self._requests.append(self.request_class(method, path, safe, status, **details))

    def _refuse(
        self, method: str, path: str, headers: dict[str, str], status: int, message: str
    ) -> Reply:
        """An error answered before the body is read, logged."""
        reply = self._error(status, message)
        self._log(method, path, headers, reply.status)
        return reply

    def _error(self, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
        return Reply(status, {self.error_key: message}, headers)

    def _add_faults(self, fault: Fault, count: int) -> None:
        with self._lock:
            self._faults.extend([fault] * count)

    def _take_fault(self, endpoint: str | None = None) -> Fault | None:
        """The first queued fault for `endpoint` (or for anywhere), taken off the queue."""
        with self._lock:
            for fault in self._faults:
                if fault.endpoint in (None, endpoint):
                    self._faults.remove(fault)
                    return fault
        return None

    def _fault_reply(self, fault: Fault) -> Reply:
        assert fault.status is not None
        retry = (("Retry-After", fault.retry_after),) if fault.retry_after else ()
        return self._error(fault.status, "injected fault", retry)

    def _hang(self) -> None:
        with self._lock:
            self._held += 1
        try:
            self._release_hung.wait(self._hang_limit)
        finally:
            with self._lock:
                self._held -= 1


def _dispatch(methods: tuple[str, ...]) -> dict[str, Any]:
    """`do_<METHOD>` handler methods for `methods`."""

    def responder(method: str) -> Any:
        return lambda handler: handler._respond(method)

    return {f"do_{method}": responder(method) for method in methods}


class _Handler(BaseHTTPRequestHandler):
    standin: StandInServer  # set on the subclass made per stand-in

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def _respond(self, method: str) -> None:
        standin = self.standin
        headers = {name.lower(): value for name, value in self.headers.items()}
        path = urlsplit(self.path).path
        length = headers.get("content-length", None if method == "POST" else "0")
        reply: Reply | None
        if method in standin.length_checked and (length is None or not length.isdigit()):
            reply = standin._refuse(method, path, headers, 411, "Content-Length required")
        elif int(length or 0) > standin.max_body_bytes:
            self._discard(int(length or 0))  # read it all, so the client gets to see the 413
            reply = standin._refuse(method, path, headers, 413, standin.too_large_message)
        else:
            body = self.rfile.read(int(length or 0))
            reply = standin._answer(method, path, headers, body)
        if reply is None:
            self.close_connection = True
            return
        payload = json.dumps(reply.body).encode()
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in reply.headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout): nothing to tell it

    def _discard(self, length: int) -> None:
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 16))
            if not chunk:
                return
            length -= len(chunk)
