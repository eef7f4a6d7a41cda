"""An OpenAI-compatible HTTP server in front of any alto engine.

    alto-langgraph serve-lm --engine transformers --model smollm2-135m --port 8000

Endpoints: ``GET /v1/models``, ``POST /v1/completions`` and ``POST /v1/chat/completions``,
with ``"stream": true`` answered as server-sent events (``data: {...}`` chunks, then
``data: [DONE]``), as OpenAI, vLLM and SGLang servers do. A client that disconnects
mid-stream aborts its request in the engine.

It is plain asyncio (HTTP/1.1, one request per connection), so it needs no web
framework: it exists to serve alto's engines to other processes and to test the
``openai`` engine against a real server. Its defences (``ServerConfig``):

- ``api_key``: every request must carry ``Authorization: Bearer <key>`` (compared in
  constant time), else 401. Listening beyond loopback without a key is refused at start
  unless ``insecure_no_auth`` says that is meant.
- ``read_timeout``: the whole request (line, headers, body) must arrive within it, else
  408 and the connection closes; a client that takes none of a write for that long is
  dropped too. Generation is not timed: a stream lasts as long as the engine takes.
- ``max_connections``: a connection beyond it gets an immediate 503 and is closed (the
  limit is lowered to what the open-file limit leaves room for), so idle connections
  cannot lock clients out; with the read timeout, an idle flood clears itself.
- every header and field is checked: a client's mistake is a 4xx whose
  ``{"error": {"message", "type"}}`` names it, and a field this server cannot honour
  (tools, ``top_p`` < 1, penalties, ``n`` > 1) is refused rather than ignored. A 500 is
  only an engine that failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import ipaddress
import json
import logging
import math
import os
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from .engine import Delta, Engine
from .http import (
    MAX_HEAD,
    MAX_LINGER,
    REASONS,
    BadRequest,
    HTTPError,
    body_length,
    close_connection,
    drain,
    error_body,
    read_head,
    respond,
    send_event,
    until_closed,
    write_head,
)
from .openai_api import Request, checked, json_object, usage

logger = logging.getLogger("alto_langgraph")

#: where the CLI reads the API key when ``--api-key`` is not given (a flag's value is
#: visible to every user of the machine in ``ps``; the environment is not)
API_KEY_ENV = "ALTO_SERVE_LM_API_KEY"
#: file descriptors kept free beyond the connection limit: the engine's own, and one for
#: a connection being turned away with a 503 (a connection the kernel cannot accept for
#: want of one waits unanswered, which is the lock-out the limit exists to prevent)
FD_RESERVE = 16
#: the listening socket's queue of connections not yet accepted
BACKLOG = 128

ROUTES = {"/v1/models": "GET", "/v1/completions": "POST", "/v1/chat/completions": "POST"}
#: an API key: visible ASCII, so that it travels in a header unchanged
_KEY = re.compile(r"[\x21-\x7e]+")


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """How the server defends itself (see the module's docstring)."""

    api_key: str | None = None
    insecure_no_auth: bool = False
    read_timeout: float = 10.0
    max_connections: int = 256

    def __post_init__(self) -> None:
        if self.api_key is not None and not _KEY.fullmatch(self.api_key):
            raise ValueError("the API key must be non-empty visible ASCII, without spaces")
        t = self.read_timeout
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0 < t < math.inf:
            raise ValueError(f"the read timeout must be a number of seconds > 0, got {t!r}")
        n = self.max_connections
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"max connections must be an int >= 1, got {n!r}")

    def check_host(self, host: str) -> None:
        """Refuse to serve beyond loopback without an API key, unless that is meant."""
        if self.api_key is not None or self.insecure_no_auth or _is_loopback(host):
            return
        raise ValueError(
            f"refusing to listen on {host!r} without an API key: anyone who can reach it "
            f"could use the engine. Set one with --api-key (or ${API_KEY_ENV}), listen on "
            "127.0.0.1, or pass --insecure-no-auth if an open server is meant"
        )


