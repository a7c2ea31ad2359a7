"""The current observation, carried by contextvars across awaits, tasks and (`bind`) threads."""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, ParamSpec, TypeVar

if TYPE_CHECKING:
    from tracebus.producers.observation import Observation

current: ContextVar[Observation | None] = ContextVar("tracebus_current_observation", default=None)

P = ParamSpec("P")
R = TypeVar("R")


def current_observation() -> Observation | None:
    """The innermost open observation of this context, if any."""
    return current.get()


def bind(fn: Callable[P, R]) -> Callable[P, R]:
    """Wrap `fn` so it runs under the observation current *now*, in whichever thread calls it.

    Threads do not inherit contextvars; `executor.submit(tracebus.bind(work), item)` nests the
    work's observations under the caller's. The wrapper may run in many threads at once."""
    parent = current.get()

    @functools.wraps(fn)
    def run_in_parent(*args: P.args, **kwargs: P.kwargs) -> R:
        token = current.set(parent)
        try:
            return fn(*args, **kwargs)
        finally:
            current.reset(token)

    return run_in_parent
