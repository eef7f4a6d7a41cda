"""Stages on Ray against stages in local processes and stock LangGraph, in one run.

    python comparisons/ray_stages.py [--calls 300] [--sends 400] [--items 12] [--work-ms 150]

Starts a real two-node Ray cluster on this machine (``tests/services/ray.sh``: a head
with ``node_a``, a second node with ``node_b``, 2 CPUs each) and measures, side by side:

1. **Per-call latency**: one no-op node, invoked ``--calls`` times one after another:
   stock LangGraph (the node in this process), alto ``process`` (a forked instance),
   alto ``ray`` (an actor on node_b, reached through alto's router), and the other
   design, Ray as the data path: stock LangGraph whose node makes a Ray actor call to
   an actor on node_b. Also with a 1 MB payload each way (Ray's object transfer
   against alto's frames).
2. **Throughput**: a fan-out of ``--sends`` no-op Sends to a stage with 2 instances
   (or 2 actors, for the Ray-call design), items per second.
3. **Streams**: ``--chunks`` small items from a producer on node_a to a consumer on
   node_b: alto (a ``@streaming`` node's Send payload streamed into a ``@fold``) against
   a Ray streaming generator (``num_returns="streaming"``) read by an actor.
4. **A CPU-bound stage scaled over instances on both nodes**: ``--items`` Sends, each
   ``--work-ms`` of pure-Python work, to a stage with 1, 2 and 4 actors spread over the
   two nodes (``scheduling_strategy="SPREAD"``, one CPU each), against stock LangGraph
   (threads of one process: the GIL runs them one at a time).

Writes ``results/ray.json`` and ``results/ray.png``. Progress goes to stderr. (Not
``ray.py``: run as a script, or from pytest's path, that name would shadow the ``ray``
package.)
"""

from __future__ import annotations

import argparse
import itertools
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


def one_node(blob: bytes = b"", node: Any = None) -> StateGraph:
    """One node (``node``, by default a no-op); with ``blob``, it takes and returns
    that many bytes."""
    if not blob:
        g = StateGraph(S)
        g.add_node("work", node or noop)
    else:
        g = StateGraph(Blob)
        g.add_node("work", node or (lambda s: {"n": 1, "blob": s["blob"]}))
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


def fan_out(sends: int, node: Any = None) -> StateGraph:
    g = StateGraph(S)
    g.add_node("split", noop)
    g.add_node("work", node or noop)
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


#: the other design: stock LangGraph whose node calls a Ray actor (Ray as the data path)
RAY_CALLS = "stock + a Ray actor call per node"
KINDS = ("stock", "process", "ray", RAY_CALLS)


@ray.remote(num_cpus=0)
class NodeActor:
    """Runs the node's body: a no-op, or hands the payload back."""

    def call(self, state: dict) -> dict:
        return {"n": 1, "blob": state["blob"]} if "blob" in state else {"n": 1}


def via_actors(actors: list[Any]) -> Any:
    """A node that sends its input to one of ``actors`` and returns what it answers."""
    turn = itertools.count()

    def node(state: dict) -> dict:
        return ray.get(actors[next(turn) % len(actors)].call.remote(state))

    return node


def compile_app(
    build: Any, kind: str, address: str, replicas: int = 1, on_b: bool = True
) -> tuple[Any, list[Any]]:
    """The app of one kind, and the actors the Ray-call design made (to kill after)."""
    if kind == "stock":
        return build(None).compile(), []
    if kind == RAY_CALLS:
        where = {"resources": {"node_b": 0.01}} if on_b else {}
        actors = [NodeActor.options(**where).remote() for _ in range(replicas)]
        ray.get([a.call.remote({}) for a in actors])
        return build(via_actors(actors)).compile(), actors
    options: dict[str, Any] = {"replicas": {"work": replicas}} if replicas > 1 else {}
    if kind == "process":
        return build(None).compile(backend="alto", executor="process", **options), []
    ray_opts = {"resources": {"node_b": 0.01}} if on_b else {"num_cpus": 0}
    app = build(None).compile(
        backend="alto",
        executor="ray",
        ray_address=address,
        stages={"work": {"ray": ray_opts}},
        **options,
    )
    return app, []


def done(app: Any, actors: list[Any]) -> None:
    if hasattr(app, "close"):
        app.close()
    for actor in actors:
        ray.kill(actor)


def latency(address: str, calls: int, size: int = 0) -> dict[str, Any]:
    """p50/p99 of one call with a ``size``-byte payload each way (0: a counter only)."""
    out: dict[str, Any] = {}
    blob = b"x" * size
    inputs = {"n": 0, "blob": blob} if size else {"n": 0}
    for kind in KINDS:
        app, actors = compile_app(lambda node: one_node(blob, node), kind, address)
        for _ in range(20):  # started, warm
            app.invoke(inputs)
        times = []
        for _ in range(calls):
            t = time.perf_counter()
            app.invoke(inputs)
            times.append(time.perf_counter() - t)
        done(app, actors)
        out[kind] = _summary(times)
        log(f"  {size} B: {kind}: p50 {out[kind]['p50_ms']:.3f} ms")
    return out


def throughput(address: str, sends: int, repeat: int = 3) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in KINDS:
        app, actors = compile_app(
            lambda node: fan_out(sends, node), kind, address, replicas=2, on_b=False
        )
        app.invoke({"n": 0})
        best = []
        for _ in range(repeat):
            t = time.perf_counter()
            assert app.invoke({"n": 0})["n"] == sends + 1
            best.append(time.perf_counter() - t)
        done(app, actors)
        out[kind] = {"items_per_s": round(sends / min(best)), "best_s": round(min(best), 4)}
        log(f"  throughput {kind}: {out[kind]['items_per_s']} items/s")
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
            for i in range(k):  # noqa: UP028 (Ray calls the generator's send())
                yield i

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

    colors = ["0.6", "C0", "C1", "C3"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 6.5))

    def bars(ax: Any, rows: dict[str, Any], key: str, label: str, title: str) -> None:
        names = list(rows)
        values = [rows[n][key] for n in names]
        ax.barh(names, values, color=colors[: len(names)])
        ax.invert_yaxis()
        ax.set_xlabel(label)
        ax.set_title(title)
        for i, v in enumerate(values):
            ax.text(v, i, f" {v:g}", va="center")

    bars(axes[0][0], results["latency"], "p50_ms", "ms per call, p50", "One no-op node call")
    bars(axes[0][1], results["latency_1mb"], "p50_ms", "ms per call, p50", "1 MB in and 1 MB out")
    bars(
        axes[1][0],
        results["throughput"],
        "items_per_s",
        "items per second",
        f"{results['args']['sends']} no-op Sends, 2 instances",
    )
    sc = results["scale_out"]
    names = list(sc)
    ax = axes[1][1]
    ax.bar(names, [sc[n]["wall_s"] for n in names], color=["0.6", "C1", "C1", "C1"])
    ax.set_ylabel("seconds")
    ax.set_title(f"{results['args']['items']} CPU-bound items of {results['args']['work_ms']:g} ms")
    for i, n in enumerate(names):
        ax.text(i, sc[n]["wall_s"], f"{sc[n]['wall_s']:.2f}", ha="center", va="bottom")
    fig.suptitle(f"Stages on a two-node Ray cluster on one {results['cpus']}-core machine")
    fig.tight_layout()
    fig.savefig(RESULTS / "ray.png", dpi=110)


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
