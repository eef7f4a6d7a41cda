"""Where an LM call goes, and its deltas as a sync or async stream.

A call goes to one of two backends:

* ``StageBackend``: an LM stage of the app's deployment, through the router, with the
  prompt's ``prompt_key`` as routing key (``prefix_cache_aware`` routing keeps prompts
  that share a prefix on one instance). The deltas come back as the call's output
  chunks. Used inside a run of an alto app that serves the model (``compile(lm=...)``):
  in the app process the run's config names the deployment (``CONFIG_KEY_LM``); in a
  stage instance the process was told at start (``bind_process``).
* ``LocalBackend``: an engine in this process, on a thread of its own with its own event
  loop (one per engine spec, shared by every caller), for stock LangGraph and for
  calls made outside any alto run.

Either way a backend ``start`` s a request and hands each ``Delta`` to ``put`` (from any
thread), then ``END`` or the exception that failed it; ``stream`` / ``astream`` turn that
into an iterator, and leaving the iterator early cancels the request.
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any, Protocol

from ..config_keys import CONFIG_KEY_LM
from ..errors import EngineError, StageInstanceLost
from ..process import shipping, wire
from ..process.routing import prompt_key
from ..process.rpc import client_for, process_lm_stages
from .engine import Delta, Engine
from .engines import EngineSpec
from .serving import LMRequest, serve

END = object()
Put = Callable[[Any], None]


class Backend(Protocol):
    def start(self, request: LMRequest, put: Put) -> Callable[[], None]:
        """Begin ``request``; returns a function that cancels it."""


class StageBackend:
    def __init__(self, caller: Any, stage: str) -> None:
        self.caller = caller  # the app's Deployment, or this process's RpcClient
        self.stage = stage

    def start(self, request: LMRequest, put: Put) -> Callable[[], None]:
        payload = shipping.ship_call(self.stage, request, {}, streamed=True)

        def deliver(kind: bytes, env: bytes, data: Any) -> None:
            if kind == wire.CHUNK:
                put(shipping.loads(data))
            elif kind == wire.RESULT:
                put(END)
            elif kind == wire.ERROR:
                put(shipping.loads(data))
            elif kind == wire.LOST:
                put(StageInstanceLost(bytes(data).decode(errors="replace")))

        key = prompt_key(request.key_text())
        call_id = self.caller.call(self.stage, payload, key, deliver)
        return lambda: self.caller.cancel(call_id)


@dataclasses.dataclass(frozen=True)
class LMRoutes:
    """The LM stages of one deployment: model name -> stage name."""

    caller: Any  # has call(stage, payload, key, deliver) and cancel(call_id)
    stages: Mapping[str, str]

    def backend(self, model: str) -> StageBackend:
        stage = self.stages.get(model)
        if stage is None:
            raise ValueError(
                f"model {model!r} is not served by this app; it serves "
                f"{', '.join(map(repr, self.stages)) or 'no models'} "
                "(compile(backend='alto', lm={...}) names them)"
            )
        return StageBackend(self.caller, stage)


class _ProcessClient:
    """This stage instance's router client, connected on the first LM call."""

    def __init__(self, address: str) -> None:
        self.address = address

    def call(self, *args: Any) -> bytes:
        return client_for(self.address).call(*args)

    def cancel(self, call_id: bytes) -> None:
        client_for(self.address).cancel(call_id)


def _process_routes() -> LMRoutes | None:
    """In a stage instance: its deployment's LM stages (``rpc.bind_process``)."""
    address, stages = process_lm_stages()
    return LMRoutes(_ProcessClient(address), stages) if stages else None


def routes_in(configurable: Mapping[str, Any]) -> LMRoutes | None:
    """The LM stages a run's ``configurable`` names (None: none)."""
    return configurable.get(CONFIG_KEY_LM)


def routes(configurable: Mapping[str, Any]) -> LMRoutes | None:
    """The LM stages a call made with this ``configurable`` goes to: the run's, or in a
    stage instance its deployment's (None: an engine in this process)."""
    return routes_in(configurable) or _process_routes()


# -- engines in this process ---------------------------------------------------------
class LocalBackend:
    """An engine on a daemon thread running its own event loop."""

    def __init__(self, spec: EngineSpec) -> None:
        self.spec = spec
        self.loop = asyncio.new_event_loop()
        self._engine: Engine | None = None
        self._thread = threading.Thread(
            target=self.loop.run_forever, name=f"alto-lm-{spec.engine}", daemon=True
        )
        self._thread.start()

    def engine(self) -> Engine:
        """The engine, built on first use (from any thread)."""
        if self._engine is None:
            with _local_lock:
                if self._engine is None:
                    self._engine = self.spec.build()
        return self._engine

    def start(self, request: LMRequest, put: Put) -> Callable[[], None]:
        # the engine is built (on first use) on this backend's thread, not the caller's
        fut = asyncio.run_coroutine_threadsafe(_pump(self.engine, request, put), self.loop)
        return lambda: self.loop.call_soon_threadsafe(fut.cancel)

    def close(self) -> None:
        if self._engine is not None:
            asyncio.run_coroutine_threadsafe(self._engine.close(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


async def _pump(engine: Callable[[], Engine], request: LMRequest, put: Put) -> None:
    try:
        async for delta in serve(engine(), request):
            put(delta)
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        put(exc)
        return
    put(END)


_local: dict[str, LocalBackend] = {}
_local_lock = threading.RLock()


def local_backend(spec: EngineSpec) -> LocalBackend:
    key = repr((spec.engine, sorted(spec.options.items())))
    with _local_lock:
        backend = _local.get(key)
        if backend is None:
            spec.check()
            backend = _local[key] = LocalBackend(spec)
        return backend


@atexit.register
def _close_local() -> None:
    with _local_lock:
        for backend in _local.values():
            try:
                backend.close()
            except Exception:  # exiting anyway
                pass
        _local.clear()


# -- the two ways to read a call -------------------------------------------------------
def _delta(item: Any) -> Delta | None:
    """What a backend put: a delta, None at the end, or its exception raised."""
    if item is END:
        return None
    if isinstance(item, BaseException):
        raise item
    return item


def stream(backend: Backend, request: LMRequest) -> Iterator[Delta]:
    inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    cancel = backend.start(request, inbox.put)
    over = False  # the request ended (until then, leaving early cancels it)
    try:
        while not over:
            delta = _delta(inbox.get())  # a failed request raises: cancelling it is harmless
            if delta is None:
                over = True
                return
            over = delta.finished
            yield delta
    finally:
        if not over:
            cancel()


async def astream(backend: Backend, request: LMRequest) -> AsyncIterator[Delta]:
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    cancel = backend.start(request, lambda item: loop.call_soon_threadsafe(inbox.put_nowait, item))
    over = False
    try:
        while not over:
            delta = _delta(await inbox.get())  # a failed request raises: cancelling it is harmless
            if delta is None:
                over = True
                return
            over = delta.finished
            yield delta
    finally:
        if not over:
            cancel()


__all__ = [
    "CONFIG_KEY_LM",
    "EngineError",
    "LMRoutes",
    "LocalBackend",
    "StageBackend",
    "astream",
    "local_backend",
    "routes",
    "stream",
]
