"""The ``process`` executor: a router and stage instances in worker processes.

A ``Cluster`` is one app's deployment: one router process and ``replicas`` instances
of every stage (a node whose code runs in workers), all forked by this process's
fork server (``forkserver.py``). The coordinator (LangGraph's loop and alto's
run-ahead scheduling) stays in the app process; a node's task there runs a
``RemoteNode`` in place of the node's own runnable, which ships the input to an
instance through the router and waits for the output:

    task (app) --TASK--> router --> instance k of the stage --RESULT--> router --> task

so the node's writers, conditional edges, retries and timeouts stay LangGraph's own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import itertools
import os
import queue
import shutil
import signal
import sys
import tempfile
import threading
import time
import warnings
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import zmq
from langchain_core.runnables import Runnable, RunnableConfig

from .. import streams
from ..streams import CONFIG_KEY_YIELD, StreamChannel
from . import relay, shipping, wire
from ._pregel import CONF, CONFIG_KEY_CALL, CONFIG_KEY_RUNTIME, CONFIG_KEY_SEND, DEFAULT_RUNTIME
from .forkserver import STOP_SIGNAL, ForkServer, fork_server
from .messages import CONFIG_KEY_ANCESTRY
from .routing import make_policy
from .transport import Endpoint
from .worker import EXIT_LOAD_FAILED

# Config keys alto sets on runs. "__pregel_" keys are internal to LangGraph, which
# strips them from every config it hands out (checkpoint configs in debug streams).
#: the request id every task of a request carries in its config (set by the graph)
CONFIG_KEY_REQUEST = "__pregel_alto_request"
#: set on runs that fall back to stock LangGraph: node code runs in the app process
CONFIG_KEY_IN_PROCESS = "__pregel_alto_in_process"

#: how often one instance may die and be restarted within ``RESTART_WINDOW`` seconds
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
#: how long ``start`` waits for every instance to be ready
START_TIMEOUT = 120.0


class StageInstanceLost(ConnectionError):
    """The stage instance running a call died (or could not start). A ``ConnectionError``,
    so LangGraph's default ``RetryPolicy`` retries the node on another attempt."""


class DeploymentError(RuntimeError):
    """The deployment could not start: a stage's code did not load in its worker."""


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


def routing_key(spec: StageSpec, request_id: str, ancestry: tuple[Any, ...]) -> bytes:
    """The aggregation group of an item bound for ``spec``: its request and the ancestry
    prefix it shares with the other members (b"" for a stateless stage)."""
    if not spec.stateful:
        return b""
    prefix = ancestry[: max(0, len(ancestry) - spec.group_depth)]
    return repr((request_id, prefix)).encode()


