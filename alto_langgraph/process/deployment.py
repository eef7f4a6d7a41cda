"""``Deployment``: one app's router and stage instances, in worker processes.

A deployment runs what the plan places in worker processes (``compiler/``): one
router process and ``replicas`` instances of every process stage, all forked by this
process's fork server (``forkserver.py``), started on the first run (or at compile).
Tasks are still bookkept in the app process; a node of a process stage runs there as
a ``RemoteNode`` (``remote.py``) that calls an instance through the router over the
deployment's ``RpcClient``. Exits are handled by ``supervision.py``; GPUs are handed
out by ``gpus.py``.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from ..errors import DeploymentError, StageInstanceLost
from . import ray_cluster, security, shipping, wire
from .forkserver import STOP_SIGNAL, ForkServer, fork_server
from .gpus import assign_gpus, visible_gpus
from .routing import make_policy
from .rpc import Deliver, RpcClient
from .spec import StageSpec
from .supervision import Supervisor
from .transport import free_ports

#: how long ``start`` waits for every instance to be ready
START_TIMEOUT = 120.0


class Deployment:
    """One app's router and stage instances. Thread-safe; started once, on demand."""

    def __init__(
        self, *, transport: str = "ipc", host: str | None = None, ray_address: str | None = None
    ) -> None:
        #: every stage (``add_stage``), and the code its instances run
        self.specs: dict[str, StageSpec] = {}
        self._code: dict[str, Any] = {}
        self.transport = transport
        #: where the router listens on tcp (None: the loopback, or with stages on a Ray
        #: cluster, this node's address as Ray knows it)
        self.host = host
        #: the Ray cluster stages on Ray go to (None: the app's, or a local one)
        self.ray_address = ray_address
        self._lock = threading.Lock()  # start and close
        #: spawning against tearing down
        self.spawn_lock = threading.Lock()
        self._running = False  # the processes exist (from the router's start to teardown)
        #: counts deployments: exits and teardowns of an earlier one leave the next alone
        self._generation = 0
        self._started = False
        self._closed = False
        self._server: ForkServer | None = None
        #: the connection to this generation's router (None while none runs)
        self.rpc: RpcClient | None = None
        #: pid of the router and of every live instance (``(stage, index)``): an
        #: instance's entry goes when it exits, and its successor's comes when it starts
        #: (an instance on Ray: the pid of its actor, on its node)
        self.pids: dict[Any, int] = {}
        #: the Ray node id of every instance on Ray that has started
        self.ray_nodes: dict[tuple[str, int], str] = {}
        self._owned = _Owned(None, self.pids)
        self._supervisor = Supervisor()
        self._keyring: security.Keyring | None = None
        self._addresses: tuple[str, str] = ("", "")
        self._gpus: dict[tuple[str, int], str] = {}
        self._finalizer: weakref.finalize | None = None
        #: why the last deployment went down (the reason calls made meanwhile fail with)
        self._down_reason = "alto: the app was closed before this call was sent"
        #: model name -> the LM stage serving it (every instance is told, for its nodes)
        self.lm_routes: dict[str, str] = {}

    def add_stage(self, spec: StageSpec, node: Any, *, serves: str | None = None) -> None:
        """Register a stage (before the deployment starts): its spec and its node's code;
        an LM stage ``serves`` a model."""
        if self._started:
            raise RuntimeError("alto: stages are fixed once the deployment has started")
        self.specs[spec.name] = spec
        self._code[spec.name] = node
        if serves is not None:
            self.lm_routes[serves] = spec.name

    # -- lifecycle -------------------------------------------------------------------
    @property
    def started(self) -> bool:
        """Whether the deployment is up (every instance has been ready)."""
        return self._started

    def is_current(self, generation: int) -> bool:
        """Whether processes of ``generation`` are this deployment's running ones."""
        return self._running and generation == self._generation

    def start(self) -> None:
        """Start the router and every instance; returns once all are ready. Idempotent."""
        if self._started:
            return
        with self._lock:
            if self._started:
                return
            if self._closed:
                raise RuntimeError("alto: this app was closed; compile it again to run it")
            shipped = {name: shipping.ship_code(name, node) for name, node in self._code.items()}
            # Ray hands out the GPUs of stages on Ray itself
            gpus = assign_gpus(
                {n: s for n, s in self.specs.items() if s.ray is None}, visible_gpus()
            )
            instances = {
                name: [wire.instance_id(name, i) for i in range(s.replicas)]
                for name, s in self.specs.items()
            }
            table = _cloudpickled(
                [
                    (
                        name,
                        instances[name],
                        make_policy(s.policy, stateful=s.stateful),
                        s.router_limits(),
                    )
                    for name, s in self.specs.items()
                ]
            )
            self._shipped, self._gpus = shipped, gpus
            # fresh credentials per deployment: the app and every instance, no one else
            self._keyring = keyring = security.Keyring(self.transport)
            peers = [security.APP, *(i for ids in instances.values() for i in ids)]
            router_credentials = keyring.router(peers)
            self._server = server = fork_server()
            self.pids = {}  # this deployment's (an earlier one's finalizer holds its own)
            self.ray_nodes = {}
            self._supervisor = Supervisor()  # restart history starts afresh
            self._generation += 1
            gen = self._generation
            # what this deployment owns, for its finalizer (which must not hold self)
            self._owned = owned = _Owned(server, self.pids)
            try:
                with self.spawn_lock:
                    self._running = True
                    self._finalizer = weakref.finalize(self, _shutdown, owned)
                if any(s.ray is not None for s in self.specs.values()):
                    self._connect_ray(owned)
                front, back = self._addresses = self._make_addresses(owned)
                with self.spawn_lock:
                    self.pids["router"] = server.spawn(
                        "router",
                        {
                            "front_address": front,
                            "back_address": back,
                            "stages": table,
                            "credentials": router_credentials,
                        },
                        {},
                        _weakly(self._router_exited, gen),
                    )
                    self.rpc = RpcClient(
                        front,
                        keyring.peer(security.APP),
                        name="alto-client",
                        on_notice=_weakly(self._notice),
                    )
                    owned.clients.append(self.rpc)
                    for name, spec in self.specs.items():
                        for i in range(spec.replicas):
                            self.spawn_instance(name, i)
                kind, detail = self.rpc.control(wire.CTL_WAIT_READY).result(timeout=START_TIMEOUT)
            except concurrent.futures.TimeoutError:
                try:  # asked of Ray before teardown lets go of it
                    unplaced = self._unplaced()
                except Exception as exc:
                    unplaced = f"; (what Ray had not placed is unknown: {exc})"
                self.teardown()
                raise DeploymentError(
                    f"alto: the deployment did not become ready within {START_TIMEOUT:.0f} s"
                    + unplaced
                ) from None
            except BaseException:
                self.teardown()
                raise
            if kind != wire.READY:
                self.teardown()
                raise DeploymentError(f"alto: the deployment did not start: {detail.decode()}")
            self._started = True

    def _connect_ray(self, owned: _Owned) -> None:
        """Connect to the Ray cluster (starting a local one if need be), and check that
        every stage on Ray fits on some node of it."""
        from . import ray_actors  # only apps with stages on Ray import ray

        ray = ray_cluster.cluster.acquire(self.ray_address, owned.server)
        owned.ray = ray_actors.RayActors(ray)
        for name, spec in self.specs.items():
            if spec.ray is not None:
                owned.ray_stages.add(name)
                ray_cluster.check_placeable(ray, name, {**spec.ray, "num_gpus": spec.gpus})

    def _unplaced(self) -> str:
        """What a start that timed out says of the instances Ray had not placed."""
        waiting = [
            f"{wire.instance_id(name, i).decode()} ({dict(spec.ray) or 'defaults'})"
            for name, spec in self.specs.items()
            if spec.ray is not None
            for i in range(spec.replicas)
            if (name, i) not in self.pids
        ]
        if not waiting:
            return ""
        return (
            f"; Ray had not placed {', '.join(waiting)}: the cluster has no room for them "
            f"now (free: {self._owned.ray.ray.available_resources()})"
        )

    def _make_addresses(self, owned: _Owned) -> tuple[str, str]:
        if self.transport == "ipc":
            owned.socket_dir = tempfile.mkdtemp(prefix="alto-")  # mode 0700: this user only
            owned.server.remove_at_exit(owned.socket_dir)  # even if this app is SIGKILLed
            return f"ipc://{owned.socket_dir}/front", f"ipc://{owned.socket_dir}/back"
        host = self.host
        if host is not None and owned.ray is not None:
            ray_cluster.check_reachable(owned.ray.ray, host)
        if host is None:
            # stages on a Ray cluster reach the router at this node's address, as Ray
            # knows it; a local cluster (and no Ray) on the loopback
            host = "127.0.0.1"
            if owned.ray is not None and not ray_cluster.cluster.local:
                host = owned.ray.ray.util.get_node_ip_address()
        ports = free_ports(host, 2)
        return f"tcp://{host}:{ports[0]}", f"tcp://{host}:{ports[1]}"

    def spawn_instance(self, name: str, index: int) -> None:
        assert self._server is not None and self._keyring is not None
        gen = self._generation
        inst = wire.instance_id(name, index)
        spec = self.specs[name]
        kwargs = {
            "back_address": self._addresses[1],
            "identity": inst,
            "credentials": self._keyring.peer(inst),
            "stage": name,
            "code": self._shipped[name],
            "sys_path": list(sys.path),
            "front_address": self._addresses[0],
            "lm_routes": self.lm_routes,
            "threads": spec.threads,
            "max_calls": spec.max_calls_per_instance,
            "max_memory_mb": spec.max_memory_mb,
        }
        exited = _weakly(self._instance_exited, gen, name, index)
        if spec.ray is None:
            env = {"CUDA_VISIBLE_DEVICES": self._gpus.get((name, index), "")}
            self.pids[(name, index)] = self._server.spawn("worker", kwargs, env, exited)
            return
        from .ray_actors import actor_options

        actors = self._owned.ray
        assert actors is not None
        # the credentials travel in the actor call's arguments, inside the cluster
        actors.spawn(
            (name, index),
            actor_options(actors.ray, spec.ray, spec.gpus),
            kwargs,
            _weakly(self._actor_started, gen, name, index),
            exited,
        )

    def _actor_started(self, gen: int, name: str, index: int, pid: int, node: str) -> None:
        if self.is_current(gen):
            self.pids[(name, index)] = pid
            self.ray_nodes[(name, index)] = node

    def close(self) -> None:
        """Stop the router and every instance, and fail calls still in flight."""
        with self._lock:
            self._closed = True
            self.teardown()

    def teardown(
        self,
        reason: str = "alto: the app was closed while this call was running",
        generation: int | None = None,
    ) -> None:
        with self.spawn_lock:  # no restart can spawn into a deployment being torn down
            if not self._running or generation not in (None, self._generation):
                return
            self._running = False
            self._started = False
            self._down_reason = reason
            # this deployment's, taken now: a next one may start as soon as we unlock
            finalizer, self._finalizer = self._finalizer, None
            rpc, self.rpc = self.rpc, None
        if finalizer is not None:
            finalizer()  # kills the processes, waits for them, removes the socket dir
        if rpc is not None:
            rpc.fail_all(reason)

    def fail_calls(self, reason: str) -> None:
        if self.rpc is not None:
            self.rpc.fail_all(reason)

    # supervision, on the fork server's reader thread
    def _router_exited(self, generation: int, code: int | None) -> None:
        self._supervisor.router_exited(self, generation, code)

    def _instance_exited(
        self, generation: int, name: str, index: int, code: int | None, why: str | None = None
    ) -> None:
        if self.is_current(generation):
            self.ray_nodes.pop((name, index), None)
        self._supervisor.instance_exited(self, generation, name, index, code, why)

    def _notice(self, command: bytes, inst: bytes, pid: bytes, why: str) -> None:
        self._supervisor.notice(self, command, inst, pid, why)

    def stop_instance(self, key: tuple[str, int], pid: int, *, now: bool) -> None:
        """Stop instance ``key`` (process ``pid``): ``now`` (SIGKILL: it is stuck) or
        letting it flush its output first. An actor on Ray is killed either way."""
        if self.specs[key[0]].ray is not None:
            if self._owned.ray is not None:
                self._owned.ray.kill(key)
        elif self._server is not None:
            self._server.kill(pid, signal.SIGKILL if now else STOP_SIGNAL)

    # -- calls -----------------------------------------------------------------------
    def call(self, stage: str, payload: bytes, key: bytes, deliver: Deliver) -> bytes:
        """Send one task to an instance of ``stage`` (starting the deployment first if
        need be); ``deliver(kind, env, payload)`` gets each message of the call (on the
        I/O thread), a terminal one last. Returns the call id."""
        if not self._started:
            self.start()
        rpc = self.rpc
        if rpc is None or not self._running:  # torn down meanwhile
            raise StageInstanceLost(self._down_reason)
        call_id = rpc.call(stage, payload, key, deliver)
        if self.rpc is not rpc:  # torn down meanwhile, maybe before the call was registered
            rpc.fail_all(self._down_reason)
        return call_id

    def cancel(self, call_id: bytes) -> None:
        """The caller gave up on a call: stop it on its instance (its reply is dropped)."""
        if self.rpc is not None:
            self.rpc.cancel(call_id)

    def feed(self, call_id: bytes, stage: str, payload: bytes, key: bytes = b"") -> None:
        """An event of a stream in a call's input, for the instance that has the call."""
        if self.rpc is not None:
            self.rpc.feed(call_id, stage, payload, key)

    def subscribe(self, fold: bytes, producer: bytes, sid: str) -> None:
        """The rest of a stream goes from its producer's call to the fold's directly."""
        if self.rpc is not None:
            self.rpc.subscribe(fold, producer, sid)

    def credit(self, producer: bytes, sid: str, count: int) -> None:
        """The first ``count`` chunks of a stream the producer's call makes arrived."""
        if self.rpc is not None:
            self.rpc.credit(producer, sid, count)

    def reply_call(self, instance: bytes, call_id: bytes, sub: bytes, ok: bool, value: Any) -> None:
        """The outcome of a @task call made by a node on ``instance`` (``relay.py``)."""
        if self.rpc is not None:
            self.rpc.reply_call(instance, call_id, sub, ok, value)

    def stats(self) -> dict[str, Any]:
        """The router's counters: messages forwarded, calls in flight per instance, live
        instances per stage."""
        import ast

        self.start()
        assert self.rpc is not None
        kind, payload = self.rpc.control(wire.CTL_STATS).result(timeout=10)
        return ast.literal_eval(payload.decode())


