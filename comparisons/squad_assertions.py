"""Do model assertions catch the errors a model is confident about? And where should
labels go? SQuAD questions answered by SmolLM2-135M (CPU), with the gold answers.

    python comparisons/squad_assertions.py [--questions 120] [--seeds 200]

Runs ``examples/squad_assertions.py`` on alto over the bundled SQuAD sample (an answer
is right when it holds a gold answer), then, from the flags its four assertions kept:

* each assertion's **precision and recall at flagging wrong answers**, and those of
  a monitor on the model's own token confidence (the mean log probability of the
  answer's tokens, from the transformers engine) flagging as many answers;
* **confident errors**: of the wrong answers the model was more confident about than
  the median answer (which that monitor never flags first), the share each assertion
  flagged (the paper's claim: assertions find confident errors);
* **where labels go** (issue 15, item 4): wrong answers found per label, under a
  budget, by the bandit over assertions (``alto_langgraph.sampling``), by uniform
  sampling of the flagged answers, by least-confidence sampling and by random
  sampling of all answers (medians over ``--seeds`` seeds).

Results go to ``comparisons/results/squad_assertions.json`` and a plot next to it;
``--from-json`` redoes the analysis from a saved run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

import squad_assertions as app_module  # noqa: E402

from alto_langgraph import FlagStore  # noqa: E402
from alto_langgraph.sampling import bandit, least_confident, uniform  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def answer_questions(n: int) -> list[dict[str, Any]]:
    """Each question's answer, confidence, correctness and the assertions that fired."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "flags.sqlite"
        app = app_module.build().compile(
            backend="alto",
            assertions=app_module.ASSERTIONS,
            flag_store=store,
            lm={app_module.MODEL: {"max_batch": 8}},
        )
        try:
            t0 = time.perf_counter()
            rows = asyncio.run(app_module.run(app, app_module.squad(n), concurrency=4))
            print(f"answered {len(rows)} questions in {time.perf_counter() - t0:.0f} s", flush=True)
        finally:
            app.close()
        fired: dict[str, set[str]] = {}
        for flag in FlagStore(store).flags():
            fired.setdefault(flag["thread_id"], set()).add(flag["assertion"])
    return [{**r, "fired": sorted(fired.get(r["id"], ()))} for r in rows]


def precision_recall(flagged: set[str], wrong: set[str]) -> dict[str, float]:
    hits = len(flagged & wrong)
    return {
        "flagged": len(flagged),
        "precision": hits / len(flagged) if flagged else 0.0,
        "recall": hits / len(wrong) if wrong else 0.0,
    }


def analyse(rows: list[dict[str, Any]], seeds: int) -> dict[str, Any]:
    wrong = {r["id"] for r in rows if not r["correct"]}
    names = [a.name for a in app_module.ASSERTIONS]
    by_assertion = {a: {r["id"] for r in rows if a in r["fired"]} for a in names}
    any_flag = set().union(*by_assertion.values())
    confidence = {r["id"]: r["confidence"] for r in rows}
    out: dict[str, Any] = {
        "questions": len(rows),
        "wrong": len(wrong),
        "assertions": {a: precision_recall(f, wrong) for a, f in by_assertion.items()},
    }
    out["assertions"]["any assertion"] = precision_recall(any_flag, wrong)
    # the confidence monitor: the k least confident answers, for every k; next to each
    # assertion, flagging as many answers as it did
    ranked = least_confident(confidence, len(rows))
    for r in out["assertions"].values():
        r["monitor_precision"] = precision_recall(set(ranked[: r["flagged"]]), wrong)["precision"]
    out["monitor_curve"] = [
        precision_recall(set(ranked[:k]), wrong) for k in range(1, len(rows) + 1)
    ]
    # confident errors: wrong answers above the median confidence
    median = statistics.median(confidence.values())
    confident_wrong = {i for i in wrong if confidence[i] > median}
    out["confident_errors"] = {
        "count": len(confident_wrong),
        "caught": {
            a: len(f & confident_wrong) / len(confident_wrong) if confident_wrong else 0.0
            for a, f in [*by_assertion.items(), ("any assertion", any_flag)]
        },
    }
    # where labels go: wrong answers found within each budget
    flagged = {r["id"]: r["fired"] for r in rows if r["fired"]}
    budgets = list(range(5, len(flagged) + 1, 5))
    found: dict[str, list[float]] = {}
    for name, choose in {
        "bandit over assertions": lambda b, s: bandit(flagged, b, wrong.__contains__, seed=s),
        "uniform over flagged": lambda b, s: uniform(flagged, b, seed=s),
        "least confident": lambda b, s: least_confident(confidence, b),
        "random": lambda b, s: uniform(confidence, b, seed=s),
    }.items():
        found[name] = [
            statistics.median(len(set(choose(b, s)) & wrong) for s in range(seeds)) for b in budgets
        ]
    out["labelling"] = {"budgets": budgets, "wrong_found": found}
    return out


