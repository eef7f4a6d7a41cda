"""Apps with memory (a checkpointer) on stock LangGraph and on alto, side by side in one run.

    python comparisons/memory.py [--repeat 7] [--quick]

Three measurements (issue 12), every one also without a checkpointer as a reference:

* ``chat``: a LangChain v1 ``create_agent`` chat agent with memory, 5 turns on one
  thread of a ``SqliteSaver`` (a temp file). Its model is a deterministic fake (20 ms a
  call): asked a question it calls 3 tools at once (``slow_api``, an 80 ms call, and two
  quick ones), given their results it answers. Per-turn latency. Without a checkpointer
  the caller carries the history into each turn, as users do without memory.
* ``hitl``: a research graph with a human in the loop: ``plan`` sends 4 researchers
  (10/30/50/80 ms); each sends its finding on to ``summarize`` (60/40/30/20 ms: the quick
  searches return the long documents), so run-ahead can start a fast researcher's summary
  while the slow sibling still runs; ``approve`` calls ``interrupt()``, the caller resumes
  with ``Command(resume="yes")``, ``write`` writes up. First call (to the interrupt) and
  resume on a ``SqliteSaver``; without a checkpointer ``approve`` approves by itself.
  Stock pays 80 + 60 ms for research and summaries, alto max(r + s) = 100 ms.
* ``chain``: per-step cost of checkpointing: a 100-step chain of trivial nodes without a
  checkpointer, with ``InMemorySaver`` and with ``SqliteSaver``; what a checkpointer adds
  per step on each backend, and alto's / stock's (target: at most 1.0).

Backends are interleaved run by run (both see the same machine); the tables give the
median, the quartiles and alto / stock of the medians. Answers (messages, final
states) must be equal between backends, or the script fails. Writes
``comparisons/results/memory.json`` and ``memory.png``.
"""

from __future__ import annotations

import argparse
import gc
import json
import operator
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import START, StateGraph
from langgraph.types import Command, Send, interrupt
from typing_extensions import TypedDict

import alto_langgraph

RESULTS = Path(__file__).parent / "results"
BACKENDS = ("stock", "alto")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@contextmanager
def sqlite_saver(folder: str) -> Iterator[SqliteSaver]:
    """A SqliteSaver on a fresh file (as tests/memory_harness.py builds it)."""
    conn = sqlite3.connect(Path(folder) / f"{uuid.uuid4().hex}.db", check_same_thread=False)
    try:
        yield SqliteSaver(conn)
    finally:
        conn.close()


def compile_both(build: Callable[[], Any], **kwargs: Any) -> dict[str, Any]:
    return {"stock": build().compile(**kwargs), "alto": build().compile(backend="alto", **kwargs)}


def in_turn(rep: int) -> tuple[str, ...]:
    """The backends in the order of round ``rep``: alternated, so neither always runs
    second (after the other's garbage, background checkpoint writes, a warm cache)."""
    return BACKENDS if rep % 2 == 0 else BACKENDS[::-1]


# -- (1) chat agent with memory ------------------------------------------------------------


class FakeChat(BaseChatModel):
    """A deterministic chat model: a question gets 3 tool calls, tool results an answer.
    A pure function of the conversation (a miss may call it twice: no canned sequence)."""

    @property
    def _llm_type(self) -> str:
        return "fake-memory-chat"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self

    def _generate(self, messages: list[BaseMessage], stop: Any = None, **kw: Any) -> ChatResult:
        time.sleep(0.02)  # the model's latency
        last = messages[-1]
        turn = sum(isinstance(m, HumanMessage) for m in messages)
        if isinstance(last, HumanMessage):
            q = str(last.content)
            calls = [
                {"name": name, "args": {"query": q}, "id": f"call_{turn}_{name}"}
                for name in ("slow_api", "calculator", "clock")
            ]
            msg = AIMessage(content="", tool_calls=calls)
        else:
            results = [str(m.content) for m in messages if isinstance(m, ToolMessage)][-3:]
            msg = AIMessage(content=f"turn {turn}, {len(messages)} messages: {'; '.join(results)}")
        return ChatResult(generations=[ChatGeneration(message=msg)])


@tool
def slow_api(query: str) -> str:
    """Ask a slow external API."""
    time.sleep(0.08)
    return f"api({query})"