def _weakly(method: Any, *args: Any) -> Callable[..., None]:
    """``method`` (bound, with ``args`` first) called through a weak reference: the fork
    server must not keep a deployment alive, or one its app dropped without
    ``close()`` would never be finalized (and its processes would run until the
    interpreter exits)."""
    ref = weakref.WeakMethod(method)

    def call(*more: Any) -> None:
        bound = ref()
        if bound is not None:
            bound(*args, *more)

    return call


def _cloudpickled(value: Any) -> Any:
    """The router's table: routing policies may be user classes (cloudpickle ships them)."""
    import cloudpickle

    return _Unpickle(cloudpickle.dumps(value))


class _Unpickle:
    """Carried through the fork server's plain pickle, opened by cloudpickle on arrival."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce__(self) -> Any:
        import cloudpickle

        return (cloudpickle.loads, (self.data,))


class _Owned:
    """What one deployment started, for its finalizer (which must not hold the
    deployment): its processes, its clients, its socket directory, its Ray actors."""

    def __init__(self, server: ForkServer | None, pids: dict[Any, int]) -> None:
        self.server = server
        self.pids = pids
        self.clients: list[RpcClient] = []
        self.socket_dir: str | None = None
        self.ray: Any = None  # ``ray_actors.RayActors``, with the cluster acquired
        #: the stages whose instances are Ray actors (not the fork server's children)
        self.ray_stages: set[str] = set()


def _shutdown(owned: _Owned) -> None:
    """Stop a deployment's processes: ``STOP_SIGNAL`` (they flush their output), SIGKILL
    after a grace period; wait until they are gone, remove the socket directory. Kill
    its Ray actors, and let go of the cluster."""
    server = owned.server
    assert server is not None
    if server.pid != os.getpid():
        return  # a forked child of the app, exiting: the deployment is the parent's
    try:
        for client in owned.clients:
            client.close()
        if owned.ray is not None:
            try:
                owned.ray.close()
            finally:
                ray_cluster.cluster.release()
    finally:
        _stop_processes(server, owned)


def _stop_processes(server: ForkServer, owned: _Owned) -> None:
    remaining = {
        pid
        for key, pid in owned.pids.items()
        if not (isinstance(key, tuple) and key[0] in owned.ray_stages)
    }
    for sig, grace in ((STOP_SIGNAL, 1.0), (signal.SIGKILL, 5.0)):
        for pid in remaining:
            server.kill(pid, sig)
        deadline = time.monotonic() + grace
        while remaining and time.monotonic() < deadline:
            remaining = {p for p in remaining if _pid_alive(p)}
            if remaining:
                time.sleep(0.005)
        if not remaining:
            break
    if owned.socket_dir is not None:
        shutil.rmtree(owned.socket_dir, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie not yet reaped by the fork server counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
