"""Apps with memory and a human in the loop: checkpointers (in memory, SQLite, a real
PostgreSQL), interrupt()/Command(resume=...), interrupt_before/after and the state API
run on alto and give what stock LangGraph gives: each call's result, and the thread's
checkpoint history (values, next, metadata, tasks, interrupts). A thread started on one
backend continues on the other."""

from __future__ import annotations

import operator
import threading
import time
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.constants import END, START
from langgraph.graph import StateGraph
from langgraph.types import Command, Send, StateUpdate, interrupt
from memory_harness import SAVERS, Scenario, transcript


class Log(TypedDict, total=False):
    log: Annotated[list, operator.add]
    items: list
    flag: str


def _append(tag: str) -> Any:
    return lambda s: {"log": [tag]}


# -- the graphs ------------------------------------------------------------------------


def chat() -> StateGraph:
    """One node replying to the last message: memory across turns."""
    g = StateGraph(Log)
    g.add_node("reply", lambda s: {"log": [f"re:{s['log'][-1]}:{len(s['log'])}"]})
    g.add_edge(START, "reply")
    return g


def fanout_with_approval() -> StateGraph:
    """Send workers; the one for "b" asks a human, the others do not wait for it."""

    def worker(s: dict) -> dict:
        item = s["item"]
        if item == "b":
            return {"log": [f"{item}:{interrupt(f'approve {item}?')}"]}
        return {"log": [item]}

    g = StateGraph(Log)
    g.add_node("plan", lambda s: {"log": ["plan"]})
    g.add_node("worker", worker)
    g.add_node("done", lambda s: {"log": [f"done:{len(s['log'])}"]})
    g.add_edge(START, "plan")
    g.add_conditional_edges(
        "plan", lambda s: [Send("worker", {"item": i}) for i in s["items"]], ["worker"]
    )
    g.add_edge("worker", "done")
    return g


def slow_sibling_then_question() -> StateGraph:
    """a -> ask runs ahead of the slow sibling b; ask interrupts: its run ahead of the
    step is not the interrupt the human answers (that one comes from its step)."""
    asked = threading.Event()

    def slow(s: dict) -> dict:
        asked.wait(0.2)  # ask's run ahead (if any) comes first, or 0.2 s pass
        return {"log": ["b"]}

    def ask(s: dict) -> dict:
        answer = interrupt(f"after {sorted(s['log'])}?")
        asked.set()
        return {"log": [f"ask:{answer}"]}

    g = StateGraph(Log)
    g.add_node("a", _append("a"))
    g.add_node("b", slow)
    g.add_node("ask", ask)
    g.add_node("end", lambda s: {"log": [f"end:{len(s['log'])}"]})
    g.add_edge(START, "a")
    g.add_edge(START, "b")
    g.add_edge("a", "ask")
    g.add_edge(["ask", "b"], "end")
    return g


def chain() -> StateGraph:
    g = StateGraph(Log)
    for n in "abc":
        g.add_node(n, _append(n))
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    g.add_edge("b", "c")
    return g


def two_questions() -> StateGraph:
    """Two Send workers interrupt in one step: resumed by interrupt id."""

    def worker(s: dict) -> dict:
        return {"log": [f"{s['item']}:{interrupt(s['item'])}"]}

    g = StateGraph(Log)
    g.add_node("plan", _append("plan"))
    g.add_node("worker", worker)
    g.add_edge(START, "plan")
    g.add_conditional_edges(
        "plan", lambda s: [Send("worker", {"item": i}) for i in s["items"]], ["worker"]
    )
    return g


def with_subgraph() -> StateGraph:
    """A subgraph node that interrupts inside: its state is in the parent's thread."""
    inner = StateGraph(Log)
    inner.add_node("x", _append("x"))
    inner.add_node("y", lambda s: {"log": [f"y:{interrupt('inner?')}"]})
    inner.add_edge(START, "x")
    inner.add_edge("x", "y")
    g = StateGraph(Log)
    g.add_node("pre", _append("pre"))
    g.add_node("sub", inner.compile())
    g.add_node("post", lambda s: {"log": [f"post:{len(s['log'])}"]})
    g.add_edge(START, "pre")
    g.add_edge("pre", "sub")
    g.add_edge("sub", "post")
    return g


_failed: set[str] = set()


def fails_once() -> StateGraph:
    """b fails on its thread's first attempt; a's write is kept as a pending write and
    resuming runs b alone."""

    def b(s: dict, config: RunnableConfig) -> dict:
        thread = config["configurable"]["thread_id"]
        if thread not in _failed:
            _failed.add(thread)
            raise ValueError("b failed")
        return {"log": ["b"]}

    g = StateGraph(Log)
    g.add_node("a", _append("a"))
    g.add_node("b", b)
    g.add_node("c", lambda s: {"log": [f"c:{sorted(s['log'])}"]})
    g.add_edge(START, "a")
    g.add_edge(START, "b")
    g.add_edge(["a", "b"], "c")
    return g


