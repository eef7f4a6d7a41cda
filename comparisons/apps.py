"""Four realistic app shapes on stock LangGraph and on alto, side by side in one run.

    python comparisons/apps.py [--quick] [--apps map_reduce,react,rag,research]

Not a timed test: a benchmark that prints a markdown table and writes
``comparisons/results/apps.json``. Model calls are simulated (sleeps whose length is a
fixed function of their input, so every backend sees the same latencies), retrieval is
real (BM25 over the 2,067 SQuAD v1.1 dev passages of ``examples/data``: bm25s when it is
installed, else the pure-Python Okapi BM25 below), and each node does a little CPU work
as real node code does (parsing, prompt building).

The apps, written as users write them:

* ``map_reduce`` (sync nodes, ``invoke``): ``split`` picks 8 passages and fans out 8
  ``Send``\\ s to ``summarize`` (an LM call, 0.15-0.35 s, plus 5 ms of CPU); ``reduce``
  joins the summaries with one more LM call.
* ``react`` (async, ``ainvoke``): LangChain v1 ``create_agent`` with a fake chat model
  (0.15-0.3 s per call) that asks for tools for 2-4 turns, 1-2 calls per turn, then
  answers; the tools are an async ``lookup`` (a 0.05-0.15 s API call) and a sync
  ``search`` (BM25, CPU).
* ``rag`` (mixed, ``ainvoke``): agentic RAG: ``generate_query`` (async LM) ->
  ``retrieve`` (a *sync* node: BM25 top 3, CPU) -> ``grade`` (async LM) -> conditional
  edge: relevant -> ``generate`` (async LM), else ``rewrite`` (async LM) and retrieve
  again, at most twice.
* ``research`` (async, ``ainvoke``): deep research: ``plan`` (LM) fans out 4 ``Send``\\ s
  to ``research``; each researcher does 3 sub-steps as a chain of Sends
  ``research`` -> ``search`` (an API call plus BM25) -> ``summarize`` (LM, 0.1-0.6 s)
  -> ``research`` ...; ``write`` (a deferred node) aggregates the notes.

Each app runs at 1 and 8 concurrent requests (async apps: ``asyncio.gather`` under a
semaphore; sync apps: ``invoke`` on a thread pool of that size) on four backends:

* ``langgraph``: ``builder.compile()``, default settings.
* ``langgraph+threads``: stock LangGraph given as many threads for node code as alto's
  process executor has. alto's ``process`` executor runs each stage (one per node) on
  one instance by default, a worker process that runs sync node code on a pool of the
  stage's ``threads`` (64 by default), so T = stages x 64 in all. Stock LangGraph
  runs sync nodes of an ``invoke`` on a pool made per ``invoke`` of
  ``config["max_concurrency"]`` threads (default ``min(32, cpu_count + 4)``): this
  backend passes ``max_concurrency=T``. Under
  ``ainvoke`` it runs sync nodes on the event loop's default executor, shared by all
  requests: this backend installs ``loop.set_default_executor(ThreadPoolExecutor(T))``.
  (Async nodes run on the event loop on every backend; threads do not matter to them.)
* ``alto``: ``builder.compile(backend="alto")``, the default executor (``auto``: node
  code in the app process, as no stage asks for worker processes).
* ``alto-process``: ``executor="process"``: every node in a worker process.

Every backend answers one request before timing (alto starts its processes then, and
each process that searches builds its BM25 index). The requests of a cell (8 at
concurrency 1, 32 at 8; ``--quick``: 4 and 16) run in 2 rounds, each round on every
backend in turn, the order rotated between rounds, so that all backends see the same
(shared, noisy) machine. Latency is per request, from the moment it starts (it got its
semaphore or thread) to its answer; throughput is requests over the wall time of the
rounds. Final states are compared with stock LangGraph's (message ids, which are
random, left out). With 8-32 requests a cell, P99 is about the maximum.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import functools
import gzip
import json
import math
import operator
import random
import re
import statistics
import sys
import time
import warnings
import zlib
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from langgraph.graph import START, StateGraph
from langgraph.types import Command, Send
from typing_extensions import TypedDict

import alto_langgraph
from alto_langgraph.errors import AltoFallbackWarning
from alto_langgraph.process.spec import DEFAULT_THREADS

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples" / "data"
RESULTS = Path(__file__).parent / "results"
SEED = 0
#: threads of one stage instance's pool for sync node code
POOL = DEFAULT_THREADS


# -- simulated model calls, CPU work, data -----------------------------------------------


def latency(key: str, base: float, spread: float) -> float:
    """A model call's duration: a fixed function of its input (not of the backend)."""
    return base + spread * (zlib.crc32(key.encode()) % 1000) / 1000


