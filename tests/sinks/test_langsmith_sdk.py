"""The exporter speaks exactly what the official langsmith SDK sends, and why it does not use it.

The SDK here is the reference for the wire format: the same runs sent through
`Client.multipart_ingest` and through LangSmithExporter must give the same parts, header for
header and byte for byte (only the random boundary differs)."""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from langsmith import Client
from langsmith._internal._operations import (
    serialize_feedback_dict,
    serialized_feedback_operation_to_multipart_parts_and_context,
)
from standins.langsmith import LangSmithStandIn, ReceivedPart
from test_langsmith_export import PROJECT, export, reference_document

from tracebus.sinks.langsmith import langsmith_trace
from tracebus.sinks.langsmith.multipart import feedback_part


@pytest.fixture(autouse=True)
def no_langsmith_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK reads LANGSMITH_* / LANGCHAIN_* variables (sampling, metadata, endpoints)."""
    for name in list(os.environ):
        if name.startswith(("LANGSMITH_", "LANGCHAIN_")):
            monkeypatch.delenv(name)


@pytest.fixture
def sdk_langsmith() -> Iterator[tuple[LangSmithStandIn, Client]]:
    with LangSmithStandIn() as standin:
        client = Client(
            api_url=standin.url,
            api_key=standin.api_key,
            auto_batch_tracing=False,
            omit_traced_runtime_info=True,  # the SDK would add its own host's runtime
            info=httpx.get(f"{standin.url}/info").json(),
        )
        yield standin, client


def wire(parts: list[ReceivedPart]) -> list[tuple[str, dict[str, str], bytes]]:
    return [(part.name, part.headers, part.data) for part in parts]


def test_the_sdk_and_the_exporter_send_the_same_run_parts_and_both_are_accepted(
    sdk_langsmith: tuple[LangSmithStandIn, Client],
) -> None:
    theirs, client = sdk_langsmith
    runs = langsmith_trace(reference_document(), project=PROJECT).runs

    client.multipart_ingest(create=copy.deepcopy(runs))
    with LangSmithStandIn() as ours:
        export(ours, reference_document(), compression=None)

    (sdk_request,) = theirs.requests
    (our_request,) = ours.requests
    assert sdk_request.status == our_request.status == 202
    our_run_parts = [part for part in our_request.parts if part.name.startswith("post.")]
    assert wire(sdk_request.parts) == wire(our_run_parts)
    assert theirs.runs == ours.runs


def test_the_exporter_encodes_feedback_exactly_as_the_sdk_queues_it() -> None:
    for feedback in langsmith_trace(reference_document(), project=PROJECT).feedback:
        operation = serialize_feedback_dict(copy.deepcopy(feedback))
        sdk_parts = serialized_feedback_operation_to_multipart_parts_and_context(operation).parts
        ((name, (_, data, content_type, headers)),) = sdk_parts
        ours = feedback_part(feedback)
        assert (ours.name, ours.data) == (name, data)
        assert (content_type, headers) == ("application/json", {"Content-Length": str(len(data))})


def test_the_sdk_returns_normally_when_langsmith_rejects_the_batch(
    sdk_langsmith: tuple[LangSmithStandIn, Client], caplog: pytest.LogCaptureFixture
) -> None:
    """Why the exporter sends on its own: the SDK only logs the rejection, so a runtime using
    it could neither retry nor dead-letter the trace."""
    theirs, client = sdk_langsmith
    theirs.fail_next(422)
    runs: list[dict[str, Any]] = langsmith_trace(reference_document(), project=PROJECT).runs

    with caplog.at_level(logging.WARNING, logger="langsmith"):
        client.multipart_ingest(create=copy.deepcopy(runs))  # no exception

    assert [request.status for request in theirs.requests] == [422]
    assert theirs.runs == {}
    assert "Failed to multipart ingest runs" in caplog.text
