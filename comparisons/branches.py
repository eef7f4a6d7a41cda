"""Branch-local progress, measured: a fast branch no longer waits for an unrelated slow
sibling. LangGraph and alto side by side, in one run.

    python comparisons/branches.py [--repeat 5] [--quick]

Shapes (node times are sleeps; ``sync`` nodes under ``invoke``, ``async`` nodes under
``ainvoke``):

* ``fork``: ``a -> (b 0.1 s -> d 0.3 s, c 1.0 s)`` (langgraph issue 4979 "d will wait
  for c"). Critical path 1.0 s; stock pays 1.3 s.
* ``chains``: ``a1 -> a2 -> a3`` (0.3 s each) and ``b1 (1.0 s) -> b2 (0.1 s)``, joined by
  ``add_edge(["a3", "b2"], "join")``. Critical path 1.1 s; stock pays 1.6 s.
* ``research``: a realistic app on a simulated LM (a sleep whose length is a fixed
  function of the prompt): ``plan`` fans out by static edges to a research branch
  (``search`` 0.2 s -> ``read`` 0.4 s -> ``notes``, an LM call of 0.3 s) and a critique
  branch (``critique``, an LM call of 1.0 s, then ``sources`` 0.1 s); ``write`` joins
  both with a waiting edge and ``revise`` (0.2 s) reads what both wrote. The research
  branch reads only its own keys, so it runs ahead and is adopted; ``revise`` runs at
  its own step (its trigger is the join). Critical path: 1.1 s + write + revise.
* ``crosstalk``: like ``fork``, but ``d`` reads the key ``c`` writes: on the first
  request it runs ahead, misses (a key it read changed) and runs again at its step;
  from then on the app knows, and holds ``d`` at its step while ``c`` runs. Same
  answers, stock's latency.

Then the per-step cost of alto's bookkeeping on a 100-step chain of trivial nodes
(stock vs alto, and alto with ``run_ahead=False``), and of read tracking on a chain
that runs ahead all the way (two 50-step chains side by side, each node reading its
own key: every task runs ahead on a state view, is checked and adopted).

Writes ``comparisons/results/branches.json`` and ``branches.png`` (latency against the
critical path per shape). Target (issue 11): each shape within 5% of its critical
path, same answers everywhere, read tracking under 5% on chains.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import operator
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from langgraph.graph import START, StateGraph
from typing_extensions import TypedDict

import alto_langgraph  # noqa: F401

RESULTS = Path(__file__).parent / "results"


class S(TypedDict, total=False):
    log: Annotated[list, operator.add]
    notes: str
    critique: str
    sources: list
    draft: str
    final: str
    seen: Any


def _sleeper(name: str, secs: float, is_async: bool, update: Callable[[Any], dict] | None = None):
    upd = update or (lambda s: {"log": [name]})
    if is_async:

        async def anode(s: Any) -> dict:
            await asyncio.sleep(secs)
            return upd(s)

        anode.__name__ = name
        return anode

    def node(s: Any) -> dict:
        time.sleep(secs)
        return upd(s)

    node.__name__ = name
    return node


def lm_seconds(prompt: str, base: float) -> float:
    """The simulated LM's latency: a fixed function of its prompt (same on every backend)."""
    return base + (sum(map(ord, prompt)) % 7) / 1000


def fork(is_async: bool, crosstalk: bool = False) -> StateGraph:
    g = StateGraph(S)
    g.add_node("a", _sleeper("a", 0.0, is_async))
    g.add_node("b", _sleeper("b", 0.1, is_async))
    g.add_node("c", _sleeper("c", 1.0, is_async, lambda s: {"log": ["c"], "critique": "c"}))
    if crosstalk:  # d reads what c writes: a miss
        d = _sleeper("d", 0.3, is_async, lambda s: {"log": ["d"], "seen": s.get("critique")})
    else:
        d = _sleeper("d", 0.3, is_async)
    g.add_node("d", d)
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    g.add_edge("a", "c")
    g.add_edge("b", "d")
    return g


def chains(is_async: bool) -> StateGraph:
    g = StateGraph(S)
    for name, secs in (("a1", 0.3), ("a2", 0.3), ("a3", 0.3), ("b1", 1.0), ("b2", 0.1)):
        g.add_node(name, _sleeper(name, secs, is_async))
    g.add_node("join", _sleeper("join", 0.0, is_async))
    g.add_edge(START, "a1")
    g.add_edge(START, "b1")
    g.add_edge("a1", "a2")
    g.add_edge("a2", "a3")
    g.add_edge("b1", "b2")
    g.add_edge(["a3", "b2"], "join")
    return g


