"""The conformance catalogue: graphs that must give LangGraph's answers on alto.

Each case builds a fresh ``StateGraph`` (fresh closures, so side-effect counters start
at zero) and returns it with its input. ``CASES`` maps a case name to a ``Case``.
Delays are small and anti-correlated on purpose: completion order differs from
task-path order, so an implementation that folds writes in completion order fails.
"""

import asyncio
import dataclasses
import operator
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

from langchain_core.messages import AIMessage, HumanMessage
from langgraph.channels import EphemeralValue, Topic
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph, add_messages
from langgraph.managed import RemainingSteps
from langgraph.runtime import Runtime
from langgraph.types import Command, RetryPolicy, Send
from pydantic import BaseModel
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


# -- plain edges ------------------------------------------------------------------
@case()
def chain_sync():
    g = StateGraph(Log)
    for n in "abcd":
        g.add_node(n, _append(n))
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    g.add_edge("b", "c")
    g.add_edge("c", "d")
    g.add_edge("d", END)
    return g, {"log": []}


@case(styles=ASYNC)
def chain_async():
    g = StateGraph(Log)
    for n in "abc":
        g.add_node(n, _aappend(n))
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    g.add_edge("b", "c")
    return g, {"log": ["start"]}


@case(styles=ASYNC)
def mixed_sync_async():
    g = StateGraph(Log)
    g.add_node("a", _append("a"))
    g.add_node("b", _aappend("b", 0.01))
    g.add_node("c", _append("c", 0.005))
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    g.add_edge("a", "c")
    return g, {"log": []}


@case()
def add_sequence():
    g = StateGraph(Log)
    g.add_sequence([_append("s1"), _append("s2"), _append("s3")])
    g.add_edge(START, "s1")
    return g, {"log": []}


@case()
def fan_out_fan_in_plain_edges():
    # b and c run in one step, so d (plain edges from both) runs once
    g = StateGraph(Log)
    g.add_node("a", _append("a"))
    g.add_node("b", _append("b", 0.02))
    g.add_node("c", _append("c"))
    g.add_node("d", lambda s: {"log": [f"d saw {len(s['log'])}"]})
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    g.add_edge("a", "c")
    g.add_edge("b", "d")
    g.add_edge("c", "d")
    return g, {"log": []}


@case()
def multi_source_edges_across_steps():
    # d is reached from x at step 3 and from b2 at step 4: it runs twice
    g = StateGraph(Log)
    for n in ("a", "b", "b2", "x"):
        g.add_node(n, _append(n))
    g.add_node("d", lambda s: {"log": [f"d saw {len(s['log'])}"]})
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    g.add_edge("b", "b2")
    g.add_edge("b2", "d")
    g.add_edge("a", "x")
    g.add_edge("x", "d")
    return g, {"log": []}


@case()
def waiting_edge():
    g = StateGraph(Log)
    for n in ("a", "b", "b2", "x"):
        g.add_node(n, _append(n))
    g.add_node("d", lambda s: {"log": [f"d saw {len(s['log'])}"]})
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    g.add_edge("b", "b2")
    g.add_edge("a", "x")
    g.add_edge(["b2", "x"], "d")
    return g, {"log": []}


@case()
def waiting_edge_from_start_parallel():
    g = StateGraph(Log)
    g.add_node("up", _append("up", 0.01))
    g.add_node("side", _append("side"))
    g.add_node("down", _append("down"))
    g.add_edge(START, "up")
    g.add_edge(START, "side")
    g.add_edge(["up", "side"], "down")
    return g, {"log": []}


# -- conditional edges --------------------------------------------------------------
@case()
def conditional_with_path_map():
    g = StateGraph(LogN)
    g.add_node("a", lambda s: {"log": ["a"], "n": s["n"] + 1})
    g.add_node("even", _append("even"))
    g.add_node("odd", _append("odd"))
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: s["n"] % 2 == 0, {True: "even", False: "odd"})
    return g, {"log": [], "n": 1}


@case()
def conditional_without_path_map():
    g = StateGraph(LogN)
    g.add_node("a", lambda s: {"log": ["a"]})
    g.add_node("left", _append("left"))
    g.add_node("right", _append("right"))
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: "left" if s["n"] > 0 else "right")
    return g, {"log": [], "n": 3}


@case()
def conditional_literal_annotation():
    def route(s: LogN) -> Literal["x", "y"]:
        return "y"

    g = StateGraph(LogN)
    g.add_node("a", _append("a"))
    g.add_node("x", _append("x"))
    g.add_node("y", _append("y"))
    g.add_edge(START, "a")
    g.add_conditional_edges("a", route)
    return g, {"log": [], "n": 0}


