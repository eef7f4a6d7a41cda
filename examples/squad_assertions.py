"""Model assertions on real data: SQuAD questions answered by SmolLM2-135M (CPU).

    question -> retrieve (BM25 over the bundled SQuAD passages)
             -> answer (@streaming: the model's answer, then two more views of it)

``answer`` asks the model three ways at once (the same batch on alto's LM stage): the
answer it gives is the first; the other two are views for a consistency assertion. It
yields the answer, with its token confidence (the mean log probability of its tokens,
from the transformers engine), then each view. The assertions, all ``record``:

* ``key_terms_in_evidence``: the answer's key terms appear in the retrieved passage
  (SQuAD answers are spans of a passage);
* ``supported_by_evidence``: the claim "question + answer" is supported by its evidence
  sentence (the passage's sentence that best matches the question holds the answer);
* ``short_answer``: an extractive answer is a short phrase;
* ``one_answer`` (consistency over the items): the three views agree; the majority is
  proposed as the weak label.

An answer is right when it holds a gold answer. With the gold answers,
``comparisons/squad_assertions.py`` reports each assertion's precision and recall at
flagging wrong answers, next to a monitor on the model's own token confidence.

    python examples/squad_assertions.py -n 8         # a few questions, alto
    python examples/squad_assertions.py --help

Needs the ``lm`` extra and SmolLM2's weights (``make demo`` installs them).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import operator
import re
import statistics
import string
import sys
from pathlib import Path
from typing import Annotated, Any

from langgraph.graph import START, StateGraph
from typing_extensions import TypedDict

import alto_langgraph  # noqa: F401  (adds backend= to StateGraph.compile)
from alto_langgraph import assertion, consistency, streaming
from alto_langgraph.lm import ChatAlto

sys.path.insert(0, str(Path(__file__).parent))
from fact_check import DATA, corpus, tokens  # noqa: E402  (the bundled SQuAD, its BM25)

MODEL = "smollm2-135m"
llm = ChatAlto(model=MODEL, max_tokens=16)

#: three ways to ask: the first is the answer, the others are views of it
PROMPTS = (
    "Read the passage and answer the question with a short phrase from it.\n\n"
    "Passage: {passage}\n\nQuestion: {question}\nAnswer:",
    "{passage}\n\nAccording to the text above, {question} Reply with a few words only.",
    "Question: {question}\nUse this context: {passage}\nGive only the short answer.",
)


class QA(TypedDict, total=False):
    question: str
    passage: str
    answer: str
    confidence: float
    views: Annotated[list[str], operator.add]


def retrieve(state: QA) -> dict:
    ((_, best),) = corpus().search(state["question"], k=1)
    return {"passage": best["text"]}


@streaming
async def answer(state: QA) -> Any:
    asks = [p.format(passage=state["passage"], question=state["question"]) for p in PROMPTS]
    replies = await asyncio.gather(*(llm.ainvoke(a) for a in asks))
    first = replies[0]
    lps = [t["logprob"] for t in first.response_metadata.get("logprobs", {}).get("content", [])]
    yield {"answer": clean(first.content), "confidence": statistics.fmean(lps) if lps else 0.0}
    for reply in replies[1:]:
        yield {"views": [clean(reply.content)]}


def clean(text: str) -> str:
    """The answer's first line, without a leading "Answer:"."""
    line = text.strip().split("\n")[0]
    return re.sub(r"^(the )?answer( is)?:?\s*", "", line, flags=re.I).strip().rstrip(".")


# -- the assertions ----------------------------------------------------------------------
def new_terms(answer: str, question: str) -> set[str]:
    """What the answer adds to the question: its content words the question lacks (a
    model that answers in a sentence repeats the question's)."""
    return set(tokens(answer)) - set(tokens(question))


@assertion("answer", severity="record")
def key_terms_in_evidence(state: QA, item: dict) -> Any:
    if "answer" not in item:
        return None
    terms = new_terms(item["answer"], state["question"])
    missing = terms - set(tokens(state["passage"]))
    return len(missing) <= len(terms) / 2 or f"not in the passage: {sorted(missing)}"


