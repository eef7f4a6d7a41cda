"""Runtime behaviour: failures stay in their request, nothing is left running, limits hold."""

from __future__ import annotations

import asyncio
import operator
import threading
import time
import warnings
from typing import Annotated, Any

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.errors import GraphRecursionError
from langgraph.graph import START, StateGraph
from langgraph.types import Command, RetryPolicy, Send
from typing_extensions import TypedDict

import alto_langgraph  # noqa: F401
from alto_langgraph.scheduling.coordinator import RequestRun


def _backend(backend: str) -> dict:
    """Compile arguments: these tests watch the scheduler through in-process side
    effects, so alto runs inline (the conformance suite covers the process executor)."""
    return {"backend": backend, **({"executor": "inline"} if backend == "alto" else {})}


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
    g.add_conditional_edges(
        START, lambda s: [Send("b", {"i": i, "fail": s["fail"]}) for i in range(3)]
    )
    return g


async def test_many_concurrent_requests_one_failing() -> None:
    app = nested(delay=0.005).compile(backend="alto", executor="inline")
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
    app = nested(started, delay=0.01).compile(backend="alto", executor="inline")
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
    stream = g.compile(backend="alto", executor="inline").astream({"log": [], "fail": False})
    first = await stream.__anext__()
    assert "a" in first
    await stream.aclose()
    assert _alto_tasks() == []


def test_sync_request_fails_without_waiting_for_run_ahead_work() -> None:
    """A failed request returns at once: run-ahead work nobody will claim finishes on
    its own thread, and then the run's threads go away."""
    release = threading.Event()
    running: list[int] = []

    def c(p: dict) -> dict:
        running.append(p["i"])
        release.wait(5)
        running.remove(p["i"])
        return {"log": [p["i"]]}

    def b(p: dict) -> Command:
        if p["i"] == 1:
            while not running:  # fail once c0 is running ahead
                time.sleep(0.001)
            raise ValueError("b1 failed")
        return Command(goto=[Send("c", p)])

    g = StateGraph(S)
    g.add_node("b", b)
    g.add_node("c", c)
    g.add_conditional_edges(START, lambda s: [Send("b", {"i": i}) for i in range(2)])
    before = threading.active_count()
    with pytest.raises(ValueError, match="b1 failed"):
        g.compile(backend="alto", executor="inline").invoke({"log": [], "fail": False})
    assert running == [0]  # the request failed while c0 still ran
    release.set()
    deadline = time.monotonic() + 5
    while (running or threading.active_count() > before) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert running == []
    assert threading.active_count() == before


def test_recursion_limit_bounds_run_ahead() -> None:
    ran: dict[str, list[int]] = {"pregel": [], "alto": []}

    def build(backend: str) -> Any:
        def hop(p: dict) -> Command:
            ran[backend].append(p["d"])
            return Command(update={"log": [p["d"]]}, goto=[Send("hop", {"d": p["d"] + 1})] * 2)

        g = StateGraph(S)
        g.add_node("hop", hop)
        g.add_conditional_edges(START, lambda s: Send("hop", {"d": 0}))
        return g.compile(**_backend(backend))

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
        out = await g.compile(backend="alto", executor="inline").ainvoke({"log": [], "fail": False})
    finally:
        RequestRun.__init__ = original_init  # type: ignore[method-assign]
    assert out["log"] == ["c0", "c1", "c2"]
    assert sorted(calls) == [0, 1, 2]  # each c ran exactly once
    (run,) = seen_runs
    assert run.stats["run_ahead"] == 3
    assert run.stats["adopted"] == 3


def _lone_send_target(calls: list[int], *, fail: bool = False) -> StateGraph:
    """b0 sends c (which runs ahead while b1 is slow); the next step holds c alone,
    which LangGraph runs inline, without the submit hook."""

    def b(p: dict) -> Command:
        if p["i"] == 1:
            time.sleep(0.05)
        return Command(goto=[Send("c", p)] if p["i"] == 0 else [])

    def c(p: dict) -> dict:
        calls.append(p["i"])
        if fail:
            raise ConnectionError("c failed")
        return {"log": [f"c{p['i']}"]}

    g = StateGraph(S)
    g.add_node("b", b)
    g.add_node(
        "c", c, retry_policy=RetryPolicy(max_attempts=2, initial_interval=0.001, jitter=False)
    )
    g.add_conditional_edges(START, lambda s: [Send("b", {"i": i}) for i in range(2)])
    return g


