"""Realistic demo traffic: the workflow runs an LLM app builder (Dify-like) traces.

Each trace is one run of one of four apps: a support chatbot with retrieval, a research agent
with tool calls, a document-extraction workflow and a summarise-and-translate workflow. Runs are
generated from a seeded `random.Random` with explicit start and end times, so a run is simulated
in microseconds and ends "now"; only `rate` pacing waits. About 5% of runs fail (an exception
recorded on the failing node and the root, level ERROR), some carry WARNING levels, some scores.

    client = tracebus.Client(bootstrap_servers="127.0.0.1:9092")
    run_demo(client, traces=100, rate=50)
    client.close()
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate
from random import Random
from typing import Any

from tracebus.producers.client import Client
from tracebus.producers.observation import Observation

__all__ = ["MODELS", "DemoStats", "Model", "run_demo"]

FAILURE_RATE = 0.05
WARNING_RATE = 0.08


@dataclass(frozen=True)
class Model:
    """A model as sent to its provider, with list prices in USD per million tokens."""

    name: str
    provider: str
    usage_style: str  # "openai", "anthropic" or "tracebus": the shape its usage is reported in
    input_price: float
    cached_price: float
    output_price: float
    tokens_per_second: float
    first_token_ms: tuple[int, int]
    reasoning: bool = False


MODELS: dict[str, Model] = {
    model.name: model
    for model in (
        Model("gpt-4o", "openai", "openai", 2.50, 1.25, 10.00, 85, (280, 900)),
        Model("gpt-4o-mini", "openai", "openai", 0.15, 0.075, 0.60, 120, (200, 600)),
        Model("o3-mini", "openai", "openai", 1.10, 0.55, 4.40, 150, (900, 4000), reasoning=True),
        Model(
            "claude-3-5-sonnet-20241022",
            "anthropic",
            "anthropic",
            3.00,
            0.30,
            15.00,
            65,
            (450, 1400),
        ),
        Model(
            "claude-3-5-haiku-20241022", "anthropic", "anthropic", 0.80, 0.08, 4.00, 110, (300, 800)
        ),
        Model("gemini-1.5-flash", "google", "tracebus", 0.075, 0.01875, 0.30, 160, (250, 700)),
    )
}
EMBEDDING_MODEL = "text-embedding-3-small"


@dataclass
class DemoStats:
    """What `run_demo` sent so far; passed to `on_trace` after every trace."""

    traces: int = 0
    observations: int = 0
    generations: int = 0
    failed_traces: int = 0
    warnings: int = 0
    scores: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    apps: dict[str, int] = field(default_factory=dict)


# -- content ------------------------------------------------------------------------------------

SUPPORT_QUESTIONS = [
    ("How do I reset my password if I no longer have access to my email?", "account"),
    ("Why was I charged twice this month?", "billing"),
    ("Can I export my dashboards to PDF?", "product"),
    ("The API returns 401 even though my key is valid. What am I doing wrong?", "technical"),
    ("How do I add a teammate with read-only access?", "account"),
    ("Is there a way to change the billing currency to EUR?", "billing"),
    ("My webhook deliveries fail with a 502, how can I debug this?", "technical"),
    ("Do you support SSO with Okta?", "product"),
    ("How long do you keep audit logs?", "product"),
    ("Can I downgrade from the Business plan in the middle of the cycle?", "billing"),
    ("The CLI hangs on `acme deploy` after the upload step.", "technical"),
    ("Where can I download last year's invoices?", "billing"),
]
KNOWLEDGE = {
    "account": [
        (
            "Account recovery.md",
            "If you lost access to your email, ask a workspace owner to "
            "change it under Settings → Members, then use 'Forgot password'.",
        ),
        (
            "Roles and permissions.md",
            "Viewer is a read-only role: viewers see dashboards and "
            "runs but cannot edit them. Invite teammates under Settings → Members.",
        ),
        (
            "Two-factor authentication.md",
            "Recovery codes are shown once when 2FA is enabled; owners can reset 2FA for members.",
        ),
    ],
    "billing": [
        (
            "Billing FAQ.md",
            "A second charge is usually a pre-authorisation that is released "
            "within 5 business days. Duplicate captures are refunded automatically.",
        ),
        (
            "Plans and downgrades.md",
            "Downgrades take effect at the end of the billing cycle; "
            "the unused part of the current plan is credited.",
        ),
        (
            "Currencies.md",
            "Billing currency (USD, EUR, GBP) can be changed once per year under "
            "Billing → Payment details before the next invoice is issued.",
        ),
        ("Invoices.md", "All invoices are available as PDF under Billing → History."),
    ],
    "technical": [
        (
            "API authentication.md",
            "Send the key as `Authorization: Bearer <key>`. Keys are "
            "scoped to one workspace; a 401 means the key belongs to another workspace.",
        ),
        (
            "Webhooks troubleshooting.md",
            "A 502 means your endpoint did not answer within 10s. "
            "Check the delivery log for the response body and retry from the console.",
        ),
        (
            "CLI reference.md",
            "`acme deploy --verbose` prints each step; a hang after upload "
            "is usually a proxy blocking the websocket used for build logs.",
        ),
    ],
    "product": [
        (
            "Exports.md",
            "Dashboards can be exported to PDF or PNG from the share menu; scheduled "
            "exports are available on the Business plan.",
        ),
        (
            "SSO.md",
            "SAML SSO works with Okta, Azure AD and Google Workspace on the Enterprise plan.",
        ),
        ("Data retention.md", "Audit logs are retained for 400 days, run logs for 30 days."),
    ],
}
SUPPORT_ANSWERS = {
    "account": "You can regain access without your old email: ask a workspace owner to update "
    "it under Settings → Members, then use “Forgot password” on the sign-in page.",
    "billing": "I checked our billing documentation: the second charge is most likely a "
    "pre-authorisation that your bank releases within 5 business days. If it is still there "
    "after that, reply here and we will refund it.",
    "technical": "A 401 usually means the key belongs to a different workspace. Make sure you "
    "send it as `Authorization: Bearer <key>` and that the workspace in the URL matches.",
    "product": "Yes — this is available from the share menu of each dashboard. Scheduled "
    "deliveries require the Business plan.",
}
AGENT_TASKS = [
    (
        "Compare the latest quarterly revenue of Nvidia and AMD and compute the growth gap.",
        ["web_search", "web_search", "calculator"],
    ),
    ("What's the weather in Lisbon this weekend and should I pack an umbrella?", ["get_weather"]),
    (
        "Find three recent papers on speculative decoding and summarise their main idea.",
        ["web_search", "fetch_url", "fetch_url"],
    ),
    ("How many days are there between 2024-03-15 and 2025-01-01?", ["calculator"]),
    ("Plan a 2-day itinerary in Kyoto with a budget of 300 EUR.", ["web_search", "get_weather"]),
    ("Which of our open GitHub issues mention 'timeout'? Summarise them.", ["github_search"]),
]
ARTICLES = [
    "Quarterly product update: faster builds, audit log exports and a new billing page",
    "Incident report: elevated API error rates on 14 March",
    "How we cut cold-start latency by 60% with snapshotting",
    "Release notes 4.2: SAML SSO for all Enterprise workspaces",
]
VENDORS = ["Northwind Traders", "Contoso Ltd", "Globex GmbH", "Initech SAS", "Umbrella KK"]
LANGUAGES = ["German", "French", "Japanese", "Spanish", "Portuguese"]


class NodeFailure(Exception):
    """Base of the errors the demo records on failing nodes."""


class RateLimitError(NodeFailure):
    pass


class APITimeoutError(NodeFailure):
    pass


class OverloadedError(NodeFailure):
    pass


class ToolInvokeError(NodeFailure):
    pass


class CodeExecutionError(NodeFailure):
    pass


class WorkflowRunFailed(NodeFailure):
    pass


# -- simulation ---------------------------------------------------------------------------------


@dataclass
class _Node:
    name: str
    kind: str
    start_ms: float
    end_ms: float = 0.0
    fields: dict[str, Any] = field(default_factory=dict)
    completion_start_ms: float | None = None
    children: list[_Node] = field(default_factory=list)
    error: BaseException | None = None
    scores: list[tuple[str, Any, dict[str, Any]]] = field(default_factory=list)


class _Aborted(Exception):
    """Unwinds a simulated run from its failing node to the root."""

    def __init__(self, node: _Node, error: BaseException) -> None:
        super().__init__(str(error))
        self.node = node
        self.error = error


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


class _Run:
    """One simulated workflow run: a tree of nodes on a virtual clock in milliseconds."""

    def __init__(self, rng: Random, stats: DemoStats, fail_at: int, warning: bool) -> None:
        self.rng = rng
        self.stats = stats
        self.clock = 0.0
        self.root = _Node("workflow", "chain", 0.0)
        # A failing run fails at its n-th failable step (an LLM call, tool, HTTP or code node).
        self.fail_at = fail_at
        self.failable_seen = 0
        self.warning = warning
        self.warned = False

    def uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def wait(self, low: float, high: float) -> None:
        self.clock += self.rng.uniform(low, high)

    def maybe_warn(self) -> bool:
        """True (once per run) when this run is to carry a warning and this step takes it."""
        if self.warning and not self.warned and self.rng.random() < 0.6:
            self.warned = True
            return True
        return False

    def should_fail(self) -> bool:
        index = self.failable_seen
        self.failable_seen += 1
        return index == self.fail_at

    def node(self, parent: _Node, name: str, kind: str, **fields: Any) -> _Node:
        node = _Node(name, kind, self.clock, fields=fields)
        parent.children.append(node)
        return node

    def fail(self, node: _Node, error: BaseException) -> None:
        node.error = error
        node.end_ms = self.clock
        raise _Aborted(node, error)

    # -- node types -----------------------------------------------------------------------------

    def step(
        self,
        parent: _Node,
        name: str,
        node_type: str,
        input: Any,
        output: Any,
        duration: tuple[float, float],
        kind: str = "span",
        failure: BaseException | None = None,
    ) -> _Node:
        node = self.node(
            parent,
            name,
            kind,
            input=input,
            metadata={"node_type": node_type, "node_id": self.uid()},
        )
        self.wait(*duration)
        if failure is not None and self.should_fail():
            self.fail(node, failure)
        node.fields["output"] = output
        node.end_ms = self.clock
        return node

    def llm(
        self,
        parent: _Node,
        name: str,
        model: Model,
        messages: list[dict[str, Any]],
        output: dict[str, Any],
        *,
        history_turns: int = 0,
        json_mode: bool = False,
        max_tokens: int = 1024,
        node_type: str = "llm",
    ) -> _Node:
        rng = self.rng
        parameters: dict[str, Any]
        if model.reasoning:
            parameters = {
                "reasoning_effort": rng.choice(["low", "medium", "high"]),
                "max_completion_tokens": 4096,
            }
        else:
            parameters = {
                "temperature": rng.choice([0.0, 0.2, 0.3, 0.7, 1.0]),
                "max_tokens": max_tokens,
                "top_p": 1.0,
                "stream": True,
            }
        if json_mode:
            parameters["response_format"] = "json_object"
        node = self.node(
            parent,
            name,
            "generation",
            input=messages,
            model=model.name,
            provider=model.provider,
            model_parameters=parameters,
            metadata={
                "node_type": node_type,
                "node_id": self.uid(),
                "history_turns": history_turns,
            },
        )
        self.stats.generations += 1
        retried = False
        if self.should_fail():
            error = self._llm_error(model)
            if isinstance(error, APITimeoutError):
                self.wait(30_000, 30_050)
            else:
                self.wait(80, 400)
            self.fail(node, error)
        elif self.warning and not self.warned and rng.random() < 0.3:
            # A 429 answered by a retry after the provider's suggested back-off.
            self.warned = retried = True
            self.wait(900, 2500)
        first_token = rng.uniform(*model.first_token_ms)
        text = output.get("content") or str(output.get("tool_calls", ""))
        output_tokens = _tokens(text) + rng.randint(0, 12)
        reasoning_tokens = rng.randint(128, 2600) if model.reasoning else 0
        output_tokens += reasoning_tokens
        finish_reason = "tool_calls" if output.get("tool_calls") else "stop"
        if not retried and finish_reason == "stop" and self.maybe_warn():
            finish_reason = "length"
            output_tokens = max_tokens
        prompt_tokens = sum(_tokens(str(m.get("content", ""))) for m in messages) + 7 * len(
            messages
        )
        cached = 0
        if history_turns and prompt_tokens >= 1024:
            cached = (int(prompt_tokens * rng.uniform(0.4, 0.9)) // 128) * 128
        elif model.usage_style == "anthropic" and rng.random() < 0.5:
            cached = int(prompt_tokens * rng.uniform(0.5, 0.8))
        node.completion_start_ms = self.clock + first_token
        self.clock += (
            first_token + (output_tokens - reasoning_tokens) / model.tokens_per_second * 1000
        )
        node.end_ms = self.clock
        node.fields["output"] = {"role": "assistant", **output}
        node.fields["usage"] = self._usage(
            model, prompt_tokens, cached, output_tokens, reasoning_tokens
        )
        node.fields["cost"] = self._cost(model, prompt_tokens, cached, output_tokens)
        node.fields["metadata"]["finish_reason"] = finish_reason
        if retried:
            node.fields["level"] = "WARNING"
            node.fields["status_message"] = (
                f"succeeded after 1 retry: 429 rate_limit_exceeded for {model.name}"
            )
            node.fields["metadata"]["retries"] = 1
        elif finish_reason == "length":
            node.fields["level"] = "WARNING"
            node.fields["status_message"] = (
                f"completion truncated at max_tokens={max_tokens} (finish_reason=length)"
            )
        self.stats.input_tokens += prompt_tokens
        self.stats.output_tokens += output_tokens
        self.stats.cost_usd += node.fields["cost"]["total"]
        return node

    def _llm_error(self, model: Model) -> BaseException:
        choice = self.rng.random()
        if model.provider == "anthropic" and choice < 0.5:
            return OverloadedError(
                "Error code: 529 - {'type': 'error', 'error': {'type': 'overloaded_error', "
                "'message': 'Overloaded'}}"
            )
        if choice < 0.7:
            return RateLimitError(
                f"Error code: 429 - Rate limit reached for {model.name} on tokens per min (TPM): "
                f"Limit 30000, Used 29{self.rng.randint(100, 999)}, Requested "
                f"{self.rng.randint(800, 3000)}. Please try again in 2.4s."
            )
        return APITimeoutError("Request timed out after 30.0s")

    @staticmethod
    def _usage(
        model: Model, prompt: int, cached: int, output: int, reasoning: int
    ) -> dict[str, Any]:
        if model.usage_style == "openai":
            usage: dict[str, Any] = {
                "prompt_tokens": prompt,
                "completion_tokens": output,
                "total_tokens": prompt + output,
                "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            }
            if model.reasoning:
                usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
            return usage
        if model.usage_style == "anthropic":
            # Anthropic's input_tokens excludes cache reads; the SDK adds them back.
            return {
                "input_tokens": prompt - cached,
                "output_tokens": output,
                "cache_read_input_tokens": cached,
                "cache_creation_input_tokens": 0,
            }
        return {"input_tokens": prompt, "output_tokens": output, "total_tokens": prompt + output}

    @staticmethod
    def _cost(model: Model, prompt: int, cached: int, output: int) -> dict[str, float]:
        cache_read = cached * model.cached_price / 1e6
        input_cost = (prompt - cached) * model.input_price / 1e6 + cache_read
        output_cost = output * model.output_price / 1e6
        return {
            "input": round(input_cost, 8),
            "input_cache_read": round(cache_read, 8),
            "output": round(output_cost, 8),
            "total": round(input_cost + output_cost, 8),
        }

    def retrieval(self, parent: _Node, query: str, topic: str, dataset: str) -> _Node:
        rng = self.rng
        top_k = rng.choice([3, 4, 5])
        threshold = 0.5
        node = self.node(
            parent,
            "Knowledge Retrieval",
            "retriever",
            input={
                "query": query,
                "dataset": dataset,
                "top_k": top_k,
                "score_threshold": threshold,
            },
            metadata={"node_type": "knowledge-retrieval", "node_id": self.uid()},
        )
        embedding = self.node(
            node,
            "embed query",
            "embedding",
            input=[query],
            model=EMBEDDING_MODEL,
            provider="openai",
            model_parameters={"dimensions": 1536},
        )
        self.wait(40, 160)
        if self.should_fail():
            self.fail(embedding, APITimeoutError("Request to embeddings API timed out after 10.0s"))
        tokens = _tokens(query)
        embedding.fields["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        embedding.fields["cost"] = {"input": tokens * 0.02 / 1e6, "total": tokens * 0.02 / 1e6}
        embedding.fields["output"] = {"dimensions": 1536, "vectors": 1}
        embedding.end_ms = self.clock
        self.wait(15, 220)
        documents = [
            {
                "content": content,
                "metadata": {
                    "document_name": name,
                    "dataset": dataset,
                    "segment_id": self.uid(),
                    "score": round(rng.uniform(0.52, 0.93), 4),
                },
            }
            for name, content in rng.sample(KNOWLEDGE[topic], min(top_k, len(KNOWLEDGE[topic])))
        ]
        documents.sort(key=lambda doc: -doc["metadata"]["score"])
        if self.maybe_warn():
            documents = []
            node.fields["level"] = "WARNING"
            node.fields["status_message"] = (
                f"no segment scored above score_threshold={threshold}; answering without context"
            )
        node.fields["output"] = {"documents": documents}
        node.end_ms = self.clock
        return node

    def tool(self, parent: _Node, name: str, arguments: dict[str, Any], result: Any) -> _Node:
        duration = {"calculator": (3, 20), "get_weather": (120, 600)}.get(name, (250, 2200))
        return self.step(
            parent,
            name,
            "tool",
            arguments,
            result,
            duration,
            kind="tool",
            failure=ToolInvokeError(
                f"tool {name} failed: HTTP 503 Service Unavailable from upstream "
                f"(request id {self.uid()[:8]})"
            ),
        )


# -- apps ---------------------------------------------------------------------------------------


def _support_chat(run: _Run, question: str, topic: str, turns: int) -> dict[str, Any]:
    rng = run.rng
    root = run.root
    run.step(root, "Start", "start", {"sys.query": question}, {"sys.query": question}, (1, 4))
    classifier_model = MODELS["gpt-4o-mini"]
    run.llm(
        root,
        "Question Classifier",
        classifier_model,
        [
            {
                "role": "system",
                "content": "Classify the customer's question into one of: account, billing, "
                "technical, product. Answer with the class only.",
            },
            {"role": "user", "content": question},
        ],
        {"content": topic},
        max_tokens=16,
        node_type="question-classifier",
    )
    retrieval = run.retrieval(root, question, topic, dataset="help-center")
    documents = retrieval.fields["output"]["documents"]
    context = "\n\n".join(doc["content"] for doc in documents) or "(no context found)"
    model = MODELS[rng.choice(["gpt-4o", "gpt-4o", "claude-3-5-sonnet-20241022", "gpt-4o-mini"])]
    history: list[dict[str, Any]] = []
    for _ in range(turns):
        earlier, earlier_topic = rng.choice(SUPPORT_QUESTIONS)
        history += [
            {"role": "user", "content": earlier},
            {"role": "assistant", "content": SUPPORT_ANSWERS[earlier_topic]},
        ]
    messages = [
        {
            "role": "system",
            "content": "You are Acme Cloud's support assistant. Answer from the context only; "
            "if the context does not contain the answer, say so and offer a human agent.\n\n"
            f"<context>\n{context}\n</context>",
        },
        *history,
        {"role": "user", "content": question},
    ]
    answer = SUPPORT_ANSWERS[topic]
    llm = run.llm(root, "LLM", model, messages, {"content": answer}, history_turns=turns)
    run.step(root, "Answer", "answer", {"answer": answer}, {"answer": answer}, (1, 3))
    if rng.random() < 0.2:
        faithfulness = round(rng.betavariate(8, 2), 3)
        llm.scores.append(
            (
                "faithfulness",
                faithfulness,
                {"source": "EVAL", "comment": "LLM-as-a-judge (gpt-4o-mini) against context"},
            )
        )
    return {"query": question, "answer": answer, "intent": topic}


def _agent_tool_result(run: _Run, tool: str, task: str) -> tuple[dict[str, Any], Any]:
    rng = run.rng
    if tool == "web_search":
        query = " ".join(task.rstrip("?.").split()[: rng.randint(5, 9)])
        return {"query": query, "max_results": 5}, [
            {
                "title": f"{query[:40]} — result {i + 1}",
                "url": f"https://news.example.com/{run.uid()[:8]}",
                "snippet": "…reported revenue grew year over year, driven by data-center demand…",
            }
            for i in range(rng.randint(3, 5))
        ]
    if tool == "fetch_url":
        return {
            "url": f"https://arxiv.org/abs/24{rng.randint(1, 12):02d}.{rng.randint(10000, 99999)}"
        }, {
            "status": 200,
            "content_type": "text/html",
            "text": "Speculative decoding drafts tokens with a small model and verifies them in "
            "one pass of the large model, trading spare compute for latency…",
        }
    if tool == "calculator":
        a, b = rng.randint(100, 9000), rng.randint(100, 9000)
        return {"expression": f"({a} - {b}) / {b} * 100"}, {"result": round((a - b) / b * 100, 4)}
    if tool == "github_search":
        return {"repo": "acme/platform", "query": "timeout is:issue is:open"}, {
            "total_count": rng.randint(2, 9),
            "items": [
                {"number": rng.randint(1000, 4000), "title": "Deploy times out after upload"}
            ],
        }
    city = "Lisbon" if "Lisbon" in task else "Kyoto"
    return {"city": city, "days": 2}, {
        "city": city,
        "forecast": [
            {"day": "Sat", "condition": rng.choice(["rain", "cloudy", "sunny"]), "max_c": 19},
            {"day": "Sun", "condition": rng.choice(["rain", "sunny"]), "max_c": 21},
        ],
    }


def _research_agent(run: _Run, task: str, tools: list[str]) -> dict[str, Any]:
    rng = run.rng
    root = run.root
    run.step(root, "Start", "start", {"sys.query": task}, {"sys.query": task}, (1, 4))
    model = MODELS[rng.choice(["gpt-4o", "claude-3-5-sonnet-20241022", "o3-mini", "gpt-4o"])]
    agent = run.node(
        root,
        "Agent",
        "agent",
        input={"query": task},
        metadata={
            "node_type": "agent",
            "node_id": run.uid(),
            "strategy": "function_calling",
            "max_iterations": 5,
            "tools": sorted(set(tools)),
        },
    )
    messages: list[dict[str, Any]] = [
        {
            "role": "system",
            "content": "You are a research assistant. Use the tools to find facts; cite sources; "
            "answer concisely.",
        },
        {"role": "user", "content": task},
    ]
    for round_index, tool in enumerate(tools, start=1):
        arguments, result = _agent_tool_result(run, tool, task)
        call_id = f"call_{run.uid().replace('-', '')[:24]}"
        call = {
            "id": call_id,
            "type": "function",
            "function": {"name": tool, "arguments": arguments},
        }
        run.llm(agent, f"Agent round {round_index}", model, list(messages), {"tool_calls": [call]})
        run.tool(agent, tool, arguments, result)
        messages += [
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call_id, "content": str(result)[:400]},
        ]
    answer = (
        "Here is what I found: the figures above come from the sources I searched; in short, "
        f"{task.rstrip('?.').lower()} — see the cited pages for details."
    )
    run.llm(agent, f"Agent round {len(tools) + 1}", model, messages, {"content": answer})
    agent.fields["output"] = {"answer": answer, "iterations": len(tools) + 1}
    agent.end_ms = run.clock
    run.step(root, "Answer", "answer", {"answer": answer}, {"answer": answer}, (1, 3))
    return {"query": task, "answer": answer}


def _invoice_extraction(run: _Run) -> dict[str, Any]:
    rng = run.rng
    root = run.root
    number = f"INV-2024-{rng.randint(1000, 9999)}"
    url = f"https://files.example.com/invoices/{number}.pdf"
    run.step(root, "Start", "start", {"file_url": url}, {"file_url": url}, (1, 4))
    vendor = rng.choice(VENDORS)
    total = round(rng.lognormvariate(7.5, 1.1), 2)
    currency = rng.choice(["EUR", "USD", "GBP"])
    text = (
        f"{vendor}\nInvoice {number}\nDate: 2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        f"\nTotal due: {total:,.2f} {currency}\nPayment terms: 30 days net"
    )
    run.step(
        root,
        "HTTP Request",
        "http-request",
        {"method": "GET", "url": url, "timeout_s": 10},
        {
            "status_code": 200,
            "content_type": "application/pdf",
            "size": rng.randint(30_000, 900_000),
        },
        (150, 1500),
        kind="tool",
        failure=ToolInvokeError(f"HTTP request timed out after 10.0s: GET {url}"),
    )
    run.step(
        root,
        "Extract text",
        "code",
        {"language": "python3", "code": "def main(file): return {'text': pdf_to_text(file)}"},
        {"text": text},
        (8, 120),
        failure=CodeExecutionError("KeyError: 'text' (line 1 in main)"),
    )
    fields = {
        "invoice_number": number,
        "vendor": vendor,
        "total": total,
        "currency": currency,
        "due_in_days": 30,
    }
    run.llm(
        root,
        "Parameter Extractor",
        MODELS[rng.choice(["gpt-4o-mini", "gpt-4o-mini", "claude-3-5-haiku-20241022"])],
        [
            {
                "role": "system",
                "content": "Extract invoice_number, vendor, total, currency and due_in_days "
                "from the document. Reply with a JSON object.",
            },
            {"role": "user", "content": text},
        ],
        {"content": json.dumps(fields)},
        json_mode=True,
        max_tokens=256,
        node_type="parameter-extractor",
    )
    approval = total > 5000
    branch = "needs_approval" if approval else "auto_book"
    run.step(
        root,
        "IF/ELSE",
        "if-else",
        {"total": total, "condition": "total > 5000"},
        {"branch": branch},
        (1, 3),
    )
    message = f"Invoice {number} from {vendor} ({total:,.2f} {currency}) → {branch}"
    run.step(root, "Template", "template-transform", fields, {"output": message}, (1, 4))
    run.step(root, "End", "end", {"result": message}, {"result": message}, (0.5, 2))
    return {"file_url": url, "result": fields, "branch": branch}


def _summarize_translate(run: _Run) -> dict[str, Any]:
    rng = run.rng
    root = run.root
    article = rng.choice(ARTICLES)
    languages = rng.sample(LANGUAGES, rng.randint(1, 3))
    body = f"{article}. " + "We shipped several improvements this quarter. " * rng.randint(20, 60)
    run.step(root, "Start", "start", {"article": article, "languages": languages}, {}, (1, 4))
    summary = f"{article}: the main changes, their impact on customers and what comes next."
    run.llm(
        root,
        "Summarize",
        MODELS[rng.choice(["gemini-1.5-flash", "claude-3-5-haiku-20241022"])],
        [
            {"role": "system", "content": "Summarise the article in three sentences."},
            {"role": "user", "content": body},
        ],
        {"content": summary},
        max_tokens=300,
    )
    iteration = run.node(
        root,
        "Iteration",
        "chain",
        input={"items": languages},
        metadata={"node_type": "iteration", "node_id": run.uid(), "parallel": False},
    )
    translations = {}
    for language in languages:
        translated = f"[{language}] {summary}"
        run.llm(
            iteration,
            f"Translate to {language}",
            MODELS["gpt-4o-mini"],
            [
                {"role": "system", "content": f"Translate into {language}. Keep product names."},
                {"role": "user", "content": summary},
            ],
            {"content": translated},
            max_tokens=400,
        )
        translations[language] = translated
    iteration.fields["output"] = {"translations": list(translations.values())}
    iteration.end_ms = run.clock
    run.step(root, "End", "end", translations, translations, (0.5, 2))
    return {"article": article, "translations": translations}


APPS = [
    # (name, mode, weight)
    ("support-bot", "advanced-chat", 40),
    ("research-agent", "agent-chat", 25),
    ("invoice-extraction", "workflow", 20),
    ("summarize-translate", "workflow", 15),
]


class _Demo:
    def __init__(self, client: Client, rng: Random, failure_rate: float) -> None:
        self.client = client
        self.rng = rng
        self.failure_rate = failure_rate
        self.stats = DemoStats()
        self.app_ids = {
            name: str(uuid.UUID(int=rng.getrandbits(128), version=4)) for name, *_ in APPS
        }
        # A few heavy users and a long tail, as in real traffic (Zipf-like).
        self.users = [f"user-{index:04d}" for index in range(1, 401)]
        self.user_weights = list(accumulate(1 / rank for rank in range(1, 401)))
        self.conversations: dict[str, tuple[str, int]] = {}

    def one_trace(self) -> None:
        rng = self.rng
        app, mode, _ = rng.choices(APPS, weights=[weight for *_, weight in APPS])[0]
        user_id = rng.choices(self.users, cum_weights=self.user_weights)[0]
        conversation, turns = self.conversations.get(user_id, ("", -1))
        if mode == "workflow" or turns < 0 or turns >= 6 or rng.random() < 0.4:
            conversation, turns = str(uuid.UUID(int=rng.getrandbits(128), version=4)), 0
        else:
            turns += 1
        self.conversations[user_id] = (conversation, turns)
        invoke_from = rng.choices(["web-app", "service-api", "explore"], weights=[6, 3, 1])[0]
        question, topic = rng.choice(SUPPORT_QUESTIONS)
        task, tools = rng.choice(AGENT_TASKS)

        def simulate(run: _Run) -> dict[str, Any]:
            if app == "support-bot":
                return _support_chat(run, question, topic, turns)
            if app == "research-agent":
                return _research_agent(run, task, tools)
            if app == "invoice-extraction":
                return _invoice_extraction(run)
            return _summarize_translate(run)

        failing = rng.random() < self.failure_rate
        warning = not failing and rng.random() < WARNING_RATE
        fail_at = -1
        if failing:
            # Rehearse the run to count its failable steps, then fail at one of them.
            fraction = rng.random()
            state = rng.getstate()
            rehearsal = _Run(rng, DemoStats(), -1, warning=False)
            simulate(rehearsal)
            fail_at = int(fraction * rehearsal.failable_seen)
            rng.setstate(state)
        run = _Run(rng, self.stats, fail_at, warning)
        workflow_run_id = run.uid()
        error: BaseException | None = None
        output: dict[str, Any] | None = None
        try:
            output = simulate(run)
        except _Aborted as aborted:
            error = WorkflowRunFailed(
                f"Node {aborted.node.name} run failed: {type(aborted.error).__name__}: "
                f"{aborted.error}"
            )
            self._end_open(run.root, run.clock)
        run.wait(1, 5)
        root = run.root
        root.end_ms = run.clock
        root.error = error
        trace_input = root.children[0].fields.get("input") if root.children else None
        root.fields = {
            "input": trace_input,
            "output": output,
            "metadata": {"node_type": "workflow", "workflow_run_id": workflow_run_id},
        }
        scores: list[tuple[str, Any, dict[str, Any]]] = []
        if error is None and rng.random() < 0.25:
            thumbs_up = rng.random() < 0.8
            comment = None if thumbs_up else rng.choice(["wrong answer", "too long", "outdated"])
            scores.append(("user_feedback", thumbs_up, {"comment": comment}))
        if error is None and mode != "workflow" and rng.random() < 0.05:
            scores.append(("sentiment", rng.choice(["positive", "neutral", "negative"]), {}))
        base_ns = time.time_ns() - int(root.end_ms * 1e6)
        trace = self.client.trace(
            "workflow",
            kind="chain",
            user_id=user_id,
            session_id=conversation,
            tags=[app, mode, f"invoke:{invoke_from}"],
            metadata={
                "app_id": self.app_ids[app],
                "app_name": app,
                "app_mode": mode,
                "workflow_run_id": workflow_run_id,
                "invoke_from": invoke_from,
                "source": "tracebus-demo",
            },
            start_time=base_ns,
        )
        trace.update_trace(input=trace_input, output=output)
        self._emit(trace, root, base_ns)
        for name, value, options in scores:
            trace.score_trace(name, value, **{k: v for k, v in options.items() if v is not None})
        stats = self.stats
        stats.traces += 1
        stats.scores += len(scores)
        stats.failed_traces += error is not None
        stats.warnings += int(run.warned)
        stats.apps[app] = stats.apps.get(app, 0) + 1

    def _end_open(self, node: _Node, now: float) -> None:
        """After a failure, the nodes still open (the failing node's ancestors) end failed."""
        for child in node.children:
            if not child.end_ms:
                child.end_ms = now
                failed = next((c for c in child.children if c.error is not None), None)
                if failed is not None:
                    child.error = failed.error
                self._end_open(child, now)

    def _emit(self, observation: Observation, node: _Node, base_ns: int) -> None:
        def at(ms: float) -> int:
            return base_ns + int(ms * 1e6)

        fields = {key: value for key, value in node.fields.items() if value is not None}
        if node.completion_start_ms is not None:
            fields["completion_start_time"] = at(node.completion_start_ms)
        if fields:
            observation.update(**fields)
        for child in node.children:
            handle = self.client.start_observation(
                child.name, child.kind, parent=observation, start_time=at(child.start_ms)
            )
            self._emit(handle, child, base_ns)
        if node.error is not None:
            observation.record_exception(node.error)
        observation.end(end_time=at(node.end_ms))
        self.stats.observations += 1
        for name, value, options in node.scores:
            observation.score(name, value, **options)
            self.stats.scores += 1


def run_demo(
    client: Client,
    traces: int | None = 100,
    rate: float = 0.0,
    *,
    seed: int | None = 0,
    failure_rate: float = FAILURE_RATE,
    on_trace: Callable[[DemoStats], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    sleep: Callable[[float], object] = time.sleep,
) -> DemoStats:
    """Send `traces` demo workflow runs through `client` (None: until `should_stop()`).

    `rate` paces the runs in traces per second (0: as fast as possible); `sleep` is called
    for pacing, so an interruptible wait such as `threading.Event.wait` can be passed. The same
    `seed` gives the same runs (ids and timestamps aside). Does not flush or close the client."""
    if traces is not None and traces < 0:
        raise ValueError("traces must be >= 0")
    if rate < 0:
        raise ValueError("rate must be >= 0 (0 = as fast as possible)")
    demo = _Demo(client, Random(seed), failure_rate)
    started = time.monotonic()
    sent_since_start = 0
    while traces is None or demo.stats.traces < traces:
        if should_stop is not None and should_stop():
            break
        if rate > 0:
            delay = started + sent_since_start / rate - time.monotonic()
            if delay > 0:
                sleep(delay)
                if should_stop is not None and should_stop():
                    break
            elif delay < -1.0:
                # Far behind (a slow consumer of on_trace, a suspended process): no burst.
                started, sent_since_start = time.monotonic(), 0
        demo.one_trace()
        sent_since_start += 1
        if on_trace is not None:
            on_trace(demo.stats)
    return demo.stats
