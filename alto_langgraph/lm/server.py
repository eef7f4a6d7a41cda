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

from .engine import Delta, Engine, SamplingParams

logger = logging.getLogger("alto_langgraph")

#: where the CLI reads the API key when ``--api-key`` is not given (a flag's value is
#: visible to every user of the machine in ``ps``; the environment is not)
API_KEY_ENV = "ALTO_SERVE_LM_API_KEY"
MAX_BODY = 8 << 20
#: the request line and headers together, in bytes, and how many headers
MAX_HEAD = 32 << 10
MAX_HEADERS = 100
#: max_tokens of a chat request that names none
DEFAULT_CHAT = 256
#: file descriptors kept free beyond the connection limit: the engine's own, and one for
#: a connection being turned away with a 503 (a connection the kernel cannot accept for
#: want of one waits unanswered, which is the lock-out the limit exists to prevent)
FD_RESERVE = 16
#: the listening socket's queue of connections not yet accepted
BACKLOG = 128
#: how long a closing connection waits for the client to close its side (see _close)
MAX_LINGER = 1.0

ROUTES = {"/v1/models": "GET", "/v1/completions": "POST", "/v1/chat/completions": "POST"}
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    417: "Expectation Failed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
#: an HTTP token (a method, a header name)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: control characters, which have no place in a header value (tab aside)
_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
#: headers whose repetition would leave the request ambiguous
_SINGLE = {"content-length", "transfer-encoding", "authorization", "expect", "content-type"}
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