@case()
def conditional_to_many_nodes():
    g = StateGraph(Log)
    g.add_node("a", _append("a"))
    for n in ("p", "q", "r"):
        g.add_node(n, _append(n))
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: ["p", "r"])
    return g, {"log": []}


@case()
def conditional_to_end():
    g = StateGraph(Log)
    g.add_node("a", _append("a"))
    g.add_node("never", _append("never"))
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: END, ["never", END])
    return g, {"log": []}


@case()
def conditional_entry_point():
    g = StateGraph(LogN)
    g.add_node("small", _append("small"))
    g.add_node("big", _append("big"))
    g.add_conditional_edges(START, lambda s: "big" if s["n"] > 10 else "small")
    return g, {"log": [], "n": 11}


@case()
def loop_until_counter():
    g = StateGraph(LogN)
    g.add_node("inc", lambda s: {"n": s["n"] + 1, "log": [s["n"]]})
    g.add_edge(START, "inc")
    g.add_conditional_edges("inc", lambda s: END if s["n"] >= 5 else "inc")
    return g, {"log": [], "n": 0}


@case()
def router_sees_own_writes_only():
    # the router of b sees pre-step state + b's own writes, not c's
    class S(TypedDict):
        log: Annotated[list, operator.add]
        seen: Annotated[list, operator.add]

    g = StateGraph(S)
    g.add_node("a", lambda s: {"log": ["a"]})
    g.add_node("b", lambda s: {"log": ["b"]})
    g.add_node("c", lambda s: {"log": ["c"]})
    g.add_node("z", lambda s: {"seen": ["z"]})
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    g.add_edge("a", "c")
    g.add_conditional_edges("b", lambda s: "z" if s["log"] == ["a", "b"] else END)
    return g, {"log": [], "seen": []}


# -- Send ---------------------------------------------------------------------------
class Item(TypedDict):
    i: int


@case()
def send_map_reduce():
    g = StateGraph(Log)
    g.add_node("split", _append("split"))
    g.add_node("work", lambda p: (time.sleep(0.01 * (3 - p["i"])), {"log": [f"w{p['i']}"]})[1])
    g.add_node("reduce", lambda s: {"log": [f"reduce saw {len(s['log'])}"]})
    g.add_edge(START, "split")
    g.add_conditional_edges("split", lambda s: [Send("work", {"i": i}) for i in range(4)])
    g.add_edge("work", "reduce")
    return g, {"log": []}


@case()
def send_with_node_input_schema():
    def work(p: Item) -> dict:
        return {"log": [p["i"] * 10]}

    g = StateGraph(Log)
    g.add_node("split", _append("split"))
    g.add_node("work", work, input_schema=Item)
    g.add_edge(START, "split")
    g.add_conditional_edges("split", lambda s: [Send("work", {"i": i}) for i in range(3)])
    return g, {"log": []}


@case()
def send_from_start():
    g = StateGraph(Log)
    g.add_node("work", lambda p: {"log": [p["i"]]})
    g.add_conditional_edges(START, lambda s: [Send("work", {"i": i}) for i in range(3)])
    return g, {"log": []}


@case()
def send_mixed_with_node_names():
    g = StateGraph(Log)
    g.add_node("a", _append("a"))
    g.add_node("pull", _append("pull"))
    g.add_node("push", lambda p: {"log": [f"push{p['i']}"]})
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: ["pull", Send("push", {"i": 1}), Send("push", {"i": 2})])
    return g, {"log": []}


@case(styles=ASYNC)
def nested_send_conditional_edges():
    async def b(p):
        await asyncio.sleep(0.01 * (3 - p["i"]))
        return {"log": [f"b{p['i']}"]}

    async def c(p):
        await asyncio.sleep(0.01 * (1 + p["i"]))
        return {"log": [f"c{p['i']}.{p['j']}"]}

    g = StateGraph(Log)
    g.add_node("a", _aappend("a"))
    g.add_node("b", b)
    g.add_node("c", c)
    g.add_node("d", lambda s: {"log": [f"d saw {len(s['log'])}"]})
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("b", {"i": i}) for i in range(3)])
    g.add_conditional_edges(
        "b", lambda s: [Send("c", {"i": len(s["log"]), "j": j}) for j in range(2)]
    )
    g.add_edge("c", "d")
    return g, {"log": []}


@case(styles=ASYNC)
def nested_send_command_goto():
    b_delay, c_delay = [0.03, 0.015, 0.0], [0.0, 0.015, 0.03]

    async def b(p):
        await asyncio.sleep(b_delay[p["i"]])
        return Command(
            update={"log": [f"b{p['i']}"]},
            goto=[Send("c", {"i": p["i"], "j": j}) for j in range(2)],
        )

    async def c(p):
        await asyncio.sleep(c_delay[p["i"]])
        return {"log": [f"c{p['i']}.{p['j']}"]}

    g = StateGraph(Log)
    g.add_node("a", _aappend("a"))
    g.add_node("b", b)
    g.add_node("c", c)
    g.add_node("d", lambda s: {"log": ["d"]})
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("b", {"i": i}) for i in range(3)])
    g.add_edge("c", "d")
    return g, {"log": []}