class OpenAIServer:
    def __init__(self, engine: Engine, model: str, config: ServerConfig | None = None) -> None:
        self.engine = engine
        self.model = model
        self.config = config or ServerConfig()
        #: the connection limit in force: config's, lowered at start() to fit the
        #: open-file limit
        self.max_connections = self.config.max_connections
        #: connections being served now (not counting those turned away)
        self.connections = 0
        self._listeners: list[socket.socket] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped: asyncio.Future[None] | None = None
        self._warned_fds = False

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen; returns the port (a free one when ``port`` is 0)."""
        self.config.check_host(host)
        self.max_connections = _fit_fd_limit(self.config.max_connections)
        loop = asyncio.get_running_loop()
        self._listeners = _listen(host, port)
        self._stopped = loop.create_future()
        for listener in self._listeners:
            loop.add_reader(listener.fileno(), self._accept, listener)
        return self._listeners[0].getsockname()[1]

    async def serve_forever(self) -> None:
        assert self._stopped is not None, "start() first"
        try:
            await self._stopped
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop listening (connections being served run to their end)."""
        loop = asyncio.get_running_loop()
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            loop.remove_reader(listener.fileno())
            listener.close()
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)

    # -- connections -----------------------------------------------------------------------
    # asyncio.start_server would accept every waiting connection before any of them is
    # answered, so a flood beyond the limit would hold a file descriptor each until its
    # 503 had gone, and under a low open-file limit run out of them: accept() then fails
    # and every client waits. Accepting here, a connection beyond the limit is answered
    # and closed before the next is accepted.
    def _accept(self, listener: socket.socket) -> None:
        """Accept the connections waiting on ``listener`` (called when it is readable)."""
        loop = asyncio.get_running_loop()
        for _ in range(64):  # then let the loop run: more are accepted on its next turn
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:  # out of file descriptors (or memory): wait a little
                self._pause(listener, exc)
                return
            if self.connections >= self.max_connections:
                _turn_away(conn, self.max_connections)
                continue
            self.connections += 1
            task = loop.create_task(self._connection(conn))
            self._tasks.add(task)  # held: the loop keeps only weak references to tasks
            task.add_done_callback(self._tasks.discard)

    def _pause(self, listener: socket.socket, exc: OSError) -> None:
        if not self._warned_fds:
            self._warned_fds = True
            logger.warning("serve-lm: cannot accept connections (%s); retrying", exc)
        loop = asyncio.get_running_loop()
        loop.remove_reader(listener.fileno())

        def resume() -> None:
            if listener in self._listeners:  # not closed meanwhile
                loop.add_reader(listener.fileno(), self._accept, listener)

        loop.call_later(0.1, resume)

    async def _connection(self, conn: socket.socket) -> None:
        try:
            # the reader's limit bounds one line of the head (a longer one is a 431)
            reader, writer = await asyncio.open_connection(sock=conn, limit=MAX_HEAD)
        except OSError:
            conn.close()
            self.connections -= 1
            return
        try:
            await self._serve(reader, writer)
        finally:
            try:
                await close_connection(
                    reader, writer, linger=min(MAX_LINGER, self.config.read_timeout)
                )
            finally:
                self.connections -= 1

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        timeout = self.config.read_timeout
        try:
            try:
                async with asyncio.timeout(timeout):
                    path, body = await self._read(reader, writer)
            except TimeoutError:
                raise HTTPError(408, f"the request did not arrive within {timeout:g} s") from None
            if path == "/v1/models":
                await respond(writer, 200, self._models(), timeout)
            else:
                await self._generate(reader, writer, path == "/v1/chat/completions", body)
        except HTTPError as exc:
            with contextlib.suppress(Exception):
                await respond(writer, exc.status, exc.body(), timeout, exc.headers)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client left: its request (if any) was aborted on the way out
        except Exception as exc:  # the engine failed before anything was sent
            logger.error("serve-lm: the engine failed: %r", exc, exc_info=exc)
            with contextlib.suppress(Exception):
                message = f"{type(exc).__name__}: {exc}"
                await respond(writer, 500, error_body(message, "server_error"), timeout)

    async def _read(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[str, bytes]:
        """The request's path and body, once its head is checked, its client authorized
        and its route known (so that no one makes the server read a body it refuses)."""
        method, path, headers = await read_head(reader)
        self._authorize(headers)
        allowed = ROUTES.get(path)
        if allowed is None:
            routes = ", ".join(f"{m} {p}" for p, m in ROUTES.items())
            raise HTTPError(404, f"no route {method} {path}; this server has {routes}", "not_found")
        if method != allowed:
            raise HTTPError(
                405, f"{path} takes {allowed}, not {method}", headers={"Allow": allowed}
            )
        length = body_length(headers)
        if method != "POST":
            return path, b""
        expect = headers.get("expect")
        if expect is not None:
            if expect.lower() != "100-continue":
                raise HTTPError(417, f"unsupported Expect {expect[:100]!r}: only 100-continue")
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # curl waits for it
            await drain(writer, self.config.read_timeout)
        return path, await reader.readexactly(length)

    def _authorize(self, headers: dict[str, str]) -> None:
        key = self.config.api_key
        if key is None:
            return
        given = headers.get("authorization")
        if given is None:
            raise _unauthorized("no API key: send the header 'Authorization: Bearer <key>'")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("the Authorization header must be 'Bearer <key>'")
        # constant time: how far a guess matches must not show in the answer's timing
        if not hmac.compare_digest(token.strip().encode("latin-1"), key.encode()):
            raise _unauthorized("incorrect API key")

    # -- generation ------------------------------------------------------------------------
    async def _generate(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, chat: bool, body: bytes
    ) -> None:
        try:
            request = checked(json_object(body), chat, self.model)
            deltas = self._start(request)
            first = await anext(deltas)  # the engine's own checks fail here
        except ValueError as exc:
            # how SamplingParams and engines refuse input (a prompt over the context)
            raise BadRequest(str(exc)) from None
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        async with contextlib.aclosing(_chain(first, deltas)) as stream:
            if request.stream:
                await self._stream(writer, rid, request, stream)
                return
            # one answer at the end: watch the connection meanwhile, so that a client
            # that leaves aborts its request as a streaming one does
            whole = asyncio.ensure_future(_collect(stream))
            gone = asyncio.ensure_future(until_closed(reader))
            await asyncio.wait({whole, gone}, return_when=asyncio.FIRST_COMPLETED)
            gone.cancel()
            if not whole.done():
                whole.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await whole
                return
            text, reason, n = whole.result()
            answer = self._whole(rid, chat, text, reason, n)
            await respond(writer, 200, answer, self.config.read_timeout)

    async def _stream(
        self,
        writer: asyncio.StreamWriter,
        rid: str,
        request: Request,
        stream: AsyncIterator[Delta],
    ) -> None:
        timeout = self.config.read_timeout
        write_head(writer, 200, {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        n = 0
        try:
            async for delta in stream:
                n += len(delta.token_ids)
                send_event(writer, self._chunk(rid, request.chat, delta))
                await drain(writer, timeout)  # raises once the client has gone
            if request.include_usage:  # as OpenAI: a last chunk with no choices
                send_event(
                    writer, {**self._chunk_base(rid, request.chat), "choices": [], **usage(n)}
                )
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception as exc:  # headers are out: the error is an event
            logger.error("serve-lm: the engine failed mid-stream: %r", exc, exc_info=exc)
            send_event(writer, error_body(f"{type(exc).__name__}: {exc}", "server_error"))
        writer.write(b"data: [DONE]\n\n")
        await drain(writer, timeout)

    def _start(self, request: Request) -> AsyncIterator[Delta]:
        """The engine's delta stream for the request (a chat goes to the engine as a
        chat: an engine that proxies a server keeps the server's template)."""
        rid = f"srv-{uuid.uuid4().hex}"
        if request.chat:
            return self.engine.chat(request.prompt, request.params, rid)  # type: ignore[arg-type]
        return self.engine.generate(request.prompt, request.params, rid)  # type: ignore[arg-type]

    # -- answers ---------------------------------------------------------------------------
    def _models(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": self.model, "object": "model", "owned_by": "alto"}],
        }

    def _chunk_base(self, rid: str, chat: bool) -> dict[str, Any]:
        obj = "chat.completion.chunk" if chat else "text_completion"
        return {"id": rid, "object": obj, "created": int(time.time()), "model": self.model}

    def _chunk(self, rid: str, chat: bool, delta: Delta) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "finish_reason": delta.finish_reason}
        if chat:
            choice["delta"] = {"role": "assistant", "content": delta.text}
        else:
            choice["text"] = delta.text
        out = self._chunk_base(rid, chat)
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
            **usage(n),
        }


def _unauthorized(message: str) -> HTTPError:
    return HTTPError(401, message, headers={"WWW-Authenticate": "Bearer"}, code="invalid_api_key")


async def _collect(stream: AsyncIterator[Delta]) -> tuple[str, Any, int]:
    text, reason, n = "", None, 0
    async for delta in stream:
        text, reason, n = text + delta.text, delta.finish_reason, n + len(delta.token_ids)
    return text, reason, n


async def _chain(first: Delta, rest: AsyncIterator[Delta]) -> AsyncIterator[Delta]:
    try:
        yield first
        if not first.finished:
            async for delta in rest:
                yield delta
    finally:
        await rest.aclose()  # type: ignore[attr-defined]


# -- resources -------------------------------------------------------------------------------
def _listen(host: str, port: int) -> list[socket.socket]:
    """Listening sockets on every address of ``host``, as asyncio.start_server makes."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    listeners: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            listener = socket.socket(family, kind, proto)
            listeners.append(listener)
            if os.name == "posix":  # restart at once on a port a dead server held
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # "::" is IPv6 only, as with asyncio
                listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            listener.bind(address)
            listener.listen(BACKLOG)
            listener.setblocking(False)
    except BaseException:
        for listener in listeners:
            listener.close()
        raise
    return listeners


def _turn_away(conn: socket.socket, limit: int) -> None:
    """Answer 503 and close, at once (the connection holds its descriptor no longer)."""
    body = json.dumps(
        error_body(f"the server is at its limit of {limit} connections; retry", "server_error")
    )
    head = f"HTTP/1.1 503 {REASONS[503]}\r\nConnection: close\r\nRetry-After: 1\r\n"
    head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    with contextlib.suppress(OSError):
        conn.setblocking(False)
        conn.send((head + body).encode())  # a fresh connection's send buffer takes it whole
        conn.shutdown(socket.SHUT_WR)
        # drop what the client has sent already: closing with it unread would reset the
        # connection, which can destroy the answer before the client reads it
        while conn.recv(65536):
            pass
    conn.close()


def _is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is a loopback one ("" or 0.0.0.0: all
    interfaces, so not)."""
    try:
        infos = socket.getaddrinfo(host or None, 0, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ValueError(f"cannot resolve the host {host!r}: {exc}") from None
    addresses = {info[4][0].split("%", 1)[0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


def _fit_fd_limit(wanted: int) -> int:
    """``wanted``, or fewer where the open-file limit leaves no room for that many."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return wanted  # no such limit here (Windows)
    if soft == resource.RLIM_INFINITY:
        return wanted
    in_use = 0
    for fds in ("/proc/self/fd", "/dev/fd"):
        with contextlib.suppress(OSError):
            in_use = len(os.listdir(fds))
            break
    room = max(1, soft - in_use - FD_RESERVE)
    if room < wanted:
        logger.warning(
            "serve-lm: max connections lowered from %d to %d: the open-file limit "
            "(ulimit -n: %d, %d in use) leaves room for no more",
            wanted,
            room,
            soft,
            in_use,
        )
    return min(wanted, room)
