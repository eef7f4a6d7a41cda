"""The Ray cluster a deployment places stages on: the user's, or a local one alto starts.

Three cases, in this order:

* the app already called ``ray.init()``: that connection is used, and left alone;
* ``ray_address`` is given: alto connects to that cluster (and leaves it running);
* neither: alto starts a one-node cluster on this machine for as long as an app uses
  it, and stops it when the last one closes.

The local cluster is ``ray start --head --block``, run by a child of the fork server
that leads a process group of its own (``serve_head``): when the app exits, whatever
way, that group is killed (by the fork server, or by the child itself when the app's
lifeline ends), so Ray's daemons (GCS, raylet, agents) never outlive it. Ray's
own ``ray.init()`` local mode leaves its dashboard and runtime-env agents running when
the driver is SIGKILLed. Ray's workers exit on their own once their raylet is gone.

``ray`` is imported only here and in ``ray_actors.py``, and only when a stage is on Ray.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from .transport import free_ports

#: the local cluster's token: Ray's daemons listen on every interface, so without one
#: anyone who reaches this machine could run code on it. One per app process: Ray's
#: driver caches the first token it reads.
_TOKEN = secrets.token_hex(32)
_AUTH_ENV = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": _TOKEN}


def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ImportError(
            "alto: stages placed on Ray need the ray package: pip install 'alto-langgraph[ray]'"
        ) from exc
    return ray


def serve_head(port: int, temp_dir: str, num_cpus: int, ray_cli: str) -> None:
    """The fork server's child for a local cluster: lead a process group and run
    ``ray start --head --block`` in it (its daemons join the group). This process stays,
    so that the lifeline reaches the group: when the app dies, it takes the group
    with it (``forkserver._lifeline_watch``), even if the fork server is gone."""
    os.setpgid(0, 0)
    for sig in (signal.SIGINT, signal.SIGTERM):  # the fork server ignores them; Ray must not
        signal.signal(sig, signal.SIG_DFL)
    args = [
        ray_cli,
        "start",
        "--head",
        "--block",
        f"--port={port}",
        "--node-ip-address=127.0.0.1",
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
        f"--num-cpus={num_cpus}",
    ]
    with open(os.devnull, "r+b") as devnull:  # its banner is not the app's output
        head = subprocess.Popen(args, stdin=devnull, stdout=devnull)
    head.wait()
    os.killpg(0, signal.SIGKILL)  # whatever it left running


def _ray_cli() -> str:
    """The ``ray`` command of this Python's installation."""
    beside = os.path.join(os.path.dirname(sys.executable), "ray")
    found = beside if os.access(beside, os.X_OK) else shutil.which("ray")
    if found is None:
        raise RuntimeError(
            "alto: starting a local Ray cluster needs the ray command, which is not "
            f"beside {sys.executable} nor on PATH; reinstall alto-langgraph[ray], or "
            "give ray_address= (or call ray.init()) to use a running cluster"
        )
    return found


