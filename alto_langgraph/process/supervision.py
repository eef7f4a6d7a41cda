"""Supervision: what a deployment does when one of its processes exits, or is unwell.

The fork server reports every exit of a process it started (on its reader thread),
and Ray the end of an actor's lifeline call (``ray_actors.py``, on a thread of Ray's).
An instance that dies is restarted, and the router fails the calls it held with
``StageInstanceLost``. Restarts back off: the first is immediate, each further death
within ``RESTART_WINDOW`` doubles the wait, up to ``MAX_BACKOFF``, so a burst of
crashes never takes a stage offline for longer than that (its calls wait for the
restart in the router). Two cases are not restarted: an instance whose code did not
load (it would fail the same way), and one that keeps dying before the deployment
has ever been ready (``MAX_START_RESTARTS``): the start fails, saying why.

The router watches the instances' health (``router.py``) and sends notices: a stuck
instance is killed and restarted like a crashed one; one to recycle (its
``max_calls_per_instance`` or memory limit) is stopped once its calls have finished,
and restarted at once. A router that dies takes the deployment with it: every call
in flight fails, and the next run starts a new deployment.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol

from . import wire
from .rpc import RpcClient
from .worker import EXIT_LOAD_FAILED

#: the wait before the second restart within ``RESTART_WINDOW``; doubled for each next
RESTART_BACKOFF = 0.05
MAX_BACKOFF = 0.5
RESTART_WINDOW = 60.0
#: deaths of one instance before the deployment was first ready, before it gives up
MAX_START_RESTARTS = 3


def exit_text(code: int | None) -> str:
    if code is None:
        return "is no longer supervised (the fork server exited)"
    if code < 0:
        return f"was killed by signal {-code}"
    return f"died with exit code {code}"


def backoff(deaths: int) -> float:
    """The wait before restarting an instance that died ``deaths`` times lately."""
    return 0.0 if deaths <= 1 else min(MAX_BACKOFF, RESTART_BACKOFF * 2 ** (deaths - 2))


class Deployment(Protocol):
    """What supervision needs of a deployment (``deployment.py``)."""

    pids: dict[Any, int]
    rpc: RpcClient | None
    spawn_lock: threading.Lock
    started: bool

    def is_current(self, generation: int) -> bool: ...
    def fail_calls(self, reason: str) -> None: ...
    def teardown(self, reason: str, generation: int | None) -> None: ...
    def spawn_instance(self, name: str, index: int) -> None: ...
    def stop_instance(self, key: tuple[str, int], pid: int, *, now: bool) -> None: ...


class Supervisor:
    """The restart history of one deployment's instances, and what to do on an exit.

    Runs on the fork server's reader thread (exits) and the client's I/O thread
    (notices); spawning waits for the reader thread, so restarts happen on threads
    of their own."""

    def __init__(self) -> None:
        # one per deployment generation (``Deployment.start``): nothing here outlives it
        self._deaths: dict[tuple[str, int], list[float]] = {}
        #: instances the app stopped on the router's notice: (notice, why)
        self._stopped: dict[tuple[str, int], tuple[bytes, str]] = {}

    def router_exited(self, deployment: Deployment, generation: int, code: int | None) -> None:
        if not deployment.is_current(generation):
            return
        # everything in flight is lost (start() may be waiting for a reply, holding
        # the lock); the processes go, and the next run starts a new deployment
        reason = f"alto: the router (pid {deployment.pids.get('router')}) {exit_text(code)}"
        deployment.fail_calls(reason)
        threading.Thread(target=deployment.teardown, args=(reason, generation), daemon=True).start()

    def notice(
        self, deployment: Deployment, command: bytes, inst: bytes, pid: bytes, why: str
    ) -> None:
        """The router asks to replace (stuck) or stop (recycle) process ``pid`` of an
        instance (not a successor that has started since)."""
        name, _, index = inst.decode(errors="replace").rpartition("#")
        key = (name, int(index)) if index.isdigit() else None
        if not pid.isdigit() or deployment.pids.get(key) != int(pid) or key in self._stopped:
            return
        if command == wire.CTL_REPLACE:
            self._stopped[key] = (command, f"was stuck ({why}) and was replaced")
            deployment.stop_instance(key, int(pid), now=True)
        elif command == wire.CTL_RECYCLE:
            self._stopped[key] = (command, f"was recycled ({why})")
            deployment.stop_instance(key, int(pid), now=False)

    def instance_exited(
        self,
        deployment: Deployment,
        generation: int,
        name: str,
        index: int,
        code: int | None,
        why: str | None = None,
    ) -> None:
        """Instance ``(name, index)`` exited with ``code`` (None: no one supervises it
        any more); ``why``, if given, says how (a Ray actor's death)."""
        rpc = deployment.rpc
        if not deployment.is_current(generation) or rpc is None:
            return  # an instance of an earlier deployment: its router is gone too
        inst = wire.instance_id(name, index)
        pid = deployment.pids.pop((name, index), None)
        command, what = self._stopped.pop((name, index), (b"", why or exit_text(code)))
        reason = f"alto: stage instance {inst.decode()} (pid {pid}) {what}"
        if not deployment.started:
            reason += " before it was ready"
        rpc.tell(wire.CTL_DEAD, inst, reason, pid)
        if code == EXIT_LOAD_FAILED:  # it said why (FAILED), and would fail again
            rpc.tell(wire.CTL_FAILED, inst, reason, pid)
            return
        if code is None:
            rpc.tell(wire.CTL_FAILED, inst, f"{reason}; not restarted", pid)
            return
        # a recycle is no failure, but counts for the backoff: a limit the instance
        # passes as soon as it starts (max_memory_mb below its size) must not spin
        now = time.monotonic()
        deaths = [t for t in self._deaths.get((name, index), []) if now - t < RESTART_WINDOW]
        deaths.append(now)
        self._deaths[(name, index)] = deaths
        if not deployment.started and len(deaths) > MAX_START_RESTARTS:
            why = f"{reason}; not restarted (it died {len(deaths)} times while starting)"
            rpc.tell(wire.CTL_FAILED, inst, why, pid)
            return
        timer = threading.Timer(
            backoff(len(deaths)), self.restart, args=(deployment, generation, name, index, reason)
        )
        timer.daemon = True
        timer.start()

    @staticmethod
    def restart(
        deployment: Deployment, generation: int, name: str, index: int, reason: str
    ) -> None:
        inst = wire.instance_id(name, index)
        with deployment.spawn_lock:
            rpc = deployment.rpc
            if not deployment.is_current(generation) or rpc is None:
                return
            try:
                deployment.spawn_instance(name, index)
            except Exception as exc:
                rpc.tell(wire.CTL_FAILED, inst, f"{reason}; restarting it failed: {exc}")
                return
            rpc.tell(wire.CTL_RESTARTED, inst)
