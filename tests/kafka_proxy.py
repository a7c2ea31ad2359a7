"""A loopback forwarder in front of a Kafka broker that the tests can cut and restore, and that
can make the broker refuse writes to some topics.

Kafka clients connect to the address the broker advertises, whatever they bootstrapped with,
so the broker behind this proxy must advertise the proxy's address (`EmbeddedBroker(advertised=
proxy.address)`). Every client then talks through here, and the proxy tells them apart by the
`client_id` in the header of their first request (tracebus sets its own for the producer SDK
and the sinks; Faust's is `faust-<version>`):

    with KafkaProxy(upstream) as proxy:
        with proxy.cut(producer_clients): ...   # their connections closed, new ones closed at once
        with proxy.refuse(changelogs, MessageSizeTooLargeError.errno): ...

A refusal is what a broker answers when a topic's `max.message.bytes` or ACLs forbid a write,
which the embedded broker never does: the proxy takes the topic's partitions out of each
produce request (so nothing of them is written) and answers them with the error code, in the
order Kafka answers a connection's requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar

from aiokafka.protocol import produce

from tracebus.kafka.broker import free_port

Clients = Callable[[str], bool]  # which connections a cut applies to, by Kafka client id
T = TypeVar("T")

# A request starts with its size (int32), api key and version (int16 each), correlation id
# (int32), then the client id as a nullable string (int16 length, -1 for null): 14 bytes.
_HEADER = struct.Struct(">ihhih")
_SIZE = struct.Struct(">i")
_REQUEST_HEADER = struct.Struct(">hhih")  # the same without the size
_PRODUCE, _API_VERSIONS = 0, 18
# A response starts with its size, then the correlation id of the request it answers.
_CORRELATION = struct.Struct(">i")
Rewrite = Callable[[bytes], bytes]  # a response's body (after the correlation id) → the client's


def producer_clients(client_id: str) -> bool:
    """The SDK's sender in apps."""
    return client_id.startswith("tracebus-producer")


def worker_clients(client_id: str) -> bool:
    """Stream workers (Faust's consumer, producer and table changelog) and sink workers."""
    return client_id.startswith(("faust", "tracebus-sink"))


@dataclass
class Refusal:
    """Writes to the topics `topics` names whose record batch is larger than `larger_than`
    bytes (every write: 0) are refused with `error_code`; `partitions` counts the partition
    writes refused so far."""

    topics: Callable[[str], bool]
    error_code: int
    larger_than: int = 0
    partitions: int = 0

    def refuses(self, topic: str, batch: bytes) -> bool:
        return self.topics(topic) and len(batch) > self.larger_than