class Cluster:
    """A connection to a Ray cluster, shared by the deployments of this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        #: the local cluster alto started: (fork server, pid of its group leader)
        self._local: tuple[Any, int] | None = None

    @property
    def local(self) -> bool:
        """Whether the cluster is the local one alto started."""
        return self._local is not None

    def acquire(self, address: str | None, server: Any) -> Any:
        """Connect (starting a local cluster if need be, with ``server``, the app's fork
        server); returns the ``ray`` module. Pair with ``release``."""
        ray = import_ray()
        with self._lock:
            if not ray.is_initialized():
                if address is None:
                    self._start_local(ray, server)
                else:
                    _init(ray, address)
            elif address is not None:
                live = ray.get_runtime_context().gcs_address
                if not _same_address(address, live):
                    raise ValueError(
                        f"alto option ray_address={address!r}: this process is already "
                        f"connected to the Ray cluster at {live!r}"
                    )
            self._users += 1
        return ray

    def release(self) -> None:
        """One deployment is done with the cluster: the last stops a local one."""
        with self._lock:  # held throughout: an acquire must not find it half stopped
            self._users -= 1
            if self._users or self._local is None:
                return
            import ray

            try:
                ray.shutdown()
            finally:
                self._stop_local()

    def _start_local(self, ray: Any, server: Any) -> None:
        (port,) = free_ports("127.0.0.1", 1)
        temp_dir = tempfile.mkdtemp(prefix="alto-ray-")
        server.remove_at_exit(temp_dir)
        pid = server.spawn(
            "ray_head",
            {
                "port": port,
                "temp_dir": temp_dir,
                "num_cpus": os.cpu_count() or 1,
                "ray_cli": _ray_cli(),
            },
            {"RAY_USAGE_STATS_ENABLED": "0", **_AUTH_ENV},  # no reports: no internet
            lambda code: None,
        )
        self._local = (server, pid)
        try:
            with _auth_env():
                _init(ray, f"127.0.0.1:{port}")
        except BaseException as exc:
            self._stop_local()
            raise RuntimeError(
                f"alto: the local Ray cluster did not start ({exc}); its logs are in "
                f"{temp_dir}/session_latest/logs until the app exits"
            ) from exc

    def _stop_local(self) -> None:
        assert self._local is not None
        server, pid = self._local
        self._local = None
        server.kill(pid)  # the whole group: the pid leads it (even if the server died)


def _same_address(given: str, live: str) -> bool:
    """Whether ``given`` (an option) may name the cluster at ``live`` (its GCS, as Ray
    reports it). Only a certain difference counts: another port, or another host where
    neither is this machine's loopback (which may reach the same cluster)."""
    if "://" in given or given == "auto":
        return True  # Ray's own forms: not comparable here
    try:
        (g_host, g_port), (l_host, l_port) = (a.rsplit(":", 1) for a in (given, live))
        if g_port != l_port:
            return False
        g_ip, l_ip = (socket.gethostbyname(h.strip("[]")) for h in (g_host, l_host))
    except (ValueError, OSError):
        return True
    return g_ip == l_ip or _loopback(g_ip) or _loopback(l_ip)


def _init(ray: Any, address: str) -> None:
    ray.init(address=address, configure_logging=False, log_to_driver=True, namespace="alto")


@contextlib.contextmanager
def _auth_env() -> Iterator[None]:
    """This process's Ray driver connects with the local cluster's token; the app's
    environment is as it was afterwards (its own subprocesses must not inherit it)."""
    from ray._raylet import Config  # what Ray itself calls to re-read the auth mode

    saved = {k: os.environ.get(k) for k in _AUTH_ENV}
    os.environ.update(_AUTH_ENV)
    try:
        Config.initialize("")
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


#: this process's connection (Ray allows one per process)
cluster = Cluster()


def check_placeable(ray: Any, stage: str, options: Mapping[str, Any]) -> None:
    """Raise a clear error if no live node of the cluster could ever hold one actor of
    ``stage`` (a resource no node has, or not enough of it): its start would wait forever."""
    if options.get("placement_group") or options.get("node_id"):
        return  # pinned: Ray reports an unknown group or node itself
    need = dict(options.get("resources") or {})
    for key, name in (("num_cpus", "CPU"), ("num_gpus", "GPU"), ("memory", "memory")):
        if options.get(key):
            need[name] = options[key]
    if not need:
        return
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    for node in nodes:
        have = node.get("Resources", {})
        if all(have.get(k, 0) >= v for k, v in need.items()):
            return
    offered = "; ".join(
        f"{n.get('NodeManagerAddress')}: "
        + ", ".join(
            f"{k}={v:g}"
            for k, v in sorted(n.get("Resources", {}).items())
            if not k.startswith("node:") and k != "object_store_memory"
        )
        for n in nodes
    )
    asks = ", ".join(f"{k}={v:g}" for k, v in sorted(need.items()))
    raise ValueError(
        f"alto: stage {stage!r} asks each Ray actor for {asks}, but no live node of the "
        f"cluster has that ({offered or 'no live nodes'})"
    )


def check_reachable(ray: Any, host: str) -> None:
    """Raise a clear error if the router, bound to ``host`` (the ``host`` option), is on
    this machine's loopback while the cluster has nodes on other machines: actors
    placed there could never connect."""
    try:
        if not _loopback(socket.gethostbyname(host)):
            return
    except OSError:
        return  # not resolvable here: binding reports it
    here = ray.util.get_node_ip_address()
    elsewhere = sorted(
        {
            n["NodeManagerAddress"]
            for n in ray.nodes()
            if n.get("Alive")
            and n.get("NodeManagerAddress") not in (None, here)
            and not _loopback(n["NodeManagerAddress"])
        }
    )
    if elsewhere:
        raise ValueError(
            f"alto option host={host!r} is this machine's loopback, but the Ray cluster "
            f"has nodes on other hosts ({', '.join(elsewhere)}): stages placed there could "
            "not reach the router; leave host unset (this node's address on the cluster) "
            "or give an address they can reach"
        )


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
