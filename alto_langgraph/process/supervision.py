"""Supervision: what a deployment does when one of its processes exits.

The fork server reports every exit of a process it started (on its reader thread).
An instance that dies is restarted, and the router fails the calls it held with
``StageInstanceLost``; one that keeps dying (``MAX_RESTARTS`` in ``RESTART_WINDOW``)
is marked failed, so its stage's calls fail instead of waiting, and is tried again
once the window has passed. An instance whose code did not load is not restarted: it
would fail the same way. A router that dies takes the deployment with it: every call
in flight fails, and the next run starts a new deployment.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol

from . import wire
from .rpc import RpcClient
from .worker import EXIT_LOAD_FAILED

#: how often one instance may die and be restarted within ``RESTART_WINDOW`` seconds
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0


def exit_text(code: int | None) -> str:
    if code is None:
        return "is no longer supervised (the fork server exited)"
    if code < 0:
        return f"was killed by signal {-code}"
    return f"died with exit code {code}"


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


class Supervisor:
    """The restart history of one deployment's instances, and what to do on an exit.

    Runs on the fork server's reader thread; spawning waits for that thread, so
    restarts happen on threads of their own."""

    def __init__(self) -> None:
        self._restarts: dict[tuple[str, int], list[float]] = {}

    def router_exited(self, deployment: Deployment, generation: int, code: int | None) -> None:
        if not deployment.is_current(generation):
            return
        # everything in flight is lost (start() may be waiting for a reply, holding
        # the lock); the processes go, and the next run starts a new deployment
        reason = f"alto: the router (pid {deployment.pids.get('router')}) {exit_text(code)}"
        deployment.fail_calls(reason)
        threading.Thread(target=deployment.teardown, args=(reason, generation), daemon=True).start()

    def instance_exited(
        self, deployment: Deployment, generation: int, name: str, index: int, code: int | None
    ) -> None:
        rpc = deployment.rpc
        if not deployment.is_current(generation) or rpc is None:
            return  # an instance of an earlier deployment: its router is gone too
        inst = wire.instance_id(name, index)
        when = "while running node" if deployment.started else "before it was ready, for node"
        reason = (
            f"alto: stage instance {inst.decode()} (pid {deployment.pids.get((name, index))}) "
            f"{exit_text(code)} {when} {name!r}"
        )
        rpc.tell(wire.CTL_DEAD, inst, reason)
        if code == EXIT_LOAD_FAILED:  # it said why (FAILED), and would fail again
            rpc.tell(wire.CTL_FAILED, inst, reason)
            return
        now = time.monotonic()
        recent = [t for t in self._restarts.get((name, index), []) if now - t < RESTART_WINDOW]
        if code is None or len(recent) >= MAX_RESTARTS:
            # keeps dying (or nothing can restart it): fail its stage's waiting calls
            why = f"{reason}; not restarted ({len(recent)} restarts in {RESTART_WINDOW:.0f} s)"
            rpc.tell(wire.CTL_FAILED, inst, why)
            if code is not None:  # try again once the window has passed
                self._restarts[(name, index)] = []
                retry = threading.Timer(
                    RESTART_WINDOW, self.restart, args=(deployment, generation, name, index, reason)
                )
                retry.daemon = True
                retry.start()
            return
        self._restarts[(name, index)] = [*recent, now]
        threading.Thread(
            target=self.restart, args=(deployment, generation, name, index, reason), daemon=True
        ).start()

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
