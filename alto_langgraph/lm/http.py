"""The HTTP/1.1 that ``serve-lm`` speaks: one request per connection, read with limits
(the head's size and header count, the body's length), answered with JSON or
server-sent events, and closed so that the answer arrives. Every error is an
``HTTPError``, answered with its status and an OpenAI-style error body."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from typing import Any

#: the most a request's body may hold, in bytes
MAX_BODY = 8 << 20
#: the request line and headers together, in bytes, and how many headers
MAX_HEAD = 32 << 10
MAX_HEADERS = 100
#: how long a closing connection waits for the client to close its side
#: (``close_connection``)
MAX_LINGER = 1.0
REASONS = {
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
        return error_body(str(self), self.kind, self.code)


class BadRequest(HTTPError):
    def __init__(self, message: str) -> None:
        super().__init__(400, message)


# -- the request's head ------------------------------------------------------------------
async def read_head(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]]:
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


def body_length(headers: dict[str, str]) -> int:
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


# -- the answer ----------------------------------------------------------------------------
def error_body(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"message": message, "type": kind}
    if code is not None:
        error["code"] = code
    return {"error": error}


def write_head(writer: asyncio.StreamWriter, status: int, headers: dict[str, str]) -> None:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))


async def respond(
    writer: asyncio.StreamWriter,
    status: int,
    obj: Any,
    timeout: float,
    headers: dict[str, str] | None = None,
) -> None:
    data = json.dumps(obj).encode()
    head = {"Content-Type": "application/json", "Content-Length": str(len(data))}
    write_head(writer, status, {**head, **(headers or {})})
    writer.write(data)
    await drain(writer, timeout)


def send_event(writer: asyncio.StreamWriter, obj: Any) -> None:
    writer.write(b"data: " + json.dumps(obj).encode() + b"\n\n")


async def drain(writer: asyncio.StreamWriter, timeout: float) -> None:
    """Wait for the client to take what was written; one that takes nothing for
    ``timeout`` counts as gone (else it would hold its connection, and its request in
    the engine, for ever)."""
    try:
        async with asyncio.timeout(timeout):
            await writer.drain()
    except TimeoutError:
        raise ConnectionError(f"the client read nothing for {timeout:g} s") from None


async def close_connection(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, linger: float
) -> None:
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


async def until_closed(reader: asyncio.StreamReader) -> None:
    """Returns once the client has closed the connection (anything it sends meanwhile
    is ignored; a client that shuts down only its sending side counts as gone)."""
    with contextlib.suppress(ConnectionError):
        while await reader.read(65536):
            pass
