"""A CPU-bound stage: its throughput as its replicas grow, up to the core count.

    python comparisons/replicas.py [--items 24] [--work-ms 40] [--repeat 3]

One request fans out ``--items`` Sends to ``crunch``, a pure-Python loop of about
``--work-ms`` of CPU each (it holds the GIL: threads cannot run two at once). Stock
LangGraph runs them on threads of one process; alto's process executor runs them on
``replicas`` stage instances, i.e. processes. Reports items per second for each
setting and the ratio to one replica.
"""

from __future__ import annotations

import argparse
import json
import operator
import os
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
    done: Annotated[int, operator.add]


def spin(iterations: int) -> int:
    x = 0
    for i in range(iterations):
        x = (x * 31 + i) % 1_000_003
    return x


def calibrate(work_ms: float) -> int:
    """Loop iterations that take about ``work_ms`` of CPU here."""
    n = 200_000
    t0 = time.process_time()
    spin(n)
    return max(1, int(n * work_ms / 1e3 / (time.process_time() - t0)))


def graph(items: int, iterations: int) -> StateGraph:
    g = StateGraph(S)
    g.add_node("split", lambda s: {"done": 0})
    g.add_node("crunch", lambda p: {"done": 1 + 0 * spin(p["n"])})
    g.add_edge(START, "split")
    g.add_conditional_edges("split", lambda s: [Send("crunch", {"n": iterations})] * items)
    return g


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=24)
    p.add_argument("--work-ms", type=float, default=40.0)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    cores = os.cpu_count() or 1
    iterations = calibrate(args.work_ms)
    settings: dict[str, Any] = {"langgraph (threads)": graph(args.items, iterations).compile()}
    for r in sorted({1, 2, cores}):
        settings[f"alto, {r} replica(s)"] = graph(args.items, iterations).compile(
            backend="alto", replicas={"crunch": r}, start="compile"
        )
    rows: dict[str, Any] = {"cores": cores, "items": args.items, "work_ms": args.work_ms}
    for name, app in settings.items():
        app.invoke({"done": 0})  # warm-up
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            out = app.invoke({"done": 0})
            times.append(time.perf_counter() - t0)
            assert out["done"] == args.items
        rows[name] = {"items_per_s": args.items / statistics.median(times), "runs_s": times}
        print(f"  {name}: {rows[name]['items_per_s']:.1f} items/s", flush=True)
        if hasattr(app, "close"):
            app.close()
    base = rows["alto, 1 replica(s)"]["items_per_s"]
    print(f"\n{cores} cores, {args.items} items of ~{args.work_ms:.0f} ms CPU each")
    print(f"{'setting':<22} {'items/s':>8} {'vs 1 replica':>13}")
    for name in settings:
        ips = rows[name]["items_per_s"]
        rows[name]["ratio_to_one_replica"] = ips / base
        print(f"{name:<22} {ips:>8.1f} {ips / base:>13.2f}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "replicas.json").write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
