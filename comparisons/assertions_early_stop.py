"""How soon a failing model assertion on a partial output ends the request.

    python comparisons/assertions_early_stop.py [--runs 3] [--no-model]

Two apps, each on stock LangGraph and on alto, side by side in one run:

* **tokens**: one node asks a model for an answer of ``--tokens`` tokens; an
  assertion over its tokens (``over="tokens"``, severity ``fail``) fires on the first
  partial answer of more than ``--fire-at`` words. Reported: the time to the
  ``AssertionViolation``, next to the time the same app takes to generate the whole
  answer without the assertion. The model is SmolLM2-135M on the CPU (transformers,
  real), and the simulated engine (labelled: a cost model, 20 ms per token).
* **items**: a ``@streaming`` node yields 20 claims 50 ms apart, each a Send to a
  checker; an item assertion (``fail``) fires on the 3rd. On stock LangGraph it is
  checked once the node has returned (all 20); on alto as it is yielded.

Results go to ``comparisons/results/assertions_early_stop.json`` and a plot next to it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TypedDict

from langchain_core.messages import HumanMessage
from langgraph.graph import START, StateGraph
from langgraph.types import Send

import alto_langgraph  # noqa: F401  (the backend="alto" plug)
from alto_langgraph import AssertionViolation, assertion, streaming
from alto_langgraph.lm import ChatAlto, Timing

RESULTS = Path(__file__).parent / "results"

#: the simulated engine's cost model: 20 ms per decode step (labelled simulated)
SIM_TIMING = Timing(step_base=0.02, step_per_request=0.0, prefill_per_token=0.0)
SIM = {"engine": "simulated", "timing": SIM_TIMING, "texts": ["answer " * 1000]}


class S(TypedDict, total=False):
    q: str
    answer: str
    claims: list


def _words(text: str) -> int:
    return len(text.split())


def token_app(
    backend: str, model: str, engine: dict[str, Any], fire_at: int | None, tokens: int, store: Path
) -> Any:
    checks = []
    if fire_at is not None:

        @assertion("answer", severity="fail", over="tokens", name="short_answer")
        def short_answer(messages: list, text: str) -> Any:
            return _words(text) <= fire_at or f"over {fire_at} words"

        checks = [short_answer]
    if backend == "stock":
        options = {k: v for k, v in engine.items() if k != "engine"}
        llm = ChatAlto(model=model, engine=engine["engine"], engine_options=options)
    else:
        llm = ChatAlto(model=model)

    def answer(s: S) -> dict:
        msg = llm.invoke([HumanMessage(s["q"])], max_tokens=tokens)
        return {"answer": msg.content}

    g = StateGraph(S)
    g.add_node("answer", answer)
    g.add_edge(START, "answer")
    kw: dict[str, Any] = {"assertions": checks, "flag_store": store} if checks else {}
    if backend == "alto":
        kw.update(backend="alto", lm={model: engine}, start="compile")
    return g.compile(**kw)


def item_app(backend: str, store: Path) -> Any:
    @streaming
    def extract(s: S) -> Any:
        for i in range(20):
            time.sleep(0.05)
            yield Send("check", {"claim": "wrong" if i == 2 else f"claim {i}"})

    def check(p: dict) -> dict:
        time.sleep(0.01)
        return {}

    @assertion("extract", severity="fail")
    def no_wrong_claim(s: Any, item: Any) -> Any:
        return not isinstance(item, Send) or item.arg["claim"] != "wrong" or "a wrong claim"

    g = StateGraph(S)
    g.add_node("extract", extract)
    g.add_node("check", check)
    g.add_edge(START, "extract")
    kw: dict[str, Any] = {"backend": "alto"} if backend == "alto" else {}
    return g.compile(assertions=[no_wrong_claim], flag_store=store, **kw)


def timed(app: Any, inputs: dict[str, Any]) -> tuple[float, bool]:
    """Seconds to the end of the request, and whether an assertion ended it."""
    t0 = time.perf_counter()
    try:
        app.invoke(inputs)
        return time.perf_counter() - t0, False
    except AssertionViolation:
        return time.perf_counter() - t0, True


def close(*apps: Any) -> None:
    for app in apps:
        if hasattr(app, "close"):
            app.close()


def measure_tokens(label: str, model: str, engine: dict[str, Any], args: Any, tmp: Path) -> dict:
    out: dict[str, Any] = {}
    for backend in ("stock", "alto"):
        full = token_app(backend, model, engine, None, args.tokens, tmp / "none.sqlite")
        early = token_app(
            backend, model, engine, args.fire_at, args.tokens, tmp / f"{label}.sqlite"
        )
        try:
            timed(full, {"q": "warm up"})  # load the model, start the engine
            whole, stopped, generated = [], [], 0
            for run in range(args.runs):
                q = f"Tell me about the history of the city, part {run}."
                t, fired = timed(full, {"q": q})
                assert not fired
                whole.append(t)
                t, fired = timed(early, {"q": q})
                assert fired, "the assertion did not fire: the answer was too short"
                stopped.append(t)
            generated = _words(
                full.invoke({"q": "Tell me about the history of the city."})["answer"]
            )
        finally:
            close(full, early)
        out[backend] = {
            "whole_answer_s": statistics.median(whole),
            "to_violation_s": statistics.median(stopped),
            "fraction": statistics.median(stopped) / statistics.median(whole),
            "words_in_whole_answer": generated,
        }
        print(
            f"  {label:<22} {backend:<6} whole answer {out[backend]['whole_answer_s']:6.2f} s   "
            f"assertion fired after {out[backend]['to_violation_s']:5.2f} s "
            f"({out[backend]['fraction']:.0%})",
            flush=True,
        )
    return out


def measure_items(args: Any, tmp: Path) -> dict:
    out = {}
    for backend in ("stock", "alto"):
        app = item_app(backend, tmp / f"items-{backend}.sqlite")
        try:
            times = []
            for _ in range(args.runs):
                t, fired = timed(app, {})
                assert fired
                times.append(t)
        finally:
            close(app)
        out[backend] = {"to_violation_s": statistics.median(times), "producer_s": 20 * 0.05}
        print(
            f"  {'items (20 x 50 ms)':<22} {backend:<6} assertion on the 3rd item ended the "
            f"request after {out[backend]['to_violation_s']:5.2f} s",
            flush=True,
        )
    return out


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(k, v) for k, v in results.items() if k != "items"]
    fig, axes = plt.subplots(1, len(rows) + 1, figsize=(4.2 * (len(rows) + 1), 3.6))
    for ax, (label, r) in zip(axes[:-1], rows, strict=True):
        names = ["stock", "alto"]
        ax.bar([0, 1], [r[n]["whole_answer_s"] for n in names], 0.35, label="whole answer")
        ax.bar(
            [0.38, 1.38], [r[n]["to_violation_s"] for n in names], 0.35, label="to the violation"
        )
        ax.set_xticks([0.19, 1.19], names)
        ax.set_ylabel("seconds (median)")
        ax.set_title(label, fontsize=10)
        ax.legend(fontsize=8)
    ax = axes[-1]
    items = results["items"]
    ax.bar([0, 1], [items["stock"]["to_violation_s"], items["alto"]["to_violation_s"]], 0.5)
    ax.axhline(items["stock"]["producer_s"], color="grey", ls="--", lw=1, label="producer, all 20")
    ax.set_xticks([0, 1], ["stock", "alto"])
    ax.set_ylabel("seconds to the violation (median)")
    ax.set_title("fail on the 3rd of 20 streamed items", fontsize=10)
    ax.legend(fontsize=8)
    fig.suptitle("A failing assertion on a partial output ends the request", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-r", "--runs", type=int, default=3)
    p.add_argument("--tokens", type=int, default=64, help="tokens the model is asked for")
    p.add_argument("--fire-at", type=int, default=5, help="the assertion fires above these words")
    p.add_argument("--no-model", action="store_true", help="skip SmolLM2 (simulated engine only)")
    args = p.parse_args(argv)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_model:
            print("SmolLM2-135M on the CPU (transformers):", flush=True)
            results["SmolLM2-135M, CPU"] = measure_tokens(
                "SmolLM2-135M", "smollm2-135m", {"engine": "transformers"}, args, Path(tmp)
            )
        print("simulated engine (a cost model, 20 ms per token):", flush=True)
        results["simulated engine (20 ms/token)"] = measure_tokens(
            "simulated", "sim", SIM, args, Path(tmp)
        )
        results["items"] = measure_items(args, Path(tmp))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "assertions_early_stop.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, RESULTS / "assertions_early_stop.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
