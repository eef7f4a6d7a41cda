"""Model assertions beside the stream (issue 15, item 3): over each item a
``@streaming`` node yields, over a ``@fold``'s input, and over the LM calls a node
makes (``over="tokens"`` as they arrive, ``over="response"`` once each ends). Each runs
on stock LangGraph and on alto with the same answers and flags; on alto a ``fail``
ends the request as soon as the bad item or the bad partial text is there: the
producer stops, the Sends it started are cancelled, the LM stops generating."""

from __future__ import annotations

import asyncio
import functools
import json
import operator
import time
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.graph import START, StateGraph
from langgraph.types import Send

import alto_langgraph  # noqa: F401  (the backend="alto" plug)
from alto_langgraph import (
    AssertionCheckError,
    AssertionViolation,
    FlagStore,
    assertion,
    consistency,
    fold,
    streaming,
)
from alto_langgraph.assertions import feedback, stats
from alto_langgraph.lm import ChatAlto, Timing

BACKENDS = {
    "stock": {"backend": "pregel"},
    "alto-app": {"backend": "alto"},
    "alto-process": {"backend": "alto", "executor": "process"},
}


class S(TypedDict, total=False):
    n: int
    bad: int
    claims: Annotated[list, operator.add]
    checked: Annotated[list, operator.add]
    answer: str


def _flags(path: Path) -> list[tuple]:
    return [
        (f["node"], f["assertion"], f["severity"], f["message"], json.dumps(f["output"]))
        for f in sorted(FlagStore(path).flags(), key=lambda f: f["id"])
    ]


def _counts(app: Any) -> dict[str, tuple[int, int]]:
    """Per assertion: (checked, fired), over every node."""
    return {
        name: (c["checked"], c["fired"]) for node in stats(app).values() for name, c in node.items()
    }


def _compile(g: StateGraph, backend: str, path: Path, checks: list) -> Any:
    return g.compile(**BACKENDS[backend], assertions=checks, flag_store=path)


def _close(app: Any) -> None:
    if hasattr(app, "close"):
        app.close()


def _everywhere(tmp_path: Path, graph: Any, checks: list, run: Any, memory: bool = False) -> Any:
    """``run(app, store_path)`` on every backend of BACKENDS, for ``graph()`` compiled
    with ``checks`` (``memory``: and a checkpointer of its own): asserts each outcome
    equals stock's, and returns it."""
    from langgraph.checkpoint.memory import InMemorySaver

    outcomes = {}
    for backend, kw in BACKENDS.items():
        path = tmp_path / f"{backend}.sqlite"
        saver = {"checkpointer": InMemorySaver()} if memory else {}
        app = graph().compile(**kw, **saver, assertions=checks, flag_store=path)
        try:
            outcomes[backend] = run(app, path)
        finally:
            _close(app)
    assert outcomes["alto-app"] == outcomes["stock"]
    assert outcomes["alto-process"] == outcomes["stock"]
    return outcomes["stock"]


# -- items of a @streaming node ---------------------------------------------------------


def _producer_graph(
    asynchronous: bool = False, pause: float = 0.0, slow_first: bool = False
) -> StateGraph:
    """``extract`` yields n claims, each a partial update and a Send to ``check``; the
    claim numbered ``bad`` is wrong on a first attempt (a retry fixes it).
    ``slow_first``: checking the first claim takes 3 s."""

    def claim(s: S, i: int) -> str:
        return "wrong" if i == s.get("bad") and not feedback() else f"claim {i}"

    if asynchronous:

        @streaming
        async def extract(s: S) -> Any:
            for i in range(s["n"]):
                await asyncio.sleep(pause)
                yield {"claims": [claim(s, i)]}
                yield Send("check", {"claim": claim(s, i)})

    else:

        @streaming
        def extract(s: S) -> Any:
            for i in range(s["n"]):
                time.sleep(pause)
                yield {"claims": [claim(s, i)]}
                yield Send("check", {"claim": claim(s, i)})

    def check(p: dict) -> dict:
        time.sleep(3.0 if slow_first and p["claim"] == "claim 0" else 0.01)
        return {"checked": [p["claim"].upper()]}

    g = StateGraph(S)
    g.add_node("extract", extract)
    g.add_node("check", check)
    g.add_edge(START, "extract")
    return g


