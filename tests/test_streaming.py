"""Streaming nodes, stream-valued payloads, folds and aggregation operators.

Every graph here runs on stock LangGraph and on alto (both executors) with the same
final state; the order tests show what alto changes: downstream work starts while the
producer is still running, and a fold reads a stream while it is being generated.
"""

from __future__ import annotations

import asyncio
import operator
import os
import time
from typing import Annotated, Any, TypedDict

import pytest
from harness import assert_same
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, Send

from alto_langgraph import fold, streaming
from alto_langgraph.aggregate import Aggregate, Append, Count, Filter, Sum, TopK

EXECUTORS = ["inline", "process"]


class Claims(TypedDict, total=False):
    claims: Annotated[list, operator.add]
    evidence: Annotated[list, operator.add]
    verdict: str
    log: Annotated[list, operator.add]


# -- a fact-check shaped pipeline -----------------------------------------------------


def _pipeline(*, n: int = 3, tokens: int = 3, asynchronous: bool = False) -> Any:
    def case() -> tuple[StateGraph, Any]:
        if asynchronous:

            @streaming
            async def extract(state: Claims) -> Any:
                for i in range(n):
                    await asyncio.sleep(0.01)
                    yield {"claims": [f"c{i}"]}
                    yield Send("queries", {"claim": f"c{i}"})

            async def token_stream(claim: str) -> Any:
                for t in range(tokens):
                    await asyncio.sleep(0.005)
                    yield f"{claim}-t{t}"

            @streaming
            async def queries(p: dict) -> Any:
                yield Send("bm25", {"claim": p["claim"], "query": token_stream(p["claim"])})

        else:

            @streaming
            def extract(state: Claims) -> Any:
                for i in range(n):
                    time.sleep(0.01)
                    yield {"claims": [f"c{i}"]}
                    yield Send("queries", {"claim": f"c{i}"})

            def token_stream(claim: str) -> Any:
                for t in range(tokens):
                    time.sleep(0.005)
                    yield f"{claim}-t{t}"

            @streaming
            def queries(p: dict) -> Any:
                yield Send("bm25", {"claim": p["claim"], "query": token_stream(p["claim"])})

        @fold(over="query")
        class BM25:
            def start(self, p: dict) -> list:
                return []

            def step(self, acc: list, token: str) -> list:
                return [*acc, token.upper()]

            def finish(self, acc: list, p: dict) -> dict:
                return {"evidence": [(p["claim"], tuple(acc), tuple(p["query"]))]}

        def verdict(state: Claims) -> dict:
            return {"verdict": f"{len(state['claims'])} claims, {len(state['evidence'])} checked"}

        g = StateGraph(Claims)
        g.add_node("extract", extract)
        g.add_node("queries", queries)
        g.add_node("bm25", BM25)
        g.add_node("verdict", verdict)
        g.add_edge(START, "extract")
        g.add_edge("bm25", "verdict")
        g.add_edge("verdict", END)
        return g, {"claims": [], "evidence": []}

    return case


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
def test_a_streaming_pipeline_gives_stock_langgraphs_answer(executor: str, sync: bool) -> None:
    stock, alto = assert_same(_pipeline(), sync=sync, executor=executor, stream_mode="values")
    assert alto.final["claims"] == ["c0", "c1", "c2"]
    assert alto.final["evidence"][0] == (
        "c0",
        ("C0-T0", "C0-T1", "C0-T2"),
        ("c0-t0", "c0-t1", "c0-t2"),
    )
    assert alto.final["verdict"] == "3 claims, 3 checked"


