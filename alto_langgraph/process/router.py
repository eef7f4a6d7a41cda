"""The router process: forwards messages between coordinators and stage instances.

It reads only the envelope frame (``wire.py``) of each message: the payload frame
passes through as bytes, never deserialised. Per stage it keeps the live
instances and a routing policy; per instance, the calls in flight, so that when an
instance dies each of its callers gets a ``LOST`` reply instead of waiting forever.

It trusts no message. Every connection is authenticated (``security.py``) and the
router knows each connection's peer from that, not from what the peer claims: an
instance is addressed through the connection that proved to be it, only the app may
send control messages, an instance may only speak for the calls it holds, and a
coordinator only for its own. A message that breaks these rules, or is malformed, is
logged, counted and dropped. User code here (a routing policy) that raises or answers
nonsense fails the call it was asked about, not the router.

It takes a stream's chunks from its producer to the fold that consumes it directly,
once the caller asks (``SUBSCRIBE``, see ``wire.py``), and the acknowledgements back
to the producer (``tees.py``).

It also watches the instances' health: each instance's event loop pulses every
``wire.PULSE_EVERY`` seconds. One that falls silent for ``wire.STUCK_AFTER`` seconds, or
reports that every thread it has is held by abandoned calls, gets no new calls and
the app is told to replace it; one that asks to be recycled (it served its
``max_calls_per_instance`` or passed its memory limit) gets no new calls, and once its
calls have finished the app is told to stop it. Supervision restarts both.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import zmq

from ..errors import RoutingError, StageOverloaded
from . import security, shipping, wire
from .routing import RoutingPolicy
from .tees import Tee, Tees

logger = logging.getLogger("alto_langgraph")

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
#: of those, the requests the instance waits on under its own name (stage field)
_ASKS = frozenset((wire.CALL, wire.STORE))
#: dropped messages logged one by one before the log only samples them
_LOG_DROPS = 20
#: how long a task waits for an instance of a stage that has none live before it
#: fails (as long as ``Deployment.start`` gives instances to become ready)
UNAVAILABLE_TIMEOUT = 120.0
#: how often the router looks at the instances' pulses and its waiting tasks
TICK = 0.25


#: the figures of an instance's health report the router keeps (``stats()``)
HEALTH_FIGURES = (
    "calls",
    "running",
    "threads",
    "busy_threads",
    "abandoned_threads",
    "rss_mb",
    "dropped",
)


@dataclasses.dataclass
class _Leaving:
    """An instance that gets no new calls: the notice the app gets about it, and why."""

    notice: bytes  # wire.CTL_REPLACE or wire.CTL_RECYCLE
    why: bytes
    told: bool = False


@dataclasses.dataclass
class StageRoute:
    instances: tuple[bytes, ...]  # every instance the stage should have
    policy: RoutingPolicy
    #: seconds of silence before an instance is replaced (0: never)
    stuck_after: float = 0.0
    #: the most calls one instance holds (None: no limit)
    max_pending: int | None = None
    #: seconds a task waits while the stage has no live instance, before it fails
    unavailable_after: float = UNAVAILABLE_TIMEOUT
    live: list[bytes] = dataclasses.field(default_factory=list)
    failed: dict[bytes, str] = dataclasses.field(default_factory=dict)
    #: task messages that arrived while no instance was live (startup, restart), with
    #: their arrival times
    waiting: collections.deque[tuple[float, list[Any]]] = dataclasses.field(
        default_factory=collections.deque
    )
    #: why the stage's last instance went away (what waiting tasks fail with, in time)
    last_reason: str = "no instance of it has started yet"


class Router:
    def __init__(
        self,
        stages: dict[bytes, StageRoute],
        front: Any,
        back: Any,
        gate: security.Gatekeeper | None = None,
    ) -> None:
        self.stages = stages
        #: the ROUTER sockets for coordinators and for instances
        self.front = front
        self.back = back
        self.gate = gate
        self.outstanding: dict[bytes, int] = collections.Counter()
        self.forwarded = 0
        #: messages dropped, by why
        self.dropped: collections.Counter[str] = collections.Counter()
        # (client, call id) -> instance; instance -> {(client, call id): envelope}
        self.inflight: dict[tuple[bytes, bytes], bytes] = {}
        self.by_instance: dict[bytes, dict[tuple[bytes, bytes], bytes]] = collections.defaultdict(
            dict
        )
        self.ready_waiters: list[tuple[bytes, bytes]] = []
        self.stage_of = {inst: name for name, st in stages.items() for inst in st.instances}
        #: instance -> the back-end connection that proved to be it, and back
        self.conn_of: dict[bytes, bytes] = {}
        self.inst_of: dict[bytes, bytes] = {}
        self.pid_of: dict[bytes, bytes] = {}  # what each instance's READY said
        #: health: each live instance's last pulse; those leaving (no new calls) and why
        self.last_pulse: dict[bytes, float] = {}
        self.health: dict[bytes, dict[str, float]] = {}  # each one's last report
        self.leaving: dict[bytes, _Leaving] = {}
        #: the app's connection (notices go there)
        self.owner: bytes | None = None
        #: streams sent straight to their folds
        self.tees = Tees()
        self.teed = 0  # chunks sent so

    def drop(self, why: str, detail: str = "") -> None:
        """Count a dropped message under ``why`` (one of a fixed few: a sender cannot
        grow the counters), and log it with ``detail``."""
        self.dropped[why] += 1
        n = sum(self.dropped.values())
        if n <= _LOG_DROPS or n % 1000 == 0:
            logger.warning(
                "alto router: dropped a message (%s%s; %d dropped so far)", why, detail, n
            )

    # -- from coordinators ------------------------------------------------------
    def from_client(self, frames: list[Any], sender: Any) -> None:
        """``frames``: the connection, the envelope (bytes) and the payload frame;
        ``sender``: a frame of the message, which knows who its connection proved to
        be (``security.peer_name``: read only where it matters)."""
        if len(frames) != 3:
            return self.drop("a coordinator's message without envelope and payload")
        client, env, payload = frames
        fields = env.split(wire.SEP, 3)
        if len(fields) != 4:
            return self.drop("a coordinator's message with a malformed envelope")
        kind, call_id, stage, key = fields
        if kind == wire.TASK:
            route = self.stages.get(stage)
            if route is None:
                lost = b"no stage named " + stage
                self.front.send_multipart([client, wire.envelope(wire.LOST, call_id), lost])
            elif (client, call_id) in self.inflight:
                return self.drop("a task whose call id is already in flight")
            elif route.live:
                self._dispatch(stage, route, frames)
            elif len(route.failed) == len(route.instances):
                reason = "; ".join(route.failed.values()).encode()
                self.front.send_multipart([client, wire.envelope(wire.LOST, call_id), reason])
            elif route.max_pending is not None and _tasks_in(route.waiting) >= (
                cap := route.max_pending * len(route.instances)
            ):
                error = shipping.dumps_error(
                    StageOverloaded(
                        f"alto: stage {stage.decode()!r} is overloaded: {cap} calls already "
                        "wait for an instance of it to come up (max_pending="
                        f"{route.max_pending} per instance)"
                    )
                )
                self.front.send_multipart([client, wire.envelope(wire.ERROR, call_id), error])
            else:
                route.waiting.append((time.monotonic(), frames))
        elif kind == wire.CANCEL:
            inst = self.inflight.get((client, call_id))
            if inst is not None:
                self.back.send_multipart([self.conn_of[inst], client, env, b""])
        elif kind == wire.FEED:  # to the instance that has the call, after its TASK
            inst = self.inflight.get((client, call_id))
            if inst is not None:
                self.back.send_multipart([self.conn_of[inst], *frames], copy=False)
            elif (route := self.stages.get(stage)) is not None and any(
                f[0] == client and f[1].split(wire.SEP, 2)[1] == call_id for _, f in route.waiting
            ):
                route.waiting.append((time.monotonic(), frames))  # after its waiting TASK
        elif kind == wire.CREDIT:  # the caller acknowledges its producer's chunks
            sid = key.partition(b"/")[0]
            tee = self.tees.of_stream(client, call_id, sid) if self.tees else None
            if tee is not None:
                self._acknowledged(tee, key, by_fold=False)
            elif (inst := self.inflight.get((client, call_id))) is not None:
                self.back.send_multipart([self.conn_of[inst], client, env, b""])
        elif kind == wire.SUBSCRIBE:
            self._subscribe(client, call_id, key, bytes(payload))
        elif kind == wire.CALL_RESULT:  # to the instance that waits for it
            if self.inflight.get((client, call_id)) != stage:
                return self.drop("a @task result for an instance that does not run the call")
            self.back.send_multipart([self.conn_of[stage], *frames], copy=False)
        elif kind == wire.CONTROL:
            if security.peer_name(sender) != security.APP:
                return self.drop("a control message from a peer other than the app")
            self.owner = client
            self._control(client, call_id, stage, key, payload)
        else:
            return self.drop("a coordinator's message of unknown kind", f" {kind[:8]!r}")
        self.forwarded += 1

    def _dispatch(self, name: bytes, route: StageRoute, frames: list[Any]) -> None:
        """Send a task to the instance the stage's policy picks (or fail it, if the
        policy cannot pick one)."""
        client, env, _payload = frames
        _kind, call_id, _stage, key = env.split(wire.SEP, 3)
        try:
            inst = route.policy.pick(key, route.live, self.outstanding)
            if inst not in route.live:
                live = ", ".join(i.decode() for i in route.live)
                raise RoutingError(
                    f"alto: the routing policy {type(route.policy).__name__} of stage "
                    f"{name.decode()!r} picked {inst!r}, which is not one of its live "
                    f"instances ({live})"
                )
            if route.max_pending is not None and self.outstanding[inst] >= route.max_pending:
                raise StageOverloaded(
                    f"alto: stage {name.decode()!r} is overloaded: its instance "
                    f"{inst.decode()} already holds {self.outstanding[inst]} calls "
                    f"(max_pending={route.max_pending})"
                )
        except Exception as exc:  # the policy is user code: it fails this call only
            if not isinstance(exc, (RoutingError, StageOverloaded)):
                exc.add_note(
                    f"alto: raised by the routing policy {type(route.policy).__name__} "
                    f"of stage {name.decode()!r}, in the router process"
                )
            error = shipping.dumps_error(exc)
            self.front.send_multipart([client, wire.envelope(wire.ERROR, call_id), error])
            return
        self.back.send_multipart([self.conn_of[inst], *frames], copy=False)
        self.outstanding[inst] += 1
        self.inflight[(client, call_id)] = inst
        self.by_instance[inst][(client, call_id)] = env

    # -- from instances ---------------------------------------------------------
    def from_instance(self, frames: list[Any], sender: Any) -> None:
        """``frames``: the connection, the call's client, the envelope (bytes) and the
        payload frame; ``sender``: as ``from_client``'s."""
        if len(frames) != 4:
            return self.drop("an instance's message without client, envelope and payload")
        conn, client, env, payload = frames
        kind = env[:1]
        peer = security.peer_name(sender)
        inst = self.inst_of.get(conn)
        fresh = inst is None
        if fresh:
            if peer not in self.stage_of:
                return self.drop("a message from a connection that is no known instance")
            if kind in (wire.READY, wire.FAILED):  # a (re)started instance
                self._connected(peer, conn, bytes(payload) if kind == wire.READY else b"")
            else:  # the same process, reconnected (zmq does that on its own)
                self._reconnected(peer, conn)
            inst = peer
        elif peer != inst:  # a connection id handed on to another peer by libzmq
            return self.drop("a message whose connection proved to be another instance")
        if kind == wire.RESULT or kind == wire.ERROR:
            call_id = env.split(wire.SEP, 2)[1]
            if self.inflight.get((client, call_id)) != inst:
                return self.drop("a result of a call the instance does not run")
            del self.inflight[(client, call_id)]
            self.outstanding[inst] -= 1
            self.by_instance[inst].pop((client, call_id), None)
            self.front.send_multipart([client, env, payload], copy=False)
            if inst in self.leaving:
                self._tell_app(inst)
            if self.tees:
                self._end_tees(client, call_id)
        elif kind in _TO_CALLER:
            fields = env.split(wire.SEP, 3)
            if len(fields) != 4 or self.inflight.get((client, fields[1])) != inst:
                return self.drop("a message about a call the instance does not run")
            if kind in _ASKS and fields[2] != inst:
                return self.drop("a @task call made in another instance's name")
            if kind == wire.STREAM and self.tees:
                tee = self.tees.of_stream(client, fields[1], fields[3].partition(b"/")[0])
                if tee is not None:
                    return self._tee(tee, fields[3], payload)
            self.front.send_multipart([client, env, payload], copy=False)
        elif kind == wire.CREDIT:  # a fold's instance acknowledges its input's chunks
            fields = env.split(wire.SEP, 3)
            if len(fields) != 4 or self.inflight.get((client, fields[1])) != inst:
                return self.drop("a message about a call the instance does not run")
            tee = self.tees.into(client, fields[1], fields[3].partition(b"/")[0])
            if tee is not None:  # else the stream is not teed: its caller acknowledges it
                self._acknowledged(tee, fields[3], by_fold=True)
        elif kind == wire.PULSE:
            self._pulse(inst, bytes(payload))
        elif kind == wire.READY:
            if not fresh:  # once per process: a second could undo its leaving
                return self.drop("a second READY on one connection")
            self._instance_up(inst)
        elif kind == wire.FAILED:
            self._instance_failed(inst, bytes(payload).decode(errors="replace"))
            # the instance waits for this before it exits, so its own reason is on
            # record before the supervisor's report of the exit can arrive
            self.back.send_multipart([conn, b"", wire.envelope(wire.FAILED), b""])
        else:
            return self.drop("an instance's message of unknown kind", f" {kind[:8]!r}")
        self.forwarded += 1

    # -- streams straight to their folds (``tees.py``) ---------------------------------
    def _subscribe(self, client: bytes, fold: bytes, sid: bytes, producer: bytes) -> None:
        """Tee the stream, if both calls run on instances (if either is over, or waits
        for an instance, the caller goes on feeding the fold itself)."""
        if (client, fold) in self.inflight and (client, producer) in self.inflight:
            self.tees.add(client, producer, fold, sid)

    def _tee(self, tee: Tee, key: bytes, payload: Any) -> None:
        """A chunk (or the end) of a teed stream: to the fold's instance, and a copy to
        the caller, which keeps the chunks and feeds the fold no more of this one."""
        if wire.parse_stream_key(key) is None:
            return self.drop("a stream message without a stream key")
        fold_inst = self.inflight[(tee.client, tee.fold)]  # a tee ends with either call
        feed = wire.envelope(wire.FEED, tee.fold, b"", key)
        self.back.send_multipart([self.conn_of[fold_inst], tee.client, feed, payload], copy=False)
        copy = wire.envelope(wire.TEED, tee.producer, tee.fold, key)
        self.front.send_multipart([tee.client, copy, payload], copy=False)
        self.teed += 1
        self.forwarded += 1

    def _acknowledged(self, tee: Tee, key: bytes, by_fold: bool) -> None:
        where = wire.parse_stream_key(key)
        if where is None:
            return self.drop("a stream message without a stream key")
        count = tee.acknowledged(where[1], by_fold)
        if count is not None:
            self._tell_producer(tee, count)

    def _tell_producer(self, tee: Tee, count: int) -> None:
        inst = self.inflight.get((tee.client, tee.producer))
        if inst is not None and inst in self.conn_of:
            key = wire.stream_key(tee.sid.decode(), count)
            credit = wire.envelope(wire.CREDIT, tee.producer, b"", key)
            self.back.send_multipart([self.conn_of[inst], tee.client, credit, b""])

    def _end_tees(self, client: bytes, call: bytes) -> None:
        for tee, count in self.tees.end(client, call):
            self._tell_producer(tee, count)

    def _connected(self, inst: bytes, conn: bytes, pid: bytes) -> None:
        """``conn`` proved to be ``inst``, process ``pid``. A restarted instance may say
        READY before the app's news of its predecessor's death is read here (they come
        on different sockets): its predecessor is gone, with its calls, and the news
        will be ignored (it names the predecessor's pid)."""
        if inst in self.conn_of:
            old = self.pid_of.get(inst, b"?").decode(errors="replace")
            self._gone(inst, f"alto: stage instance {inst.decode()} (pid {old}) was replaced")
        self.conn_of[inst] = conn
        self.inst_of[conn] = inst
        self.pid_of[inst] = pid if pid.isdigit() else b""

    def _reconnected(self, inst: bytes, conn: bytes) -> None:
        """The instance's process speaks on a new connection: its calls go on."""
        old = self.conn_of.get(inst)
        if old is not None:
            self.inst_of.pop(old, None)
        self.conn_of[inst] = conn
        self.inst_of[conn] = inst

    # -- health ---------------------------------------------------------------------
    def _pulse(self, inst: bytes, payload: bytes) -> None:
        self.last_pulse[inst] = time.monotonic()
        try:
            report = json.loads(payload)
            verdict, why = report["verdict"], report["why"]
            if verdict not in ("", "stuck", "recycle") or not isinstance(why, str):
                raise ValueError(verdict)
        except (ValueError, TypeError, KeyError):
            return self.drop("a pulse that is no health report")
        self.health[inst] = {
            k: v
            for k in HEALTH_FIGURES
            if isinstance(v := report.get(k), (int, float))
            and not isinstance(v, bool)
            and math.isfinite(v)
        }
        if verdict == "stuck":
            self._leave(inst, wire.CTL_REPLACE, why.encode())
        elif verdict == "recycle":
            self._leave(inst, wire.CTL_RECYCLE, why.encode())

    def _leave(self, inst: bytes, notice: bytes, why: bytes) -> None:
        """``inst`` gets no new calls; a stuck one is replaced now (its calls fail), one
        to recycle once its calls have finished."""
        if inst in self.leaving:
            return
        self.leaving[inst] = _Leaving(notice, why)
        route = self.stages[self.stage_of[inst]]
        if inst in route.live:
            route.live.remove(inst)
        self._tell_app(inst)

    def _tell_app(self, inst: bytes) -> None:
        """Send a leaving instance's notice to the app, once: when it is due (a recycle
        waits for the instance's calls to finish) and the app has spoken (until then,
        ``tick`` tries again). It names the process, so that news of a process that has
        already been replaced cannot stop its successor."""
        leaving = self.leaving.get(inst)
        if leaving is None or leaving.told or self.owner is None:
            return
        if leaving.notice == wire.CTL_RECYCLE and self.outstanding.get(inst):
            return
        env = wire.envelope(wire.CONTROL, self.pid_of.get(inst, b""), leaving.notice, inst)
        self.front.send_multipart([self.owner, env, leaving.why])
        leaving.told = True

    def tick(self, now: float) -> None:
        """Replace instances whose loop fell silent; fail tasks that waited too long
        for a stage with no live instance."""
        for inst, last in list(self.last_pulse.items()):
            limit = self.stages[self.stage_of[inst]].stuck_after
            if limit and now - last > limit and inst not in self.leaving:
                why = f"its event loop did not answer for {now - last:.1f} s"
                self._leave(inst, wire.CTL_REPLACE, why.encode())
        for inst in list(self.leaving):
            self._tell_app(inst)
        for name, route in self.stages.items():
            limit = route.unavailable_after
            if route.waiting and not route.live and now - route.waiting[0][0] > limit:
                why = (
                    f"alto: no instance of stage {name.decode()!r} was available for "
                    f"{limit:g} s ({route.last_reason})"
                )
                self._fail_waiting(route, why, arrived_before=now - limit)

    def _fail_waiting(
        self, route: StageRoute, reason: str, arrived_before: float = math.inf
    ) -> None:
        """Fail the stage's waiting tasks (those that arrived before ``arrived_before``)
        with ``LOST``; their waiting feeds go with them."""
        while route.waiting and route.waiting[0][0] < arrived_before:
            _, frames = route.waiting.popleft()
            kind, call_id = frames[1].split(wire.SEP, 2)[:2]
            if kind != wire.FEED:
                self.front.send_multipart(
                    [frames[0], wire.envelope(wire.LOST, call_id), reason.encode()]
                )

    def _instance_up(self, inst: bytes) -> None:
        name = self.stage_of[inst]
        route = self.stages[name]
        route.failed.pop(inst, None)
        self.leaving.pop(inst, None)
        self.last_pulse[inst] = time.monotonic()
        if inst not in route.live:
            route.live.append(inst)
            route.live.sort()
        while route.waiting and route.live:
            _, frames = route.waiting.popleft()
            kind, call_id = frames[1].split(wire.SEP, 2)[:2]
            if kind == wire.FEED:
                held_by = self.inflight.get((frames[0], call_id))
                if held_by is not None:
                    self.back.send_multipart([self.conn_of[held_by], *frames], copy=False)
                continue
            self._dispatch(name, route, frames)

    def _instance_failed(self, inst: bytes, reason: str) -> None:
        name = self.stage_of.get(inst)
        if name is None:
            return
        route = self.stages[name]
        # the instance's own reason (why its code did not load) beats the
        # supervisor's later "exited with code 3"
        route.failed.setdefault(inst, reason)
        self._gone(inst, reason)
        if not route.live and len(route.failed) == len(route.instances):
            self._fail_waiting(route, reason)  # nobody will ever run these

    def _gone(self, inst: bytes, reason: str) -> None:
        """``inst`` is no longer live: its connection is forgotten, and each call it
        held fails, saying which node it was running."""
        name = self.stage_of[inst]
        route = self.stages[name]
        if inst in route.live:
            route.live.remove(inst)
        conn = self.conn_of.pop(inst, None)
        if conn is not None:
            self.inst_of.pop(conn, None)
        self.last_pulse.pop(inst, None)
        self.health.pop(inst, None)
        self.leaving.pop(inst, None)
        self.pid_of.pop(inst, None)  # news of this process is no longer news
        route.last_reason = reason
        lost = f"{reason} while running node {name.decode()!r}".encode()
        calls = self.by_instance.pop(inst, {})
        for client, call_id in calls:
            self.inflight.pop((client, call_id), None)
            self.front.send_multipart([client, wire.envelope(wire.LOST, call_id), lost])
        self.outstanding.pop(inst, None)
        for client, call_id in calls if self.tees else ():
            self._end_tees(client, call_id)

    # -- control (from the app that owns this deployment) ---------------------------
    def _control(self, client: bytes, call_id: bytes, cmd: bytes, arg: bytes, detail: Any) -> None:
        if cmd == wire.CTL_WAIT_READY:
            self.ready_waiters.append((client, call_id))
        elif (
            cmd in (wire.CTL_DEAD, wire.CTL_FAILED)
            and call_id
            and self.pid_of.get(arg) not in (None, b"", call_id)
        ):
            pass  # news of a predecessor of the instance now connected (``_connected``)
        elif cmd == wire.CTL_DEAD:
            if arg in self.stage_of:
                self._gone(arg, bytes(detail).decode(errors="replace"))
        elif cmd == wire.CTL_FAILED:
            self._instance_failed(arg, bytes(detail).decode(errors="replace"))
        elif cmd == wire.CTL_RESTARTED:
            name = self.stage_of.get(arg)
            if name is not None:
                self.stages[name].failed.pop(arg, None)
        elif cmd == wire.CTL_STATS:
            live = {i for st in self.stages.values() for i in st.live}
            stats = {
                "forwarded": self.forwarded,
                "outstanding": {k.decode(): v for k, v in self.outstanding.items() if k in live},
                "live": {
                    k.decode(): [i.decode() for i in st.live] for k, st in self.stages.items()
                },
                "pid": os.getpid(),
                "policies": {k.decode(): type(st.policy).__name__ for k, st in self.stages.items()},
                "dropped": dict(self.dropped),
                # chunks sent straight to the folds that consume them, and streams
                # being sent so
                "teed": self.teed,
                "tees": len(self.tees),
                "refused": self.gate.refused if self.gate is not None else 0,
                # each live instance's pid and last health report (calls run, threads
                # busy and abandoned, resident memory, messages it dropped)
                "instances": {
                    i.decode(): {
                        **self.health.get(i, {}),
                        "pid": int(self.pid_of.get(i) or 0),
                        "outstanding": self.outstanding.get(i, 0),
                    }
                    for i in sorted(live)
                },
            }
            self.front.send_multipart(
                [client, wire.envelope(wire.READY, call_id), repr(stats).encode()]
            )
        else:
            self.drop("an unknown control command", f" {cmd[:16]!r}")

    def answer_ready_waiters(self) -> None:
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
            self.front.send_multipart([client, wire.envelope(reply, call_id), detail])
        self.ready_waiters.clear()