@case()
def send_chain_depth_four():
    def hop(p):
        time.sleep(0.002 * (4 - p["d"]) * (1 + p["k"]))
        if p["d"] == 3:
            return {"log": [p["path"]]}
        return Command(
            goto=[
                Send("hop", {"d": p["d"] + 1, "k": k, "path": p["path"] + str(k)}) for k in range(2)
            ]
        )

    g = StateGraph(Log)
    g.add_node("hop", hop)
    g.add_conditional_edges(START, lambda s: [Send("hop", {"d": 0, "k": 0, "path": "r"})])
    return g, {"log": []}


@case()
def send_target_with_conditional_edge_reading_state():
    # a run-ahead task's conditional edge must see its step's pre-step state: here,
    # every b's update (b runs in the step before c), not just the fast ones.
    class S(TypedDict):
        log: Annotated[list, operator.add]
        routes: Annotated[list, operator.add]

    def b(p):
        time.sleep(0.02 if p["i"] == 0 else 0.0)
        return Command(update={"log": [f"b{p['i']}"]}, goto=[Send("c", {"i": p["i"]})])

    def c(p):
        time.sleep(0.0 if p["i"] == 0 else 0.01)
        return {"log": [f"c{p['i']}"]}

    g = StateGraph(S)
    g.add_node("a", lambda s: {"log": ["a"]})
    g.add_node("b", b)
    g.add_node("c", c)
    g.add_node("e", lambda s: {"routes": ["e"]})
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("b", {"i": i}) for i in range(3)])
    g.add_conditional_edges("c", lambda s: Send("e", {}) if len(s["log"]) >= 4 else END)
    return g, {"log": [], "routes": []}


@case()
def send_same_payload_object_twice():
    shared = {"i": 7}
    g = StateGraph(Log)
    g.add_node("a", _append("a"))
    g.add_node("w", lambda p: {"log": [p["i"]]})
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("w", shared), Send("w", shared)])
    return g, {"log": []}


@case()
def concurrent_emitters_pull_and_push():
    # two emitters of Sends plus a pull node in the same step: PULL before PUSH,
    # Sends in emission order
    g = StateGraph(Log)
    g.add_node("a", _append("a"))
    g.add_node(
        "e1",
        lambda s: Command(update={"log": ["e1"]}, goto=[Send("w", {"i": 1}), Send("w", {"i": 2})]),
    )
    g.add_node("e2", lambda s: Command(update={"log": ["e2"]}, goto=[Send("w", {"i": 3})]))
    g.add_node("w", lambda p: {"log": [f"w{p['i']}"]})
    g.add_node("pull", _append("pull"))
    g.add_edge(START, "a")
    g.add_edge("a", "e1")
    g.add_edge("a", "e2")
    g.add_edge("e1", "pull")
    return g, {"log": []}


# -- Command -------------------------------------------------------------------------
@case()
def command_update_and_goto():
    def a(s) -> Command[Literal["b", "c"]]:
        return Command(update={"log": ["a"]}, goto="c")

    g = StateGraph(Log)
    g.add_node("a", a)
    g.add_node("b", _append("b"))
    g.add_node("c", _append("c"))
    g.add_edge(START, "a")
    return g, {"log": []}


@case()
def command_list_of_commands():
    def a(s):
        return [
            Command(update={"log": ["a1"]}, goto="b"),
            Command(update={"log": ["a2"]}, goto="c"),
        ]

    g = StateGraph(Log)
    g.add_node("a", a)
    g.add_node("b", _append("b"))
    g.add_node("c", _append("c"))
    g.add_edge(START, "a")
    return g, {"log": []}


@case()
def command_goto_end():
    g = StateGraph(Log)
    g.add_node("a", lambda s: Command(update={"log": ["a"]}, goto=END))
    g.add_node("b", _append("b"))
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    return g, {"log": []}


@case()
def command_send_with_command_payload():
    g = StateGraph(Log)
    g.add_node("a", lambda s: Command(goto=[Send("b", {"i": 1}), Send("b", {"i": 2})]))
    g.add_node(
        "b", lambda p: Command(update={"log": [f"b{p['i']}"]}, goto="c" if p["i"] == 2 else END)
    )
    g.add_node("c", lambda s: {"log": [f"c saw {len(s['log'])}"]})
    g.add_edge(START, "a")
    return g, {"log": []}