def report(result: dict[str, Any]) -> None:
    n, w = result["questions"], result["wrong"]
    print(f"\n{n} questions, {w} answered wrong ({w / n:.0%})\n")
    print(f"{'flagged by':<24} {'flagged':>7} {'precision':>9} {'recall':>7}   monitor precision")
    for name, r in result["assertions"].items():
        print(
            f"{name:<24} {r['flagged']:>7} {r['precision']:>9.2f} {r['recall']:>7.2f}"
            f"   {r['monitor_precision']:.2f}"
        )
    print("(monitor precision: the token-confidence monitor flagging as many answers)")
    ce = result["confident_errors"]
    print(f"\nconfident errors (wrong, above the median confidence): {ce['count']}")
    for name, share in ce["caught"].items():
        print(f"  caught by {name:<24} {share:.0%}")
    lab = result["labelling"]
    print("\nwrong answers found per labelling budget (median over seeds):")
    print(f"{'budget':<24}" + "".join(f"{b:>6}" for b in lab["budgets"]))
    for name, row in lab["wrong_found"].items():
        print(f"{name:<24}" + "".join(f"{v:>6.1f}" for v in row))


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    curve = result["monitor_curve"]
    ax.plot(
        [c["recall"] for c in curve],
        [c["precision"] for c in curve],
        color="0.5",
        label="token-confidence monitor (each threshold)",
    )
    for i, (name, r) in enumerate(result["assertions"].items()):
        ax.scatter(r["recall"], r["precision"], s=50, color=f"C{i}", label=name, zorder=3)
    base = result["wrong"] / result["questions"]
    ax.axhline(base, color="0.8", ls="--", lw=1, label=f"base rate of wrong answers ({base:.0%})")
    ax.set_xlabel("recall (share of wrong answers flagged)")
    ax.set_ylabel("precision (share of flags that are wrong)")
    ax.set_title("Flagging SmolLM2's wrong SQuAD answers", fontsize=10)
    ax.legend(fontsize=7, loc="lower left")
    lab = result["labelling"]
    for name, row in lab["wrong_found"].items():
        bx.plot(lab["budgets"], row, marker="o", ms=3, label=name)
    bx.set_xlabel("labels spent")
    bx.set_ylabel("wrong answers found (median over seeds)")
    bx.set_title("Where labels go", fontsize=10)
    bx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", "--questions", type=int, default=120)
    p.add_argument("--seeds", type=int, default=200)
    p.add_argument("--from-json", metavar="FILE", help="analyse a saved run's answers")
    args = p.parse_args(argv)
    if args.from_json:
        rows = json.loads(Path(args.from_json).read_text())["answers"]
    else:
        rows = answer_questions(args.questions)
    result = analyse(rows, args.seeds)
    report(result)
    RESULTS.mkdir(exist_ok=True)
    saved = {**result, "answers": rows}
    (RESULTS / "squad_assertions.json").write_text(json.dumps(saved, indent=1) + "\n")
    plot(result, RESULTS / "squad_assertions.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