@pytest.mark.parametrize("executor", EXECUTORS)
def test_async_producers_and_async_token_streams(executor: str) -> None:
    assert_same(_pipeline(asynchronous=True), sync=False, executor=executor, stream_mode="values")


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("tokens", [0, 1], ids=["empty-stream", "one-chunk"])
def test_empty_and_single_chunk_streams(executor: str, tokens: int) -> None:
    _, alto = assert_same(
        _pipeline(tokens=tokens), sync=True, executor=executor, stream_mode="values"
    )
    assert [len(e[1]) for e in alto.final["evidence"]] == [tokens] * 3


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_producer_that_yields_nothing(executor: str) -> None:
    assert_same(_pipeline(n=0), sync=True, executor=executor, stream_mode="values")


def _mixed() -> tuple[StateGraph, Any]:
    """Updates of a last-value key, Commands with gotos, a stream to a plain node
    (collected), and a conditional edge reading the partially updated state."""

    @streaming
    def plan(state: Claims) -> Any:
        yield {"log": ["planning"]}
        yield Command(update={"verdict": "draft"}, goto=Send("collect", {"q": iter("ab")}))
        yield {"log": ["planned"]}

    def collect(p: dict) -> dict:
        assert isinstance(p["q"], list)  # not a fold: the stream arrives collected
        return {"log": ["".join(p["q"])]}

    def route(state: Claims) -> str:
        return "finish" if state["verdict"] == "draft" else END

    g = StateGraph(Claims)
    g.add_node("plan", plan)
    g.add_node("collect", collect)
    g.add_node("finish", lambda s: {"log": [f"finish after {len(s['log'])}"]})
    g.add_edge(START, "plan")
    g.add_conditional_edges("plan", route, ["finish", END])
    return g, {"log": []}


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
def test_updates_commands_and_collected_streams(executor: str, sync: bool) -> None:
    _, alto = assert_same(_mixed, sync=sync, executor=executor, stream_mode="values")
    assert alto.final["log"] == ["planning", "planned", "finish after 2", "ab"]


# -- what alto changes: order ---------------------------------------------------------


class Clock(TypedDict, total=False):
    started: Annotated[list, operator.add]
    produced: Annotated[list, operator.add]
    received: Annotated[list, operator.add]
    producer_done: float


def _timed() -> StateGraph:
    """time.monotonic() is one clock for all processes of a machine."""

    @streaming
    def producer(state: Clock) -> Any:
        for i in range(3):
            yield Send("work", {"i": i})
            time.sleep(0.15)
        yield {"producer_done": time.monotonic()}

    def work(p: dict) -> dict:
        return {"started": [time.monotonic()]}

    g = StateGraph(Clock)
    g.add_node("producer", producer)
    g.add_node("work", work)
    g.add_edge(START, "producer")
    return g


@pytest.mark.parametrize("executor", EXECUTORS)
def test_sends_start_before_their_producer_has_finished(executor: str) -> None:
    stock = _timed().compile().invoke({})
    assert min(stock["started"]) > stock["producer_done"]  # LangGraph: after the node
    with _timed().compile(backend="alto", executor=executor) as app:
        out = app.invoke({})
    assert len(out["started"]) == 3
    assert max(out["started"]) < out["producer_done"]


def _streamed_fold(replicas: int = 1, streams: int = 1) -> tuple[StateGraph, dict]:
    def tokens(i: int) -> Any:
        for t in range(4):
            time.sleep(0.1)
            yield (i, t, time.monotonic())

    @streaming
    def producer(state: Clock) -> Any:
        for i in range(streams):
            yield Send("fold", {"i": i, "tokens": tokens(i)})

    @fold(over="tokens")
    class Record:
        def start(self, p: dict) -> list:
            return []

        def step(self, acc: list, chunk: tuple) -> list:
            return [*acc, (chunk[0], chunk[1], chunk[2], time.monotonic(), os.getpid())]

        def finish(self, acc: list, p: dict) -> dict:
            return {"received": acc}

    g = StateGraph(Clock)
    g.add_node("producer", producer)
    g.add_node("fold", Record)
    g.add_edge(START, "producer")
    return g, {"fold": replicas}


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_fold_reads_each_chunk_while_the_stream_is_generated(executor: str) -> None:
    g, _ = _streamed_fold()
    stock = g.compile().invoke({})
    g, _ = _streamed_fold()
    with g.compile(backend="alto", executor=executor) as app:
        out = app.invoke({})
    last_made = max(r[2] for r in out["received"])
    # stock LangGraph folds only once the whole stream is collected
    assert min(r[3] for r in stock["received"]) > max(r[2] for r in stock["received"])
    assert [r[:2] for r in out["received"]] == [(0, t) for t in range(4)]
    first_read = min(r[3] for r in out["received"])
    assert first_read < last_made  # chunk 0 was folded before chunk 3 was made


