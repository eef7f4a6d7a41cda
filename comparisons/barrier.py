"""The superstep barrier, measured: LangGraph and alto side by side on one nested fan-out.

    python comparisons/barrier.py [--repeat 5]

A -> 3 x B (0.1 / 0.5 / 1.0 s) -> 2 x C per B (1.0 / 0.5 / 0.1 s) -> D, delays as
asyncio sleeps. Stock LangGraph pays max(B) + max(C) = 2.0 s; the dataflow's critical
path is max(B_i + C_i) = 1.1 s. Target: alto within 5% of the critical path.
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
from langgraph.types import Command, Send
from typing_extensions import TypedDict

import alto_langgraph  # noqa: F401

B = (0.1, 0.5, 1.0)
C = (1.0, 0.5, 0.1)
CRITICAL_PATH = max(b + c for b, c in zip(B, C, strict=True))
BSP_PATH = max(B) + max(C)
RESULTS = Path(__file__).parent / "results"


class S(TypedDict):
    log: Annotated[list, operator.add]


def build() -> StateGraph:
    async def a(s: S) -> dict:
        return {"log": ["a"]}

    async def b(p: dict) -> Command:
        await asyncio.sleep(B[p["i"]])
        return Command(
            update={"log": [f"b{p['i']}"]},
            goto=[Send("c", {"i": p["i"], "j": j}) for j in range(2)],
        )

    async def c(p: dict) -> dict:
        await asyncio.sleep(C[p["i"]])
        return {"log": [f"c{p['i']}{p['j']}"]}

    async def d(s: S) -> dict:
        return {"log": ["d"]}

    g = StateGraph(S)
    g.add_node("a", a)
    g.add_node("b", b)
    g.add_node("c", c)
    g.add_node("d", d)
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("b", {"i": i}) for i in range(3)])
    g.add_edge("c", "d")
    return g


async def run(repeat: int) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    answers = {}
    # alto's worker processes start (and its nodes are shipped) before timing
    apps = {
        "langgraph": build().compile(),
        "alto": build().compile(backend="alto", start="compile"),
    }
    times: dict[str, list[float]] = {name: [] for name in apps}
    for _ in range(repeat):  # interleaved, so both see the same machine state
        for name, app in apps.items():
            t0 = time.perf_counter()
            answers[name] = await app.ainvoke({"log": []})
            times[name].append(time.perf_counter() - t0)
    apps["alto"].close()
    for name, ts in times.items():
        rows[name] = {"median_s": statistics.median(ts), "max_s": max(ts), "runs": len(ts)}
    rows["critical_path_s"] = CRITICAL_PATH
    rows["bsp_path_s"] = BSP_PATH
    rows["alto_over_critical_path"] = rows["alto"]["median_s"] / CRITICAL_PATH
    rows["speedup"] = rows["langgraph"]["median_s"] / rows["alto"]["median_s"]
    rows["same_answer"] = answers["langgraph"] == answers["alto"]
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    rows = asyncio.run(run(args.repeat))
    print(
        f"nested fan-out, {args.repeat} runs each; "
        f"BSP path {BSP_PATH:.1f} s, critical path {CRITICAL_PATH:.1f} s"
    )
    print(f"{'backend':<10} {'median s':>9} {'max s':>7}")
    for name in ("langgraph", "alto"):
        print(f"{name:<10} {rows[name]['median_s']:>9.3f} {rows[name]['max_s']:>7.3f}")
    print(f"alto / critical path: {rows['alto_over_critical_path']:.3f} (target <= 1.05)")
    print(f"speedup over LangGraph: {rows['speedup']:.2f}x; same answer: {rows['same_answer']}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "barrier.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if rows["same_answer"] else 1


if __name__ == "__main__":
    sys.exit(main())
