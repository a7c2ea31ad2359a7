"""`tracebus replay`: re-deliver a range of the traces topic, idempotently at the destination."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cli_helpers import interrupted_mid_delivery
from conftest import fresh_settings
from sink_helpers import document, of_project, project_standins, publish
from standins.langfuse import LangfuseStandIn
from typer.testing import CliRunner

from tracebus.cli.main import app
from tracebus.kafka import EmbeddedBroker


def run_replay(standin: LangfuseStandIn, settings, *args: str, **env: str):
    env = {
        **settings.worker_env(),
        "TRACEBUS_LANGFUSE_HOST": standin.url,
        "TRACEBUS_LANGFUSE_PUBLIC_KEY": "pk-lf-test",
        "TRACEBUS_LANGFUSE_SECRET_KEY": "sk-lf-test",
        **env,
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


def test_a_replay_delivers_each_projects_traces_through_its_route(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = fresh_settings(broker.bootstrap_servers)
    shop = [of_project(f"shop-{i}", "shop") for i in range(2)]
    rest = [of_project("no-project", None), of_project("ops", "ops")]
    publish(settings, [shop[0], *rest, shop[1]])
    routes = tmp_path / "routes.toml"
    with (
        LangfuseStandIn("pk-lf-test", "sk-lf-test") as own,
        project_standins(routes, "shop") as (shop_standin,),
    ):
        result = run_replay(own, settings, "--from-offset", "0", TRACEBUS_ROUTES_FILE=str(routes))
    assert result.exit_code == 0, result.output
    assert "replayed 4 records to langfuse: 4 delivered" in result.output
    assert {span.key.trace_id for span in shop_standin.spans} == {d.trace_id for d in shop}
    assert {span.key.trace_id for span in own.spans} == {d.trace_id for d in rest}


def test_a_replay_of_one_project_delivers_that_projects_traces_alone(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = fresh_settings(broker.bootstrap_servers)
    shop = [of_project(f"shop-{i}", "shop") for i in range(2)]
    billing = of_project("billing", "billing")
    publish(settings, [shop[0], of_project("no-project", None), billing, shop[1]])
    routes = tmp_path / "routes.toml"
    with (
        LangfuseStandIn("pk-lf-test", "sk-lf-test") as own,
        project_standins(routes, "shop") as (shop_standin,),
    ):
        env = {"TRACEBUS_ROUTES_FILE": str(routes)}
        routed = run_replay(own, settings, "--from-offset", "0", "--project", "shop", **env)
        unrouted = run_replay(own, settings, "--from-offset", "0", "--project", "billing", **env)
    assert routed.exit_code == 0, routed.output
    assert "replayed 4 records to langfuse: 2 delivered" in routed.output
    assert unrouted.exit_code == 0, unrouted.output
    assert "replayed 4 records to langfuse: 1 delivered" in unrouted.output
    assert {span.key.trace_id for span in shop_standin.spans} == {d.trace_id for d in shop}
    assert {span.key.trace_id for span in own.spans} == {billing.trace_id}


@pytest.mark.parametrize("args", [[], ["--since", "yesterday-ish"]])
def test_a_replay_without_a_clear_start_is_refused(broker: EmbeddedBroker, args: list[str]) -> None:
    settings = fresh_settings(broker.bootstrap_servers)
    with LangfuseStandIn("pk-lf-test", "sk-lf-test") as standin:
        result = run_replay(standin, settings, *args)
    assert result.exit_code == 2


def test_an_interrupted_replay_commits_what_it_delivered_and_says_so(
    broker: EmbeddedBroker,
) -> None:
    settings = fresh_settings(broker.bootstrap_servers)
    publish(settings, [document(f"t-{i}") for i in range(300)])
    with LangfuseStandIn("pk-lf-test", "sk-lf-test") as standin:
        env = {
            **settings.worker_env(),
            "TRACEBUS_LANGFUSE_HOST": standin.url,
            "TRACEBUS_LANGFUSE_PUBLIC_KEY": "pk-lf-test",
            "TRACEBUS_LANGFUSE_SECRET_KEY": "sk-lf-test",
        }
        code, stderr = interrupted_mid_delivery(
            standin, 10, "replay", "langfuse", "--from-offset", "0", env=env
        )
    assert code == 130, stderr
    said = r"interrupted: \d+ delivered, .* of 300 records; replay the same range again"
    assert re.search(said, stderr), stderr
