"""Framework overhead with no-op nodes, LangGraph and alto side by side in one run.

    python comparisons/overhead.py [--sends 1000] [--chain 100] [--repeat 5]

Two shapes (DESIGN.md section 8): a fan-out of N Sends aggregated by one node, and a
chain of N steps, async no-op nodes. Reports the time per task (fan-out) and per step
(chain) for LangGraph and for alto with each executor (``auto``, the default: node code in
this process, as no stage asks for worker processes; ``inline``: every node in this
process; ``process``: every node call goes to a stage instance in a worker process and
back), best and median of the runs, and alto's ratio to LangGraph (below 1.0 is
cheaper than LangGraph).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import operator
import statistics
import sys
import time
from pathlib import Path
from typing import Annotated, Any

from langgraph.graph import START, StateGraph
from langgraph.types import Send
from typing_extensions import TypedDict

import alto_langgraph  # noqa: F401

RESULTS = Path(__file__).parent / "results"


class S(TypedDict):
    n: Annotated[int, operator.add]


async def noop_async(state: Any) -> dict[str, int]:
    return {"n": 1}


def fanout(sends: int) -> StateGraph:
    g = StateGraph(S)
    g.add_node("split", noop_async)
    g.add_node("work", noop_async)
    g.add_node("join", noop_async)
    g.add_edge(START, "split")
    g.add_conditional_edges("split", lambda s: [Send("work", {"n": 0}) for _ in range(sends)])
    g.add_edge("work", "join")
    return g


def chain(steps: int) -> StateGraph:
    g = StateGraph(S)
    names = [f"s{i}" for i in range(steps)]
    for name in names:
        g.add_node(name, noop_async)
    g.add_edge(START, names[0])
    for a, b in zip(names, names[1:], strict=False):
        g.add_edge(a, b)
    return g


async def run(sends: int, steps: int, repeat: int) -> dict[str, Any]:
    """Both backends interleaved, run by run, so both see the same machine state; a
    collection before each run keeps one run's garbage out of the next one's time."""
    rows: dict[str, Any] = {}
    for shape, build, units in (("fan-out", fanout, sends), ("chain", chain, steps)):
        apps = {
            "pregel": build(units).compile(),
            "alto-auto": build(units).compile(backend="alto"),  # the default executor
            "alto": build(units).compile(backend="alto", executor="inline"),
            "alto-process": build(units).compile(backend="alto", executor="process"),
        }
        times: dict[str, list[float]] = {b: [] for b in apps}
        for app in apps.values():
            await app.ainvoke({"n": 0}, {"recursion_limit": 100_000})  # warm-up
        for _ in range(repeat):
            for b, app in apps.items():
                gc.collect()
                t0 = time.perf_counter()
                await app.ainvoke({"n": 0}, {"recursion_limit": 100_000})
                times[b].append(time.perf_counter() - t0)
        for b, ts in times.items():
            rows[f"{shape}/{b}"] = {
                "units": units,
                "min_ms_per_unit": min(ts) / units * 1e3,
                "median_ms_per_unit": statistics.median(ts) / units * 1e3,
            }
        print(f"  {shape}: {repeat} runs per backend done", flush=True)
        for b in ("alto-auto", "alto", "alto-process"):
            apps[b].close()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sends", type=int, default=1000)
    p.add_argument("--chain", type=int, default=100)
    p.add_argument("--repeat", type=int, default=15)
    args = p.parse_args(argv)
    rows = asyncio.run(run(args.sends, args.chain, args.repeat))
    print()
    print(
        f"{'shape':<9} {'unit':<13} {'langgraph ms':>12} {'auto ms':>8} {'ratio':>6}"
        f" {'inline ms':>10} {'ratio':>6} {'process ms':>11} {'ratio':>6}"
    )
    for shape, unit in (("fan-out", "task"), ("chain", "step")):
        for stat in ("min", "median"):
            lg = rows[f"{shape}/pregel"][f"{stat}_ms_per_unit"]
            au = rows[f"{shape}/alto-auto"][f"{stat}_ms_per_unit"]
            al = rows[f"{shape}/alto"][f"{stat}_ms_per_unit"]
            pr = rows[f"{shape}/alto-process"][f"{stat}_ms_per_unit"]
            rows[f"{shape}/{stat}_ratio_auto"] = au / lg
            rows[f"{shape}/{stat}_ratio"] = al / lg
            rows[f"{shape}/{stat}_ratio_process"] = pr / lg
            label = f"{unit} ({stat})"
            print(
                f"{shape:<9} {label:<13} {lg:>12.3f} {au:>8.3f} {au / lg:>6.2f}"
                f" {al:>10.3f} {al / lg:>6.2f} {pr:>11.3f} {pr / lg:>6.2f}"
            )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "overhead.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
