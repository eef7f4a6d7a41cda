"""Partial-output streaming under Poisson load: LangGraph, alto, alto with streaming.

    python comparisons/streaming.py [--loads 0.1 0.2 0.3 0.5] [--requests 30 20 20 20] [--quick]

A fact-check shaped pipeline over SQuAD (the paper's Figure 1 in miniature), per request:

* ``extract``: a *simulated* LM (sleep-paced, no model) that yields 5 claims over 3 s,
  one every 0.6 s: the claims are the first sentences of the question's passage;
* ``gen_query`` per claim: 0.5 s of CPU work (a query generator running on the CPU, as
  a small LM would on this machine) that emits the claim's 10 query tokens as it goes;
* ``bm25`` per query: a fold over the query's token stream with the real bm25s index of
  the 2067 SQuAD dev passages: each token's BM25 scores are added as it arrives, the
  top 3 passages are the evidence;
* ``verdict``: whether the question's passage was found.

The same code runs three ways, side by side in one run, with the same answers:

* ``langgraph``: stock LangGraph (the decorators fold every node's yields);
* ``alto``: alto, with the decorators hidden (each node returns its whole output);
* ``alto-streaming``: alto, claims and query tokens streamed between stages.

alto runs ``gen_query`` on 2 instances and ``bm25`` on 1 (the machine's 2 cores).
Requests arrive as a Poisson process at each offered load; the latency of a request is
from its arrival to its answer. Writes ``results/streaming.json`` and a plot,
``results/streaming.png`` (median and P99 latency against load).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gzip
import inspect
import json
import operator
import random
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Annotated, Any

from langgraph.graph import START, StateGraph
from langgraph.types import Send
from typing_extensions import TypedDict

import alto_langgraph  # noqa: F401  (adds backend= to StateGraph.compile)
from alto_langgraph import fold, streaming

DATA = Path(__file__).parent.parent / "examples" / "data"
RESULTS = Path(__file__).parent / "results"

CLAIMS = 5
CLAIM_EVERY = 0.6  # s: 5 claims over 3 s
QUERY_CPU = 0.5  # s of CPU per query
QUERY_TOKENS = 10
TOP_K = 3


class Check(TypedDict, total=False):
    question: str
    passage_id: str
    claims: Annotated[list, operator.add]
    evidence: Annotated[list, operator.add]
    found: bool


# -- data ------------------------------------------------------------------------------


def _jsonl(name: str) -> list[dict[str, Any]]:
    with gzip.open(DATA / name, "rt") as f:
        return [json.loads(line) for line in f]


@functools.cache
def passages() -> dict[str, str]:
    return {p["id"]: p["text"] for p in _jsonl("squad-v1.1-dev-passages.jsonl.gz")}


@functools.cache
def index() -> tuple[Any, list[str]]:
    """The bm25s index of every passage (built once per process)."""
    import bm25s

    ids = list(passages())
    retriever = bm25s.BM25()
    corpus = bm25s.tokenize([passages()[i] for i in ids], stopwords="en", show_progress=False)
    retriever.index(corpus, show_progress=False)
    return retriever, ids


def requests(n: int, seed: int = 0) -> list[dict[str, str]]:
    questions = _jsonl("squad-v1.1-dev-questions-sample500.jsonl.gz")
    picked = random.Random(seed).sample(questions, n)
    return [{"question": q["question"], "passage_id": q["passage_id"]} for q in picked]


def claims_of(passage: str) -> list[str]:
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", passage) if s.strip()]
    return (sentences * CLAIMS)[:CLAIMS]


def query_tokens(claim: str) -> list[str]:
    words = [w.lower() for w in re.findall(r"[A-Za-z][A-Za-z0-9]+", claim) if len(w) > 3]
    return (words * QUERY_TOKENS)[:QUERY_TOKENS] if words else ["none"] * QUERY_TOKENS


def cpu(seconds: float) -> None:
    """Burn this thread's CPU time (a thread waiting for the GIL does not advance it)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


