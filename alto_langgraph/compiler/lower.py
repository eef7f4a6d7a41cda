"""Lowering: read a compiled ``StateGraph`` (and its builder) into a ``Plan``, deciding
where each stage runs, how many instances it has and how items are routed to them."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from langgraph.channels import BinaryOperatorAggregate
from langgraph.constants import START
from langgraph.graph.state import CompiledStateGraph

from .._langgraph import ChannelWrite, input_schema_of, is_managed_value, reads_state
from ..assertions import is_asserted
from ..options import SCHEDULING_SETTINGS, ray_options
from ..scheduling.progress import TRIGGER_CHANNELS, VALUE_CHANNELS
from ..streams import is_fold, is_streaming, node_function
from .fallback import fallbacks, held_at_step
from .plan import Aggregator, Placement, Plan, Queue, Splitter, Stage, worker_nodes

if TYPE_CHECKING:
    from ..options import AltoOptions


def lower(
    graph: CompiledStateGraph, options: AltoOptions, prefix: str = "", in_instance: bool = False
) -> Plan:
    """The plan of ``graph`` (its subgraphs' plans within it). ``prefix``: the names of
    the subgraph nodes it runs in (``"outer/"``); ``in_instance``: compiled inside a
    stage instance, where every node runs in that process."""
    builder = graph.builder
    send_targets = _send_targets(builder)
    stages = [Stage(START, "entry", "runnable", qualname=prefix + START)]
    subplans = []
    for name, spec in builder.nodes.items():
        node = graph.nodes[name]
        sub = node.bound if isinstance(node.bound, CompiledStateGraph) else None
        if sub is not None:
            subplan = getattr(sub, "plan", None)  # already compiled for alto
            if subplan is None:
                subplan = lower(sub, options, f"{prefix}{name}/", in_instance)
            else:
                subplan = dataclasses.replace(subplan, separate=True)
            subplans.append((name, subplan))
        qualname = prefix + name
        call = "graph" if sub is not None else _call_kind(spec.runnable)
        placement, why, settings = _placement(options, qualname, sub is not None, in_instance)
        if placement == "process" and call == "fold":
            # a fold's stream is one item: each goes whole to one instance
            settings = {"stateful": True, "group_depth": 0, **settings}
        stages.append(
            Stage(
                name=name,
                kind="subgraph" if sub is not None else "node",
                call=call,
                placement=placement,
                placed_by=why,
                qualname=qualname,
                send_target=name in send_targets,
                run_ahead=options.run_ahead and settings.get("run_ahead", True),
                assertions=tuple(f"{a.name}({a.severity})" for a in node.bound.assertions)
                if is_asserted(node.bound)
                else (),
                pull_waits=_pull_waits(graph, name, call, bool(spec.defer)),
                cached=graph.cache is not None and spec.cache_policy is not None,
                reads=tuple(
                    c
                    for c in _input_channels(node)
                    if c in graph.channels and not is_managed_value(graph.channels[c])
                ),
                reads_state=reads_state(spec.runnable),
                late_writers=sum(1 for w in node.flat_writers if not isinstance(w, ChannelWrite)),
                retry=bool(spec.retry_policy),
                defer=bool(spec.defer),
                input_schema=(
                    getattr(spec.input_schema, "__name__", str(spec.input_schema))
                    if spec.input_schema is not builder.state_schema
                    else None
                ),
                **{
                    k: v
                    for k, v in settings.items()
                    if k not in ("process", "run_ahead", "assertions")
                },
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
    return Plan(
        name=graph.get_name(),
        executor="inline" if in_instance else options.executor,
        stages=tuple(stages),
        queues=tuple(queues),
        splitters=tuple(splitters),
        aggregators=tuple(aggregators),
        fallbacks=tuple(fallbacks(graph, worker_nodes(stages))),
        held_at_step=tuple(held_at_step(graph)),
        subplans=tuple(subplans),
        lm_stages=_lm_stages(options) if not prefix and not in_instance else (),
        transport=options.transport,
        host=options.host,
        ray_address=options.ray_address,
    )


def _placement(
    options: AltoOptions, qualname: str, subgraph: bool, in_instance: bool
) -> tuple[Placement, str, dict[str, Any]]:
    """Where a node's code runs, why, and the stage settings the user gave it."""
    settings = options.stage_settings(qualname)
    scheduling = {k: v for k, v in settings.items() if k in SCHEDULING_SETTINGS}
    if subgraph:
        return "app", "its nodes are stages", scheduling
    if in_instance:
        return "app", "compiled inside a stage instance", scheduling
    if options.executor == "inline":
        return "app", "executor='inline'", scheduling
    settings = {**settings, "ray": ray_options(settings, options.executor)}
    if settings.get("process") is False:
        return "app", "process=False", settings
    if options.executor in ("process", "ray"):
        return "process", f"executor={options.executor!r}", settings
    # ray=None (set just above) says only that the stage is not on Ray
    placing = {
        k: v
        for k, v in settings.items()
        if k not in SCHEDULING_SETTINGS and not (k == "ray" and v is None)
    }
    if placing:
        asked = ", ".join(k if v is True or v == {} else f"{k}={v!r}" for k, v in placing.items())
        return "process", f"asked for: {asked}", settings
    return "app", "default", settings


def _lm_stages(options: AltoOptions) -> tuple[Stage, ...]:
    out = []
    for lm in options.lm_stages:
        settings = {
            "replicas": lm.replicas,
            "gpus": lm.gpus,
            "policy": lm.policy,
            **options.stage_settings(lm.stage),
        }
        settings.pop("process", None)  # an LM stage is always its own processes
        settings.pop("assertions", None)  # refused by ``assertions.attach``: not a node
        settings["ray"] = ray_options(settings, options.executor)
        out.append(
            Stage(
                name=lm.stage,
                kind="lm",
                call=lm.engine.engine,
                placement="process",
                placed_by="LM stage",
                qualname=lm.stage,
                engine=lm.engine,
                serves=lm.model,
                **settings,
            )
        )
    return tuple(out)


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


def _input_channels(node: Any) -> list[str]:
    return node.channels if isinstance(node.channels, list) else [node.channels]


def _pull_waits(graph: CompiledStateGraph, name: str, call: str, defer: bool) -> str:
    """Why the node's edge-triggered tasks must wait for their superstep ("" if they may
    run ahead on a view of the state)."""
    if defer:
        return "defer=True"
    if call == "fold":
        return "a fold node folds the stream of a Send's payload"
    node = graph.nodes[name]
    if not isinstance(node.channels, list):
        return "its input is one channel"
    if input_schema_of(node) is False:
        return "its input is built by a mapper alto does not know"
    for chan in node.channels:
        channel = graph.channels.get(chan)
        if channel is None or is_managed_value(channel):
            continue  # a managed value: known from the task's step
        if type(channel) not in VALUE_CHANNELS:
            return f"it reads {chan!r}, a {type(channel).__name__} channel"
    for chan in node.triggers:
        channel = graph.channels.get(chan)
        if type(channel) not in TRIGGER_CHANNELS:
            return f"its trigger {chan!r} is a {type(channel).__name__} channel"
    return ""
