"""A FacTool-style fact-checking pipeline, run under stock LangGraph and under alto.

    question -> draft answer -> claims -> search queries per claim -> evidence -> report

The graph is ordinary LangGraph code: ``Send`` fans out one task per claim, each claim
task fans out one task per query with ``Command(goto=[Send(...)])``, and ``report``
joins everything with a plain edge. Model calls are stood in for by delays (this demo
is about scheduling; the LM stages come later); retrieval is real, a small BM25 scorer
over the bundled SQuAD v1.1 dev paragraphs.

Run it (what the README's first command does):

    python examples/fact_check.py            # 8 questions, both backends, a table
    python examples/fact_check.py --help
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import math
import operator
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Annotated, Any

from langgraph.graph import START, StateGraph
from langgraph.types import Command, Send
from typing_extensions import TypedDict

import alto_langgraph  # noqa: F401  (adds backend= to StateGraph.compile)

DATA = Path(__file__).parent / "data"
WORD = re.compile(r"[a-z0-9]+")
STOP = frozenset(
    "a an the of in on at to for by with from and or is are was were be been what which who "
    "whom when where why how did does do that this these those it its as than into".split()
)


# -- data and retrieval ------------------------------------------------------------
def tokens(text: str) -> list[str]:
    return [w for w in WORD.findall(text.lower()) if w not in STOP]


class BM25:
    """Okapi BM25 over a list of passages (k1=1.5, b=0.75)."""

    def __init__(self, passages: Sequence[dict[str, str]]) -> None:
        self.passages = passages
        self.docs = [Counter(tokens(p["text"])) for p in passages]
        self.lengths = [sum(d.values()) for d in self.docs]
        self.avg = sum(self.lengths) / len(self.lengths)
        df = Counter(t for d in self.docs for t in d)
        n = len(self.docs)
        self.idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}
        self.postings: dict[str, list[int]] = {}
        for i, d in enumerate(self.docs):
            for t in d:
                self.postings.setdefault(t, []).append(i)

    def search(self, query: str, k: int = 1) -> list[tuple[float, dict[str, str]]]:
        scores: Counter[int] = Counter()
        for t in set(tokens(query)):
            for i in self.postings.get(t, ()):
                tf = self.docs[i][t]
                norm = tf + 1.5 * (1 - 0.75 + 0.75 * self.lengths[i] / self.avg)
                scores[i] += self.idf[t] * tf * 2.5 / norm
        return [(round(s, 3), self.passages[i]) for i, s in scores.most_common(k)]


@cache
def corpus() -> BM25:
    with gzip.open(DATA / "squad-v1.1-dev-passages.jsonl.gz", "rt") as f:
        return BM25([json.loads(line) for line in f])


def questions(n: int) -> list[str]:
    with gzip.open(DATA / "squad-v1.1-dev-questions-sample500.jsonl.gz", "rt") as f:
        return [json.loads(line)["question"] for line, _ in zip(f, range(n), strict=False)]


# -- the app ---------------------------------------------------------------------------
class FactCheck(TypedDict):
    question: str
    claims: Annotated[list[str], operator.add]
    evidence: Annotated[list[dict[str, Any]], operator.add]
    report: str


class ClaimTask(TypedDict):
    claim: str
    index: int


class QueryTask(TypedDict):
    claim: str
    query: str
    index: int
    sub: int


#: Stand-ins for model latency, seconds. Claim i's query generation and its searches
#: are anti-correlated, as LM output lengths are: the fast claim has slow searches.
DELAYS = {"draft": 0.2, "queries": (0.1, 0.4, 0.8), "search": (0.6, 0.3, 0.1), "report": 0.1}


async def draft(state: FactCheck) -> dict[str, Any]:
    await asyncio.sleep(DELAYS["draft"])
    words = tokens(state["question"]) or ["unknown"]
    # three "claims" about the question, as an LM would extract them from its draft
    claims = [" ".join(words[i::3]) or words[0] for i in range(3)]
    return {"claims": claims}


def fan_out_claims(state: FactCheck) -> list[Send]:
    return [Send("gen_queries", {"claim": c, "index": i}) for i, c in enumerate(state["claims"])]


async def gen_queries(task: ClaimTask) -> Command:
    await asyncio.sleep(DELAYS["queries"][task["index"] % 3])
    queries = [task["claim"], f"{task['claim']} history"]
    return Command(
        goto=[
            Send("search", {"claim": task["claim"], "query": q, "index": task["index"], "sub": j})
            for j, q in enumerate(queries)
        ]
    )


async def search(task: QueryTask) -> dict[str, Any]:
    await asyncio.sleep(DELAYS["search"][task["index"] % 3])
    hits = corpus().search(task["query"], k=1)
    score, passage = hits[0] if hits else (0.0, {"id": "-", "title": "-"})
    return {
        "evidence": [
            {
                "claim": task["index"],
                "query": task["sub"],
                "passage": passage["id"],
                "title": passage["title"],
                "score": score,
            }
        ]
    }


async def report(state: FactCheck) -> dict[str, Any]:
    await asyncio.sleep(DELAYS["report"])
    best: dict[int, dict[str, Any]] = {}
    for e in state["evidence"]:
        if e["claim"] not in best or e["score"] > best[e["claim"]]["score"]:
            best[e["claim"]] = e
    lines = [f"claim {i}: {best[i]['title']} ({best[i]['score']})" for i in sorted(best)]
    return {"report": "; ".join(lines)}


def build() -> StateGraph:
    g = StateGraph(FactCheck)
    g.add_node("draft", draft)
    g.add_node("gen_queries", gen_queries, input_schema=ClaimTask)
    g.add_node("search", search, input_schema=QueryTask)
    g.add_node("report", report)
    g.add_edge(START, "draft")
    g.add_conditional_edges("draft", fan_out_claims, ["gen_queries"])
    g.add_edge("search", "report")
    return g


def critical_path() -> float:
    q, s = DELAYS["queries"], DELAYS["search"]
    return DELAYS["draft"] + max(a + b for a, b in zip(q, s, strict=True)) + DELAYS["report"]


def barrier_path() -> float:
    return DELAYS["draft"] + max(DELAYS["queries"]) + max(DELAYS["search"]) + DELAYS["report"]


# -- the side-by-side run --------------------------------------------------------------
async def timed(app: Any, question: str) -> tuple[float, dict[str, Any]]:
    t0 = time.perf_counter()
    out = await app.ainvoke({"question": question})
    return time.perf_counter() - t0, out


async def compare(n: int, concurrency: int) -> int:
    qs = questions(n)
    corpus()  # build the index before timing
    # the same graph on both; alto runs node code in this process, as LangGraph does
    # (the default placement), and changes when tasks run
    apps = {"langgraph": build().compile(), "alto": build().compile(backend="alto")}
    results: dict[str, list[tuple[float, dict[str, Any]]]] = {}
    walls: dict[str, float] = {}
    print("warming up")
    for app in apps.values():
        await app.ainvoke({"question": qs[0]})
    for name, app in apps.items():
        sem = asyncio.Semaphore(concurrency)

        async def one(
            q: str, app: Any = app, sem: asyncio.Semaphore = sem
        ) -> tuple[float, dict[str, Any]]:
            async with sem:
                return await timed(app, q)

        print(f"running {n} questions on {name} ({concurrency} at a time)...", flush=True)
        t0 = time.perf_counter()
        results[name] = await asyncio.gather(*(one(q) for q in qs))
        walls[name] = time.perf_counter() - t0
    apps["alto"].close()  # stops its worker processes, if it has any

    print()
    print(f"fact-check pipeline, {n} questions, {concurrency} concurrent")
    print(
        f"  superstep (BSP) path {barrier_path():.2f} s, "
        f"dataflow critical path {critical_path():.2f} s"
    )
    print_comparison(results, walls)
    example = results["alto"][0][1]
    print(f"example: {example['question']!r} -> {example['report']}")
    return 0 if same_answers(results) else 1


def same_answers(results: dict[str, list[tuple[float, Any]]]) -> bool:
    return all(a[1] == b[1] for a, b in zip(results["langgraph"], results["alto"], strict=True))


def print_comparison(results: dict[str, list[tuple[float, Any]]], walls: dict[str, float]) -> None:
    """The latency table of the two backends, the speedup, and whether they agreed."""
    print()
    header = f"{'backend':<10} {'mean s':>8} {'p50 s':>8} {'max s':>8} {'wall s':>8}"
    print(header)
    print("-" * len(header))
    for name, rs in results.items():
        lat = [r[0] for r in rs]
        print(
            f"{name:<10} {statistics.mean(lat):>8.3f} {statistics.median(lat):>8.3f} "
            f"{max(lat):>8.3f} {walls[name]:>8.3f}"
        )
    mean = {k: statistics.mean(r[0] for r in v) for k, v in results.items()}
    same = [a[1] == b[1] for a, b in zip(results["langgraph"], results["alto"], strict=True)]
    print()
    print(f"alto mean latency speedup: {mean['langgraph'] / mean['alto']:.2f}x")
    print(f"same final state on both backends: {sum(same)}/{len(same)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", "--questions", type=int, default=8, help="how many questions (default 8)")
    p.add_argument(
        "-c", "--concurrency", type=int, default=4, help="requests in flight at once (default 4)"
    )
    args = p.parse_args(argv)
    if args.questions < 1 or args.concurrency < 1:
        p.error("--questions and --concurrency must be at least 1")
    return asyncio.run(compare(args.questions, args.concurrency))


if __name__ == "__main__":
    sys.exit(main())