def cpu(seconds: float) -> None:
    """Burn this thread's CPU time (a thread waiting for the GIL does not advance it)."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def _jsonl(name: str) -> list[dict[str, Any]]:
    with gzip.open(DATA / name, "rt") as f:
        return [json.loads(line) for line in f]


@functools.cache
def passages() -> list[dict[str, str]]:
    return _jsonl("squad-v1.1-dev-passages.jsonl.gz")


@functools.cache
def questions() -> list[dict[str, Any]]:
    return _jsonl("squad-v1.1-dev-questions-sample500.jsonl.gz")


WORD = re.compile(r"[a-z0-9]+")
STOP = frozenset(
    "a an and are as at be by for from has he in is it its of on or that the to was were "
    "will with what which who whom when where why how did does do".split()
)


def tokens(text: str) -> list[str]:
    return [w for w in WORD.findall(text.lower()) if w not in STOP]


def bm25s_available() -> bool:
    try:
        import bm25s  # noqa: F401
    except ImportError:
        return False
    return True


class BM25:
    """Okapi BM25 (k1=1.5, b=0.75) in pure Python: the scorer when bm25s is missing."""

    def __init__(self, texts: list[str]) -> None:
        self.docs = [Counter(tokens(t)) for t in texts]
        self.lengths = [sum(d.values()) for d in self.docs]
        self.avg = sum(self.lengths) / len(self.lengths)
        df = Counter(t for d in self.docs for t in d)
        n = len(self.docs)
        self.idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}
        self.postings: dict[str, list[int]] = {}
        for i, d in enumerate(self.docs):
            for t in d:
                self.postings.setdefault(t, []).append(i)

    def top(self, query: str, k: int) -> list[tuple[int, float]]:
        scores: Counter[int] = Counter()
        for t in set(tokens(query)):
            for i in self.postings.get(t, ()):
                tf = self.docs[i][t]
                norm = tf + 1.5 * (1 - 0.75 + 0.75 * self.lengths[i] / self.avg)
                scores[i] += self.idf[t] * tf * 2.5 / norm
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        return [(i, round(s, 4)) for i, s in ranked]


class BM25s:
    """The same interface on bm25s (tokenized the same way)."""

    def __init__(self, texts: list[str]) -> None:
        import bm25s

        self.retriever = bm25s.BM25()
        self.retriever.index([tokens(t) for t in texts], show_progress=False)

    def top(self, query: str, k: int) -> list[tuple[int, float]]:
        q = [t for t in tokens(query) if t in self.retriever.vocab_dict] or ["the"]
        docs, scores = self.retriever.retrieve([q], k=k, show_progress=False)
        ranked = sorted(
            zip(docs[0].tolist(), scores[0].tolist(), strict=True), key=lambda d: (-d[1], d[0])
        )
        return [(int(i), round(float(s), 4)) for i, s in ranked if s > 0]


@functools.cache
def index() -> BM25 | BM25s:
    """The index of every passage, built once per process that searches."""
    texts = [p["text"] for p in passages()]
    return BM25s(texts) if bm25s_available() else BM25(texts)


def search(query: str, k: int = 3) -> list[dict[str, Any]]:
    return [
        {"id": passages()[i]["id"], "title": passages()[i]["title"], "score": s}
        for i, s in index().top(query, k)
    ]


def first_sentence(text: str) -> str:
    return re.split(r"(?<=[.!?])\s+", text.strip())[0]


@functools.cache
def text_of() -> dict[str, str]:
    return {p["id"]: p["text"] for p in passages()}


# -- (a) map-reduce: sync nodes ----------------------------------------------------------

MR_CHUNKS = 8


class MapReduce(TypedDict, total=False):
    doc: int
    chunks: list[str]
    summaries: Annotated[list[str], operator.add]
    report: str


class Chunk(TypedDict):
    i: int
    text: str


def mr_split(state: MapReduce) -> dict[str, Any]:
    rng = random.Random(SEED * 1000 + state["doc"])
    picked = rng.sample(range(len(passages())), MR_CHUNKS)
    cpu(0.002)
    return {"chunks": [passages()[i]["text"] for i in picked]}


def mr_fan_out(state: MapReduce) -> list[Send]:
    return [Send("summarize", {"i": i, "text": t}) for i, t in enumerate(state["chunks"])]


def mr_summarize(chunk: Chunk) -> dict[str, Any]:
    time.sleep(latency(chunk["text"], 0.15, 0.2))  # the model call
    cpu(0.005)  # prompt building, parsing the answer
    top = [w for w, _ in Counter(tokens(chunk["text"])).most_common(3)]
    return {"summaries": [f"{chunk['i']}: {' '.join(top)}"]}


def mr_reduce(state: MapReduce) -> dict[str, Any]:
    time.sleep(latency("|".join(state["summaries"]), 0.1, 0.1))
    cpu(0.002)
    return {"report": "; ".join(sorted(state["summaries"]))}


def map_reduce() -> StateGraph:
    g = StateGraph(MapReduce)
    g.add_node("split", mr_split)
    g.add_node("summarize", mr_summarize)
    g.add_node("reduce", mr_reduce)
    g.add_edge(START, "split")
    g.add_conditional_edges("split", mr_fan_out, ["summarize"])
    g.add_edge("summarize", "reduce")
    return g


# -- (b) ReAct agent: LangChain v1 create_agent, async -----------------------------------


class FakeToolModel(BaseChatModel):
    """A chat model that asks for tools for a few turns, then answers: what it says is a
    fixed function of the conversation, its latency too."""

    @property
    def _llm_type(self) -> str:
        return "fake-tool-model"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self

    def _reply(self, messages: list[BaseMessage]) -> AIMessage:
        question = next(m.content for m in messages if isinstance(m, HumanMessage))
        seen = [m for m in messages if isinstance(m, ToolMessage)]
        turn = sum(isinstance(m, AIMessage) for m in messages)
        rng = random.Random(f"{SEED}|{question}")
        turns = rng.randint(2, 4)
        cpu(0.002)  # parsing the reply
        if turn >= turns:
            facts = " / ".join(str(m.content)[:40] for m in seen)
            return AIMessage(content=f"Answer to {question!r} from {len(seen)} results: {facts}")
        words = tokens(str(question)) or ["none"]
        calls = []
        for j in range(rng.randint(1, 2) if turn else 1):
            word = words[(turn * 2 + j) % len(words)]
            name = "search" if (turn + j) % 2 == 0 else "lookup"
            calls.append({"name": name, "args": {"query": f"{word} {turn}"}, "id": f"c{turn}_{j}"})
        return AIMessage(content="", tool_calls=calls)

    def _generate(self, messages: list[BaseMessage], stop: Any = None, **kw: Any) -> ChatResult:
        time.sleep(latency(repr([m.content for m in messages]), 0.15, 0.15))
        return ChatResult(generations=[ChatGeneration(message=self._reply(messages))])

    async def _agenerate(
        self, messages: list[BaseMessage], stop: Any = None, **kw: Any
    ) -> ChatResult:
        await asyncio.sleep(latency(repr([m.content for m in messages]), 0.15, 0.15))
        return ChatResult(generations=[ChatGeneration(message=self._reply(messages))])


@tool("search")
def search_tool(query: str) -> str:
    """Search the encyclopedia (BM25 over SQuAD passages)."""
    hits = search(query, 2)
    return "; ".join(f"{h['title']} ({h['score']})" for h in hits) or "nothing found"


@tool
async def lookup(query: str) -> str:
    """Ask an external API about a topic."""
    await asyncio.sleep(latency(query, 0.05, 0.1))
    return f"{query}: {zlib.crc32(query.encode()) % 997}"


def react() -> Any:
    from langchain.agents import create_agent

    return create_agent(FakeToolModel(), [search_tool, lookup], system_prompt="Be brief.")


# -- (c) agentic RAG: sync retrieval, async model calls ----------------------------------


class Rag(TypedDict, total=False):
    question: str
    query: str
    docs: list[dict[str, Any]]
    relevant: bool
    tries: int
    answer: str


async def rag_generate_query(state: Rag) -> dict[str, Any]:
    await asyncio.sleep(latency(state["question"], 0.1, 0.1))
    cpu(0.002)
    return {"query": state["question"], "tries": 0}


def rag_retrieve(state: Rag) -> dict[str, Any]:
    return {"docs": search(state["query"], 3)}


async def rag_grade(state: Rag) -> dict[str, Any]:
    await asyncio.sleep(latency(state["query"] + "grade", 0.1, 0.1))
    cpu(0.002)
    words = set(tokens(state["question"]))
    best = max(
        (len(words & set(tokens(text_of()[d["id"]]))) / max(1, len(words)) for d in state["docs"]),
        default=0.0,
    )
    return {"relevant": best >= 0.6}


def rag_route(state: Rag) -> str:
    return "generate" if state["relevant"] or state["tries"] >= 2 else "rewrite"


async def rag_rewrite(state: Rag) -> dict[str, Any]:
    await asyncio.sleep(latency(state["query"] + "rewrite", 0.1, 0.1))
    cpu(0.002)
    # keep the question's rarest words (by the index's document frequency)
    words = sorted(set(tokens(state["question"])), key=lambda w: (len(w) < 4, -len(w), w))
    return {"query": " ".join(words[: 4 - state["tries"]]), "tries": state["tries"] + 1}


async def rag_generate(state: Rag) -> dict[str, Any]:
    await asyncio.sleep(latency(state["query"] + "answer", 0.2, 0.2))
    cpu(0.003)
    top = state["docs"][0]["id"] if state["docs"] else None
    return {"answer": first_sentence(text_of()[top]) if top else "I don't know."}


def rag() -> StateGraph:
    g = StateGraph(Rag)
    g.add_node("generate_query", rag_generate_query)
    g.add_node("retrieve", rag_retrieve)
    g.add_node("grade", rag_grade)
    g.add_node("rewrite", rag_rewrite)
    g.add_node("generate", rag_generate)
    g.add_edge(START, "generate_query")
    g.add_edge("generate_query", "retrieve")
    g.add_edge("retrieve", "grade")
    g.add_conditional_edges("grade", rag_route, ["generate", "rewrite"])
    g.add_edge("rewrite", "retrieve")
    return g


# -- (d) deep research: a fan-out of researchers, each a chain of Sends, async -----------

RESEARCHERS = 4
SUBSTEPS = 3


class Research(TypedDict, total=False):
    topic: str
    notes: Annotated[list[str], operator.add]
    report: str


class Step(TypedDict):
    topic: str
    angle: str
    step: int
    query: str
    found: list[str]


async def rs_plan(state: Research) -> dict[str, Any]:
    await asyncio.sleep(latency(state["topic"], 0.15, 0.1))
    cpu(0.002)
    return {}


def rs_fan_out(state: Research) -> list[Send]:
    words = tokens(state["topic"]) or ["topic"]
    return [
        Send(
            "research",
            {
                "topic": state["topic"],
                "angle": words[i % len(words)],
                "step": 0,
                "query": "",
                "found": [],
            },
        )
        for i in range(RESEARCHERS)
    ]


async def rs_research(task: Step) -> Command:
    """Decide the next search (an LM call)."""
    await asyncio.sleep(latency(f"{task['angle']}{task['step']}{task['found']}", 0.05, 0.1))
    cpu(0.002)
    found = " ".join(task["found"][-1:])
    query = f"{task['angle']} {task['topic']} {found}"
    return Command(goto=Send("search", {**task, "query": query}))


async def rs_search(task: Step) -> Command:
    """A web-search API call, then BM25 over what it returned (here: the corpus)."""
    await asyncio.sleep(latency(task["query"], 0.05, 0.05))
    hits = search(task["query"], 2)
    return Command(goto=Send("summarize", {**task, "found": [h["title"] for h in hits]}))


async def rs_summarize(task: Step) -> Command:
    """Summarize what the search found (an LM call; some take much longer)."""
    await asyncio.sleep(latency(f"{task['query']}sum", 0.1, 0.5))
    cpu(0.003)
    note = f"{task['angle']}#{task['step']}: {', '.join(task['found'])}"
    if task["step"] + 1 < SUBSTEPS:
        nxt = {**task, "step": task["step"] + 1, "found": task["found"]}
        return Command(update={"notes": [note]}, goto=Send("research", nxt))
    return Command(update={"notes": [note]})


async def rs_write(state: Research) -> dict[str, Any]:
    await asyncio.sleep(latency("|".join(state["notes"]), 0.2, 0.1))
    cpu(0.003)
    return {"report": f"{state['topic']}: " + " | ".join(sorted(state["notes"]))}


def research() -> StateGraph:
    g = StateGraph(Research)
    g.add_node("plan", rs_plan)
    g.add_node("research", rs_research)
    g.add_node("search", rs_search)
    g.add_node("summarize", rs_summarize)
    g.add_node("write", rs_write, defer=True)
    g.add_edge(START, "plan")
    g.add_conditional_edges("plan", rs_fan_out, ["research"])
    g.add_edge("summarize", "write")
    return g


# -- the apps, their inputs and what of their answers is compared ------------------------


def _question(i: int) -> str:
    return random.Random(SEED * 1000 + i).choice(questions())["question"]


def _canon(value: Any) -> Any:
    """A final state without what is random on every run (message ids)."""
    if isinstance(value, dict):
        return {k: _canon(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_canon(v) for v in value]
    if isinstance(value, BaseMessage):
        out = {"type": value.type, "content": value.content}
        for attr in ("tool_calls", "tool_call_id", "name", "status"):
            if getattr(value, attr, None):
                out[attr] = _canon(getattr(value, attr))
        return out
    return value


APPS: dict[str, dict[str, Any]] = {
    "map_reduce": {
        "build": map_reduce,
        "sync": True,
        "input": lambda i: {"doc": i},
    },
    "react": {
        "build": react,
        "sync": False,
        "input": lambda i: {"messages": [HumanMessage(_question(i))]},
    },
    "rag": {
        "build": rag,
        "sync": False,
        "input": lambda i: {"question": _question(i)},
    },
    "research": {
        "build": research,
        "sync": False,
        "input": lambda i: {"topic": _question(i)},
    },
}

BACKENDS = ("langgraph", "langgraph+threads", "alto", "alto-process")


def stages(app: str) -> int:
    """alto's stages of ``app``: one per node."""
    built = APPS[app]["build"]()
    return len((built if isinstance(built, StateGraph) else built.builder).nodes)


