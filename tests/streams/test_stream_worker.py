"""A real stream worker assembles traces from the real broker: completion, enrichment, bad input."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
from conftest import consume, fresh_settings
from stream_helpers import WorkerProcess, of_traces, read_documents, send_raw

import tracebus
from tracebus.config import KafkaSettings
from tracebus.kafka import EmbeddedBroker
from tracebus.schemas import (
    PROJECT_HEADER,
    TraceDocument,
    encode_batch,
    new_observation_id,
    new_trace_id,
)

# The embedded broker takes messages of any size; Kafka refuses those over message.max.bytes.
MAX_DOCUMENT_BYTES = 65_536


@pytest.fixture(scope="module")
def stream(
    broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KafkaSettings]:
    settings = fresh_settings(broker.bootstrap_servers)
    worker = WorkerProcess(
        settings,
        tmp_path_factory.mktemp("stream"),
        TRACEBUS_MAX_DOCUMENT_BYTES=str(MAX_DOCUMENT_BYTES),
    )
    yield settings
    code = worker.stop()
    assert code == 0, worker.log_tail()


@pytest.fixture(scope="module")
def client(stream: KafkaSettings) -> Iterator[tracebus.Client]:
    producer = tracebus.Client(**stream.model_dump(), linger_ms=5)
    yield producer
    producer.close()


def published(stream: KafkaSettings, *trace_ids: str, revisions: int = 1) -> list[TraceDocument]:
    documents = read_documents(stream, of_traces(set(trace_ids), revisions))
    return [d for d in documents if d.trace_id in trace_ids]


def observation_event(trace_id: str, observation_id: str, **fields: object) -> bytes:
    return orjson.dumps(
        {
            "schema_version": 1,
            "type": "observation",
            "event_id": new_observation_id(),
            "trace_id": trace_id,
            "timestamp_unix_nano": 1_700_000_000_000_000_000,
            "observation_id": observation_id,
            "kind": "span",
            "name": "raw",
            "start_time_unix_nano": 1_700_000_000_000_000_000,
            **fields,
        }
    )


def test_a_complete_trace_is_published_with_latency_tokens_and_cost(
    stream: KafkaSettings, client: tracebus.Client
) -> None:
    with client.trace("support-chat", user_id="u-1", session_id="s-1", tags=["beta"]) as root:
        with client.tool("lookup-order", input={"order": 42}) as tool:
            tool.update(output={"status": "shipped"})
        with client.generation("answer", model="gpt-4o", provider="openai") as llm:
            llm.update(
                output="It shipped.",
                completion_start_time=llm.start_ns + 150_000_000,
                usage={"input_tokens": 1_000_000, "output_tokens": 100_000},
            )
            llm.end(llm.start_ns + 400_000_000)
        with client.generation("judge", model="house-model-x", usage={"input_tokens": 5}):
            pass
        with client.generation("billed", model="gpt-4o", cost={"total": 0.5}):
            pass
        root.score_trace("helpfulness", 4)
    assert client.flush(10)

    [document] = published(stream, root.trace_id)
    assert (document.revision, document.part, document.parts) == (1, 1, 1)
    assert document.completed_by == "root_ended"
    assert document.trace.name == "support-chat" and document.trace.user_id == "u-1"
    assert document.root_observation_id == root.id
    by_name = {o.name: o for o in document.observations}
    answer = by_name["answer"]
    assert answer.duration_ms == pytest.approx(400.0)
    assert answer.time_to_first_token_ms == pytest.approx(150.0)
    # gpt-4o in the catalogue: $2.50 per million input tokens, $10 per million output tokens.
    assert answer.cost_source == "catalogue"
    assert answer.cost.input == pytest.approx(2.5) and answer.cost.output == pytest.approx(1.0)
    assert by_name["billed"].cost_source == "reported" and by_name["billed"].cost.total == 0.5
    assert by_name["judge"].cost is None and "unknown_model" in by_name["judge"].flags
    summary = document.summary
    assert summary.usage.input_tokens == 1_000_005 and summary.usage.output_tokens == 100_000
    assert summary.cost.total == pytest.approx(3.5 + 0.5)
    assert summary.observations_by_kind == {"span": 1, "tool": 1, "generation": 3}
    assert summary.unpriced_generations == 1
    assert summary.observation_count == 5
    assert [s.name for s in document.scores] == ["helpfulness"]


def test_an_incomplete_trace_is_published_at_the_idle_timeout_with_flags(
    stream: KafkaSettings, client: tracebus.Client
) -> None:
    remote_parent = new_observation_id()
    trace_id = new_trace_id()
    with client.trace("frontend", traceparent=f"00-{trace_id}-{remote_parent}-01"):
        client.span("never-ends")  # opened, never ended
    assert client.flush(10)
    [document] = published(stream, trace_id)
    assert document.completed_by == "idle_timeout"
    flags = {o.name: o.flags for o in document.observations}
    assert flags["never-ends"] == ["still_open"]
    assert flags["frontend"] == ["orphan"]
    assert document.root_observation_id is None


def test_late_observations_publish_a_new_revision_of_the_whole_trace(
    stream: KafkaSettings, client: tracebus.Client
) -> None:
    with client.trace("batch-job") as root:
        pass
    assert client.flush(10)
    published(stream, root.trace_id)
    with client.span("straggler", parent=root):
        pass
    assert client.flush(10)
    documents = published(stream, root.trace_id, revisions=2)
    assert [d.revision for d in documents] == [1, 2]
    latest = documents[-1]
    assert {o.name: o.flags for o in latest.observations} == {
        "batch-job": [],
        "straggler": ["late"],
    }


def test_a_repeated_event_is_applied_once(stream: KafkaSettings) -> None:
    trace_id, root_id = new_trace_id(), new_observation_id()
    event = observation_event(trace_id, root_id, end_time_unix_nano=1_700_000_000_500_000_000)
    record = encode_batch(trace_id, [event])
    send_raw(stream, [(trace_id.encode(), record), (trace_id.encode(), record)])
    [document] = published(stream, trace_id)
    assert len(document.observations) == 1
    assert document.observations[0].duration_ms == 500.0


def test_end_before_start_is_corrected_and_flagged(stream: KafkaSettings) -> None:
    trace_id, root_id = new_trace_id(), new_observation_id()
    event = observation_event(trace_id, root_id, end_time_unix_nano=1_600_000_000_000_000_000)
    send_raw(stream, [(trace_id.encode(), encode_batch(trace_id, [event]))])
    [document] = published(stream, trace_id)
    observation = document.observations[0]
    assert observation.flags == ["end_before_start"]
    assert observation.end_time_unix_nano == observation.start_time_unix_nano


def test_a_parent_cycle_is_published_without_hanging(stream: KafkaSettings) -> None:
    trace_id, a, b = new_trace_id(), new_observation_id(), new_observation_id()
    events = [
        observation_event(trace_id, a, parent_observation_id=b),
        observation_event(trace_id, b, parent_observation_id=a),
    ]
    send_raw(stream, [(trace_id.encode(), encode_batch(trace_id, events))])
    [document] = published(stream, trace_id)
    assert {o.observation_id for o in document.observations} == {a, b}
    assert document.completed_by == "idle_timeout"


def test_a_trace_over_the_size_limit_is_published_in_parts(
    stream: KafkaSettings, client: tracebus.Client
) -> None:
    with client.trace("bulk") as root:
        for i in range(25):
            with client.span(f"step-{i}"):
                pass
        assert client.flush(10)  # the running trace outgrows the limit: its ended spans go
        for i in range(25, 45):
            with client.span(f"step-{i}"):
                pass
    assert client.flush(10)
    documents = published(stream, root.trace_id)
    assert {d.revision for d in documents} == {1}
    assert [d.part for d in documents] == list(range(1, len(documents) + 1))
    assert documents[-1].parts == len(documents) >= 3
    assert documents[0].parts is None  # published while the trace was still running
    names = [o.name for d in documents for o in d.observations]
    assert sorted(names) == sorted(["bulk", *(f"step-{i}" for i in range(45))])
    assert all(len(d.observations) <= 20 for d in documents)
    for document in documents:
        inside = {o.observation_id for o in document.observations}
        assert root.id in inside or root.id in {a.observation_id for a in document.ancestors}


def test_a_running_trace_left_over_the_limit_when_its_parts_went_out_is_split_again(
    stream: KafkaSettings,
) -> None:
    """Events that arrive while parts are on their way can leave the trace over the limit
    again: it is split then, not when (or if) another event comes."""
    trace_id, root_id = new_trace_id(), new_observation_id()
    steps = [[f"step-{batch}-{i}" for i in range(21)] for batch in range(5)]
    records = []
    for batch, names in enumerate(steps):
        events = [observation_event(trace_id, root_id, name="open-root")] if batch == 0 else []
        events += [
            observation_event(
                trace_id,
                new_observation_id(),
                parent_observation_id=root_id,
                name=name,
                end_time_unix_nano=1_700_000_000_000_001_000,
            )
            for name in names
        ]
        records.append((trace_id.encode(), encode_batch(trace_id, events)))
    send_raw(stream, records)
    documents = published(stream, trace_id)
    split = [o.name for d in documents if d.completed_by == "max_size" for o in d.observations]
    assert sorted(split) == sorted(name for names in steps for name in names)
    [last] = [d for d in documents if d.completed_by != "max_size"]
    assert [(o.name, o.flags) for o in last.observations] == [("open-root", ["still_open"])]


def test_a_finished_trace_over_the_size_limit_is_published_whole_in_parts(
    stream: KafkaSettings, client: tracebus.Client
) -> None:
    with client.trace("finished-bulk") as root:
        for i in range(45):
            client.event(f"e-{i}")
    assert client.flush(10)
    documents = published(stream, root.trace_id)
    assert [(d.part, d.parts, d.completed_by) for d in documents] == [
        (1, 3, "max_size"),
        (2, 3, "max_size"),
        (3, 3, "max_size"),
    ]


def test_a_trace_too_large_for_one_message_is_published_in_parts_that_fit(
    stream: KafkaSettings, client: tracebus.Client
) -> None:
    with client.trace("large") as root:
        for i in range(4):
            with client.retriever(f"search-{i}", output=["passage " * 3_000]):
                pass
        with client.generation("long-prompt", model="gpt-4o", input="q" * 200_000):
            pass
    assert client.flush(10)
    documents = published(stream, root.trace_id)
    assert all(len(d.model_dump_json(exclude_none=True)) <= MAX_DOCUMENT_BYTES for d in documents)
    assert [(d.part, d.parts) for d in documents] == [
        (part, len(documents)) for part in range(1, len(documents) + 1)
    ]
    by_name = {o.name: o for d in documents for o in d.observations}
    assert sorted(by_name) == sorted(["large", "long-prompt", *(f"search-{i}" for i in range(4))])
    assert all(by_name[f"search-{i}"].truncated is None for i in range(4))
    [cut] = by_name["long-prompt"].truncated or []
    assert (cut.field, cut.original_bytes) == ("input", 200_002)


def test_bad_records_are_dead_lettered_with_their_reason_and_the_worker_goes_on(
    stream: KafkaSettings, client: tracebus.Client
) -> None:
    trace_id = new_trace_id()
    bad = [
        b'{"schema_version": 1, "trace_id": ',
        b'{"schema_version": 9, "trace_id": "%s", "events": []}' % trace_id.encode(),
        encode_batch(trace_id, [observation_event(trace_id, "not-an-id")]),
    ]
    send_raw(stream, [(trace_id.encode(), value) for value in bad])
    with client.trace("after-bad-input") as root:
        pass
    assert client.flush(10)
    published(stream, root.trace_id)
    letters = consume(stream.bootstrap_servers, stream.dead_letter_topic, lambda r: len(r) >= 3)
    reasons = [dict(r.headers)["tracebus-reason"].decode() for r in letters]
    assert [r.value for r in letters] == bad
    assert "malformed JSON" in reasons[0]
    assert "unsupported schema_version 9" in reasons[1]
    assert "events[0].observation_id: an observation id is 16 lowercase hex" in reasons[2]


def test_a_trace_names_the_project_its_records_were_stamped_with_and_so_do_its_documents_records(
    stream: KafkaSettings, client: tracebus.Client
) -> None:
    shop = tracebus.Client(**stream.model_dump(), linger_ms=5, project="shop")
    try:
        with shop.trace("of-shop") as stamped:
            pass
        assert shop.flush(10)
    finally:
        shop.close()
    with client.trace("of-no-project") as unstamped:
        pass
    assert client.flush(10)
    documents = published(stream, stamped.trace_id, unstamped.trace_id)
    assert {d.trace_id: d.project for d in documents} == {
        stamped.trace_id: "shop",
        unstamped.trace_id: None,
    }
    # Sinks route by the header, without decoding the document.
    ours = {stamped.trace_id.encode(), unstamped.trace_id.encode()}
    records = consume(
        stream.bootstrap_servers,
        stream.traces_topic,
        lambda records: ours <= {r.key for r in records},
    )
    assert {r.key: dict(r.headers).get(PROJECT_HEADER) for r in records if r.key in ours} == {
        stamped.trace_id.encode(): b"shop",
        unstamped.trace_id.encode(): None,
    }


def test_a_trace_takes_its_project_from_its_first_stamped_record_and_refuses_other_projects(
    stream: KafkaSettings,
) -> None:
    trace_id, root, intruder = new_trace_id(), new_observation_id(), new_observation_id()
    helper = new_observation_id()
    key = trace_id.encode()

    def send(project: bytes | None, event: bytes) -> None:
        headers = None if project is None else [(PROJECT_HEADER, project)]
        send_raw(stream, [(key, encode_batch(trace_id, [event]))], headers)

    # A service writing to Kafka itself (no project) starts the trace; the gateway's records
    # (a project) and the service's again make up the rest.
    send(None, observation_event(trace_id, root))
    send(b"shop", observation_event(trace_id, helper, parent_observation_id=root))
    send(b"ops", observation_event(trace_id, intruder, parent_observation_id=root))
    send(b"\xff", observation_event(trace_id, new_observation_id()))
    ended = 1_700_000_001_000_000_000
    send(b"shop", observation_event(trace_id, helper, end_time_unix_nano=ended))
    send(None, observation_event(trace_id, root, end_time_unix_nano=ended))
    [document] = published(stream, trace_id)
    assert document.project == "shop"
    assert {o.observation_id for o in document.observations} == {root, helper}
    letters = consume(
        stream.bootstrap_servers,
        stream.dead_letter_topic,
        lambda records: len([r for r in records if r.key == key]) >= 2,
    )
    other, undecodable = [dict(r.headers) for r in letters if r.key == key]
    assert other["tracebus-reason"].decode() == (
        f"trace {trace_id} belongs to project 'shop', not 'ops'"
    )
    assert other[PROJECT_HEADER] == b"ops"  # a redrive stamps the record as it came
    assert undecodable["tracebus-reason"].decode() == (
        "headers.tracebus-project: must be UTF-8 text of 1 to 1000 characters"
    )


def test_a_trace_published_without_a_project_keeps_going_where_its_first_revision_went(
    stream: KafkaSettings,
) -> None:
    """A stamped record arriving late joins the next revision, which does not take the project:
    otherwise revision 1 would stay at one destination and revision 2 reach another."""
    trace_id, root, late = new_trace_id(), new_observation_id(), new_observation_id()
    key = trace_id.encode()
    ended = 1_700_000_001_000_000_000
    root_event = observation_event(trace_id, root, end_time_unix_nano=ended)
    send_raw(stream, [(key, encode_batch(trace_id, [root_event]))])
    [first] = published(stream, trace_id)
    late_event = observation_event(
        trace_id, late, parent_observation_id=root, end_time_unix_nano=ended
    )
    send_raw(stream, [(key, encode_batch(trace_id, [late_event]))], [(PROJECT_HEADER, b"shop")])
    documents = published(stream, trace_id, revisions=2)
    second = max(documents, key=lambda d: d.revision)
    assert (first.project, second.revision, second.project) == (None, 2, None)
    assert {o.observation_id for o in second.observations} == {root, late}
    records = consume(
        stream.bootstrap_servers,
        stream.traces_topic,
        lambda records: len([r for r in records if r.key == key]) >= 2,
    )
    assert [dict(r.headers).get(PROJECT_HEADER) for r in records if r.key == key] == [None, None]


def test_nothing_is_published_twice_at_the_same_revision(stream: KafkaSettings) -> None:
    documents = read_documents(stream, lambda d: len(d) > 0)
    keys = [(d.trace_id, d.revision, d.part) for d in documents]
    assert len(keys) == len(set(keys))


def update_event(trace_id: str, observation_id: str, at: int, **fields: object) -> bytes:
    return orjson.dumps(
        {
            "schema_version": 1,
            "type": "observation_update",
            "event_id": new_observation_id(),
            "trace_id": trace_id,
            "timestamp_unix_nano": at,
            "observation_id": observation_id,
            **fields,
        }
    )


def test_an_update_overrides_the_created_observation_whatever_order_they_arrive_in(
    stream: KafkaSettings,
) -> None:
    trace_id, root_id = new_trace_id(), new_observation_id()
    created = observation_event(trace_id, root_id, name="created", output="first")
    update = update_event(
        trace_id,
        root_id,
        at=1_700_000_000_900_000_000,
        end_time_unix_nano=1_700_000_000_800_000_000,
        output="final",
        level="ERROR",
    )
    send_raw(stream, [(trace_id.encode(), encode_batch(trace_id, [update, created]))])
    [document] = published(stream, trace_id)
    [observation] = document.observations
    assert observation.name == "created"
    assert (observation.output, observation.level) == ("final", "ERROR")
    assert observation.duration_ms == 800.0
    assert observation.flags == []


def test_an_observation_known_only_from_updates_is_published_flagged_incomplete(
    stream: KafkaSettings,
) -> None:
    trace_id, root_id = new_trace_id(), new_observation_id()
    end = 1_700_000_000_800_000_000
    update = update_event(trace_id, root_id, at=end, end_time_unix_nano=end, output="orphaned")
    send_raw(stream, [(trace_id.encode(), encode_batch(trace_id, [update]))])
    [document] = published(stream, trace_id)
    [observation] = document.observations
    assert (observation.kind, observation.name) == ("span", "unnamed")
    assert observation.output == "orphaned"
    assert observation.start_time_unix_nano == end
    assert observation.flags == ["incomplete"]
