"""A stage instance: a process that runs one stage's node code on the items routed to it.

It connects to the router's back end with its instance id as zmq identity, says
``READY`` once the node's code is loaded (or ``FAILED`` with the reason), then runs each
task message as an asyncio task on its event loop (sync node code on the loop's
threads, as LangGraph runs it). A call's stream-writer chunks go back as ``EMIT``
messages ahead of its ``RESULT``/``ERROR``.
"""

from __future__ import annotations

import asyncio
import sys
import traceback
from typing import Any

import cloudpickle
import zmq

from . import shipping, wire
from .transport import Endpoint

#: True inside a stage instance: alto graphs unpickled here (a graph invoked inside a
#: node) run inline, in this process, instead of starting a deployment of their own.
IN_STAGE_INSTANCE = False


def serve(back_address: str, identity: bytes, stage: str, code: bytes, sys_path: list[str]) -> None:
    global IN_STAGE_INSTANCE
    IN_STAGE_INSTANCE = True
    for p in reversed(sys_path):  # node code is pickled by reference to its modules
        if p not in sys.path:
            sys.path.insert(0, p)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    instance = StageInstance(stage, identity, loop)
    endpoint = Endpoint(
        zmq.DEALER,
        back_address,
        lambda frames: loop.call_soon_threadsafe(instance.on_message, frames),
        identity=identity,
        name=f"alto-stage-{stage}",
        context=zmq.Context(),
    )
    instance.endpoint = endpoint
    try:
        instance.node = cloudpickle.loads(code)
    except BaseException as exc:
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        reason = f"stage {stage!r}: its node code could not be loaded in a worker process: {detail}"
        endpoint.send([b"", wire.envelope(wire.FAILED), reason.encode()])
        endpoint.close()
        return
    endpoint.send([b"", wire.envelope(wire.READY, b"", stage.encode())])
    loop.run_forever()


class StageInstance:
    def __init__(self, stage: str, identity: bytes, loop: asyncio.AbstractEventLoop) -> None:
        self.stage = stage
        self.identity = identity
        self.loop = loop
        self.node: Any = None
        self.endpoint: Endpoint | None = None
        self.running: dict[tuple[bytes, bytes], asyncio.Task[Any]] = {}

    def on_message(self, frames: list[Any]) -> None:
        client, env = bytes(frames[0]), bytes(frames[1])
        kind, call_id, _stage, _key = env.split(wire.SEP, 3)
        if kind == wire.TASK:
            task = self.loop.create_task(self.run(client, call_id, frames[3]))
            self.running[(client, call_id)] = task
            task.add_done_callback(lambda _, k=(client, call_id): self.running.pop(k, None))
        elif kind == wire.CANCEL:
            task = self.running.get((client, call_id))
            if task is not None:
                task.cancel()

    async def run(self, client: bytes, call_id: bytes, payload: Any) -> None:
        assert self.endpoint is not None
        send = self.endpoint.send

        def emit(chunk: Any) -> None:  # the node's stream writer (any thread)
            send([client, wire.envelope(wire.EMIT, call_id), shipping.dumps_value(chunk, "a stream-writer chunk")])

        try:
            value, config = shipping.open_call(bytes(payload), emit)
            output = await self.node.ainvoke(value, config)
            reply = [client, wire.envelope(wire.RESULT, call_id), shipping.dumps_value(output, "the output")]
        except BaseException as exc:  # the caller re-raises it; this instance goes on
            reply = [client, wire.envelope(wire.ERROR, call_id), shipping.dumps_error(exc)]
            if not isinstance(exc, Exception):  # CancelledError: the caller gave up
                send(reply)
                raise
        send(reply)
