"""A live router on loopback, and raw sockets to talk to it: as a stage instance, as
the app, or as no one (an attacker who can reach the address)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import zmq

from alto_langgraph.process import security, wire
from alto_langgraph.process.deployment import _cloudpickled
from alto_langgraph.process.forkserver import fork_server
from alto_langgraph.process.routing import LeastOutstanding
from alto_langgraph.process.transport import free_ports


class LiveRouter:
    def __init__(self, front: str, back: str, keyring: security.Keyring) -> None:
        self.front, self.back, self.keyring = front, back, keyring
        self.ctx = zmq.Context()
        self.exited = threading.Event()
        self.pid = 0

    def socket(self, address: str, as_peer: bytes | None, **options: Any) -> Any:
        """A DEALER connected to ``address``: with ``as_peer``'s credentials, or none."""
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if as_peer is not None:
            self.keyring.peer(as_peer).apply(sock)
        for name, value in options.items():
            setattr(sock, name, value)
        sock.connect(address)
        return sock

    def instance(self, inst: bytes, *, ready: bool = True) -> Any:
        sock = self.socket(self.back, inst)
        if ready:
            sock.send_multipart([b"", wire.envelope(wire.READY, b"", b""), b""])
        return sock

    def wait_live(self, n: int, timeout: float = 5.0) -> None:
        """Until ``n`` instances are live (READY handled)."""
        import time

        deadline = time.monotonic() + timeout
        while sum(map(len, self.stats()["live"].values())) < n:
            assert time.monotonic() < deadline, f"fewer than {n} instances became live"
            time.sleep(0.01)

    def app(self) -> Any:
        return self.socket(self.front, security.APP)

    def stats(self) -> dict[str, Any]:
        import ast

        app = self.app()
        app.send_multipart([wire.envelope(wire.CONTROL, b"s1", wire.CTL_STATS), b""])
        assert app.poll(5000), "the router did not answer a stats request"
        kind_env, payload = app.recv_multipart()
        app.close()
        return ast.literal_eval(payload.decode())


@contextlib.contextmanager
def live_router(
    transport: str = "ipc",
    stages: Sequence[tuple[str, int, Any]] = (("s", 1, None),),
    tmp_path: Any = None,
    limits: dict[str, Any] | None = None,
) -> Iterator[LiveRouter]:
    """A router process (forked like a deployment's) for ``stages``: (name, replicas,
    policy or None), each with ``limits`` (``StageRoute``'s fields); its instances are
    the test's own sockets."""
    if transport == "ipc":
        front, back = f"ipc://{tmp_path}/front", f"ipc://{tmp_path}/back"
    else:
        ports = free_ports("127.0.0.1", 2)
        front, back = (f"tcp://127.0.0.1:{p}" for p in ports)
    keyring = security.Keyring(transport)
    table = [
        (
            name,
            [wire.instance_id(name, i) for i in range(n)],
            policy or LeastOutstanding(),
            limits or {},
        )
        for name, n, policy in stages
    ]
    peers = [security.APP, *(i for _, ids, _, _ in table for i in ids)]
    router = LiveRouter(front, back, keyring)
    server = fork_server()
    router.pid = server.spawn(
        "router",
        {
            "front_address": front,
            "back_address": back,
            "stages": _cloudpickled(table),
            "credentials": keyring.router(peers),
        },
        {},
        lambda code: router.exited.set(),
    )
    try:
        yield router
    finally:
        router.ctx.destroy(linger=0)
        server.kill(router.pid)
        assert router.exited.wait(5)
