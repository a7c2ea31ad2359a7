"""`@observe`: trace a function, coroutine, generator or async generator as one observation."""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar, overload

from tracebus.producers.context import current

if TYPE_CHECKING:
    from tracebus.producers.client import Client
    from tracebus.producers.observation import Observation

F = TypeVar("F", bound=Callable[..., Any])


@contextlib.contextmanager
def _as_current(observation: Observation) -> Iterator[None]:
    """Make `observation` current for one step of a generator the wrapper drives."""
    token = current.set(observation)
    try:
        yield
    finally:
        current.reset(token)


def _arguments(signature: inspect.Signature) -> Callable[[tuple[Any, ...], dict[str, Any]], Any]:
    """A cheap recorder of call arguments by parameter name (no per-call `bind`)."""
    params = list(signature.parameters.values())
    skip_first = bool(params) and params[0].name in ("self", "cls")
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][
        int(skip_first) :
    ]

    def record(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if skip_first:
            args = args[1:]
        named = dict(zip(positional, args, strict=False))
        if len(args) > len(positional):
            named["args"] = list(args[len(positional) :])
        named.update(kwargs)
        return named

    return record


@overload
def observe(fn: F, /) -> F: ...
@overload
def observe(
    *,
    name: str | None = None,
    kind: str = "span",
    capture_input: bool | None = None,
    capture_output: bool | None = None,
    client: Client | None = None,
) -> Callable[[F], F]: ...


def observe(
    fn: F | None = None,
    /,
    *,
    name: str | None = None,
    kind: str = "span",
    capture_input: bool | None = None,
    capture_output: bool | None = None,
    client: Client | None = None,
) -> F | Callable[[F], F]:
    """Record each call of the decorated callable as an observation nested in the current one.

    Generators are observed from the call until exhaustion; their output is the list of
    yielded items. Exceptions mark the observation ERROR and propagate unchanged. Capture of
    arguments and return values follows the client settings unless given here."""

    def decorate(target: F) -> F:
        observed = _Observed(
            target, name or target.__name__, kind, capture_input, capture_output, client
        )
        # Wrappers of the same flavour as the target, so frameworks that inspect it still see
        # a coroutine / generator / async generator function.
        wrapper: Any
        if inspect.isasyncgenfunction(target):

            async def wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
                async for item in observed.async_generator(args, kwargs):
                    yield item

        elif inspect.iscoroutinefunction(target):

            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                return await observed.coroutine(args, kwargs)

        elif inspect.isgeneratorfunction(target):

            def wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
                return (yield from observed.generator(args, kwargs))

        else:

            def wrapper(*args: Any, **kwargs: Any) -> Any:
                return observed.function(args, kwargs)

        return functools.wraps(target)(wrapper)  # type: ignore[return-value]

    return decorate(fn) if fn is not None else decorate


class _Observed:
    def __init__(
        self,
        target: Callable[..., Any],
        name: str,
        kind: str,
        capture_input: bool | None,
        capture_output: bool | None,
        client: Client | None,
    ) -> None:
        self.target = target
        self.name = name
        self.kind = kind
        self.capture_input = capture_input
        self.capture_output = capture_output
        self.client = client
        self.arguments = _arguments(inspect.signature(target))

    def _open(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Observation, bool]:
        from tracebus.producers.default import get_client

        client = self.client or get_client()
        settings = client.settings
        observation = client.start_observation(self.name, self.kind)
        if settings.capture_input if self.capture_input is None else self.capture_input:
            observation.input = self.arguments(args, kwargs)
        capture_output = (
            settings.capture_output if self.capture_output is None else self.capture_output
        )
        return observation, capture_output

    def function(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        observation, capture_output = self._open(args, kwargs)
        with observation:
            result = self.target(*args, **kwargs)
            if capture_output:
                observation.output = result
            return result

    async def coroutine(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        observation, capture_output = self._open(args, kwargs)
        with observation:
            result = await self.target(*args, **kwargs)
            if capture_output:
                observation.output = result
            return result

    def generator(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Iterator[Any]:
        observation, capture_output = self._open(args, kwargs)
        items: list[Any] = []
        with _as_current(observation):
            inner = self.target(*args, **kwargs)
        try:
            sent = None
            while True:
                try:
                    with _as_current(observation):
                        item = inner.send(sent)
                except StopIteration as stop:
                    if capture_output:
                        observation.output = items if stop.value is None else stop.value
                    return stop.value
                if capture_output:
                    items.append(item)
                sent = yield item
        except BaseException as error:
            if not isinstance(error, GeneratorExit):
                observation.record_exception(error)
            inner.close()
            raise
        finally:
            if capture_output and observation.output is None:
                observation.output = items
            observation.end()

    async def async_generator(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> AsyncIterator[Any]:
        observation, capture_output = self._open(args, kwargs)
        items: list[Any] = []
        with _as_current(observation):
            inner = self.target(*args, **kwargs)
        try:
            sent = None
            while True:
                try:
                    with _as_current(observation):
                        item = await inner.asend(sent)
                except StopAsyncIteration:
                    return
                if capture_output:
                    items.append(item)
                sent = yield item
        except BaseException as error:
            if not isinstance(error, GeneratorExit):
                observation.record_exception(error)
            await inner.aclose()
            raise
        finally:
            if capture_output:
                observation.output = items
            observation.end()