def test_every_chunk_of_a_stream_reaches_one_fold_instance() -> None:
    streams = 12
    g, replicas = _streamed_fold(replicas=3, streams=streams)
    with g.compile(backend="alto", executor="process", replicas=replicas) as app:
        out = app.invoke({})
        assert app.deployment is not None
        instances = {app.deployment.pids[("fold", i)] for i in range(3)}
    by_stream: dict[int, set[int]] = {}
    for i, _t, _made, _read, pid in out["received"]:
        by_stream.setdefault(i, set()).add(pid)
    assert len(out["received"]) == streams * 4
    assert all(len(pids) == 1 for pids in by_stream.values()), by_stream
    used = set().union(*by_stream.values())
    assert used <= instances
    assert len(used) > 1  # 12 streams on one of 3 instances: p = 3 * 3**-12


# -- stream_mode ----------------------------------------------------------------------


@pytest.mark.parametrize("executor", EXECUTORS)
def test_partial_updates_stream_as_they_are_applied(executor: str) -> None:
    g, _ = _mixed()
    stock = [c for c in g.compile().stream({"log": []}, stream_mode="updates")]
    g, _ = _mixed()
    with g.compile(backend="alto", executor=executor) as app:
        alto = [c for c in app.stream({"log": []}, stream_mode="updates")]
    # stock LangGraph: one update for the whole task (a list: it wrote "log" twice)
    assert stock[0] == {"plan": [{"log": ["planning"]}, {"verdict": "draft"}, {"log": ["planned"]}]}
    # alto: each partial update, as it was applied
    assert alto[:3] == [
        {"plan": {"log": ["planning"]}},
        {"plan": {"verdict": "draft"}},
        {"plan": {"log": ["planned"]}},
    ]
    assert sorted(map(repr, alto[3:])) == sorted(map(repr, stock[1:]))


def test_partial_updates_arrive_while_the_node_runs() -> None:
    g = StateGraph(Clock)

    @streaming
    def producer(state: Clock) -> Any:
        for _ in range(3):
            yield {"produced": [time.monotonic()]}
            time.sleep(0.15)

    g.add_node("producer", producer)
    g.add_edge(START, "producer")
    with g.compile(backend="alto", executor="process") as app:
        seen = []
        for chunk in app.stream({}, stream_mode="updates"):
            seen.append((time.monotonic(), chunk["producer"]["produced"][0]))
    assert len(seen) == 3
    # the first update was received before the node made its last one
    assert seen[0][0] < seen[-1][1]


def _chatty() -> tuple[StateGraph, Any]:
    model = GenericFakeChatModel(messages=iter([AIMessage(content="Paris is big. Rome is old.")]))

    @streaming
    def extract(state: Claims, config: RunnableConfig) -> Any:
        text = ""
        for chunk in model.stream("claims?", config):
            text += chunk.content
            while "." in text:
                claim, text = text.split(".", 1)
                yield {"claims": [claim.strip()]}

    g = StateGraph(Claims)
    g.add_node("extract", extract)
    g.add_edge(START, "extract")
    return g, {"claims": []}