def research(is_async: bool) -> StateGraph:
    def lm(name: str, base: float, prompt: Callable[[Any], str], key: str):
        def update(s: Any) -> dict:
            return {key: f"{name}({prompt(s)[:40]})", "log": [name]}

        def timed(s: Any) -> float:
            return lm_seconds(prompt(s), base)

        if is_async:

            async def anode(s: Any) -> dict:
                await asyncio.sleep(timed(s))
                return update(s)

            return anode

        def node(s: Any) -> dict:
            time.sleep(timed(s))
            return update(s)

        return node

    g = StateGraph(S)
    g.add_node("plan", _sleeper("plan", 0.05, is_async))
    g.add_node("search", _sleeper("search", 0.2, is_async))
    g.add_node(
        "read", _sleeper("read", 0.4, is_async, lambda s: {"log": ["read"], "sources": ["p1"]})
    )
    g.add_node("notes", lm("notes", 0.3, lambda s: f"notes on {s['sources']}", "notes"))
    g.add_node("critique", lm("critique", 1.0, lambda s: "critique the plan", "critique"))
    g.add_node("check", _sleeper("check", 0.1, is_async))
    g.add_node("write", lm("write", 0.1, lambda s: f"{s['notes']} {s['critique']}", "draft"))
    g.add_node("revise", lm("revise", 0.2, lambda s: s["draft"], "final"))
    g.add_edge(START, "plan")
    g.add_edge("plan", "search")
    g.add_edge("plan", "critique")
    g.add_edge("search", "read")
    g.add_edge("read", "notes")
    g.add_edge("critique", "check")
    g.add_edge(["notes", "check"], "write")
    g.add_edge("write", "revise")
    return g


SHAPES: dict[str, tuple[Callable[[bool], StateGraph], float]] = {
    # shape -> (builder, critical path in seconds, simulated LM jitter aside)
    "fork": (fork, 1.0),
    "chains": (chains, 1.1),
    "research": (research, 0.05 + 1.0 + 0.1 + 0.1 + 0.2),
    "crosstalk": (lambda a: fork(a, crosstalk=True), 1.0),
}


def time_once(app: Any, is_async: bool) -> tuple[float, Any]:
    t = time.perf_counter()
    if is_async:
        out = asyncio.run(app.ainvoke({"log": []}))
    else:
        out = app.invoke({"log": []})
    return time.perf_counter() - t, out


def shapes(repeat: int) -> list[dict[str, Any]]:
    rows = []
    for shape, (build, critical) in SHAPES.items():
        for is_async in (False, True):
            style = "async" if is_async else "sync"
            apps = {
                "langgraph": build(is_async).compile(),
                "alto": build(is_async).compile(backend="alto"),
            }
            times: dict[str, list[float]] = {k: [] for k in apps}
            answers: dict[str, Any] = {}
            for _ in range(repeat):  # interleaved: both see the same machine
                for name, app in apps.items():
                    dt, out = time_once(app, is_async)
                    times[name].append(dt)
                    answers[name] = out
            stats = apps["alto"].run_ahead_stats()
            ran = sum(s["run_ahead"] for s in stats.values())
            missed = sum(s["missed"] for s in stats.values())
            held = sum(s["held"] for s in stats.values())
            lg, alto = (statistics.median(times[k]) for k in ("langgraph", "alto"))
            rows.append(
                {
                    "shape": shape,
                    "style": style,
                    "critical_path_s": critical,
                    "langgraph_s": round(lg, 4),
                    "alto_s": round(alto, 4),
                    "langgraph_over_critical": round(lg / critical, 3),
                    "alto_over_critical": round(alto / critical, 3),
                    "speedup": round(lg / alto, 3),
                    "same_answer": answers["alto"] == answers["langgraph"],
                    "ran_ahead_per_request": ran / repeat,
                    "misses": missed,
                    "held": held,
                }
            )
            print(
                f"  {shape:<10} {style:<5} stock {lg:.3f}s  alto {alto:.3f}s  "
                f"(critical {critical:.2f}s)  ran ahead {ran}, missed {missed}, held {held}",
                file=sys.stderr,
            )
    return rows


def chain(n: int) -> StateGraph:
    g = StateGraph(S)
    prev = START
    for i in range(n):
        name = f"n{i}"
        g.add_node(name, lambda s: {"seen": s.get("seen")})
        g.add_edge(prev, name)
        prev = name
    return g