# -- the calls ---------------------------------------------------------------------------


def _invoke(value: Any, **kwargs: Any) -> Any:
    return lambda app, cfg: app.invoke(value, cfg, **kwargs)


def _stream(value: Any, **kwargs: Any) -> Any:
    return lambda app, cfg: list(app.stream(value, cfg, stream_mode="updates", **kwargs))


def _state(subgraphs: bool = False) -> Any:
    return lambda app, cfg: app.get_state(cfg, subgraphs=subgraphs)


def _resume_each(app: Any, cfg: dict) -> Any:
    """Answer every pending interrupt by its id (ids differ per run; values do not)."""
    pending = app.get_state(cfg).interrupts
    return app.invoke(Command(resume={i.id: f"ans-{i.value}" for i in pending}), cfg)


def _checkpoint_before(node: str) -> Any:
    def find(app: Any, cfg: dict) -> dict:
        return next(s.config for s in app.get_state_history(cfg) if s.next == (node,))

    return find


def _replay_from(node: str) -> Any:
    return lambda app, cfg: app.invoke(None, _checkpoint_before(node)(app, cfg))


def _fork_at(node: str, values: dict) -> Any:
    def fork(app: Any, cfg: dict) -> Any:
        forked = app.update_state(_checkpoint_before(node)(app, cfg), values)
        return app.invoke(None, forked)

    return fork


def _update(values: Any, as_node: str | None = None) -> Any:
    def update(app: Any, cfg: dict) -> Any:
        app.update_state(cfg, values, as_node=as_node)
        return app.get_state(cfg)

    return update


def _bulk(*supersteps: list[StateUpdate]) -> Any:
    def bulk(app: Any, cfg: dict) -> Any:
        app.bulk_update_state(cfg, list(supersteps))
        return app.get_state(cfg)

    return bulk


def _ainvoke(value: Any) -> Any:
    async def call(app: Any, cfg: dict) -> Any:
        return await app.ainvoke(value, cfg)

    return call


async def _astate(app: Any, cfg: dict) -> Any:
    return await app.aget_state(cfg)


SCENARIOS: dict[str, Scenario] = {
    "chat-3-turns": Scenario(
        chat,
        [_invoke({"log": ["hi"]}), _invoke({"log": ["how"]}), _invoke({"log": ["bye"]}), _state()],
    ),
    "send-interrupt-resume": Scenario(
        fanout_with_approval,
        [
            _invoke({"items": ["a", "b", "c"]}),
            _state(),
            _invoke(Command(resume="yes")),
            _state(),
        ],
    ),
    "run-ahead-task-interrupts": Scenario(
        slow_sibling_then_question,
        [_stream({"log": []}), _state(), _stream(Command(resume="go")), _state()],
    ),
    "interrupt-before-update-as-node": Scenario(
        chain,
        [
            _invoke({"log": []}),
            _state(),
            _update({"log": ["edited"]}, as_node="b"),
            _invoke(None),
            _state(),
        ],
        {"interrupt_before": ["b"]},
    ),
    "interrupt-after-per-call": Scenario(
        chain,
        [_invoke({"log": []}, interrupt_after=["a"]), _state(), _invoke(None), _state()],
    ),
    "resume-by-interrupt-id": Scenario(
        two_questions,
        [_invoke({"items": ["p", "q"]}), _state(), _resume_each, _state()],
    ),
    "time-travel-replay-and-fork": Scenario(
        chain,
        [
            _invoke({"log": []}),
            _replay_from("b"),
            _fork_at("b", {"log": ["forked"]}),
            _state(),
        ],
    ),
    "subgraph-interrupt": Scenario(
        with_subgraph,
        [_invoke({"log": []}), _state(subgraphs=True), _invoke(Command(resume="in")), _state()],
    ),
    "durability-exit-then-sync": Scenario(
        fanout_with_approval,
        [
            _invoke({"items": ["a", "c"]}, durability="exit"),
            _invoke({"items": ["c"]}, durability="sync"),
        ],
    ),
    "bulk-update": Scenario(
        chain,
        [
            _invoke({"log": []}),
            _bulk([StateUpdate({"log": ["u1"]}, "a")], [StateUpdate({"log": ["u2"]}, "b")]),
            _invoke(None),
        ],
    ),
    "failed-task-resumes-alone": Scenario(fails_once, [_invoke({"log": []}), _invoke(None)]),
    "async-chat-and-resume": Scenario(
        fanout_with_approval,
        [
            _ainvoke({"items": ["b", "c"]}),
            _astate,
            _ainvoke(Command(resume="ok")),
            _ainvoke({"items": ["a"]}),
        ],
        is_async=True,
    ),
}


