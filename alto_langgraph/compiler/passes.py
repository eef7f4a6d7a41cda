"""The passes that make a compiled graph run its plan, each a plain function.

``lower`` decides; these carry the decisions out, in this order, on a freshly compiled
stock graph that the caller owns (``graph.py``):

1. ``deploy``: the deployment the plan's process stages need (None if none), with
   its LM stages; not started.
2. ``adopt_subgraphs``: each subgraph node gets its own copy, rewritten by the same
   passes with its subplan (the user's subgraph object is untouched).
3. ``place_stages``: the node runnable of every process stage is replaced by a
   ``RemoteNode`` that calls the stage's instances, and registered with the deployment
   (a node's model assertions stay around it, in the app).
4. ``run_ahead_aware``: every node's task proc adopts a run-ahead twin's result
   instead of running again (``scheduling/coordinator.py``).
"""

from __future__ import annotations

from collections.abc import Callable

from langgraph.graph.state import CompiledStateGraph

from ..assertions import is_asserted
from ..process.deployment import Deployment
from ..process.remote import RemoteNode
from ..scheduling.coordinator import run_ahead_aware as _run_ahead_aware_node
from .plan import Plan


def deploy(plan: Plan) -> Deployment | None:
    """The (not yet started) deployment of ``plan``'s process stages, LM stages added."""
    if not plan.process_stages():
        return None
    deployment = Deployment(transport=plan.transport, host=plan.host, ray_address=plan.ray_address)
    for stage in plan.lm_stages:
        from ..lm.serving import LMServer  # only apps that serve models import lm/

        deployment.add_stage(stage.spec(), LMServer(stage.engine), serves=stage.serves)
    return deployment


def adopt_subgraphs(
    graph: CompiledStateGraph,
    plan: Plan,
    rewrite: Callable[[CompiledStateGraph, Plan], CompiledStateGraph],
) -> None:
    """Give every subgraph node a copy of its subgraph that ``rewrite`` turned into an
    alto graph following its subplan. One compiled for alto already is kept as it is."""
    for name, subplan in plan.subplans:
        node = graph.nodes[name]
        sub = node.bound
        if getattr(sub, "_alto", None) is not None:
            continue
        alto_sub = rewrite(sub.copy({"nodes": dict(sub.nodes)}), subplan)
        graph.nodes[name] = node.copy({"bound": alto_sub, "subgraphs": [alto_sub]})


def place_stages(graph: CompiledStateGraph, plan: Plan, deployment: Deployment | None) -> None:
    """Run the code of each of the plan's process stages on the deployment."""
    for stage in plan.stages:
        if stage.placement != "process":
            continue
        assert deployment is not None, "deploy() makes a deployment for process stages"
        node = graph.nodes[stage.name]
        # a node's assertions stay in the app, around the call to its instances
        asserted = node.bound if is_asserted(node.bound) else None
        if asserted is not None and asserted.on_lm:
            a = asserted.on_lm[0]
            raise ValueError(
                f"assertion {a.name!r} (over={a.over!r}) watches the LM calls node "
                f"{stage.name!r} makes, which needs the node in the app process; it is "
                "placed in worker processes. Keep the node in the app (its LM stage can "
                "still run in workers), or check its output instead (over='output')"
            )
        code = asserted.inner if asserted is not None else node.bound
        deployment.add_stage(stage.spec(), code)
        remote = RemoteNode(stage.qualname, code, deployment)
        bound = asserted.around(remote) if asserted is not None else remote
        graph.nodes[stage.name] = node.copy({"bound": bound})


def run_ahead_aware(graph: CompiledStateGraph) -> None:
    """Every node's task proc hands over a run-ahead twin's result when there is one."""
    for name, node in list(graph.nodes.items()):
        graph.nodes[name] = _run_ahead_aware_node(node)
