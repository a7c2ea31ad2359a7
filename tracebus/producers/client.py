"""The producer client: creates observations, serialises events and owns the background sender."""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tracebus.kafka.connection import KafkaSecurity, kafka_options
from tracebus.producers.buffer import EventBuffer
from tracebus.producers.context import current
from tracebus.producers.observation import (
    KINDS,
    OPTIONAL_FIELDS,
    TRACE_FIELDS,
    UNSET,
    Observation,
    TraceState,
    to_unix_nano,
)
from tracebus.producers.sender import KafkaSender
from tracebus.producers.settings import ProducerSettings
from tracebus.schemas import (
    EventTooLarge,
    json_default,
    new_event_id,
    new_observation_id,
    new_trace_id,
    parse_traceparent,
    serialize_event,
)
from tracebus.schemas.ids import observation_id_problem, trace_id_problem

log = logging.getLogger("tracebus.producer")

Redactor = Callable[[dict[str, Any]], dict[str, Any] | None]
# Buffer size charged for an open observation until the sender snapshots it.
_OPEN_OBSERVATION_BYTES = 128
# `parent` value that starts a new trace even inside an open observation.
_NEW_TRACE: Any = object()
_SCORE_TYPES = {bool: "BOOLEAN", str: "CATEGORICAL", int: "NUMERIC", float: "NUMERIC"}
_clients: weakref.WeakSet[Client] = weakref.WeakSet()


@dataclass(frozen=True, slots=True)
class ProducerCounters:
    """Event counts since the client started (or since fork, in a child process).

    accepted = sent + coalesced + buffered + dropped, where `coalesced` counts snapshots of
    open observations that were superseded by their final snapshot before being sent."""

    accepted: int
    sent: int
    coalesced: int
    buffered: int
    buffered_bytes: int
    dropped: int
    sampled_out_traces: int
    errors: int
    send_failures: int
    last_error: str | None