def _tasks_in(waiting: collections.deque[tuple[float, list[Any]]]) -> int:
    """The tasks among a stage's waiting messages (the others are their feeds)."""
    return sum(frames[1][:1] == wire.TASK for _, frames in waiting)


def serve(
    front_address: str,
    back_address: str,
    stages: Sequence[tuple[str, Sequence[bytes], Any, dict[str, Any]]],
    credentials: security.RouterCredentials,
) -> None:
    """Run a router until the process is killed (its owner's lifeline ends it)."""
    routes = {
        name.encode(): StageRoute(tuple(instances), policy, **limits)
        for name, instances, policy, limits in stages
    }
    ctx = zmq.Context()
    gate = security.Gatekeeper(ctx, credentials)
    front = ctx.socket(zmq.ROUTER)
    back = ctx.socket(zmq.ROUTER)
    router = Router(routes, front, back, gate)
    for sock, domain in ((front, security.FRONT), (back, security.BACK)):
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        credentials.serve(sock, domain)
    front.bind(front_address)
    back.bind(back_address)
    poller = zmq.Poller()
    poller.register(gate.sock, zmq.POLLIN)
    poller.register(front, zmq.POLLIN)
    poller.register(back, zmq.POLLIN)
    next_tick = time.monotonic() + TICK
    while True:
        events = dict(poller.poll(TICK * 1000))
        if gate.sock in events:
            gate.answer()
        # the app's news of an instance's death is read before its successor's READY
        if front in events:
            _drain(front, router, router.from_client)
        if back in events:
            _drain(back, router, router.from_instance)
        router.answer_ready_waiters()
        now = time.monotonic()
        if now >= next_tick:
            router.tick(now)
            next_tick = now + TICK


def _drain(sock: Any, router: Router, handle: Any) -> None:
    """Handle what ``sock`` has queued (up to a batch: the other socket gets its turn).
    Addresses and envelopes are read as bytes; payloads pass through as frames; the
    sender is the peer its connection proved to be (each frame carries it)."""
    for _ in range(512):
        try:
            frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return
        try:
            handle([*(f.bytes for f in frames[:-1]), frames[-1]], frames[-1])
        except Exception as exc:  # a bug here must not end the deployment
            router.drop("handling it raised an exception", f": {type(exc).__name__}: {exc}")
