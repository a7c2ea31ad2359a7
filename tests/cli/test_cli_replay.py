"""`tracebus replay`: re-deliver a range of the traces topic, idempotently at the destination."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from conftest import fresh_settings
from sink_helpers import document, publish
from standins.langfuse import LangfuseStandIn
from typer.testing import CliRunner

from tracebus.cli.main import app
from tracebus.kafka import EmbeddedBroker


def run_replay(standin: LangfuseStandIn, settings, *args: str):
    env = {
        **settings.worker_env(),
        "TRACEBUS_LANGFUSE_HOST": standin.url,
        "TRACEBUS_LANGFUSE_PUBLIC_KEY": "pk-lf-test",
        "TRACEBUS_LANGFUSE_SECRET_KEY": "sk-lf-test",
    }
    return CliRunner().invoke(app, ["replay", "langfuse", *args], env=env)


def test_replaying_twice_leaves_one_row_per_span_at_the_destination(
    broker: EmbeddedBroker,
) -> None:
    settings = fresh_settings(broker.bootstrap_servers)
    documents = [document(f"t-{i}") for i in range(10)]
    publish(settings, documents)
    with LangfuseStandIn("pk-lf-test", "sk-lf-test") as standin:
        first = run_replay(standin, settings, "--from-offset", "0")
        second = run_replay(standin, settings, "--from-offset", "0")
    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    assert "replayed 10 records to langfuse: 10 delivered" in first.output
    assert {span.key.trace_id for span in standin.spans} == {d.trace_id for d in documents}
    assert len(standin.spans) == 10
    assert set(standin.receipts.values()) == {2}


def test_a_time_range_replays_only_what_was_published_in_it(broker: EmbeddedBroker) -> None:
    settings = fresh_settings(broker.bootstrap_servers)
    before = [document(f"before-{i}") for i in range(3)]
    publish(settings, before)
    time.sleep(0.05)  # record timestamps are in milliseconds: keep the two sets apart
    since = datetime.now(UTC).isoformat()
    during = [document(f"during-{i}") for i in range(4)]
    publish(settings, during)
    with LangfuseStandIn("pk-lf-test", "sk-lf-test") as standin:
        result = run_replay(standin, settings, "--since", since)
    assert result.exit_code == 0, result.output
    assert {span.key.trace_id for span in standin.spans} == {d.trace_id for d in during}


@pytest.mark.parametrize("args", [[], ["--since", "yesterday-ish"]])
def test_a_replay_without_a_clear_start_is_refused(broker: EmbeddedBroker, args: list[str]) -> None:
    settings = fresh_settings(broker.bootstrap_servers)
    with LangfuseStandIn("pk-lf-test", "sk-lf-test") as standin:
        result = run_replay(standin, settings, *args)
    assert result.exit_code == 2
