"""The stream's pure logic: record validation, documents as dicts, and state rebuilt from the
table. The worker tests cover the same paths end to end; these pin the equivalences the fast
paths rely on (pydantic is the reference)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tracebus.schemas import (
    ObservationEvent,
    SchemaError,
    TraceDocument,
    decode_batch,
    encode_batch,
    new_observation_id,
    new_trace_id,
)
from tracebus.streams.assembly import (
    TraceState,
    apply_events,
    build_documents,
    forget_content,
    looks_complete,
    mark_published,
    materialize,
    rebuild,
    record_key,
    snapshot_key,
    status_key,
)
from tracebus.streams.pricing import PriceBook
from tracebus.streams.validation import parse_record

T0 = 1_700_000_000_000_000_000
MS = 1_000_000
PRICING = PriceBook()
MAX_BYTES = 1_000_000


def event(trace_id: str, event_type: str = "observation", **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "schema_version": 1,
        "type": event_type,
        "event_id": new_observation_id(),
        "trace_id": trace_id,
        "timestamp_unix_nano": T0,
    }
    if event_type == "observation":
        base |= {"observation_id": new_observation_id(), "kind": "span", "name": "step"}
        base |= {"start_time_unix_nano": T0}
    return base | fields


def record(trace_id: str, *events: dict[str, Any]) -> bytes:
    return encode_batch(trace_id, [orjson.dumps(e) for e in events])


def a_trace() -> tuple[str, list[bytes]]:
    """A trace in three records: a generation priced from the catalogue, an update, a score."""
    trace_id = new_trace_id()
    root, llm = new_observation_id(), new_observation_id()
    usage = {"input_tokens": 1000, "input_cache_read_tokens": 200, "output_tokens": 50}
    return trace_id, [
        record(
            trace_id,
            event(
                trace_id,
                observation_id=llm,
                parent_observation_id=root,
                kind="generation",
                name="llm",
                model="gpt-4o",
                provider="openai",
                end_time_unix_nano=T0 + 400 * MS,
                completion_start_time_unix_nano=T0 + 100 * MS,
                usage=usage,
                model_parameters={"temperature": 0.2, "stop": None},
                input=[{"role": "user", "content": "hi", "name": None}],
            ),
            event(trace_id, "score", score_id="s1", name="quality", value=4, data_type="NUMERIC"),
        ),
        record(trace_id, event(trace_id, observation_id=root, name="root", level="WARNING")),
        record(
            trace_id,
            event(
                trace_id,
                "observation_update",
                observation_id=root,
                timestamp_unix_nano=T0 + 500 * MS,
                end_time_unix_nano=T0 + 500 * MS,
                cost={"total": 0.5},
            ),
            event(trace_id, "trace", name="chat", tags=["a"], metadata={"k": None}),
        ),
    ]


def assembled(records: list[bytes], project: str | None = None) -> TraceState:
    state: TraceState | None = None
    for offset, value in enumerate(records):
        trace_id, events, _ = parse_record(value, 1_000_000)
        state = state or TraceState(trace_id, 3, project)
        if apply_events(state, events, len(value), T0 + offset).applied:
            state.records.append((record_key(trace_id, 3, offset, T0 + offset, project), value))
    assert state is not None
    return state


VALID = [
    {},
    {"parent_observation_id": None, "metadata": {"a": [1, None]}, "truncated": []},
    {"usage": {"input_tokens": 3, "other": {"audio_seconds": 2}}, "cost": {"input": 1}},
]
# Records pydantic reads although the fast check does not: lax numbers, defaults spelled out.
LAX = [
    {"timestamp_unix_nano": "1700000000000000000"},
    {"start_time_unix_nano": 1.0},
    {"usage": {"input_tokens": "12"}},
]
INVALID = [
    {"observation_id": "not-an-id"},
    {"kind": "robot"},
    {"name": ""},
    {"unknown_field": 1},
    {"schema_version": 2},
    {"start_time_unix_nano": -1},
    {"usage": {"input_tokens": -1}},
    {"model_parameters": {"nested": {"a": 1}}},
    {"trace_id": "0" * 32},
    {"event_id": "has space"},
    {"level": None},
]


# Values of every JSON type and edge, tried in each observation field in turn.
ODD_VALUES = [
    None,
    -1,
    0,
    1.5,
    float("inf"),
    True,
    "",
    "x",
    "x" * 1001,
    "0" * 16,
    "generation",
    "ERROR",
    [],
    [1],
    [{"field": "input", "original_bytes": 2, "kept_bytes": 1}],
    {},
    {"a": 1},
    {"input": -1},
    {"input_tokens": 3},
    {"other": {"a": 1.5}},
]


@pytest.mark.parametrize("field", sorted(ObservationEvent.model_fields))
def test_what_the_fast_check_accepts_in_any_observation_field_pydantic_accepts_as_sent(
    field: str,
) -> None:
    """The fast path checks observations field by field: a field it does not know, or checks
    more loosely than the schema, would let through what pydantic refuses or changes."""
    for odd in ODD_VALUES:
        trace_id = new_trace_id()
        try:
            value = record(trace_id, event(trace_id) | {field: odd})
        except ValueError:
            continue  # orjson does not write it (infinity)
        try:
            _, events, as_sent = parse_record(value, 1_000_000)
        except SchemaError:
            continue
        if as_sent:
            expected = decode_batch(value).events[0].model_dump(mode="json", exclude_none=True)
            if "level" not in events[0]:
                del expected["level"]  # the default, which documents fill in
            assert {k: v for k, v in events[0].items() if v is not None} == expected, (field, odd)


@pytest.mark.parametrize("field", ["input", "output", "metadata"])
def test_a_deeply_nested_record_pydantic_reads_is_accepted(field: str) -> None:
    value = nested(197, field)
    decode_batch(value)
    assert parse_record(value, 1_000_000)[2]


@pytest.mark.parametrize("fields", VALID + LAX)
def test_a_record_pydantic_accepts_is_accepted_with_the_same_events(fields: dict) -> None:
    trace_id = new_trace_id()
    value = record(trace_id, event(trace_id) | fields)
    parsed_id, events, as_sent = parse_record(value, 1_000_000)
    expected = decode_batch(value).events[0].model_dump(mode="json", exclude_none=True)
    assert parsed_id == trace_id
    assert as_sent == (fields in VALID)
    assert {k: v for k, v in events[0].items() if v is not None and k != "level"} == {
        k: v for k, v in expected.items() if k != "level"
    }


@pytest.mark.parametrize("fields", INVALID)
def test_a_record_pydantic_rejects_is_rejected_with_pydantics_reasons(fields: dict) -> None:
    trace_id = new_trace_id()
    value = record(trace_id, event(trace_id) | fields)
    with pytest.raises(SchemaError) as expected:
        decode_batch(value)
    with pytest.raises(SchemaError) as got:
        parse_record(value, 1_000_000)
    assert str(got.value) == str(expected.value)


def nested(depth: int, field: str = "input") -> bytes:
    """A valid record but for a free JSON field nested `depth` levels deep (objects for
    metadata, which must be one, lists for the others)."""
    trace_id = new_trace_id()
    head, tail = orjson.dumps(event(trace_id, **{field: 0})).split(b'"%s":0' % field.encode())
    opening, closing = (b'{"a":', b"}") if field == "metadata" else (b"[", b"]")
    deep = opening * depth + b"0" + closing * depth
    return encode_batch(trace_id, [head + b'"%s":' % field.encode() + deep + tail])


@pytest.mark.parametrize(
    "value",
    [
        b"{",
        b"[]",
        b'{"schema_version":1,"trace_id":"%s","events":[]}' % new_trace_id().encode(),
        # With the record's own 3 levels, deeper than pydantic's parser reads.
        nested(198),
        nested(198, "output"),
        nested(198, "metadata"),
    ],
)
def test_a_malformed_record_is_rejected_with_pydantics_reasons(value: bytes) -> None:
    with pytest.raises(SchemaError) as expected:
        decode_batch(value)
    with pytest.raises(SchemaError) as got:
        parse_record(value, 1_000_000)
    assert str(got.value) == str(expected.value)


@pytest.mark.parametrize("project", [None, "shop"])
def test_documents_are_the_json_pydantic_would_write(project: str | None) -> None:
    _, records = a_trace()
    state = assembled(records, project)
    assert looks_complete(state)
    [built] = build_documents(
        state, materialize(state), "root_ended", PRICING, T0, 20, MAX_BYTES, revision=1
    )
    document = built.body
    model = TraceDocument.model_validate(document)
    assert built.data == model.model_dump_json(exclude_none=True).encode()
    assert model.project == project
    by_name = {o["name"]: o for o in document["observations"]}
    assert by_name["llm"]["cost_source"] == "catalogue"
    assert by_name["root"]["cost_source"] == "reported"
    assert document["scores"][0]["value"] == 4.0


def test_documents_of_parts_are_the_json_pydantic_would_write() -> None:
    trace_id = new_trace_id()
    root = new_observation_id()
    children = [
        event(trace_id, observation_id=new_observation_id(), parent_observation_id=root)
        for _ in range(5)
    ]
    state = assembled([record(trace_id, event(trace_id, observation_id=root), *children)])
    documents = build_documents(
        state, materialize(state), "idle_timeout", PRICING, T0, 2, MAX_BYTES, revision=1
    )
    assert [d.body["part"] for d in documents] == [1, 2, 3]
    for document in documents:
        model = TraceDocument.model_validate(document.body)
        assert document.data == model.model_dump_json(exclude_none=True).encode()


def a_wide_trace(trace_id: str, children: int, input_bytes: int) -> list[bytes]:
    """A finished root with `children` ended children of `input_bytes` of input each, a score
    and trace attributes, in a record per observation."""
    root = new_observation_id()
    ended = {"end_time_unix_nano": T0 + MS}
    return [
        record(
            trace_id,
            event(trace_id, observation_id=root, name="root", **ended),
            event(trace_id, "score", score_id="s1", name="quality", value=1, data_type="NUMERIC"),
            event(trace_id, "trace", name="wide"),
        ),
        *(
            record(
                trace_id,
                event(trace_id, parent_observation_id=root, input="x" * input_bytes, **ended),
            )
            for _ in range(children)
        ),
    ]


def built_within(max_bytes: int, records: list[bytes]) -> list[TraceDocument]:
    """The trace's documents built with `max_bytes`, checked: each fits and is the JSON
    pydantic would write."""
    state = assembled(records)
    documents = build_documents(
        state, materialize(state), "root_ended", PRICING, T0, 20, max_bytes, revision=1
    )
    models = []
    for document in documents:
        assert len(document.data) <= max_bytes
        model = TraceDocument.model_validate_json(document.data)
        assert document.data == model.model_dump_json(exclude_none=True).encode()
        assert orjson.loads(document.data) == document.body
        models.append(model)
    return models


def test_a_trace_whose_document_would_exceed_the_byte_limit_is_published_in_parts_that_fit() -> (
    None
):
    trace_id = new_trace_id()
    records = a_wide_trace(trace_id, children=11, input_bytes=10_000)
    assert sum(map(len, records)) > 3 * 32_768
    documents = built_within(32_768, records)
    assert len(documents) >= 4
    assert [(d.part, d.parts) for d in documents] == [
        (part, len(documents)) for part in range(1, len(documents) + 1)
    ]
    observations = [o for d in documents for o in d.observations]
    assert len(observations) == len({o.observation_id for o in observations}) == 12
    assert all(o.truncated is None for o in observations)
    assert [len(d.scores) for d in documents] == [1] + [0] * (len(documents) - 1)
    assert observations[0].name == "root"  # parents first, then in parts of their own
    for document in documents[1:]:
        assert [a.observation_id for a in document.ancestors] == [observations[0].observation_id]


def test_a_score_goes_in_the_part_of_its_observation_and_the_traces_own_in_the_first() -> None:
    trace_id = new_trace_id()
    records = a_wide_trace(trace_id, children=11, input_bytes=3_000)
    children = [orjson.loads(r)["events"][0]["observation_id"] for r in records[1:]]
    # Scores whose comments alone would not fit in one part.
    records += [
        record(
            trace_id,
            event(
                trace_id,
                "score",
                score_id=f"review-{n}",
                observation_id=child,
                name="review",
                value=1,
                data_type="NUMERIC",
                comment="c" * 5_000,
            ),
        )
        for n, child in enumerate(children)
    ]
    documents = built_within(32_768, records)
    assert len(documents) > 2
    assert "s1" in {s.score_id for s in documents[0].scores}
    for document in documents:
        inside = {o.observation_id for o in document.observations}
        reviews = [s for s in document.scores if s.score_id != "s1"]
        assert {s.observation_id for s in reviews} == inside & set(children)
    assert sum(len(d.scores) for d in documents) == 1 + len(children)


def test_an_observation_too_large_for_a_document_alone_has_its_fields_cut_to_fit() -> None:
    trace_id = new_trace_id()
    [root_record, large] = a_wide_trace(trace_id, children=1, input_bytes=100_000)
    documents = built_within(65_536, [root_record, large])
    cut = next(o for d in documents for o in d.observations if o.name != "root")
    assert cut.truncated is not None
    [truncation] = cut.truncated
    assert (truncation.field, truncation.original_bytes) == ("input", 100_002)
    assert isinstance(cut.input, str)
    assert cut.input.endswith("…[truncated by tracebus: 100002 bytes]")


def test_trace_attributes_in_a_document_too_large_are_cut_to_a_quarter_of_it() -> None:
    trace_id = new_trace_id()
    records = a_wide_trace(trace_id, children=1, input_bytes=10_000)
    records.append(record(trace_id, event(trace_id, "trace", input="y" * 60_000)))
    [document] = built_within(65_536, records)
    assert document.trace.name == "wide"
    assert len(orjson.dumps(document.trace.model_dump(exclude_none=True))) <= 65_536 // 4
    assert isinstance(document.trace.input, str)
    assert document.trace.input.endswith("…[truncated by tracebus: 60002 bytes]")


def table_of(state: TraceState) -> list[tuple[bytes, bytes]]:
    entries = [(status_key(state.trace_id), state.status_mark()), *state.records]
    if state.snapshot is not None:
        entries.append((snapshot_key(state.trace_id), state.snapshot))
    return entries


def same_state(rebuilt: TraceState, live: TraceState) -> None:
    for name in TraceState.__slots__:
        assert getattr(rebuilt, name) == getattr(live, name), name


# Project names are free text: one with the table keys' separator in it.
PROJECTS = [None, "team/shop"]


@pytest.mark.parametrize("project", PROJECTS)
def test_a_state_is_rebuilt_from_its_table_entries(project: str | None) -> None:
    _, records = a_trace()
    live = assembled([*records, records[0]], project)  # the repeated record adds nothing
    assert len(live.records) == 3
    [rebuilt] = rebuild(reversed(table_of(live))).values()
    same_state(rebuilt, live)
    assert materialize(rebuilt) == materialize(live)


@pytest.mark.parametrize("project", PROJECTS)
def test_a_state_that_published_parts_is_rebuilt_from_its_snapshot_and_later_records(
    project: str | None,
) -> None:
    _, records = a_trace()
    live = assembled(records[:1], project)  # the generation ended, the root is still running
    documents = build_documents(
        live, materialize(live), "max_size", PRICING, T0, 20, MAX_BYTES, final=False, revision=1
    )
    live.published_ids = [o["observation_id"] for d in documents for o in d.body["observations"]]
    live.parts_published, live.revision, live.status = 1, 1, "publishing"
    dropped = mark_published(live, T0, final=False)
    assert len(dropped) == 1 and live.snapshot is not None and not live.records
    later = assembled(records, project)
    for offset, (key, value) in enumerate(later.records[1:], start=1):
        _, events, _ = parse_record(value, 1_000_000)
        apply_events(live, events, len(value), T0 + offset)
        live.records.append((key, value))
    [rebuilt] = rebuild(table_of(live)).values()
    same_state(rebuilt, live)
    content = materialize(rebuilt)
    assert set(content.observations) == {o["observation_id"] for o in later_roots(records)}
    assert rebuilt.moved_out


def test_a_rebuilt_trace_belongs_to_the_project_of_its_first_stamped_record() -> None:
    trace_id, records = a_trace()
    projects = [None, "shop", None]
    entries = [
        (record_key(trace_id, 3, offset, T0 + offset, project), value)
        for offset, (project, value) in enumerate(zip(projects, records, strict=True))
    ]
    [rebuilt] = rebuild(entries).values()
    assert rebuilt.project == "shop" and len(rebuilt.records) == 3


def test_a_forgotten_trace_keeps_its_project_beside_its_revision() -> None:
    _, records = a_trace()
    live = assembled(records, "shop")
    live.status, live.revision = "published", 2
    forget_content(live)
    [rebuilt] = rebuild([(status_key(live.trace_id), live.status_mark())]).values()
    assert (rebuilt.project, rebuilt.revision) == ("shop", 2)


def later_roots(records: list[bytes]) -> list[dict[str, Any]]:
    """The observations of the records after the first (the root and its update)."""
    return [
        e
        for value in records[1:]
        for e in orjson.loads(value)["events"]
        if e["type"].startswith("observation")
    ]