@dataclass(eq=False)
class _Link:
    client_id: str
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    # Per correlation id of a request changed on its way up: how to change its response.
    rewrites: dict[int, Rewrite] = field(default_factory=dict)

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
        self._refusals: list[Refusal] = []  # likewise
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

    @contextlib.contextmanager
    def refuse(
        self, topics: Callable[[str], bool], error_code: int, larger_than: int = 0
    ) -> Iterator[Refusal]:
        """Inside the block, every client's writes to the topics `topics` names are refused
        with `error_code` (a Kafka error's `errno`), as the broker would refuse them; only
        record batches larger than `larger_than` bytes when given (a topic's
        `max.message.bytes`). Other writes in the same requests go through."""
        refusal = Refusal(topics, error_code, larger_than)
        self._call(self._change(self._refusals.append, refusal))
        try:
            yield refusal
        finally:
            self._call(self._change(self._refusals.remove, refusal))

    def clients(self) -> list[str]:
        """The client ids of the open connections."""
        return self._call(self._client_ids())

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on the proxy's loop, where the connections live; its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    async def _change(self, change: Callable[[Refusal], None], refusal: Refusal) -> None:
        change(refusal)

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
            size, *_, length = _HEADER.unpack(head)
            name = await reader.readexactly(length) if length > 0 else b""
            first = head[_SIZE.size :] + name
            first += await reader.readexactly(size - len(first))
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
        try:
            await asyncio.gather(
                _frames(reader, up_writer, lambda frame: self._request(link, frame), first),
                _frames(up_reader, writer, lambda frame: _response(link, frame)),
            )
        finally:
            link.close()
            self._links.discard(link)

    def _request(self, link: _Link, frame: bytes) -> bytes:
        """The request as it goes up: a produce request without the partitions refused."""
        api_key, version, correlation, length = _REQUEST_HEADER.unpack_from(frame)
        if api_key != _PRODUCE or not self._refusals:
            return frame
        body_at = _REQUEST_HEADER.size + max(length, 0)
        request = getattr(produce, f"ProduceRequest_v{version}").decode(frame[body_at:])
        if request.required_acks == 0:
            return frame  # unanswered: nothing to refuse with
        refused: list[tuple[str, list[tuple[int, int]]]] = []
        kept = []
        for topic, partitions in request.topics:
            kept_partitions, refused_partitions = [], []
            for partition, batch in partitions:
                refusal = next((r for r in self._refusals if r.refuses(topic, batch)), None)
                if refusal is None:
                    kept_partitions.append((partition, batch))
                else:
                    refusal.partitions += 1
                    refused_partitions.append((partition, refusal.error_code))
            if kept_partitions:
                kept.append((topic, kept_partitions))
            if refused_partitions:
                refused.append((topic, refused_partitions))
        if not refused:
            return frame
        answer = getattr(produce, f"ProduceResponse_v{version}")
        link.rewrites[correlation] = lambda body: _with_refusals(
            answer, body if kept else None, refused
        )
        if kept:
            request.topics = kept
            return frame[:body_at] + request.encode()
        # Nothing left to write: an ApiVersions request keeps the response's place in order.
        client_id = frame[_REQUEST_HEADER.size - 2 : body_at]  # with its length
        return struct.pack(">hhi", _API_VERSIONS, 0, correlation) + client_id


def _response(link: _Link, frame: bytes) -> bytes:
    (correlation,) = _CORRELATION.unpack_from(frame)
    rewrite = link.rewrites.pop(correlation, None)
    if rewrite is None:
        return frame
    return frame[: _CORRELATION.size] + rewrite(frame[_CORRELATION.size :])


def _with_refusals(
    answer: type[Any], body: bytes | None, refused: list[tuple[str, list[tuple[int, int]]]]
) -> bytes:
    """A produce response (`answer`: its class for the request's version) that also reports
    the `refused` partitions with their error codes; `body` is the broker's response, None when
    the request had nothing left to write."""
    topics_field = answer.SCHEMA.fields[0]
    entry_names = topics_field.array_of.fields[1].array_of.names
    defaults = {"record_errors": [], "error_message": None}
    refusals = [
        (
            topic,
            [
                tuple(
                    {"partition": p, "error_code": code}.get(name, defaults.get(name, -1))
                    for name in entry_names
                )
                for p, code in partitions
            ],
        )
        for topic, partitions in refused
    ]
    if body is None:
        response = answer(*[[] if name == "topics" else 0 for name in answer.SCHEMA.names])
    else:
        response = answer.decode(body)
    response.topics = [*response.topics, *refusals]
    return response.encode()


async def _frames(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    change: Callable[[bytes], bytes],
    first: bytes | None = None,
) -> None:
    """Copy size-prefixed frames, each as `change` makes it, until either side closes; closing
    the writer then ends the other direction too."""
    try:
        frame = first
        while True:
            if frame is None:
                (size,) = _SIZE.unpack(await reader.readexactly(_SIZE.size))
                frame = await reader.readexactly(size)
            frame = change(frame)
            writer.writelines([_SIZE.pack(len(frame)), frame])
            await writer.drain()
            frame = None
    except (asyncio.IncompleteReadError, ConnectionError, OSError):
        pass
    finally:
        writer.close()
