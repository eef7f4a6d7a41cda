"""Stages on Ray against stages in local processes and stock LangGraph, in one run.

    python comparisons/ray.py [--calls 300] [--sends 400] [--items 12] [--work-ms 150]

Starts a real two-node Ray cluster on this machine (``tests/services/ray.sh``: a head
with ``node_a``, a second node with ``node_b``, 2 CPUs each) and measures, side by side:

1. **Per-call latency**: one no-op node, invoked ``--calls`` times one after another:
   stock LangGraph (the node in this process), alto ``process`` (a forked instance) and
   alto ``ray`` (an actor on node_b). alto's calls go through its router either way;
   a bare Ray actor call (the other design: Ray as the data path) is timed beside them.
2. **Throughput**: a fan-out of ``--sends`` no-op Sends to a stage with 2 instances,
   items per second; and the same number of bare Ray actor calls, 2 actors, all in
   flight at once.
   Both also with a 1 MB payload each way (Ray's object transfer against alto's frames).
3. **Streams**: ``--chunks`` small items from a producer on node_a to a consumer on
   node_b: alto (a ``@streaming`` node's Send payload streamed into a ``@fold``) against
   a Ray streaming generator (``num_returns="streaming"``) read by an actor.
4. **A CPU-bound stage scaled over instances on both nodes**: ``--items`` Sends, each
   ``--work-ms`` of pure-Python work, to a stage with 1, 2 and 4 actors spread over the
   two nodes (``scheduling_strategy="SPREAD"``, one CPU each), against stock LangGraph
   (threads of one process: the GIL runs them one at a time).

Writes ``results/ray.json`` and ``results/ray.png``. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
RAY_ROOT = "/tmp/alto-ray-bench"
PORT = "6392"
# the cluster's token, for this driver (set before ray is imported)
os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=f"{RAY_ROOT}/token")

import ray  # noqa: E402
from langgraph.graph import START, StateGraph  # noqa: E402
from langgraph.types import Send  # noqa: E402
from typing_extensions import TypedDict  # noqa: E402

import alto_langgraph  # noqa: E402, F401
from alto_langgraph import fold, streaming  # noqa: E402


class S(TypedDict):
    n: Annotated[int, operator.add]


def noop(s: Any) -> dict[str, int]:
    return {"n": 1}


def busy(s: Any) -> dict[str, int]:
    """``ms`` of pure-Python work (holds the GIL), and which process did it."""
    end = time.thread_time() + s["ms"] / 1000
    x = 0
    while time.thread_time() < end:
        x += 1
    return {"n": 1, "by": [os.getpid()]}


class Busy(TypedDict):
    n: Annotated[int, operator.add]
    by: Annotated[list, operator.add]
    ms: float


class Blob(TypedDict):
    n: Annotated[int, operator.add]
    blob: bytes


def one_node(blob: bytes = b"") -> StateGraph:
    """One node; with ``blob``, it takes and returns that many bytes."""
    if not blob:
        g = StateGraph(S)
        g.add_node("work", noop)
    else:
        g = StateGraph(Blob)
        g.add_node("work", lambda s: {"n": 1, "blob": s["blob"]})
    g.add_edge(START, "work")
    return g


@fold(over="items")
class Total:
    def start(self, p: dict) -> int:
        return 0

    def step(self, acc: int, item: int) -> int:
        return acc + item

    def finish(self, acc: int, p: dict) -> dict:
        return {"n": acc}


class Counted(TypedDict):
    n: Annotated[int, operator.add]
    k: int


def stream_graph(chunks: int) -> StateGraph:
    def items(k: int) -> Any:
        yield from range(k)

    @streaming
    def produce(s: dict) -> Any:
        yield Send("total", {"items": items(s["k"])})

    g = StateGraph(Counted)
    g.add_node("produce", produce)
    g.add_node("total", Total)
    g.add_edge(START, "produce")
    return g


def fan_out(sends: int) -> StateGraph:
    g = StateGraph(S)
    g.add_node("split", noop)
    g.add_node("work", noop)
    g.add_edge(START, "split")
    g.add_conditional_edges("split", lambda s: [Send("work", {"n": 0}) for _ in range(sends)])
    return g


def cpu_fan_out(items: int) -> StateGraph:
    g = StateGraph(Busy)
    g.add_node("split", lambda s: {"n": 0})
    g.add_node("busy", busy)
    g.add_edge(START, "split")
    g.add_conditional_edges(
        "split", lambda s: [Send("busy", {"n": 0, "by": [], "ms": s["ms"]}) for _ in range(items)]
    )
    return g


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cluster(cmd: str) -> str:
    env = dict(
        os.environ,
        RAY=str(Path(sys.executable).parent / "ray"),
        ALTO_RAY_ROOT=RAY_ROOT,
        ALTO_RAY_PORT=PORT,
    )
    out = subprocess.run(
        [str(ROOT / "tests" / "services" / "ray.sh"), cmd],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return out.stdout.strip()


def compile_app(builder: StateGraph, kind: str, address: str, **options: Any) -> Any:
    if kind == "stock":
        return builder.compile()
    if kind == "process":
        return builder.compile(backend="alto", executor="process", **options)
    stages = options.pop("stages", {"work": {"ray": {"resources": {"node_b": 0.01}}}})
    return builder.compile(
        backend="alto", executor="ray", ray_address=address, stages=stages, **options
    )


def latency(address: str, calls: int, size: int = 0) -> dict[str, Any]:
    """p50/p99 of one call with a ``size``-byte payload each way (0: a counter only)."""
    out: dict[str, Any] = {}
    blob = b"x" * size
    inputs = {"n": 0, "blob": blob} if size else {"n": 0}
    for kind in ("stock", "process", "ray"):
        app = compile_app(one_node(blob), kind, address)
        for _ in range(20):  # started, warm
            app.invoke(inputs)
        times = []
        for _ in range(calls):
            t = time.perf_counter()
            app.invoke(inputs)
            times.append(time.perf_counter() - t)
        if kind != "stock":
            app.close()
        out[kind] = _summary(times)
        log(f"  {size} B: {kind}: p50 {out[kind]['p50_ms']:.3f} ms")

    @ray.remote(num_cpus=0, resources={"node_b": 0.01})
    class Echo:
        def call(self, payload: dict) -> dict:
            return {"n": 1, "blob": payload["blob"]}

    echo = Echo.remote()
    for _ in range(20):
        ray.get(echo.call.remote({"n": 0, "blob": blob}))
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        ray.get(echo.call.remote({"n": 0, "blob": blob}))
        times.append(time.perf_counter() - t)
    ray.kill(echo)
    out["bare ray actor call"] = _summary(times)
    log(f"  {size} B: bare Ray call: p50 {out['bare ray actor call']['p50_ms']:.3f} ms")
    return out


def streams(address: str, chunks: int) -> dict[str, Any]:
    """Seconds per chunk from a producer on node_a to a consumer on node_b."""
    out: dict[str, Any] = {}
    app = stream_graph(chunks).compile(
        backend="alto",
        executor="ray",
        ray_address=address,
        stages={
            "produce": {"ray": {"resources": {"node_a": 0.01}}},
            "total": {"ray": {"resources": {"node_b": 0.01}}},
        },
    )
    app.invoke({"n": 0, "k": 10})  # started
    best = []
    for _ in range(3):
        t = time.perf_counter()
        assert app.invoke({"n": 0, "k": chunks})["n"] == sum(range(chunks))
        best.append(time.perf_counter() - t)
    app.close()
    out["alto ray: @streaming -> @fold"] = {"us_per_chunk": round(min(best) / chunks * 1e6, 1)}

    @ray.remote(num_cpus=0, resources={"node_a": 0.01})
    class Producer:
        @ray.method(num_returns="streaming")
        def produce(self, k: int) -> Any:
            yield from range(k)

    @ray.remote(num_cpus=0, resources={"node_b": 0.01})
    class Consumer:
        def total(self, producer: Any, k: int) -> int:
            return sum(ray.get(ref) for ref in producer.produce.remote(k))

    producer, consumer = Producer.remote(), Consumer.remote()
    ray.get(consumer.total.remote(producer, 10))
    best = []
    for _ in range(3):
        t = time.perf_counter()
        assert ray.get(consumer.total.remote(producer, chunks)) == sum(range(chunks))
        best.append(time.perf_counter() - t)
    ray.kill(producer)
    ray.kill(consumer)
    out["ray streaming generator"] = {"us_per_chunk": round(min(best) / chunks * 1e6, 1)}
    for name, row in out.items():
        log(f"  {name}: {row['us_per_chunk']} us per chunk")
    return out


def throughput(address: str, sends: int, repeat: int = 3) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("stock", "process", "ray"):
        options: dict[str, Any] = {} if kind == "stock" else {"replicas": {"work": 2}}
        if kind == "ray":
            options["stages"] = {"work": {"ray": {"num_cpus": 0}}}
        app = compile_app(fan_out(sends), kind, address, **options)
        app.invoke({"n": 0})
        best = []
        for _ in range(repeat):
            t = time.perf_counter()
            assert app.invoke({"n": 0})["n"] == sends + 1
            best.append(time.perf_counter() - t)
        if kind != "stock":
            app.close()
        out[kind] = {"items_per_s": round(sends / min(best)), "best_s": round(min(best), 4)}
        log(f"  throughput {kind}: {out[kind]['items_per_s']} items/s")

    @ray.remote(num_cpus=0)
    class Echo:
        def call(self, payload: dict) -> dict:
            return {"n": 1}

    actors = [Echo.remote() for _ in range(2)]
    ray.get([a.call.remote({}) for a in actors])
    best = []
    for _ in range(repeat):
        t = time.perf_counter()
        ray.get([actors[i % 2].call.remote({"n": 0}) for i in range(sends)])
        best.append(time.perf_counter() - t)
    for a in actors:
        ray.kill(a)
    out["bare ray actor calls"] = {
        "items_per_s": round(sends / min(best)),
        "best_s": round(min(best), 4),
    }
    log(f"  throughput bare Ray calls: {out['bare ray actor calls']['items_per_s']} items/s")
    return out


def scale_out(address: str, items: int, work_ms: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    stock = cpu_fan_out(items).compile()
    t = time.perf_counter()
    stock.invoke({"n": 0, "by": [], "ms": work_ms})
    out["stock"] = {"wall_s": round(time.perf_counter() - t, 3), "processes": 1}
    log(f"  scale-out stock: {out['stock']['wall_s']} s")
    nodes = {
        n["NodeID"]: ("node_a" if "node_a" in n["Resources"] else "node_b")
        for n in ray.nodes()
        if n["Alive"]
    }
    for replicas in (1, 2, 4):
        app = cpu_fan_out(items).compile(
            backend="alto",
            executor="ray",
            ray_address=address,
            replicas={"busy": replicas},
            stages={
                "busy": {"ray": {"num_cpus": 1, "scheduling_strategy": "SPREAD"}},
                "split": {"ray": False},
            },
        )
        app.invoke({"n": 0, "by": [], "ms": 1.0})  # started
        t = time.perf_counter()
        result = app.invoke({"n": 0, "by": [], "ms": work_ms})
        wall = time.perf_counter() - t
        placed = sorted(
            nodes.get(app.deployment.ray_nodes[("busy", i)], "?") for i in range(replicas)
        )
        app.close()
        out[f"ray x{replicas}"] = {
            "wall_s": round(wall, 3),
            "processes": len(set(result["by"])),
            "nodes": placed,
            "speedup_vs_stock": round(out["stock"]["wall_s"] / wall, 2),
        }
        log(f"  scale-out ray x{replicas}: {wall:.3f} s on {placed}")
    return out


def _summary(times: list[float]) -> dict[str, float]:
    times = sorted(times)
    return {
        "p50_ms": round(statistics.median(times) * 1e3, 3),
        "p99_ms": round(times[int(len(times) * 0.99) - 1] * 1e3, 3),
    }


def plot(results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    lat = results["latency"]
    names = list(lat)
    ax1.barh(names, [lat[n]["p50_ms"] for n in names], color=["0.6", "C0", "C1", "C3"])
    ax1.set_xlabel("ms per call, p50")
    ax1.set_title("One no-op node call")
    for i, n in enumerate(names):
        ax1.text(lat[n]["p50_ms"], i, f" {lat[n]['p50_ms']:.2f}", va="center")
    sc = results["scale_out"]
    names = list(sc)
    ax2.bar(names, [sc[n]["wall_s"] for n in names], color=["0.6", "C1", "C1", "C1"])
    ax2.set_ylabel("seconds")
    ax2.set_title(
        f"{results['args']['items']} CPU-bound items of {results['args']['work_ms']:g} ms"
    )
    for i, n in enumerate(names):
        ax2.text(i, sc[n]["wall_s"], f"{sc[n]['wall_s']:.2f}", ha="center", va="bottom")
    fig.tight_layout()
    fig.savefig(RESULTS / "ray.png", dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--sends", type=int, default=400)
    p.add_argument("--items", type=int, default=12)
    p.add_argument("--work-ms", type=float, default=150.0)
    p.add_argument("--chunks", type=int, default=5000)
    args = p.parse_args(argv)
    log("starting a two-node Ray cluster (tests/services/ray.sh)")
    address = cluster("start")
    try:
        from ray._raylet import Config

        Config.initialize("")
        ray.init(address=address, configure_logging=False, log_to_driver=False)
        while len([n for n in ray.nodes() if n["Alive"]]) < 2:
            time.sleep(0.2)
        results: dict[str, Any] = {"args": vars(args), "cpus": os.cpu_count()}
        log("1. per-call latency")
        results["latency"] = latency(address, args.calls)
        results["latency_1mb"] = latency(address, max(20, args.calls // 5), 1 << 20)
        log("2. throughput")
        results["throughput"] = throughput(address, args.sends)
        log("3. streams between nodes")
        results["streams"] = streams(address, args.chunks)
        log("4. a CPU-bound stage over instances on both nodes")
        results["scale_out"] = scale_out(address, args.items, args.work_ms)
    finally:
        ray.shutdown()
        cluster("stop")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ray.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
