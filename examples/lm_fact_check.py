"""Fact-checking with a real language model (SmolLM2-135M, on the CPU), under stock
LangGraph and under alto.

    question -> answer (the model, streamed) -> a claim per sentence
             -> a search query per claim (the model) -> BM25 evidence -> report

``answer`` is a ``@streaming`` node: it reads the model's tokens and yields each
sentence as a claim, with a ``Send`` to ``verify`` it. On stock LangGraph the claims
are verified once the whole answer is written; on alto each claim's query is generated
while the answer is still being written, in the same continuous batch of the model's
LM stage. Both give the same report (greedy decoding).

    python examples/lm_fact_check.py            # 4 questions, both backends
    python examples/lm_fact_check.py --help

Needs the ``lm`` extra and SmolLM2's weights (``make demo`` installs them).
"""

from __future__ import annotations

import argparse
import asyncio
import operator
import sys
import time
from pathlib import Path
from typing import Annotated, Any

from langgraph.graph import START, StateGraph
from langgraph.types import Send
from typing_extensions import TypedDict

import alto_langgraph
from alto_langgraph import streaming
from alto_langgraph.lm import ChatAlto

sys.path.insert(0, str(Path(__file__).parent))
# the bundled SQuAD and its BM25, and the side-by-side table
from fact_check import corpus, print_comparison, questions, same_answers  # noqa: E402

MODEL = "smollm2-135m"
llm = ChatAlto(model=MODEL, max_tokens=64)
query_llm = ChatAlto(model=MODEL, max_tokens=12)


class Check(TypedDict, total=False):
    question: str
    claims: Annotated[list[str], operator.add]
    evidence: Annotated[list[dict[str, Any]], operator.add]
    report: str


@streaming
async def answer(state: Check) -> Any:
    """The model's answer, a claim per sentence as soon as the sentence is written."""
    sentence, n = "", 0
    async for chunk in llm.astream(f"Answer in two short sentences: {state['question']}"):
        sentence += chunk.content
        if sentence.rstrip().endswith((".", "!", "?")) and len(sentence.split()) > 2:
            yield {"claims": [sentence.strip()]}
            yield Send("verify", {"claim": sentence.strip(), "index": n})
            sentence, n = "", n + 1
    if sentence.strip():
        yield {"claims": [sentence.strip()]}
        yield Send("verify", {"claim": sentence.strip(), "index": n})


async def verify(task: dict[str, Any]) -> dict[str, Any]:
    prompt = f"Write a short web search query to check this claim: {task['claim']}"
    query = (await query_llm.ainvoke(prompt)).content.strip().strip('"')
    hits = corpus().search(query or task["claim"], k=1)
    score, passage = hits[0] if hits else (0.0, {"title": "-"})
    return {
        "evidence": [
            {"index": task["index"], "query": query, "title": passage["title"], "score": score}
        ]
    }


def report(state: Check) -> dict[str, Any]:
    found = sorted(state.get("evidence", []), key=lambda e: e["index"])
    return {"report": "; ".join(f"{e['index']}: {e['title']} ({e['score']})" for e in found)}


def build() -> StateGraph:
    g = StateGraph(Check)
    g.add_node("answer", answer)
    g.add_node("verify", verify)
    g.add_node("report", report)
    g.add_edge(START, "answer")
    g.add_edge("verify", "report")
    return g


async def run_all(app: Any, qs: list[str], concurrency: int) -> tuple[list, float]:
    sem = asyncio.Semaphore(concurrency)

    async def one(q: str) -> tuple[float, dict[str, Any]]:
        async with sem:
            t0 = time.perf_counter()
            out = await app.ainvoke({"question": q})
            return time.perf_counter() - t0, out

    t0 = time.perf_counter()
    results = await asyncio.gather(*(one(q) for q in qs))
    return results, time.perf_counter() - t0


async def compare(n: int, concurrency: int) -> int:
    qs = questions(n)
    corpus()
    apps = {
        "langgraph": build().compile(),
        # the model is an LM stage (worker processes); the nodes run in this process
        "alto": build().compile(backend="alto", lm={MODEL: {"max_batch": 8}}),
    }
    print("warming up (loads the model: in this process for LangGraph, in alto's LM stage)")
    for app in apps.values():
        await app.ainvoke({"question": qs[0]})
    results, walls = {}, {}
    for name, app in apps.items():
        print(f"running {n} questions on {name} ({concurrency} at a time)...", flush=True)
        results[name], walls[name] = await run_all(app, qs, concurrency)
    apps["alto"].close()
    print_comparison(results, walls)
    example = results["alto"][0][1]
    print(f"example: {example['question']!r}")
    for claim in example["claims"]:
        print(f"  claim: {claim}")
    print(f"  evidence: {example['report']}")
    return 0 if same_answers(results) else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", "--questions", type=int, default=4, help="how many (default 4)")
    p.add_argument("-c", "--concurrency", type=int, default=2, help="in flight (default 2)")
    args = p.parse_args(argv)
    if args.questions < 1 or args.concurrency < 1:
        p.error("--questions and --concurrency must be at least 1")
    assert alto_langgraph  # the backend="alto" plug
    return asyncio.run(compare(args.questions, args.concurrency))


if __name__ == "__main__":
    sys.exit(main())
