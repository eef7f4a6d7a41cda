"""Runtime behaviour: failures stay in their request, nothing is left running, limits hold."""

from __future__ import annotations

import asyncio
import operator
import threading
from typing import Annotated, Any

import pytest
from langgraph.errors import GraphRecursionError
from langgraph.graph import START, StateGraph
from langgraph.types import Command, Send
from typing_extensions import TypedDict

import alto_langgraph  # noqa: F401
from alto_langgraph.runtime.coordinator import RequestRun


class S(TypedDict):
    log: Annotated[list, operator.add]
    fail: bool


def _alto_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("alto:")]


def nested(record: list[str] | None = None, delay: float = 0.0) -> StateGraph:
    async def b(p: dict) -> Any:
        await asyncio.sleep(delay * (3 - p["i"]))
        if p["fail"] and p["i"] == 2:
            raise ValueError(f"request failed in b{p['i']}")
        return Command(update={"log": [f"b{p['i']}"]}, goto=[Send("c", p)])

    async def c(p: dict) -> dict:
        if record is not None:
            record.append(f"c{p['i']}")
        await asyncio.sleep(delay)
        return {"log": [f"c{p['i']}"]}

    g = StateGraph(S)
    g.add_node("b", b)
    g.add_node("c", c)
    g.add_conditional_edges(START, lambda s: [Send("b", {"i": i, "fail": s["fail"]}) for i in range(3)])
    return g


async def test_many_concurrent_requests_one_failing() -> None:
    app = nested(delay=0.005).compile(backend="alto")
    inputs = [{"log": [n], "fail": n == 3} for n in range(12)]
    results = await asyncio.gather(*(app.ainvoke(x) for x in inputs), return_exceptions=True)
    for n, r in enumerate(results):
        if n == 3:
            assert isinstance(r, ValueError) and str(r) == "request failed in b2"
        else:
            assert r == {"log": [n, "b0", "b1", "b2", "c0", "c1", "c2"], "fail": False}
    assert _alto_tasks() == []


async def test_failed_request_leaves_no_task_running() -> None:
    started: list[str] = []
    app = nested(started, delay=0.01).compile(backend="alto")
    with pytest.raises(ValueError, match="request failed in b2"):
        await app.ainvoke({"log": [], "fail": True})
    assert _alto_tasks() == []
    # c0 and c1 may have run ahead, but the failed request returned no partial state
    assert set(started) <= {"c0", "c1"}


async def test_consumer_stopping_early_cancels_run_ahead_work() -> None:
    gate = asyncio.Event()

    async def slow(p: dict) -> dict:
        await gate.wait()
        return {"log": ["never"]}

    g = StateGraph(S)
    g.add_node("a", lambda s: Command(goto=[Send("slow", {}), Send("slow", {})]))
    g.add_node("slow", slow)
    g.add_edge(START, "a")
    stream = g.compile(backend="alto").astream({"log": [], "fail": False})
    first = await stream.__anext__()
    assert "a" in first
    await stream.aclose()
    assert _alto_tasks() == []


def test_sync_stream_stopped_early_joins_its_thread() -> None:
    app = nested(delay=0.01).compile(backend="alto")
    before = {t.name for t in threading.enumerate()}
    for chunk in app.stream({"log": [], "fail": False}):
        break
    after = {t.name for t in threading.enumerate()}
    assert not any(name.startswith("alto:") for name in after - before)


def test_recursion_limit_bounds_run_ahead() -> None:
    ran: dict[str, list[int]] = {"pregel": [], "alto": []}

    def build(backend: str) -> Any:
        def hop(p: dict) -> Command:
            ran[backend].append(p["d"])
            return Command(update={"log": [p["d"]]}, goto=[Send("hop", {"d": p["d"] + 1})] * 2)

        g = StateGraph(S)
        g.add_node("hop", hop)
        g.add_conditional_edges(START, lambda s: Send("hop", {"d": 0}))
        return g.compile(backend=backend)

    for backend in ("pregel", "alto"):
        with pytest.raises(GraphRecursionError):
            build(backend).invoke({"log": [], "fail": False}, {"recursion_limit": 4})
    # run-ahead may run a step the loop has not reached, but never past the limit
    assert max(ran["alto"]) == max(ran["pregel"])


async def test_run_ahead_results_are_adopted_not_rerun() -> None:
    calls: list[int] = []
    seen_runs: list[RequestRun] = []
    original_init = RequestRun.__init__

    def spy(self: RequestRun, **kw: Any) -> None:
        original_init(self, **kw)
        seen_runs.append(self)

    async def c(p: dict) -> dict:
        calls.append(p["i"])
        return {"log": [f"c{p['i']}"]}

    async def b(p: dict) -> Command:
        await asyncio.sleep(0.01 * (3 - p["i"]))
        return Command(goto=[Send("c", p)])

    g = StateGraph(S)
    g.add_node("b", b)
    g.add_node("c", c)
    g.add_conditional_edges(START, lambda s: [Send("b", {"i": i}) for i in range(3)])
    RequestRun.__init__ = spy  # type: ignore[method-assign]
    try:
        out = await g.compile(backend="alto").ainvoke({"log": [], "fail": False})
    finally:
        RequestRun.__init__ = original_init  # type: ignore[method-assign]
    assert out["log"] == ["c0", "c1", "c2"]
    assert sorted(calls) == [0, 1, 2]  # each c ran exactly once
    (run,) = seen_runs
    assert run.stats["run_ahead"] == 3
    assert run.stats["adopted"] == 3