@tool
def calculator(query: str) -> str:
    """Count the words of the query."""
    return f"words={len(query.split())}"


@tool
def clock(query: str) -> str:
    """A quick lookup."""
    return f"len={len(query)}"


def chat_agent() -> Any:
    from langchain.agents import create_agent

    return create_agent(FakeChat(), [slow_api, calculator, clock], system_prompt="Be brief.")


def message_view(messages: list[BaseMessage]) -> list[Any]:
    """What the user sees of the messages; ids (random per run) left out."""
    return [
        (m.type, m.content, getattr(m, "tool_calls", None), getattr(m, "tool_call_id", None))
        for m in messages
    ]


def bench_chat(repeat: int, turns: int, folder: str) -> list[dict[str, Any]]:
    rows = []
    for saver in ("none", "sqlite"):
        with sqlite_saver(folder) as cp:
            kw = {"checkpointer": cp} if saver == "sqlite" else {}
            # create_agent returns a compiled graph: compile its builder on each backend
            apps = compile_both(lambda: chat_agent().builder, **kw)
            per_turn: dict[str, list[float]] = {b: [] for b in BACKENDS}
            for rep in range(repeat + 1):  # the first conversation warms up, not timed
                answers: dict[str, Any] = {}
                for backend in in_turn(rep):
                    app = apps[backend]
                    cfg = {"configurable": {"thread_id": uuid.uuid4().hex}}
                    history: list[BaseMessage] = []
                    for t in range(turns):
                        q = HumanMessage(f"question {t}: how many words here?")
                        # without memory the caller carries the conversation
                        msgs = [q] if kw else [*history, q]
                        t0 = time.perf_counter()
                        history = app.invoke({"messages": msgs}, cfg)["messages"]
                        if rep:
                            per_turn[backend].append(time.perf_counter() - t0)
                    answers[backend] = message_view(history)
                if answers["stock"] != answers["alto"]:
                    raise AssertionError(f"chat/{saver}: messages differ between backends")
                log(f"  chat/{saver}: conversation {rep}/{repeat} done")
            apps["alto"].close()
        rows.append(row("chat", saver, "per turn", per_turn))
    return rows


# -- (2) human in the loop, Send fan-outs --------------------------------------------------


class Research(TypedDict, total=False):
    topic: str
    findings: Annotated[list, operator.add]
    summaries: Annotated[list, operator.add]
    approved: str
    report: str


RESEARCH_MS = (10, 30, 50, 80)
SUMMARY_MS = (60, 40, 30, 20)  # a quick search returns a long document to summarise


def research_graph(ask: bool) -> StateGraph:
    def plan(s: Research) -> dict:
        time.sleep(0.01)
        return {"findings": []}

    def fan_out(s: Research) -> list[Send]:
        return [Send("research", {"topic": s["topic"], "i": i}) for i in range(len(RESEARCH_MS))]

    def research(p: dict) -> Command:
        time.sleep(RESEARCH_MS[p["i"]] / 1000)
        finding = f"{p['topic']}#{p['i']}"
        # the summary is a Send of its own: it depends on its payload only, so it can run
        # ahead of its step while slower researchers still run
        return Command(
            update={"findings": [finding]},
            goto=Send("summarize", {"finding": finding, "i": p["i"]}),
        )

    def summarize(p: dict) -> dict:
        time.sleep(SUMMARY_MS[p["i"]] / 1000)
        return {"summaries": [f"summary of {p['finding']}"]}

    def approve(s: Research) -> dict:
        answer = interrupt(f"approve {len(s['summaries'])} summaries?") if ask else "yes"
        return {"approved": answer}

    def write(s: Research) -> dict:
        time.sleep(0.02)
        return {"report": f"{s['approved']}: " + " | ".join(s["summaries"])}

    g = StateGraph(Research)
    for fn in (plan, research, summarize, approve, write):
        g.add_node(fn)  # named after the function
    g.add_edge(START, "plan")
    g.add_conditional_edges("plan", fan_out, ["research"])
    g.add_edge("summarize", "approve")
    g.add_edge("approve", "write")
    return g


