"""The ``openai`` engine against alto's own OpenAI-compatible server (``serve-lm``):
the same greedy SmolLM2 text as the engine in-process, streamed; the server's 400s as
``ValueError`` s; a client leaving early aborts the request in the server's engine."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from langchain_core.messages import HumanMessage

from alto_langgraph.lm import ChatAlto, EngineError, SamplingParams, SimulatedEngine, Timing
from alto_langgraph.lm.openai_engine import OpenAIEngine
from alto_langgraph.lm.server import OpenAIServer, ServerConfig


@pytest.fixture(scope="module")
def smollm2_server() -> Iterator[str]:
    """``python -m alto_langgraph serve-lm`` with the transformers engine, on a free port."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "alto_langgraph", "serve-lm", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert "serving 'smollm2-135m' (transformers engine) on http://" in line, line
        yield line.rsplit(" on ", 1)[1].strip()
    finally:
        proc.terminate()
        proc.wait(10)


class SimServer:
    """An OpenAIServer over a simulated engine (or ``engine``), on a thread of this
    process (so the test can read the engine's stats)."""

    def __init__(self, engine: Any = None, config: ServerConfig | None = None) -> None:
        self.engine = engine or SimulatedEngine(
            Timing(step_base=0.01), texts=[" ".join(["word"] * 200)]
        )
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.server = OpenAIServer(self.engine, "sim", config)
        port = asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(5)
        self.url = f"http://127.0.0.1:{port}"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(5)
        asyncio.run_coroutine_threadsafe(self.engine.close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)


def test_the_same_greedy_text_through_the_server_as_in_process(smollm2_server: str) -> None:
    question = [HumanMessage("What is the capital of France?")]
    local = ChatAlto(max_tokens=12).invoke(question)
    remote_llm = ChatAlto(
        max_tokens=12, engine="openai", engine_options={"base_url": smollm2_server}
    )
    chunks = [c.content for c in remote_llm.stream(question)]
    assert len(chunks) > 3  # streamed, not one blob
    assert "".join(chunks) == local.content and "Paris" in local.content
    assert remote_llm.invoke(question).response_metadata["finish_reason"] == "stop"


def test_the_server_answers_plain_openai_clients(smollm2_server: str) -> None:
    models = httpx.get(f"{smollm2_server}/models").json()
    assert [m["id"] for m in models["data"]] == ["smollm2-135m"]
    whole = httpx.post(
        f"{smollm2_server}/chat/completions",
        json={"messages": [{"role": "user", "content": "What is 2+2?"}], "max_tokens": 10},
        timeout=60,
    ).json()
    assert whole["object"] == "chat.completion" and whole["usage"]["completion_tokens"] <= 10
    assert "classic math problem is 4" in whole["choices"][0]["message"]["content"]


def test_bad_requests_are_400s_that_name_the_problem(smollm2_server: str) -> None:
    def post(body: Any) -> Any:
        return httpx.post(f"{smollm2_server}/chat/completions", json=body, timeout=30)

    empty = post({"messages": []})
    assert empty.status_code == 400 and "messages must be a non-empty list" in empty.text
    other = post({"model": "gpt-17", "messages": [{"role": "user", "content": "hi"}]})
    assert other.status_code == 400 and "'gpt-17' is not served here" in other.text
    engine = OpenAIEngine(smollm2_server, "smollm2-135m")

    async def too_long() -> list:
        params = SamplingParams(max_tokens=8)
        return [d async for d in engine.generate("word " * 9000, params, "long")]

    with pytest.raises(ValueError, match="server refused the request: .*exceeds the context"):
        asyncio.run(too_long())


def test_a_server_that_is_not_there_is_an_engine_error() -> None:
    engine = OpenAIEngine("http://127.0.0.1:9", "m")

    async def go() -> list:
        return [d async for d in engine.generate("hi", SamplingParams(), "r")]

    with pytest.raises(EngineError, match="127.0.0.1:9"):
        asyncio.run(go())
    with pytest.raises(ValueError, match="base_url must be an http"):
        OpenAIEngine("localhost:8000", "m")


def test_a_client_that_leaves_early_aborts_its_request_in_the_server() -> None:
    sim = SimServer()
    try:
        engine = OpenAIEngine(sim.url, "sim")

        async def two_then_leave() -> list:
            out = []
            gen = engine.generate("hello", SamplingParams(max_tokens=150), "r1")
            async for delta in gen:
                out.append(delta)
                if len(out) == 2:
                    break
            await gen.aclose()
            return out

        got = asyncio.run(two_then_leave())
        deadline = time.monotonic() + 5
        while sim.engine.stats().running and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = sim.engine.stats()
        assert len(got) == 2 and stats.running == 0 and stats.requests == 1
        assert stats.generated_tokens < 150  # it stopped, not ran to max_tokens
    finally:
        sim.close()