@pytest.mark.parametrize("executor", EXECUTORS)
def test_tokens_of_a_model_in_a_streaming_node_stream_as_messages(executor: str) -> None:
    stock, alto = assert_same(_chatty, sync=True, executor=executor, stream_mode="messages")
    tokens = [c[1][0].content for c in alto.chunks]
    assert "".join(tokens) == "Paris is big. Rome is old."
    assert len(tokens) > 3
    assert alto.final["claims"] == ["Paris is big", "Rome is old"]


# -- faults ---------------------------------------------------------------------------


class Boom(Exception):
    pass


def _failing(where: str) -> tuple[StateGraph, Any]:
    def tokens() -> Any:
        yield "a"
        if where == "stream":
            raise Boom("the stream broke")
        yield "b"

    @streaming
    def producer(state: Claims) -> Any:
        yield Send("slow", {})
        yield Send("count", {"q": tokens()})
        yield {"log": ["sent"]}
        if where == "producer":
            raise Boom("the producer broke")

    def slow(p: dict) -> dict:
        time.sleep(3.0)
        return {"log": ["slow"]}

    @fold(over="q")
    class CountTokens:
        def start(self, p: dict) -> int:
            return 0

        def step(self, acc: int, chunk: str) -> int:
            if where == "consumer":
                raise Boom("the fold broke")
            return acc + 1

        def finish(self, acc: int, p: dict) -> dict:
            return {"log": [f"{acc} tokens"]}

    g = StateGraph(Claims)
    g.add_node("producer", producer)
    g.add_node("slow", slow)
    g.add_node("count", CountTokens)
    g.add_edge(START, "producer")
    return g, {"log": []}


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("where", ["producer", "stream", "consumer"])
def test_a_failure_mid_stream_fails_its_request_with_that_exception(
    executor: str, where: str
) -> None:
    g, inputs = _failing(where)
    with pytest.raises(Boom) as stock_exc:
        g.compile().invoke(inputs)
    g, inputs = _failing(where)
    with g.compile(backend="alto", executor=executor) as app:
        t0 = time.monotonic()
        with pytest.raises(Boom) as alto_exc:
            app.invoke(inputs)
        elapsed = time.monotonic() - t0
        # the request's other work was cancelled, not waited for ("slow" takes 3 s;
        # where the consumer fails, stock LangGraph also runs "slow" in that step)
        if where != "consumer":
            assert elapsed < 2.5, elapsed
        assert str(alto_exc.value) == str(stock_exc.value)


def test_after_a_failed_stream_the_same_app_serves_the_next_request() -> None:
    def tokens(fail: bool) -> Any:
        yield 1
        if fail:
            raise Boom("first request breaks")
        yield 2

    @streaming
    def producer(state: dict) -> Any:
        yield Send("total", {"q": tokens(state["fail"])})

    g = StateGraph(Sums)
    g.add_node("producer", producer)
    g.add_node("total", Sum().fold(over="q", into="total"))
    g.add_edge(START, "producer")
    with g.compile(backend="alto", executor="process") as app:
        with pytest.raises(Boom):
            app.invoke({"fail": True, "total": 0})
        assert app.invoke({"fail": False, "total": 0})["total"] == 3
        pids = list(app.deployment.pids.values())  # type: ignore[union-attr]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_bad_items_and_bad_declarations_are_clear_errors() -> None:
    with pytest.raises(TypeError, match="needs a generator function"):
        streaming(lambda s: {"log": []})
    with pytest.raises(TypeError, match="has no step"):
        fold(over="q")(type("NoStep", (), {"start": lambda s, p: 0, "finish": lambda s, a, p: {}}))
    with pytest.raises(TypeError, match="names the payload field"):
        fold(over="")

    @streaming
    def bad(state: Claims) -> Any:
        yield ["not", "one", "item"]

    g = StateGraph(Claims)
    g.add_node("bad", bad)
    g.add_edge(START, "bad")
    for app in (g.compile(), g.compile(backend="alto", executor="inline")):
        with pytest.raises(TypeError, match="yielded list"):
            app.invoke({"log": []})

    @fold(over="q")
    class F:
        def start(self, p: dict) -> int:
            return 0

        def step(self, acc: int, c: Any) -> int:
            return acc

        def finish(self, acc: int, p: dict) -> dict:
            return {}

    with pytest.raises(ValueError, match="consumes payload field 'q'"):
        F({"other": 1})


