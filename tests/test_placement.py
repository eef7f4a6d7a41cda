"""The plan is what runs: where ``explain()`` says a stage runs, how it routes and which
features fall back are held against the processes, the router and the warnings."""

from __future__ import annotations

import io
import operator
import os
import warnings
from typing import Annotated, Any

import pytest
from langgraph.graph import START, StateGraph
from langgraph.store.memory import InMemoryStore
from langgraph.types import Send
from typing_extensions import TypedDict

import alto_langgraph
from alto_langgraph.process.routing import POLICIES


class S(TypedDict):
    ran: Annotated[list, operator.add]


def _where(name: str) -> Any:
    def node(state: dict) -> dict:
        return {"ran": [(name, os.getpid())]}

    return node


def _graph() -> StateGraph:
    """a -> Send x3 -> b -> c, and a subgraph node sub (x -> y)."""
    inner = StateGraph(S)
    inner.add_node("x", _where("sub/x"))
    inner.add_node("y", _where("sub/y"))
    inner.add_edge(START, "x")
    inner.add_edge("x", "y")
    g = StateGraph(S)
    g.add_node("a", _where("a"))
    g.add_node("b", _where("b"))
    g.add_node("c", _where("c"))
    g.add_node("sub", inner.compile())
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("b", {"ran": []}) for _ in range(3)], ["b"])
    g.add_edge("b", "c")
    g.add_edge(START, "sub")
    return g


OPTIONS = {
    "auto": {},
    "auto-asking": {
        "replicas": {"b": 2, "sub/x": 1},
        "stages": {"c": {"process": True, "policy": "round_robin"}},
    },
    "process": {"executor": "process", "stages": {"a": {"process": False}}},
    "inline": {"executor": "inline"},
}
#: stage -> where it must run, per option set
EXPECTED = {
    "auto": {"a": "app", "b": "app", "c": "app", "sub/x": "app", "sub/y": "app"},
    "auto-asking": {"a": "app", "b": "process", "c": "process", "sub/x": "process", "sub/y": "app"},
    "process": {"a": "app", "b": "process", "c": "process", "sub/x": "process", "sub/y": "process"},
    "inline": {"a": "app", "b": "app", "c": "app", "sub/x": "app", "sub/y": "app"},
}


def _stages(plan: alto_langgraph.Plan) -> dict[str, Any]:
    return {s.qualname: s for s in plan.all_stages() if s.kind == "node"}


@pytest.mark.parametrize("case", list(OPTIONS))
def test_nodes_run_where_the_plan_places_them(case: str) -> None:
    with _graph().compile(backend="alto", **OPTIONS[case]) as app:
        stages = _stages(app.plan)
        assert {n: s.placement for n, s in stages.items()} == EXPECTED[case]
        out = app.invoke({"ran": []})
        me = os.getpid()
        for name, pid in out["ran"]:
            where = "app" if pid == me else "process"
            assert where == stages[name].placement, (name, stages[name].placed_by)
        assert {n for n, _ in out["ran"]} == set(EXPECTED[case])
        # the deployment runs exactly the plan's process stages, as the plan sets them
        process = {s.qualname: s for s in app.plan.process_stages()}
        if not process:
            assert app.deployment is None
            return
        assert app.deployment.specs == {n: s.spec() for n, s in process.items()}
        stats = app.deployment.stats()
        assert set(stats["live"]) == set(process)
        for name, stage in process.items():
            assert len(stats["live"][name]) == stage.replicas
            assert stats["policies"][name] == POLICIES[stage.routing].__name__


def test_explain_says_where_each_stage_runs_and_why() -> None:
    app = _graph().compile(backend="alto", **OPTIONS["auto-asking"])
    buf = io.StringIO()
    app.explain(file=buf)
    text = buf.getvalue()
    lines = {line.split()[0]: line for line in text.splitlines() if " node, " in line}
    assert "runs in the app process (default)" in lines["a"]
    assert "runs in the worker processes (asked for: replicas=2)" in lines["b"]
    assert "routing=least_outstanding x2" in lines["b"]
    assert "asked for: process, policy='round_robin'" in lines["c"]
    assert "routing=round_robin x1" in lines["c"]
    assert "runs in the app process (default)" in lines["y"]
    app.close()


def test_any_stage_setting_but_ray_false_asks_for_worker_processes() -> None:
    """A stage table asks for processes by its keys, whatever their values
    (``policy=None`` is the default policy), except ``ray=false``: not on Ray."""
    for settings, where in (
        ({"policy": None}, "runs in the worker processes (asked for: policy=None)"),
        ({"ray": False}, "runs in the app process (default)"),
    ):
        app = _graph().compile(backend="alto", stages={"b": settings})
        lines = {ln.split()[0]: ln for ln in str(app.plan).splitlines() if " node, " in ln}
        assert where in lines["b"], settings
        app.close()