# -- channels ------------------------------------------------------------------------
@case()
def last_value_conflict_raises():
    class S(TypedDict):
        x: int

    g = StateGraph(S)
    g.add_node("a", lambda s: {"x": 1})
    g.add_node("b", lambda s: {"x": 2})
    g.add_node("c", lambda s: {"x": 3})
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    g.add_edge("a", "c")
    return g, {"x": 0}


@case()
def last_value_conflict_from_sends():
    class S(TypedDict):
        x: int

    g = StateGraph(S)
    g.add_node("a", lambda s: {"x": 1})
    g.add_node("w", lambda p: {"x": p["i"]})
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("w", {"i": i}) for i in range(2)])
    return g, {"x": 0}


@case()
def last_value_single_writer_per_step():
    class S(TypedDict):
        x: int
        log: Annotated[list, operator.add]

    g = StateGraph(S)
    g.add_node("a", lambda s: {"x": s["x"] + 1})
    g.add_node("b", lambda s: {"x": s["x"] * 10, "log": [s["x"]]})
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    return g, {"x": 1, "log": []}


@case()
def order_sensitive_custom_reducer():
    def concat(a: str, b: str) -> str:
        return a + b

    class S(TypedDict):
        s: Annotated[str, concat]

    def w(p):
        time.sleep(0.003 * (5 - p["i"]))
        return {"s": str(p["i"])}

    g = StateGraph(S)
    g.add_node("a", lambda s: {"s": "a"})
    g.add_node("w", w)
    g.add_node("z", lambda s: {"s": "z"})
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("w", {"i": i}) for i in range(5)])
    g.add_edge("w", "z")
    return g, {"s": ""}


@case()
def add_messages_reducer():
    class S(TypedDict):
        messages: Annotated[list, add_messages]

    g = StateGraph(S)
    g.add_node(
        "bot", lambda s: {"messages": [AIMessage(content=f"echo {len(s['messages'])}", id="ai-1")]}
    )
    g.add_node("edit", lambda s: {"messages": [AIMessage(content="edited", id="ai-1")]})
    g.add_edge(START, "bot")
    g.add_edge("bot", "edit")
    return g, {"messages": [HumanMessage(content="hi", id="h-1")]}


@case()
def topic_channel_accumulate():
    class S(TypedDict):
        events: Annotated[list, Topic(str, accumulate=True)]

    g = StateGraph(S)
    g.add_node("a", lambda s: {"events": "a"})
    g.add_node("b", lambda s: {"events": ["b1", "b2"]})
    g.add_node("c", lambda s: {"events": "c"})
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    g.add_edge("a", "c")
    return g, {"events": []}


@case()
def topic_channel_per_step():
    class S(TypedDict):
        events: Annotated[list, Topic(str)]
        log: Annotated[list, operator.add]

    g = StateGraph(S)
    g.add_node("a", lambda s: {"events": "a", "log": ["a"]})
    g.add_node("b", lambda s: {"log": [list(s["events"])]})
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    return g, {"events": [], "log": []}


@case()
def ephemeral_value_channel():
    class S(TypedDict):
        log: Annotated[list, operator.add]
        flash: Annotated[str, EphemeralValue]

    g = StateGraph(S)
    g.add_node("a", lambda s: {"flash": "hello", "log": ["a"]})
    g.add_node("b", lambda s: {"log": [s.get("flash")]})
    g.add_node("c", lambda s: {"log": [s.get("flash")]})
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    g.add_edge("b", "c")
    return g, {"log": []}


@case()
def remaining_steps_managed_value():
    class S(TypedDict):
        log: Annotated[list, operator.add]
        remaining: RemainingSteps

    g = StateGraph(S)
    g.add_node("a", lambda s: {"log": [s["remaining"]]})
    g.add_node("b", lambda s: {"log": [s["remaining"]]})
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    return g, {"log": []}


# -- defer -----------------------------------------------------------------------------
@case()
def defer_node_runs_once_at_end():
    g = StateGraph(Log)
    for n in ("a", "b", "b2", "x"):
        g.add_node(n, _append(n))
    g.add_node("d", lambda s: {"log": [f"d saw {len(s['log'])}"]}, defer=True)
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    g.add_edge("b", "b2")
    g.add_edge("b2", "d")
    g.add_edge("a", "x")
    g.add_edge("x", "d")
    return g, {"log": []}


@case()
def defer_after_sends():
    g = StateGraph(Log)
    g.add_node("a", _append("a"))
    g.add_node(
        "w",
        lambda p: Command(
            update={"log": [f"w{p['i']}"]},
            goto=[Send("w", {"i": p["i"] + 10})] if p["i"] < 10 else [],
        ),
    )
    g.add_node("final", lambda s: {"log": [f"final saw {len(s['log'])}"]}, defer=True)
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("w", {"i": i}) for i in range(3)])
    g.add_edge("a", "final")
    return g, {"log": []}


