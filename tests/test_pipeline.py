"""The whole pipeline on real processes: app SDK → broker → stream worker → Langfuse and
LangSmith sink workers → the strict stand-ins, each seeing every trace once."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from conftest import eventually, fresh_settings
from sink_helpers import SinkProcess
from standins.langfuse import LangfuseStandIn
from standins.langsmith import LangSmithStandIn
from streams.stream_helpers import WorkerProcess

import tracebus
from tracebus.kafka import EmbeddedBroker

LANGSMITH_KEY = "lsv2_pt_standin_secret"


def test_traces_from_the_sdk_reach_both_destinations_complete_and_once(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = fresh_settings(broker.bootstrap_servers)
    with (
        LangfuseStandIn("pk-lf-test", "sk-lf-test") as langfuse,
        LangSmithStandIn(LANGSMITH_KEY) as langsmith,
    ):
        workers = [
            WorkerProcess(settings, tmp_path),
            SinkProcess(
                "langfuse",
                settings,
                tmp_path,
                TRACEBUS_LANGFUSE_HOST=langfuse.url,
                TRACEBUS_LANGFUSE_PUBLIC_KEY="pk-lf-test",
                TRACEBUS_LANGFUSE_SECRET_KEY="sk-lf-test",
            ),
            SinkProcess(
                "langsmith",
                settings,
                tmp_path,
                TRACEBUS_GROUP_ID=f"langsmith-{settings.traces_topic}",
                TRACEBUS_LANGSMITH_ENDPOINT=langsmith.url,
                TRACEBUS_LANGSMITH_API_KEY=LANGSMITH_KEY,
            ),
        ]
        client = tracebus.Client(**settings.model_dump(), linger_ms=5)
        roots = []
        try:
            for i in range(10):
                with client.trace(f"chat-{i}", user_id="u-1", session_id="s-1") as root:
                    with client.generation("answer", model="gpt-4o", provider="openai") as llm:
                        llm.update(output="hi", usage={"input_tokens": 1000, "output_tokens": 10})
                    root.score_trace("helpfulness", 4)
                roots.append(root)
            assert client.flush(10)
            trace_ids = {r.trace_id for r in roots}
            eventually(
                lambda: {s.key.trace_id for s in langfuse.spans} == trace_ids, 90, "Langfuse"
            )
            eventually(
                lambda: (
                    {str(uuid.UUID(t)) for t in trace_ids}
                    <= {run["trace_id"] for run in langsmith.runs.values()}
                ),
                90,
                "LangSmith",
            )
        finally:
            client.close()
            codes = [w.stop() for w in workers]
        assert codes == [0, 0, 0], [w.log_tail() for w in workers]

    assert len(langfuse.spans) == 20 and all(n == 1 for n in langfuse.receipts.values())
    answer = next(s for s in langfuse.spans if s.name == "answer")
    assert answer.json("langfuse.observation.cost_details")["total"] == pytest.approx(0.0026)
    assert len(langsmith.runs) == 20
    llm_runs = [r for r in langsmith.runs.values() if r["run_type"] == "llm"]
    assert all(r["outputs"]["usage_metadata"]["total_cost"] > 0 for r in llm_runs)
    assert len(langsmith.feedback) == 10 and len(langfuse.scores) == 10
