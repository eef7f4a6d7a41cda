"""The functional API: @task calls (sync and async) inside Send targets."""

from langgraph.graph import StateGraph
from langgraph.types import Send

from ._common import ASYNC, Log, _sibling_of_a, case


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