# -- schemas -----------------------------------------------------------------------------
@case()
def pydantic_state():
    class S(BaseModel):
        n: int = 0
        log: Annotated[list, operator.add] = []

    g = StateGraph(S)
    g.add_node("a", lambda s: {"n": s.n + 1, "log": ["a"]})
    g.add_node("b", lambda s: {"n": s.n * 3, "log": ["b"]})
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    return g, {"n": 2}


@case()
def dataclass_state():
    @dataclasses.dataclass
    class S:
        n: int
        log: Annotated[list, operator.add] = dataclasses.field(default_factory=list)

    g = StateGraph(S)
    g.add_node("a", lambda s: {"n": s.n + 5, "log": [s.n]})
    g.add_edge(START, "a")
    return g, {"n": 1}


@case()
def input_output_schemas():
    class In(TypedDict):
        question: str

    class Out(TypedDict):
        answer: str

    class S(In, Out):
        notes: Annotated[list, operator.add]

    g = StateGraph(S, input_schema=In, output_schema=Out)
    g.add_node("think", lambda s: {"notes": [s["question"].upper()]})
    g.add_node("answer", lambda s: {"answer": " ".join(s["notes"])})
    g.add_edge(START, "think")
    g.add_edge("think", "answer")
    return g, {"question": "why"}


@case()
def private_node_input_schema():
    class S(TypedDict):
        log: Annotated[list, operator.add]

    class Private(TypedDict):
        secret: str

    def a(s: S) -> Private:
        return {"secret": "s3"}

    def b(p: Private) -> dict:
        return {"log": [p["secret"]]}

    g = StateGraph(S)
    g.add_node("a", a)
    g.add_node("b", b, input_schema=Private)
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    return g, {"log": []}


# -- subgraphs ---------------------------------------------------------------------------
def _inner_graph():
    g = StateGraph(Log)
    g.add_node("i1", _append("i1"))
    g.add_node("i2", _append("i2"))
    g.add_edge(START, "i1")
    g.add_edge("i1", "i2")
    return g.compile()


@case()
def subgraph_as_node():
    g = StateGraph(Log)
    g.add_node("a", _append("a"))
    g.add_node("sub", _inner_graph())
    g.add_node("z", lambda s: {"log": [f"z saw {len(s['log'])}"]})
    g.add_edge(START, "a")
    g.add_edge("a", "sub")
    g.add_edge("sub", "z")
    return g, {"log": []}


@case(subgraphs=True)
def subgraph_streams_with_namespaces():
    g = StateGraph(Log)
    g.add_node("sub", _inner_graph())
    g.add_edge(START, "sub")
    return g, {"log": ["x"]}


@case()
def subgraph_per_send_item():
    class Inner(TypedDict):
        i: int
        log: Annotated[list, operator.add]

    inner = StateGraph(Inner)
    inner.add_node(
        "fetch", lambda s: (time.sleep(0.002 * (3 - s["i"])), {"log": [f"f{s['i']}"]})[1]
    )
    inner.add_node("rank", lambda s: {"log": [f"r{s['i']}"]})
    inner.add_edge(START, "fetch")
    inner.add_edge("fetch", "rank")

    def per_item(p):
        out = inner_app.invoke({"i": p["i"], "log": []})
        return {"log": out["log"]}

    inner_app = inner.compile()
    g = StateGraph(Log)
    g.add_node("a", _append("a"))
    g.add_node("item", per_item)
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("item", {"i": i}) for i in range(3)])
    return g, {"log": []}


@case()
def subgraph_with_sends_inside():
    inner = StateGraph(Log)
    inner.add_node("w", lambda p: {"log": [f"inner{p['i']}"]})
    inner.add_conditional_edges(START, lambda s: [Send("w", {"i": i}) for i in range(3)])
    g = StateGraph(Log)
    g.add_node("a", _append("a"))
    g.add_node("sub", inner.compile())
    g.add_edge(START, "a")
    g.add_edge("a", "sub")
    return g, {"log": []}


# -- retries, errors, limits ----------------------------------------------------------
@case()
def retry_policy_recovers():
    attempts = {"n": 0}

    def flaky(s):
        attempts["n"] += 1
        if attempts["n"] < 3:
            raise ConnectionError(f"attempt {attempts['n']}")
        return {"log": [f"ok after {attempts['n']}"]}

    g = StateGraph(Log)
    g.add_node(
        "flaky",
        flaky,
        retry_policy=RetryPolicy(max_attempts=3, initial_interval=0.001, jitter=False),
    )
    g.add_edge(START, "flaky")
    return g, {"log": []}


