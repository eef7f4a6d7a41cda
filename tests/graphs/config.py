"""Run config reaching nodes: configurable, tags, metadata, runtime context, max_concurrency."""

import dataclasses
import time

from langgraph.graph import START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send

from ._common import Log, _append, case


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
