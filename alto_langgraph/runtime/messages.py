"""The one message shape that crosses the coordinator/stage boundary.

A message is a small header that routing may read, and a payload that only the stage
instance opens; both are named tuples (one is built per task, on the hot path). The
inline executor hands the payload over by reference; the process executor will carry
it as serialized bytes that the router never deserialises.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

#: One fan-out an item descends from: (the node that sent it, its index among that
#: sender's Sends). A request's root item has no frames.
Frame = tuple[str, int]

#: Where a task's config carries its ancestry, for graphs run inside the node (a
#: subgraph's items descend from the item that invoked it).
CONFIG_KEY_ANCESTRY = "__alto_ancestry"

MessageKind = Literal["task"]


class Header(NamedTuple):
    request_id: str
    ancestry: tuple[Frame, ...]
    stage: str
    kind: MessageKind = "task"
    #: Items with equal routing keys must reach the same instance of a stateful
    #: stage; ``None`` lets the executor balance freely.
    routing_key: str | None = None
    #: Logical superstep of the task (its trigger's step + 1).
    step: int = 0


class Message(NamedTuple):
    header: Header
    payload: Any
