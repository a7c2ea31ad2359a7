"""The OTLP/HTTP traces endpoint (`POST /v1/traces`, and Langfuse's
`POST /api/public/otel/v1/traces`): OpenTelemetry exporters and Langfuse SDKs send to the
gateway unchanged.

- `http`: the routes, and answers and `google.rpc.Status` errors in the request's encoding;
- `decoding`: protobuf and OTLP/JSON request bodies;
- `spans`: spans as tracebus events, read the way Langfuse's OTLP ingestion reads them, with
  `attributes`, `input_output`, `usage` and `traces` (one trace event per trace) beside it;
- `events`: short text fields and content-derived event ids."""

from tracebus.gateway.otlp.http import ADAPTER

__all__ = ["ADAPTER"]