class HTTPError(Exception):
    """A request answered with ``status`` and an OpenAI-style error body."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.kind, self.headers, self.code = status, kind, headers or {}, code

    def body(self) -> dict[str, Any]:
        return _error(str(self), self.kind, self.code)


class BadRequest(HTTPError):
    def __init__(self, message: str) -> None:
        super().__init__(400, message)


@dataclasses.dataclass(frozen=True)
class _Request:
    """A generation request, checked."""

    chat: bool
    prompt: str | list[dict[str, str]]  # the messages of a chat
    params: SamplingParams
    stream: bool
    include_usage: bool


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
                await _close(reader, writer, linger=min(MAX_LINGER, self.config.read_timeout))
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
                await _respond(writer, 200, self._models(), timeout)
            else:
                await self._generate(reader, writer, path == "/v1/chat/completions", body)
        except HTTPError as exc:
            with contextlib.suppress(Exception):
                await _respond(writer, exc.status, exc.body(), timeout, exc.headers)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client left: its request (if any) was aborted on the way out
        except Exception as exc:  # the engine failed before anything was sent
            logger.error("serve-lm: the engine failed: %r", exc, exc_info=exc)
            with contextlib.suppress(Exception):
                message = f"{type(exc).__name__}: {exc}"
                await _respond(writer, 500, _error(message, "server_error"), timeout)

    async def _read(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[str, bytes]:
        """The request's path and body, once its head is checked, its client authorized
        and its route known (so that no one makes the server read a body it refuses)."""
        method, path, headers = await _read_head(reader)
        self._authorize(headers)
        allowed = ROUTES.get(path)
        if allowed is None:
            routes = ", ".join(f"{m} {p}" for p, m in ROUTES.items())
            raise HTTPError(404, f"no route {method} {path}; this server has {routes}", "not_found")
        if method != allowed:
            raise HTTPError(
                405, f"{path} takes {allowed}, not {method}", headers={"Allow": allowed}
            )
        length = _body_length(headers)
        if method != "POST":
            return path, b""
        expect = headers.get("expect")
        if expect is not None:
            if expect.lower() != "100-continue":
                raise HTTPError(417, f"unsupported Expect {expect[:100]!r}: only 100-continue")
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # curl waits for it
            await _drain(writer, self.config.read_timeout)
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
            request = _checked(_json_object(body), chat, self.model)
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
            gone = asyncio.ensure_future(_until_closed(reader))
            await asyncio.wait({whole, gone}, return_when=asyncio.FIRST_COMPLETED)
            gone.cancel()
            if not whole.done():
                whole.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await whole
                return
            text, reason, n = whole.result()
            answer = self._whole(rid, chat, text, reason, n)
            await _respond(writer, 200, answer, self.config.read_timeout)

    async def _stream(
        self,
        writer: asyncio.StreamWriter,
        rid: str,
        request: _Request,
        stream: AsyncIterator[Delta],
    ) -> None:
        timeout = self.config.read_timeout
        _write_head(writer, 200, {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        n = 0
        try:
            async for delta in stream:
                n += len(delta.token_ids)
                _event(writer, self._chunk(rid, request.chat, delta))
                await _drain(writer, timeout)  # raises once the client has gone
            if request.include_usage:  # as OpenAI: a last chunk with no choices
                _event(writer, {**self._chunk_base(rid, request.chat), "choices": [], **_usage(n)})
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception as exc:  # headers are out: the error is an event
            logger.error("serve-lm: the engine failed mid-stream: %r", exc, exc_info=exc)
            _event(writer, _error(f"{type(exc).__name__}: {exc}", "server_error"))
        writer.write(b"data: [DONE]\n\n")
        await _drain(writer, timeout)

    def _start(self, request: _Request) -> AsyncIterator[Delta]:
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
            **_usage(n),
        }


# -- the request's head ------------------------------------------------------------------
async def _read_head(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]]:
    """The method, path and headers (names lower-cased), read line by line so that a
    head too long or with too many headers is refused as soon as it is."""
    lines: list[str] = []
    size = 0
    while True:
        try:
            raw = await reader.readline()
        except ValueError:  # one line over the reader's limit
            raise HTTPError(431, f"the request head is over {MAX_HEAD} bytes") from None
        if not raw.endswith(b"\n"):  # the client closed mid-request
            raise asyncio.IncompleteReadError(raw, None)
        size += len(raw)
        if size > MAX_HEAD:
            raise HTTPError(431, f"the request head is over {MAX_HEAD} bytes")
        line = raw.decode("latin-1").removesuffix("\n").removesuffix("\r")
        if not line:
            if lines:
                break
            continue  # blank lines before the request line are allowed (RFC 9112, 2.2)
        lines.append(line)
        if len(lines) > MAX_HEADERS + 1:
            raise HTTPError(431, f"the request has more than {MAX_HEADERS} headers")
    method, path = _request_line(lines[0])
    return method, path, _headers(lines[1:])


def _request_line(line: str) -> tuple[str, str]:
    parts = line.split(" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]):
        raise BadRequest(f"bad request line {line[:200]!r}: expected 'METHOD /path HTTP/1.1'")
    method, target, version = parts
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise BadRequest(f"unsupported HTTP version {version[:20]!r}: this server speaks HTTP/1.1")
    if not target.startswith("/"):
        raise BadRequest(f"bad request target {target[:200]!r}: expected a path like /v1/models")
    return method, target.split("?", 1)[0]


def _headers(lines: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        # a name must be a token: this refuses a line without a colon, a space before
        # the colon and a folded continuation line, all ways to smuggle a header
        if not sep or not _TOKEN.fullmatch(name):
            raise BadRequest(f"bad header line {line[:200]!r}: expected 'Name: value'")
        value = value.strip(" \t")
        if _CTL.search(value):
            raise BadRequest(f"the {name} header holds a control character")
        key = name.lower()
        if key in headers:
            if key in _SINGLE:
                raise BadRequest(f"duplicate {name} header")
            headers[key] += ", " + value
        else:
            headers[key] = value
    return headers


def _body_length(headers: dict[str, str]) -> int:
    if "transfer-encoding" in headers:  # a chunked body is not read: refused, not misread
        raise HTTPError(411, "Transfer-Encoding is not supported: send a Content-Length")
    text = headers.get("content-length")
    if text is None:
        return 0
    if not re.fullmatch(r"[0-9]{1,19}", text):
        raise BadRequest(f"bad Content-Length {text[:50]!r}: expected a number of bytes")
    length = int(text)
    if length > MAX_BODY:
        raise HTTPError(413, f"the body ({length} bytes) is over the limit of {MAX_BODY} bytes")
    return length


def _unauthorized(message: str) -> HTTPError:
    return HTTPError(401, message, headers={"WWW-Authenticate": "Bearer"}, code="invalid_api_key")


# -- the request's body ------------------------------------------------------------------
#: fields accepted only with a value that asks for nothing (None always does): any other
#: asks for what this server cannot do, and is refused rather than ignored
_INERT: dict[str, tuple[Any, ...]] = {
    "tools": ([],),
    "functions": ([],),
    "tool_choice": ("none", "auto"),
    "function_call": ("none", "auto"),
    "parallel_tool_calls": (True, False),
    "logprobs": (False,),
    "top_logprobs": (0,),
    "logit_bias": ({},),
    "presence_penalty": (0, 0.0),
    "frequency_penalty": (0, 0.0),
    "response_format": ({"type": "text"},),
    "echo": (False,),
    "suffix": ("",),
    "best_of": (1,),
}
_PLURAL = {"tools", "functions", "parallel_tool_calls", "logprobs", "top_logprobs"}
#: fields read (or, for user, metadata and store, meaningless here: OpenAI's own
#: bookkeeping) on both endpoints
_FIELDS = {
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "stream",
    "stream_options",
    "seed",
    "user",
    "metadata",
    "store",
    *_INERT,
}
_ROLES = ("system", "user", "assistant")


def _json_object(body: bytes) -> dict[str, Any]:
    if not body:
        raise BadRequest("the body is empty: send a JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the body is not UTF-8") from None
    try:
        obj = json.loads(text, parse_constant=_not_json)
    except RecursionError:
        raise BadRequest("the body is nested too deeply") from None
    except ValueError as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise BadRequest(f"the body must be a JSON object, got {type(obj).__name__}")
    return obj


def _not_json(name: str) -> Any:
    # Python's json reads NaN and Infinity, which JSON has not: a NaN temperature passes
    # every range check, so it is refused here, by name
    raise ValueError(f"{name} is not a JSON value")


def _checked(req: dict[str, Any], chat: bool, served: str) -> _Request:
    route = "/v1/chat/completions" if chat else "/v1/completions"
    known = _FIELDS | ({"messages", "max_completion_tokens"} if chat else {"prompt"})
    unknown = sorted(set(req) - known)
    if unknown:
        names = ", ".join(map(repr, unknown))
        raise BadRequest(f"unknown field {names} for {route}: this server does not take it")
    for name, inert in _INERT.items():
        value = req.get(name)
        # by type too: 0 == False, and logprobs=0 still asks for logprobs
        if value is not None and not any(type(value) is type(v) and value == v for v in inert):
            verb = "are" if name in _PLURAL else "is"
            raise BadRequest(f"{name} {verb} not supported by this server, got {_short(value)}")
    model = _typed(req, "model", str, "a string")
    if model is not None and model != served:
        raise BadRequest(f"model {model!r} is not served here; this serves {served!r}")
    _typed(req, "user", str, "a string")
    _typed(req, "metadata", dict, "an object")
    _typed(req, "store", bool, "true or false")
    _check_n(req.get("n"))
    _check_top_p(req.get("top_p"))
    stream = bool(_typed(req, "stream", bool, "true or false"))
    return _Request(
        chat=chat,
        prompt=_messages(req.get("messages")) if chat else _prompt(req.get("prompt")),
        params=SamplingParams(
            max_tokens=_max_tokens(req, chat),
            temperature=_temperature(req.get("temperature")),
            stop=_stops(req.get("stop")),
            seed=_seed(req.get("seed")),
        ),
        stream=stream,
        include_usage=_include_usage(req.get("stream_options"), stream),
    )


def _typed(req: dict[str, Any], name: str, kind: type, what: str) -> Any:
    value = req.get(name)
    if value is not None and not isinstance(value, kind):
        raise BadRequest(f"{name} must be {what}, got {_short(value)}")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is no count


def _number(name: str, value: Any, low: float, high: float) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise BadRequest(f"{name} must be a finite number, got {_short(value)}")
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        number = math.inf
    if not math.isfinite(number):
        raise BadRequest(f"{name} must be a finite number, got {_short(value)}")
    if not low <= number <= high:
        raise BadRequest(f"{name} must be between {low:g} and {high:g}, got {_short(value)}")
    return number


def _max_tokens(req: dict[str, Any], chat: bool) -> int:
    # chat clients send max_completion_tokens now; OpenAI's defaults otherwise
    for name in ("max_completion_tokens", "max_tokens"):
        value = req.get(name)
        if value is not None:
            if not _is_int(value) or value < 1:
                raise BadRequest(f"{name} must be a positive int, got {_short(value)}")
            return value
    return DEFAULT_CHAT if chat else 16


def _temperature(value: Any) -> float:
    # greedy by default, unlike OpenAI's 1: the transformers engine decodes greedily only
    return 0.0 if value is None else _number("temperature", value, 0, 2)


def _check_top_p(value: Any) -> None:
    if value is not None and _number("top_p", value, 0, 1) != 1:
        raise BadRequest(f"top_p must be 1: this server does not do nucleus sampling, got {value}")


def _check_n(value: Any) -> None:
    if value is None:
        return
    if not _is_int(value):
        raise BadRequest(f"n must be an int, got {_short(value)}")
    if value != 1:
        raise BadRequest("n must be 1: this server makes one choice per request")


def _seed(value: Any) -> int | None:
    if value is None:
        return None
    if not _is_int(value) or not -(1 << 63) <= value < 1 << 63:
        raise BadRequest(f"seed must be an integer of 64 bits, got {_short(value)}")
    return value


def _stops(stop: Any) -> tuple[str, ...]:
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise BadRequest(f"stop must be a non-empty string or a list of them, got {_short(stop)}")
    return tuple(stops)


def _include_usage(options: Any, stream: bool) -> bool:
    if options is None:
        return False
    if not stream:
        raise BadRequest("stream_options is only allowed with stream: true")
    if not isinstance(options, dict) or set(options) - {"include_usage"}:
        raise BadRequest(f"stream_options takes only include_usage, got {_short(options)}")
    usage = options.get("include_usage", False)
    if not isinstance(usage, bool):
        raise BadRequest(f"stream_options.include_usage must be true or false, got {usage!r}")
    return usage


def _prompt(prompt: Any) -> str:
    if not isinstance(prompt, str):
        raise BadRequest(f"prompt must be a string (one prompt per request), got {_short(prompt)}")
    return prompt


def _messages(messages: Any) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise BadRequest(f"messages must be a non-empty list, got {_short(messages)}")
    return [_message(f"messages[{i}]", m) for i, m in enumerate(messages)]


def _message(where: str, message: Any) -> dict[str, str]:
    if not isinstance(message, dict):
        raise BadRequest(f"{where} must be an object with a role and a content")
    # name only labels a participant, which chat templates do not show; anything else
    # (tool_calls, tool_call_id, audio) needs what this server does not have
    extra = sorted(set(message) - {"role", "content", "name"})
    if extra:
        names = ", ".join(map(repr, extra))
        raise BadRequest(f"{where} has unsupported field {names}: it takes role, content, name")
    role = message.get("role")
    if role not in _ROLES:
        roles = ", ".join(map(repr, _ROLES))
        raise BadRequest(f"{where}.role must be one of {roles}, got {_short(role)}")
    if not isinstance(message.get("name", ""), str):
        raise BadRequest(f"{where}.name must be a string")
    return {"role": role, "content": _content(where, message.get("content"))}


def _content(where: str, content: Any) -> str:
    """A chat message's text: a string, or a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        for p in content
    ):
        return "".join(p["text"] for p in content)
    raise BadRequest(
        f"{where}.content must be text: a string or a list of text parts, got {_short(content)}"
    )