def _no_wrong_claim(severity: str) -> Any:
    @assertion("extract", severity=severity, name=f"no_wrong_claim_{severity}")
    def no_wrong_claim(s: dict, item: Any) -> Any:
        if isinstance(item, dict):
            return item["claims"] != ["wrong"] or "a claim is wrong"
        assert isinstance(item, Send), item  # the Sends, as the node yielded them
        return item.arg["claim"] != "wrong" or "a wrong claim was sent"

    return no_wrong_claim


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("severity", ["record", "retry"])
def test_each_item_is_checked_with_the_same_answers_and_flags_everywhere(
    tmp_path: Path, severity: str, asynchronous: bool
) -> None:
    def run(app: Any, path: Path) -> Any:
        inputs = {"n": 4, "bad": 2, "claims": [], "checked": []}
        out = asyncio.run(app.ainvoke(inputs)) if asynchronous else app.invoke(inputs)
        out["checked"].sort()
        return out, _flags(path), _counts(app)

    graph = functools.partial(_producer_graph, asynchronous)
    out, flags, counts = _everywhere(tmp_path, graph, [_no_wrong_claim(severity)], run)
    # record: the wrong claim stays, flagged twice (its update and its Send); retry:
    # flagged once (the update), and the node ran again and fixed it
    if severity == "record":
        assert "wrong" in out["claims"] and len(flags) == 2
        assert counts == {"no_wrong_claim_record": (8, 2)}
    else:
        assert out["claims"] == [f"claim {i}" for i in range(4)]
        assert out["checked"] == sorted(f"CLAIM {i}" for i in range(4))
        assert [f[3] for f in flags] == ["a claim is wrong"]
        assert counts == {"no_wrong_claim_retry": (5 + 8, 1)}  # 5 items, then all 8


@pytest.mark.parametrize("backend", ["alto-app", "alto-process"])
def test_a_failing_item_ends_the_request_before_the_producer_finishes(
    tmp_path: Path, backend: str
) -> None:
    """The wrong claim is the 2nd of 20, yielded 0.1 s apart: stock LangGraph sees it
    once the node has made all 20 (2 s), alto as it is yielded, and the Sends already
    started are not waited for (checking the first claim takes 3 s)."""
    inputs = {"n": 20, "bad": 1, "claims": [], "checked": []}
    elapsed, errors, flags = {}, {}, {}
    for name in ("stock", backend):
        path = tmp_path / f"{name}.sqlite"
        graph = _producer_graph(pause=0.1, slow_first=True)
        app = _compile(graph, name, path, [_no_wrong_claim("fail")])
        try:
            if getattr(app, "deployment", None) is not None:
                app.deployment.start()  # not timed: the worker processes' start
            t0 = time.monotonic()
            with pytest.raises(AssertionViolation) as exc:
                app.invoke(inputs)
            elapsed[name] = time.monotonic() - t0
            errors[name], flags[name] = str(exc.value), _flags(path)
        finally:
            _close(app)
    assert errors[backend] == errors["stock"]
    assert "on the 3rd item it yielded: a claim is wrong" in errors["stock"]
    assert flags[backend] == flags["stock"] and len(flags["stock"]) == 1
    assert elapsed["stock"] > 1.9
    assert elapsed[backend] < 1.0, elapsed


def _fold_graph() -> StateGraph:
    def tokens(i: int) -> Any:
        yield from (f"t{i}.{k}" for k in range(3 + i))

    @streaming
    def produce(s: S) -> Any:
        for i in range(s["n"]):
            yield Send("count", {"i": i, "tokens": tokens(i)})

    @fold(over="tokens")
    class Count:
        def start(self, p: dict) -> int:
            return 0

        def step(self, acc: int, chunk: str) -> int:
            return acc + 1

        def finish(self, acc: int, p: dict) -> dict:
            return {"checked": [(p["i"], acc)]}

    g = StateGraph(S)
    g.add_node("produce", produce)
    g.add_node("count", Count)
    g.add_edge(START, "produce")
    return g


@assertion("produce", severity="record")
def short_stream(s: dict, item: Send) -> Any:
    """Sees a stream sent to a fold as the list of its chunks, once it has ended."""
    return len(item.arg["tokens"]) < 5 or f"stream {item.arg['i']}: {item.arg['tokens']}"


