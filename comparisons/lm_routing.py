"""Prompt-aware scheduling across LM instances, on the simulated engine.

    python comparisons/lm_routing.py            # about 10 minutes
    python comparisons/lm_routing.py --quick    # about 2

An app whose node asks a model (``ChatAlto``) serves requests arriving as a Poisson
process. Each prompt is one of ``--templates`` long templates (a system prompt of
``--template-tokens`` tokens, picked with Zipf-skewed frequency) plus a short question
of its own. The model is an LM stage of ``--replicas`` instances of the **simulated**
engine, whose cost model is calibrated against the transformers engine on this machine
(``comparisons/lm_batching.py``; its fitted ``Timing`` is read from
``results/lm_batching_smollm2-135m_cpu.json`` when present). Each instance's prefix
cache holds about ``--cache-templates`` templates, so where a prompt goes decides
whether its template must be prefilled again.

The same arrivals run with each routing policy of the LM stage: ``prefix_cache_aware``
(alto's default for LM stages), ``round_robin`` and ``least_outstanding``. Reported per
offered load: mean, median and P99 latency, and the prefix-cache hit rate (prompt
tokens served from cache). Target (issue 5): mean latency at least 1.5x lower than
round-robin at high load, with no worse P99. Results: ``results/lm_routing.json`` and
the plot ``results/lm_routing.png``. All engine times here are simulated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any, TypedDict

from langchain_core.messages import HumanMessage, SystemMessage
from langgraph.graph import END, START, StateGraph

import alto_langgraph  # noqa: F401
from alto_langgraph.lm import ChatAlto, SimulatedEngine, Timing
from alto_langgraph.lm.simulated import pieces

RESULTS = Path(__file__).parent / "results"
CALIBRATION = RESULTS / "lm_batching_smollm2-135m_cpu.json"
POLICIES = ("prefix_cache_aware", "round_robin", "least_outstanding")
#: measured on the 2-core CPU of the development machine, when no calibration file exists
DEFAULT_TIMING = {"step_base": 0.045, "step_per_request": 0.012, "prefill_per_token": 0.0005}


class State(TypedDict):
    template: int
    question: str
    answer: str
    cached: int


def calibrated_timing(args: argparse.Namespace) -> tuple[Timing, str]:
    if CALIBRATION.exists():
        fitted = json.loads(CALIBRATION.read_text())["timing"]
        source = f"calibrated from {CALIBRATION.relative_to(Path.cwd())}"
    else:
        fitted = DEFAULT_TIMING
        source = "default (run comparisons/lm_batching.py to calibrate)"
    block = 16
    cache_blocks = int(args.cache_templates * args.template_tokens / block)
    timing = Timing(**fitted, max_batch=32, block_size=block, cache_blocks=cache_blocks)
    return timing, source


def templates(n: int, tokens: int) -> list[str]:
    rng = random.Random(7)
    words = "the of and to in is was for on that with as by at from it an be this are".split()
    return [
        f"Template {k}: answer in the style of example set {k}. "
        + " ".join(rng.choice(words) + str(rng.randrange(100)) for _ in range(tokens - 10))
        for k in range(n)
    ]


def build(llm: ChatAlto, texts: list[str]) -> StateGraph:
    async def ask(s: State) -> dict[str, Any]:
        msg = await llm.ainvoke([SystemMessage(texts[s["template"]]), HumanMessage(s["question"])])
        return {"answer": msg.content, "cached": msg.response_metadata["cached_tokens"]}

    b = StateGraph(State)
    b.add_node("ask", ask)
    b.add_edge(START, "ask")
    b.add_edge("ask", END)
    return b


def arrivals(rate: float, count: int, n_templates: int, skew: float, seed: int) -> list[tuple]:
    rng = random.Random(seed)
    weights = [1 / (k + 1) ** skew for k in range(n_templates)]
    t, out = 0.0, []
    for i in range(count):
        t += rng.expovariate(rate)
        template = rng.choices(range(n_templates), weights)[0]
        out.append((t, template, f"Question {i}: what does example {rng.randrange(1000)} say?"))
    return out


async def drive(app: Any, plan: list[tuple]) -> list[tuple[float, int, int]]:
    """(latency, template, cached tokens) of every request, run at its arrival time."""
    start = time.perf_counter()

    async def one(at: float, template: int, question: str) -> tuple[float, int, int]:
        await asyncio.sleep(max(0.0, at - (time.perf_counter() - start)))
        sent = start + at
        out = await app.ainvoke({"template": template, "question": question})
        return time.perf_counter() - sent, template, out["cached"]

    return await asyncio.gather(*(one(*a) for a in plan))


def p99(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[98] if len(xs) > 1 else xs[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--replicas", type=int, default=4)
    ap.add_argument("--templates", type=int, default=8)
    ap.add_argument("--template-tokens", type=int, default=500)
    ap.add_argument("--cache-templates", type=float, default=2.5)
    ap.add_argument("--skew", type=float, default=1.1, help="Zipf exponent of template use")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--rates", default="1,2,3,4,5", help="offered loads, requests/s")
    ap.add_argument("--seconds", type=float, default=40.0, help="of arrivals per run")
    args = ap.parse_args()
    if args.quick:
        args.rates, args.seconds = "2,4", 15.0
    rates = [float(r) for r in args.rates.split(",")]
    timing, source = calibrated_timing(args)
    print(f"simulated engine, Timing {source}:\n  {timing}")
    texts = templates(args.templates, args.template_tokens)
    engine_options = {"timing": timing, "max_context": 4096}
    llm = ChatAlto(model="sim", max_tokens=args.max_tokens)
    builder = build(llm, texts)
    prompt_tokens = {
        k: len(pieces(SimulatedEngine().chat_prompt([{"role": "system", "content": t}])))
        for k, t in enumerate(texts)
    }
    rows = []
    for rate in rates:
        plan = arrivals(rate, max(20, int(rate * args.seconds)), args.templates, args.skew, 1)
        for policy in POLICIES:
            lm = {"sim": {"engine": "simulated", "replicas": args.replicas, "policy": policy}}
            lm["sim"] |= engine_options
            with builder.compile(backend="alto", lm=lm) as app:
                asyncio.run(app.ainvoke({"template": 0, "question": "warm up"}))
                t0 = time.perf_counter()
                done = asyncio.run(drive(app, plan))
                wall = time.perf_counter() - t0
            lat = [d[0] for d in done]
            hit = sum(d[2] for d in done) / sum(prompt_tokens[d[1]] + 12 for d in done)
            row = {
                "rate": rate,
                "policy": policy,
                "requests": len(done),
                "mean_s": statistics.fmean(lat),
                "p50_s": statistics.median(lat),
                "p99_s": p99(lat),
                "cache_hit_rate": hit,
                "throughput": len(done) / wall,
            }
            rows.append(row)
            print(
                f"  {rate:4.1f} req/s  {policy:<19} mean {row['mean_s']:6.2f} s  "
                f"p50 {row['p50_s']:6.2f} s  p99 {row['p99_s']:6.2f} s  "
                f"cache hits {100 * hit:5.1f}%",
                flush=True,
            )
    summary = []
    for rate in rates:
        by = {r["policy"]: r for r in rows if r["rate"] == rate}
        aware, rr = by["prefix_cache_aware"], by["round_robin"]
        summary.append(
            {
                "rate": rate,
                "mean_vs_round_robin": rr["mean_s"] / aware["mean_s"],
                "p99_vs_round_robin": rr["p99_s"] / aware["p99_s"],
            }
        )
        print(
            f"at {rate} req/s: prefix-cache-aware mean {summary[-1]['mean_vs_round_robin']:.2f}x "
            f"lower than round-robin, P99 {summary[-1]['p99_vs_round_robin']:.2f}x"
        )
    RESULTS.mkdir(exist_ok=True)
    out = {
        "simulated": True,
        "timing": {"source": source, **timing.__dict__},
        "args": vars(args),
        "rows": rows,
        "summary": summary,
    }
    (RESULTS / "lm_routing.json").write_text(json.dumps(out, indent=2))
    plot(rows, rates, RESULTS / "lm_routing.png")


def plot(rows: list[dict[str, Any]], rates: list[float], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install -e '.[bench]')", file=sys.stderr)
        return
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for policy in POLICIES:
        mine = [r for r in rows if r["policy"] == policy]
        for ax, key in zip(axes, ("mean_s", "p99_s", "cache_hit_rate"), strict=True):
            ax.plot([r["rate"] for r in mine], [r[key] for r in mine], marker="o", label=policy)
    for ax, title in zip(
        axes, ("mean latency (s)", "P99 latency (s)", "prefix-cache hit rate"), strict=True
    ):
        ax.set_title(title)
        ax.set_xlabel("offered load (requests/s)")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("LM routing policies, simulated engine (calibrated to SmolLM2 on CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
