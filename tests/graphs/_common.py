"""Shared pieces: the Case record, the CASES registry, @case, Log states, node helpers."""

import asyncio
import dataclasses
import operator
import time
from collections.abc import Callable
from typing import Annotated, Any

from langgraph.graph import START, StateGraph
from typing_extensions import TypedDict


@dataclasses.dataclass(frozen=True)
class Case:
    build: Callable[[], tuple[StateGraph, Any]]
    #: "sync"/"async": which call styles apply (stock cannot run async nodes under sync)
    styles: tuple[str, ...] = ("sync", "async")
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    ordered: bool = False


CASES: dict[str, Case] = {}


def case(*, styles: tuple[str, ...] = ("sync", "async"), ordered: bool = False, **kwargs: Any):
    def register(fn: Callable[[], tuple[StateGraph, Any]]) -> Callable[[], tuple[StateGraph, Any]]:
        CASES[fn.__name__] = Case(fn, styles, kwargs, ordered)
        return fn

    return register


ASYNC = ("async",)


class Log(TypedDict):
    log: Annotated[list, operator.add]


class LogN(TypedDict, total=False):
    log: Annotated[list, operator.add]
    n: int


def _append(tag: str, delay: float = 0.0) -> Callable[[Any], dict]:
    def node(state: Any) -> dict:
        if delay:
            time.sleep(delay)
        return {"log": [tag]}

    node.__name__ = tag
    return node


def _aappend(tag: str, delay: float = 0.0) -> Callable[[Any], Any]:
    async def node(state: Any) -> dict:
        if delay:
            await asyncio.sleep(delay)
        return {"log": [tag]}

    node.__name__ = tag
    return node


def _sibling_of_a(g: StateGraph) -> None:
    """a and s both start at step 1, so a's Sends run ahead while s is still running."""
    g.add_node("a", lambda s: {"log": ["a"]})
    g.add_node("s", lambda s: (time.sleep(0.02), {"log": ["s"]})[1])
    g.add_edge(START, "a")
    g.add_edge(START, "s")
