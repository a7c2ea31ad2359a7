"""A loopback TCP forwarder in front of a Kafka broker that the tests can cut and restore.

Kafka clients connect to the address the broker advertises, whatever they bootstrapped with,
so the broker behind this proxy must advertise the proxy's address (`EmbeddedBroker(advertised=
proxy.address)`). Every client then talks through here, and the proxy tells them apart by the
`client_id` in the header of their first request (tracebus sets its own for the producer SDK
and the sinks; Faust's is `faust-<version>`):

    with KafkaProxy(upstream) as proxy:
        with proxy.cut(producer_clients): ...   # their connections closed, new ones closed at once
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar

from tracebus.kafka.broker import free_port

Clients = Callable[[str], bool]  # which connections a cut applies to, by Kafka client id
T = TypeVar("T")

# A request starts with its size (int32), api key and version (int16 each), correlation id
# (int32), then the client id as a nullable string (int16 length, -1 for null): 14 bytes.
_HEADER = struct.Struct(">ihhih")


def producer_clients(client_id: str) -> bool:
    """The SDK's sender in apps."""
    return client_id.startswith("tracebus-producer")


def worker_clients(client_id: str) -> bool:
    """Stream workers (Faust's consumer, producer and table changelog) and sink workers."""
    return client_id.startswith(("faust", "tracebus-sink"))


@dataclass(eq=False)
class _Link:
    client_id: str
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    def close(self) -> None:
        for writer in self.writers:
            writer.close()


class KafkaProxy:
    """Forwards 127.0.0.1:`port` to `upstream` (host:port) on an event loop of its own thread."""

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.rpartition(":")
        self._upstream = (host, int(port))
        self.port = free_port()  # known before start: the broker has to advertise it
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._cut: list[Clients] = []  # touched only on the loop's thread
        self.refused = 0  # connections closed on arrival because their client was cut off

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        self._thread.start()
        self._call(self._start())
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    @contextlib.contextmanager
    def cut(self, clients: Clients) -> Iterator[None]:
        """Inside the block, `clients` lose their connections and every new one is closed as
        soon as it names its client id, as if the network between them and the broker were
        down; other clients go on."""
        self._call(self._begin_cut(clients))
        try:
            yield
        finally:
            self._call(self._end_cut(clients))

    def clients(self) -> list[str]:
        """The client ids of the open connections."""
        return self._call(self._client_ids())

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on the proxy's loop, where the connections live; its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    async def _client_ids(self) -> list[str]:
        return sorted(link.client_id for link in self._links)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for link in list(self._links):
            link.close()

    async def _begin_cut(self, clients: Clients) -> None:
        self._cut.append(clients)
        for link in [link for link in self._links if clients(link.client_id)]:
            link.close()
            self._links.discard(link)

    async def _end_cut(self, clients: Clients) -> None:
        self._cut.remove(clients)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readexactly(_HEADER.size)
            *_, length = _HEADER.unpack(head)
            name = await reader.readexactly(length) if length > 0 else b""
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        link = _Link(name.decode(errors="replace"), [writer])
        if any(clients(link.client_id) for clients in self._cut):
            self.refused += 1
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.close()
            return
        link.writers.append(up_writer)
        self._links.add(link)
        up_writer.write(head + name)
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            link.close()
            self._links.discard(link)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until either side closes; closing the writer then ends the other direction too."""
    try:
        while chunk := await reader.read(1 << 16):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()
