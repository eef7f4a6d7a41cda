"""``ChatAlto``: a LangChain chat model whose calls run on alto's LM engines.

App code stays LangChain code (``invoke``, ``stream``, ``ainvoke``, ``astream``,
messages in, an ``AIMessage`` out). Where the call runs:

* inside a run of an alto app compiled with ``lm={model: {...}}``: on an instance of
  that model's LM stage, picked by the router (prompt-aware); tokens stream back as the
  engine makes them, so ``stream_mode="messages"`` shows them as LangGraph does;
* anywhere else (stock LangGraph, a script): on an engine in this process, built from
  ``engine`` and ``engine_options`` on first use and shared by every ``ChatAlto`` with
  the same settings.

Generation is greedy by default (``temperature=0``), so answers are reproducible on
both backends.
"""

from __future__ import annotations

import contextlib
import contextvars
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import (
    BaseChatModel,
    agenerate_from_stream,
    generate_from_stream,
)
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import ensure_config
from pydantic import Field

from . import client, models
from .engine import Delta, SamplingParams
from .engines import EngineSpec
from .serving import LMRequest

#: message class -> chat role (chunk classes subclass these)
_ROLES = ((SystemMessage, "system"), (HumanMessage, "user"), (AIMessage, "assistant"))
_ROLES += ((ToolMessage, "tool"),)

_NOTHING = object()

#: the LM stages named by the config of the ChatAlto call being made (a config passed
#: to invoke/stream explicitly is not in the context LangChain gives _stream)
_call_routes: contextvars.ContextVar[client.LMRoutes | None] = contextvars.ContextVar(
    "alto_lm_call_routes", default=None
)


class ChatAlto(BaseChatModel):
    """A chat model served by alto (see the module doc).

    ``model`` names the model: under an alto app, one of its ``lm`` entries; in this
    process, what ``engine`` loads (``"smollm2-135m"``, the default, runs offline on a
    CPU) or asks for. ``engine`` (default ``"transformers"``; ``"openai"`` with
    ``engine_options={"base_url": ...}`` for an OpenAI-compatible server; ``"simulated"``)
    and ``engine_options`` choose the in-process engine.
    """

    model: str = models.SMOLLM2
    max_tokens: int = 64
    temperature: float = 0.0
    stop: list[str] | None = None
    engine: str = "transformers"
    engine_options: dict[str, Any] = Field(default_factory=dict)

    @property
    def _llm_type(self) -> str:
        return "alto"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "max_tokens": self.max_tokens, "engine": self.engine}

    # -- one request --------------------------------------------------------------------
    def _request(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> LMRequest:
        chat = tuple((_role(m), _text(m)) for m in messages)
        if not any(content.strip() for _, content in chat):
            raise ValueError(f"ChatAlto({self.model!r}): the prompt is empty")
        stops = stop if stop is not None else self.stop
        params = SamplingParams(
            max_tokens=kwargs.pop("max_tokens", self.max_tokens),
            temperature=kwargs.pop("temperature", self.temperature),
            stop=(stops,) if isinstance(stops, str) else tuple(stops or ()),
        )
        if kwargs:
            raise TypeError(f"ChatAlto: unknown argument(s) {', '.join(sorted(kwargs))}")
        return LMRequest(self.model, uuid.uuid4().hex, params, chat)

    def _backend(self) -> client.Backend:
        routes = _call_routes.get() or client.routes(ensure_config().get("configurable") or {})
        if routes is not None:
            return routes.backend(self.model)
        options = {"model": self.model, **self.engine_options}
        if self.engine == "simulated":
            options.pop("model")
        return client.local_backend(EngineSpec(self.engine, options))

    def _chunk(self, delta: Delta, first: bool) -> ChatGenerationChunk:
        meta: dict[str, Any] = {}
        if first:  # prompt tokens the engine's prefix cache served (0: none, or unknown)
            meta["cached_tokens"] = delta.cached_tokens
        if delta.logprobs:  # as OpenAI's are: merged chunk by chunk into one list
            meta["logprobs"] = {
                "content": [
                    {"token_id": t, "logprob": lp}
                    for t, lp in zip(delta.token_ids, delta.logprobs, strict=True)
                ]
            }
        if delta.finished:
            meta.update(finish_reason=delta.finish_reason, model_name=self.model)
        return ChatGenerationChunk(
            message=AIMessageChunk(content=delta.text, response_metadata=meta)
        )

    # -- the config a call was given decides where it goes ---------------------------------
    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        with _routing(config):
            return super().invoke(input, config, **kwargs)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        with _routing(config):
            return await super().ainvoke(input, config, **kwargs)

    # A stream resolves its backend on its first step; the routes are set around that
    # step only (a generator has no context of its own: set across yields, they would
    # leak into the caller's later calls).
    def stream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        chunks = super().stream(input, config, **kwargs)
        try:
            with _routing(config):
                first = next(chunks, _NOTHING)
            if first is _NOTHING:
                return
            yield first
            yield from chunks
        finally:
            chunks.close()

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[Any]:
        chunks = super().astream(input, config, **kwargs)
        async with contextlib.aclosing(chunks):
            with _routing(config):
                first = await anext(chunks, _NOTHING)
            if first is _NOTHING:
                return
            yield first
            async for chunk in chunks:
                yield chunk

    # -- LangChain's hooks -----------------------------------------------------------------
    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        request = self._request(messages, stop, kwargs)
        # a token callback that raises (a model assertion) ends the request at once
        with contextlib.closing(client.stream(self._backend(), request)) as deltas:
            for i, delta in enumerate(deltas):
                chunk = self._chunk(delta, i == 0)
                if run_manager is not None and delta.text:
                    run_manager.on_llm_new_token(delta.text, chunk=chunk)
                yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        request = self._request(messages, stop, kwargs)
        first = True
        async with contextlib.aclosing(client.astream(self._backend(), request)) as deltas:
            async for delta in deltas:
                chunk, first = self._chunk(delta, first), False
                if run_manager is not None and delta.text:
                    await run_manager.on_llm_new_token(delta.text, chunk=chunk)
                yield chunk

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return await agenerate_from_stream(self._astream(messages, stop, run_manager, **kwargs))


@contextlib.contextmanager
def _routing(config: RunnableConfig | None) -> Iterator[None]:
    routes = client.routes_in((config or {}).get("configurable") or {})
    if routes is None:
        yield
        return
    token = _call_routes.set(routes)
    try:
        yield
    finally:
        _call_routes.reset(token)


def _role(message: BaseMessage) -> str:
    if isinstance(message, ChatMessage):
        return message.role
    for cls, role in _ROLES:
        if isinstance(message, cls):
            return role
    raise ValueError(f"ChatAlto: cannot send a {type(message).__name__} to a model")


def _text(message: BaseMessage) -> str:
    """The message's text; refused if it holds anything else (images, tool calls):
    dropping it would change the request silently."""
    if isinstance(message, AIMessage) and (
        message.tool_calls
        or message.invalid_tool_calls
        or message.additional_kwargs.get("tool_calls")
        or message.additional_kwargs.get("function_call")
    ):
        raise ValueError("ChatAlto: messages with tool calls are not supported")
    content = message.content
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        else:
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            raise ValueError(f"ChatAlto: message content must be text; got a {kind!r} block")
    return "".join(parts)
