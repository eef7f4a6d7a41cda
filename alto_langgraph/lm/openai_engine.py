"""The ``openai`` engine: any OpenAI-compatible streaming server (vLLM's, SGLang's,
``transformers serve``, alto's own ``alto-langgraph serve-lm``).

Chats go to ``/v1/chat/completions`` (the server applies its model's template), raw
prompts to ``/v1/completions``, both with ``"stream": true``; each server-sent event
becomes a ``Delta`` (text only: the API does not return token ids). A 400 answer is the
server refusing the input: it raises ``ValueError`` with the server's message, failing
that request only. Leaving the stream early closes the connection, which is how such
servers learn to abort a request.
"""

from __future__ import annotations

import collections
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from ..errors import EngineError
from .engine import Delta, Engine, EngineStats, SamplingParams


class OpenAIEngine(Engine):
    """``base_url``: the server's root (``http://host:port``, with or without ``/v1``);
    ``model``: the model name it serves; ``api_key``: sent as a bearer token."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 600.0,
        max_context: int = 8192,
    ) -> None:
        import httpx

        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"openai engine: base_url must be an http(s) URL, got {base_url!r}")
        self.base_url = base_url.rstrip("/").removesuffix("/v1") + "/v1"
        self.model = model
        self.max_context = max_context
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = httpx.Timeout(timeout, connect=10.0)
        self._headers = headers
        #: id(loop) -> (loop, its httpx client): a client is bound to one event loop
        self._clients: dict[int, tuple[Any, Any]] = {}
        self._active: dict[str, Any] = {}  # request id -> its open response
        self._aborted: set[str] = set()
        self._counts = collections.Counter[str]()
        self._started = time.perf_counter()

    def chat(
        self, messages: list[dict[str, str]], params: SamplingParams, request_id: str
    ) -> AsyncIterator[Delta]:
        return self._stream("chat/completions", {"messages": messages}, params, request_id)

    def generate(
        self, prompt: str, params: SamplingParams, request_id: str
    ) -> AsyncIterator[Delta]:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"{self.name}: the prompt is empty")
        return self._stream("completions", {"prompt": prompt}, params, request_id)

    async def _stream(
        self, route: str, body: dict[str, Any], params: SamplingParams, request_id: str
    ) -> AsyncIterator[Delta]:
        import asyncio

        import httpx

        loop = asyncio.get_running_loop()
        for key, (other, _) in list(self._clients.items()):
            if other.is_closed():  # its client went with it
                del self._clients[key]
        entry = self._clients.get(id(loop))
        if entry is None:
            client = httpx.AsyncClient(timeout=self._timeout, headers=self._headers)
            self._clients[id(loop)] = (loop, client)
        else:
            client = entry[1]
        payload = {
            "model": self.model,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "stream": True,
            **body,
        }
        if params.stop:
            payload["stop"] = list(params.stop)
        if params.seed is not None:
            payload["seed"] = params.seed
        chat = route.startswith("chat")
        self._counts["requests"] += 1
        self._active[request_id] = None  # abort() before the answer starts: marked only
        try:
            async with client.stream("POST", f"{self.base_url}/{route}", json=payload) as resp:
                if request_id in self._aborted:  # closing the connection aborts it there
                    yield Delta("", (), "abort")
                    return
                if resp.status_code != 200:
                    await resp.aread()
                    raise _http_error(resp)
                self._active[request_id] = resp
                first = True
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":  # before a finish_reason: cut short
                        break
                    event = json.loads(data)
                    if "error" in event:  # vLLM and SGLang report a failure mid-stream so
                        error = event["error"]
                        message = error.get("message") if isinstance(error, dict) else error
                        raise EngineError(f"{self.name}: the server failed: {message}")
                    choice = (event.get("choices") or [{}])[0]
                    text = (
                        (choice.get("delta") or {}).get("content") if chat else choice.get("text")
                    )
                    reason = choice.get("finish_reason")
                    cached = _cached_tokens(event) if first else 0
                    first = False
                    self._counts["chunks"] += 1
                    yield Delta(text or "", (), _reason(reason), cached)
                    if reason:
                        return
                raise EngineError(f"{self.name}: the stream ended before the generation did")
        except (httpx.HTTPError, EngineError) as exc:
            if request_id in self._aborted:  # abort() closed its stream
                yield Delta("", (), "abort")
                return
            if isinstance(exc, EngineError):
                raise
            raise EngineError(f"{self.name}: {self.base_url}: {exc!r}") from exc
        finally:
            self._active.pop(request_id, None)
            self._aborted.discard(request_id)

    async def abort(self, request_id: str) -> None:
        if request_id in self._active:
            self._aborted.add(request_id)
            resp = self._active[request_id]
            if resp is not None:
                await resp.aclose()

    def stats(self) -> EngineStats:
        c = self._counts
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        return EngineStats(
            engine=self.name,
            simulated=False,
            waiting=0,
            running=len(self._active),
            max_running=0,  # the server's batch is not visible from here
            requests=c["requests"],
            prompt_tokens=0,
            cached_tokens=0,
            generated_tokens=c["chunks"],  # chunks (about one token each)
            tokens_per_s=c["chunks"] / elapsed,
        )

    async def close(self) -> None:
        clients, self._clients = self._clients, {}
        for _, client in clients.values():
            try:
                await client.aclose()
            except RuntimeError:  # bound to a loop that is gone
                pass


def _http_error(resp: Any) -> Exception:
    try:
        message = resp.json()["error"]["message"]
    except Exception:
        message = resp.text[:500]
    if resp.status_code == 400:
        return ValueError(f"openai engine: the server refused the request: {message}")
    return EngineError(f"openai engine: HTTP {resp.status_code}: {message}")


def _reason(reason: Any) -> Any:
    if reason is None:
        return None
    return reason if reason in ("stop", "length") else "stop"


def _cached_tokens(event: dict[str, Any]) -> int:
    usage = event.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    return int(details.get("cached_tokens") or event.get("alto_cached_tokens") or 0)
