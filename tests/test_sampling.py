"""Choosing what to label (issue 15, item 4): the bandit over assertions
(``alto_langgraph.sampling``) puts labels where assertions find real errors; its
baselines; the SQuAD example's assertions, and the example on both backends."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from alto_langgraph import FlagStore
from alto_langgraph.sampling import (
    AssertionBandit,
    bandit,
    choose_flags,
    least_confident,
    uniform,
)


def _items() -> tuple[dict[int, list[str]], set[int]]:
    """60 flagged items: "sharp" flags 20, 18 of them wrong; "noisy" flags 40, 4 wrong;
    items 0 and 1 are flagged by both."""
    flagged: dict[int, list[str]] = {i: ["sharp"] for i in range(20)}
    flagged.update({i: ["noisy"] for i in range(20, 60)})
    flagged[0] = flagged[1] = ["sharp", "noisy"]
    wrong = set(range(18)) | {20, 30, 40, 50}
    return flagged, wrong


def test_the_bandit_puts_labels_where_assertions_find_real_errors() -> None:
    flagged, wrong = _items()
    budget = 20
    found = {
        "bandit": [
            len(set(bandit(flagged, budget, wrong.__contains__, seed=s)) & wrong) for s in range(50)
        ],
        "uniform": [len(set(uniform(flagged, budget, seed=s)) & wrong) for s in range(50)],
    }
    mean = {k: sum(v) / len(v) for k, v in found.items()}
    # uniform finds about 22/60 of 20 = 7.3; the bandit learns "sharp" is worth it
    assert mean["bandit"] > mean["uniform"] + 5, mean
    chooser = AssertionBandit(flagged, seed=0)
    for _ in range(30):
        item = chooser.pick()
        chooser.reward(item, 1.0 if item in wrong else 0.0)
    stats = chooser.stats()
    assert stats["sharp"]["picked"] > stats["noisy"]["picked"]
    assert stats["sharp"]["mean_reward"] > 0.8 > 0.2 > stats["noisy"]["mean_reward"]


def test_every_item_is_labelled_once_then_there_is_none_left() -> None:
    flagged, wrong = _items()
    chosen = bandit(flagged, 1000, wrong.__contains__, seed=3)
    assert sorted(chosen) == sorted(flagged)
    assert AssertionBandit({"x": ["a"]}).pick() == "x"


def test_the_baselines_and_bad_use() -> None:
    assert least_confident({"a": -0.1, "b": -2.0, "c": -0.5}, 2) == ["b", "c"]
    assert sorted(uniform(range(5), 10)) == [0, 1, 2, 3, 4]
    assert uniform(range(100), 5, seed=1) == uniform(range(100), 5, seed=1)
    with pytest.raises(ValueError, match="no flagged items"):
        AssertionBandit({})
    chooser = AssertionBandit({"x": ["a"]})
    with pytest.raises(KeyError, match="was not picked"):
        chooser.reward("x", 1)
    with pytest.raises(ValueError, match="bandit or uniform"):
        choose_flags([], 1, strategy="best")


def test_the_squad_example_s_assertions_judge_answers_as_described() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
    import squad_assertions as ex

    state: Any = {
        "question": "What 1971 film was shot on location in Newcastle?",
        "passage": "Newcastle was used as a location for the 1971 film Get Carter. "
        "The city hosts many festivals.",
    }
    good, bad = {"answer": "Get Carter"}, {"answer": "The film Stormy Monday was shot there"}
    assert ex.key_terms_in_evidence.check(state, good) is True
    assert "not in the passage" in ex.key_terms_in_evidence.check(state, bad)
    assert ex.supported_by_evidence.check(state, good) is True
    assert ex.supported_by_evidence.check(state, bad) == "its evidence sentence does not hold it"
    assert ex.short_answer.check(state, {"answer": "a b c d e f g h i"}).startswith("9 words")
    assert ex.key_terms_in_evidence.check(state, {"views": ["x"]}) is None  # not the answer
    assert ex.one_answer.check(state, {"views": ["Get Carter."]}) == ("answer", "carter get")
    assert ex.correct("It was Get Carter.", ["Get Carter"])
    assert not ex.correct("Carter", ["Get Carter"])
    assert ex.clean("Answer: Get Carter.\nMore") == "Get Carter"


def test_the_squad_example_flags_the_same_on_stock_and_alto(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """The example app end to end on four questions, its model the simulated engine
    (a stand-in: no logprobs, seeded text): the same answers and flags on both."""
    import asyncio

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
    import squad_assertions as ex

    from alto_langgraph.lm import ChatAlto, Timing

    sim = {"timing": Timing(step_base=0.001), "seed": 1}
    monkeypatch.setattr(ex, "llm", ChatAlto(model=ex.MODEL, engine="simulated", engine_options=sim))
    seen = {}
    for backend in ("pregel", "alto"):
        path = tmp_path / f"{backend}.sqlite"
        kw = {"lm": {ex.MODEL: {"engine": "simulated", **sim}}} if backend == "alto" else {}
        app = ex.build().compile(backend=backend, assertions=ex.ASSERTIONS, flag_store=path, **kw)
        try:
            rows = asyncio.run(ex.run(app, ex.squad(4)))
        finally:
            if backend == "alto":
                app.close()
        flags = sorted(
            (f["thread_id"], f["assertion"], f["message"], json.dumps(f["output"]))
            for f in FlagStore(path).flags()
        )
        seen[backend] = ([(r["id"], r["answer"], r["correct"]) for r in rows], flags)
    assert seen["alto"] == seen["pregel"]
    answers, flags = seen["pregel"]
    assert len(answers) == 4 and not any(right for *_, right in answers)
    assert {f[1] for f in flags} >= {"key_terms_in_evidence", "short_answer"}
