"""The transformers engine on the real SmolLM2-135M-Instruct (CPU, offline): greedy text
reproducible alone and in a batch, deltas that add up, cancel freeing the batch slot,
bad input. What is asserted is text and counts, never time."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from alto_langgraph.lm import SamplingParams
from alto_langgraph.lm.models import ModelNotFound, check
from alto_langgraph.lm.transformers_engine import TransformersEngine

QUESTIONS = [
    "What is the capital of France?",
    "Name a color.",
    "What is 2+2?",
    "Who wrote Hamlet?",
    "Say hello.",
    "What is water made of?",
    "Name a planet.",
    "What is the largest ocean?",
]


@pytest.fixture(scope="module")
def engine() -> Any:
    return TransformersEngine(max_batch=8, threads=2)


async def _generate(engine: Any, prompt: str, rid: str, max_tokens: int = 16) -> list:
    return [d async for d in engine.generate(prompt, SamplingParams(max_tokens=max_tokens), rid)]


def _text(deltas: list) -> str:
    return "".join(d.text for d in deltas)


def test_greedy_text_is_the_same_alone_and_in_a_batch_of_8(engine: Any) -> None:
    prompts = [engine.chat_prompt([{"role": "user", "content": q}]) for q in QUESTIONS]

    async def go() -> tuple[list, list, int]:
        alone = [await _generate(engine, p, f"alone{i}") for i, p in enumerate(prompts)]
        before = engine.stats().generated_tokens
        together = await asyncio.gather(
            *(_generate(engine, p, f"batch{i}") for i, p in enumerate(prompts))
        )
        return alone, together, engine.stats().generated_tokens - before

    alone, together, made = asyncio.run(go())
    assert [_text(d) for d in alone] == [_text(d) for d in together]
    assert "Paris" in _text(alone[0])  # the real model, not noise
    assert made == sum(len(d.token_ids) for ds in together for d in ds)
    for deltas in alone:
        assert deltas[-1].finish_reason in ("stop", "length")
        assert all(d.finish_reason is None for d in deltas[:-1])


def test_streamed_deltas_concatenate_to_the_decoded_tokens(engine: Any) -> None:
    prompt = engine.chat_prompt([{"role": "user", "content": "Describe Paris in one sentence."}])
    deltas = asyncio.run(_generate(engine, prompt, "concat", max_tokens=24))
    ids = [t for d in deltas for t in d.token_ids]
    assert len(deltas) > 3 and len(ids) == 24 and deltas[-1].finish_reason == "length"
    assert _text(deltas) == engine.tokenizer.decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize("stop", [" is", " Paris."])  # one token; several tokens
def test_a_stop_string_ends_the_text_before_it(engine: Any, stop: str) -> None:
    prompt = engine.chat_prompt([{"role": "user", "content": QUESTIONS[0]}])

    async def go() -> tuple[list, list, list]:
        full = await _generate(engine, prompt, "full", max_tokens=16)
        params = SamplingParams(max_tokens=16, stop=(stop,))
        stopped = [d async for d in engine.generate(prompt, params, "stopped")]
        # the same request id again, at once: nothing of the first call reaches it
        again = [d async for d in engine.generate(prompt, params, "stopped")]
        return full, stopped, again

    full, stopped, again = asyncio.run(go())
    assert stop in _text(full)
    assert _text(stopped) == _text(full).split(stop)[0]
    assert stopped[-1].finish_reason == "stop"
    assert [d.text for d in again] == [d.text for d in stopped]


def test_cancelling_a_request_frees_its_batch_slot() -> None:
    """With one batch slot, a second request can only run once the first's slot is
    free: cancelling the first (200 tokens asked) lets the second finish, and the
    engine makes far fewer than 200 tokens for the first."""
    engine = TransformersEngine(max_batch=1, threads=2)
    long_prompt = engine.chat_prompt([{"role": "user", "content": "Write a long story."}])
    short_prompt = engine.chat_prompt([{"role": "user", "content": QUESTIONS[0]}])

    async def go() -> tuple[int, list, int]:
        got = 0
        gen = engine.generate(long_prompt, SamplingParams(max_tokens=200), "long")
        async for _ in gen:
            got += 1
            if got == 3:
                break  # leaving the stream cancels the request
        await gen.aclose()
        short = await _generate(engine, short_prompt, "short", max_tokens=8)
        await asyncio.sleep(0.5)  # tokens the engine still made for "long" get counted
        made = engine.stats().generated_tokens - sum(len(d.token_ids) for d in short)
        await engine.close()
        return got, short, made

    got, short, made_for_long = asyncio.run(go())
    assert got == 3 and short[-1].finished and "Paris" in _text(short)
    assert made_for_long < 50


def test_bad_input_is_refused_with_a_clear_error(engine: Any) -> None:
    async def gen(prompt: str, **params: Any) -> list:
        return [d async for d in engine.generate(prompt, SamplingParams(**params), "bad")]

    with pytest.raises(ValueError, match="prompt is empty"):
        asyncio.run(gen("  "))
    with pytest.raises(ValueError, match="exceeds the context length"):
        asyncio.run(gen("word " * 9000, max_tokens=8))
    with pytest.raises(ValueError, match="greedy"):
        asyncio.run(gen("hello", temperature=0.7))
    with pytest.raises(ModelNotFound, match="unknown model 'gpt-17'"):
        check("gpt-17")
    assert engine.stats().running == 0  # none of them took a slot


def test_abort_ends_the_request_with_abort(engine: Any) -> None:
    """transformers sends nothing more for a cancelled request: the engine ends it."""
    prompt = engine.chat_prompt([{"role": "user", "content": "Write a long story."}])

    async def go() -> list:
        out = []
        async for delta in engine.generate(prompt, SamplingParams(max_tokens=200), "a#1"):
            out.append(delta)
            if len(out) == 2:
                await engine.abort("a#1")
        return out

    deltas = asyncio.run(go())
    assert deltas[-1].finish_reason == "abort" and len(deltas) < 10
    assert engine.stats().running == 0


def test_closing_the_engine_ends_running_requests_with_abort() -> None:
    engine = TransformersEngine(max_batch=2, threads=2)
    prompt = engine.chat_prompt([{"role": "user", "content": "Write a long story."}])

    async def go() -> list:
        out = []
        async for delta in engine.generate(prompt, SamplingParams(max_tokens=200), "r"):
            out.append(delta)
            if len(out) == 2:
                asyncio.get_running_loop().create_task(engine.close())
        return out

    deltas = asyncio.run(go())
    assert deltas[-1].finish_reason == "abort" and len(deltas) < 50


def test_a_context_longer_than_the_kv_cache_is_refused() -> None:
    with pytest.raises(ValueError, match="max_context=4096 is over what the model and the KV"):
        TransformersEngine(max_context=4096, cache_tokens=1024, threads=2)
    with pytest.raises(ValueError, match="dtype must be one of"):
        TransformersEngine(dtype="float17")


def test_a_random_weight_model_of_any_shape_runs_greedily_and_reproducibly() -> None:
    shape = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
    shape |= {"num_attention_heads": 4, "num_key_value_heads": 2}
    a = TransformersEngine("random", random_config=shape, threads=2)
    b = TransformersEngine("random", random_config=shape, threads=2)
    assert sum(p.numel() for p in a.model.parameters()) < 10_000_000
    prompt = a.chat_prompt([{"role": "user", "content": "hi"}])

    async def go(engine: Any) -> list:
        out = await _generate(engine, prompt, "r", max_tokens=6)
        await engine.close()
        return [t for d in out for t in d.token_ids]

    assert asyncio.run(go(a)) == asyncio.run(go(b))


def test_a_request_cancelled_on_a_loop_that_then_closes_leaves_the_engine_working(
    engine: Any,
) -> None:
    """Results of a cancelled request may still come after its caller's event loop has
    closed; the engine keeps serving requests from other loops."""
    prompt = engine.chat_prompt([{"role": "user", "content": "Write a long story."}])

    async def cancel_early() -> None:
        gen = engine.generate(prompt, SamplingParams(max_tokens=100), "gone")
        await anext(gen)
        await gen.aclose()

    asyncio.run(cancel_early())  # ... and that loop is closed now
    time.sleep(0.5)
    question = engine.chat_prompt([{"role": "user", "content": QUESTIONS[0]}])
    assert "Paris" in _text(asyncio.run(_generate(engine, question, "after")))


def test_each_token_comes_with_its_log_probability_alone_and_in_a_batch(engine: Any) -> None:
    """What a confidence monitor reads: one logprob per token id, each <= 0; greedy, so
    the same alone and in a batch (to float noise); and ChatAlto's message carries them
    as OpenAI's logprobs do, on stock and through an alto LM stage alike."""
    from langgraph.graph import START, StateGraph

    from alto_langgraph.lm import ChatAlto

    prompt = engine.chat_prompt([{"role": "user", "content": QUESTIONS[0]}])

    async def go() -> tuple[list, list]:
        alone = await _generate(engine, prompt, "lp-alone")
        batch = await asyncio.gather(*(_generate(engine, prompt, f"lp-{i}") for i in range(4)))
        return alone, batch[2]

    alone, in_batch = asyncio.run(go())
    ids = [t for d in alone for t in d.token_ids]
    lps = [lp for d in alone for lp in d.logprobs]
    assert len(lps) == len(ids) > 3 and all(lp <= 0 for lp in lps)
    assert [lp for d in in_batch for lp in d.logprobs] == pytest.approx(lps, abs=1e-3)

    def ask(s: dict) -> dict:
        msg = ChatAlto(max_tokens=8).invoke(QUESTIONS[0])
        return {"lps": [c["logprob"] for c in msg.response_metadata["logprobs"]["content"]]}

    g = StateGraph(dict)
    g.add_node("ask", ask)
    g.add_edge(START, "ask")
    stock = g.compile().invoke({"lps": []})["lps"]
    with g.compile(backend="alto", lm={"smollm2-135m": {"threads": 2}}) as app:
        alto = app.invoke({"lps": []})["lps"]
    assert len(stock) == 8 and stock == pytest.approx(alto, abs=1e-3)