def compile_app(app: str, backend: str) -> Any:
    built = APPS[app]["build"]()
    if backend.startswith("langgraph"):
        return built.compile() if isinstance(built, StateGraph) else built
    options = {"executor": "process", "start": "compile"} if backend == "alto-process" else {}
    return alto_langgraph.compile(built, **options)


# -- running ------------------------------------------------------------------------------


def _stats(latencies: list[float], wall: float) -> dict[str, Any]:
    xs = sorted(latencies)

    def pct(p: float) -> float:  # nearest rank
        return xs[min(len(xs) - 1, max(0, math.ceil(p / 100 * len(xs)) - 1))]

    return {
        "requests": len(xs),
        "mean_s": statistics.fmean(xs),
        "p50_s": statistics.median(xs),
        "p99_s": pct(99),
        "wall_s": wall,
        "req_per_s": len(xs) / wall,
    }


def run_sync(graph: Any, inputs: list[Any], conc: int, config: dict[str, Any]) -> tuple:
    latencies: list[float] = [0.0] * len(inputs)
    answers: list[Any] = [None] * len(inputs)

    def one(i: int) -> None:
        t0 = time.perf_counter()
        answers[i] = graph.invoke(inputs[i], config)
        latencies[i] = time.perf_counter() - t0

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(conc) as pool:
        for f in [pool.submit(one, i) for i in range(len(inputs))]:
            f.result()
    return latencies, time.perf_counter() - t0, answers


