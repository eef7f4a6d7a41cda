"""The simulated LM engine: streaming deltas, continuous batching, prefix cache, abort,
bad input. Its steps are 1 ms here; what is asserted is order and counts, not time."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from alto_langgraph.lm import SamplingParams, SimulatedEngine, Timing
from alto_langgraph.lm.simulated import DEFAULT_TEXTS

FAST = Timing(step_base=0.001, step_per_request=0.0, prefill_per_token=0.0, block_size=4)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def collect(engine: SimulatedEngine, prompt: str, rid: str, **params: Any) -> list:
    return [d async for d in engine.generate(prompt, SamplingParams(**params), rid)]


def test_deltas_concatenate_to_a_reproducible_text() -> None:
    async def go() -> tuple[list, list]:
        engine = SimulatedEngine(FAST)
        a = await collect(engine, "Tell me about Paris", "a", max_tokens=400)
        b = await collect(engine, "Tell me about Paris", "b", max_tokens=400)
        await engine.close()
        return a, b

    a, b = run(go())
    text = "".join(d.text for d in a)
    assert text in DEFAULT_TEXTS  # the whole source text, then end of sequence
    assert a[-1].finish_reason == "stop" and all(d.finish_reason is None for d in a[:-1])
    assert [d.text for d in a] == [d.text for d in b]


def test_max_tokens_and_stop_strings_end_a_generation() -> None:
    async def go() -> tuple[list, list]:
        engine = SimulatedEngine(FAST, texts=["one two three. four five"])
        short = await collect(engine, "p", "a", max_tokens=2)
        stopped = await collect(engine, "p", "b", max_tokens=50, stop=(".",))
        await engine.close()
        return short, stopped

    short, stopped = run(go())
    assert "".join(d.text for d in short) == "one two" and short[-1].finish_reason == "length"
    assert "".join(d.text for d in stopped) == "one two three"
    assert stopped[-1].finish_reason == "stop"


def test_concurrent_requests_share_the_running_batch() -> None:
    async def go() -> tuple[int, int]:
        engine = SimulatedEngine(FAST)
        for i in range(8):  # one after another: a batch of one
            await collect(engine, f"question {i}", f"s{i}", max_tokens=5)
        alone = engine.stats().max_running
        await asyncio.gather(
            *(collect(engine, f"question {i}", f"c{i}", max_tokens=5) for i in range(8))
        )
        together = engine.stats().max_running
        await engine.close()
        return alone, together

    assert run(go()) == (1, 8)


def test_a_new_request_joins_a_running_batch_between_steps() -> None:
    async def go() -> list[str]:
        engine = SimulatedEngine(FAST, texts=[" ".join(f"w{i}" for i in range(40))])
        order: list[str] = []

        async def long() -> None:
            async for d in engine.generate("a", SamplingParams(max_tokens=30), "long"):
                order.append("long" if not d.finished else "long done")
                if len(order) == 3:
                    asyncio.get_running_loop().create_task(short())

        async def short() -> None:
            async for d in engine.generate("b", SamplingParams(max_tokens=2), "short"):
                order.append("short" if not d.finished else "short done")

        await long()
        await asyncio.sleep(0.05)
        await engine.close()
        return order

    order = run(go())
    assert order.index("short done") < order.index("long done")


def test_prompts_sharing_a_prefix_hit_the_prefix_cache() -> None:
    async def go() -> tuple[int, int, Any]:
        engine = SimulatedEngine(FAST)  # blocks of 4 tokens
        shared = "You check facts. Answer with one claim per line. Question:"  # 10 tokens
        first = await collect(engine, shared + " who built it?", "a", max_tokens=3)
        second = await collect(engine, shared + " when was it?", "b", max_tokens=3)
        stats = engine.stats()
        await engine.close()
        return first[0].cached_tokens, second[0].cached_tokens, stats

    first, second, stats = run(go())
    assert first == 0
    assert second == 8  # the two whole blocks of the shared 10 tokens
    assert stats.cached_tokens == 8 and stats.prompt_tokens == 26
    assert stats.simulated is True


def test_abort_and_leaving_early_free_the_batch_slot() -> None:
    async def go() -> tuple[list, int, int]:
        engine = SimulatedEngine(FAST, texts=[" ".join(f"w{i}" for i in range(200))])
        deltas = []

        async def consume() -> None:
            async for d in engine.generate("a", SamplingParams(max_tokens=150), "a"):
                deltas.append(d)
                if len(deltas) == 3:
                    await engine.abort("a")

        await consume()
        after_abort = engine.stats().running
        gen = engine.generate("b", SamplingParams(max_tokens=150), "b")
        await anext(gen)
        await gen.aclose()  # the caller walks away
        await asyncio.sleep(0.01)
        after_leaving = engine.stats().running
        await engine.close()
        return deltas, after_abort, after_leaving

    deltas, after_abort, after_leaving = run(go())
    assert deltas[-1].finish_reason == "abort" and len(deltas) == 4
    assert after_abort == 0 and after_leaving == 0


def test_bad_input_is_a_clear_error() -> None:
    async def go() -> None:
        engine = SimulatedEngine(FAST, max_context=20)
        with pytest.raises(ValueError, match="prompt is empty"):
            await collect(engine, "   ", "a")
        with pytest.raises(ValueError, match=r"prompt \(25 tokens\).*context length \(20\)"):
            await collect(engine, " ".join(["w"] * 25), "b", max_tokens=1)
        await engine.close()

    run(go())
    with pytest.raises(ValueError, match="max_tokens must be a positive int"):
        SamplingParams(max_tokens=0)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        SamplingParams(temperature=-1)
    with pytest.raises(ValueError, match="step_base must be a finite number >= 0"):
        Timing(step_base=-1)
    with pytest.raises(ValueError, match="non-empty string"):
        SimulatedEngine(texts=[])


def test_a_stop_string_across_pieces_never_leaks_its_start() -> None:
    """The text is held back while it may be the start of a stop string, so no part of
    the stop string goes out, even when it spans several generated pieces."""

    async def go() -> list:
        engine = SimulatedEngine(FAST, texts=["one two three. four five"])
        out = await collect(engine, "p", "a", max_tokens=50, stop=("two three",))
        await engine.close()
        return out

    deltas = run(go())
    assert "".join(d.text for d in deltas) == "one "
    assert deltas[-1].finish_reason == "stop"
    assert all("two" not in d.text for d in deltas)


def test_bad_engine_settings_are_refused_when_the_engine_is_made() -> None:
    with pytest.raises(TypeError, match="must be a Timing"):
        SimulatedEngine({"step_base": 0.001})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_context"):
        SimulatedEngine(max_context="big")  # type: ignore[arg-type]


def test_timings_and_stop_strings_that_would_hang_or_end_everything_are_refused() -> None:
    for bad in (float("inf"), float("nan"), -1.0):
        with pytest.raises(ValueError, match="step_base must be a finite number >= 0"):
            Timing(step_base=bad)
    with pytest.raises(ValueError, match="stop must hold non-empty strings"):
        SamplingParams(stop=("",))
