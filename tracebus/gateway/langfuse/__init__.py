"""Langfuse's legacy batch ingestion (`POST /api/public/ingestion`), the endpoint Dify's Langfuse
integration and Langfuse's v2 SDKs write to and a Langfuse v4 server refuses; through tracebus
those traces reach Langfuse over OTLP.

- `http`: the routes, answered as Langfuse answers (207 per event, `{"message"}` errors);
- `translation`: one ingestion event as a contract event, or why it is refused;
- `validation`: Langfuse's zod checks, as the issue lists its errors carry;
- `ids`: Langfuse ids as W3C ids and event ids, deterministically;
- `usage`: a generation's `usage`, `usageDetails` and `costDetails` as the contract's
  inclusive buckets (details through `tracebus.gateway.langfuse_details`, shared with OTLP)."""

from tracebus.gateway.langfuse.http import ADAPTER

__all__ = ["ADAPTER"]
