"""An OpenAI-compatible HTTP server in front of any alto engine.

    alto-langgraph serve-lm --engine transformers --model smollm2-135m --port 8000

Endpoints: ``GET /v1/models``, ``POST /v1/completions`` and ``POST /v1/chat/completions``,
with ``"stream": true`` answered as server-sent events (``data: {...}`` chunks, then
``data: [DONE]``), as OpenAI, vLLM and SGLang servers do. Bad input gets a 400 with
``{"error": {"message", "type"}}`` naming what was wrong; a client that disconnects
mid-stream aborts its request in the engine.

It is plain asyncio (HTTP/1.1, one request per connection), so it needs no web
framework: it exists to serve alto's engines to other processes and to test the
``openai`` engine against a real server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from .engine import Delta, Engine, SamplingParams

MAX_BODY = 8 << 20
#: max_tokens of a chat request that names none
DEFAULT_CHAT = 256


class BadRequest(ValueError):
    pass


class OpenAIServer:
    def __init__(self, engine: Engine, model: str) -> None:
        self.engine = engine
        self.model = model
        self._server: asyncio.AbstractServer | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen; returns the port (a free one when ``port`` is 0)."""
        self._server = await asyncio.start_server(self._handle, host, port)
        return self._server.sockets[0].getsockname()[1]

    async def serve_forever(self) -> None:
        assert self._server is not None
        async with self._server:
            await self._server.serve_forever()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    # -- HTTP ------------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            method, path, body = await _read_request(reader)
            if method == "GET" and path == "/v1/models":
                data = [{"id": self.model, "object": "model", "owned_by": "alto"}]
                await _respond(writer, 200, {"object": "list", "data": data})
            elif method == "POST" and path in ("/v1/completions", "/v1/chat/completions"):
                await self._generate(reader, writer, path.endswith("chat/completions"), body)
            else:
                await _respond(writer, 404, _error(f"no route {method} {path}", "not_found"))
        except BadRequest as exc:
            await _respond(writer, 400, _error(str(exc), "invalid_request_error"))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client left: its request (if any) was aborted on the way out
        except Exception as exc:  # the engine failed before anything was sent
            with contextlib.suppress(Exception):
                await _respond(writer, 500, _error(f"{type(exc).__name__}: {exc}", "server_error"))
        finally:
            with contextlib.suppress(Exception):
                writer.close()
                await writer.wait_closed()

    async def _generate(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, chat: bool, body: bytes
    ) -> None:
        try:
            req = json.loads(body or b"{}")
        except ValueError as exc:
            raise BadRequest(f"the body is not JSON: {exc}") from None
        if not isinstance(req, dict):
            raise BadRequest("the body must be a JSON object")
        for unsupported in ("tools", "functions", "logprobs"):
            if req.get(unsupported):
                raise BadRequest(f"{unsupported} are not supported by this server")
        if req.get("n") not in (None, 1):
            raise BadRequest("n must be 1: this server makes one choice per request")
        if req.get("model", self.model) != self.model:
            raise BadRequest(
                f"model {req.get('model')!r} is not served here; this serves {self.model!r}"
            )
        try:
            # chat clients send max_completion_tokens now; OpenAI's defaults otherwise
            limit = req.get("max_completion_tokens")
            if limit is None:
                limit = req.get("max_tokens")
            params = SamplingParams(
                max_tokens=int(limit) if limit is not None else (DEFAULT_CHAT if chat else 16),
                temperature=float(req.get("temperature") or 0.0),
                stop=_stops(req.get("stop")),
            )
            deltas = self._start(req, chat, params)
            first = await anext(deltas)  # the engine's own checks fail here, as a 400
        except (ValueError, TypeError) as exc:
            raise BadRequest(str(exc)) from None
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        async with contextlib.aclosing(_chain(first, deltas)) as stream:
            if req.get("stream"):
                await _head(writer, 200, "text/event-stream")
                try:
                    async for delta in stream:
                        _event(writer, self._chunk(rid, chat, delta))
                        await writer.drain()  # raises once the client has gone
                except (ConnectionError, asyncio.CancelledError):
                    raise
                except Exception as exc:  # headers are out: the error is an event
                    _event(writer, _error(f"{type(exc).__name__}: {exc}", "server_error"))
                writer.write(b"data: [DONE]\n\n")
                await writer.drain()
                return
            # one answer at the end: watch the connection meanwhile, so that a client
            # that leaves aborts its request as a streaming one does
            whole = asyncio.ensure_future(_collect(stream))
            gone = asyncio.ensure_future(_until_closed(reader))
            await asyncio.wait({whole, gone}, return_when=asyncio.FIRST_COMPLETED)
            gone.cancel()
            if not whole.done():
                whole.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await whole
                return
            text, reason, n = whole.result()
            await _respond(writer, 200, self._whole(rid, chat, text, reason, n))

    def _start(self, req: dict[str, Any], chat: bool, params: SamplingParams) -> Any:
        """The engine's delta stream for the request (a chat goes to the engine as a
        chat: an engine that proxies a server keeps the server's template)."""
        rid = f"srv-{uuid.uuid4().hex}"
        if not chat:
            prompt = req.get("prompt")
            if not isinstance(prompt, str):
                raise BadRequest("prompt must be a string")
            return self.engine.generate(prompt, params, rid)
        messages = req.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages must be a non-empty list")
        chat_messages = [
            {"role": str(m.get("role", "user")), "content": _content(m)}
            if isinstance(m, dict)
            else _content(m)
            for m in messages
        ]
        return self.engine.chat(chat_messages, params, rid)  # type: ignore[arg-type]

    def _chunk(self, rid: str, chat: bool, delta: Delta) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "finish_reason": delta.finish_reason}
        if chat:
            choice["delta"] = {"role": "assistant", "content": delta.text}
        else:
            choice["text"] = delta.text
        obj = "chat.completion.chunk" if chat else "text_completion"
        out = {"id": rid, "object": obj, "created": int(time.time()), "model": self.model}
        if delta.cached_tokens:
            out["alto_cached_tokens"] = delta.cached_tokens
        return {**out, "choices": [choice]}

    def _whole(self, rid: str, chat: bool, text: str, reason: Any, n: int) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "finish_reason": reason}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        return {
            "id": rid,
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [choice],
            "usage": {"completion_tokens": n},
        }