def evidence_sentence(passage: str, question: str) -> str:
    sentences = re.split(r"(?<=[.!?])\s+", passage)
    asked = set(tokens(question))
    return max(sentences, key=lambda s: len(asked & set(tokens(s))))


@assertion("answer", severity="record")
def supported_by_evidence(state: QA, item: dict) -> Any:
    if "answer" not in item:
        return None
    terms = new_terms(item["answer"], state["question"])
    sentence = evidence_sentence(state["passage"], state["question"])
    shared = terms & set(tokens(sentence))
    return bool(terms) and len(shared) >= len(terms) / 2 or "its evidence sentence does not hold it"


@assertion("answer", severity="record")
def short_answer(state: QA, item: dict) -> Any:
    if "answer" not in item:
        return None
    n = len(item["answer"].split())
    return 0 < n <= 8 or f"{n} words: not a short phrase"


@consistency("answer", severity="record")
def one_answer(state: QA, item: dict) -> Any:
    """The three views must add the same terms to the question."""
    text = item["answer"] if "answer" in item else item["views"][0]
    return "answer", " ".join(sorted(new_terms(text, state["question"])))


# -- SQuAD's scoring ---------------------------------------------------------------------
def normalize(text: str) -> str:
    text = "".join(c for c in text.lower() if c not in set(string.punctuation))
    return " ".join(w for w in text.split() if w not in ("a", "an", "the"))


def correct(prediction: str, golds: list[str]) -> bool:
    """Whether the answer holds a gold answer (the model answers in sentences, so SQuAD's
    exact match would call nearly every answer wrong)."""
    said = f" {normalize(prediction)} "
    return any(f" {normalize(g)} " in said for g in golds)


def squad(n: int, skip: int = 0) -> list[dict[str, Any]]:
    """``n`` questions of the bundled sample, with their gold answers."""
    with gzip.open(DATA / "squad-v1.1-dev-questions-sample500.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f]
    return rows[skip : skip + n]


def build() -> StateGraph:
    g = StateGraph(QA)
    g.add_node("retrieve", retrieve)
    g.add_node("answer", answer)
    g.add_edge(START, "retrieve")
    g.add_edge("retrieve", "answer")
    return g


ASSERTIONS = [key_terms_in_evidence, supported_by_evidence, short_answer, one_answer]


async def run(app: Any, rows: list[dict[str, Any]], concurrency: int = 4) -> list[dict]:
    """Each question's answer (its thread id is the question's id, as the flags show)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(row: dict[str, Any]) -> dict:
        async with gate:
            out = await app.ainvoke(
                {"question": row["question"], "views": []},
                {"configurable": {"thread_id": row["id"]}},
            )
        right = correct(out["answer"], row["answers"])
        return {**row, "answer": out["answer"], "confidence": out["confidence"], "correct": right}

    return list(await asyncio.gather(*(one(r) for r in rows)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", "--questions", type=int, default=8)
    p.add_argument("--backend", choices=["alto", "pregel"], default="alto")
    p.add_argument("--flags", default="squad-flags.sqlite", help="the flag store (SQLite)")
    args = p.parse_args(argv)
    kw: dict[str, Any] = {"lm": {MODEL: {"max_batch": 8}}} if args.backend == "alto" else {}
    app = build().compile(backend=args.backend, assertions=ASSERTIONS, flag_store=args.flags, **kw)
    try:
        results = asyncio.run(run(app, squad(args.questions)))
    finally:
        if hasattr(app, "close"):
            app.close()
    for r in results:
        mark = "right" if r["correct"] else "wrong"
        print(f"{mark}  {r['confidence']:6.2f}  {r['question'][:60]!r} -> {r['answer']!r}")
    print(f"flags in {args.flags}: alto-langgraph flagged --store {args.flags}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