@case()
def retry_policy_on_send_target():
    attempts: dict[int, int] = {}

    def flaky(p):
        attempts[p["i"]] = attempts.get(p["i"], 0) + 1
        if attempts[p["i"]] < 2:
            raise ConnectionError("transient")
        return {"log": [f"w{p['i']} after {attempts[p['i']]}"]}

    g = StateGraph(Log)
    g.add_node("a", _append("a"))
    g.add_node(
        "w", flaky, retry_policy=RetryPolicy(max_attempts=2, initial_interval=0.001, jitter=False)
    )
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("w", {"i": i}) for i in range(3)])
    return g, {"log": []}


@case()
def retry_policy_exhausted_raises():
    def broken(s):
        raise ConnectionError("still down")

    g = StateGraph(Log)
    g.add_node(
        "broken",
        broken,
        retry_policy=RetryPolicy(max_attempts=2, initial_interval=0.001, jitter=False),
    )
    g.add_edge(START, "broken")
    return g, {"log": []}


@case()
def node_raises():
    def boom(s):
        raise ValueError("node boom failed on purpose")

    g = StateGraph(Log)
    g.add_node("a", _append("a"))
    g.add_node("boom", boom)
    g.add_edge(START, "a")
    g.add_edge("a", "boom")
    return g, {"log": []}


@case()
def send_target_raises():
    def w(p):
        if p["i"] == 1:
            raise KeyError(f"item {p['i']}")
        return {"log": [p["i"]]}

    g = StateGraph(Log)
    g.add_node("a", _append("a"))
    g.add_node("w", w)
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("w", {"i": i}) for i in range(3)])
    return g, {"log": []}


@case()
def nested_send_target_raises():
    def b(p):
        return Command(goto=[Send("c", {"i": p["i"]})])

    def c(p):
        if p["i"] == 2:
            raise RuntimeError("c2 failed")
        return {"log": [p["i"]]}

    g = StateGraph(Log)
    g.add_node("a", _append("a"))
    g.add_node("b", b)
    g.add_node("c", c)
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("b", {"i": i}) for i in range(3)])
    return g, {"log": []}


@case(config={"recursion_limit": 4})
def recursion_limit_loop():
    g = StateGraph(LogN)
    g.add_node("inc", lambda s: {"n": s["n"] + 1, "log": [s["n"]]})
    g.add_edge(START, "inc")
    g.add_conditional_edges("inc", lambda s: END if s["n"] >= 50 else "inc")
    return g, {"log": [], "n": 0}


@case(config={"recursion_limit": 5})
def recursion_limit_send_chain():
    # an endless Send chain: run-ahead must not run past the recursion limit
    g = StateGraph(Log)
    g.add_node(
        "hop", lambda p: Command(update={"log": [p["d"]]}, goto=Send("hop", {"d": p["d"] + 1}))
    )
    g.add_conditional_edges(START, lambda s: Send("hop", {"d": 0}))
    return g, {"log": []}


# -- config, context, stream modes ----------------------------------------------------------
@case(config={"configurable": {"user": "ada"}, "tags": ["t1"], "metadata": {"m": 1}})
def configurable_and_tags_reach_nodes():
    from langgraph.config import get_config

    def a(s):
        cfg = get_config()
        return {"log": [cfg["configurable"]["user"], "t1" in cfg["tags"], cfg["metadata"]["m"]]}

    g = StateGraph(Log)
    g.add_node("a", a)
    g.add_node("w", lambda p: {"log": [get_config()["configurable"]["user"] + str(p["i"])]})
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("w", {"i": i}) for i in range(2)])
    return g, {"log": []}


@case(context={"prefix": "ctx"})
def runtime_context():
    @dataclasses.dataclass
    class Ctx:
        prefix: str

    def a(s, runtime: Runtime[Ctx]):
        return {"log": [runtime.context.prefix + "-a"]}

    def w(p, runtime: Runtime[Ctx]):
        return {"log": [f"{runtime.context.prefix}-w{p['i']}"]}

    g = StateGraph(Log, context_schema=Ctx)
    g.add_node("a", a)
    g.add_node("w", w)
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("w", {"i": i}) for i in range(2)])
    return g, {"log": []}


@case(stream_mode="values", ordered=True)
def stream_values_per_step():
    g = StateGraph(Log)
    g.add_node("a", _append("a"))
    g.add_node("w", lambda p: (time.sleep(0.003 * (3 - p["i"])), {"log": [p["i"]]})[1])
    g.add_node("z", _append("z"))
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("w", {"i": i}) for i in range(3)])
    g.add_edge("w", "z")
    return g, {"log": []}


@case(stream_mode=["custom", "updates"])
def stream_custom_writer():
    def a(s):
        w = get_stream_writer()
        w({"progress": "a started"})
        return {"log": ["a"]}

    def item(p):
        get_stream_writer()({"item": p["i"]})
        return {"log": [p["i"]]}

    g = StateGraph(Log)
    g.add_node("a", a)
    g.add_node("item", item)
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("item", {"i": i}) for i in range(3)])
    return g, {"log": []}


