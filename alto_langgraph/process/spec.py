"""``StageSpec``: what one stage of a deployment needs, and how many instances of it
run; and the routing key that keeps an aggregation group on one instance."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

#: an instance's threads for sync node code, by default
DEFAULT_THREADS = 64
#: seconds of silence from an instance's event loop before it is replaced, by default
DEFAULT_STUCK_AFTER = 3.0


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """What one stage needs, and how many instances of it run."""

    name: str
    replicas: int = 1
    #: items of one aggregation group must all reach the same instance
    stateful: bool = False
    #: for a stateful stage: how many trailing ancestry frames an item's group leaves
    #: out (1: the items of one fan-out, i.e. siblings, form a group)
    group_depth: int = 1
    #: GPUs per instance: each instance gets its own ``CUDA_VISIBLE_DEVICES``
    gpus: int = 0
    #: a routing policy (name or object, see ``routing.py``); None: by ``stateful``
    policy: Any = None
    #: sync node calls one instance runs at once, on threads. Stock LangGraph gives
    #: each request a pool of its own, so an instance serving many requests needs more
    #: than one request's worth
    threads: int = DEFAULT_THREADS
    #: an instance that has run this many calls is recycled (replaced once its calls
    #: have finished); None: never
    max_calls_per_instance: int | None = None
    #: an instance whose resident memory passes this many MiB is recycled; None: never
    max_memory_mb: float | None = None
    #: an instance whose event loop does not answer for this many seconds is replaced
    #: (its calls fail with ``StageInstanceLost``); 0: never
    stuck_after: float = DEFAULT_STUCK_AFTER
    #: the most calls one instance holds at once; beyond, a call fails at once with
    #: ``StageOverloaded`` (as Ray's ``max_pending_calls``); None: no limit
    max_pending: int | None = None
    #: None: instances are processes forked on this machine; else they are Ray actors,
    #: made with these options (``ray_actors.ACTOR_OPTIONS``; {}: Ray's defaults)
    ray: Mapping[str, Any] | None = None

    def router_limits(self) -> dict[str, Any]:
        """What the router enforces for this stage (``router.StageRoute``)."""
        return {"stuck_after": self.stuck_after, "max_pending": self.max_pending}


def routing_key(spec: StageSpec, request_id: str, ancestry: tuple[Any, ...]) -> bytes:
    """The aggregation group of an item bound for ``spec``: its request and the ancestry
    prefix it shares with the other members (b"" for a stateless stage)."""
    if not spec.stateful:
        return b""
    prefix = ancestry[: max(0, len(ancestry) - spec.group_depth)]
    return repr((request_id, prefix)).encode()
