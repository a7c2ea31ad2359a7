"""How a complete trace becomes LangSmith runs and feedback (the pure mapping, no HTTP)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from documents import MS, ROOT, T0, TRACE_ID, document, observation, score, summarize

from tracebus.schemas import TraceDocument
from tracebus.schemas.models import Cost, Usage
from tracebus.schemas.traces import Observation, ObservationRef, TraceAttributes
from tracebus.sinks.langsmith import (
    RootKind,
    TreeError,
    feedback_uuid,
    langsmith_trace,
    place_runs,
    run_uuid,
    trace_uuid,
    usage_metadata,
)

PROJECT = "tracebus-tests"


def runs_by_observation(doc: TraceDocument) -> dict[str, dict[str, Any]]:
    """The runs of the observations of `doc`, by observation id (a synthetic root has none)."""
    runs = langsmith_trace(doc, project=PROJECT).runs
    return {
        run["extra"]["metadata"]["tracebus_observation_id"]: run
        for run in runs
        if "tracebus_observation_id" in run["extra"]["metadata"]
    }


CHILD, GRANDCHILD = "b7ad6b7169203331", "1111111111111111"


# -- ids -------------------------------------------------------------------------------------


def test_the_trace_id_is_the_w3c_trace_id_read_as_a_uuid_and_is_the_root_run_id() -> None:
    assert trace_uuid(TRACE_ID) == uuid.UUID("4bf92f35-77b3-4da6-a3ce-929d0e0e4736")
    runs = runs_by_observation(document(observation(ROOT), observation(CHILD, ROOT)))
    assert runs[ROOT]["id"] == runs[ROOT]["trace_id"] == str(trace_uuid(TRACE_ID))
    assert runs[CHILD]["trace_id"] == str(trace_uuid(TRACE_ID))


def test_other_run_ids_are_uuid7_stamped_with_the_start_ms_and_stable_across_replays() -> None:
    start = T0 + 1234 * MS + 999
    run_id = run_uuid(TRACE_ID, CHILD, start)
    assert run_id.version == 7
    assert run_id.variant == uuid.RFC_4122
    assert run_id.int >> 80 == (start // MS)  # the 48-bit unix ms of the observation's start
    assert run_uuid(TRACE_ID, CHILD, start) == run_id
    assert run_uuid(TRACE_ID, GRANDCHILD, start) != run_id
    assert run_uuid("0" * 31 + "1", CHILD, start) != run_id  # span ids are only unique per trace


def test_feedback_ids_are_stable_uuids_of_trace_and_score_id() -> None:
    assert feedback_uuid(TRACE_ID, "score-1") == feedback_uuid(TRACE_ID, "score-1")
    assert feedback_uuid(TRACE_ID, "score-1") != feedback_uuid(TRACE_ID, "score-2")
    assert feedback_uuid(TRACE_ID, "score-1") != feedback_uuid("1" * 32, "score-1")


# -- tree and dotted order -------------------------------------------------------------------


def test_dotted_order_is_each_start_time_then_run_id_joined_from_the_root() -> None:
    doc = document(
        observation(ROOT, start_ms=0.001),
        observation(CHILD, ROOT, start_ms=5.5),
        observation(GRANDCHILD, CHILD, start_ms=7),
    )
    runs = runs_by_observation(doc)
    root_id, child_id = trace_uuid(TRACE_ID), run_uuid(TRACE_ID, CHILD, T0 + 5_500_000)
    grandchild_id = run_uuid(TRACE_ID, GRANDCHILD, T0 + 7 * MS)
    assert runs[ROOT]["dotted_order"] == f"20260101T000000000001Z{root_id}"
    assert runs[CHILD]["dotted_order"] == (
        f"20260101T000000000001Z{root_id}.20260101T000000005500Z{child_id}"
    )
    assert runs[GRANDCHILD]["dotted_order"] == (
        f"{runs[CHILD]['dotted_order']}.20260101T000000007000Z{grandchild_id}"
    )
    assert runs[GRANDCHILD]["parent_run_id"] == str(child_id)
    assert "parent_run_id" not in runs[ROOT]
    assert runs[CHILD]["start_time"] == datetime(2026, 1, 1, 0, 0, 0, 5500, tzinfo=UTC)


def test_a_child_starting_before_its_parent_is_placed_at_the_parents_start() -> None:
    doc = document(observation(ROOT, start_ms=10, end_ms=20), observation(CHILD, ROOT, start_ms=9))
    runs = runs_by_observation(doc)
    child_segment = runs[CHILD]["dotted_order"].split(".")[1]
    assert child_segment.startswith("20260101T000000010000Z")
    assert runs[CHILD]["start_time"] == runs[ROOT]["start_time"]
    # The id still comes from the observation's own start, so it does not move with the parent.
    assert runs[CHILD]["id"] == str(run_uuid(TRACE_ID, CHILD, T0 + 9 * MS))


def test_runs_come_parents_first() -> None:
    doc = document(
        observation(GRANDCHILD, CHILD, name="grandchild"),
        observation(CHILD, ROOT, name="child"),
        observation(ROOT, name="root"),
    )
    names = [run["name"] for run in langsmith_trace(doc, project=PROJECT).runs]
    assert names == ["root", "child", "grandchild"]


def test_a_later_part_places_its_runs_with_its_ancestors_exactly_like_the_whole_trace() -> None:
    root, child = observation(ROOT, start_ms=1), observation(CHILD, ROOT, start_ms=2)
    grandchild = observation(GRANDCHILD, CHILD, start_ms=3)
    whole = runs_by_observation(document(root, child, grandchild))
    part_two = document(
        grandchild,
        part=2,
        parts=2,
        root_observation_id=ROOT,
        ancestors=[
            ObservationRef(observation_id=ROOT, start_time_unix_nano=root.start_time_unix_nano),
            ObservationRef(
                observation_id=CHILD,
                parent_observation_id=ROOT,
                start_time_unix_nano=child.start_time_unix_nano,
            ),
        ],
    )
    alone = runs_by_observation(part_two)
    assert list(alone) == [GRANDCHILD]
    assert alone[GRANDCHILD]["dotted_order"] == whole[GRANDCHILD]["dotted_order"]
    assert alone[GRANDCHILD]["parent_run_id"] == whole[CHILD]["id"]


# -- orphans and missing roots ---------------------------------------------------------------

MISSING, ALSO_MISSING = "9999999999999999", "8888888888888888"


def test_an_orphan_hangs_under_the_root_run_and_names_the_parent_that_never_came() -> None:
    doc = document(
        observation(ROOT, start_ms=1),
        observation(CHILD, MISSING, start_ms=2, flags=["orphan"]),
        observation(GRANDCHILD, CHILD, start_ms=3),
    )
    runs = runs_by_observation(doc)
    orphan = runs[CHILD]
    assert orphan["parent_run_id"] == runs[ROOT]["id"] == str(trace_uuid(TRACE_ID))
    assert orphan["dotted_order"] == (
        f"{runs[ROOT]['dotted_order']}.20260101T000000002000Z{orphan['id']}"
    )
    metadata = orphan["extra"]["metadata"]
    assert metadata["tracebus_missing_parent"] == MISSING
    assert metadata["tracebus_attached_to_root"] is True
    assert metadata["tracebus_flags"] == ["orphan"]
    # Below the orphan, the tree is the app's own.
    assert runs[GRANDCHILD]["parent_run_id"] == orphan["id"]
    for key in ("tracebus_missing_parent", "tracebus_attached_to_root"):
        assert key not in runs[GRANDCHILD]["extra"]["metadata"]
        assert key not in runs[ROOT]["extra"]["metadata"]


def test_a_trace_of_only_orphans_gets_a_synthetic_root_run_spanning_the_trace() -> None:
    trace = TraceAttributes(
        name="support-chat", tags=["beta"], input={"q": 1}, output="done", user_id="u-7"
    )
    doc = document(
        observation(CHILD, MISSING, start_ms=5, end_ms=20, flags=["orphan"]),
        observation(GRANDCHILD, ALSO_MISSING, start_ms=2, end_ms=30, flags=["orphan"]),
        trace=trace,
        scores=[score("s-1", None, 0.5, "NUMERIC")],
    )
    trace_run = langsmith_trace(doc, project=PROJECT)
    root, *others = trace_run.runs
    root_id = str(trace_uuid(TRACE_ID))
    assert root["id"] == root["trace_id"] == root_id
    assert "parent_run_id" not in root
    assert root["dotted_order"] == f"20260101T000000002000Z{root_id}"
    assert root["name"] == "support-chat"
    assert root["run_type"] == "chain"
    assert root["session_name"] == PROJECT
    assert root["start_time"] == datetime(2026, 1, 1, 0, 0, 0, 2000, tzinfo=UTC)
    assert root["end_time"] == datetime(2026, 1, 1, 0, 0, 0, 30000, tzinfo=UTC)
    assert root["inputs"] == {"q": 1}
    assert root["outputs"] == {"output": "done"}
    assert root["tags"] == ["beta"]
    assert root["extra"]["metadata"]["tracebus_synthetic_root"] is True
    assert root["extra"]["metadata"]["user_id"] == "u-7"
    assert {run["extra"]["metadata"]["tracebus_missing_parent"] for run in others} == {
        MISSING,
        ALSO_MISSING,
    }
    assert {run["parent_run_id"] for run in others} == {root_id}
    assert all(run["dotted_order"].startswith(f"{root['dotted_order']}.") for run in others)
    (feedback,) = trace_run.feedback
    assert feedback["run_id"] == root_id  # a trace score goes to the synthetic root


def test_without_a_trace_name_the_synthetic_root_is_called_trace() -> None:
    doc = document(observation(CHILD, MISSING))
    assert langsmith_trace(doc, project=PROJECT).runs[0]["name"] == "trace"


def test_two_observations_without_a_parent_hang_under_a_synthetic_root() -> None:
    doc = document(observation(ROOT, start_ms=1), observation(CHILD, start_ms=4))
    tree = place_runs(doc)
    assert tree.root_kind == RootKind.SYNTHETIC
    runs = runs_by_observation(doc)
    for observation_id in (ROOT, CHILD):
        assert runs[observation_id]["parent_run_id"] == str(trace_uuid(TRACE_ID))
        assert runs[observation_id]["id"] != str(trace_uuid(TRACE_ID))
        assert runs[observation_id]["extra"]["metadata"]["tracebus_attached_to_root"] is True
        assert "tracebus_missing_parent" not in runs[observation_id]["extra"]["metadata"]


def test_a_declared_root_takes_in_the_other_observations_without_a_parent() -> None:
    doc = document(observation(ROOT), observation(CHILD, start_ms=3), root_observation_id=ROOT)
    runs = runs_by_observation(doc)
    assert runs[ROOT]["id"] == str(trace_uuid(TRACE_ID))
    assert runs[CHILD]["parent_run_id"] == runs[ROOT]["id"]
    assert runs[CHILD]["extra"]["metadata"]["tracebus_attached_to_root"] is True


def test_a_part_whose_root_is_in_another_part_hangs_its_orphans_under_that_root() -> None:
    # Part 1 holds the root, which starts the trace; part 2 holds only an orphan, so the root is
    # not among its ancestors: its run is referred to, not sent again.
    root, orphan = observation(ROOT, end_ms=50), observation(CHILD, MISSING, start_ms=5)
    shared = {"parts": 2, "root_observation_id": ROOT, "summary": summarize(root, orphan)}
    part_one, part_two = document(root, part=1, **shared), document(orphan, part=2, **shared)
    assert place_runs(part_two).root_kind == RootKind.ELSEWHERE
    (run,) = langsmith_trace(part_two, project=PROJECT).runs
    (part_one_root,) = langsmith_trace(part_one, project=PROJECT).runs
    assert run["parent_run_id"] == part_one_root["id"]
    assert run["dotted_order"].startswith(f"{part_one_root['dotted_order']}.")
    assert run["extra"]["metadata"]["tracebus_missing_parent"] == MISSING


def test_without_a_declared_root_the_one_ancestor_without_a_parent_is_the_root() -> None:
    root = ObservationRef(observation_id=ROOT, start_time_unix_nano=T0)
    part = document(observation(CHILD, ROOT, start_ms=1), ancestors=[root], part=2)
    tree = place_runs(part)
    assert tree.root_kind == RootKind.ELSEWHERE
    assert tree.placements[CHILD].parent_run_id == trace_uuid(TRACE_ID)
    assert list(runs_by_observation(part)) == [CHILD]  # the root is sent by its own part


def test_a_whole_trace_without_the_root_it_declares_is_placed_as_if_none_was_declared() -> None:
    doc = document(observation(CHILD), root_observation_id=ROOT, part=1, parts=1)
    tree = place_runs(doc)
    assert tree.root_kind == RootKind.OBSERVATION
    assert tree.root.run_id == tree.placements[CHILD].run_id == trace_uuid(TRACE_ID)


@pytest.mark.parametrize(
    ("observations", "problem"),
    [
        (
            [observation(ROOT), observation(CHILD, GRANDCHILD), observation(GRANDCHILD, CHILD)],
            f"cycle: {CHILD} -> {GRANDCHILD} -> {CHILD}",
        ),
        ([observation(ROOT, CHILD), observation(CHILD, ROOT)], "cycle"),
        ([observation(ROOT), observation(ROOT, start_ms=1)], "more than once"),
        ([], "no observations"),
    ],
    ids=["cycle", "cycle without root", "duplicate id", "empty"],
)
def test_a_document_that_cannot_be_one_tree_is_refused_naming_the_problem(
    observations: list[Observation], problem: str
) -> None:
    with pytest.raises(TreeError, match=problem):
        place_runs(document(*observations))


def test_a_declared_root_that_has_a_parent_is_refused() -> None:
    doc = document(observation(ROOT), observation(CHILD, ROOT), root_observation_id=CHILD)
    with pytest.raises(TreeError, match=f"root_observation_id is {CHILD} but it has parent"):
        place_runs(doc)


# -- run fields ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "run_type"),
    [
        ("generation", "llm"),
        ("tool", "tool"),
        ("retriever", "retriever"),
        ("embedding", "embedding"),
        ("span", "chain"),
        ("agent", "chain"),
        ("chain", "chain"),
        ("guardrail", "chain"),
        ("evaluator", "chain"),
        ("event", "chain"),
    ],
)
def test_observation_kinds_become_run_types(kind: str, run_type: str) -> None:
    runs = runs_by_observation(document(observation(ROOT), observation(CHILD, ROOT, kind=kind)))
    assert runs[CHILD]["run_type"] == run_type
    assert runs[CHILD]["extra"]["metadata"]["tracebus_kind"] == kind


def test_an_event_is_a_run_that_ends_when_it_starts() -> None:
    doc = document(observation(ROOT), observation(CHILD, ROOT, kind="event", end_ms=3))
    event = runs_by_observation(doc)[CHILD]
    assert event["end_time"] == event["start_time"]


def test_inputs_and_outputs_are_objects_with_scalars_and_lists_wrapped() -> None:
    doc = document(
        observation(ROOT, input={"question": "why?"}, output="because"),
        observation(CHILD, ROOT, input=["a", "b"], output=42),
        observation(GRANDCHILD, ROOT),
    )
    runs = runs_by_observation(doc)
    assert runs[ROOT]["inputs"] == {"question": "why?"}
    assert runs[ROOT]["outputs"] == {"output": "because"}
    assert runs[CHILD]["inputs"] == {"input": ["a", "b"]}
    assert runs[CHILD]["outputs"] == {"output": 42}
    assert runs[GRANDCHILD]["inputs"] == runs[GRANDCHILD]["outputs"] == {}


def test_the_root_run_takes_the_trace_name_and_the_trace_input_output_it_lacks() -> None:
    trace = TraceAttributes(name="support-chat", input={"q": 1}, output={"a": 2})
    runs = runs_by_observation(document(observation(ROOT, input="own input"), trace=trace))
    assert runs[ROOT]["name"] == "support-chat"
    assert runs[ROOT]["inputs"] == {"input": "own input"}
    assert runs[ROOT]["outputs"] == {"a": 2}


def test_an_error_observation_carries_its_status_message_as_the_run_error() -> None:
    doc = document(
        observation(ROOT),
        observation(CHILD, ROOT, level="ERROR", status_message="schema mismatch"),
        observation(GRANDCHILD, ROOT, level="ERROR"),
    )
    runs = runs_by_observation(doc)
    assert runs[CHILD]["error"] == "schema mismatch"
    assert runs[GRANDCHILD]["error"] == "ERROR"
    assert "error" not in runs[ROOT]


def test_a_warning_keeps_its_level_and_message_in_metadata() -> None:
    doc = document(observation(ROOT, level="WARNING", status_message="slow"))
    run = runs_by_observation(doc)[ROOT]
    assert "error" not in run
    assert run["extra"]["metadata"]["tracebus_level"] == "WARNING"
    assert run["extra"]["metadata"]["tracebus_status_message"] == "slow"


def test_every_run_carries_trace_tags_metadata_user_and_both_thread_keys() -> None:
    trace = TraceAttributes(
        user_id="user-42",
        session_id="session-7",
        tags=["prod", "beta"],
        metadata={"tenant": "acme", "session_id": "overwritten"},
        release="v1.2.3",
        environment="production",
    )
    doc = document(
        observation(ROOT), observation(CHILD, ROOT, metadata={"step": 2}), trace=trace, revision=3
    )
    for observation_id, run in runs_by_observation(doc).items():
        assert run["tags"] == ["prod", "beta"]
        assert run["session_name"] == PROJECT
        metadata = run["extra"]["metadata"]
        assert metadata["user_id"] == "user-42"
        assert metadata["session_id"] == metadata["thread_id"] == "session-7"
        assert metadata["tenant"] == "acme"
        assert metadata["environment"] == "production"
        assert metadata["release"] == metadata["revision_id"] == "v1.2.3"
        assert metadata["tracebus_revision"] == 3
        assert metadata["tracebus_trace_id"] == TRACE_ID
        assert metadata["tracebus_observation_id"] == observation_id
    assert runs_by_observation(doc)[CHILD]["extra"]["metadata"]["step"] == 2


def test_an_llm_run_names_its_provider_model_and_parameters() -> None:
    parameters = {"temperature": 0.2, "max_tokens": 256, "top_p": 0.9}
    generation = observation(
        CHILD,
        ROOT,
        kind="generation",
        model="gpt-4o",
        provider="openai",
        model_parameters=parameters,
    )
    extra = runs_by_observation(document(observation(ROOT), generation))[CHILD]["extra"]
    assert extra["invocation_params"] == parameters
    assert {
        key: extra["metadata"][key]
        for key in ("ls_provider", "ls_model_name", "ls_model_type", "ls_temperature")
    } == {
        "ls_provider": "openai",
        "ls_model_name": "gpt-4o",
        "ls_model_type": "chat",
        "ls_temperature": 0.2,
    }
    assert extra["metadata"]["ls_max_tokens"] == 256


def test_usage_and_cost_become_inclusive_usage_metadata_in_the_outputs() -> None:
    usage = Usage(
        input_tokens=1200,
        input_cache_read_tokens=1000,
        input_cache_creation_tokens=100,
        input_audio_tokens=5,
        output_tokens=300,
        output_reasoning_tokens=120,
        other={"tool_use_prompt_tokens": 7},
    )
    cost = Cost(input=0.003, input_cache_read=0.0005, output=0.0045, output_reasoning=0.0018)
    generation = observation(
        CHILD, ROOT, kind="generation", output={"text": "hi"}, usage=usage, cost=cost
    )
    run = runs_by_observation(document(observation(ROOT), generation))[CHILD]
    assert run["outputs"] == {
        "text": "hi",
        "usage_metadata": {
            "input_tokens": 1200,
            "output_tokens": 300,
            "total_tokens": 1500,
            "input_token_details": {"cache_read": 1000, "cache_creation": 100, "audio": 5},
            "output_token_details": {"reasoning": 120},
            "input_cost": 0.003,
            "output_cost": 0.0045,
            "total_cost": pytest.approx(0.0075),
            "input_cost_details": {"cache_read": 0.0005},
            "output_cost_details": {"reasoning": 0.0018},
        },
    }
    assert run["extra"]["metadata"]["tracebus_usage_other"] == {"tool_use_prompt_tokens": 7}
    assert generation.output == {"text": "hi"}  # the document is left as it was


def test_usage_metadata_is_absent_without_usage_or_cost_and_reported_totals_win() -> None:
    assert usage_metadata(None, None) is None
    assert usage_metadata(Usage(input_tokens=3, total_tokens=9), None) == {
        "input_tokens": 3,
        "output_tokens": 0,
        "total_tokens": 9,
    }
    assert usage_metadata(None, Cost(total=0.5)) == {"total_cost": 0.5}


def test_time_to_first_token_is_a_new_token_event() -> None:
    generation = observation(
        CHILD,
        ROOT,
        kind="generation",
        completion_start_time_unix_nano=T0 + 350 * MS,
        time_to_first_token_ms=350,
    )
    run = runs_by_observation(document(observation(ROOT), generation))[CHILD]
    assert run["events"] == [{"name": "new_token", "time": "2026-01-01T00:00:00.350000+00:00"}]
    assert run["extra"]["metadata"]["tracebus_time_to_first_token_ms"] == 350


# -- feedback --------------------------------------------------------------------------------


def test_scores_become_feedback_on_their_observations_run_with_a_stable_id() -> None:
    doc = document(
        observation(ROOT),
        observation(CHILD, ROOT, start_ms=2),
        scores=[score("s-1", CHILD, 0.9, "NUMERIC"), score("s-2", None, "good", "CATEGORICAL")],
    )
    numeric, categorical = langsmith_trace(doc, project=PROJECT).feedback
    assert numeric["id"] == str(feedback_uuid(TRACE_ID, "s-1"))
    assert numeric["run_id"] == str(run_uuid(TRACE_ID, CHILD, T0 + 2 * MS))
    assert numeric["trace_id"] == str(trace_uuid(TRACE_ID))
    assert numeric["key"] == "helpfulness"
    assert numeric["score"] == 0.9
    assert "value" not in numeric
    assert numeric["feedback_source"]["type"] == "api"
    assert numeric["created_at"] == datetime(2026, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)
    assert categorical["run_id"] == str(trace_uuid(TRACE_ID))
    assert categorical["value"] == "good"
    assert "score" not in categorical


def test_a_score_on_an_observation_of_another_part_goes_to_the_root_and_says_where() -> None:
    doc = document(observation(ROOT), scores=[score("s-1", CHILD, True, "BOOLEAN")])
    (feedback,) = langsmith_trace(doc, project=PROJECT).feedback
    assert feedback["run_id"] == str(trace_uuid(TRACE_ID))
    assert feedback["score"] is True
    assert feedback["extra"] == {"tracebus_observation_id": CHILD}
