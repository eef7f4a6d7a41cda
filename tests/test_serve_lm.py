"""``serve-lm``'s defences, against a real server on loopback (a simulated engine on a
thread of this process, or the CLI in a subprocess): bad requests are 4xx answers that
name the problem, never 500s; the API key; the read timeout; the connection limit; no
open server beyond loopback unless asked for."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import resource
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from alto_langgraph.cli import main
from alto_langgraph.lm import SimulatedEngine, Timing
from alto_langgraph.lm.http import MAX_BODY, MAX_HEAD
from alto_langgraph.lm.server import OpenAIServer, ServerConfig

CHAT = "/v1/chat/completions"
HI = [{"role": "user", "content": "hi"}]


class Served:
    """An OpenAIServer over a simulated engine, on a thread of this process."""

    def __init__(
        self, config: ServerConfig | None = None, step: float = 0.001, engine: Any = None
    ) -> None:
        self.engine = engine or SimulatedEngine(Timing(step_base=step), max_context=512)
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.server = OpenAIServer(self.engine, "sim", config)
        self.port = self._call(self.server.start())

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(5)

    def close(self) -> None:
        self._call(self.server.close())
        self._call(self.engine.close())
        self.loop.call_soon_threadsafe(self.loop.stop)


@contextlib.contextmanager
def served(
    config: ServerConfig | None = None, step: float = 0.001, engine: Any = None
) -> Iterator[Served]:
    server = Served(config, step, engine)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def plain() -> Iterator[Served]:
    with served(ServerConfig(read_timeout=2)) as server:
        yield server


class Answer:
    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split(" ")[1])
        self.headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}

    def json(self) -> Any:
        return json.loads(self.body)

    def message(self) -> str:
        error = self.json()["error"]
        assert set(error) <= {"message", "type", "code"} and isinstance(error["type"], str)
        return error["message"]


def exchange(port: int, data: bytes, timeout: float = 5.0) -> Answer:
    """Send ``data`` as is, then read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return Answer(_read_all(sock))


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def request(
    method: str = "POST",
    path: str = CHAT,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def post(fields: dict[str, Any], path: str = CHAT, headers: dict[str, str] | None = None) -> bytes:
    return request("POST", path, json.dumps(fields).encode(), headers)


def chat(**fields: Any) -> bytes:
    return post({"messages": HI, "max_tokens": 3, **fields})


def head(*lines: str, body: bytes = b"") -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# (request, status, what the error message must say)
BAD_HTTP = {
    "garbage request line": (head("HELLO"), 400, "bad request line 'HELLO'"),
    "four-part request line": (head("GET /v1/models HTTP/1.1 x"), 400, "bad request line"),
    "HTTP version": (head("GET /v1/models HTTP/2.0"), 400, "unsupported HTTP version 'HTTP/2.0'"),
    "not a path": (head("GET v1/models HTTP/1.1"), 400, "bad request target 'v1/models'"),
    "header without colon": (
        head("GET /v1/models HTTP/1.1", "Host 127.0.0.1"),
        400,
        "bad header line 'Host 127.0.0.1'",
    ),
    "space before colon": (
        head("POST /v1/completions HTTP/1.1", "Content-Length : 2", body=b"{}"),
        400,
        "bad header line 'Content-Length : 2'",
    ),
    "folded header": (
        head("GET /v1/models HTTP/1.1", "X-A: 1", " folded"),
        400,
        "bad header line ' folded'",
    ),
    "control character": (
        head("GET /v1/models HTTP/1.1", "X-A: a\x00b"),
        400,
        "the X-A header holds a control character",
    ),
    "two Content-Lengths": (
        head(f"POST {CHAT} HTTP/1.1", "Content-Length: 2", "Content-Length: 2", body=b"{}"),
        400,
        "duplicate Content-Length header",
    ),
    "Content-Length not a number": (
        request(headers={"Content-Length": "abc"}),
        400,
        "bad Content-Length 'abc'",
    ),
    "negative Content-Length": (
        request(headers={"Content-Length": "-5"}),
        400,
        "bad Content-Length '-5'",
    ),
    "Content-Length with a sign": (
        request(headers={"Content-Length": "+2"}, body=None) + b"{}",
        400,
        "bad Content-Length '+2'",
    ),
    "body too large": (
        request(headers={"Content-Length": str(MAX_BODY + 1)}),
        413,
        f"over the limit of {MAX_BODY} bytes",
    ),
    "chunked body": (
        request(headers={"Transfer-Encoding": "chunked"}) + b"2\r\n{}\r\n0\r\n\r\n",
        411,
        "Transfer-Encoding is not supported",
    ),
    "head too long": (
        request("GET", "/v1/models", headers={"X-Big": "a" * (MAX_HEAD + 10)}),
        431,
        f"the request head is over {MAX_HEAD} bytes",
    ),
    "too many headers": (
        request("GET", "/v1/models", headers={f"X-{i}": "1" for i in range(150)}),
        431,
        "more than 100 headers",
    ),
    "unknown route": (request("GET", "/v1/nothing"), 404, "no route GET /v1/nothing"),
    "wrong method": (request("GET", CHAT), 405, f"{CHAT} takes POST, not GET"),
    "unknown expectation": (
        request(body=b"{}", headers={"Expect": "magic"}),
        417,
        "unsupported Expect 'magic'",
    ),
    "empty body": (request(), 400, "the body is empty"),
    "not JSON": (request(body=b"{nope"), 400, "the body is not JSON"),
    "not UTF-8": (request(body=b'{"a": "\xff"}'), 400, "the body is not UTF-8"),
    "not an object": (request(body=b"[1, 2]"), 400, "the body must be a JSON object, got list"),
    "NaN": (request(body=b'{"messages": [], "temperature": NaN}'), 400, "NaN is not a JSON"),
    "temperature 1e999": (  # JSON without Infinity, but a float that overflows to it
        request(body=b'{"messages": [{"role": "user", "content": "hi"}], "temperature": 1e999}'),
        400,
        "temperature must be a finite number, got Infinity",
    ),
    "nested too deeply": (request(body=b"[" * 100_000), 400, "nested too deeply"),
}

# fields of a chat request that otherwise asks for 3 tokens of "hi"
BAD_FIELDS = {
    "max_tokens 2.7": ({"max_tokens": 2.7}, "max_tokens must be a positive int, got 2.7"),
    "max_tokens true": ({"max_tokens": True}, "max_tokens must be a positive int, got true"),
    "max_tokens string": ({"max_tokens": "5"}, 'max_tokens must be a positive int, got "5"'),
    "max_tokens 0": ({"max_tokens": 0}, "max_tokens must be a positive int, got 0"),
    "max_completion_tokens -1": (
        {"max_completion_tokens": -1},
        "max_completion_tokens must be a positive int",
    ),
    "max_tokens over the context": ({"max_tokens": 10_000}, "exceeds the context length"),
    "temperature string": (
        {"temperature": "hot"},
        'temperature must be a finite number, got "hot"',
    ),
    "temperature huge int": ({"temperature": 10**400}, "temperature must be a finite number"),
    "temperature negative": ({"temperature": -0.5}, "temperature must be between 0 and 2"),
    "temperature bool": ({"temperature": False}, "temperature must be a finite number"),
    "top_p below 1": ({"top_p": 0.9}, "top_p must be 1: this server does not do nucleus"),
    "top_p out of range": ({"top_p": 1.5}, "top_p must be between 0 and 1"),
    "n 2": ({"n": 2}, "n must be 1"),
    "n true": ({"n": True}, "n must be an int, got true"),
    "stop number": ({"stop": 5}, "stop must be a non-empty string or a list of them, got 5"),
    "stop mixed": ({"stop": ["a", 1]}, "stop must be a non-empty string"),
    "stop empty": ({"stop": ""}, "stop must be a non-empty string"),
    "stream string": ({"stream": "yes"}, 'stream must be true or false, got "yes"'),
    "stream_options without stream": (
        {"stream_options": {"include_usage": True}},
        "stream_options is only allowed with stream: true",
    ),
    "stream_options unknown": (
        {"stream": True, "stream_options": {"x": 1}},
        "stream_options takes only include_usage",
    ),
    "seed float": ({"seed": 1.5}, "seed must be an integer of 64 bits, got 1.5"),
    "seed too big": ({"seed": 1 << 64}, "seed must be an integer of 64 bits"),
    "model not a string": ({"model": 5}, "model must be a string, got 5"),
    "model not served": ({"model": "gpt-17"}, "model 'gpt-17' is not served here"),
    "unknown field": ({"top_k": 5}, "unknown field 'top_k' for /v1/chat/completions"),
    "prompt on chat": ({"prompt": "x"}, "unknown field 'prompt'"),
    "user not a string": ({"user": 5}, "user must be a string"),
    "tools": ({"tools": [{"type": "function"}]}, "tools are not supported by this server"),
    "tool_choice": ({"tool_choice": "required"}, "tool_choice is not supported"),
    "presence_penalty": ({"presence_penalty": 0.5}, "presence_penalty is not supported"),
    "logprobs": ({"logprobs": True}, "logprobs are not supported"),
    "logit_bias": ({"logit_bias": {"1": 5}}, "logit_bias is not supported"),
    "response_format json": (
        {"response_format": {"type": "json_object"}},
        "response_format is not supported",
    ),
    "messages missing": ({"messages": None}, "messages must be a non-empty list, got null"),
    "messages empty": ({"messages": []}, "messages must be a non-empty list, got []"),
    "messages a string": ({"messages": "hi"}, 'messages must be a non-empty list, got "hi"'),
    "message a string": ({"messages": ["hi"]}, "messages[0] must be an object"),
    "message role": (
        {"messages": [{"role": "wizard", "content": "hi"}]},
        "messages[0].role must be one of 'system', 'user', 'assistant', got \"wizard\"",
    ),
    "message without role": ({"messages": [{"content": "hi"}]}, "messages[0].role must be"),
    "message content number": (
        {"messages": [*HI, {"role": "user", "content": 5}]},
        "messages[1].content must be text",
    ),
    "message content image": (
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
        "messages[0].content must be text",
    ),
    "message tool_calls": (
        {"messages": [{"role": "assistant", "content": "", "tool_calls": []}]},
        "messages[0] has unsupported field 'tool_calls'",
    ),
    "message name": ({"messages": [{**HI[0], "name": 5}]}, "messages[0].name must be a string"),
}

BAD_COMPLETIONS = {
    "prompt a list": ({"prompt": ["a", "b"]}, "prompt must be a string (one prompt per request)"),
    "prompt missing": ({}, "prompt must be a string"),
    "prompt empty": ({"prompt": ""}, "the prompt is empty"),  # the engine's own check
    "messages on completions": (
        {"prompt": "x", "messages": HI},
        "unknown field 'messages' for /v1/completions",
    ),
    "max_completion_tokens on completions": (
        {"prompt": "x", "max_completion_tokens": 3},
        "unknown field 'max_completion_tokens'",
    ),
    "echo": ({"prompt": "x", "echo": True}, "echo is not supported"),
    "logprobs 0": (
        {"prompt": "x", "logprobs": 0},
        "logprobs are not supported by this server, got 0",
    ),
}


@pytest.mark.parametrize("case", BAD_HTTP, ids=list(BAD_HTTP))
def test_a_bad_http_request_is_a_4xx_naming_the_problem(plain: Served, case: str) -> None:
    data, status, says = BAD_HTTP[case]
    answer = exchange(plain.port, data)
    assert (answer.status, says) == (status, says) and says in answer.message()
    assert answer.headers["content-type"] == "application/json"


@pytest.mark.parametrize("case", BAD_FIELDS, ids=list(BAD_FIELDS))
def test_a_bad_chat_field_is_a_400_naming_it(plain: Served, case: str) -> None:
    fields, says = BAD_FIELDS[case]
    answer = exchange(plain.port, chat(**fields))
    assert answer.status == 400 and says in answer.message()
    assert answer.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("case", BAD_COMPLETIONS, ids=list(BAD_COMPLETIONS))
def test_a_bad_completion_field_is_a_400_naming_it(plain: Served, case: str) -> None:
    fields, says = BAD_COMPLETIONS[case]
    answer = exchange(plain.port, post({"max_tokens": 3, **fields}, "/v1/completions"))
    assert answer.status == 400 and says in answer.message()


def test_good_requests_are_answered(plain: Served) -> None:
    """The control for the corpus: the same requests, put right, are 200s (fields at
    values that ask for nothing are accepted)."""
    whole = exchange(plain.port, chat(top_p=1, n=1, tools=[], presence_penalty=0, seed=3))
    assert whole.status == 200 and whole.json()["usage"] == {"completion_tokens": 3}
    text = exchange(plain.port, post({"prompt": "hi", "max_tokens": 2}, "/v1/completions"))
    assert text.json()["object"] == "text_completion"
    assert text.json()["choices"][0]["finish_reason"] == "length"
    models = exchange(plain.port, request("GET", "/v1/models?x=1"))
    assert [m["id"] for m in models.json()["data"]] == ["sim"]
    stream = exchange(plain.port, chat(stream=True, stream_options={"include_usage": True}))
    events = [e.removeprefix(b"data: ") for e in stream.body.split(b"\n\n") if e]
    assert stream.headers["content-type"] == "text/event-stream" and events[-1] == b"[DONE]"
    usage = json.loads(events[-2])
    assert usage["choices"] == [] and usage["usage"] == {"completion_tokens": 3}
    assert json.loads(events[-3])["choices"][0]["finish_reason"] == "length"


def test_expect_100_continue_gets_its_interim_answer(plain: Served) -> None:
    """curl sends a large body only after "100 Continue" (or a second's wait)."""
    body = json.dumps({"messages": HI, "max_tokens": 2}).encode()
    with socket.create_connection(("127.0.0.1", plain.port), timeout=5) as sock:
        sock.sendall(request(headers={"Expect": "100-continue", "Content-Length": str(len(body))}))
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        answer = Answer(_read_all(sock))
    assert answer.status == 200 and answer.json()["usage"]["completion_tokens"] == 2


def test_random_garbage_fields_are_never_a_500(plain: Served) -> None:
    """Each field of a good request replaced by a random JSON value: a 200 or a 400
    with an error message, never a 500 or a dropped connection."""
    rng = random.Random(13)
    values: list[Any] = [None, True, False, 0, -1, 1, 2.5, 1e308, "", "x", [], [1], {}, {"a": 1}]
    values += [[{"role": "user"}], [{"role": "user", "content": None}], [[]], 10**30]
    fields = ["messages", "max_tokens", "temperature", "top_p", "n", "stop", "stream", "seed"]
    fields += ["model", "stream_options", "tools", "logprobs", "response_format", "user"]
    statuses = set()
    for _ in range(150):
        req: dict[str, Any] = {"messages": HI, "max_tokens": 3}
        for field in rng.sample(fields, rng.randint(1, 3)):
            req[field] = rng.choice(values)
        answer = exchange(plain.port, post(req))
        statuses.add(answer.status)
        assert answer.status in (200, 400), (req, answer.status, answer.body)
        if answer.status == 400:
            assert answer.message()
    assert statuses == {200, 400}


# -- the API key ---------------------------------------------------------------------------
KEY = "s3cret-key"


def test_the_api_key_is_required_when_set() -> None:
    with served(ServerConfig(api_key=KEY, read_timeout=2)) as server:

        def ask(authorization: str | None, path: str = CHAT) -> Answer:
            headers = {} if authorization is None else {"Authorization": authorization}
            if path == CHAT:
                return exchange(server.port, post({"messages": HI, "max_tokens": 2}, CHAT, headers))
            return exchange(server.port, request("GET", path, headers=headers))

        missing = ask(None)
        assert missing.status == 401 and "no API key" in missing.message()
        assert missing.headers["www-authenticate"] == "Bearer"
        assert missing.json()["error"]["code"] == "invalid_api_key"
        assert "incorrect API key" in ask("Bearer wrong").message()
        assert "incorrect API key" in ask(f"Bearer {KEY}x").message()
        assert "must be 'Bearer <key>'" in ask(f"Basic {KEY}").message()
        assert "must be 'Bearer <key>'" in ask("Bearer ").message()
        assert ask("Bearer \u00e9").status == 401  # not ASCII: refused, not a 500
        assert ask(None, "/v1/models").status == 401  # every route
        assert ask(None, "/v1/nothing").status == 401  # the routes are not shown either
        assert ask(f"Bearer {KEY}").json()["usage"]["completion_tokens"] == 2
        assert ask(f"bearer {KEY}").status == 200  # the scheme is case-insensitive
        assert ask(f"Bearer {KEY}", "/v1/models").status == 200


def test_an_unauthorized_client_cannot_make_the_server_wait_for_its_body() -> None:
    """The key is checked on the head: a 401 at once, not a wait for a body."""
    with served(ServerConfig(api_key=KEY, read_timeout=3)) as server:
        started = time.monotonic()
        answer = exchange(server.port, request(headers={"Content-Length": "1000"}))
        assert answer.status == 401 and time.monotonic() - started < 1


def test_bad_server_configs_are_refused() -> None:
    for bad, says in [
        ({"api_key": ""}, "non-empty visible ASCII"),
        ({"api_key": "a b"}, "non-empty visible ASCII"),
        ({"read_timeout": 0}, "the read timeout must be a number of seconds > 0"),
        ({"read_timeout": float("nan")}, "the read timeout"),
        ({"max_connections": 0}, "max connections must be an int >= 1"),
        ({"max_connections": True}, "max connections must be an int >= 1"),
    ]:
        with pytest.raises(ValueError, match=says):
            ServerConfig(**bad)


# -- beyond loopback -------------------------------------------------------------------------
def test_no_open_server_beyond_loopback_unless_asked_for() -> None:
    for host in ("0.0.0.0", "", "::"):
        with pytest.raises(ValueError, match="--api-key .* --insecure-no-auth"):
            ServerConfig().check_host(host)
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        ServerConfig().check_host(host)
    ServerConfig(api_key=KEY).check_host("0.0.0.0")
    ServerConfig(insecure_no_auth=True).check_host("0.0.0.0")
    server = OpenAIServer(SimulatedEngine(), "sim")  # the library refuses it too
    with pytest.raises(ValueError, match="refusing to listen on '0.0.0.0' without an API key"):
        asyncio.run(server.start("0.0.0.0"))


def test_the_cli_refuses_an_open_server_before_loading_anything(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ALTO_SERVE_LM_API_KEY", raising=False)
    for argv, says in [
        (["--host", "0.0.0.0"], "refusing to listen on '0.0.0.0' without an API key"),
        (["--read-timeout", "0"], "the read timeout must be a number of seconds > 0"),
        (["--max-connections", "0"], "max connections must be an int >= 1"),
    ]:
        with pytest.raises(SystemExit) as exit:
            main(["serve-lm", "--engine", "transformers", "--model", "no-such-model", *argv])
        assert exit.value.code == 2 and says in capsys.readouterr().err


class CLI:
    """``python -m alto_langgraph serve-lm --engine simulated`` on a free port; its
    stderr goes to a file (a pipe nobody reads could fill, and stall the server)."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, **popen: Any) -> None:
        self.err = tempfile.TemporaryFile("w+")
        argv = ["serve-lm", "--engine", "simulated", "--port", "0", *args]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "alto_langgraph", *argv],
            stdout=subprocess.PIPE,
            stderr=self.err,
            text=True,
            env={**os.environ, **(env or {})},
            **popen,
        )
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        assert "serving 'smollm2-135m' (simulated engine) on http://" in line, self.stop()
        self.port = int(line.rsplit(":", 1)[1].split("/")[0])

    def stop(self) -> str:
        """Stops it; returns what it wrote on stderr."""
        self.proc.terminate()
        self.proc.wait(10)
        self.err.seek(0)
        return self.err.read()


def test_the_cli_takes_its_key_from_the_environment_and_may_listen_beyond_loopback() -> None:
    cli = CLI("--host", "0.0.0.0", env={"ALTO_SERVE_LM_API_KEY": KEY})
    try:
        body = {"messages": HI, "max_tokens": 2}
        assert exchange(cli.port, post(body)).status == 401
        answer = exchange(cli.port, post(body, CHAT, {"Authorization": f"Bearer {KEY}"}))
        assert answer.json()["usage"]["completion_tokens"] == 2
    finally:
        cli.stop()


# -- timeouts --------------------------------------------------------------------------------
def test_a_client_that_sends_nothing_is_closed_within_the_read_timeout() -> None:
    with served(ServerConfig(read_timeout=0.5)) as server:
        started = time.monotonic()
        answer = exchange(server.port, b"")
        waited = time.monotonic() - started
        assert answer.status == 408 and "did not arrive within 0.5 s" in answer.message()
        assert 0.4 < waited < 1.5
        assert _eventually(lambda: server.server.connections == 0)


def test_the_read_timeout_bounds_the_whole_request_not_each_byte() -> None:
    """A client that trickles its head a byte at a time, or sends less body than it
    announced, is cut off at the timeout all the same."""
    with served(ServerConfig(read_timeout=0.3)) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            started, sent = time.monotonic(), 0
            trickle = b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"z" * 40
            while sent < len(trickle) and not select.select([sock], [], [], 0)[0]:
                sent += sock.send(trickle[sent : sent + 1])
                time.sleep(0.02)  # about 1.5 s for all of it
            answer = Answer(_read_all(sock))
            assert answer.status == 408 and time.monotonic() - started < 0.8
            assert sent < len(trickle)  # cut off mid-head, not answered when it ended
        short = exchange(server.port, request(headers={"Content-Length": "100"}, body=None) + b"{")
        assert short.status == 408


def test_a_stream_longer_than_the_read_timeout_is_not_cut() -> None:
    with served(ServerConfig(read_timeout=0.2), step=0.04) as server:
        started = time.monotonic()
        answer = exchange(server.port, chat(stream=True, max_tokens=12))
        assert time.monotonic() - started > 0.4  # longer than the timeout, twice over
        events = [e for e in answer.body.split(b"\n\n") if e]
        assert events[-1] == b"data: [DONE]" and len(events) == 13
        assert json.loads(events[-2][6:])["choices"][0]["finish_reason"] == "length"


def test_a_client_that_reads_nothing_of_its_stream_is_dropped() -> None:
    """Once the socket buffers are full, a write the client does not take for the read
    timeout drops it, and the engine's request with it (else both would be held for
    ever)."""
    text = " ".join(["x" * 2000] * 4000)  # 2 kB a token, some 300 tokens a second
    engine = SimulatedEngine(Timing(step_base=0.0005), texts=[text], max_context=8192)
    with served(ServerConfig(read_timeout=0.3), engine=engine) as server:
        # small buffers on both sides (a connection takes its listener's), so that they
        # fill within a fraction of a second: the kernel would grow them to megabytes
        for listener in server.server._listeners:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", server.port))
            sock.sendall(chat(stream=True, max_tokens=4000))
            assert _eventually(lambda: server.engine.stats().running == 1)
            # nothing read: dropped long before the 4000 tokens (over 10 s) were made
            assert _eventually(lambda: server.server.connections == 0, within=3)
            stats = server.engine.stats()
            assert stats.running == 0 and stats.requests == 1 and stats.generated_tokens < 1000


def _eventually(check: Any, within: float = 3.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


# -- the connection limit ----------------------------------------------------------------
def _idle(port: int, n: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(n)]


def test_beyond_the_connection_limit_a_client_gets_an_immediate_503() -> None:
    with served(ServerConfig(read_timeout=5, max_connections=4)) as server:
        idle = _idle(server.port, 4)
        try:
            assert _eventually(lambda: server.server.connections == 4)
            started = time.monotonic()
            busy = exchange(server.port, chat())
            assert busy.status == 503 and "at its limit of 4 connections" in busy.message()
            assert busy.headers["retry-after"] == "1" and time.monotonic() - started < 1
        finally:
            for sock in idle:
                sock.close()
        # the idle ones gone, their places are free again at once (not after the timeout)
        assert _eventually(lambda: exchange(server.port, chat()).status == 200, within=2)


def test_an_idle_flood_clears_itself_at_the_read_timeout() -> None:
    with served(ServerConfig(read_timeout=0.3, max_connections=4)) as server:
        idle = _idle(server.port, 10)  # six more than the limit: 503s
        try:
            assert _eventually(lambda: server.server.connections == 4)
            assert exchange(server.port, chat()).status == 503
            # the flood still open, but timed out: a client gets through
            assert _eventually(lambda: exchange(server.port, chat()).status == 200)
            answers = sorted(Answer(_read_all(sock)).status for sock in idle)
            assert answers == [408] * 4 + [503] * 6
        finally:
            for sock in idle:
                sock.close()


def test_under_a_low_open_file_limit_an_idle_flood_locks_no_one_out() -> None:
    """The outside tester's case: 100 idle connections under `ulimit -n 64`. The limit
    is lowered to fit, so a client gets a 503 at once (not a connection the kernel never
    accepts), and a 200 once the flood has timed out."""

    def low_limit() -> None:
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        )

    cli = CLI("--read-timeout", "0.3", preexec_fn=low_limit)
    idle: list[socket.socket] = []
    try:
        idle = _idle(cli.port, 100)
        started = time.monotonic()
        assert exchange(cli.port, chat(), timeout=2).status == 503
        assert time.monotonic() - started < 0.5
        # the flood still open, but timed out: a client gets through
        assert _eventually(lambda: exchange(cli.port, chat(), timeout=2).status == 200)
    finally:
        for sock in idle:
            sock.close()
        err = cli.stop()
    assert "max connections lowered from 256 to" in err and "ulimit -n: 64" in err
    assert "cannot accept" not in err  # it never ran out of file descriptors