class Failing(SimulatedEngine):
    """Fails after ``after`` deltas (0: before the first)."""

    def __init__(self, after: int) -> None:
        super().__init__(Timing(step_base=0.001))
        self.after = after

    async def generate(self, prompt: str, params: Any, request_id: str) -> Any:
        n = 0
        async for delta in super().generate(prompt, params, request_id):
            if n == self.after:
                raise EngineError("the GPU caught fire")
            n += 1
            yield delta


@pytest.mark.parametrize("after", [0, 2])
def test_an_engine_failure_reaches_the_client_as_an_error(after: int) -> None:
    """Before anything was sent: a 500 naming the error. Mid-stream: an error event and
    [DONE]; the openai engine raises it rather than returning a cut-short answer."""
    sim = SimServer(Failing(after))
    try:
        body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
        resp = httpx.post(f"{sim.url}/v1/chat/completions", json=body, timeout=10)
        if after == 0:
            assert resp.status_code == 500 and "the GPU caught fire" in resp.text
        else:
            events = [line for line in resp.text.splitlines() if line.startswith("data:")]
            assert len(events) == after + 2 and events[-1] == "data: [DONE]"
            assert "the GPU caught fire" in events[-2]
        engine = OpenAIEngine(sim.url, "sim")

        async def go() -> list:
            chat = [{"role": "user", "content": "hi"}]
            return [d async for d in engine.chat(chat, SamplingParams(), "r")]

        with pytest.raises(EngineError, match="the GPU caught fire"):
            asyncio.run(go())
    finally:
        sim.close()


def test_max_tokens_is_honoured_under_either_name_and_checked() -> None:
    sim = SimServer()
    try:

        def post(**fields: Any) -> Any:
            body = {"messages": [{"role": "user", "content": "hi"}], **fields}
            return httpx.post(f"{sim.url}/v1/chat/completions", json=body, timeout=10)

        assert post(max_completion_tokens=7).json()["usage"]["completion_tokens"] == 7
        assert post(max_tokens=5).json()["usage"]["completion_tokens"] == 5
        zero = post(max_tokens=0)
        assert zero.status_code == 400 and "max_tokens must be a positive int" in zero.text
    finally:
        sim.close()


def test_a_client_that_leaves_a_whole_answer_request_aborts_it() -> None:
    sim = SimServer()
    try:
        body = {"prompt": "hello", "max_tokens": 190}  # about 2 s of simulated steps
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{sim.url}/v1/completions", json=body, timeout=0.3)
        deadline = time.monotonic() + 5
        while sim.engine.stats().requests == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = sim.engine.stats()
        assert stats.requests == 1 and stats.running == 0
        assert stats.generated_tokens < 150
    finally:
        sim.close()


def test_what_the_server_cannot_do_is_refused_not_ignored() -> None:
    sim = SimServer()
    try:

        def post(**fields: Any) -> Any:
            body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, **fields}
            return httpx.post(f"{sim.url}/v1/chat/completions", json=body, timeout=10)

        assert post(n=2).status_code == 400 and "n must be 1" in post(n=2).text
        tools = [{"type": "function", "function": {"name": "f"}}]
        assert "tools are not supported" in post(tools=tools).text
        parts = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
        assert post(messages=parts).json()["usage"]["completion_tokens"] == 3
        image = [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]
        assert post(messages=image).status_code == 400
    finally:
        sim.close()


def test_abort_before_the_server_has_answered_ends_the_request() -> None:
    """The server sends its headers with the first token (0.5 s here); an abort made
    before that still ends the request, once the answer starts."""
    sim = SimServer(SimulatedEngine(Timing(step_base=0.5)))
    try:
        engine = OpenAIEngine(sim.url, "sim")

        async def go() -> list:
            async def read() -> list:
                return [d async for d in engine.generate("hi", SamplingParams(), "r")]

            reading = asyncio.ensure_future(read())
            await asyncio.sleep(0.1)
            await engine.abort("r")
            return await reading

        assert [d.finish_reason for d in asyncio.run(go())] == ["abort"]
    finally:
        sim.close()


def test_the_openai_engine_sends_its_api_key() -> None:
    """Against a server that requires a key: the right one is let in; a wrong or
    missing one is the server's 401, raised as an EngineError that names it."""
    sim = SimServer(config=ServerConfig(api_key="k-123"))
    try:

        async def go(engine: OpenAIEngine) -> list:
            return [d async for d in engine.generate("hi", SamplingParams(max_tokens=3), "r")]

        keyed = asyncio.run(go(OpenAIEngine(sim.url, "sim", api_key="k-123")))
        assert "".join(d.text for d in keyed) and keyed[-1].finish_reason == "length"
        with pytest.raises(EngineError, match="HTTP 401: incorrect API key"):
            asyncio.run(go(OpenAIEngine(sim.url, "sim", api_key="k-124")))
        with pytest.raises(EngineError, match="HTTP 401: no API key"):
            asyncio.run(go(OpenAIEngine(sim.url, "sim")))
    finally:
        sim.close()
