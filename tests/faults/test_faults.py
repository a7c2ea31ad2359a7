"""Proof under faults: during a steady load, workers are SIGKILLed, destinations fail, the
network to the broker is cut, and bad records arrive; afterwards every emitted trace is at each
destination exactly once (by id), dead letters are exactly the bad records with their reasons,
and no worker's memory ran away. `TRACEBUS_FAULT_ITERATIONS` makes the long form."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from random import Random

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError
from bad_inputs import MAX_RECORD_BYTES, Input, inputs, send
from conftest import consume, eventually, fresh_settings, read_batches
from harness import (
    ITERATIONS,
    SEED,
    Pipeline,
    SteadyLoad,
    check_memory,
    check_outcome,
    dead_letters,
    letter_counts,
    pipeline,
    record,
    run_ids,
    wait_for_delivery,
)
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from kafka_proxy import KafkaProxy, producer_clients, worker_clients

import tracebus
from tracebus.kafka import EmbeddedBroker
from tracebus.ops.deadletters import DeadLetter

RATE = 10.0  # traces per second: a steady load the 2-core CI machine carries with room left

pytestmark = pytest.mark.timeout(300 * ITERATIONS)  # a scenario takes 20-60 s per iteration


@pytest.fixture
def rng() -> Random:
    print(f"TRACEBUS_FAULT_SEED={SEED}")  # shown with a failure, to re-run the same moments
    return Random(SEED)


def test_workers_sigkilled_at_random_moments_lose_and_duplicate_nothing(
    broker: EmbeddedBroker, tmp_path: Path, rng: Random
) -> None:
    started = time.monotonic()
    settings = fresh_settings(broker.bootstrap_servers)
    with (
        pipeline(settings, tmp_path, streams=2, langfuse_sinks=2) as running,
        SteadyLoad(settings, RATE) as load,
    ):
        load.wait_for(10)
        for _ in range(ITERATIONS):
            for kind in ("stream", "sink"):
                load.wait_for(rng.randint(3, 30))
                victim = rng.choice(running.of_kind(kind))
                if victim.name.startswith("sink-langfuse"):
                    # Worst moment: Langfuse has stored a request whose answer is lost, then
                    # a sink dies (this one, or the other one after its request timeout).
                    running.langfuse.hang_next(after_recording=True)
                    load.wait_for(3)
                running.kill(victim)
        load.wait_for(10)
        load.stop()
        wait_for_delivery(running, load.traces)
    outcome = check_outcome(running, load.traces, redelivery_allowed=True)
    assert outcome.dead_letters == []
    record("SIGKILL of stream and sink workers", started, **outcome.figures())


def test_a_failing_destination_delays_delivery_but_loses_and_duplicates_nothing(
    broker: EmbeddedBroker, tmp_path: Path, rng: Random
) -> None:
    started = time.monotonic()
    settings = fresh_settings(broker.bootstrap_servers)
    with pipeline(settings, tmp_path) as running, SteadyLoad(settings, RATE) as load:
        langfuse, langsmith = running.langfuse, running.langsmith
        for _ in range(ITERATIONS):
            load.wait_for(rng.randint(3, 15))
            langfuse.fail_next(503, count=rng.randint(1, 4))
            langsmith.fail_next(500, count=rng.randint(1, 4))
            load.wait_for(rng.randint(3, 15))
            langfuse.fail_next(429, count=rng.randint(1, 3), retry_after=1)
            langsmith.fail_next(429, count=rng.randint(1, 3), retry_after=1)
            load.wait_for(rng.randint(3, 15))
            rng.choice([langfuse, langsmith]).hang_next()  # the sink's 10 s request timeout
            with rng.choice([langfuse, langsmith]).down():
                load.wait_for(rng.randint(5, 20))
        load.wait_for(10)
        load.stop()
        wait_for_delivery(running, load.traces)
    statuses = Counter(r.status for r in [*langfuse.requests, *langsmith.requests])
    assert statuses[503] + statuses[500] >= 2 and statuses[429] >= 2 and statuses[None] >= 1
    outcome = check_outcome(running, load.traces, redelivery_allowed=False)
    assert outcome.dead_letters == []
    record("destination 5xx, 429 + Retry-After, timeout, refused", started, **outcome.figures())


def test_clients_of_the_proxied_broker_go_through_the_proxy_and_a_cut_holds_only_whom_it_names(
    proxied: tuple[KafkaProxy, EmbeddedBroker],
) -> None:
    proxy, broker = proxied
    # Bootstrapped at the broker's own port: the advertised address leads to the proxy.
    settings = fresh_settings(broker.bootstrap_servers)
    client = tracebus.Client(**settings.model_dump(), linger_ms=5)
    try:
        with client.trace("before") as before:
            pass
        assert client.flush(30)
        assert "tracebus-producer" in proxy.clients()
        with proxy.cut(producer_clients):
            assert "tracebus-producer" not in proxy.clients()
            with client.trace("during") as during:
                pass
            assert not client.flush(2)  # nowhere to send it
            dead_letters(settings)  # other clients still get through
            assert proxy.refused >= 1
        assert client.flush(30)
    finally:
        client.close()
    batches = read_batches(settings, lambda b: during.trace_id in {x.trace_id for x in b})
    assert {b.trace_id for b in batches} == {before.trace_id, during.trace_id}


def test_a_refusal_of_the_proxied_broker_writes_nothing_of_its_topics_and_answers_their_error(
    proxied: tuple[KafkaProxy, EmbeddedBroker],
) -> None:
    proxy, broker = proxied
    settings = fresh_settings(broker.bootstrap_servers)
    refused, other = settings.events_topic, settings.traces_topic

    async def write(tag: bytes) -> list[BaseException | int]:
        """Per write, its error or offset: one request with both topics, then one with the
        refused topic only."""
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=50)
        await producer.start()
        try:
            sent = [
                await producer.send(topic, tag + b"-1", partition=0) for topic in (refused, other)
            ]
            await asyncio.wait(sent)
            sent.append(await producer.send(refused, tag + b"-2", partition=0))
            await asyncio.wait(sent[-1:])
            return [f.exception() or f.result().offset for f in sent]
        finally:
            await producer.stop()

    with proxy.refuse(lambda topic: topic == refused, MessageSizeTooLargeError.errno) as refusal:
        during = asyncio.run(write(b"refused"))
    assert isinstance(during[0], MessageSizeTooLargeError) and during[1] == 0
    assert isinstance(during[2], MessageSizeTooLargeError) and refusal.partitions == 2
    assert asyncio.run(write(b"accepted")) == [0, 1, 1]
    written = consume(broker.bootstrap_servers, refused, lambda records: len(records) >= 2)
    assert [r.value for r in written] == [b"accepted-1", b"accepted-2"]


def test_network_cuts_to_the_broker_lose_and_duplicate_nothing(
    proxied: tuple[KafkaProxy, EmbeddedBroker], tmp_path: Path, rng: Random
) -> None:
    started = time.monotonic()
    proxy, _ = proxied
    settings = fresh_settings(proxy.address)
    cuts: dict[str, list[float]] = {"producers": [], "workers": []}
    with pipeline(settings, tmp_path) as running, SteadyLoad(settings, RATE) as load:
        load.wait_for(10)
        for _ in range(ITERATIONS):
            for name, clients in (("producers", producer_clients), ("workers", worker_clients)):
                load.wait_for(rng.randint(3, 15))
                cut_at = time.monotonic()
                with proxy.cut(clients):
                    # 1 to 4 s, up to the workers' session timeout in the tests (`GROUP_ENV`);
                    # the long form cuts well past it (their groups rebalance when they are back).
                    load.wait_for(rng.randint(10, 40 if ITERATIONS == 1 else 150))
                cuts[name].append(round(time.monotonic() - cut_at, 1))
        load.wait_for(10)
        load.stop()
        wait_for_delivery(running, load.traces)
    outcome = check_outcome(running, load.traces, redelivery_allowed=True)
    assert outcome.dead_letters == []
    record(
        "network cut: producers ↔ broker, workers ↔ broker",
        started,
        **outcome.figures(),
        cut_seconds=cuts,
    )


@pytest.fixture(scope="module")
def bad_input_pipeline(
    broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipeline]:
    settings = fresh_settings(broker.bootstrap_servers)
    log_dir = tmp_path_factory.mktemp("bad-inputs")
    env = {"TRACEBUS_MAX_RECORD_BYTES": str(MAX_RECORD_BYTES)}
    with pipeline(settings, log_dir, stream_env=env) as running:
        yield running


@hypothesis_settings(
    max_examples=2 * ITERATIONS,
    deadline=None,
    database=None,
    phases=[Phase.generate],  # a shrink would re-run the pipeline dozens of times
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(batch=inputs)
def test_bad_records_are_dead_lettered_with_their_reason_and_good_ones_delivered_once(
    bad_input_pipeline: Pipeline, batch: list[Input]
) -> None:
    started = time.monotonic()
    running = bad_input_pipeline
    with SteadyLoad(running.settings, RATE) as load:
        load.wait_for(3)
        send(running.settings, batch)
        load.wait_for(3)
    # Cycles reach Langfuse (spans are stored whatever their parents), not LangSmith.
    good = {i.trace_id: i.observations for i in batch if i.stage is None} | load.traces
    to_langfuse = good | {i.trace_id: i.observations for i in batch if i.stage == "sink:langsmith"}
    wait_for_delivery(running, to_langfuse, good)
    bad = {i.trace_id: i for i in batch if i.stage is not None}

    def letters() -> dict[str, list[DeadLetter]]:
        found: dict[str, list[DeadLetter]] = {}
        for letter in dead_letters(running.settings):
            if letter.key_text in to_langfuse or letter.key_text in bad:
                found.setdefault(letter.key_text, []).append(letter)
        return found

    eventually(lambda: len(letters()) >= len(bad), 120, f"{len(bad)} dead letters")
    found = letters()
    assert set(found) == set(bad), "dead letters for other records than the bad ones"
    for trace_id, item in bad.items():
        [letter] = found[trace_id]
        assert letter.stage == item.stage and item.reason in letter.reason, (item, letter)
    receipts = Counter(
        key.span_id for key, n in running.langfuse.receipts.items() for _ in range(n)
    )
    kinds = {i.trace_id: i.kind for i in batch} | dict.fromkeys(load.traces, "steady load")
    for trace_id, observations in to_langfuse.items():
        sent = {o: receipts[o] for o in observations}
        assert set(sent.values()) == {1}, f"{kinds[trace_id]} {trace_id}: receipts {sent}"
    runs = run_ids(running.langsmith)
    assert {t: runs[t] for t in bad} == dict.fromkeys(bad, 0)
    assert {t: runs[t] for t in good} == {t: len(o) for t, o in good.items()}
    check_memory(running)
    record(
        "bad records (hypothesis)",
        started,
        inputs=dict(Counter(kinds.values())),
        dead_letters=letter_counts([x for xs in found.values() for x in xs]),
    )
