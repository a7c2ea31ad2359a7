"""Traces emitted by app code arrive in Kafka complete, exact and in order, on a real broker."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import read_batches, read_records

import tracebus
from tracebus.config import KafkaSettings
from tracebus.schemas import EventBatch, ObservationEvent


def client_for(kafka: KafkaSettings, **options: object) -> tracebus.Client:
    return tracebus.Client(**{**kafka.model_dump(), "linger_ms": 5, **options})


def final_observations(batches: list[EventBatch]) -> dict[str, ObservationEvent]:
    """The last snapshot of each observation, by name."""
    latest: dict[str, ObservationEvent] = {}
    for batch in batches:
        for event in batch.events:
            if isinstance(event, ObservationEvent):
                latest[event.name] = event
    return latest


def ended(count: int) -> Callable[[list[EventBatch]], bool]:
    def done(batches: list[EventBatch]) -> bool:
        return (
            len(
                {
                    e.observation_id
                    for b in batches
                    for e in b.events
                    if isinstance(e, ObservationEvent) and e.end_time_unix_nano is not None
                }
            )
            >= count
        )

    return done


def test_a_nested_sync_trace_arrives_with_exact_fields(kafka: KafkaSettings) -> None:
    client = client_for(kafka)
    with client.trace(
        "support-chat",
        user_id="user-7",
        session_id="sess-3",
        tags=["beta"],
        metadata={"tenant": "acme"},
        release="1.4.2",
        environment="staging",
    ) as root:
        with client.retriever("search-docs", input={"query": "refund policy"}) as search:
            search.update(output=[{"id": "doc-1", "score": 0.92}], metadata={"index": "faq"})
        with client.generation(
            "answer",
            model="gpt-4o",
            provider="openai",
            input=[{"role": "user", "content": "hi"}],
            model_parameters={"temperature": 0.2, "max_tokens": 256},
        ) as llm:
            llm.update(
                output="Refunds take 5 days.",
                completion_start_time=llm.start_ns + 1_000_000,
                usage={
                    "prompt_tokens": 812,
                    "completion_tokens": 64,
                    "prompt_tokens_details": {"cached_tokens": 512},
                },
                cost={"input": 0.002, "output": 0.0006, "total": 0.0026},
            )
        root.update_trace(tags=["refunds"], output="Refunds take 5 days.")
    assert client.flush(10)

    batches = read_batches(kafka, ended(3))
    assert {batch.trace_id for batch in batches} == {root.trace_id}
    observations = final_observations(batches)
    chat, search, answer = (observations[n] for n in ("support-chat", "search-docs", "answer"))
    assert chat.parent_observation_id is None and chat.kind == "span"
    assert search.parent_observation_id == chat.observation_id and search.kind == "retriever"
    assert search.input == {"query": "refund policy"}
    assert search.output == [{"id": "doc-1", "score": 0.92}]
    assert search.metadata == {"index": "faq"}
    assert answer.parent_observation_id == chat.observation_id
    assert (answer.model, answer.provider) == ("gpt-4o", "openai")
    assert answer.model_parameters == {"temperature": 0.2, "max_tokens": 256}
    assert answer.usage.model_dump(exclude_none=True) == {
        "input_tokens": 812,
        "input_cache_read_tokens": 512,
        "output_tokens": 64,
        "total_tokens": 876,
    }
    assert answer.cost.total == 0.0026
    assert answer.completion_start_time_unix_nano == answer.start_time_unix_nano + 1_000_000
    assert answer.start_time_unix_nano <= answer.end_time_unix_nano <= chat.end_time_unix_nano
    traces = [e for b in batches for e in b.events if e.type == "trace"]
    assert len(traces) == 1
    assert traces[0].model_dump(
        exclude_none=True,
        include={
            "name",
            "user_id",
            "session_id",
            "tags",
            "metadata",
            "release",
            "environment",
            "output",
        },
    ) == {
        "name": "support-chat",
        "user_id": "user-7",
        "session_id": "sess-3",
        "tags": ["beta", "refunds"],
        "metadata": {"tenant": "acme"},
        "release": "1.4.2",
        "environment": "staging",
        "output": "Refunds take 5 days.",
    }
    client.close()


def test_async_tasks_nest_under_the_observation_that_created_them(kafka: KafkaSettings) -> None:
    client = client_for(kafka)

    @tracebus.observe(kind="tool", client=client)
    async def lookup(city: str) -> str:
        await asyncio.sleep(0)
        return f"sunny in {city}"

    @tracebus.observe(kind="agent", client=client)
    async def plan(cities: list[str]) -> list[str]:
        return list(await asyncio.gather(*(lookup(city) for city in cities)))

    async def main() -> None:
        with client.trace("trip"):
            await plan(["Oslo", "Rome"])

    asyncio.run(main())
    assert client.flush(10)
    batches = read_batches(kafka, ended(4))
    events = [e for b in batches for e in b.events if isinstance(e, ObservationEvent)]
    by_id = {e.observation_id: e for e in events}
    tools = [e for e in by_id.values() if e.kind == "tool"]
    agent = next(e for e in by_id.values() if e.kind == "agent")
    assert sorted(t.output for t in tools) == ["sunny in Oslo", "sunny in Rome"]
    assert sorted(t.input["city"] for t in tools) == ["Oslo", "Rome"]
    assert {t.parent_observation_id for t in tools} == {agent.observation_id}
    assert agent.input == {"cities": ["Oslo", "Rome"]}
    client.close()


def test_bind_carries_the_current_observation_into_worker_threads(kafka: KafkaSettings) -> None:
    client = client_for(kafka)
    seen_threads: set[str] = set()

    def embed(chunk: str) -> None:
        seen_threads.add(threading.current_thread().name)
        with client.embedding(f"embed-{chunk}", input=chunk):
            pass

    with client.trace("ingest") as root, ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(tracebus.bind(embed), ["a", "b", "c", "d"]))
    assert client.flush(10)
    observations = final_observations(read_batches(kafka, ended(5)))
    assert threading.current_thread().name not in seen_threads
    for chunk in "abcd":
        assert observations[f"embed-{chunk}"].parent_observation_id == root.id
    client.close()


def test_generators_are_observed_until_exhausted(kafka: KafkaSettings) -> None:
    client = client_for(kafka)

    @tracebus.observe(kind="tool", client=client)
    def lookup(token: str) -> str:
        return token.upper()

    @tracebus.observe(name="stream-tokens", kind="generation", client=client)
    def stream(prompt: str) -> Iterator[str]:
        for token in prompt.split():
            yield lookup(token)

    @tracebus.observe(name="astream", kind="chain", client=client, capture_input=False)
    async def astream(n: int) -> AsyncIterator[int]:
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    async def consume() -> list[int]:
        return [i async for i in astream(3)]

    with client.trace("gen"):
        assert list(stream("a b")) == ["A", "B"]
        assert asyncio.run(consume()) == [0, 1, 2]
    assert client.flush(10)
    observations = final_observations(read_batches(kafka, ended(5)))
    generation = observations["stream-tokens"]
    assert generation.output == ["A", "B"] and generation.input == {"prompt": "a b"}
    assert observations["lookup"].parent_observation_id == generation.observation_id
    assert observations["astream"].output == [0, 1, 2]
    assert observations["astream"].input is None
    assert observations["astream"].parent_observation_id == observations["gen"].observation_id
    client.close()


def test_exceptions_mark_the_observation_and_propagate(kafka: KafkaSettings) -> None:
    client = client_for(kafka)

    @tracebus.observe(client=client)
    def flaky() -> None:
        raise TimeoutError("upstream took 30s")

    with pytest.raises(TimeoutError), client.trace("run"):
        flaky()
    assert client.flush(10)
    observations = final_observations(read_batches(kafka, ended(2)))
    assert observations["flaky"].level == "ERROR"
    assert observations["run"].status_message == "TimeoutError: upstream took 30s"
    client.close()


def test_events_of_a_trace_keep_their_order_and_share_a_partition(kafka: KafkaSettings) -> None:
    client = client_for(kafka, linger_ms=0)
    with client.trace("long-running") as root:
        with client.span("step-1"):
            pass
        assert client.flush(10)  # step-1 and the open root are sent now
        with client.span("step-2"):
            pass
    assert client.flush(10)
    batches = read_batches(kafka, ended(3))
    snapshots = [
        (e.name, e.end_time_unix_nano is not None)
        for b in batches
        for e in b.events
        if isinstance(e, ObservationEvent)
    ]
    assert snapshots.index(("long-running", False)) < snapshots.index(("long-running", True))
    assert snapshots.index(("step-1", True)) < snapshots.index(("step-2", True))
    assert ("step-1", False) not in snapshots  # ended before sending: one snapshot only
    assert {b.trace_id for b in batches} == {root.trace_id}
    client.close()


def test_scores_have_stable_ids_and_a_traceparent_continues_a_trace(kafka: KafkaSettings) -> None:
    client = client_for(kafka)
    with client.trace("frontend") as root:
        header = root.traceparent
        root.score_trace("helpfulness", 4)
        root.score_trace("helpfulness", 5, comment="revised")
    with client.trace("backend", traceparent=header) as remote:
        remote.score("grounded", True)
    assert client.flush(10)
    assert remote.trace_id == root.trace_id and remote.parent_id == root.id
    batches = read_batches(kafka, ended(2))
    scores = [e for b in batches for e in b.events if e.type == "score"]
    helpfulness = [s for s in scores if s.name == "helpfulness"]
    assert [s.value for s in helpfulness] == [4, 5]
    assert helpfulness[0].score_id == helpfulness[1].score_id
    grounded = next(s for s in scores if s.name == "grounded")
    assert (grounded.data_type, grounded.observation_id) == ("BOOLEAN", remote.id)
    client.close()


def test_the_sender_can_run_on_the_apps_event_loop(kafka: KafkaSettings) -> None:
    client = client_for(kafka)

    async def main() -> None:
        await client.astart()
        with client.trace("in-loop"):
            await asyncio.sleep(0)
        assert await client.aflush(10)
        await client.aclose()

    asyncio.run(main())
    assert client.counters.sent == 2
    read_batches(kafka, ended(1))


def test_events_of_one_trace_travel_together_in_records_keyed_by_trace_id(
    kafka: KafkaSettings,
) -> None:
    client = client_for(kafka, linger_ms=200)
    with client.trace("batch", observation_id="00f067aa0ba902b7") as root:
        for i in range(10):
            client.event(f"step-{i}")
    assert root.id == "00f067aa0ba902b7"
    assert client.flush(10)
    records = read_records(kafka, ended(11))
    assert len(records) == 1
    key, batch = records[0]
    assert key == root.trace_id.encode() == batch.trace_id.encode()
    assert len(batch.events) == 12  # ten events, the root and the trace attributes
    client.close()


def test_a_send_round_is_limited_by_event_count(kafka: KafkaSettings) -> None:
    client = client_for(kafka, linger_ms=200, batch_max_events=4)
    with client.trace("split"):
        for i in range(10):
            client.event(f"step-{i}")
    assert client.flush(10)
    records = read_records(kafka, ended(11))
    assert max(len(batch.events) for _, batch in records) <= 4
    assert sum(len(batch.events) for _, batch in records) == 12
    client.close()
