"""Continuous batching in the transformers engine, and the simulated engine's calibration.

    python comparisons/lm_batching.py                  # SmolLM2-135M on this CPU
    python comparisons/lm_batching.py --random-1b      # a ~1B random-weight Llama (GPU)

Measures, with greedy decoding and end of sequence ignored (every request makes
``--tokens`` tokens):

* tokens/s with 1 request at a time and with 1/8/32 (``--batches``) concurrent requests
  joining one running batch, and the ratio to batch 1: what continuous batching buys;
* the decode step time at each batch size (batch / tokens per second) and the prefill
  cost per prompt token (time to first token of a long prompt minus a short one): the
  numbers the simulated engine's ``Timing`` is calibrated from. The fitted ``Timing`` is
  printed and written to ``results/lm_batching.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from alto_langgraph.lm import SamplingParams
from alto_langgraph.lm.transformers_engine import TransformersEngine

RESULTS = Path(__file__).parent / "results"
#: about 1.1B parameters in Llama's shape (TinyLlama's), random weights
RANDOM_1B = {
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_hidden_layers": 22,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
}
TOPICS = ["Paris", "the Amazon", "water", "the Moon", "Hamlet", "volcanoes", "bees", "jazz"]


class NoEOS(TransformersEngine):
    """Every request makes exactly max_tokens tokens: nothing ends early."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.eos = -1
        self._manager.generation_config.eos_token_id = None


async def _one(engine: Any, prompt: str, rid: str, tokens: int) -> tuple[int, float, float]:
    start = time.perf_counter()
    first = None
    n = 0
    params = SamplingParams(max_tokens=tokens)
    async for delta in engine.generate(prompt, params, rid):
        if first is None:
            first = time.perf_counter() - start
        n += len(delta.token_ids)
    return n, first or 0.0, time.perf_counter() - start


async def measure(engine: Any, batches: list[int], tokens: int, rounds: int) -> dict[str, Any]:
    def prompt(i: int) -> str:
        ask = f"Tell me about {TOPICS[i % len(TOPICS)]} (request {i})."
        return engine.chat_prompt([{"role": "user", "content": ask}])

    await _one(engine, prompt(0), "warmup", 8)
    rows = []
    for batch in batches:
        rates = []
        for r in range(rounds):
            t0 = time.perf_counter()
            done = await asyncio.gather(
                *(_one(engine, prompt(i), f"b{batch}-{r}-{i}", tokens) for i in range(batch))
            )
            wall = time.perf_counter() - t0
            rates.append(sum(n for n, _, _ in done) / wall)
        rate = statistics.median(rates)
        rows.append({"batch": batch, "tokens_per_s": rate, "step_s": batch / rate})
        print(f"  batch {batch:>3}: {rate:7.1f} tokens/s  (step {1000 * batch / rate:6.1f} ms)")
    base = rows[0]["tokens_per_s"]
    for row in rows:
        row["ratio"] = row["tokens_per_s"] / base
    # prefill: time to first token of a long prompt against a short one
    short = engine.chat_prompt([{"role": "user", "content": "Hi."}])
    long = engine.chat_prompt([{"role": "user", "content": "Tell me more. " * 150}])
    firsts = {}
    for name, p in (("short", short), ("long", long)):
        samples = [(await _one(engine, p + f" {i}", f"pf-{name}-{i}", 1))[1] for i in range(3)]
        firsts[name] = statistics.median(samples)
    extra = engine.count_tokens(long) - engine.count_tokens(short)
    prefill = max(firsts["long"] - firsts["short"], 0.0) / extra
    print(f"  prefill: {1000 * prefill:.3f} ms per prompt token ({extra} extra tokens)")
    return {"batches": rows, "prefill_per_token_s": prefill}


def fit_timing(rows: list[dict[str, Any]], prefill: float) -> dict[str, float]:
    """step = base + per_request * batch, least squares over the measured batches."""
    xs = [r["batch"] for r in rows]
    ys = [r["step_s"] for r in rows]
    if len(xs) < 2:
        return {"step_base": ys[0], "step_per_request": 0.0, "prefill_per_token": prefill}
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
    slope = max(slope, 0.0)
    return {
        "step_base": max(my - slope * mx, 0.0),
        "step_per_request": slope,
        "prefill_per_token": prefill,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--random-1b", action="store_true", help="a ~1B random-weight Llama")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batches", default="1,2,4,8")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    kw: dict[str, Any] = {"device": args.device, "max_batch": max(batches)}
    kw["threads"] = args.threads
    if args.random_1b:
        kw |= {"model": "random", "random_config": RANDOM_1B}
    t0 = time.perf_counter()
    engine = NoEOS(**kw)
    label = "random-1b" if args.random_1b else "smollm2-135m"
    params = sum(p.numel() for p in engine.model.parameters())
    print(
        f"{label} ({params / 1e6:.0f}M parameters) on {engine.device}: "
        f"loaded in {time.perf_counter() - t0:.1f} s"
    )
    result = asyncio.run(measure(engine, batches, args.tokens, args.rounds))
    asyncio.run(engine.close())
    timing = fit_timing(result["batches"], result["prefill_per_token_s"])
    print(
        "  simulated-engine Timing fitted: " + ", ".join(f"{k}={v:.5f}" for k, v in timing.items())
    )
    out = {
        "model": label,
        "parameters": params,
        "device": engine.device,
        "machine": platform.processor() or platform.machine(),
        "tokens_per_request": args.tokens,
        **result,
        "timing": timing,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"lm_batching_{label}_{engine.device.split(':')[0]}.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