@case(stream_mode="messages")
def stream_messages_from_chat_model():
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel

    class S(TypedDict):
        messages: Annotated[list, add_messages]

    def call(p):
        model = GenericFakeChatModel(
            messages=iter([AIMessage(content=f"tok{p['i']} a b", id=f"m{p['i']}")])
        )
        return {"messages": [model.invoke("hi")]}

    g = StateGraph(S)
    g.add_node("a", lambda s: {"messages": []})
    g.add_node("call", call)
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("call", {"i": i}) for i in range(2)])
    return g, {"messages": []}


@case()
def generator_node_keeps_last_chunk():
    def gen(s):
        yield {"log": ["first"]}
        yield {"log": ["second"]}

    g = StateGraph(Log)
    g.add_node("gen", gen)
    g.add_edge(START, "gen")
    return g, {"log": []}


@case(config={"max_concurrency": 2})
def max_concurrency_respected():
    live = {"now": 0, "peak": 0}

    def w(p):
        live["now"] += 1
        live["peak"] = max(live["peak"], live["now"])
        time.sleep(0.01)
        live["now"] -= 1
        return {"log": [p["i"]]}

    g = StateGraph(Log)
    g.add_node("a", _append("a"))
    g.add_node("w", w)
    g.add_node("report", lambda s: {"log": [f"peak<=2:{live['peak'] <= 2}"]})
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("w", {"i": i}) for i in range(6)])
    g.add_edge("w", "report")
    return g, {"log": []}


# -- run-ahead through the less common paths ----------------------------------------------
@case()
def send_to_subgraph_node():
    class Inner(TypedDict):
        i: int
        log: Annotated[list, operator.add]

    inner = StateGraph(Inner)
    inner.add_node("x", lambda s: (time.sleep(0.002 * (3 - s["i"])), {"log": [f"x{s['i']}"]})[1])
    inner.add_node(
        "y", lambda s: Command(goto=[Send("z", {"i": s["i"], "k": k, "log": []}) for k in range(2)])
    )
    inner.add_node("z", lambda p: {"log": [f"z{p['i']}.{p['k']}"]})
    inner.add_edge(START, "x")
    inner.add_edge("x", "y")

    g = StateGraph(Inner)
    g.add_node("a", lambda s: {"log": ["a"]})
    g.add_node("b", lambda p: Command(goto=[Send("sub", {"i": p["i"], "log": []})]))
    g.add_node("sub", inner.compile())
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("b", {"i": i, "log": []}) for i in range(3)])
    return g, {"i": 0, "log": []}


@case()
def command_parent_from_subgraph():
    inner = StateGraph(Log)
    inner.add_node(
        "jump", lambda s: Command(graph=Command.PARENT, goto="done", update={"log": ["jumped"]})
    )
    inner.add_edge(START, "jump")

    g = StateGraph(Log)
    g.add_node("a", lambda s: {"log": ["a"]})
    g.add_node("b", lambda p: Command(goto=[Send("sub", {"log": []})]))
    g.add_node("sub", inner.compile())
    g.add_node("done", lambda s: {"log": [f"done saw {len(s['log'])}"]})
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("b", {}) for _ in range(2)])
    return g, {"log": []}


@case()
def interrupt_without_checkpointer_ends_run():
    from langgraph.types import interrupt

    def ask(p):
        # the run's final __interrupt__ is the last one raised: a race unless ordered
        time.sleep(0.05 * p["i"])
        answer = interrupt({"question": f"ok {p['i']}?"})
        return {"log": [answer]}

    g = StateGraph(Log)
    g.add_node("a", lambda s: {"log": ["a"]})
    g.add_node("b", lambda p: Command(goto=[Send("ask", p)]))
    g.add_node("ask", ask)
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("b", {"i": i}) for i in range(2)])
    return g, {"log": []}


@case()
def node_error_handler_on_send_target():
    from langgraph.errors import NodeError

    def w(p):
        if p["i"] == 1:
            raise ValueError("w1 broke")
        return {"log": [f"w{p['i']}"]}

    def handler(state: Any, error: NodeError) -> dict:
        return {"log": [f"handled {type(error.error).__name__}"]}

    g = StateGraph(Log)
    g.add_node("a", lambda s: {"log": ["a"]})
    g.add_node("b", lambda p: Command(goto=[Send("w", p)]))
    g.add_node("w", w, error_handler=handler)
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("b", {"i": i}) for i in range(3)])
    return g, {"log": []}


