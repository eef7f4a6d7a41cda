"""What model assertions that hold cost: the fact-check example with and without them.

    python comparisons/assertions.py [--questions 8] [--concurrency 4] [--rounds 3]

The example app (``examples/fact_check.py``) with three assertions that hold on every
item, as a user would write them: every Send of ``gen_queries`` goes to ``search``,
every evidence row names a passage of the corpus, the report has a line per claim.
Each round runs the same questions on four apps one after the other, in a new order
each round (stock LangGraph and alto, each without and with the assertions), so drift
hits all four alike. Reports the mean latency of each and the ratio with/without, and
the time the checks themselves took (from ``assertions.stats``). Results are written
to ``comparisons/results/assertions.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

import fact_check  # noqa: E402
from langgraph.types import Command  # noqa: E402

from alto_langgraph import assertion  # noqa: E402
from alto_langgraph.assertions import stats  # noqa: E402

RESULTS = Path(__file__).parent / "results"


@assertion("gen_queries", severity="fail")
def queries_go_to_search(input: Any, output: Any) -> bool:
    return isinstance(output, Command) and all(s.node == "search" for s in output.goto)


@functools.cache
def passage_ids() -> frozenset[str]:
    return frozenset(p["id"] for p in fact_check.corpus().passages) | {"-"}  # "-": no hit


@assertion("search", severity="record")
def evidence_names_a_passage(input: Any, output: Any) -> Any:
    known = passage_ids()
    return all(e["passage"] in known for e in output["evidence"]) or "unknown passage"


@assertion("report", severity="record")
def a_line_per_claim(input: Any, output: Any) -> Any:
    return output["report"].count("claim ") == len(input["claims"]) or "a claim has no line"


ASSERTIONS = [queries_go_to_search, evidence_names_a_passage, a_line_per_claim]


async def run(app: Any, qs: list[str], concurrency: int) -> list[tuple[float, Any]]:
    sem = asyncio.Semaphore(concurrency)

    async def one(q: str) -> tuple[float, Any]:
        async with sem:
            return await fact_check.timed(app, q)

    return list(await asyncio.gather(*(one(q) for q in qs)))


async def compare(n: int, concurrency: int, rounds: int) -> dict[str, Any]:
    qs = fact_check.questions(n)
    passage_ids()  # the index and the id set, before timing
    store = Path(tempfile.mkdtemp()) / "flags.sqlite"
    apps = {}
    for backend in ("pregel", "alto"):
        apps[(backend, False)] = fact_check.build().compile(backend=backend)
        apps[(backend, True)] = fact_check.build().compile(
            backend=backend, assertions=ASSERTIONS, flag_store=store
        )
    for app in apps.values():  # warm up
        await app.ainvoke({"question": qs[0]})
    latencies: dict[tuple[str, bool], list[float]] = {k: [] for k in apps}
    answers: dict[tuple[str, bool], list[Any]] = {k: [] for k in apps}
    order = list(apps)
    rng = random.Random(0)
    for r in range(rounds):
        rng.shuffle(order)
        for key in order:
            print(f"round {r + 1}/{rounds}: {key[0]:6} assertions={key[1]}", flush=True)
            for latency, answer in await run(apps[key], qs, concurrency):
                latencies[key].append(latency)
                answers[key].append(answer)
    checks = {}
    for backend in ("pregel", "alto"):
        counted = stats(apps[(backend, True)])
        n_checks = sum(a["checked"] for node in counted.values() for a in node.values())
        seconds = sum(a["seconds"] for node in counted.values() for a in node.values())
        fired = sum(a["fired"] for node in counted.values() for a in node.values())
        checks[backend] = {
            "checks": n_checks,  # (the warm-up request's included)
            "fired": fired,
            "us_per_check": 1e6 * seconds / n_checks,
        }
    for app in apps.values():
        close = getattr(app, "close", None)
        if close is not None:
            close()
    store.unlink(missing_ok=True)
    out: dict[str, Any] = {
        "questions": n,
        "concurrency": concurrency,
        "rounds": rounds,
        # (per round, the answers in question order: the same on all four apps)
        "same_answers": all(a == answers[("pregel", False)] for a in answers.values()),
    }
    for backend in ("pregel", "alto"):
        without = statistics.mean(latencies[(backend, False)])
        with_ = statistics.mean(latencies[(backend, True)])
        out[backend] = {
            "mean_s_without": without,
            "mean_s_with": with_,
            "ratio": with_ / without,
            **checks[backend],
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", "--questions", type=int, default=8)
    p.add_argument("-c", "--concurrency", type=int, default=4)
    p.add_argument("-r", "--rounds", type=int, default=3)
    args = p.parse_args(argv)
    if min(args.questions, args.concurrency, args.rounds) < 1:
        p.error("--questions, --concurrency and --rounds must be at least 1")
    t0 = time.perf_counter()
    out = asyncio.run(compare(args.questions, args.concurrency, args.rounds))
    print()
    print(f"{'backend':8} {'without s':>10} {'with s':>10} {'with/without':>13} {'us/check':>9}")
    for backend, name in (("pregel", "stock"), ("alto", "alto")):
        b = out[backend]
        print(
            f"{name:8} {b['mean_s_without']:>10.3f} {b['mean_s_with']:>10.3f} "
            f"{b['ratio']:>13.3f} {b['us_per_check']:>9.1f}"
        )
    print(
        f"({out['alto']['checks']} checks on alto, {out['alto']['fired']} fired; "
        f"{time.perf_counter() - t0:.0f} s in all)"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "assertions.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"same answers with and without assertions, on both backends: {out['same_answers']}")
    ok = out["same_answers"] and out["alto"]["fired"] == 0 and out["pregel"]["fired"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