def visible_gpus() -> list[str]:
    """The GPUs this process may hand out: ``CUDA_VISIBLE_DEVICES`` if set, else what
    ``nvidia-smi`` lists (none on a machine without NVIDIA GPUs)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d for d in env.split(",") if d.strip() and d.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    import subprocess

    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def assign_gpus(specs: Mapping[str, StageSpec], gpus: list[str]) -> dict[tuple[str, int], str]:
    """``CUDA_VISIBLE_DEVICES`` for every instance: distinct GPUs for GPU stages, none
    for the others (so CPU stages never grab a GPU)."""
    need = sum(s.gpus * s.replicas for s in specs.values())
    if need and not gpus:
        warnings.warn(
            "alto: stages ask for GPUs but none are visible; they run on the CPU",
            RuntimeWarning,
            stacklevel=4,
        )
    elif need > len(gpus):
        raise ValueError(
            f"alto: the stages ask for {need} GPUs in all, but only {len(gpus)} are visible "
            f"({','.join(gpus)}); lower replicas or gpus per stage"
        )
    free = iter(gpus)
    out = {}
    for spec in specs.values():
        for i in range(spec.replicas):
            out[(spec.name, i)] = (
                ",".join(next(free) for _ in range(spec.gpus)) if gpus and spec.gpus else ""
            )
    return out


#: receives every message of one call: (kind, envelope, payload)
Deliver = Callable[[bytes, bytes, Any], None]

#: the messages that end a call
TERMINAL = frozenset((wire.RESULT, wire.ERROR, wire.LOST))


class Cluster:
    """One app's router and stage instances. Thread-safe; started once, on demand."""

    def __init__(
        self,
        specs: Mapping[str, StageSpec],
        code: Mapping[str, Any],
        *,
        transport: str = "ipc",
        host: str = "127.0.0.1",
    ) -> None:
        self.specs = dict(specs)
        self._code = dict(code)
        self.transport = transport
        self.host = host
        self._lock = threading.Lock()  # start and close
        self._spawn_lock = threading.Lock()  # spawning against tearing down
        self._running = False  # the processes exist (from the router's start to teardown)
        #: counts deployments: exits and teardowns of an earlier one leave the next alone
        self._generation = 0
        self._started = False
        self._closed = False
        self._server: ForkServer | None = None
        self._client: Endpoint | None = None
        self._dir: str | None = None
        #: call id -> deliver(kind, envelope, payload), for every message of the call
        self._calls: dict[bytes, Deliver] = {}
        self._ids = itertools.count()
        self._client_id = os.urandom(6).hex().encode()
        #: pid of the router and of every instance (``(stage, index)``), for tests and stats
        self.pids: dict[Any, int] = {}
        self._restarts: dict[tuple[str, int], list[float]] = {}
        self._addresses: tuple[str, str] = ("", "")
        self._gpus: dict[tuple[str, int], str] = {}
        self._finalizer: weakref.finalize | None = None
        #: model name -> the LM stage serving it (every instance is told, for its nodes)
        self.lm_routes: dict[str, str] = {}

    def add_stage(self, spec: StageSpec, node: Any, *, serves: str | None = None) -> None:
        """Register a stage (before the cluster starts): its spec and its node's code;
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
            gpus = assign_gpus(self.specs, visible_gpus())
            table = _cloudpickled(
                [
                    (
                        name,
                        [wire.instance_id(name, i) for i in range(s.replicas)],
                        make_policy(s.policy, stateful=s.stateful),
                    )
                    for name, s in self.specs.items()
                ]
            )
            self._shipped, self._gpus = shipped, gpus
            self._server = server = fork_server()
            self.pids = {}  # this deployment's (an earlier one's finalizer holds its own)
            self._generation += 1
            gen = self._generation
            try:
                front, back = self._addresses = self._make_addresses()
                with self._spawn_lock:
                    self._running = True
                    self._finalizer = weakref.finalize(
                        self, _shutdown, server, self.pids, [], self._dir
                    )
                    self.pids["router"] = server.spawn(
                        "router",
                        {"front_address": front, "back_address": back, "stages": table},
                        {},
                        _weakly(self._router_exited, gen),
                    )
                    self._client = Endpoint(
                        zmq.DEALER,
                        front,
                        _weakly(self._on_message),
                        identity=self._client_id,
                        name="alto-client",
                    )
                    self._finalizer.detach()
                    self._finalizer = weakref.finalize(
                        self, _shutdown, server, self.pids, [self._client], self._dir
                    )
                    for name, spec in self.specs.items():
                        for i in range(spec.replicas):
                            self._spawn_instance(name, i)
                kind, detail = self._control(wire.CTL_WAIT_READY).result(timeout=START_TIMEOUT)
            except concurrent.futures.TimeoutError:
                self._teardown()
                raise DeploymentError(
                    f"alto: the deployment did not become ready within {START_TIMEOUT:.0f} s"
                ) from None
            except BaseException:
                self._teardown()
                raise
            if kind != wire.READY:
                self._teardown()
                raise DeploymentError(f"alto: the deployment did not start: {detail.decode()}")
            self._started = True

    def _make_addresses(self) -> tuple[str, str]:
        if self.transport == "ipc":
            self._dir = tempfile.mkdtemp(prefix="alto-")  # mode 0700: this user only
            assert self._server is not None
            self._server.remove_at_exit(self._dir)  # even if this app is SIGKILLed
            return f"ipc://{self._dir}/front", f"ipc://{self._dir}/back"
        ports = _free_ports(self.host, 2)
        return f"tcp://{self.host}:{ports[0]}", f"tcp://{self.host}:{ports[1]}"

    def _spawn_instance(self, name: str, index: int) -> None:
        assert self._server is not None
        gen = self._generation
        env = {"CUDA_VISIBLE_DEVICES": self._gpus.get((name, index), "")}
        self.pids[(name, index)] = self._server.spawn(
            "worker",
            {
                "back_address": self._addresses[1],
                "identity": wire.instance_id(name, index),
                "stage": name,
                "code": self._shipped[name],
                "sys_path": list(sys.path),
                "front_address": self._addresses[0],
                "lm_routes": self.lm_routes,
            },
            env,
            _weakly(self._instance_exited, gen, name, index),
        )

    def close(self) -> None:
        """Stop the router and every instance, and fail calls still in flight."""
        with self._lock:
            self._closed = True
            self._teardown()

    def _teardown(
        self,
        reason: str = "alto: the app was closed while this call was running",
        generation: int | None = None,
    ) -> None:
        with self._spawn_lock:  # no restart can spawn into a deployment being torn down
            if not self._running or generation not in (None, self._generation):
                return
            self._running = False
            self._started = False
            # this deployment's, taken now: a next one may start as soon as we unlock
            finalizer, self._finalizer = self._finalizer, None
            calls, self._calls = self._calls, {}
        if finalizer is not None:
            finalizer()  # kills the processes, waits for them, removes the socket dir
        _fail(calls, reason)

    def _fail_calls(self, reason: str) -> None:
        calls, self._calls = self._calls, {}
        _fail(calls, reason)

    # -- supervision (on the fork server's reader thread) ----------------------------
    def _router_exited(self, generation: int, code: int | None) -> None:
        if not self._running or generation != self._generation:
            return
        # everything in flight is lost (start() may be waiting for a reply, holding
        # the lock); the processes go, and the next run starts a new deployment
        reason = f"alto: the router (pid {self.pids.get('router')}) {_exit_text(code)}"
        self._fail_calls(reason)
        threading.Thread(target=self._teardown, args=(reason, generation), daemon=True).start()

    def _instance_exited(self, generation: int, name: str, index: int, code: int | None) -> None:
        client = self._client
        if not self._running or client is None or generation != self._generation:
            return  # an instance of an earlier deployment: its router is gone too
        inst = wire.instance_id(name, index)
        when = "while running node" if self._started else "before it was ready, for node"
        reason = (
            f"alto: stage instance {inst.decode()} (pid {self.pids.get((name, index))}) "
            f"{_exit_text(code)} {when} {name!r}"
        )
        client.send([wire.envelope(wire.CONTROL, b"", wire.CTL_DEAD, inst), b"", reason.encode()])
        if code == EXIT_LOAD_FAILED:  # it said why (FAILED), and would fail again
            failed = [wire.envelope(wire.CONTROL, b"", wire.CTL_FAILED, inst), b"", reason.encode()]
            client.send(failed)
            return
        now = _monotonic()
        recent = [t for t in self._restarts.get((name, index), []) if now - t < RESTART_WINDOW]
        if code is None or len(recent) >= MAX_RESTARTS:
            # keeps dying (or nothing can restart it): fail its stage's waiting calls
            why = f"{reason}; not restarted ({len(recent)} restarts in {RESTART_WINDOW:.0f} s)"
            client.send(
                [wire.envelope(wire.CONTROL, b"", wire.CTL_FAILED, inst), b"", why.encode()]
            )
            if code is not None:  # try again once the window has passed
                self._restarts[(name, index)] = []
                retry = threading.Timer(
                    RESTART_WINDOW, self._restart, args=(generation, name, index, reason)
                )
                retry.daemon = True
                retry.start()
            return
        self._restarts[(name, index)] = [*recent, now]
        # not on this thread: spawning waits for this thread to read the reply
        threading.Thread(
            target=self._restart, args=(generation, name, index, reason), daemon=True
        ).start()

    def _restart(self, generation: int, name: str, index: int, reason: str) -> None:
        inst = wire.instance_id(name, index)
        with self._spawn_lock:
            client = self._client
            if not self._running or client is None or generation != self._generation:
                return
            try:
                self._spawn_instance(name, index)
            except Exception as exc:
                why = f"{reason}; restarting it failed: {exc}"
                client.send(
                    [wire.envelope(wire.CONTROL, b"", wire.CTL_FAILED, inst), b"", why.encode()]
                )
                return
            client.send([wire.envelope(wire.CONTROL, b"", wire.CTL_RESTARTED, inst), b"", b""])

    # -- calls -----------------------------------------------------------------------
    def call(
        self,
        stage: str,
        header: bytes,
        payload: bytes,
        key: bytes,
        deliver: Deliver,
    ) -> bytes:
        """Send one task to an instance of ``stage``; ``deliver(kind, env, payload)`` gets each
        message of the call (on the I/O thread), a ``TERMINAL`` one last. Returns the
        call id."""
        if not self._started:
            self.start()
        client = self._client
        assert client is not None
        call_id = str(next(self._ids)).encode()
        self._calls[call_id] = deliver
        if not self._running or self._client is not client:  # closed meanwhile
            self._calls.pop(call_id, None)
            raise StageInstanceLost("alto: the app was closed before this call was sent")
        client.send([wire.envelope(wire.TASK, call_id, stage.encode(), key), header, payload])
        return call_id

    def cancel(self, call_id: bytes) -> None:
        """The caller gave up on a call: stop it on its instance (its reply is dropped)."""
        if self._calls.pop(call_id, None) is not None and self._client is not None:
            self._client.send([wire.envelope(wire.CANCEL, call_id), b"", b""])

    def feed(self, call_id: bytes, stage: str, payload: bytes) -> None:
        """An event of a stream in a call's input, for the instance that has the call."""
        client = self._client
        if call_id in self._calls and client is not None:
            client.send([wire.envelope(wire.FEED, call_id, stage.encode()), b"", payload])

    def stats(self) -> dict[str, Any]:
        """The router's counters: messages forwarded, calls in flight per instance, live
        instances per stage."""
        import ast

        self.start()
        kind, payload = self._control(wire.CTL_STATS).result(timeout=10)
        return ast.literal_eval(payload.decode())

    def _control(self, command: bytes) -> concurrent.futures.Future[tuple[bytes, bytes]]:
        fut: concurrent.futures.Future[tuple[bytes, bytes]] = concurrent.futures.Future()
        call_id = b"c" + str(next(self._ids)).encode()
        self._calls[call_id] = lambda kind, env, payload: fut.set_result((kind, bytes(payload)))
        assert self._client is not None
        self._client.send([wire.envelope(wire.CONTROL, call_id, command), b"", b""])
        return fut

    def reply_call(self, instance: bytes, call_id: bytes, sub: bytes, ok: bool, value: Any) -> None:
        """The outcome of a @task call made by a node on ``instance`` (``relay.py``)."""
        if self._client is None:
            return
        try:
            payload = shipping.dumps_value((ok, value), "the result of a @task call")
        except shipping.ShippingError as exc:
            payload = shipping.dumps_value((False, exc), "an error")
        env = wire.envelope(wire.CALL_RESULT, call_id, instance, sub)
        self._client.send([env, b"", payload])

    def _on_message(self, frames: list[Any]) -> None:
        env, payload = frames[0], frames[1]
        kind, call_id = env[:1], env.split(wire.SEP, 2)[1]
        if kind in TERMINAL or kind == wire.READY or kind == wire.FAILED:
            deliver = self._calls.pop(call_id, None)
        else:
            deliver = self._calls.get(call_id)
        if deliver is not None and not _deliver(deliver, kind, env, payload):
            self.cancel(call_id)  # its caller is gone (e.g. its event loop was closed)


