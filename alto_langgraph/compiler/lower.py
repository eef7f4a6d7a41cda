"""Lowering: read a compiled ``StateGraph`` (and its builder) into a ``Plan``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from langgraph.channels import BinaryOperatorAggregate
from langgraph.constants import START
from langgraph.graph.state import CompiledStateGraph

from .._langgraph import ChannelWrite
from ..streams import is_fold, is_streaming, node_function
from .plan import Aggregator, Plan, Queue, Splitter, Stage

if TYPE_CHECKING:
    from ..options import AltoOptions
    from ..process.spec import StageSpec


def lower(
    graph: CompiledStateGraph,
    options: AltoOptions,
    specs: Mapping[str, StageSpec] | None = None,
    prefix: str = "",
) -> Plan:
    """``specs``: the process executor's stages (named ``prefix + node``), if any."""
    specs = specs or {}
    builder = graph.builder
    send_targets = _send_targets(builder)
    stages = [Stage(START, "entry", "runnable", run_ahead=False)]
    subplans = []
    for name, spec in builder.nodes.items():
        node = graph.nodes[name]
        sub = node.bound if isinstance(node.bound, CompiledStateGraph) else None
        if sub is not None and hasattr(sub, "plan"):
            subplans.append(sub.plan)
        late = sum(1 for w in node.flat_writers if not isinstance(w, ChannelWrite))
        stage_spec = specs.get(prefix + name)
        stages.append(
            Stage(
                name=name,
                kind="subgraph" if sub is not None else "node",
                call="graph" if sub is not None else _call_kind(spec.runnable),
                run_ahead=name in send_targets,
                late_writers=late,
                retry=bool(spec.retry_policy),
                defer=bool(spec.defer),
                input_schema=(
                    getattr(spec.input_schema, "__name__", str(spec.input_schema))
                    if spec.input_schema is not builder.state_schema
                    else None
                ),
                routing=(
                    "in process"
                    if stage_spec is None
                    else "ancestry (consistent hash)"
                    if stage_spec.stateful
                    else "least outstanding"
                ),
                replicas=stage_spec.replicas if stage_spec else 1,
            )
        )
    queues = [Queue(s, e, "edge") for s, e in sorted(builder.edges)]
    queues += [
        Queue(s, e, "join", label="waits for " + " & ".join(starts))
        for starts, e in sorted(builder.waiting_edges)
        for s in starts
    ]
    splitters = []
    for src, branches in builder.branches.items():
        for bname, branch in branches.items():
            ends = list(branch.ends.values()) if branch.ends else ["*"]
            queues += [Queue(src, e, "branch", label=bname) for e in ends]
            splitters.append(Splitter(src, f"conditional edge {bname!r}"))
    for name, spec in builder.nodes.items():
        if spec.ends:
            queues += [Queue(name, e, "send", label="Command") for e in spec.ends]
            splitters.append(Splitter(name, "Command"))
        if is_streaming(node_function(spec.runnable)):
            splitters.append(Splitter(name, "@streaming: each Send dispatched as it is yielded"))
    state_keys = set(builder.schemas.get(builder.state_schema, builder.channels))
    aggregators = [
        Aggregator(key, type(ch).__name__, _reducer_name(ch))
        for key, ch in builder.channels.items()
        if key in state_keys and not key.startswith("__")
    ]
    aggregators += [
        Aggregator(e, "join", "after " + " & ".join(starts))
        for starts, e in sorted(builder.waiting_edges)
    ]
    aggregators += [
        Aggregator(name, "defer", "runs when the request is otherwise done")
        for name, spec in builder.nodes.items()
        if spec.defer
    ]
    aggregators += [
        Aggregator(name, "fold", f"over {fn.__alto_fold__!r}, chunk by chunk, on one instance")
        for name, spec in builder.nodes.items()
        if is_fold(fn := node_function(spec.runnable))
    ]
    fallbacks = []
    if graph.checkpointer not in (None, False):
        fallbacks.append("checkpointer (state persistence)")
    if graph.interrupt_before_nodes or graph.interrupt_after_nodes:
        fallbacks.append("interrupt_before/interrupt_after")
    if graph.cache is not None:
        fallbacks.append("node cache")
    return Plan(
        name=graph.get_name(),
        executor=options.executor,
        stages=tuple(stages),
        queues=tuple(queues),
        splitters=tuple(splitters),
        aggregators=tuple(aggregators),
        fallbacks=tuple(fallbacks),
        subplans=tuple(subplans),
        lm_stages=tuple(
            f"{spec.name}: {lm.engine.engine} engine, "
            f"routing={_policy_name(spec.policy)} x{spec.replicas}"
            for lm in (options.lm_stages if not prefix else ())
            for spec in [specs.get(lm.stage.name, lm.stage)]
        ),
    )


def _policy_name(policy: Any) -> str:
    return policy if isinstance(policy, str) else type(policy).__name__


def _send_targets(builder: Any) -> set[str]:
    """Nodes a Send may reach. Sends are dynamic, so any node with an incoming
    branch or Command, or any node at all if a branch has no declared ends."""
    targets: set[str] = set()
    for branches in builder.branches.values():
        for branch in branches.values():
            if not branch.ends:
                return set(builder.nodes)
            targets.update(branch.ends.values())
    for spec in builder.nodes.values():
        if spec.ends:
            targets.update(spec.ends)
    # A Command(goto=Send(...)) needs no annotation, so this is a hint for the reader:
    # run-ahead is decided per task at run time.
    return targets & set(builder.nodes)


def _call_kind(runnable: Any) -> str:
    from langchain_core.runnables import RunnableLambda

    fn = node_function(runnable)
    if is_streaming(fn):
        return "streaming"
    if is_fold(fn):
        return "fold"
    if isinstance(runnable, RunnableLambda):
        return "generator"
    if getattr(runnable, "afunc", None) is not None and getattr(runnable, "func", None) is None:
        return "async"
    if getattr(runnable, "func", None) is not None:
        return "sync"
    return "runnable"


def _reducer_name(channel: Any) -> str:
    if isinstance(channel, BinaryOperatorAggregate):
        op = channel.operator
        return f"reducer={getattr(op, '__module__', '?')}.{getattr(op, '__name__', repr(op))}"
    return ""
