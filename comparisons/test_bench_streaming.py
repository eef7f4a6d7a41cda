"""pytest-benchmark: what a streamed chunk costs, from a producer to a fold.

    python -m pytest comparisons --benchmark-only -k streaming

One request: a ``@streaming`` node sends one stream of ``CHUNKS`` integers to a
``@fold`` that sums them. ``langgraph`` collects the stream and folds it in the next
step; alto hands each chunk to the fold as it is made: in the app process
(``inline``), or as messages from the producer's instance through the router to the
fold's instance, with a copy to the app (``process``). Divide the time by ``CHUNKS``
for the cost per chunk.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import pytest
from langgraph.graph import START, StateGraph
from langgraph.types import Send
from typing_extensions import TypedDict

from alto_langgraph import streaming
from alto_langgraph.aggregate import Sum

CHUNKS = 1000


class Total(TypedDict, total=False):
    total: Annotated[int, Sum()]


@streaming
def produce(state: Total) -> Any:
    yield Send("add", {"xs": iter(range(CHUNKS))})


def build() -> StateGraph:
    g = StateGraph(Total)
    g.add_node("produce", produce)
    g.add_node("add", Sum().fold(over="xs", into="total"))
    g.add_edge(START, "produce")
    return g


@pytest.fixture(params=["langgraph", "inline", "process"])
def app(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "langgraph":
        yield build().compile()
        return
    with build().compile(backend="alto", executor=request.param) as compiled:
        compiled.invoke({"total": 0})  # start the processes
        yield compiled


@pytest.mark.benchmark(group="streaming: one stream of 1000 chunks into a fold")
def test_stream_of_chunks_into_a_fold(benchmark: Any, app: Any) -> None:
    out = benchmark(app.invoke, {"total": 0})
    assert out["total"] == CHUNKS * (CHUNKS - 1) // 2
