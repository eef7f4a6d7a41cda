"""The router process: forwards messages between coordinators and stage instances.

It reads only the envelope frame (``wire.py``) of each message: the payload frame
passes through as bytes, never deserialised. Per stage it keeps the live
instances and a routing policy; per instance, the calls in flight, so that when an
instance dies each of its callers gets a ``LOST`` reply instead of waiting forever.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import zmq

from . import wire
from .routing import RoutingPolicy

#: messages an instance sends to the caller of a call before its result
_TO_CALLER = frozenset(
    (
        wire.CHUNK,
        wire.EMIT,
        wire.CALLBACK,
        wire.WRITES,
        wire.HEARTBEAT,
        wire.CALL,
        wire.STORE,
        wire.YIELD,
        wire.STREAM,
        wire.READS,
    )
)


@dataclasses.dataclass
class StageRoute:
    instances: tuple[bytes, ...]  # every instance the stage should have
    policy: RoutingPolicy
    live: list[bytes] = dataclasses.field(default_factory=list)
    failed: dict[bytes, str] = dataclasses.field(default_factory=dict)
    #: task messages that arrived while no instance was live (startup, restart)
    waiting: collections.deque[list[bytes]] = dataclasses.field(default_factory=collections.deque)


class Router:
    def __init__(self, stages: dict[bytes, StageRoute]) -> None:
        self.stages = stages
        self.outstanding: dict[bytes, int] = collections.Counter()
        self.forwarded = 0
        # (client, call id) -> instance; instance -> {(client, call id): envelope}
        self.inflight: dict[tuple[bytes, bytes], bytes] = {}
        self.by_instance: dict[bytes, dict[tuple[bytes, bytes], bytes]] = collections.defaultdict(
            dict
        )
        self.ready_waiters: list[tuple[bytes, bytes]] = []
        self.stage_of = {inst: name for name, st in stages.items() for inst in st.instances}

    # -- from coordinators ------------------------------------------------------
    def from_client(self, frames: list[Any], front: Any, back: Any) -> None:
        client, env = frames[0], frames[1]
        kind, call_id, stage, key = env.split(wire.SEP, 3)
        if kind == wire.TASK:
            route = self.stages.get(stage)
            if route is None:
                front.send_multipart(
                    [client, wire.envelope(wire.LOST, call_id), b"no stage named " + stage]
                )
                return
            if not route.live:
                if len(route.failed) == len(route.instances):
                    reason = "; ".join(route.failed.values()).encode()
                    front.send_multipart([client, wire.envelope(wire.LOST, call_id), reason])
                else:
                    route.waiting.append(frames)
                return
            inst = route.policy.pick(key, route.live, self.outstanding)
            self._dispatch(inst, client, call_id, frames, back)
        elif kind == wire.CANCEL:
            inst = self.inflight.get((client, call_id))
            if inst is not None:
                back.send_multipart([inst, client, env, b""])
        elif kind == wire.FEED:  # to the instance that has the call, after its TASK
            inst = self.inflight.get((client, call_id))
            if inst is not None:
                back.send_multipart([inst, *frames])
            elif (route := self.stages.get(stage)) is not None and any(
                f[0] == client and f[1].split(wire.SEP, 2)[1] == call_id for f in route.waiting
            ):
                route.waiting.append(frames)  # its TASK waits for an instance: after it
        elif kind == wire.CALL_RESULT:  # to the instance that waits for it
            back.send_multipart([stage, client, env, frames[-1]])
        elif kind == wire.CONTROL:
            self._control(client, call_id, stage, key, frames[-1], front)
        self.forwarded += 1

    def _dispatch(
        self, inst: bytes, client: bytes, call_id: bytes, frames: list[Any], back: Any
    ) -> None:
        back.send_multipart([inst, *frames])
        self.outstanding[inst] += 1
        self.inflight[(client, call_id)] = inst
        self.by_instance[inst][(client, call_id)] = frames[1]

    # -- from instances ---------------------------------------------------------
    def from_instance(self, frames: list[Any], front: Any, back: Any) -> None:
        inst, client, env = frames[0], frames[1], frames[2]
        kind = env[:1]
        if kind == wire.RESULT or kind == wire.ERROR:
            call_id = env.split(wire.SEP, 2)[1]
            if self.inflight.pop((client, call_id), None) is not None:
                self.outstanding[inst] -= 1
                self.by_instance[inst].pop((client, call_id), None)
            front.send_multipart([client, env, frames[3]])
        elif kind in _TO_CALLER:
            front.send_multipart([client, env, frames[3]])
        elif kind == wire.READY:
            self._instance_up(inst, back)
        elif kind == wire.FAILED:
            self._instance_failed(inst, bytes(frames[3]).decode(errors="replace"), front)
            # the instance waits for this before it exits, so its own reason is on
            # record before the supervisor's report of the exit can arrive
            back.send_multipart([inst, wire.envelope(wire.FAILED)])
        self.forwarded += 1

    def _instance_up(self, inst: bytes, back: Any) -> None:
        route = self.stages[self.stage_of[inst]]
        route.failed.pop(inst, None)
        if inst not in route.live:
            route.live.append(inst)
            route.live.sort()
        while route.waiting:
            frames = route.waiting.popleft()
            kind, call_id, _stage, key = frames[1].split(wire.SEP, 3)
            if kind == wire.FEED:
                inst = self.inflight.get((frames[0], call_id))
                if inst is not None:
                    back.send_multipart([inst, *frames])
                continue
            self._dispatch(
                route.policy.pick(key, route.live, self.outstanding),
                frames[0],
                call_id,
                frames,
                back,
            )

    def _instance_failed(self, inst: bytes, reason: str, front: Any) -> None:
        name = self.stage_of.get(inst)
        if name is None:
            return
        route = self.stages[name]
        # the instance's own reason (why its code did not load) beats the
        # supervisor's later "exited with code 3"
        route.failed.setdefault(inst, reason)
        if inst in route.live:
            route.live.remove(inst)
        self._fail_inflight(inst, reason, front)
        if not route.live and len(route.failed) == len(route.instances):
            while route.waiting:  # nobody will ever run these
                frames = route.waiting.popleft()
                kind, call_id = frames[1].split(wire.SEP, 3)[:2]
                if kind == wire.FEED:
                    continue
                front.send_multipart(
                    [frames[0], wire.envelope(wire.LOST, call_id), reason.encode()]
                )

    def _fail_inflight(self, inst: bytes, reason: str, front: Any) -> None:
        for (client, call_id), _env in self.by_instance.pop(inst, {}).items():
            self.inflight.pop((client, call_id), None)
            front.send_multipart([client, wire.envelope(wire.LOST, call_id), reason.encode()])
        self.outstanding[inst] = 0

    # -- control (from the coordinator that owns this deployment) -----------------
    def _control(
        self, client: bytes, call_id: bytes, cmd: bytes, arg: bytes, detail: Any, front: Any
    ) -> None:
        if cmd == wire.CTL_WAIT_READY:
            self.ready_waiters.append((client, call_id))
        elif cmd == wire.CTL_DEAD:
            name = self.stage_of.get(arg)
            if name is not None:
                route = self.stages[name]
                if arg in route.live:
                    route.live.remove(arg)
                self._fail_inflight(arg, bytes(detail).decode(errors="replace"), front)
        elif cmd == wire.CTL_FAILED:
            self._instance_failed(arg, bytes(detail).decode(errors="replace"), front)
        elif cmd == wire.CTL_RESTARTED:
            name = self.stage_of.get(arg)
            if name is not None:
                self.stages[name].failed.pop(arg, None)
        elif cmd == wire.CTL_STATS:
            stats = {
                "forwarded": self.forwarded,
                "outstanding": {k.decode(): v for k, v in self.outstanding.items()},
                "live": {
                    k.decode(): [i.decode() for i in st.live] for k, st in self.stages.items()
                },
                "pid": os.getpid(),
                "policies": {k.decode(): type(st.policy).__name__ for k, st in self.stages.items()},
            }
            front.send_multipart([client, wire.envelope(wire.READY, call_id), repr(stats).encode()])

    def answer_ready_waiters(self, front: Any) -> None:
        if not self.ready_waiters:
            return
        failed = [reason for st in self.stages.values() for reason in st.failed.values()]
        if failed:
            reply, detail = wire.FAILED, "; ".join(failed).encode()
        elif all(len(st.live) == len(st.instances) for st in self.stages.values()):
            reply, detail = wire.READY, b""
        else:
            return
        for client, call_id in self.ready_waiters:
            front.send_multipart([client, wire.envelope(reply, call_id), detail])
        self.ready_waiters.clear()


def serve(
    front_address: str, back_address: str, stages: Sequence[tuple[str, Sequence[bytes], Any]]
) -> None:
    """Run a router until the process is killed (its owner's lifeline ends it)."""
    routes = {
        name.encode(): StageRoute(tuple(instances), policy) for name, instances, policy in stages
    }
    router = Router(routes)
    ctx = zmq.Context()
    front = ctx.socket(zmq.ROUTER)
    back = ctx.socket(zmq.ROUTER)
    for sock in (front, back):
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
    back.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a restarted instance reuses its identity
    front.bind(front_address)
    back.bind(back_address)
    poller = zmq.Poller()
    poller.register(front, zmq.POLLIN)
    poller.register(back, zmq.POLLIN)
    while True:
        events = dict(poller.poll())
        if back in events:
            _drain(back, router.from_instance, front, back)
        if front in events:
            _drain(front, router.from_client, front, back)
        router.answer_ready_waiters(front)


def _drain(sock: Any, handle: Any, front: Any, back: Any) -> None:
    """Handle what ``sock`` has queued (up to a batch: the other socket gets its turn)."""
    for _ in range(512):
        try:
            frames = sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        handle(frames, front, back)