# -- the app ---------------------------------------------------------------------------


@streaming
async def extract(state: Check) -> Any:
    for claim in claims_of(passages()[state["passage_id"]]):
        await asyncio.sleep(CLAIM_EVERY)  # simulated LM: one claim per 0.6 s
        yield {"claims": [claim]}
        yield Send("gen_query", {"claim": claim})


def token_stream(claim: str) -> Any:
    for token in query_tokens(claim):
        cpu(QUERY_CPU / QUERY_TOKENS)
        yield token


@streaming
def gen_query(task: dict) -> Any:
    yield Send("bm25", {"claim": task["claim"], "query": token_stream(task["claim"])})


@fold(over="query")
class BM25:
    def start(self, task: dict) -> Any:
        return None  # no scores yet

    def step(self, scores: Any, token: str) -> Any:
        retriever, _ = index()
        token_scores = retriever.get_scores([token])  # this token's postings
        return token_scores if scores is None else scores + token_scores

    def finish(self, scores: Any, task: dict) -> dict:
        _, ids = index()
        if scores is None:
            return {"evidence": [(task["claim"], ())]}
        best = sorted(range(len(ids)), key=lambda i: -scores[i])[:TOP_K]
        return {"evidence": [(task["claim"], tuple(ids[i] for i in best))]}


def verdict(state: Check) -> dict:
    found = any(state["passage_id"] in hits for _, hits in state["evidence"])
    return {"found": found}


