"""A span's input and output, from whichever convention carries them: Langfuse's attributes,
GenAI semantic-convention events and attributes, OpenInference, Traceloop, MLflow."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tracebus.gateway.otlp.attributes import Attributes, attribute_values, parse_json_text

_IO_PAIRS = (
    ("langfuse.observation.input", "langfuse.observation.output"),
    ("mlflow.spanInputs", "mlflow.spanOutputs"),
    ("traceloop.entity.input", "traceloop.entity.output"),
    ("input.value", "output.value"),
    ("input", "output"),
    ("tool_arguments", "tool_response"),
)
_IO_PREFIXES = (
    ("gen_ai.prompt.", "gen_ai.completion."),
    ("llm.input_messages.", "llm.output_messages."),
)
_MESSAGE_EVENTS = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}
_IO_KEYS = frozenset(
    {
        *(key for pair in _IO_PAIRS for key in pair),
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.system_instructions",
        "gen_ai.tool.call.arguments",
        "gen_ai.tool.call.result",
        "langfuse.trace.input",
        "langfuse.trace.output",
    }
)
_TOOL_CALL_PAIR = (("gen_ai.tool.call.arguments", "gen_ai.tool.call.result"),)
_IO_PREFIX_KEYS = tuple(prefix for pair in _IO_PREFIXES for prefix in pair)


def input_output(attributes: Attributes, events: Sequence[Span.Event]) -> tuple[Any, Any]:
    """Input and output from the first convention that has them, in Langfuse's order. Every
    input/output attribute is then left out of metadata, as Langfuse does, so a payload is
    never stored twice."""
    values = attributes.values
    found = _first_pair(values, _IO_PAIRS[:1]) or _from_events(events)
    found = found or _first_pair(values, _IO_PAIRS[1:]) or _from_prefixes(values)
    found = found or _from_gen_ai_messages(values) or _first_pair(values, _TOOL_CALL_PAIR)
    attributes.discard(k for k in values if k in _IO_KEYS or k.startswith(_IO_PREFIX_KEYS))
    return found or (None, None)


def _first_pair(
    values: Mapping[str, Any], pairs: Sequence[tuple[str, str]]
) -> tuple[Any, Any] | None:
    for input_key, output_key in pairs:
        found = parse_json_text(values.get(input_key)), parse_json_text(values.get(output_key))
        if any(v not in (None, "") for v in found):
            return found
    return None


def _from_events(events: Sequence[Span.Event]) -> tuple[Any, Any] | None:
    """GenAI semantic-convention events: the inference details event (semconv ≥ 1.37), else
    one event per message and `gen_ai.choice` per output."""
    for event in events:
        if event.name == "gen_ai.client.inference.operation.details":
            found = _from_gen_ai_messages(attribute_values(event.attributes))
            if found:
                return found
    messages = [
        {"role": _MESSAGE_EVENTS[e.name], **attribute_values(e.attributes)}
        for e in events
        if e.name in _MESSAGE_EVENTS
    ]
    choices = [attribute_values(e.attributes) for e in events if e.name == "gen_ai.choice"]
    if not messages and not choices:
        return None
    return messages or None, (choices[0] if len(choices) == 1 else choices or None)


def _from_gen_ai_messages(values: Mapping[str, Any]) -> tuple[Any, Any] | None:
    messages = parse_json_text(values.get("gen_ai.input.messages"))
    output = parse_json_text(values.get("gen_ai.output.messages"))
    if messages in (None, "") and output in (None, ""):
        return None
    instructions = parse_json_text(values.get("gen_ai.system_instructions"))
    if instructions and isinstance(messages, list):
        messages = [{"role": "system", "parts": instructions}, *messages]
    return messages, output


def _from_prefixes(values: Mapping[str, Any]) -> tuple[Any, Any] | None:
    """Flattened message lists (`gen_ai.prompt.0.role`, `llm.input_messages.0.message.content`)
    rebuilt as JSON."""
    for input_prefix, output_prefix in _IO_PREFIXES:
        found = _unflatten(values, input_prefix), _unflatten(values, output_prefix)
        if any(v is not None for v in found):
            return found
    return None


def _unflatten(values: Mapping[str, Any], prefix: str) -> Any:
    tree: dict[str, Any] = {}
    for key, value in values.items():
        if key.startswith(prefix):
            *path, leaf = key[len(prefix) :].split(".")
            node = tree
            for part in path:
                child = node.get(part)
                if not isinstance(child, dict):
                    child = node[part] = {}
                node = child
            node[leaf] = value
    return _as_lists(tree) if tree else None


def _as_lists(node: Any) -> Any:
    """Objects keyed 0, 1, … as arrays, in index order (gaps closed, so a huge index costs
    nothing)."""
    if not isinstance(node, dict):
        return node
    converted = {key: _as_lists(value) for key, value in node.items()}
    if all(key.isdigit() for key in converted):
        return [converted[key] for key in sorted(converted, key=int)]
    return converted