@assertion("count", severity="record")
def counted_all(payload: dict, update: dict) -> Any:
    ((i, acc),) = update["checked"]
    return acc == len(payload["tokens"]) and acc < 4 or f"{i} counted {acc}"


@pytest.mark.parametrize("backend", ["alto-app", "alto-process"])
def test_items_carrying_streams_and_folds_are_checked_as_on_stock(
    tmp_path: Path, backend: str
) -> None:
    outcomes = {}
    for name in ("stock", backend):
        path = tmp_path / f"{name}.sqlite"
        app = _compile(_fold_graph(), name, path, [short_stream, counted_all])
        try:
            out = app.invoke({"n": 4, "checked": []})
            outcomes[name] = (sorted(out["checked"]), sorted(_flags(path)))
        finally:
            _close(app)
    assert outcomes[backend] == outcomes["stock"]
    flags = outcomes["stock"][1]
    # streams of 3, 4, 5 and 6 chunks: folds count 4 or more thrice, 2 streams are long
    assert [f[1] for f in flags] == ["counted_all"] * 3 + ["short_stream"] * 2
    assert '"t3.5"' in " ".join(f[4] for f in flags)  # the whole stream, as collected


# -- the LM calls a node makes ----------------------------------------------------------

#: 0.02 s per token, one request at a time: a request of 400 tokens takes 8 s
SLOW = Timing(step_base=0.02, step_per_request=0.0, prefill_per_token=0.0, max_batch=1)
TEXT = "the answer is " + "very " * 600 + "long"
SIM = {"timing": SLOW, "texts": [TEXT], "max_context": 4096}


def _llm_graph(llm: Any, asynchronous: bool = False) -> StateGraph:
    # s["n"]: how many tokens to ask for
    def answer(s: S) -> dict:
        return {
            "answer": llm.invoke([HumanMessage(f"question {s['n']}")], max_tokens=s["n"]).content
        }

    async def aanswer(s: S) -> dict:
        prompt = [HumanMessage(f"question {s['n']}")]
        return {"answer": (await llm.ainvoke(prompt, max_tokens=s["n"])).content}

    g = StateGraph(S)
    g.add_node("answer", aanswer if asynchronous else answer)
    g.add_edge(START, "answer")
    return g


def _lm_app(backend: str, path: Path, checks: list, asynchronous: bool = False) -> Any:
    if backend == "stock":
        llm = ChatAlto(model="slow", engine="simulated", engine_options=SIM)
        return _llm_graph(llm, asynchronous).compile(assertions=checks, flag_store=path)
    llm = ChatAlto(model="slow")
    return _llm_graph(llm, asynchronous).compile(
        backend="alto",
        lm={"slow": {"engine": "simulated", **SIM}},
        start="compile",
        assertions=checks,
        flag_store=path,
    )


@assertion("answer", severity="fail", over="tokens")
def not_rambling(messages: list, text: str) -> Any:
    return text.count("very") < 3 or "the answer rambles"


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("backend", ["stock", "alto-app"])
def test_a_failing_token_check_stops_the_lm_at_once(
    tmp_path: Path, backend: str, asynchronous: bool
) -> None:
    """400 tokens would take 8 s; the check fails on the 5th token and the request
    ends with it, and the model is free again at once (it serves one request at a
    time: the next answer would wait for the first to finish)."""
    path = tmp_path / "flags.sqlite"
    app = _lm_app(backend, path, [not_rambling], asynchronous)

    def ask(n: int) -> Any:
        inputs = {"n": n}
        return asyncio.run(app.ainvoke(inputs)) if asynchronous else app.invoke(inputs)

    try:
        t0 = time.monotonic()
        with pytest.raises(AssertionViolation, match="'not_rambling' on node 'answer'"):
            ask(400)
        assert time.monotonic() - t0 < 2.0
        t0 = time.monotonic()
        assert ask(3)["answer"] == "the answer is"
        assert time.monotonic() - t0 < 2.0  # the model was free: the first call stopped
    finally:
        _close(app)
    ((node, name, severity, message, output),) = _flags(path)
    assert (node, name, severity) == ("answer", "not_rambling", "fail")
    assert message == "the answer rambles"
    assert json.loads(output) == "the answer is very very very"
    (flag,) = FlagStore(path).flags()
    assert flag["input"][0]["content"] == "question 400"