@case(styles=ASYNC)
def node_timeout_on_send_target():
    async def slow(p):
        await asyncio.sleep(0.5 if p["i"] == 1 else 0.0)
        return {"log": [f"s{p['i']}"]}

    g = StateGraph(Log)
    g.add_node("a", lambda s: {"log": ["a"]})
    g.add_node("b", lambda p: Command(goto=[Send("slow", p)]))
    g.add_node("slow", slow, timeout=0.05)
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("b", {"i": i}) for i in range(2)])
    return g, {"log": []}


# -- found by review: run-ahead through retries, timeouts, @task and ParentCommand ------
def _sibling_of_a(g: StateGraph) -> None:
    """a and s both start at step 1, so a's Sends run ahead while s is still running."""
    g.add_node("a", lambda s: {"log": ["a"]})
    g.add_node("s", lambda s: (time.sleep(0.02), {"log": ["s"]})[1])
    g.add_edge(START, "a")
    g.add_edge(START, "s")


@case()
def functional_task_in_send_target():
    from langgraph.func import task

    @task
    def double(x: int) -> int:
        return 2 * x

    g = StateGraph(Log)
    _sibling_of_a(g)
    g.add_node("w", lambda p: {"log": [double(p["i"]).result()]})
    g.add_conditional_edges("a", lambda s: [Send("w", {"i": i}) for i in range(2)])
    return g, {"log": []}


@case(styles=ASYNC)
def async_functional_task_in_send_target():
    from langgraph.func import task

    @task
    async def double(x: int) -> int:
        return 2 * x

    async def w(p):
        return {"log": [await double(p["i"])]}

    g = StateGraph(Log)
    _sibling_of_a(g)
    g.add_node("w", w)
    g.add_conditional_edges("a", lambda s: [Send("w", {"i": i}) for i in range(2)])
    return g, {"log": []}


@case()
def retry_covers_conditional_edge_of_send_target():
    # a flaky router: LangGraph retries the whole task (node and edges)
    failed = set()
    lock = __import__("threading").Lock()

    def route(s):
        with lock:
            first = len(failed) < 2
            failed.add(len(failed))
        if first:
            raise ValueError("flaky router")
        return END

    g = StateGraph(Log)
    _sibling_of_a(g)
    g.add_node(
        "w",
        lambda p: {"log": [f"w{p['i']}"]},
        retry_policy=RetryPolicy(max_attempts=3, initial_interval=0.001, jitter=False),
    )
    g.add_conditional_edges("a", lambda s: [Send("w", {"i": i}) for i in range(2)])
    g.add_conditional_edges("w", route)
    return g, {"log": []}


@case()
def parent_command_from_send_target_with_conditional_edge():
    inner = StateGraph(Log)
    inner.add_node(
        "jump", lambda s: Command(graph=Command.PARENT, goto="done", update={"log": ["jumped"]})
    )
    inner.add_edge(START, "jump")
    g = StateGraph(Log)
    _sibling_of_a(g)
    g.add_node("sub", inner.compile())
    g.add_node("done", lambda s: {"log": [f"done saw {len(s['log'])}"]})
    g.add_node("other", lambda s: {"log": ["other"]})
    g.add_conditional_edges("a", lambda s: [Send("sub", {"log": []}) for _ in range(2)])
    g.add_conditional_edges("sub", lambda s: "other" if len(s["log"]) > 100 else END)
    return g, {"log": []}


@case()
def send_target_with_conditional_edge_and_command_sends():
    def b(p):
        time.sleep(0.01 * p["i"])
        return Command(update={"log": [f"b{p['i']}"]}, goto=[Send("c", {"i": p["i"]})])

    g = StateGraph(Log)
    _sibling_of_a(g)
    g.add_node("b", b)
    g.add_node("c", lambda p: {"log": [f"c{p['i']}"]})
    g.add_conditional_edges("a", lambda s: [Send("b", {"i": i}) for i in range(2)])
    g.add_conditional_edges("b", lambda s: END)
    return g, {"log": []}


@case()
def stock_graph_invoked_inside_send_targets():
    # a graph compiled on stock LangGraph, run from inside alto's tasks (twins, tasks
    # the hook ran, tasks run inline): it must never see alto's runner hook
    inner = StateGraph(Log)
    inner.add_node("x", lambda p: {"log": [f"x{p['k']}"]})
    inner.add_conditional_edges(START, lambda s: [Send("x", {"k": k}) for k in range(2)])
    inner_app = inner.compile()

    def w(p):
        return {"log": inner_app.invoke({"log": [f"w{p['i']}"]})["log"]}

    g = StateGraph(Log)
    _sibling_of_a(g)
    g.add_node("w", w)
    g.add_node("z", lambda s: {"log": inner_app.invoke({"log": ["z"]})["log"]})
    g.add_conditional_edges("a", lambda s: [Send("w", {"i": i}) for i in range(2)])
    g.add_edge("w", "z")
    return g, {"log": []}
