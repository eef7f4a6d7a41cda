"""Stage instances as Ray actors: Ray places them, alto's router carries their calls.

Each instance of a stage on Ray is one actor, created with the stage's resources
(``num_cpus``, ``num_gpus``, custom ``resources``, a node or a placement group). Its
one long call, ``serve``, runs the same instance loop as a forked worker
(``worker.serve``) on the actor's main thread: it connects to the deployment's router
over tcp with CURVE, and from then on every node call, stream chunk and credit goes
through the router, as on the process executor. A Ray call per node call would cost
about 0.6 ms and 0.3 ms of CPU each, more than alto's whole node call
(``docs/research/ray.md``, ``comparisons/ray_stages.py``).

That long call is also the actor's lifeline: it ends when the instance exits (its
exit code), and fails when the actor or its node dies. Either way the deployment's
supervisor hears of it as of a forked worker's exit, tells the router (which fails
the instance's calls) and starts a new actor. Ray itself restarts nothing
(``max_restarts=0``), so that the router always hears of a death. Actors are not
detached: Ray ends them with the app, and ``close()`` kills them first.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

#: what a stage's ``ray`` table may set, and the type of each
ACTOR_OPTIONS: dict[str, tuple[type, ...]] = {
    "num_cpus": (int, float),
    "memory": (int, float),
    "resources": (dict,),
    "node_id": (str,),
    "placement_group": (str,),
    "bundle_index": (int,),
    "scheduling_strategy": (str,),
    "runtime_env": (dict,),
}
#: how long ``close`` waits for killed actors to be gone
CLOSE_TIMEOUT = 10.0
#: the exit code reported for an actor that Ray says died (with Ray's reason)
DIED = -1


class StageActor:
    """The actor class (made remote by ``RayActors``): one stage instance."""

    def where(self) -> tuple[int, str]:
        """This actor's pid and Ray node id."""
        import ray

        return os.getpid(), ray.get_runtime_context().get_node_id()

    def serve(self, kwargs: dict[str, Any]) -> int:
        """Run the instance until it exits; its exit code."""
        from . import worker

        try:
            worker.serve(**kwargs)
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # an exit of the instance, as a forked worker's would be
            traceback.print_exc()
            return 1
        return 0


def actor_options(ray: Any, options: Mapping[str, Any], gpus: int) -> dict[str, Any]:
    """Ray's ``.options(...)`` for an actor of a stage with ``options`` (its ``ray``
    table) and ``gpus`` per instance."""
    # num_cpus 0 unless set: an instance lives as long as the app, and Ray's default
    # (one CPU held while it lives) would let a cluster hold only as many stages as it
    # has cores, where forked instances reserve none
    out: dict[str, Any] = {
        "max_restarts": 0,
        "max_task_retries": 0,
        "num_gpus": gpus,
        "num_cpus": 0,
    }
    for key in ("num_cpus", "memory", "resources", "runtime_env"):
        if key in options:
            out[key] = options[key]
    if "node_id" in options:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        out["scheduling_strategy"] = NodeAffinitySchedulingStrategy(options["node_id"], soft=False)
    elif "placement_group" in options:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        group = ray.util.get_placement_group(options["placement_group"])
        out["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
            group, placement_group_bundle_index=options.get("bundle_index", -1)
        )
    elif "scheduling_strategy" in options:
        out["scheduling_strategy"] = options["scheduling_strategy"]
    return out


def _run_events(events: queue.SimpleQueue[Any]) -> None:
    while (event := events.get()) is not None:
        func, args = event
        try:
            func(*args)
        except Exception:
            traceback.print_exc()


def death_reason(exc: BaseException) -> str:
    """Ray's multi-line account of an actor's death, in one line."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.startswith("\t")]
    text = " ".join(lines) or type(exc).__name__
    return text if len(text) <= 400 else text[:397] + "..."


class RayActors:
    """The actors of one deployment's stages on Ray, by instance key."""

    def __init__(self, ray: Any) -> None:
        self.ray = ray
        self._cls = ray.remote(StageActor)
        self._lock = threading.Lock()
        #: each key's current actor
        self.actors: dict[Any, Any] = {}
        #: every actor not yet known to be gone -> its lifeline's future
        self._live: dict[Any, Any] = {}
        self._closing = False
        # Ray runs future callbacks on a thread of its own, where Ray's API must not be
        # called and which must not wait for Ray: what they report is handled on this
        # thread, in order (a deployment dropped meanwhile may be finalized there)
        self._events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        threading.Thread(
            target=_run_events, args=(self._events,), name="alto-ray-events", daemon=True
        ).start()

    def spawn(
        self,
        key: Any,
        options: dict[str, Any],
        kwargs: dict[str, Any],
        on_started: Callable[[int, str], None],
        on_exit: Callable[[int | None, str | None], None],
    ) -> None:
        """Create ``key``'s actor, running an instance; returns at once (Ray places it
        when it can). ``on_started(pid, node_id)`` once it runs, if it is still
        ``key``'s; ``on_exit(code, why)`` when it ends: its exit code (and None), or
        ``DIED`` and Ray's reason."""
        actor = self._cls.options(**options).remote()
        where = actor.where.remote().future()
        life = actor.serve.remote(kwargs).future()
        with self._lock:
            self.actors[key] = actor
            self._live[actor] = life

        def started(fut: Any) -> None:
            if fut.exception() is None and self.actors.get(key) is actor:
                self._events.put((on_started, fut.result()))

        def ended(fut: Any) -> None:
            exc = fut.exception()
            with self._lock:
                closing = self._closing
                self._live.pop(actor, None)
                if self.actors.get(key) is actor:
                    del self.actors[key]
            if exc is None:
                self._events.put((on_exit, (fut.result(), None)))
                return
            if not closing:
                # the actor or its node died; one "unavailable" may yet come back:
                # make sure it does not, so the instance is replaced exactly once
                self._events.put((self._kill, (actor,)))
            self._events.put((on_exit, (DIED, f"its Ray actor died ({death_reason(exc)})")))

        where.add_done_callback(started)
        life.add_done_callback(ended)

    def kill(self, key: Any) -> None:
        """Kill ``key``'s actor (its exit is reported as any other)."""
        actor = self.actors.get(key)
        if actor is not None:
            self._kill(actor)

    def _kill(self, actor: Any) -> None:
        try:
            self.ray.kill(actor, no_restart=True)
        except Exception:  # already gone, or Ray is shutting down
            pass

    def close(self) -> None:
        """Kill every actor and wait until Ray reports each gone."""
        with self._lock:
            self._closing = True
            live = dict(self._live)
        if not self.ray.is_initialized():
            return  # Ray shut down first (its atexit hook): its actors went with it
        for actor in live:
            self._kill(actor)
        deadline = time.monotonic() + CLOSE_TIMEOUT
        for life in live.values():
            try:
                life.exception(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:
                pass
        self._events.put(None)  # what comes after is of no deployment's concern
