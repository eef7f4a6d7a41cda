"""The dataflow plan: a small, printable IR of a lowered graph, and every decision in it.

Stages run node code; queues carry items between them; splitters are where one task
fans out into many (``Send``); aggregators are where items meet again (reducer
channels, waiting edges, deferred nodes, folds). The plan also holds what the runtime
does with each stage: where its code runs (``placement``, and why), how many
instances, how items are routed to them, and which graph features send a run to
stock LangGraph. The deployment and the rewrite of the compiled graph are built from
it (``passes.py``), so ``print(plan)`` shows what runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any, Literal

from ..process.spec import DEFAULT_STUCK_AFTER, DEFAULT_THREADS, StageSpec

StageKind = Literal["node", "subgraph", "entry", "lm"]
QueueKind = Literal["edge", "join", "branch", "send"]
#: "app": node code runs in the app process, as on stock LangGraph; "process": on
#: instances of the stage: worker processes forked here, or Ray actors (``Stage.ray``)
Placement = Literal["app", "process"]


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    kind: StageKind
    #: how the node's code runs: "async", "sync" (on a thread), "generator",
    #: "streaming", "fold", "runnable", "graph", or an LM engine's name
    call: str
    placement: Placement = "app"
    #: why it runs there (the option or setting that decided it)
    placed_by: str = "default"
    #: the name the deployment knows it by: ``"subgraph_node/node"`` inside subgraphs
    qualname: str = ""
    #: a declared ``Send`` target (branch or ``Command`` ends). Undeclared Send targets
    #: run ahead too; this is for the reader.
    send_target: bool = False
    #: False: none of the node's tasks starts before its superstep (``run_ahead=False``,
    #: for nodes whose side effects must not happen early or twice)
    run_ahead: bool = True
    #: its model assertions (``assertions.py``), as ``name(severity)``
    assertions: tuple[str, ...] = ()
    #: the node has a cache policy (and the graph a cache): at its step the loop may
    #: find its result cached, so none of its tasks starts before
    cached: bool = False
    #: why its tasks triggered by an edge wait for their superstep ("" if they may run
    #: ahead of it, on a view of the state that records what they read)
    pull_waits: str = ""
    #: the state channels its tasks read (its input schema's keys): what a run-ahead of
    #: it is checked against at hand-over
    reads: tuple[str, ...] = ()
    #: conditional edges after the node; they read the pre-step state, so for a task
    #: that ran ahead they run once its superstep is reached
    late_writers: int = 0
    #: the node reads graph state through its config (a ``ToolNode`` given a list of
    #: tool calls does, for injected state): its Send tasks would miss, so they wait for
    #: their step
    reads_state: bool = False
    retry: bool = False
    defer: bool = False
    input_schema: str | None = None
    # -- process stages ----------------------------------------------------------------
    replicas: int = 1
    #: items of one aggregation group reach one instance
    stateful: bool = False
    #: trailing ancestry frames an item's group leaves out (1: one fan-out's items)
    group_depth: int = 1
    gpus: int = 0
    #: sync node calls one instance runs at once
    threads: int = DEFAULT_THREADS
    #: recycling and health (``process.spec.StageSpec``)
    max_calls_per_instance: int | None = None
    max_memory_mb: float | None = None
    stuck_after: float = DEFAULT_STUCK_AFTER
    max_pending: int | None = None
    #: Ray actor options (``process.ray_actors.ACTOR_OPTIONS``) of a stage whose
    #: instances are Ray actors; None: processes forked on this machine
    ray: Any = None
    #: the routing policy: a name in ``routing.POLICIES``, an object, or None (by
    #: ``stateful``: consistent hash, else least outstanding)
    policy: Any = None
    #: LM stages: the engine (``lm.engines.EngineSpec``) and the model it serves
    engine: Any = None
    serves: str | None = None

    @property
    def routing(self) -> str:
        """How items pick an instance: "in process" (app stages), else the routing
        policy's name in ``routing.POLICIES`` (by default consistent hashing of the
        ancestry for a stateful stage, the least outstanding instance otherwise), or a
        custom policy's class name."""
        if self.placement == "app":
            return "in process"
        if self.policy is None:
            return "consistent_hash" if self.stateful else "least_outstanding"
        return self.policy if isinstance(self.policy, str) else type(self.policy).__name__

    def spec(self) -> StageSpec:
        """The deployment's ``StageSpec`` of a process stage."""
        assert self.placement == "process", self.name
        return StageSpec(
            name=self.qualname or self.name,
            replicas=self.replicas,
            stateful=self.stateful,
            group_depth=self.group_depth,
            gpus=self.gpus,
            policy=self.policy,
            threads=self.threads,
            max_calls_per_instance=self.max_calls_per_instance,
            max_memory_mb=self.max_memory_mb,
            stuck_after=self.stuck_after,
            max_pending=self.max_pending,
            ray=self.ray,
        )


@dataclasses.dataclass(frozen=True)
class Queue:
    src: str
    dst: str
    kind: QueueKind
    label: str = ""


@dataclasses.dataclass(frozen=True)
class Splitter:
    node: str
    via: str  # "conditional edge" or "Command"