def _hidden(fn: Any) -> Any:
    """``fn`` without its alto marker: alto runs it the stock way (decorator ignored)."""
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def plain_async(*args: Any, **kwargs: Any) -> Any:
            return await fn(*args, **kwargs)

        plain_async.__alto_streaming__ = plain_async.__alto_fold__ = None  # type: ignore[attr-defined]
        return plain_async

    @functools.wraps(fn)
    def plain(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    plain.__alto_streaming__ = plain.__alto_fold__ = None  # type: ignore[attr-defined]
    return plain


def build(streamed: bool) -> StateGraph:
    mark = (lambda f: f) if streamed else _hidden
    g = StateGraph(Check)
    g.add_node("extract", mark(extract))
    g.add_node("gen_query", mark(gen_query))
    g.add_node("bm25", mark(BM25))
    g.add_node("verdict", verdict)
    g.add_edge(START, "extract")
    g.add_edge("bm25", "verdict")
    return g


BACKENDS = {
    "langgraph": lambda: build(True).compile(),
    "alto": lambda: build(False).compile(backend="alto", replicas={"gen_query": 2}),
    "alto-streaming": lambda: build(True).compile(backend="alto", replicas={"gen_query": 2}),
}


# -- load ------------------------------------------------------------------------------


def arrivals(n: int, load: float, seed: int) -> list[float]:
    """Poisson arrival times (s): the same for every backend at one load."""
    rng = random.Random(seed)
    times, at = [], 0.0
    for _ in range(n):
        times.append(at)
        at += rng.expovariate(load)
    return times


async def poisson(app: Any, inputs: list[dict], times: list[float]) -> list[tuple]:
    """Send ``inputs`` at ``times``; (latency, answer) each."""
    start = time.monotonic()
    tasks = []

    async def one(arrival: float, x: dict) -> tuple[float, Any]:
        await asyncio.sleep(max(0.0, start + arrival - time.monotonic()))
        t0 = time.monotonic()
        out = await app.ainvoke(x)
        print(".", end="", flush=True)
        return time.monotonic() - t0, (out["found"], tuple(sorted(out["evidence"])))

    for at, x in zip(times, inputs, strict=True):
        tasks.append(asyncio.create_task(one(at, x)))
    return await asyncio.gather(*tasks)


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    pos = (len(xs) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


async def measure(loads: list[float], counts: list[int]) -> list[dict[str, Any]]:
    rows, answers = [], {}
    for name, make in BACKENDS.items():
        app = make()
        try:
            await app.ainvoke(requests(1, seed=99)[0])  # warm: processes, index
            for load, n in zip(loads, counts, strict=True):
                print(f"{name:>15} at {load:.2f} req/s, {n} requests ", end="", flush=True)
                inputs = requests(n, seed=int(load * 1000))
                times = arrivals(n, load, seed=int(load * 1000))
                t0 = time.monotonic()
                done = await poisson(app, inputs, times)
                wall = time.monotonic() - t0
                lat = [d[0] for d in done]
                answers[(name, load)] = [d[1] for d in done]
                row = {
                    "backend": name,
                    "offered_load": load,
                    "requests": n,
                    # the sample's own rate (n arrivals are few: it is not exactly load)
                    "arrival_rate": round((n - 1) / times[-1], 3) if n > 1 else load,
                    "achieved_load": round(n / wall, 3),
                    "median_s": round(statistics.median(lat), 3),
                    "p99_s": round(percentile(lat, 0.99), 3),
                    "mean_s": round(statistics.mean(lat), 3),
                    "found": sum(d[1][0] for d in done),
                }
                rows.append(row)
                print(f" median {row['median_s']:.2f} s, P99 {row['p99_s']:.2f} s")
        finally:
            if hasattr(app, "close"):
                app.close()
    for load in loads:  # the same answers, whatever ran them
        base = answers[("langgraph", load)]
        for name in BACKENDS:
            if answers[(name, load)] != base:
                raise SystemExit(f"{name} answered differently from LangGraph at load {load}")
    return rows


def report(rows: list[dict[str, Any]], loads: list[float]) -> str:
    lines = [
        "| offered load (req/s) | backend | arrivals (req/s) | achieved | median (s) "
        "| P99 (s) | median vs LangGraph | P99 vs LangGraph |",
        "|---|---|---|---|---|---|---|---|",
    ]
    by = {(r["backend"], r["offered_load"]): r for r in rows}
    for load in loads:
        base = by[("langgraph", load)]
        for name in BACKENDS:
            r = by[(name, load)]
            lines.append(
                f"| {load:.2f} | {name} | {r['arrival_rate']:.3f} | {r['achieved_load']:.3f} "
                f"| {r['median_s']:.2f} "
                f"| {r['p99_s']:.2f} | {base['median_s'] / r['median_s']:.2f}x "
                f"| {base['p99_s'] / r['p99_s']:.2f}x |"
            )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key, title in ((axes[0], "median_s", "median"), (axes[1], "p99_s", "P99")):
        for name in BACKENDS:
            pts = [r for r in rows if r["backend"] == name]
            ax.plot([r["offered_load"] for r in pts], [r[key] for r in pts], marker="o", label=name)
        ax.set_title(f"{title} latency vs offered load")
        ax.set_xlabel("offered load (Poisson, requests/s)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("latency (s)")
    axes[0].legend()
    fig.suptitle(
        "5 claims over 3 s (simulated LM) -> 0.5 s CPU query per claim -> bm25s fold (2-core CPU)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loads", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.5])
    parser.add_argument("--requests", type=int, nargs="+", default=[30, 20, 20, 20])
    parser.add_argument("--quick", action="store_true", help="one low load, 6 requests")
    args = parser.parse_args(argv)
    loads, counts = args.loads, args.requests
    if args.quick:
        loads, counts = [0.1], [6]
    if len(counts) != len(loads):
        parser.error("give one --requests count per --loads value")
    rows = asyncio.run(measure(loads, counts))
    table = report(rows, loads)
    print(table)
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "streaming.json").write_text(json.dumps(rows, indent=2) + "\n")
        plot(rows, RESULTS / "streaming.png")
        print(f"wrote {RESULTS / 'streaming.json'} and {RESULTS / 'streaming.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