def bench_hitl(repeat: int, folder: str) -> list[dict[str, Any]]:
    rows = []
    inp = {"topic": "checkpointing"}
    for saver in ("none", "sqlite"):
        with sqlite_saver(folder) as cp:
            ask = saver == "sqlite"
            kw = {"checkpointer": cp} if ask else {}
            apps = compile_both(lambda ask=ask: research_graph(ask), **kw)
            first: dict[str, list[float]] = {b: [] for b in BACKENDS}
            resume: dict[str, list[float]] = {b: [] for b in BACKENDS}
            total: dict[str, list[float]] = {b: [] for b in BACKENDS}
            finals: dict[str, Any] = {}
            for rep in range(repeat + 1):  # the first round warms up (alto learns), not timed
                for backend in in_turn(rep):
                    app = apps[backend]
                    cfg = {"configurable": {"thread_id": uuid.uuid4().hex}}
                    t0 = time.perf_counter()
                    out = app.invoke(inp, cfg)
                    t1 = time.perf_counter()
                    if ask:
                        assert "__interrupt__" in out, out
                        out = app.invoke(Command(resume="yes"), cfg)
                    t2 = time.perf_counter()
                    finals[backend] = out
                    if rep:
                        first[backend].append(t1 - t0)
                        resume[backend].append(t2 - t1)
                        total[backend].append(t2 - t0)
                if finals["stock"] != finals["alto"]:
                    raise AssertionError(f"hitl/{saver}: {finals['stock']} != {finals['alto']}")
            stats = apps["alto"].run_ahead_stats()
            apps["alto"].close()
        extra = {k: sum(s[k] for s in stats.values()) for k in ("run_ahead", "missed", "held")}
        if ask:
            rows.append(row("hitl", saver, "first call", first, **extra))
            rows.append(row("hitl", saver, "resume", resume, **extra))
        rows.append(row("hitl", saver, "total", total, **extra))
        log(f"  hitl/{saver}: {repeat} rounds done, alto ran ahead {extra}")
    return rows


# -- (3) per-step checkpoint cost ----------------------------------------------------------


class Count(TypedDict):
    x: int


def chain(steps: int) -> StateGraph:
    g = StateGraph(Count)
    prev = START
    for i in range(steps):
        g.add_node(f"n{i}", lambda s: {"x": s["x"] + 1})
        g.add_edge(prev, f"n{i}")
        prev = f"n{i}"
    return g


def bench_chain(repeat: int, steps: int, folder: str) -> list[dict[str, Any]]:
    with sqlite_saver(folder) as sq:
        savers = {"none": None, "memory": InMemorySaver(), "sqlite": sq}
        apps = {
            (s, b): app
            for s, cp in savers.items()
            for b, app in compile_both(lambda: chain(steps), checkpointer=cp).items()
        }
        times: dict[tuple[str, str], list[float]] = {k: [] for k in apps}
        for rep in range(repeat + 1):  # the first round warms up
            for key in [(s, b) for s in savers for b in in_turn(rep)]:
                app = apps[key]
                cfg = {
                    "configurable": {"thread_id": uuid.uuid4().hex},
                    "recursion_limit": steps + 10,
                }
                gc.collect()  # one run's garbage out of the next one's time
                t0 = time.perf_counter()
                out = app.invoke({"x": 0}, cfg)
                if rep:
                    times[key].append(time.perf_counter() - t0)
                if out != {"x": steps}:
                    raise AssertionError(f"chain {key}: {out}")
            if rep % 10 == 0:
                log(f"  chain: round {rep}/{repeat}")
        for key, app in apps.items():
            if key[1] == "alto":
                app.close()
    rows = []
    for s in savers:
        r = row("chain", s, "per step", {b: [t / steps for t in times[(s, b)]] for b in BACKENDS})
        if s != "none":  # what the checkpointer adds per step, on each backend
            added = {b: r[f"{b}_ms"] - rows[0][f"{b}_ms"] for b in BACKENDS}  # rows[0]: none
            r["stock_added_us"] = round(added["stock"] * 1e3, 1)
            r["alto_added_us"] = round(added["alto"] * 1e3, 1)
            r["added_ratio"] = round(added["alto"] / added["stock"], 3)
        rows.append(r)
    return rows


# -- tables and plot -----------------------------------------------------------------------