@pytest.mark.parametrize("style", ["sync", "async"])
def test_a_lone_run_ahead_task_is_adopted_not_run_again(style: str) -> None:
    for backend in ("pregel", "alto"):
        calls: list[int] = []
        app = _lone_send_target(calls).compile(**_backend(backend))
        inputs = {"log": [], "fail": False}
        out = app.invoke(inputs) if style == "sync" else asyncio.run(app.ainvoke(inputs))
        assert out["log"] == ["c0"]
        assert calls == [0], backend


@pytest.mark.parametrize("style", ["sync", "async"])
def test_a_lone_run_ahead_task_that_failed_fails_the_same_way(style: str) -> None:
    attempts = {}
    for backend in ("pregel", "alto"):
        calls: list[int] = []
        app = _lone_send_target(calls, fail=True).compile(**_backend(backend))
        inputs = {"log": [], "fail": False}
        with pytest.raises(ConnectionError, match="c failed"):
            app.invoke(inputs) if style == "sync" else asyncio.run(app.ainvoke(inputs))
        attempts[backend] = len(calls)
    assert attempts["alto"] == attempts["pregel"] == 2


@pytest.mark.parametrize("style", ["sync", "async"])
def test_functional_task_inside_a_node_returns_its_value(style: str) -> None:
    from langgraph.func import task

    @task
    def double(x: int) -> int:
        return 2 * x

    def node(s: dict) -> dict:
        return {"log": [double(21).result()]}

    async def anode(s: dict) -> dict:
        return {"log": [await double(21)]}

    g = StateGraph(S)
    g.add_node("n", node if style == "sync" else anode)
    g.add_edge(START, "n")
    app = g.compile(backend="alto", executor="inline")
    inputs = {"log": [], "fail": False}
    out = app.invoke(inputs) if style == "sync" else asyncio.run(app.ainvoke(inputs))
    assert out["log"] == [42]


def test_alto_draws_no_ids_from_uuid4(monkeypatch: pytest.MonkeyPatch) -> None:
    """Apps patch uuid.uuid4 for deterministic ids; alto must not shift them."""
    import uuid

    counts = {}
    real = uuid.uuid4
    for backend in ("pregel", "alto"):
        n = 0

        def counting() -> uuid.UUID:
            nonlocal n
            n += 1
            return real()

        monkeypatch.setattr(uuid, "uuid4", counting)
        asyncio.run(
            nested(delay=0.001).compile(**_backend(backend)).ainvoke({"log": [], "fail": False})
        )
        counts[backend] = n
    assert counts["alto"] == counts["pregel"]


@pytest.mark.parametrize("fallback", [False, True], ids=["alto", "stock-fallback"])
@pytest.mark.filterwarnings("ignore::alto_langgraph.AltoFallbackWarning")
async def test_closing_the_stream_cancels_the_running_node_at_once(fallback: bool) -> None:
    cancelled = asyncio.Event()
    started = asyncio.Event()

    async def forever(s: dict) -> dict:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {}

    async def quick(s: dict) -> dict:
        await started.wait()
        return {"log": ["quick"]}

    g = StateGraph(S)
    g.add_node("a", lambda s: {"log": ["a"]})
    g.add_node("forever", forever)
    g.add_node("quick", quick)
    g.add_edge(START, "a")
    g.add_edge("a", "forever")
    g.add_edge("a", "quick")
    from langgraph.checkpoint.memory import InMemorySaver

    app = g.compile(
        backend="alto", executor="inline", checkpointer=InMemorySaver() if fallback else None
    )
    stream = app.astream({"log": [], "fail": False}, {"configurable": {"thread_id": "t"}})
    async for chunk in stream:
        if "quick" in chunk:  # forever is running now
            break
    await stream.aclose()
    assert cancelled.is_set()
    assert _alto_tasks() == []