@assertion("answer", severity="retry", over="response")
def says_the_answer(messages: list, text: str) -> Any:
    return "the answer" in text or f"no answer in {text!r}"


@assertion("answer", severity="record", over="tokens")
def short_enough(messages: list, text: str) -> Any:
    return len(text) < 12 or "long"


def test_response_and_token_checks_see_the_same_calls_on_both_backends(tmp_path: Path) -> None:
    outcomes = {}
    for backend in ("stock", "alto-app"):
        path = tmp_path / f"{backend}.sqlite"
        app = _lm_app(backend, path, [says_the_answer, short_enough])
        try:
            out = app.invoke({"n": 5})
            outcomes[backend] = (out, _flags(path), _counts(app))
        finally:
            _close(app)
    assert outcomes["alto-app"] == outcomes["stock"]
    out, flags, counts = outcomes["stock"]
    assert out["answer"] == "the answer is very very"
    # the token check fired once for the call (record: kept once, then not run again)
    assert flags == [("answer", "short_enough", "record", "long", '"the answer is"')]
    assert counts == {"says_the_answer": (1, 0), "short_enough": (3, 1)}


def test_a_model_that_does_not_stream_is_checked_on_its_whole_response(tmp_path: Path) -> None:
    """A response check works for any LangChain chat model; so does a token check, on
    the whole response when the model gives no tokens. A fail the node catches still
    fails the request."""
    llm = GenericFakeChatModel(messages=iter([AIMessage("the answer is very very very")]))

    def answer(s: S) -> dict:
        try:
            return {"answer": llm.invoke("q").content}
        except AssertionViolation:
            return {"answer": "caught it"}

    g = StateGraph(S)
    g.add_node("answer", answer)
    g.add_edge(START, "answer")
    path = tmp_path / "flags.sqlite"
    app = g.compile(assertions=[not_rambling], flag_store=path)
    with pytest.raises(AssertionViolation, match="the answer rambles"):
        app.invoke({"n": 1})
    assert [f[1] for f in _flags(path)] == ["not_rambling"]


def test_lm_checks_on_a_node_in_a_worker_are_refused(tmp_path: Path) -> None:
    g = _llm_graph(ChatAlto(model="slow"))
    with pytest.raises(ValueError, match="'not_rambling' \\(over='tokens'\\) watches the LM"):
        g.compile(
            backend="alto",
            executor="process",
            lm={"slow": {"engine": "simulated", **SIM}},
            assertions=[not_rambling],
            flag_store=tmp_path / "f.sqlite",
        )


def test_a_bad_over_is_refused() -> None:
    with pytest.raises(ValueError, match="over must be one of output, tokens, response"):
        assertion("answer", over="items")(short_enough.check)


# -- consistency assertions (item 2) ----------------------------------------------------


def _verdicts_graph(ahead: bool = False) -> StateGraph:
    """``judge`` yields a verdict per (entity, claim), as a partial update and a Send;
    "Paris" gets two verdicts "true" and one "false" (unless told, on a retry)."""

    @streaming
    def judge(s: dict) -> Any:
        told = feedback()
        for entity, verdict in s["verdicts"]:
            if told and entity == "Paris":
                verdict = "true"
            yield {"claims": [(entity, verdict)]}
            yield Send("check", {"entity": entity, "verdict": verdict})

    def check(p: dict) -> dict:
        return {"checked": [f"{p['entity']}:{p['verdict']}"]}

    g = StateGraph(S)
    g.add_node("judge", judge)
    g.add_node("check", check)
    if ahead:  # the judge is a Send's task: on alto it runs ahead of its superstep
        g.add_node("prep", lambda s: {})
        g.add_node("slow", lambda s: time.sleep(0.3) or {})
        g.add_edge(START, "prep")
        g.add_edge(START, "slow")
        g.add_conditional_edges("prep", lambda s: [Send("judge", {"verdicts": VERDICTS})])
    else:
        g.add_conditional_edges(START, lambda s: [Send("judge", {"verdicts": VERDICTS})])
    return g


VERDICTS = [("Paris", "true"), ("Rome", "true"), ("Paris", "false"), ("Paris", "true")]


def _one_verdict(severity: str) -> Any:
    @consistency("judge", severity=severity, name=f"one_verdict_{severity}")
    def one_verdict(payload: dict, item: Any) -> Any:
        if isinstance(item, Send):  # the Sends: observed too, as their own key
            return ("sent", item.arg["entity"]), item.arg["verdict"]
        ((entity, verdict),) = item["claims"]
        return entity, verdict

    return one_verdict