def twin_chains(n: int) -> StateGraph:
    """Two chains of n nodes from START; each node reads its own chain's key. One
    branch starts slower, so the other's tasks run ahead of their steps all the way."""

    class T(TypedDict, total=False):
        x: int
        y: int

    g = StateGraph(T)
    for key in ("x", "y"):
        prev = START
        for i in range(n):
            name = f"{key}{i}"
            g.add_node(name, lambda s, key=key: {key: (s.get(key) or 0) + 1})
            g.add_edge(prev, name)
            prev = name
    return g


def overhead(repeat: int, steps: int) -> list[dict[str, Any]]:
    rows = []
    for label, build in (
        (f"chain of {steps}", lambda: chain(steps)),
        (f"2 chains of {steps // 2}, running ahead", lambda: twin_chains(steps // 2)),
    ):
        apps = {
            "langgraph": build().compile(),
            "alto": build().compile(backend="alto"),
            "alto, run_ahead=False": build().compile(backend="alto", run_ahead=False),
        }
        for app in apps.values():
            app.invoke({}, {"recursion_limit": steps + 10})  # warm
        times: dict[str, list[float]] = {k: [] for k in apps}
        for _ in range(repeat):
            for name, app in apps.items():
                t = time.perf_counter()
                app.invoke({}, {"recursion_limit": steps + 10})
                times[name].append(time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in times.items()}
        stats = apps["alto"].run_ahead_stats()
        row = {
            "graph": label,
            **{f"{k}_ms": round(v * 1000, 2) for k, v in med.items()},
            "alto_per_step_us": round((med["alto"] - med["langgraph"]) / steps * 1e6, 1),
            "tracking_over_off": round(med["alto"] / med["alto, run_ahead=False"], 3),
            "ran_ahead": sum(s["run_ahead"] for s in stats.values()),
        }
        rows.append(row)
        print(f"  {label}: {row}", file=sys.stderr)
    return rows


def plot(rows: list[dict[str, Any]], path: Path, repeat: int) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install -e '.[bench]')", file=sys.stderr)
        return
    labels = [f"{r['shape']}\n{r['style']}" for r in rows]
    xs = range(len(rows))
    fig, ax = plt.subplots(figsize=(9, 4))
    w = 0.38
    ax.bar(
        [x - w / 2 for x in xs], [r["langgraph_over_critical"] for r in rows], w, label="LangGraph"
    )
    ax.bar([x + w / 2 for x in xs], [r["alto_over_critical"] for r in rows], w, label="alto")
    ax.axhline(1.0, color="black", lw=0.8, ls="--", label="critical path")
    ax.set_xticks(list(xs), labels, fontsize=8)
    ax.set_ylim(0, 1.8)
    ax.set_ylabel("latency / critical path")
    ax.set_title(f"A fast branch and a slow sibling, median of {repeat} runs (lower is better)")
    ax.legend(ncol=3, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="3 repeats, 40-step chains")
    args = parser.parse_args()
    repeat = 3 if args.quick else args.repeat
    steps = 40 if args.quick else 100
    print("shapes (median of each backend's runs):", file=sys.stderr)
    shape_rows = shapes(repeat)
    print("bookkeeping per step:", file=sys.stderr)
    chain_rows = overhead(max(repeat, 5) * 4, steps)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "branches.json").write_text(
        json.dumps({"shapes": shape_rows, "chains": chain_rows}, indent=2) + "\n"
    )
    plot(shape_rows, RESULTS / "branches.png", repeat)
    print(
        "| shape | style | critical path | LangGraph | alto | LangGraph / cp | alto / cp "
        "| same answer | ran ahead / request | missed | held |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in shape_rows:
        print(
            f"| {r['shape']} | {r['style']} | {r['critical_path_s']:.2f} s | "
            f"{r['langgraph_s']:.3f} s | {r['alto_s']:.3f} s | {r['langgraph_over_critical']} | "
            f"{r['alto_over_critical']} | {r['same_answer']} | {r['ran_ahead_per_request']} | "
            f"{r['misses']} | {r['held']} |"
        )
    print()
    print(
        "| graph | LangGraph | alto | alto, run_ahead=False | alto - LangGraph per step "
        "| alto / run_ahead=False | tasks run ahead |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in chain_rows:
        print(
            f"| {r['graph']} | {r['langgraph_ms']} ms | {r['alto_ms']} ms | "
            f"{r['alto, run_ahead=False_ms']} ms | {r['alto_per_step_us']} us | "
            f"{r['tracking_over_off']} | {r['ran_ahead']} |"
        )


if __name__ == "__main__":
    main()