def _short(value: Any) -> str:
    """The value as the client wrote it, for an error message (cut short)."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        text = f"a {type(value).__name__}"
    return text if len(text) <= 80 else text[:77] + "..."


# -- the answer ----------------------------------------------------------------------------
def _error(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"message": message, "type": kind}
    if code is not None:
        error["code"] = code
    return {"error": error}


def _usage(completion_tokens: int) -> dict[str, Any]:
    return {"usage": {"completion_tokens": completion_tokens}}


def _write_head(writer: asyncio.StreamWriter, status: int, headers: dict[str, str]) -> None:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))


async def _respond(
    writer: asyncio.StreamWriter,
    status: int,
    obj: Any,
    timeout: float,
    headers: dict[str, str] | None = None,
) -> None:
    data = json.dumps(obj).encode()
    head = {"Content-Type": "application/json", "Content-Length": str(len(data))}
    _write_head(writer, status, {**head, **(headers or {})})
    writer.write(data)
    await _drain(writer, timeout)


def _event(writer: asyncio.StreamWriter, obj: Any) -> None:
    writer.write(b"data: " + json.dumps(obj).encode() + b"\n\n")


async def _drain(writer: asyncio.StreamWriter, timeout: float) -> None:
    """Wait for the client to take what was written; one that takes nothing for
    ``timeout`` counts as gone (else it would hold its connection, and its request in
    the engine, for ever)."""
    try:
        async with asyncio.timeout(timeout):
            await writer.drain()
    except TimeoutError:
        raise ConnectionError(f"the client read nothing for {timeout:g} s") from None


async def _close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, linger: float) -> None:
    """Close so that the answer arrives: send EOF, then read and drop what the client
    still sends until it closes too or ``linger`` passes. (Closing with part of a request
    body unread makes the kernel reset the connection, and a reset can destroy the
    answer before the client has read it.)"""
    with contextlib.suppress(Exception):
        if writer.can_write_eof():
            writer.write_eof()
        async with asyncio.timeout(linger):
            while await reader.read(65536):
                pass
    writer.close()
    try:
        async with asyncio.timeout(linger):
            await writer.wait_closed()
    except Exception:  # a client that reads nothing: what it has not taken is dropped
        writer.transport.abort()


# -- generation helpers ------------------------------------------------------------------
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
        _error(f"the server is at its limit of {limit} connections; retry", "server_error")
    )
    head = f"HTTP/1.1 503 {_REASONS[503]}\r\nConnection: close\r\nRetry-After: 1\r\n"
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