def row(graph: str, saver: str, what: str, times: dict[str, list[float]], **extra: Any) -> dict:
    """Per backend the median and quartiles (ms); alto / stock of the medians, and the
    quartiles of the paired ratios (alto's run over stock's of the same round). Quartiles,
    not min-max: on a shared machine the extremes are other people's jobs."""
    r = {"graph": graph, "saver": saver, "what": what, "n": len(times["stock"]), **extra}
    for b in BACKENDS:
        q1, med, q3 = statistics.quantiles(times[b], n=4)
        r[f"{b}_ms"], r[f"{b}_p25_ms"], r[f"{b}_p75_ms"] = (
            round(v * 1e3, 4) for v in (med, q1, q3)
        )
    paired = [a / s for a, s in zip(times["alto"], times["stock"], strict=True)]
    q1, _, q3 = statistics.quantiles(paired, n=4)
    r["ratio"] = round(statistics.median(times["alto"]) / statistics.median(times["stock"]), 3)
    r["ratio_p25"], r["ratio_p75"] = round(q1, 3), round(q3, 3)
    return r


def print_tables(rows: list[dict[str, Any]]) -> None:
    print(
        "| graph | checkpointer | latency | n | stock median (p25-p75) ms "
        "| alto median (p25-p75) ms | alto / stock (paired p25-p75) |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['graph']} | {r['saver']} | {r['what']} | {r['n']} "
            f"| {r['stock_ms']:.3f} ({r['stock_p25_ms']:.3f}-{r['stock_p75_ms']:.3f}) "
            f"| {r['alto_ms']:.3f} ({r['alto_p25_ms']:.3f}-{r['alto_p75_ms']:.3f}) "
            f"| {r['ratio']:.3f} ({r['ratio_p25']:.2f}-{r['ratio_p75']:.2f}) |"
        )
    print()
    print("| checkpointer | added per step, stock | added per step, alto | alto / stock |")
    print("|---|---|---|---|")
    for r in rows:
        if "added_ratio" in r:
            print(
                f"| {r['saver']} | {r['stock_added_us']} us | {r['alto_added_us']} us "
                f"| {r['added_ratio']} |"
            )


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no plot (pip install -e '.[bench]')")
        return
    apps = [r for r in rows if r["graph"] != "chain"]
    steps = [r for r in rows if r["graph"] == "chain"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [2, 1]})
    xs = range(len(apps))
    ratios = [r["ratio"] for r in apps]
    err = [
        [max(0, r["ratio"] - r["ratio_p25"]) for r in apps],
        [max(0, r["ratio_p75"] - r["ratio"]) for r in apps],
    ]
    ax1.bar(xs, ratios, 0.6, color="tab:orange", yerr=err, capsize=3)
    ax1.axhline(1.0, color="black", lw=0.8, ls="--", label="stock LangGraph")
    ax1.set_xticks(list(xs), [f"{r['graph']}\n{r['saver']}\n{r['what']}" for r in apps], fontsize=7)
    ax1.set_ylabel("alto / stock latency")
    ax1.set_title(
        "Apps: alto / stock, medians (bars: paired quartiles; lower is better)", fontsize=9
    )
    ax1.legend(loc="lower right")
    w = 0.38
    xs2 = range(len(steps))
    ax2.bar([x - w / 2 for x in xs2], [r["stock_ms"] * 1000 for r in steps], w, label="LangGraph")
    ax2.bar([x + w / 2 for x in xs2], [r["alto_ms"] * 1000 for r in steps], w, label="alto")
    ax2.set_xticks(list(xs2), [r["saver"] for r in steps])
    ax2.set_ylabel("us per step")
    ax2.set_title("Chain of trivial nodes: time per step by checkpointer", fontsize=9)
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="2 repeats, 3 turns, 30 steps")
    args = parser.parse_args()
    repeat = 2 if args.quick else args.repeat
    turns, steps = (3, 30) if args.quick else (5, 100)
    # a fallback to stock would make the comparison meaningless: fail loudly instead
    warnings.simplefilter("error", alto_langgraph.AltoFallbackWarning)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        log(f"chat agent, {turns} turns, {repeat} conversations per backend:")
        rows = bench_chat(repeat, turns, folder)
        log(f"human in the loop, {repeat * 2} rounds:")
        rows += bench_hitl(repeat * 2, folder)
        log(f"chain of {steps}, {repeat * 6} rounds:")
        rows += bench_chain(repeat * 6, steps, folder)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "memory.json").write_text(json.dumps(rows, indent=2) + "\n")
    plot(rows, RESULTS / "memory.png")
    print_tables(rows)
    log(f"same answers on both backends everywhere; {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
