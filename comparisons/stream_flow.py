"""What a stream between two worker processes costs, and what a stalled consumer does.

    python comparisons/stream_flow.py [--chunks 50000] [--stall 3] [--quick]

A ``@streaming`` node on a worker process sends one stream to a ``@fold`` on another.

* ``throughput``: ``--chunks`` small integers, as fast as the producer makes them:
  the time per chunk, the CPU seconds each process spent (the app, the router, the
  producer's and the fold's instances), and how many chunks the router sent to the
  fold straight (``teed``; the rest went through the app).
* ``stall``: the fold's process stops reading for ``--stall`` s at the first chunk
  (its step blocks the event loop) while the producer makes 64 KiB chunks as fast as
  it can (50 MiB in all). Sampled every 20 ms: how many chunks the producer made during
  the stall, and the peak resident memory of each process. With flow control the
  producer stops a window (``flow.WINDOW_BYTES``) ahead; without it, the chunks pile up
  in the router's queue to the fold.

Every run checks the fold's answer. Writes ``comparisons/results/stream_flow.json`` and
``stream_flow.png`` (what the producer made over time, the stall shaded).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import operator
import os
import threading
import time
from pathlib import Path
from typing import Annotated, Any

from langgraph.graph import END, START, StateGraph
from langgraph.types import Send
from typing_extensions import TypedDict

import alto_langgraph  # noqa: F401  (the backend)
from alto_langgraph import fold, streaming
from alto_langgraph.process.worker import resident_mb

RESULTS = Path(__file__).parent / "results"
STALL_CHUNK = 64 << 10
STALL_CHUNKS = 800


class Out(TypedDict, total=False):
    out: Annotated[list, operator.add]


def pipeline(chunks: int, size: int = 0, stall: float = 0.0) -> StateGraph:
    def items() -> Any:
        for i in range(chunks):
            yield (i, time.time(), b"x" * size) if size else i

    @streaming
    def produce(state: Out) -> Any:
        yield Send("consume", {"items": items()})

    @fold(over="items")
    class Consume:
        async def start(self, p: dict) -> dict:
            return {"sum": 0, "woke": 0.0}

        async def step(self, acc: dict, item: Any) -> dict:
            i = item[0] if size else item
            if i == 0 and stall:
                time.sleep(stall)  # this process's event loop reads nothing meanwhile
                acc["woke"] = time.time()
            acc["sum"] += i
            return acc

        async def finish(self, acc: dict, p: dict) -> dict:
            made = [item[1] for item in p["items"]] if size else []
            return {"out": [(acc["sum"], len(p["items"]), acc["woke"], made)]}

    g = StateGraph(Out)
    g.add_node("produce", produce)
    g.add_node("consume", Consume)
    g.add_edge(START, "produce")
    g.add_edge("consume", END)
    return g


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def processes(app: Any) -> dict[str, int]:
    app.deployment.start()
    pids = app.deployment.pids
    return {
        "app": os.getpid(),
        "router": pids["router"],
        "producer": pids[("produce", 0)],
        "fold": pids[("consume", 0)],
    }


def throughput(chunks: int) -> dict[str, Any]:
    with pipeline(chunks).compile(backend="alto", executor="process") as app:
        asyncio.run(app.ainvoke({"out": []}))  # processes up, code loaded
        procs = processes(app)
        teed_before = app.deployment.stats().get("teed", 0)
        before = {name: cpu_seconds(pid) for name, pid in procs.items()}
        start = time.perf_counter()
        out = asyncio.run(app.ainvoke({"out": []}))
        wall = time.perf_counter() - start
        cpu = {name: round(cpu_seconds(pid) - before[name], 3) for name, pid in procs.items()}
        teed = app.deployment.stats().get("teed", 0) - teed_before
    assert out["out"][0][:2] == (chunks * (chunks - 1) // 2, chunks), out["out"][0][:2]
    return {
        "chunks": chunks,
        "seconds": round(wall, 3),
        "us_per_chunk": round(wall / chunks * 1e6, 1),
        "cpu_seconds": cpu,
        "cpu_us_per_chunk": round(sum(cpu.values()) / chunks * 1e6, 1),
        "teed": teed,
    }


def stall(seconds: float) -> dict[str, Any]:
    graph = pipeline(STALL_CHUNKS, size=STALL_CHUNK, stall=seconds)
    with graph.compile(
        backend="alto", executor="process", stages={"consume": {"stuck_after": seconds + 10}}
    ) as app:
        procs = processes(app)
        base = {name: resident_mb(pid) for name, pid in procs.items()}
        peak = dict(base)
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.02):
                for name, pid in procs.items():
                    peak[name] = max(peak[name], resident_mb(pid))

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            out = asyncio.run(app.ainvoke({"out": []}))
        finally:
            done.set()
            sampler.join()
    total, count, woke, made = out["out"][0]
    assert (total, count) == (STALL_CHUNKS * (STALL_CHUNKS - 1) // 2, STALL_CHUNKS)
    ahead = sum(t < woke - 0.05 for t in made)
    first = made[0]
    return {
        "stall_s": seconds,
        "chunk_kib": STALL_CHUNK >> 10,
        "chunks": STALL_CHUNKS,
        "made_during_stall": ahead,
        "mib_made_during_stall": round(ahead * STALL_CHUNK / (1 << 20), 1),
        "peak_rss_growth_mib": {k: round(peak[k] - base[k], 1) for k in procs},
        # when each chunk was made, and when the fold read again (s from the first)
        "made_s": [round(t - first, 4) for t in made],
        "woke_s": round(woke - first, 4),
    }


def plot(stalled: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = stalled["made_s"]
    mib = [(i + 1) * stalled["chunk_kib"] / 1024 for i in range(len(made))]
    woke = stalled["woke_s"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.axvspan(woke - stalled["stall_s"], woke, color="0.9", label="the fold reads nothing")
    ax.step(made, mib, where="post", label="made by the producer")
    ax.set_xlabel("seconds since the first chunk")
    ax.set_ylabel("MiB of the stream")
    ax.set_title(
        f"A stalled fold: the producer made {stalled['mib_made_during_stall']} MiB "
        f"of {len(made) * stalled['chunk_kib'] // 1024} meanwhile"
    )
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chunks", type=int, default=50000)
    p.add_argument("--stall", type=float, default=3.0)
    p.add_argument("--quick", action="store_true", help="5000 chunks, a 1 s stall")
    args = p.parse_args(argv)
    if args.quick:
        args.chunks, args.stall = 5000, 1.0
    print(f"throughput: one stream of {args.chunks} integers, producer -> fold ...", flush=True)
    first = throughput(args.chunks)
    print(json.dumps(first, indent=1), flush=True)
    print(f"stall: the fold's process reads nothing for {args.stall} s ...", flush=True)
    second = stall(args.stall)
    shown = {k: v for k, v in second.items() if k != "made_s"}
    print(json.dumps(shown, indent=1), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "stream_flow.json").write_text(
        json.dumps({"throughput": first, "stall": second}, indent=1)
    )
    plot(second, RESULTS / "stream_flow.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
