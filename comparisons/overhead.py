"""Framework overhead with no-op nodes, LangGraph and alto side by side in one run.

    python comparisons/overhead.py [--sends 1000] [--chain 100] [--repeat 5]

Two shapes (DESIGN.md section 8): a fan-out of N Sends aggregated by one node, and a
chain of N steps. Reports the median time per task (fan-out) and per step (chain) for
each backend, and alto's ratio to LangGraph (below 1.0 is cheaper than LangGraph).
"""

from __future__ import annotations

import argparse
import asyncio
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


async def measure(app: Any, repeat: int) -> list[float]:
    await app.ainvoke({"n": 0})  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await app.ainvoke({"n": 0}, {"recursion_limit": 100_000})
        times.append(time.perf_counter() - t0)
    return times


async def run(sends: int, steps: int, repeat: int) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for shape, build, units in (("fan-out", fanout, sends), ("chain", chain, steps)):
        for backend in ("pregel", "alto"):
            # interleave backends per shape so both see the same machine state
            times = await measure(build(units).compile(backend=backend), repeat)
            rows[f"{shape}/{backend}"] = {
                "units": units,
                "median_s": statistics.median(times),
                "per_unit_ms": statistics.median(times) / units * 1e3,
            }
            per_unit = rows[f"{shape}/{backend}"]["per_unit_ms"]
            print(f"  {shape:<8} {backend:<7} {per_unit:.3f} ms/unit", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sends", type=int, default=1000)
    p.add_argument("--chain", type=int, default=100)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    rows = asyncio.run(run(args.sends, args.chain, args.repeat))
    print()
    print(f"{'shape':<9} {'unit':<6} {'langgraph ms':>13} {'alto ms':>9} {'alto/langgraph':>15}")
    for shape, unit in (("fan-out", "task"), ("chain", "step")):
        lg, al = rows[f"{shape}/pregel"]["per_unit_ms"], rows[f"{shape}/alto"]["per_unit_ms"]
        rows[f"{shape}/ratio"] = al / lg
        print(f"{shape:<9} {unit:<6} {lg:>13.3f} {al:>9.3f} {al / lg:>15.2f}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "overhead.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
