"""Branch-local progress: a task triggered by an edge runs ahead of its superstep, with
LangGraph's answers.

Every graph here forks into a fast branch and a slow sibling. The slow sibling waits
(up to a gate) until the fast branch's successor has run, so on alto that successor
deterministically runs ahead of its superstep, and where it reads a key the slow
sibling writes it deterministically misses. Stock LangGraph never opens the gate (the
superstep barrier), so its runs use a short one; answers do not depend on the gate.
Each case compares the final state, the ``values`` sequence and the multiset of
``updates`` with stock, and asserts how many tasks ran ahead, were adopted or missed,
so that a change that silently stops running ahead (or never misses where it must)
fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import operator
import os
import tempfile
import time
from collections.abc import Callable
from typing import Annotated, Any

import pytest
from harness import Outcome, canonical, run
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.errors import GraphRecursionError
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.managed import RemainingSteps
from langgraph.types import Command, interrupt
from pydantic import BaseModel
from typing_extensions import TypedDict

import alto_langgraph
from alto_langgraph.scheduling import progress
from alto_langgraph.scheduling.progress import MISS_LIMIT

GATE = 5.0  # how long the slow sibling waits on alto for the fast branch's successor
STOCK_GATE = 0.02  # ... and on stock LangGraph, where it can never come


class S(TypedDict, total=False):
    log: Annotated[list, operator.add]
    b_out: str
    c_out: str
    d_saw: Any


Build = Callable[[float], tuple[StateGraph, Any]]


class Gate:
    """Opened by the fast branch's successor; the slow sibling waits for it. A file, so
    that nodes in worker processes open and wait for it too."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        fd, self.path = tempfile.mkstemp(prefix="alto-gate-")
        os.close(fd)
        self.close()

    def open(self) -> None:
        with open(self.path, "w"):
            pass

    def close(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def wait(self) -> bool:
        deadline = time.monotonic() + self.timeout
        while not os.path.exists(self.path):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True

    async def await_(self) -> bool:
        return await asyncio.to_thread(self.wait)


def fork(
    state: type,
    d: Callable[[Any], Any],
    gate: Gate,
    *,
    c_update: Any = None,
    is_async: bool = False,
    nodes: dict[str, Any] | None = None,
) -> StateGraph:
    """a -> (b -> d, c); c waits for the gate (d opens it) and then writes ``c_update``.
    a closes the gate, so each request of an app waits for its own d. ``nodes``: nodes
    that replace the default ones (a callable, or (callable, add_node keywords))."""
    c_update = c_update if c_update is not None else {"c_out": "c", "log": ["c"]}

    def c(_: Any) -> Any:
        gate.wait()
        return c_update

    async def ac(_: Any) -> Any:
        await gate.await_()
        return c_update

    def d_node(s: Any) -> Any:
        try:
            return d(s)
        finally:
            gate.open()

    async def ad_node(s: Any) -> Any:
        try:
            return d(s)
        finally:
            gate.open()

    g = StateGraph(state)
    default = {
        "a": lambda s: (gate.close(), {"log": ["a"]})[1],
        "b": lambda s: {"b_out": "b", "log": ["b"]},
        "c": ac if is_async else c,
        "d": ad_node if is_async else d_node,
    }
    for name, node in {**default, **(nodes or {})}.items():
        fn, kw = node if isinstance(node, tuple) else (node, {})
        g.add_node(name, fn, **kw)
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    g.add_edge("a", "c")
    g.add_edge("b", "d")
    return g


def compare(
    build: Build, *, sync: bool = True, executor: str = "auto", updates: bool = True, **kw: Any
) -> tuple[Outcome, Outcome]:
    """Run on stock and on alto; same final state, ``values`` in order, ``updates`` as
    a multiset (unless ``updates=False``: a streaming node's differ), same error."""
    modes = ["updates", "values"]
    builder, inputs = build(STOCK_GATE)
    stock = run(builder, inputs, backend="pregel", sync=sync, stream_mode=modes, **kw)
    builder, inputs = build(GATE)
    alto = run(
        builder, inputs, backend="alto", sync=sync, executor=executor, stream_mode=modes, **kw
    )
    assert alto.error_signature() == stock.error_signature(), (alto.error, stock.error)
    assert canonical(alto.final) == canonical(stock.final)

    def of(out: Outcome, mode: str) -> list[str]:
        return [canonical(data) for m, data in out.chunks if m == mode]

    if stock.error is None:
        assert of(alto, "values") == of(stock, "values")
        if updates:
            assert sorted(of(alto, "updates")) == sorted(of(stock, "updates"))
    return stock, alto


def ahead(out: Outcome, node: str) -> tuple[int, int, int, int]:
    """(ran ahead, adopted, missed, dropped) for ``node``."""
    s = out.ahead.get(node, {})
    return (s.get("run_ahead", 0), s.get("adopted", 0), s.get("missed", 0), s.get("dropped", 0))


STYLES = [
    pytest.param(True, "auto", id="sync-auto"),
    pytest.param(False, "auto", id="async-auto"),
    pytest.param(True, "process", id="sync-process"),
    pytest.param(False, "process", id="async-process"),
]


# -- the node reads nothing a sibling writes: adopted ----------------------------------
@pytest.mark.parametrize(("sync", "executor"), STYLES)
def test_a_successor_that_reads_its_own_branch_is_adopted(sync: bool, executor: str) -> None:
    def build(t: float) -> tuple[StateGraph, Any]:
        gate = Gate(t)
        g = fork(S, lambda s: {"d_saw": s["b_out"], "log": ["d"]}, gate)
        return g, {"log": []}

    _, alto = compare(build, sync=sync, executor=executor)
    assert alto.final["d_saw"] == "b"
    assert ahead(alto, "d") == (1, 1, 0, 0)


@pytest.mark.parametrize("executor", ["auto", "inline", "process"])
@pytest.mark.parametrize("reads", ["b_out", "c_out"])
def test_async_nodes(executor: str, reads: str) -> None:
    def build(t: float) -> tuple[StateGraph, Any]:
        d = lambda s: {"d_saw": s.get(reads)}  # noqa: E731
        return fork(S, d, Gate(t), is_async=True), {"log": []}

    _, alto = compare(build, sync=False, executor=executor)
    miss = int(reads == "c_out")
    assert ahead(alto, "d") == (1, 1 - miss, miss, 0)


# -- the node reads what a sibling writes: a miss, and the answer stock gives -----------
@pytest.mark.parametrize(("sync", "executor"), STYLES)
def test_reading_a_siblings_key_misses(sync: bool, executor: str) -> None:
    def build(t: float) -> tuple[StateGraph, Any]:
        gate = Gate(t)
        g = fork(S, lambda s: {"d_saw": s.get("c_out"), "log": ["d"]}, gate)
        return g, {"log": []}

    _, alto = compare(build, sync=sync, executor=executor)
    assert alto.final["d_saw"] == "c"  # run again at its step, it saw c's write
    assert ahead(alto, "d") == (1, 0, 1, 0)


@pytest.mark.parametrize(("sync", "executor"), STYLES)
def test_a_reducer_list_both_branches_append_to_and_read_misses(sync: bool, executor: str) -> None:
    def build(t: float) -> tuple[StateGraph, Any]:
        gate = Gate(t)
        g = fork(S, lambda s: {"d_saw": list(s["log"]), "log": ["d"]}, gate)
        return g, {"log": ["start"]}

    _, alto = compare(build, sync=sync, executor=executor)
    assert alto.final["d_saw"] == ["start", "a", "b", "c"]
    assert ahead(alto, "d") == (1, 0, 1, 0)


@pytest.mark.parametrize("read", ["dict(state)", "len(state)", "iterate", "in"])
def test_whole_state_reads_count_as_reading_the_siblings_key(read: str) -> None:
    def d(s: Any) -> Any:
        if read == "dict(state)":
            seen = sorted(dict(s))
        elif read == "len(state)":
            seen = len(s)
        elif read == "iterate":
            seen = [k for k in s]
        else:
            seen = "c_out" in s
        return {"d_saw": seen}

    def build(t: float) -> tuple[StateGraph, Any]:
        return fork(S, d, Gate(t)), {"log": []}

    _, alto = compare(build)
    assert ahead(alto, "d") == (1, 0, 1, 0)


def test_messages_state_branches_that_append_and_read_messages() -> None:
    class M(MessagesState):
        b_out: str
        c_out: str

    def build(t: float) -> tuple[StateGraph, Any]:
        gate = Gate(t)
        update = {"messages": [AIMessage("from c", id="c")]}
        g = fork(
            M,
            lambda s: {"messages": [AIMessage(f"d saw {len(s['messages'])}", id="d")]},
            gate,
            c_update=update,
        )
        return g, {"messages": [HumanMessage("hi", id="h")]}

    _, alto = compare(build)
    assert alto.final["messages"][-1].content == "d saw 2"  # h and c's (b wrote none)
    assert ahead(alto, "d") == (1, 0, 1, 0)


# -- pydantic and dataclass states -------------------------------------------------------
class P(BaseModel):
    log: Annotated[list, operator.add] = []
    b_out: str = ""
    c_out: str = ""
    d_saw: Any = None


@dataclasses.dataclass
class D:
    log: Annotated[list, operator.add] = dataclasses.field(default_factory=list)
    b_out: str = ""
    c_out: str = ""
    d_saw: Any = None


@pytest.mark.parametrize("schema", [P, D], ids=["pydantic", "dataclass"])
@pytest.mark.parametrize(
    ("read", "misses"),
    [("b_out", 0), ("c_out", 1), ("whole", 1)],
)
def test_model_states_record_field_reads(schema: type, read: str, misses: int) -> None:
    def d(s: Any) -> Any:
        assert isinstance(s, schema)  # the user's class, as on stock
        if read == "whole":
            seen = s.model_dump() if schema is P else dataclasses.asdict(s)
            return {"d_saw": sorted(seen)}
        return {"d_saw": getattr(s, read)}

    def build(t: float) -> tuple[StateGraph, Any]:
        return fork(schema, d, Gate(t)), {"log": []}

    _, alto = compare(build)
    assert ahead(alto, "d") == (1, 1 - misses, misses, 0)


def test_input_schema_narrows_what_a_whole_read_reads() -> None:
    class DIn(TypedDict, total=False):
        b_out: str

    def build(t: float) -> tuple[StateGraph, Any]:
        gate = Gate(t)

        def d(s: DIn) -> Any:
            try:
                return {"d_saw": dict(s)}  # the whole of its input: b_out only
            finally:
                gate.open()

        return fork(S, d, gate, nodes={"d": (d, {"input_schema": DIn})}), {"log": []}

    _, alto = compare(build)
    assert alto.final["d_saw"] == {"b_out": "b"}
    assert ahead(alto, "d") == (1, 1, 0, 0)


# -- control flow ------------------------------------------------------------------------
def test_command_goto_from_a_branch_runs_ahead() -> None:
    def build(t: float) -> tuple[StateGraph, Any]:
        gate = Gate(t)
        e = lambda s: (gate.open(), {"log": ["e"], "d_saw": s["b_out"]})[1]  # noqa: E731
        b = lambda s: Command(update={"b_out": "b2"}, goto="e")  # noqa: E731
        g = fork(S, lambda s: {"log": ["d"]}, gate, nodes={"b": b, "e": e})
        return g, {"log": []}

    _, alto = compare(build)
    assert ahead(alto, "e") == (1, 1, 0, 0)  # b's Command, and
    assert ahead(alto, "d") == (1, 1, 0, 0)  # b's static edge


def test_a_chain_runs_ahead_as_far_as_its_data_allows() -> None:
    def build(t: float) -> tuple[StateGraph, Any]:
        gate = Gate(t)
        f = lambda s: (gate.open(), {"log": ["f"], "d_saw": s["b_out"]})[1]  # noqa: E731
        nodes = {"d": lambda s: {"log": ["d"]}, "e": lambda s: {"log": ["e"]}, "f": f}
        g = fork(S, lambda s: {}, gate, nodes=nodes)
        g.add_edge("d", "e")
        g.add_edge("e", "f")
        return g, {"log": []}

    _, alto = compare(build)
    assert [ahead(alto, n) for n in "def"] == [(1, 1, 0, 0)] * 3


def test_a_miss_cascades_to_what_ran_ahead_on_its_writes() -> None:
    """d reads c's key, so it misses; e ran ahead on d's early writes and reads them:
    it misses too, and both end with stock's answer."""

    def build(t: float) -> tuple[StateGraph, Any]:
        gate = Gate(t)
        nodes = {
            "d": lambda s: {"b_out": f"d saw {s.get('c_out')}"},
            "e": lambda s: (gate.open(), {"d_saw": s["b_out"]})[1],
        }
        g = fork(S, lambda s: {}, gate, nodes=nodes)
        g.add_edge("d", "e")
        return g, {"log": []}

    _, alto = compare(build)
    assert alto.final["d_saw"] == "d saw c"
    assert ahead(alto, "d") == (1, 0, 1, 0)
    assert ahead(alto, "e") == (1, 0, 1, 0)


def test_a_waiting_edge_runs_once_all_its_sources_are_done() -> None:
    """a1 -> a2 -> a3 and b1 (slow) -> b2, joined by add_edge([a3, b2], join): a2 and
    a3 run ahead of b1's step; join waits for b2."""

    def build(t: float) -> tuple[StateGraph, Any]:
        gate = Gate(t)
        g = StateGraph(S)
        for n in ("a1", "a2", "b2", "join"):
            g.add_node(n, lambda s, n=n: {"log": [n]})
        g.add_node("a3", lambda s: (gate.open(), {"log": ["a3"]})[1])
        g.add_node("b1", lambda s: (gate.wait(), {"log": ["b1"]})[1])
        g.add_edge(START, "a1")
        g.add_edge(START, "b1")
        g.add_edge("a1", "a2")
        g.add_edge("a2", "a3")
        g.add_edge("b1", "b2")
        g.add_edge(["a3", "b2"], "join")
        return g, {"log": []}

    _, alto = compare(build)
    assert ahead(alto, "a2") == (1, 1, 0, 0)
    assert ahead(alto, "a3") == (1, 1, 0, 0)
    assert ahead(alto, "join") == (0, 0, 0, 0)  # its barrier completes at b2's step


def test_a_deferred_node_waits_for_the_end() -> None:
    def build(t: float) -> tuple[StateGraph, Any]:
        gate = Gate(t)
        nodes = {"e": (lambda s: {"d_saw": list(s["log"])}, {"defer": True})}
        g = fork(S, lambda s: {"log": ["d"]}, gate, nodes=nodes)
        g.add_edge("d", "e")
        return g, {"log": []}

    _, alto = compare(build)
    assert ahead(alto, "d") == (1, 1, 0, 0)
    assert ahead(alto, "e") == (0, 0, 0, 0)


@pytest.mark.parametrize("sync", [True, False])
def test_a_sibling_that_raises_drops_what_ran_ahead(sync: bool) -> None:
    def build(t: float) -> tuple[StateGraph, Any]:
        gate = Gate(t)

        def c(s: Any) -> Any:
            gate.wait()
            raise ValueError("c failed")

        return fork(S, lambda s: {"log": ["d"]}, gate, nodes={"c": c}), {"log": []}

    stock, alto = compare(build, sync=sync)
    assert isinstance(alto.error, ValueError)
    assert ahead(alto, "d") == (1, 0, 0, 1)


def test_a_sibling_that_interrupts_drops_what_ran_ahead() -> None:
    def build(t: float) -> tuple[StateGraph, Any]:
        gate = Gate(t)
        c = lambda s: (gate.wait(), {"c_out": interrupt("ok?")})[1]  # noqa: E731
        return fork(S, lambda s: {"log": ["d"]}, gate, nodes={"c": c}), {"log": []}

    _, alto = compare(build)
    assert any(m == "updates" and "__interrupt__" in data for m, data in alto.chunks)
    assert ahead(alto, "d") == (1, 0, 0, 1)


def test_no_task_runs_ahead_past_the_recursion_limit() -> None:
    def build(t: float) -> tuple[StateGraph, Any]:
        gate = Gate(t)
        g = fork(S, lambda s: {"log": ["d"]}, gate, nodes={"e": lambda s: {"log": ["e"]}})
        g.add_edge("d", "e")
        return g, {"log": []}

    # LangGraph runs d's step, then stops before e's
    stock, alto = compare(build, config={"recursion_limit": 3})
    assert [next(iter(u)) for m, u in stock.chunks if m == "updates"][-1] == "d"
    assert isinstance(alto.error, GraphRecursionError)
    assert ahead(alto, "d") == (1, 1, 0, 0)
    assert ahead(alto, "e") == (0, 0, 0, 0)


# -- switches and bounds -----------------------------------------------------------------
def _reads_c(t: float) -> tuple[StateGraph, Any]:
    return fork(S, lambda s: {"d_saw": s.get("c_out")}, Gate(t)), {"log": []}


def test_run_ahead_false_on_a_node_keeps_it_at_its_step() -> None:
    _, alto = compare(_reads_c, options={"stages": {"d": {"run_ahead": False}}})
    assert ahead(alto, "d") == (0, 0, 0, 0)


def test_run_ahead_false_on_the_app_keeps_every_task_at_its_step() -> None:
    _, alto = compare(_reads_c, options={"run_ahead": False})
    assert alto.ahead == {}


def test_run_ahead_setting_does_not_move_the_node_to_a_worker() -> None:
    builder, _ = _reads_c(0)
    app = builder.compile(backend="alto", stages={"d": {"run_ahead": False}})
    stage = app.plan.stage("d")
    assert (stage.placement, stage.run_ahead) == ("app", False)
    assert app.deployment is None
    assert "never runs ahead (run_ahead=False)" in str(app.plan)
    with pytest.raises(ValueError, match="run_ahead must be true or false"):
        builder.compile(backend="alto", stages={"d": {"run_ahead": "no"}})


def test_a_node_whose_misses_are_foreseen_waits_at_its_step() -> None:
    """After a miss, the app knows what d read and what c writes: while a c is still
    running, d is held at its step instead of running ahead to miss again."""

    def build(t: float) -> StateGraph:
        gate = Gate(t)

        def c(s: Any) -> Any:  # the second request's c waits for a d that is held
            gate.wait()
            time.sleep(0.02)
            return {"c_out": "c", "log": ["c"]}

        return fork(S, lambda s: {"d_saw": s.get("c_out")}, gate, nodes={"c": c})

    with build(0.2).compile(backend="alto") as app:
        assert app.invoke({"log": []})["d_saw"] == "c"
        assert app.run_ahead_stats()["d"]["missed"] == 1
        assert app.invoke({"log": []})["d_saw"] == "c"
        stats = app.run_ahead_stats()["d"]
        assert (stats["run_ahead"], stats["missed"], stats["held"]) == (1, 1, 1)


def test_nothing_runs_ahead_of_quick_siblings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Starting a task early costs a fraction of a millisecond: once the app knows the
    sibling still running is quick, its successors wait for their step (skipped)."""
    monkeypatch.setattr(progress, "WORTH_WAITING_FOR", 0.05)

    def c(s: Any) -> Any:
        time.sleep(0.005)
        return {"c_out": "c"}

    g = fork(S, lambda s: {"log": ["d"]}, Gate(0), nodes={"c": c})
    with g.compile(backend="alto") as app:
        for _ in range(6):
            assert app.invoke({"log": []})["log"] == ["a", "b", "d"]
        stats = app.run_ahead_stats()["d"]
        assert stats["run_ahead"] <= 1  # the first request, before c was measured
        assert stats["skipped"] >= 1


def test_a_node_that_keeps_missing_stops_running_ahead() -> None:
    """Misses the app cannot foresee (each request a sibling it has not seen before
    writes what d reads) stop d running ahead after MISS_LIMIT in a row."""

    def build(t: float) -> StateGraph:
        gate = Gate(t)
        siblings = [f"c{i}" for i in range(MISS_LIMIT + 1)]

        def c(s: Any) -> Any:
            gate.wait()
            return {"c_out": "c"}

        g = fork(S, lambda s: {"d_saw": s.get("c_out")}, gate, nodes=dict.fromkeys(siblings, c))
        g.edges.discard(("a", "c"))
        g.add_conditional_edges("a", lambda s: siblings[len(s["log"]) - 1])
        return g

    with build(GATE).compile(backend="alto") as app:
        for i in range(MISS_LIMIT):
            assert app.invoke({"log": ["x"] * i})["d_saw"] == "c"
        stats = app.run_ahead_stats()["d"]
        assert (stats["missed"], stats["held"], stats["stopped"]) == (MISS_LIMIT, 0, True)
    with build(0.2).compile(backend="alto") as app:  # the last one waits for no d
        for i in range(MISS_LIMIT + 1):
            assert app.invoke({"log": ["x"] * i})["d_saw"] == "c"
        assert app.run_ahead_stats()["d"]["run_ahead"] == MISS_LIMIT  # no more


def test_explain_shows_which_nodes_run_ahead() -> None:
    def build() -> StateGraph:
        g = fork(S, lambda s: {}, Gate(0), nodes={"e": (lambda s: {}, {"defer": True})})
        g.add_edge("d", "e")
        g.add_edge("e", END)
        return g

    text = str(build().compile(backend="alto").plan)
    assert "d                node, sync, runs ahead when its edge fires" in text
    assert "edge-triggered tasks wait for their step (defer=True)" in text
    reads = build().compile(backend="alto").plan.stage("d").reads
    assert reads == ("log", "b_out", "c_out", "d_saw")


# -- subgraphs and streaming nodes -------------------------------------------------------
def test_a_subgraphs_own_branches_run_ahead() -> None:
    def build(t: float) -> tuple[StateGraph, Any]:
        inner = fork(S, lambda s: {"d_saw": s["b_out"]}, Gate(t)).compile()
        g = StateGraph(S)
        g.add_node("sub", inner)
        g.add_node("after", lambda s: {"log": ["after"]})
        g.add_edge(START, "sub")
        g.add_edge("sub", "after")
        return g, {"log": []}

    _, alto = compare(build)
    assert ahead(alto, "sub/d") == (1, 1, 0, 0)


class InnerB(TypedDict, total=False):
    b_out: str
    d_saw: Any


class InnerBC(InnerB, total=False):
    c_out: str


@pytest.mark.parametrize(("schema", "misses"), [(InnerB, 0), (InnerBC, 1)])
def test_a_subgraph_node_runs_ahead_and_reads_its_input_schema(schema: type, misses: int) -> None:
    """A subgraph reads its whole input when it starts (LangGraph maps it to its
    channels), so the node's input schema says what it reads: it misses where the
    sibling writes one of those keys."""

    def build(t: float) -> tuple[StateGraph, Any]:
        gate = Gate(t)
        inner = StateGraph(schema)
        inner.add_node("read", lambda s: (gate.open(), {"d_saw": s.get("b_out")})[1])
        inner.add_edge(START, "read")
        d = (inner.compile(), {"input_schema": schema})
        return fork(S, lambda s: {}, gate, nodes={"d": d}), {"log": []}

    _, alto = compare(build)
    assert ahead(alto, "d") == (1, 1 - misses, misses, 0)


@pytest.mark.parametrize("sync", [True, False])
def test_a_streaming_node_triggers_run_ahead_when_it_ends(sync: bool) -> None:
    def build(t: float) -> tuple[StateGraph, Any]:
        gate = Gate(t)

        @alto_langgraph.streaming
        def b(s: Any) -> Any:
            yield {"log": ["b1"]}
            yield {"b_out": "b", "log": ["b2"]}

        return fork(S, lambda s: {"d_saw": s["b_out"]}, gate, nodes={"b": b}), {"log": []}

    # its partial updates stream as they come (tests/test_streaming.py): not stock's
    _, alto = compare(build, sync=sync, updates=False)
    assert ahead(alto, "d") == (1, 1, 0, 0)


@pytest.mark.parametrize(("executor", "sync"), [("auto", True), ("auto", False), ("process", True)])
@pytest.mark.parametrize(("reads", "misses"), [("b_out", 0), ("c_out", 1)])
def test_a_streaming_node_runs_ahead_and_its_partial_updates_wait_for_hand_over(
    executor: str, sync: bool, reads: str, misses: int
) -> None:
    """A @streaming node's partial updates go out as it yields them, but one that ran
    ahead holds them until the loop adopts its result: a miss streams only the rerun's."""

    def build(t: float) -> tuple[StateGraph, Any]:
        gate = Gate(t)

        @alto_langgraph.streaming
        def d(s: Any) -> Any:
            seen = s.get(reads)
            gate.open()
            yield {"log": ["d1"]}
            yield {"d_saw": seen, "log": ["d2"]}

        return fork(S, lambda s: {}, gate, nodes={"d": d}), {"log": []}

    _, alto = compare(build, sync=sync, executor=executor, updates=False)
    assert ahead(alto, "d") == (1, 1 - misses, misses, 0)
    d_updates = [u["d"] for m, u in alto.chunks if m == "updates" and "d" in u]
    assert d_updates == [{"log": ["d1"]}, {"d_saw": alto.final["d_saw"], "log": ["d2"]}]
    assert alto.final["d_saw"] == reads[0]


def test_managed_values_are_the_tasks_own_step() -> None:
    class R(S, total=False):
        remaining_steps: RemainingSteps

    def build(t: float) -> tuple[StateGraph, Any]:
        return fork(R, lambda s: {"d_saw": s["remaining_steps"]}, Gate(t)), {"log": []}

    stock, alto = compare(build, config={"recursion_limit": 25})
    assert alto.final["d_saw"] == stock.final["d_saw"] < 25  # d's step's, as on stock
    assert ahead(alto, "d") == (1, 1, 0, 0)


# -- conditional edges after a task that runs ahead --------------------------------------
@pytest.mark.parametrize(("sync", "executor"), STYLES)
def test_a_router_in_the_fast_branch_runs_on_the_view_and_the_chain_goes_on(
    sync: bool, executor: str
) -> None:
    """d's conditional edge reads only its own branch's key: it runs on d's view when d
    runs ahead, so e and f run ahead too (before: the chain waited at d's step)."""

    def build(t: float) -> tuple[StateGraph, Any]:
        gate = Gate(t)
        nodes = {
            "d": lambda s: {"log": ["d"]},
            "e": lambda s: {"log": ["e"]},
            "f": lambda s: (gate.open(), {"log": ["f"]})[1],
            "g": lambda s: {"log": ["g"]},
        }
        g = fork(S, lambda s: {}, gate, nodes=nodes)
        g.add_conditional_edges("d", lambda s: "e" if s["b_out"] == "b" else "g", ["e", "g"])
        g.add_edge("e", "f")
        return g, {"log": []}

    _, alto = compare(build, sync=sync, executor=executor)
    assert [ahead(alto, n) for n in "def"] == [(1, 1, 0, 0)] * 3


def test_a_router_that_reads_a_siblings_key_misses_and_what_it_routed_to_is_dropped() -> None:
    def build(t: float) -> tuple[StateGraph, Any]:
        gate = Gate(t)
        nodes = {
            "d": lambda s: {"log": ["d"]},
            "e": lambda s: (gate.open(), {"log": ["e"]})[1],
            "g": lambda s: {"log": ["g"]},
        }
        g = fork(S, lambda s: {}, gate, nodes=nodes)
        g.add_conditional_edges("d", lambda s: "e" if s.get("c_out") is None else "g", ["e", "g"])
        return g, {"log": []}

    _, alto = compare(build)
    assert alto.final["log"][-1] == "g"  # the router ran again on the real state
    assert ahead(alto, "d") == (1, 0, 1, 0)
    assert ahead(alto, "e") == (1, 0, 0, 1)


def test_a_pydantic_router_reads_the_whole_state() -> None:
    def build(t: float) -> tuple[StateGraph, Any]:
        gate = Gate(t)
        nodes = {"d": lambda s: {"log": ["d"]}, "e": lambda s: (gate.open(), {"log": ["e"]})[1]}
        g = fork(P, lambda s: {}, gate, nodes=nodes)
        g.add_conditional_edges("d", lambda s: "e" if s.b_out == "b" else END, ["e", END])
        return g, {"log": []}

    _, alto = compare(build)
    # LangGraph builds the router's model from every key: c's write makes d miss
    assert ahead(alto, "d") == (1, 0, 1, 0)