# -- aggregation operators ------------------------------------------------------------


def test_operators_as_reducers() -> None:
    assert Sum()(0, [1, 2, 3]) == 6
    assert Sum()(1.5, 2) == 3.5
    assert Count()(0, ["a", "b"]) == 2
    assert Count()(2, "c") == 3
    assert Append()([1], 2) == [1, 2]
    assert Append()([1], [2, 3]) == [1, 2, 3]
    assert Filter(lambda x: x % 2)([1], [2, 3, 4, 5]) == [1, 3, 5]
    top = TopK(3, key=lambda x: x[1])
    assert top([], [("a", 1), ("b", 3), ("c", 2), ("d", 3), ("e", 0)]) == [
        ("b", 3),
        ("d", 3),
        ("c", 2),
    ]
    assert TopK(2)([5, 1], [3]) == [5, 3]
    with pytest.raises(ValueError, match="positive int"):
        TopK(0)
    with pytest.raises(TypeError, match="predicate"):
        Filter(3)  # type: ignore[arg-type]


class Scores(TypedDict, total=False):
    best: Annotated[list, TopK(2, key=lambda h: h[1])]
    total: Annotated[float, Sum()]
    n: Annotated[int, Count()]
    kept: Annotated[list, Filter(lambda h: h[1] > 0.5)]


class Sums(TypedDict, total=False):
    fail: bool
    total: Annotated[int, Sum()]
    top: Annotated[list, TopK(2)]


class Mean(Aggregate):
    """A user-written operator: (sum, count), as the docs show."""

    def start(self) -> tuple[float, int]:
        return (0.0, 0)

    def add(self, acc: tuple[float, int], item: float) -> tuple[float, int]:
        return (acc[0] + item, acc[1] + 1)


def _scored() -> tuple[StateGraph, Any]:
    hits = [("d1", 0.9), ("d2", 0.2), ("d3", 0.7), ("d4", 0.9), ("d5", 0.6)]

    def fan(state: Scores) -> list[Send]:
        return [Send("score", {"hit": h}) for h in hits]

    def score(p: dict) -> dict:
        time.sleep(0.01 * (5 - int(p["hit"][0][1])))  # finish out of order
        h = p["hit"]
        return {"best": [h], "total": h[1], "n": 1, "kept": [h]}

    g = StateGraph(Scores)
    g.add_node("start", lambda s: {})
    g.add_node("score", score)
    g.add_edge(START, "start")
    g.add_conditional_edges("start", fan, ["score"])
    return g, {}


@pytest.mark.parametrize("executor", EXECUTORS)
def test_operators_as_reducers_in_a_state_schema(executor: str) -> None:
    _, alto = assert_same(_scored, sync=True, executor=executor, stream_mode="values")
    assert alto.final["best"] == [("d1", 0.9), ("d4", 0.9)]
    assert alto.final["n"] == 5
    assert alto.final["kept"] == [("d1", 0.9), ("d3", 0.7), ("d4", 0.9), ("d5", 0.6)]
    assert alto.final["total"] == pytest.approx(3.3)


class MeanState(TypedDict, total=False):
    mean: tuple
    top: Annotated[list, TopK(2)]


def _aggregated_streams() -> tuple[StateGraph, Any]:
    def numbers() -> Any:
        for x in [3, 9, 4, 7]:
            time.sleep(0.01)
            yield x

    @streaming
    def producer(state: MeanState) -> Any:
        yield Send("mean", {"xs": numbers()})
        yield Send("top", {"xs": iter([5, 1, 8])})

    g = StateGraph(MeanState)
    g.add_node("producer", producer)
    g.add_node("mean", Mean().fold(over="xs", into="mean"))
    g.add_node("top", TopK(2).fold(over="xs", into="top"))
    g.add_edge(START, "producer")
    return g, {}