def _fail(calls: dict[bytes, Deliver], reason: str) -> None:
    for deliver in calls.values():
        _deliver(deliver, wire.LOST, b"", reason.encode())


def _deliver(deliver: Deliver, kind: bytes, env: bytes, payload: Any) -> bool:
    """Hand a message to its caller; False if the caller cannot take it any more. Runs
    on the I/O thread, which must survive any one caller."""
    try:
        deliver(kind, env, payload)
        return True
    except Exception:
        return False


def _exit_text(code: int | None) -> str:
    if code is None:
        return "is no longer supervised (the fork server exited)"
    if code < 0:
        return f"was killed by signal {-code}"
    return f"died with exit code {code}"


def _weakly(method: Any, *args: Any) -> Callable[..., None]:
    """``method`` (bound, with ``args`` first) called through a weak reference: the I/O
    thread and the fork server must not keep a deployment alive, or one its app
    dropped without ``close()`` would never be finalized (and its processes would run
    until the interpreter exits)."""
    ref = weakref.WeakMethod(method)

    def call(*more: Any) -> None:
        bound = ref()
        if bound is not None:
            bound(*args, *more)

    return call


def _monotonic() -> float:
    return time.monotonic()


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


def _free_ports(host: str, n: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            try:
                s.bind((host, 0))
            except OSError as exc:
                msg = f"alto option transport='tcp': cannot bind host={host!r}: {exc}"
                raise ValueError(msg) from exc
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _shutdown(
    server: ForkServer, pids: dict[Any, int], clients: list[Endpoint], socket_dir: str | None
) -> None:
    """Stop a deployment's processes: ``STOP_SIGNAL`` (they flush their output), SIGKILL
    after a grace period; wait until they are gone, remove the socket directory."""
    if server.pid != os.getpid():
        return  # a forked child of the app, exiting: the deployment is the parent's
    for client in clients:
        client.close()
    remaining = set(pids.values())
    for sig, grace in ((STOP_SIGNAL, 1.0), (signal.SIGKILL, 5.0)):
        for pid in remaining:
            _kill(server, pid, sig)
        deadline = _monotonic() + grace
        while remaining and _monotonic() < deadline:
            remaining = {p for p in remaining if _pid_alive(p)}
            if remaining:
                time.sleep(0.005)
        if not remaining:
            break
    if socket_dir is not None:
        shutil.rmtree(socket_dir, ignore_errors=True)


def _kill(server: ForkServer, pid: int, sig: int) -> None:
    if server.alive():  # it knows which pids are still its children: never a stranger
        server.kill(pid, sig)
    elif pid in server.orphans:  # it died: what it still ran is ours to stop
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie not yet reaped by the fork server counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


class RemoteNode(Runnable[Any, Any]):
    """A node's runnable, run on an instance of its stage in a worker process.

    It takes the node runnable's place inside the task's proc, so only the node's own
    code moves: LangGraph's writers, retries, timeouts and callbacks stay here. While
    the call runs, its stream-writer chunks, callback events and @task calls come back
    (``relay.py``) and are handled here, on the calling thread or event loop, in order.
    """

    def __init__(self, stage: str, node: Runnable[Any, Any], cluster: Cluster) -> None:
        self.stage = stage
        self.node = node
        self.cluster = cluster
        self.spec = cluster.specs[stage]
        self.name = node.get_name()

    def __reduce__(self) -> Any:
        # shipped inside node code (an alto graph invoked in a node): the node itself
        return (_identity, (self.node,))

    def __repr__(self) -> str:
        return f"RemoteNode(stage={self.stage!r}, node={self.node!r})"

    def __getattr__(self, name: str) -> Any:
        # what LangGraph and tools read off a node's runnable (a ToolNode's
        # tools_by_name, say) is the node's own
        node = self.__dict__.get("node")
        if node is None:
            raise AttributeError(name)
        return getattr(node, name)

    def _send(
        self, input: Any, config: RunnableConfig, deliver: Deliver, streamed: bool, call: _Call
    ) -> bytes:
        conf = config.get(CONF) or {}
        ancestry = conf.get(CONFIG_KEY_ANCESTRY, ())
        request_id = conf.get(CONFIG_KEY_REQUEST, "")
        payload = shipping.ship_call(self.stage, input, config, streamed)  # type: ignore[arg-type]
        header = repr((request_id, ancestry)).encode()
        key = routing_key(self.spec, request_id, ancestry)
        call_id = self.cluster.call(self.stage, header, payload, key, deliver)
        # streams in the input (a fold's): their chunks follow the task, as they come
        for ref in streams.stream_refs(input):
            call.unlisten.append(ref._channel().listen(self._feeder(call_id, ref.sid)))
        return call_id

    def _feeder(self, call_id: bytes, sid: str) -> Callable[[str, Any], None]:
        def feed(event: str, value: Any) -> None:
            if event == streams.FAIL:
                value = shipping.dumps_error(value)
            what = f"a chunk of the stream into node {self.stage!r}"
            self.cluster.feed(call_id, self.stage, shipping.dumps_value((sid, event, value), what))

        return feed

    def _call(self, config: RunnableConfig, env: bytes, payload: Any) -> None:
        """A @task call made by the node: through this task's own call machinery."""
        _, call_id, instance, sub = wire.decode(env)
        func, input, kwargs = shipping.loads(payload)

        def done(fut: Any) -> None:
            exc = fut.exception()
            ok = exc is None
            self.cluster.reply_call(instance, call_id, sub, ok, fut.result() if ok else exc)

        try:
            impl = config[CONF][CONFIG_KEY_CALL]
            fut = impl(func, input, callbacks=config.get("callbacks"), **kwargs)
        except Exception as exc:
            self.cluster.reply_call(instance, call_id, sub, False, exc)
            return
        fut.add_done_callback(done)

    def _ahead_of_result(
        self, config: RunnableConfig, call: _Call, kind: bytes, env: bytes, payload: Any
    ) -> Any:
        """Act on a message the node's call sent ahead of its result (``relay.py``);
        a callback event is returned, for the caller to replay (sync or async)."""
        if kind == wire.CALLBACK:
            return shipping.loads(payload)
        if kind == wire.YIELD:
            with streams.receiving(call.streams):
                item = shipping.loads(payload)
            config[CONF][CONFIG_KEY_YIELD].apply(item)
        elif kind == wire.STREAM:
            sid, event, value = shipping.loads(payload)
            if event == streams.FAIL:
                value = shipping.loads(value)
            channel = call.streams.get(sid) or call.streams.setdefault(sid, StreamChannel())
            channel.event(event, value)
        if kind == wire.EMIT:
            _runtime(config).stream_writer(shipping.loads(payload))
        elif kind == wire.HEARTBEAT:
            _runtime(config).heartbeat()
        elif kind == wire.WRITES:
            config[CONF][CONFIG_KEY_SEND](shipping.loads(payload))
        elif kind == wire.CALL:
            self._call(config, env, payload)
        return None

    def _run(self, input: Any, config: RunnableConfig | None, streamed: bool) -> Iterator[Any]:
        """The node's output chunks (streamed) or its output (one item), handling the
        call's other messages on the way, on this thread."""
        config = config or {}
        inbox: queue.SimpleQueue[tuple[bytes, bytes, Any]] = queue.SimpleQueue()
        call = _Call()
        call_id = self._send(input, config, lambda *msg: inbox.put(msg), streamed, call)
        callbacks = relay.Replayer(config.get("callbacks"))
        try:
            while True:
                kind, env, payload = inbox.get()
                if kind == wire.CHUNK:
                    yield shipping.loads(payload)
                elif kind in TERMINAL:
                    output = _outcome(kind, payload)
                    if not streamed:
                        yield output
                    return
                elif (event := self._ahead_of_result(config, call, kind, env, payload)) is not None:
                    callbacks.replay(event)
        except BaseException as exc:
            self.cluster.cancel(call_id)
            call.end(exc)
            raise
        finally:
            call.end(None)

    async def _arun(
        self, input: Any, config: RunnableConfig | None, streamed: bool
    ) -> AsyncIterator[Any]:
        """``_run`` on the caller's event loop."""
        config = config or {}
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[tuple[bytes, bytes, Any]] = asyncio.Queue()
        call = _Call()
        call_id = self._send(
            input,
            config,
            lambda *msg: loop.call_soon_threadsafe(inbox.put_nowait, msg),
            streamed,
            call,
        )
        callbacks = relay.Replayer(config.get("callbacks"))
        try:
            while True:
                kind, env, payload = await inbox.get()
                if kind == wire.CHUNK:
                    yield shipping.loads(payload)
                elif kind in TERMINAL:
                    output = _outcome(kind, payload)
                    if not streamed:
                        yield output
                    return
                elif (event := self._ahead_of_result(config, call, kind, env, payload)) is not None:
                    await callbacks.areplay(event)
        except BaseException as exc:
            self.cluster.cancel(call_id)
            call.end(exc)
            raise
        finally:
            call.end(None)

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        if _in_process(config):
            return self.node.invoke(input, config, **kwargs)
        run = self._run(input, config, streamed=False)
        try:
            return next(run)
        finally:
            run.close()

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        if _in_process(config):
            return await self.node.ainvoke(input, config, **kwargs)
        run = self._arun(input, config, streamed=False)
        try:
            return await anext(run)
        finally:
            await run.aclose()

    # LangGraph streams a task's proc when an astream_events/astream_log handler listens
    def stream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        if _in_process(config):
            yield from self.node.stream(input, config, **kwargs)
        else:
            yield from self._run(input, config, streamed=True)

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        chunks = (
            self.node.astream(input, config, **kwargs)
            if _in_process(config)
            else self._arun(input, config, streamed=True)
        )
        async for chunk in chunks:
            yield chunk


class _Call:
    """A call's stream plumbing on the caller's side: the streams its node produces
    (fed by its STREAM messages) and the feeds of the streams in its input."""

    def __init__(self) -> None:
        self.streams: dict[str, StreamChannel] = {}
        self.unlisten: list[Callable[[], None]] = []

    def end(self, exc: BaseException | None) -> None:
        """The call is over: stop feeding its input streams; a stream it produced and
        did not end fails (with the call's exception), so its reader does not wait."""
        for stop in self.unlisten:
            stop()
        self.unlisten.clear()
        for channel in self.streams.values():
            channel.event(
                streams.FAIL, exc or RuntimeError("alto: the producer's call ended mid-stream")
            )


def _runtime(config: RunnableConfig) -> Any:
    return (config.get(CONF) or {}).get(CONFIG_KEY_RUNTIME) or DEFAULT_RUNTIME


def _in_process(config: RunnableConfig | None) -> bool:
    return bool(config and (config.get(CONF) or {}).get(CONFIG_KEY_IN_PROCESS))


def _outcome(kind: bytes, payload: Any) -> Any:
    if kind == wire.RESULT:
        return shipping.loads(payload)
    if kind == wire.ERROR:
        raise shipping.loads(payload)  # checked to unpickle in the instance
    raise StageInstanceLost(bytes(payload).decode(errors="replace"))


def _identity(x: Any) -> Any:
    return x
