"""What an LM call carries, and the LM stage's side of it.

An ``LMRequest`` is a chat (or a raw prompt) plus sampling parameters. Whoever holds
the engine (an LM stage instance, or this process for stock LangGraph) renders the chat
with the engine's own template and streams the engine's deltas back (``serve``).

``LMServer`` is the "node code" of an LM stage: a worker process unpickles it, which
loads the engine (so a model that fails to load fails the deployment with its reason),
and runs each call through ``astream``; the worker relays the deltas as output chunks
and cancels the call (aborting the request in the engine) when its caller gives up.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from .engine import Delta, Engine, SamplingParams, chat_text
from .engines import EngineSpec


@dataclasses.dataclass(frozen=True)
class LMRequest:
    model: str
    request_id: str
    params: SamplingParams
    messages: tuple[tuple[str, str], ...] = ()  # (role, content)
    prompt: str | None = None  # a raw prompt instead of a chat

    def chat(self) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in self.messages]

    def key_text(self) -> str:
        """The text the request's routing key is made from: the same prefix of chat,
        the same prefix of key, whatever the engine's template."""
        return self.prompt if self.prompt is not None else chat_text(self.chat())


async def serve(engine: Engine, request: LMRequest) -> AsyncIterator[Delta]:
    if request.prompt is not None:
        deltas = engine.generate(request.prompt, request.params, request.request_id)
    else:
        deltas = engine.chat(request.chat(), request.params, request.request_id)
    async with aclosing(deltas):
        async for delta in deltas:
            yield delta


class LMServer:
    """An LM stage's node: an engine, built when the stage instance loads it."""

    def __init__(self, spec: EngineSpec, engine: Engine | None = None) -> None:
        self.spec = spec
        self.engine = engine

    def __reduce__(self) -> Any:
        return (_load, (self.spec,))

    def get_name(self) -> str:
        return f"LMServer({self.spec.engine})"

    async def astream(self, request: LMRequest, config: Any = None) -> AsyncIterator[Delta]:
        assert self.engine is not None
        async with aclosing(serve(self.engine, request)) as deltas:
            async for delta in deltas:
                yield delta

    async def ainvoke(self, request: LMRequest, config: Any = None) -> list[Delta]:
        return [d async for d in self.astream(request, config)]


def _load(spec: EngineSpec) -> LMServer:
    return LMServer(spec, spec.build())