@pytest.mark.parametrize("ahead", [False, True], ids=["at-step", "run-ahead"])
@pytest.mark.parametrize("severity", ["record", "retry", "fail"])
def test_consistency_over_items_and_sends_is_the_same_everywhere(
    tmp_path: Path, severity: str, ahead: bool
) -> None:
    def run(app: Any, path: Path) -> Any:
        try:
            out = app.invoke({"claims": [], "checked": []})
            out["checked"].sort()
        except AssertionViolation as exc:  # (alto adds the item's ancestry)
            out = (exc.assertion, exc.node, exc.message, exc.item)
        weak = [f["weak_label"] for f in FlagStore(path).flags()]
        return out, _flags(path), weak, _counts(app)

    graph = functools.partial(_verdicts_graph, ahead)
    out, flags, weak, counts = _everywhere(tmp_path, graph, [_one_verdict(severity)], run)
    # "Paris" is "false" once against "true" twice: that item and its Send fire, and
    # "true" is proposed as their weak label
    said = "'false' here, but 'true' in 2 of 3"
    assert [f[3] for f in flags] == [f"'Paris': {said}", f"('sent', 'Paris'): {said}"]
    assert weak == ["true", "true"]
    name = f"one_verdict_{severity}"
    if severity == "record":
        assert ("Paris", "false") in out["claims"] and counts == {name: (8, 2)}
    elif severity == "retry":  # told, the judge fixed it
        assert ("Paris", "false") not in out["claims"] and counts == {name: (16, 2)}
    else:
        assert out == (name, "judge", f"'Paris': {said}", 4)  # the first that disagreed


def test_bad_consistency_declarations_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="scope must be one of items, step, thread, got .turns."):
        consistency("judge", scope="turns")(lambda i, o: None)

    @consistency("check")
    def on_a_plain_node(p: dict, out: Any) -> Any:
        return None

    with pytest.raises(ValueError, match="'on_a_plain_node' \\(scope='items'\\) compares the"):
        _verdicts_graph().compile(assertions=[on_a_plain_node], flag_store=tmp_path / "f")

    @consistency("judge")
    def not_a_pair(p: dict, item: Any) -> Any:
        return "Paris"

    app = _verdicts_graph().compile(assertions=[not_a_pair], flag_store=tmp_path / "f")
    with pytest.raises(AssertionCheckError, match="'not_a_pair' on node 'judge'.*\\(key, attr"):
        app.invoke({"claims": [], "checked": []})


# -- consistency across a thread's turns ------------------------------------------------


class Chat(TypedDict, total=False):
    q: str
    facts: dict


def _chat_graph() -> StateGraph:
    """Each turn, ``lookup`` answers where a city is; "Paris" is in France, except on
    the turn that asks "again", where a flaky model says Italy."""

    def lookup(s: Chat) -> dict:
        city = s["q"].split()[0]
        country = "Italy" if city == "Rome" or s["q"].endswith("again") else "France"
        return {"facts": {city: country}}

    g = StateGraph(Chat)
    g.add_node("lookup", lookup)
    g.add_edge(START, "lookup")
    return g


@consistency("lookup", scope="thread")
def one_country(s: dict, out: dict) -> Any:
    ((city, country),) = out["facts"].items()
    return city, country


def test_consistency_across_a_thread_s_turns_is_the_same_everywhere(tmp_path: Path) -> None:

    turns = ["Paris", "Rome", "Paris", "Paris again", "Paris"]

    def run(app: Any, path: Path) -> Any:
        for thread in ("a", "b"):  # thread "b" has its own history
            for q in turns if thread == "a" else turns[3:]:
                app.invoke({"q": q}, {"configurable": {"thread_id": thread}})
        flags = [(f["thread_id"], f["message"], f["weak_label"]) for f in FlagStore(path).flags()]
        return flags, _counts(app)

    flags, counts = _everywhere(tmp_path, _chat_graph, [one_country], run, memory=True)
    # thread "a": the 4th turn says Italy after France twice (the 5th agrees again);
    # thread "b" has its own history: Italy first, so its France is the odd one
    earlier = "earlier turns"
    assert flags == [
        ("a", f"'Paris': 'Italy' now, but 'France' in 2 of 2 {earlier}", "France"),
        ("b", f"'Paris': 'France' now, but 'Italy' in 1 of 1 {earlier}", "Italy"),
    ]
    assert counts == {"one_country": (7, 2)}


