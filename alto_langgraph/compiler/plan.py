"""The dataflow plan: a small, printable IR of a lowered graph.

Stages run node code; queues carry items between them; splitters are where one task
fans out into many (``Send``); aggregators are where items meet again (reducer
channels, waiting edges, deferred nodes). ``print(plan)`` shows it all.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

StageKind = Literal["node", "subgraph", "entry"]
QueueKind = Literal["edge", "join", "branch", "send"]


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    kind: StageKind
    #: how the node's code runs: "async", "sync" (on a thread), "generator", "runnable"
    call: str
    #: a declared ``Send`` target (branch or ``Command`` ends): its tasks run ahead of
    #: their superstep. Undeclared Send targets run ahead too; this is for the reader.
    run_ahead: bool
    #: conditional edges after the node; they read the pre-step state, so for a task
    #: that ran ahead they run once its superstep is reached
    late_writers: int = 0
    retry: bool = False
    defer: bool = False
    input_schema: str | None = None
    #: how items pick an instance: "in process" (inline executor), "least outstanding"
    #: (stateless stage), "ancestry (consistent hash)" (stateful: one group, one instance)
    routing: str = "in process"
    replicas: int = 1


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
    kind: str  # channel class, "join" or "defer"
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class Plan:
    name: str
    executor: str
    stages: tuple[Stage, ...]
    queues: tuple[Queue, ...]
    splitters: tuple[Splitter, ...]
    aggregators: tuple[Aggregator, ...]
    #: graph features alto hands to stock LangGraph at run time, with the reason
    fallbacks: tuple[str, ...] = ()
    subplans: tuple[Plan, ...] = ()
    #: the LM stages ChatAlto calls reach (compile's ``lm``), one line each
    lm_stages: tuple[str, ...] = ()

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"no stage named {name!r} in plan {self.name!r}")

    def __str__(self) -> str:
        return "\n".join(self._lines(""))

    def _lines(self, indent: str) -> list[str]:
        out = [f"{indent}plan {self.name!r} (executor: {self.executor})"]
        out.append(f"{indent}  stages:")
        for s in self.stages:
            flags = [s.kind, s.call]
            if s.run_ahead:
                flags.append("Send target")
            if s.late_writers:
                flags.append(f"{s.late_writers} conditional edge(s) at step")
            if s.retry:
                flags.append("retry")
            if s.defer:
                flags.append("defer")
            if s.input_schema:
                flags.append(f"input={s.input_schema}")
            flags.append(f"routing={s.routing} x{s.replicas}")
            out.append(f"{indent}    {s.name:<16} {', '.join(flags)}")
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
        out.append(f"{indent}  tasks created by a Send run ahead of their superstep (any target);")
        out.append(f"{indent}  tasks triggered by an edge wait for their request's frontier")
        if self.lm_stages:
            out.append(f"{indent}  LM stages (ChatAlto calls, through the router):")
            out.extend(f"{indent}    {line}" for line in self.lm_stages)
        for f in self.fallbacks:
            out.append(f"{indent}  falls back to stock LangGraph: {f}")
        for sub in self.subplans:
            out.extend(sub._lines(indent + "  "))
        return out