async def _until_closed(reader: asyncio.StreamReader) -> None:
    """Returns once the client has closed the connection (anything it sends meanwhile
    is ignored; a client that shuts down only its sending side counts as gone)."""
    with contextlib.suppress(ConnectionError):
        while await reader.read(65536):
            pass


async def _collect(stream: AsyncIterator[Delta]) -> tuple[str, Any, int]:
    text, reason, n = "", None, 0
    async for delta in stream:
        text, reason, n = text + delta.text, delta.finish_reason, n + len(delta.token_ids)
    return text, reason, n


def _event(writer: asyncio.StreamWriter, obj: Any) -> None:
    writer.write(b"data: " + json.dumps(obj).encode() + b"\n\n")


async def _chain(first: Delta, rest: AsyncIterator[Delta]) -> AsyncIterator[Delta]:
    try:
        yield first
        if not first.finished:
            async for delta in rest:
                yield delta
    finally:
        await rest.aclose()  # type: ignore[attr-defined]


def _content(message: Any) -> str:
    """A chat message's text: a string, or a list of text parts."""
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        for p in content
    ):
        return "".join(p["text"] for p in content)
    raise BadRequest("each message needs a role and a content of text (a string or text parts)")


def _stops(stop: Any) -> tuple[str, ...]:
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,)
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return tuple(stop)
    raise BadRequest("stop must be a string or a list of strings")


def _error(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind}}


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, _ = lines[0].split(" ", 2)
    except ValueError:
        raise BadRequest(f"bad request line {lines[0]!r}") from None
    headers = {
        k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)
    }
    try:
        length = int(headers.get("content-length") or 0)
    except ValueError:
        raise BadRequest(f"bad Content-Length {headers.get('content-length')!r}") from None
    if length > MAX_BODY:
        raise BadRequest(f"the body is over {MAX_BODY} bytes")
    body = await reader.readexactly(length) if length else b""
    return method, target.split("?", 1)[0], body


async def _head(
    writer: asyncio.StreamWriter, status: int, content_type: str, length: int | None = None
) -> None:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 500: "Internal Server Error"}.get(
        status, "Error"
    )
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {content_type}", "Connection: close"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    else:
        lines.append("Cache-Control: no-cache")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()


async def _respond(writer: asyncio.StreamWriter, status: int, obj: Any) -> None:
    data = json.dumps(obj).encode()
    await _head(writer, status, "application/json", len(data))
    writer.write(data)
    await writer.drain()