async def run_async(graph: Any, inputs: list[Any], conc: int, config: dict[str, Any]) -> tuple:
    latencies: list[float] = [0.0] * len(inputs)
    answers: list[Any] = [None] * len(inputs)
    limit = asyncio.Semaphore(conc)

    async def one(i: int) -> None:
        async with limit:
            t0 = time.perf_counter()
            answers[i] = await graph.ainvoke(inputs[i], config)
            latencies[i] = time.perf_counter() - t0

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(len(inputs))))
    return latencies, time.perf_counter() - t0, answers


ROUNDS = 2


class Runner:
    """One app compiled for one backend, with the config and threads that backend runs
    it with."""

    def __init__(self, app: str, backend: str) -> None:
        self.spec = APPS[app]
        self.backend = backend
        self.graph = compile_app(app, backend)
        self.threads = stages(app) * POOL
        self.config: dict[str, Any] = {"recursion_limit": 100}
        if backend == "langgraph+threads" and self.spec["sync"]:
            self.config["max_concurrency"] = self.threads

    def batch(self, inputs: list[Any], conc: int) -> tuple[list[float], float, list[Any]]:
        if self.spec["sync"]:
            return run_sync(self.graph, inputs, conc, self.config)
        return asyncio.run(self._abatch(inputs, conc))  # a fresh loop (and default pool)

    async def _abatch(self, inputs: list[Any], conc: int) -> tuple:
        if self.backend == "langgraph+threads":
            asyncio.get_running_loop().set_default_executor(
                concurrent.futures.ThreadPoolExecutor(self.threads)
            )
        return await run_async(self.graph, inputs, conc, self.config)

    def close(self) -> None:
        if hasattr(self.graph, "close"):
            self.graph.close()