@pytest.mark.parametrize("executor", EXECUTORS)
def test_operators_as_aggregators_over_streams(executor: str) -> None:
    _, alto = assert_same(_aggregated_streams, sync=True, executor=executor, stream_mode="values")
    assert alto.final["mean"] == (23.0, 4)
    assert alto.final["top"] == [8, 5]


# -- regressions (review of the first version) ------------------------------------------


def _blocked_on_a_stream() -> list[str]:
    """Threads waiting inside a stream's iterator (a fold that would wait forever)."""
    import sys
    import threading

    names = {t.ident: t.name for t in threading.enumerate()}
    blocked = []
    for ident, frame in sys._current_frames().items():
        f: Any = frame
        while f is not None:
            if f.f_code.co_name == "__iter__" and f.f_code.co_filename.endswith("streams.py"):
                blocked.append(names.get(ident, str(ident)))
                break
            f = f.f_back
    return blocked


def _two_streams(first_fails: bool) -> tuple[StateGraph, Any]:
    def bad() -> Any:
        yield 1
        if first_fails:
            raise Boom("stream 1 broke")

    def good() -> Any:
        for i in range(3):
            time.sleep(0.01)
            yield i

    @streaming
    def prod(state: Claims) -> Any:
        yield Command(goto=[Send("f", {"s": bad()}), Send("f", {"s": good()})])

    @fold(over="s")
    class F:
        def start(self, p: dict) -> list:
            return []

        def step(self, acc: list, c: int) -> list:
            return [*acc, c]

        def finish(self, acc: list, p: dict) -> dict:
            return {"log": [acc]}

    g = StateGraph(Claims)
    g.add_node("prod", prod)
    g.add_node("f", F)
    g.add_edge(START, "prod")
    return g, {"log": []}


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_failed_stream_ends_the_other_streams_of_its_item(executor: str) -> None:
    g, inputs = _two_streams(first_fails=True)
    with g.compile(backend="alto", executor=executor) as app:
        with pytest.raises(Boom, match="stream 1 broke"):
            app.invoke(inputs)
        deadline = time.monotonic() + 5
        while _blocked_on_a_stream() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _blocked_on_a_stream() == []
    assert_same(lambda: _two_streams(False), sync=True, executor=executor, stream_mode="values")


def test_a_fold_in_another_process_gets_the_producers_exception(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from alto_langgraph.scheduling import coordinator

    seen: list[tuple[str, BaseException | None]] = []
    settle = coordinator._settle

    def spy(ahead: Any, *, exc: BaseException | None = None) -> None:
        seen.append((ahead.task.name, exc))
        settle(ahead, exc=exc)

    monkeypatch.setattr(coordinator, "_settle", spy)

    def tokens() -> Any:
        yield "a"
        time.sleep(0.3)  # the fold has started and read the first chunk
        raise Boom("the producer broke")

    @streaming
    def prod(state: Claims) -> Any:
        yield Send("f", {"s": tokens()})

    g = StateGraph(Claims)
    g.add_node("prod", prod)
    g.add_node("f", Count().fold(over="s", into="verdict"))
    g.add_edge(START, "prod")
    with g.compile(backend="alto", executor="process") as app:
        with pytest.raises(Boom):
            app.invoke({})
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.02)
    assert len(seen) == 1
    name, exc = seen[0]
    assert name == "f" and isinstance(exc, Boom) and str(exc) == "the producer broke"