def test_a_store_keeps_tasks_at_their_step_as_explain_says() -> None:
    """What the plan lists is what a run does: a store runs on alto (node code in
    workers reaching it too), its tasks at their step."""
    for executor in ("inline", "process"):
        with _graph().compile(backend="alto", executor=executor, store=InMemoryStore()) as app:
            assert app.plan.fallbacks == ()
            assert app.plan.held_at_step == ("a store",)
            assert "every task waits for its superstep: the graph has a store" in str(app.plan)
            with warnings.catch_warnings():
                warnings.simplefilter("error", alto_langgraph.AltoFallbackWarning)
                app.invoke({"ran": []})
            assert all(s["run_ahead"] == 0 for s in app.run_ahead_stats().values())


def test_process_false_with_replicas_is_refused() -> None:
    with pytest.raises(ValueError, match="stage 'b' has process=False.*replicas=2"):
        _graph().compile(backend="alto", replicas={"b": 2}, stages={"b": {"process": False}})


def test_an_unknown_stage_is_named_whatever_the_executor() -> None:
    with pytest.raises(ValueError, match="no stage named 'bb'.*'sub/x'"):
        _graph().compile(backend="alto", replicas={"bb": 2})


def test_import_changes_no_environment_and_loads_no_lm() -> None:
    import subprocess
    import sys

    code = (
        "import os, sys; before = dict(os.environ); import alto_langgraph; "
        "assert dict(os.environ) == before, 'environment changed'; "
        "assert not [m for m in sys.modules if m.startswith('alto_langgraph.lm')], 'lm imported'; "
        "assert 'transformers' not in sys.modules and 'torch' not in sys.modules"
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_OFFLINE")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_every_error_is_an_alto_error_and_a_builtin() -> None:
    assert issubclass(alto_langgraph.StageInstanceLost, ConnectionError)
    assert issubclass(alto_langgraph.ShippingError, TypeError)
    assert issubclass(alto_langgraph.DeploymentError, RuntimeError)
    for name in ("ShippingError", "DeploymentError", "StageInstanceLost", "StageError"):
        assert issubclass(getattr(alto_langgraph, name), alto_langgraph.AltoError)


def test_each_pass_does_one_thing() -> None:
    """The passes of compiler/passes.py, one at a time, on a freshly compiled graph."""
    from alto_langgraph.compiler import lower, passes
    from alto_langgraph.options import AltoOptions
    from alto_langgraph.process.remote import RemoteNode

    stock = _graph().compile()
    assert passes.deploy(lower(stock, AltoOptions())) is None  # nothing asks for processes
    plan = lower(stock, AltoOptions(replicas={"b": 2, "sub/x": 1}))
    deployment = passes.deploy(plan)
    assert deployment is not None and not deployment.started and deployment.specs == {}
    passes.place_stages(stock, plan, deployment)
    assert isinstance(stock.nodes["b"].bound, RemoteNode)
    assert not isinstance(stock.nodes["a"].bound, RemoteNode)
    assert set(deployment.specs) == {"b"}  # the subgraph's stage is its own pass's
    rewritten: list[str] = []
    passes.adopt_subgraphs(stock, plan, lambda sub, subplan: rewritten.append(subplan) or sub)
    assert [p.name for p in rewritten] == [plan.subplan("sub").name]
    procs_before = {n: node.node for n, node in stock.nodes.items()}
    passes.run_ahead_aware(stock)
    assert all(
        type(node.node).__name__ == "RunAheadAwareProc"
        for n, node in stock.nodes.items()
        if procs_before[n] is not None
    )
    deployment.close()


def test_a_subgraph_compiled_for_alto_keeps_its_own_deployment() -> None:
    """A subgraph compiled for alto before it was added runs as its own plan says; the
    parent places none of its stages and starts no deployment for them."""
    inner = StateGraph(S)
    inner.add_node("x", _where("sub/x"))
    inner.add_edge(START, "x")
    g = StateGraph(S)
    with inner.compile(backend="alto", executor="process") as sub:
        g.add_node("sub", sub)
        g.add_node("y", _where("y"))
        g.add_edge(START, "sub")
        g.add_edge("sub", "y")
        with g.compile(backend="alto") as app:
            assert app.deployment is None
            assert app.plan.subplan("sub").separate
            assert [s.qualname for s in app.plan.process_stages()] == []
            ran = dict(app.invoke({"ran": []})["ran"])
            assert ran["sub/x"] != os.getpid() and ran["y"] == os.getpid()