@pytest.mark.parametrize("kind", SAVERS)
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_same_calls_and_history_as_stock(name: str, kind: str, tmp_path: Any) -> None:
    scenario = SCENARIOS[name]
    n = len(scenario.calls)
    stock = transcript(scenario, ["stock"] * n, kind, tmp_path)
    alto = transcript(scenario, ["alto"] * n, kind, tmp_path)
    assert alto[0] == stock[0]
    assert alto[1] == stock[1]
    assert len(stock[1]) >= 2  # a history to compare


@pytest.mark.parametrize("kind", SAVERS)
@pytest.mark.parametrize(
    "name", [n for n, s in SCENARIOS.items() if len(s.calls) >= 2 and not s.is_async]
)
def test_a_thread_moves_between_backends(name: str, kind: str, tmp_path: Any) -> None:
    """Started on one backend, continued on the other (same saver): the same results
    and history as a thread that stayed on stock LangGraph."""
    scenario = SCENARIOS[name]
    n = len(scenario.calls)
    cut = n // 2
    stock = transcript(scenario, ["stock"] * n, kind, tmp_path)
    assert transcript(scenario, ["alto"] * cut + ["stock"] * (n - cut), kind, tmp_path) == stock
    assert transcript(scenario, ["stock"] * cut + ["alto"] * (n - cut), kind, tmp_path) == stock


@pytest.mark.parametrize(
    "name", ["send-interrupt-resume", "interrupt-before-update-as-node", "subgraph-interrupt"]
)
def test_same_on_worker_processes(name: str, tmp_path: Any) -> None:
    """Nodes on worker processes: interrupt() there gets the loop's resume values."""
    scenario = SCENARIOS[name]
    n = len(scenario.calls)
    stock = transcript(scenario, ["stock"] * n, "sqlite", tmp_path)
    assert transcript(scenario, ["alto"] * n, "sqlite", tmp_path, executor="process") == stock


def test_a_task_that_ran_ahead_and_interrupted_is_not_the_interrupt_saved(tmp_path: Any) -> None:
    """ask runs ahead while b sleeps and interrupts there; that twin is a miss, and the
    interrupt saved (and answered) is the one of the loop's task at its step."""
    scenario = SCENARIOS["run-ahead-task-interrupts"]
    app = scenario.build().compile(backend="alto", checkpointer=_saver())
    cfg = {"configurable": {"thread_id": "t"}}
    with app:
        first = list(app.stream({"log": []}, cfg))
        (pending,) = app.get_state(cfg).interrupts
        assert first[-1]["__interrupt__"][0].id == pending.id
        stats = app.run_ahead_stats()["ask"]
        assert stats["run_ahead"] == 1 and stats["missed"] == 1
        out = app.invoke(Command(resume="go"), cfg)
    assert out["log"] == ["a", "b", "ask:go", "end:3"]


def _saver() -> Any:
    from langgraph.checkpoint.memory import InMemorySaver

    return InMemorySaver()


def test_speculative_work_is_not_saved_before_its_step() -> None:
    """A pull task that ran ahead is saved as a pending write only when its step is
    reached: while the slow sibling still runs, the saver has none of its writes."""
    seen: list[Any] = []
    saver = _saver()

    def slow(s: dict) -> dict:
        time.sleep(0.05)  # c runs ahead meanwhile
        seen.extend(saver.get_tuple({"configurable": {"thread_id": "t"}}).pending_writes)
        return {"log": ["b"]}

    g = StateGraph(Log)
    g.add_node("a", _append("a"))
    g.add_node("b", slow)
    g.add_node("c", _append("c"))
    g.add_edge(START, "a")
    g.add_edge(START, "b")
    g.add_edge("a", "c")
    g.add_edge("c", END)
    g.add_edge("b", END)
    with g.compile(backend="alto", checkpointer=saver) as app:
        out = app.invoke({"log": []}, {"configurable": {"thread_id": "t"}})
        assert app.run_ahead_stats()["c"]["adopted"] == 1
    assert out["log"] == ["a", "b", "c"]
    written = [w[2] for w in seen if w[1] == "log"]
    assert ["a"] in written and ["c"] not in written


def test_a_subgraph_with_memory_does_not_run_ahead() -> None:
    """A subgraph keeps its checkpoints under the loop's task: with a checkpointer it
    runs at its step (without one, it runs ahead)."""
    scenario = SCENARIOS["subgraph-interrupt"]
    g = StateGraph(Log)
    g.add_node("a", _append("a"))
    g.add_node("b", lambda s: (time.sleep(0.05), {"log": ["b"]})[1])
    g.add_node("sub", scenario.build().compile())
    g.add_edge(START, "a")
    g.add_edge(START, "b")
    g.add_edge("a", "sub")
    cfg = {"configurable": {"thread_id": "t"}}
    with g.compile(backend="alto", checkpointer=_saver()) as app:
        app.invoke({"log": []}, cfg)
        assert app.run_ahead_stats().get("sub", {}).get("run_ahead", 0) == 0
        out = app.invoke(Command(resume="r"), cfg)
    assert "y:r" in out["log"]