def measure(
    app: str, backends: list[str], cells: list[tuple[int, int]]
) -> dict[str, dict[int, dict[str, Any]]]:
    """Every backend and concurrency of one app: per concurrency, the requests in
    ``ROUNDS`` rounds, each round on every backend in turn (the order rotated from round
    to round), so that all backends see the same machine. One deployment per backend."""
    runners = {b: Runner(app, b) for b in backends}
    out: dict[str, dict[int, dict[str, Any]]] = {b: {} for b in backends}
    try:
        for r in runners.values():  # warm-up: processes started, indexes built
            r.batch([APPS[app]["input"](10_000)], 1)
        for conc, n in cells:
            inputs = [APPS[app]["input"](i) for i in range(n)]
            acc = {b: ([], 0.0, []) for b in backends}
            for rnd in range(ROUNDS):
                part = inputs[rnd * n // ROUNDS : (rnd + 1) * n // ROUNDS]
                shift = rnd * len(backends) // ROUNDS
                for b in backends[shift:] + backends[:shift]:
                    lat, wall, answers = runners[b].batch(part, conc)
                    acc[b] = (acc[b][0] + lat, acc[b][1] + wall, acc[b][2] + answers)
            for b, (lat, wall, answers) in acc.items():
                out[b][conc] = {**_stats(lat, wall), "answers": answers}
    finally:
        for r in runners.values():
            r.close()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick",
        action="store_true",
        help="fewer requests per cell (about 3 minutes instead of 5)",
    )
    p.add_argument("--apps", default=",".join(APPS), help="comma-separated, of: " + ",".join(APPS))
    p.add_argument("--backends", default=",".join(BACKENDS))
    args = p.parse_args(argv)
    # a run that falls back to stock LangGraph would not measure alto
    warnings.simplefilter("error", AltoFallbackWarning)
    cells = [(1, 4), (8, 16)] if args.quick else [(1, 8), (8, 32)]
    apps = args.apps.split(",")
    backends = args.backends.split(",")
    scorer = "bm25s" if bm25s_available() else "pure-Python BM25"
    print(f"{len(passages())} passages, {scorer}; {POOL} threads per pool; cells {cells}")
    rows: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    for app in apps:
        t0 = time.perf_counter()
        results = measure(app, backends, cells)
        print(
            f"  {app}: {stages(app)} stages (langgraph+threads: {stages(app) * POOL} threads), "
            f"{time.perf_counter() - t0:.1f} s",
            flush=True,
        )
        base = results.get("langgraph")
        for conc, _ in cells:
            for backend in backends:
                r = dict(results[backend][conc])
                answers = r.pop("answers")
                row = {
                    "app": app,
                    "sync": APPS[app]["sync"],
                    "concurrency": conc,
                    "backend": backend,
                    **r,
                }
                if base is not None:
                    b = base[conc]
                    row["mean_vs_langgraph"] = r["mean_s"] / b["mean_s"]
                    row["throughput_vs_langgraph"] = r["req_per_s"] / b["req_per_s"]
                    row["same_answers"] = sum(
                        _canon(x) == _canon(y) for x, y in zip(answers, b["answers"], strict=True)
                    )
                    for i, (x, y) in enumerate(zip(answers, b["answers"], strict=True)):
                        if _canon(x) != _canon(y):
                            print(
                                f"  DIFFERENT: {app} / {backend} / {conc} request {i}:\n"
                                f"    langgraph: {_canon(y)!r}\n    {backend}: {_canon(x)!r}"
                            )
                rows.append(row)
    total = time.perf_counter() - t_start
    print()
    for backend in backends[1:]:
        mine = [r for r in rows if r["backend"] == backend and "same_answers" in r]
        same, n = sum(r["same_answers"] for r in mine), sum(r["requests"] for r in mine)
        print(f"{backend}: same answers as langgraph: {same}/{n}")
    print(f"{scorer}; {total:.0f} s in all\n")
    print(
        "| app | nodes | concurrent | backend | mean s | p50 s | p99 s | req/s "
        "| mean vs LangGraph | req/s vs LangGraph | same answers |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['app']} | {'sync' if r['sync'] else 'async'} | {r['concurrency']} "
            f"| {r['backend']} | {r['mean_s']:.3f} | {r['p50_s']:.3f} | {r['p99_s']:.3f} "
            f"| {r['req_per_s']:.2f} | {r.get('mean_vs_langgraph', float('nan')):.2f}x "
            f"| {r.get('throughput_vs_langgraph', float('nan')):.2f}x "
            f"| {r.get('same_answers', '-')}/{r['requests']} |"
        )
    RESULTS.mkdir(exist_ok=True)
    out = {"scorer": scorer, "pool_threads": POOL, "cells": cells, "seconds": total, "rows": rows}
    (RESULTS / "apps.json").write_text(json.dumps(out, indent=2) + "\n")
    bad = [r for r in rows if r.get("same_answers", r["requests"]) != r["requests"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
