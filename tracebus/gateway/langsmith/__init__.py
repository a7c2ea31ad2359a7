"""LangSmith's run ingestion API, so that an app traced with the langsmith SDK (`@traceable`,
RunTree, LangChain) switches to tracebus by pointing `LANGSMITH_ENDPOINT` at the gateway.

- `http`: the routes (`/info`, `/runs/multipart`, `/runs/batch`, `/runs`, `/feedback`);
- `multipart`: multipart/form-data bodies as parts;
- `operations`: a request as run operations and feedback;
- `translation`: runs and feedback as tracebus events, with `ids` (trace, parent and W3C ids of
  a run), `directory` (the runs this process saw) and `usage` (UsageMetadata as usage and cost);
- `checks`: the value checks whose failures are 422s."""

from tracebus.gateway.langsmith.http import ADAPTER

__all__ = ["ADAPTER"]