def test_with_config_leaves_the_running_graph_untouched(monkeypatch: pytest.MonkeyPatch) -> None:
    """copy()/with_config must not touch the graph other threads may be running (it
    once took alto's state off the original while building the copy)."""
    from langgraph.graph.state import CompiledStateGraph

    app = nested().compile(backend="alto", executor="inline")
    original_init = CompiledStateGraph.__init__
    seen_during_copy: list[bool] = []

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        seen_during_copy.append(hasattr(app, "_alto"))
        original_init(self, *args, **kwargs)

    monkeypatch.setattr(CompiledStateGraph, "__init__", init)
    copied = app.with_config(tags=["t"])
    monkeypatch.undo()
    assert seen_during_copy == [True]
    assert copied._alto is app._alto
    out = asyncio.run(copied.ainvoke({"log": [], "fail": False}))
    assert out["log"] == ["b0", "b1", "b2", "c0", "c1", "c2"]


@pytest.mark.parametrize("style", ["sync", "async"])
def test_lone_send_target_with_timeout_runs_once(style: str) -> None:
    """LangGraph wraps the send function of a node with a timeout; adoption must not
    depend on its shape (it ran the node a second time once)."""
    calls: list[int] = []

    async def slow(p: dict) -> dict:
        calls.append(p["i"])
        return {"log": [f"slow{p['i']}"]}

    def b(p: dict) -> Command:
        if p["i"] == 0:
            time.sleep(0.05)  # a slow sibling: slow1 runs ahead meanwhile
            return Command(goto=[])
        return Command(goto=[Send("slow", p)])

    g = StateGraph(S)
    g.add_node("b", b)
    g.add_node("slow", slow, timeout=5)
    g.add_conditional_edges(START, lambda s: [Send("b", {"i": i}) for i in range(2)])
    out = asyncio.run(
        g.compile(backend="alto", executor="inline").ainvoke({"log": [], "fail": False})
    )
    assert out["log"] == ["slow1"]
    assert calls == [1]


@pytest.mark.parametrize("style", ["sync", "async"])
def test_failed_lone_twin_is_retried_by_langgraph_not_twice(style: str) -> None:
    """A twin makes one attempt; LangGraph's retry loop around the loop's task does the
    rest: the same attempts and the same exception notes as on stock LangGraph."""
    seen = {}
    for backend in ("pregel", "alto"):
        calls: list[int] = []

        def w(p: dict, calls: list[int] = calls) -> dict:
            calls.append(p["i"])
            raise ConnectionError("w always fails")

        def b(p: dict) -> Command:
            if p["i"] == 0:
                time.sleep(0.05)
                return Command(goto=[])
            return Command(goto=[Send("w", p)])

        g = StateGraph(S)
        g.add_node("b", b)
        policy = RetryPolicy(max_attempts=3, initial_interval=0.001, jitter=False)
        g.add_node("w", w, retry_policy=policy)
        g.add_conditional_edges(START, lambda s: [Send("b", {"i": i}) for i in range(2)])
        app = g.compile(**_backend(backend))
        with pytest.raises(ConnectionError, match="w always fails") as info:
            if style == "sync":
                app.invoke({"log": [], "fail": False})
            else:
                asyncio.run(app.ainvoke({"log": [], "fail": False}))
        notes = [n.split(" and id")[0] for n in getattr(info.value, "__notes__", [])]
        seen[backend] = (len(calls), notes)
    assert seen["alto"] == seen["pregel"]
    assert seen["alto"][0] == 3


def test_graphs_with_a_store_or_step_timeout_run_on_alto_with_tasks_at_their_step() -> None:
    from langgraph.store.memory import InMemoryStore

    with warnings.catch_warnings():
        warnings.simplefilter("error", alto_langgraph.AltoFallbackWarning)
        app = nested().compile(backend="alto", executor="inline", store=InMemoryStore())
        out = asyncio.run(app.ainvoke({"log": [], "fail": False}))
        assert out["log"] == ["b0", "b1", "b2", "c0", "c1", "c2"]
        assert all(s["run_ahead"] == 0 for s in app.run_ahead_stats().values())
        app = nested().compile(backend="alto", executor="inline")
        app.step_timeout = 30
        assert asyncio.run(app.ainvoke({"log": [], "fail": False})) == out
        assert all(s["run_ahead"] == 0 for s in app.run_ahead_stats().values())
    # without either, the Sends run ahead
    app = nested().compile(backend="alto", executor="inline")
    assert asyncio.run(app.ainvoke({"log": [], "fail": False})) == out
    assert sum(s["run_ahead"] for s in app.run_ahead_stats().values()) > 0