class Client:
    """Entry point of the producer SDK. Emitting never blocks and never raises into app code.

    Calls made with invalid arguments are logged, counted in `counters.errors` and repaired
    (a generated id, the default kind) rather than raised; `last_error` says what was wrong."""

    def __init__(
        self,
        settings: ProducerSettings | None = None,
        *,
        redact: Redactor | None = None,
        security: KafkaSecurity | None = None,
        **overrides: Any,
    ) -> None:
        self.settings = settings or ProducerSettings(**overrides)
        # Read now (TRACEBUS_KAFKA_* unless `security` is given): a mistake in them shows
        # where the app makes its client.
        self._kafka_options = kafka_options(self.settings.bootstrap_servers, security)
        self.redact = redact
        self._limits = self.settings.limits
        self._sample_bound = int(self.settings.sample_rate * 2**64)
        self._lock = threading.Lock()
        self._reset_runtime()
        _clients.add(self)

    def _reset_runtime(self) -> None:
        self._buffer = EventBuffer(self.settings.buffer_max_bytes)
        self._sender: KafkaSender | None = None
        self._sender_done = threading.Event()
        self._runner: threading.Thread | asyncio.Task[None] | None = None
        self._round = threading.Condition()
        self._wake_threshold = self.settings.batch_max_bytes
        self._errors = 0
        self._sampled_out = 0
        self._last_error: str | None = None
        self._closed = False

    # -- observations -----------------------------------------------------------------------

    def start_observation(
        self,
        name: str,
        kind: str = "span",
        *,
        parent: Observation | None = None,
        trace_id: str | None = None,
        observation_id: str | None = None,
        traceparent: str | None = None,
        start_time: Any = None,
        **fields: Any,
    ) -> Observation:
        """Open an observation under `parent` (default: the current one) and return its handle.

        Without a parent it starts a trace: a new one, `trace_id`, or the one in `traceparent`.
        `fields` are those of `Observation.update`. Use it as a context manager to make it
        current and end it on exit, or call `end()` yourself."""
        if kind not in KINDS:
            self._report_invalid(f"kind {kind!r} is not one of {sorted(KINDS)}; using 'span'")
            kind = "span"
        if parent is _NEW_TRACE:
            parent = None
        elif parent is None and trace_id is None and traceparent is None:
            parent = current.get()
        parent_id: str | None = None
        if parent is not None:
            trace, parent_id, is_root = parent.trace, parent.id, False
        else:
            trace, parent_id = self._new_trace(trace_id, traceparent)
            is_root = True
        if observation_id is not None and (problem := observation_id_problem(observation_id)):
            self._report_invalid(f"observation_id {observation_id!r}: {problem}; generated one")
            observation_id = None
        observation = Observation(
            self,
            trace,
            observation_id or new_observation_id(),
            parent_id,
            kind,
            name,
            time.time_ns() if start_time is None else to_unix_nano(start_time),
            is_root,
        )
        if fields:
            try:
                observation.update(**fields)
            except TypeError as error:
                self._report_invalid(str(error))
        if trace.sampled and self.settings.enabled:
            self._enqueue(trace.trace_id, observation, _OPEN_OBSERVATION_BYTES)
        return observation

    def trace(
        self,
        name: str,
        *,
        kind: str = "span",
        user_id: str | None = None,
        session_id: str | None = None,
        tags: list[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        release: str | None = None,
        environment: str | None = None,
        trace_id: str | None = None,
        traceparent: str | None = None,
        **fields: Any,
    ) -> Observation:
        """Start a new trace whose root observation is returned; trace attributes given here."""
        root = self.start_observation(
            name, kind, parent=_NEW_TRACE, trace_id=trace_id, traceparent=traceparent, **fields
        )
        root.update_trace(
            name=name,
            user_id=user_id,
            session_id=session_id,
            tags=tags,
            metadata=metadata,
            release=release,
            environment=environment,
        )
        return root

    def span(self, name: str, **options: Any) -> Observation:
        return self.start_observation(name, "span", **options)

    def generation(self, name: str, **options: Any) -> Observation:
        return self.start_observation(name, "generation", **options)

    def tool(self, name: str, **options: Any) -> Observation:
        return self.start_observation(name, "tool", **options)

    def retriever(self, name: str, **options: Any) -> Observation:
        return self.start_observation(name, "retriever", **options)

    def agent(self, name: str, **options: Any) -> Observation:
        return self.start_observation(name, "agent", **options)

    def chain(self, name: str, **options: Any) -> Observation:
        return self.start_observation(name, "chain", **options)

    def embedding(self, name: str, **options: Any) -> Observation:
        return self.start_observation(name, "embedding", **options)

    def event(self, name: str, **options: Any) -> Observation:
        """Record an instant event (start = end) under the current observation."""
        observation = self.start_observation(name, "event", **options)
        observation.end(observation.start_ns)
        return observation

    def score(
        self,
        name: str,
        value: float | str | bool,
        *,
        trace_id: str | None = None,
        observation_id: str | None = None,
        comment: str | None = None,
        data_type: str | None = None,
        source: str = "API",
        metadata: Mapping[str, Any] | None = None,
        score_id: str | None = None,
    ) -> None:
        """Score a trace (default: the current one) or one observation of it.

        The default `score_id` is derived from trace, observation and name, so scoring the
        same thing again updates the score instead of adding one."""
        if trace_id is None:
            observation = current.get()
            if observation is None:
                self._report_invalid(f"score {name!r} has no trace: pass trace_id or open one")
                return
            trace_id = observation.trace.trace_id
            if not observation.trace.sampled:
                return
        elif problem := trace_id_problem(trace_id):
            self._report_invalid(f"score {name!r}: trace_id {trace_id!r}: {problem}")
            return
        elif not self._sampled(trace_id):
            return
        if not self.settings.enabled:
            return
        score_type = data_type or _SCORE_TYPES.get(type(value))
        if score_id is None:
            seed = f"{trace_id}/{observation_id or ''}/{name}".encode()
            score_id = hashlib.blake2b(seed, digest_size=16).hexdigest()
        event: dict[str, Any] = {
            "schema_version": 1,
            "type": "score",
            "event_id": new_event_id(),
            "trace_id": trace_id,
            "timestamp_unix_nano": time.time_ns(),
            "score_id": score_id,
            "name": name,
            "value": value,
            "data_type": score_type,
            "source": source,
        }
        for key, field in (
            ("observation_id", observation_id),
            ("comment", comment),
            ("metadata", metadata),
        ):
            if field is not None:
                event[key] = field
        self._emit(trace_id, event)

    def current_observation(self) -> Observation | None:
        return current.get()

    # -- emission -----------------------------------------------------------------------------

    def _sampled(self, trace_id: str) -> bool:
        # The low 64 bits of a random trace id are uniform: every service decides alike.
        return int(trace_id[16:], 16) < self._sample_bound

    def _new_trace(
        self, trace_id: str | None, traceparent: str | None
    ) -> tuple[TraceState, str | None]:
        parent_id = None
        sampled: bool | None = None
        if traceparent is not None:
            try:
                remote = parse_traceparent(traceparent)
                trace_id, parent_id, sampled = (
                    remote.trace_id,
                    remote.parent_observation_id,
                    remote.sampled,
                )
            except ValueError as error:
                self._report_invalid(f"{error}; starting a new trace")
        if trace_id is not None and (problem := trace_id_problem(trace_id)):
            self._report_invalid(f"trace_id {trace_id!r}: {problem}; generated one")
            trace_id = None
        trace_id = trace_id or new_trace_id()
        sampled = (
            self._sampled(trace_id) if sampled is None else sampled and self._sampled(trace_id)
        )
        if not sampled:
            with self._lock:
                self._sampled_out += 1
        state = TraceState(trace_id, sampled)
        defaults = {"release": self.settings.release, "environment": self.settings.environment}
        state.attributes.update({k: v for k, v in defaults.items() if v is not None})
        return state, parent_id

    def _update_trace(self, trace: TraceState, attributes: dict[str, Any]) -> None:
        known = trace.attributes
        for key, value in attributes.items():
            if value is None or value is UNSET:
                continue
            if key == "tags":
                known["tags"] = list(dict.fromkeys([*known.get("tags", ()), *value]))
            elif key == "metadata":
                known["metadata"] = {**known.get("metadata", {}), **value}
            else:
                known[key] = value
        trace.dirty = True
        if trace.root_ended:
            self._emit_trace(trace)

    def _root_ended(self, trace: TraceState) -> None:
        trace.root_ended = True
        if trace.dirty:
            self._emit_trace(trace)

    def _emit_trace(self, trace: TraceState) -> None:
        trace.dirty = False
        if not trace.sampled or not self.settings.enabled:
            return
        event = {
            "schema_version": 1,
            "type": "trace",
            "event_id": new_event_id(),
            "trace_id": trace.trace_id,
            "timestamp_unix_nano": time.time_ns(),
        }
        for key in TRACE_FIELDS:
            if key in trace.attributes:
                event[key] = trace.attributes[key]
        self._emit(trace.trace_id, event)

    def _emit_observation(self, observation: Observation) -> None:
        if observation.trace.sampled and self.settings.enabled:
            self._emit(observation.trace.trace_id, self._observation_event(observation))

    def _observation_event(self, observation: Observation) -> dict[str, Any]:
        event: dict[str, Any] = {
            "schema_version": 1,
            "type": "observation",
            "event_id": new_event_id(),
            "trace_id": observation.trace.trace_id,
            "timestamp_unix_nano": time.time_ns(),
            "observation_id": observation.id,
            "kind": observation.kind,
            "name": observation.name,
            "start_time_unix_nano": observation.start_ns,
            "level": observation.level,
        }
        if observation.parent_id is not None:
            event["parent_observation_id"] = observation.parent_id
        for attribute, key in OPTIONAL_FIELDS:
            value = getattr(observation, attribute)
            if value is not None:
                event[key] = value
        return event

    def _snapshot_open(self, observation: Observation) -> bytes | None:
        """Serialise an open observation for the sender; None once its end snapshot is queued."""
        if observation.ended:
            return None
        return self._serialize(self._observation_event(observation))

    def _serialize(self, event: dict[str, Any]) -> bytes | None:
        try:
            if self.redact is not None:
                redacted = self.redact(event)
                if redacted is None:
                    return None
                event = redacted
            return serialize_event(event, self._limits, json_default)
        except EventTooLarge as error:
            self._report_error(f"event dropped: {error}")
        except Exception as error:  # the app's data or redaction hook failed; never raise
            self._report_error(f"event of trace {event.get('trace_id')} dropped: {error!r}")
        return None

    def _emit(self, trace_id: str, event: dict[str, Any]) -> None:
        data = self._serialize(event)
        if data is not None:
            self._enqueue(trace_id, data, len(data))

    def _enqueue(self, trace_id: str, payload: Any, size: int) -> None:
        if self._sender is None:
            self._start_sender()
        buffer = self._buffer
        buffer.put((trace_id, payload, size))
        if buffer.queued_bytes >= self._wake_threshold and self._sender is not None:
            self._sender.wake()

    def _report_invalid(self, message: str) -> None:
        self._report_error(f"invalid tracebus call: {message}")

    def _report_error(self, message: str) -> None:
        with self._lock:
            self._errors += 1
            repeated = message == self._last_error
            self._last_error = message
        if not repeated:
            log.warning(message)

    # -- delivery ------------------------------------------------------------------------------

    def _new_sender(self) -> KafkaSender:
        return KafkaSender(
            self.settings,
            self._kafka_options,
            self._buffer,
            self._snapshot_open,
            self._notify_round,
        )

    def _start_sender(self) -> None:
        with self._lock:
            if self._sender is not None or self._closed:
                return
            sender = self._new_sender()
            done = self._sender_done

            def run() -> None:
                try:
                    asyncio.run(sender.run())
                finally:
                    done.set()

            self._runner = threading.Thread(target=run, name="tracebus-sender", daemon=True)
            self._sender = sender
            self._runner.start()

    async def astart(self) -> None:
        """Run the sender as a task of the running event loop instead of its own thread.

        Call before the first event. With the sender on the app's loop, use `aflush`/`aclose`."""
        with self._lock:
            if self._sender is not None:
                return
            sender = self._new_sender()
            self._sender = sender
            task = asyncio.get_running_loop().create_task(sender.run(), name="tracebus-sender")
            task.add_done_callback(lambda _: self._sender_done.set())
            self._runner = task

    def _notify_round(self) -> None:
        with self._round:
            self._round.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every event so far is acknowledged by Kafka; False if `timeout` ran out."""
        if isinstance(self._runner, asyncio.Task):
            raise RuntimeError("the sender runs on an event loop: use `await client.aflush()`")
        deadline = time.monotonic() + timeout
        sender = self._sender
        if sender is not None:
            sender.wake()
        with self._round:
            while not self._buffer.empty():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._sender_done.is_set():
                    return False
                self._round.wait(min(remaining, 0.1))
                if self._sender is not None:
                    self._sender.wake()
        return True

    async def aflush(self, timeout: float = 10.0) -> bool:
        """`flush` for async code; works whether the sender has its own thread or not."""
        if not isinstance(self._runner, asyncio.Task):
            return await asyncio.get_running_loop().run_in_executor(None, self.flush, timeout)
        deadline = time.monotonic() + timeout
        while not self._buffer.empty():
            if time.monotonic() >= deadline or self._runner.done():
                return False
            if self._sender is not None:
                self._sender.wake()
            await asyncio.sleep(0.005)
        return True

    def close(self, timeout: float = 10.0) -> bool:
        """Flush, stop the sender and release the connection; False if events were left."""
        delivered = self.flush(timeout) if self._sender is not None else self._buffer.empty()
        with self._lock:
            self._closed = True
            sender, runner = self._sender, self._runner
        if sender is not None:
            sender.stop()
        if isinstance(runner, threading.Thread):
            runner.join(max(timeout, 1.0))
        return delivered

    async def aclose(self, timeout: float = 10.0) -> bool:
        delivered = await self.aflush(timeout)
        self._closed = True
        if self._sender is not None:
            self._sender.stop()
        if isinstance(self._runner, asyncio.Task):
            await asyncio.wait([self._runner], timeout=max(timeout, 1.0))
        elif isinstance(self._runner, threading.Thread):
            await asyncio.get_running_loop().run_in_executor(None, self._runner.join, timeout)
        return delivered

    def _close_at_exit(self) -> None:
        if self._closed or self._sender is None or isinstance(self._runner, asyncio.Task):
            return
        if not self.close(self.settings.exit_flush_timeout_s):
            stats = self._buffer.stats()
            log.error(
                "tracebus exited with %d events undelivered: %s",
                stats.queued_events + stats.in_flight_events,
                self._last_error,
            )

    def _after_fork_in_child(self) -> None:
        # The parent's thread does not exist here and its buffered events are the parent's to
        # send: start empty, with fresh locks, and a sender on the next event.
        self._lock = threading.Lock()
        self._reset_runtime()

    @property
    def counters(self) -> ProducerCounters:
        stats = self._buffer.stats()
        sender = self._sender
        return ProducerCounters(
            accepted=self._buffer.accepted,
            sent=sender.sent_events if sender else 0,
            coalesced=sender.coalesced if sender else 0,
            buffered=stats.queued_events + stats.in_flight_events,
            buffered_bytes=stats.pending_bytes,
            dropped=stats.dropped_events,
            sampled_out_traces=self._sampled_out,
            errors=self._errors,
            send_failures=sender.failed_sends if sender else 0,
            last_error=self._last_error or (sender.last_error if sender else None),
        )


def _reinit_clients_in_child() -> None:
    for client in list(_clients):
        client._after_fork_in_child()


def _close_clients_at_exit() -> None:
    for client in list(_clients):
        client._close_at_exit()


os.register_at_fork(after_in_child=_reinit_clients_in_child)
atexit.register(_close_clients_at_exit)