def _two_fields() -> tuple[StateGraph, Any]:
    def gen(tag: str) -> Any:
        yield from (f"{tag}{i}" for i in range(3))

    @streaming
    def prod(state: Claims) -> Any:
        yield Send("f", {"s": gen("s"), "t": gen("t")})

    @fold(over="s")
    class F:
        def start(self, p: dict) -> list:
            return []

        def step(self, acc: list, c: str) -> list:
            return [*acc, c]

        def finish(self, acc: list, p: dict) -> dict:
            return {"log": [("".join(acc), p["t"])]}

    g = StateGraph(Claims)
    g.add_node("prod", prod)
    g.add_node("f", F)
    g.add_edge(START, "prod")
    return g, {"log": []}


@pytest.mark.parametrize("executor", EXECUTORS)
def test_only_the_folds_own_field_streams_the_others_arrive_collected(executor: str) -> None:
    _, alto = assert_same(_two_fields, sync=True, executor=executor, stream_mode="values")
    assert alto.final["log"] == [("s0s1s2", ["t0", "t1", "t2"])]


def _nested() -> tuple[StateGraph, Any]:
    @streaming
    def inner_node(state: Claims) -> Any:
        yield {"claims": ["inner"]}
        yield {"log": ["i1"]}

    ib = StateGraph(Claims)
    ib.add_node("inner_node", inner_node)
    ib.add_edge(START, "inner_node")
    inner = ib.compile()

    @streaming
    def outer(state: Claims) -> Any:
        yield {"log": ["o1"]}
        result = inner.invoke({"log": []})
        yield {"log": ["inner said", *result["log"]], "claims": result["claims"]}

    g = StateGraph(Claims)
    g.add_node("outer", outer)
    g.add_edge(START, "outer")
    return g, {"log": []}


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_graph_invoked_inside_a_streaming_node_keeps_its_own_items(executor: str) -> None:
    _, alto = assert_same(_nested, sync=True, executor=executor, stream_mode="values")
    assert (alto.final["log"], alto.final["claims"]) == (["o1", "inner said", "i1"], ["inner"])


def test_a_sends_timeout_survives_collecting_its_streams() -> None:
    from alto_langgraph.streams import _collected

    cmd = _collected(Send("x", {"q": iter([1, 2])}, timeout=5.0))
    (send,) = cmd.goto if isinstance(cmd.goto, list) else [cmd.goto]
    assert send.arg == {"q": [1, 2]}
    assert send.timeout == Send("x", {}, timeout=5.0).timeout is not None


def test_a_call_cancelled_before_it_starts_leaves_no_input_streams() -> None:
    from alto_langgraph.process import wire
    from alto_langgraph.process.security import Keyring
    from alto_langgraph.process.worker import StageInstance

    async def go() -> dict:
        creds = Keyring("ipc").peer(b"f#0")
        inst = StageInstance("f", b"f#0", asyncio.get_running_loop(), creds)
        inst.send = lambda frames: None  # type: ignore[method-assign]
        inst.on_message([b"c", wire.envelope(wire.TASK, b"7", b"f", b""), b"payload"])
        inst.on_message([b"c", wire.envelope(wire.CANCEL, b"7"), b""])
        await asyncio.sleep(0.05)
        left = dict(inst.inputs)
        inst.sock.close()
        inst.context.term()
        return left

    assert asyncio.run(go()) == {}


def _in_a_subgraph() -> tuple[StateGraph, Any]:
    inner_builder, _ = _pipeline(n=2, tokens=2)()
    inner = inner_builder.compile()
    g = StateGraph(Claims)
    g.add_node("check", inner)
    g.add_edge(START, "check")
    return g, {"claims": [], "evidence": []}


@pytest.mark.parametrize("executor", EXECUTORS)
@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
def test_streaming_nodes_and_folds_inside_a_subgraph(executor: str, sync: bool) -> None:
    _, alto = assert_same(
        _in_a_subgraph, sync=sync, executor=executor, stream_mode="values", subgraphs=True
    )
    assert alto.final["verdict"] == "2 claims, 2 checked"