@pytest.mark.parametrize("style", ["sync", "async"])
def test_a_failed_request_logs_nothing(style: str, caplog: pytest.LogCaptureFixture) -> None:
    """Twins that nobody claims (the request failed) leave no unretrieved-exception or
    callback errors behind."""
    import gc
    import logging

    def b(p: dict) -> Command:
        time.sleep(0.05 if p["i"] == 0 else 0.01)
        if p["i"] == 1:
            raise ValueError("b1 failed")
        return Command(goto=[Send("c", p)])

    def c(p: dict) -> dict:
        time.sleep(0.05)
        raise KeyError("c failed too")

    g = StateGraph(S)
    g.add_node("b", b)
    g.add_node("c", c)
    g.add_conditional_edges(START, lambda s: [Send("b", {"i": i}) for i in range(2)])
    app = g.compile(backend="alto", executor="inline")
    with caplog.at_level(logging.WARNING):
        with pytest.raises(ValueError, match="b1 failed"):
            if style == "sync":
                app.invoke({"log": [], "fail": False})
            else:
                asyncio.run(app.ainvoke({"log": [], "fail": False}))
        time.sleep(0.1)
        gc.collect()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_twin_waiting_on_a_task_call_is_released_when_the_request_fails() -> None:
    """A twin blocked on a functional-API call (which waits for the loop to reach its
    step) must not keep its thread alive once the request has failed."""
    from langgraph.func import task

    @task
    def double(x: int) -> int:
        return 2 * x

    finished = threading.Event()

    def w(p: dict) -> dict:
        try:
            return {"log": [double(p["i"]).result()]}
        finally:
            finished.set()

    def b(p: dict) -> Command:
        if p["i"] == 1:
            time.sleep(0.05)  # w0 runs ahead and waits for its call meanwhile
            raise ValueError("b1 failed")
        return Command(goto=[Send("w", p)])

    g = StateGraph(S)
    g.add_node("b", b)
    g.add_node("w", w)
    g.add_conditional_edges(START, lambda s: [Send("b", {"i": i}) for i in range(2)])
    with pytest.raises(ValueError, match="b1 failed"):
        g.compile(backend="alto", executor="inline").invoke({"log": [], "fail": False})
    assert finished.wait(5)


@pytest.mark.parametrize("style", ["sync", "async"])
def test_every_item_carries_its_nested_ancestry(style: str) -> None:
    """Each task's config names each fan-out its item descends from (DESIGN.md section
    5), including Sends of a sender LangGraph ran inline and items of a subgraph
    invoked per item."""
    from alto_langgraph.config_keys import CONFIG_KEY_ANCESTRY

    seen: set[tuple[str, Any]] = set()

    def record(stage: str, config: RunnableConfig) -> None:
        seen.add((stage, config["configurable"][CONFIG_KEY_ANCESTRY]))

    class Inner(TypedDict):
        log: Annotated[list, operator.add]

    def fan(s: dict, config: RunnableConfig) -> Command:
        record("c", config)  # the subgraph's entry node: the scope of the item running c
        return Command(goto=[Send("leaf", {"k": k}) for k in range(2)])

    def leaf(p: dict, config: RunnableConfig) -> dict:
        record("leaf", config)
        return {"log": [f"leaf{p['k']}"]}

    inner = StateGraph(Inner)
    inner.add_node("fan", fan)
    inner.add_node("leaf", leaf)
    inner.add_edge(START, "fan")

    def b(p: dict, config: RunnableConfig) -> Command:
        record("b", config)
        time.sleep(0.02 * (2 - p["i"]))  # b1 finishes first: its c runs ahead
        return Command(goto=[Send("c", {"log": []})])

    g = StateGraph(S)
    g.add_node("a", lambda s: Command(goto=[Send("b", {"i": i}) for i in range(2)]))
    g.add_node("b", b)
    g.add_node("c", inner.compile())
    g.add_edge(START, "a")
    app = g.compile(backend="alto", executor="inline")
    inputs = {"log": [], "fail": False}
    out = app.invoke(inputs) if style == "sync" else asyncio.run(app.ainvoke(inputs))
    assert sorted(out["log"]) == ["leaf0", "leaf0", "leaf1", "leaf1"]
    for i in range(2):
        assert ("b", (("a", i),)) in seen  # a ran alone, inline
        assert ("c", (("a", i), ("b", 0))) in seen
        for k in range(2):  # inside the subgraph c invoked for item i
            assert ("leaf", (("a", i), ("b", 0), ("fan", k))) in seen