@dataclasses.dataclass(frozen=True)
class Aggregator:
    """Where items of one request meet: a reducer channel or a barrier."""

    key: str
    kind: str  # channel class, "join", "defer" or "fold"
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class Plan:
    name: str
    executor: str
    stages: tuple[Stage, ...]
    queues: tuple[Queue, ...]
    splitters: tuple[Splitter, ...]
    aggregators: tuple[Aggregator, ...]
    #: features of the compiled graph that send its runs to stock LangGraph
    fallbacks: tuple[str, ...] = ()
    #: features of the compiled graph that keep every task at its superstep
    held_at_step: tuple[str, ...] = ()
    #: the plans of subgraph nodes, by node name
    subplans: tuple[tuple[str, Plan], ...] = ()
    #: the LM stages ChatAlto calls reach (compile's ``lm``)
    lm_stages: tuple[Stage, ...] = ()
    #: how the deployment is reached (process stages only)
    transport: str = "ipc"
    host: str | None = None
    ray_address: str | None = None
    #: a subgraph compiled for alto before it was added: its stages run as its own plan
    #: says, on its own deployment, and are not the parent's to place or name
    separate: bool = False

    def stage(self, name: str) -> Stage:
        for s in (*self.stages, *self.lm_stages):
            if s.name == name:
                return s
        raise KeyError(f"no stage named {name!r} in plan {self.name!r}")

    def subplan(self, node: str) -> Plan:
        return dict(self.subplans)[node]

    def all_stages(self) -> Iterator[Stage]:
        """Every stage this plan places: its own, its subplans' (but a separate one's),
        LM stages included."""
        yield from self.stages
        for _, sub in self.subplans:
            if not sub.separate:
                yield from sub.all_stages()
        yield from self.lm_stages

    def worker_nodes(self) -> frozenset[str]:
        """This graph's own nodes whose code runs in worker processes."""
        return worker_nodes(self.stages)

    def process_stages(self) -> list[Stage]:
        """The stages the deployment runs in worker processes."""
        return [s for s in self.all_stages() if s.placement == "process"]

    def __str__(self) -> str:
        return "\n".join(self._lines(""))

    def _lines(self, indent: str) -> list[str]:
        out = [f"{indent}plan {self.name!r} (executor: {self.executor})"]
        if self.separate:
            out[0] += ", compiled for alto on its own: its own deployment"
        out.append(f"{indent}  stages:")
        for s in self.stages:
            out.append(f"{indent}    {s.name:<16} {', '.join(_flags(s))}")
        out.append(f"{indent}  queues:")
        for q in self.queues:
            label = f" [{q.label}]" if q.label else ""
            out.append(f"{indent}    {q.src} -{q.kind}-> {q.dst}{label}")
        if self.splitters:
            out.append(f"{indent}  splitters (may fan out with Send):")
            for sp in self.splitters:
                out.append(f"{indent}    {sp.node} via {sp.via}")
        if self.aggregators:
            out.append(f"{indent}  aggregators:")
            for a in self.aggregators:
                detail = f" {a.detail}" if a.detail else ""
                out.append(f"{indent}    {a.key:<16} {a.kind}{detail}")
        out.append(
            f"{indent}  tasks run ahead of their superstep: a Send's when its sender is done, an "
            "edge's when its trigger is"
        )
        out.append(f"{indent}  (checked at hand-over against what it read; a miss runs it again)")
        if self.lm_stages:
            out.append(f"{indent}  LM stages (ChatAlto calls, through the router):")
            for s in self.lm_stages:
                out.append(
                    f"{indent}    {s.name}: {s.call} engine, routing={s.routing} x{s.replicas}"
                    + (f", {s.gpus} GPU(s) each" if s.gpus else "")
                )
        for f in self.fallbacks:
            out.append(f"{indent}  runs fall back to stock LangGraph: the graph has {f}")
        for f in self.held_at_step:
            out.append(f"{indent}  every task waits for its superstep: the graph has {f}")
        for _, sub in self.subplans:
            out.extend(sub._lines(indent + "  "))
        return out


def worker_nodes(stages: Iterable[Stage]) -> frozenset[str]:
    """The nodes among ``stages`` whose code runs in worker processes."""
    return frozenset(s.name for s in stages if s.placement == "process" and s.kind == "node")


def _flags(s: Stage) -> list[str]:
    flags = [s.kind, s.call]
    if s.send_target:
        flags.append("Send target")
    if s.kind in ("node", "subgraph"):
        if not s.run_ahead:
            flags.append("never runs ahead (run_ahead=False)")
        elif s.cached:
            flags.append("never runs ahead (a cache policy: its result may be cached)")
        elif s.pull_waits:
            flags.append(f"edge-triggered tasks wait for their step ({s.pull_waits})")
        else:
            flags.append("runs ahead when its edge fires")
    if s.late_writers:
        flags.append(f"{s.late_writers} conditional edge(s) at step")
    if s.reads_state:
        flags.append("reads graph state: its Sends wait for their step")
    if s.retry:
        flags.append("retry")
    if s.assertions:
        flags.append(f"assertions: {', '.join(s.assertions)}")
    if s.defer:
        flags.append("defer")
    if s.input_schema:
        flags.append(f"input={s.input_schema}")
    if s.kind in ("node", "lm"):
        where = (
            "app process"
            if s.placement == "app"
            else "Ray actors"
            if s.ray is not None
            else "worker processes"
        )
        flags.append(f"runs in the {where} ({s.placed_by})")
    if s.placement == "process":
        flags.append(f"routing={s.routing} x{s.replicas}")
        if s.gpus:
            flags.append(f"{s.gpus} GPU(s) each")
        if s.ray:
            flags.append("ray: " + ", ".join(f"{k}={v!r}" for k, v in s.ray.items()))
    return flags
