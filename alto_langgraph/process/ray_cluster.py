"""The Ray cluster a deployment places stages on: the user's, or a local one alto starts.

Three cases, in this order:

* the app already called ``ray.init()``: that connection is used, and left alone;
* ``ray_address`` is given: alto connects to that cluster (and leaves it running);
* neither: alto starts a one-node cluster on this machine for as long as an app uses
  it, and stops it when the last one closes.

The local cluster is ``ray start --head --block``, started by the fork server in a
process group of its own (``serve_head``): when the app exits, whatever way, the fork
server kills that group, so Ray's daemons (GCS, raylet, agents) never outlive it. Ray's
own ``ray.init()`` local mode leaves its dashboard and runtime-env agents running when
the driver is SIGKILLed. Ray's workers exit on their own once their raylet is gone.

``ray`` is imported only here and in ``ray_actors.py``, and only when a stage is on Ray.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
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


def serve_head(port: int, temp_dir: str, num_cpus: int) -> None:
    """The fork server's child for a local cluster: lead a process group, become
    ``ray start --head --block`` (its daemons join the group)."""
    os.setpgid(0, 0)
    for sig in (signal.SIGINT, signal.SIGTERM):  # the fork server ignores them; Ray must not
        signal.signal(sig, signal.SIG_DFL)
    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
    if not os.path.exists(ray_cli):
        ray_cli = shutil.which("ray") or ray_cli
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(devnull, fd)  # its banner is not the app's output; errors still show
    os.execv(
        ray_cli,
        [
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
        ],
    )


class Cluster:
    """A connection to a Ray cluster, shared by the deployments of this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        #: the local cluster alto started: (fork server, pid of its group leader)
        self._local: tuple[Any, int] | None = None
        self.address: str | None = None

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
                    address = self._start_local(server)
                    with _auth_env():
                        _init(ray, address)
                else:
                    _init(ray, address)
            elif address is not None and self.address not in (None, address):
                raise ValueError(
                    f"alto option ray_address={address!r}: this process is already "
                    f"connected to the Ray cluster at {self.address!r}"
                )
            self.address = self.address or address or "(connected by the app)"
            self._users += 1
        return ray

    def release(self) -> None:
        """One deployment is done with the cluster: the last stops a local one."""
        with self._lock:
            self._users -= 1
            if self._users or self._local is None:
                return
            server, pid = self._local
            self._local = None
            self.address = None
        import ray

        ray.shutdown()
        server.kill(pid)  # the whole group: the fork server kills a leader's group

    def _start_local(self, server: Any) -> str:
        (port,) = free_ports("127.0.0.1", 1)
        temp_dir = tempfile.mkdtemp(prefix="alto-ray-")
        server.remove_at_exit(temp_dir)
        pid = server.spawn(
            "ray_head",
            {"port": port, "temp_dir": temp_dir, "num_cpus": os.cpu_count() or 1},
            {"RAY_USAGE_STATS_ENABLED": "0", **_AUTH_ENV},  # no reports: no internet
            lambda code: None,
        )
        self._local = (server, pid)
        return f"127.0.0.1:{port}"


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