def test_a_thread_scope_needs_a_checkpointer_and_is_record_only(tmp_path: Path) -> None:
    app = _chat_graph().compile(assertions=[one_country], flag_store=tmp_path / "f")
    with pytest.raises(AssertionCheckError, match="needs the graph run with a checkpointer"):
        app.invoke({"q": "Paris"})
    with pytest.raises(ValueError, match="over a thread's turns is severity='record'"):
        consistency("lookup", scope="thread", severity="fail")(one_country.check)


# -- consistency across the runs of one step (a fan-out's Sends) ------------------------


def _fan_out_graph(ahead: bool = False) -> StateGraph:
    """A Send per (entity, verdict) of VERDICTS to ``judge_one``, each of which
    returns its verdict (the Paris "false" one takes longest); ``ahead``: the Sends
    come from a node with a slow sibling, so that on alto they run ahead."""

    def judge_one(p: dict) -> dict:
        time.sleep(0.05 if p["verdict"] == "false" else 0.0)
        return {"claims": [(p["entity"], p["verdict"])]}

    def fan(s: dict) -> list[Send]:
        return [Send("judge_one", {"entity": e, "verdict": v}) for e, v in VERDICTS]

    g = StateGraph(S)
    g.add_node("judge_one", judge_one)
    if ahead:
        g.add_node("prep", lambda s: {})
        g.add_node("slow", lambda s: time.sleep(0.3) or {})
        g.add_edge(START, "prep")
        g.add_edge(START, "slow")
        g.add_conditional_edges("prep", fan, ["judge_one"])
    else:
        g.add_conditional_edges(START, fan, ["judge_one"])
    return g


def _one_verdict_per_step(severity: str) -> Any:
    @consistency("judge_one", scope="step", severity=severity, name=f"per_step_{severity}")
    def per_step(payload: dict, out: dict) -> Any:
        ((entity, verdict),) = out["claims"]
        return entity, verdict

    return per_step


@pytest.mark.parametrize("ahead", [False, True], ids=["at-step", "run-ahead"])
@pytest.mark.parametrize("severity", ["record", "fail"])
def test_consistency_across_a_fan_out_s_sends_is_the_same_everywhere(
    tmp_path: Path, severity: str, ahead: bool
) -> None:

    config: Any = {"configurable": {"thread_id": "t"}}

    def run(app: Any, path: Path) -> Any:
        try:
            out = app.invoke({"claims": [], "checked": []}, config)
            out["claims"].sort()
        except AssertionViolation as exc:
            out = (exc.assertion, exc.node, exc.message)
        state = app.get_state(config).values
        weak = [f["weak_label"] for f in FlagStore(path).flags()]
        return out, sorted(state), _flags(path), weak, _counts(app)

    graph = functools.partial(_fan_out_graph, ahead)
    checks = [_one_verdict_per_step(severity)]
    out, state_keys, flags, weak, counts = _everywhere(tmp_path, graph, checks, run, memory=True)
    said = "'Paris': 'false' here, but 'true' in 2 of 3"
    assert [f[3] for f in flags] == [said] and weak == ["true"]
    assert "__alto_step_checks" not in state_keys  # the hidden channel is never state
    name = f"per_step_{severity}"
    assert counts == {name: (4, 1)}
    if severity == "record":
        assert ("Paris", "false") in out["claims"]
    else:
        assert out == (name, "judge_one", said)


def test_a_step_scope_is_not_retried() -> None:
    with pytest.raises(ValueError, match="too late to run the node again"):
        consistency("judge_one", scope="step", severity="retry")(one_country.check)


def test_a_majority_of_none_is_a_majority_not_a_tie() -> None:
    from alto_langgraph.checking import _disagreements

    a = consistency("judge")(lambda p, item: None)
    seen = [("k", None, "first", 0), ("k", None, "second", 1), ("k", "x", "third", 2)]
    fired = _disagreements(a, seen)
    assert [(f.output, f.message) for f in fired] == [
        ("third", "'k': 'x' here, but None in 2 of 3")
    ]
