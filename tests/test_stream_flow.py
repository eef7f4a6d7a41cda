"""Streams between processes.

* What a stream-valued payload is to everything outside alto: the list of its chunks
  (a checkpointer saving the Send, a stream of tasks, a copy), as stock LangGraph has.
* The chunks' way: from the producer's instance through the router to the fold's
  instance (two hops), with a copy to the app, which keeps the stream.
* Flow control: a producer runs at most a window of chunks ahead of its consumer's
  process, and a fold's crash mid-stream neither loses chunks nor stalls the producer.
"""

from __future__ import annotations

import asyncio
import copy
import json
import operator
import os
import pickle
import signal
import threading
import time
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from harness import assert_same
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.graph import END, START, StateGraph
from langgraph.types import RetryPolicy, Send

from alto_langgraph import StreamRef, fold, streaming
from alto_langgraph.errors import StageInstanceLost
from alto_langgraph.process import flow
from alto_langgraph.process.tees import Tees
from alto_langgraph.streams import CHUNK, FAIL
from alto_langgraph.streams import END as STREAM_END

EXECUTORS = ["inline", "process"]


class Out(TypedDict, total=False):
    out: Annotated[list, operator.add]


# -- a stream-valued payload, seen from outside -------------------------------------------


def _ended(*chunks: Any) -> StreamRef:
    ref = StreamRef()
    for chunk in chunks:
        ref.event(CHUNK, chunk)
    ref.event(STREAM_END)
    return ref


def test_an_ended_stream_is_the_list_of_its_chunks_to_anyone_else() -> None:
    ref = _ended("a", {"b": 1})
    assert ref == ["a", {"b": 1}] and list(ref) == ["a", {"b": 1}]
    for other in (pickle.loads(pickle.dumps(ref)), copy.deepcopy(ref), copy.copy(ref)):
        assert type(other) is list and other == ["a", {"b": 1}]
    serde = JsonPlusSerializer()
    send = serde.loads_typed(serde.dumps_typed(Send("f", {"s": ref, "k": 2})))
    assert send == Send("f", {"s": ["a", {"b": 1}], "k": 2})
    assert type(send.arg["s"]) is list


def test_chunks_of_an_open_stream_wait_for_the_producer_the_list_does_not() -> None:
    ref = StreamRef()
    got: list[Any] = []
    reader = threading.Thread(target=lambda: got.extend(ref.chunks()))
    reader.start()
    ref.event(CHUNK, 1)
    time.sleep(0.05)
    assert reader.is_alive()  # it waits for the end
    assert list(ref) == [1] and json.dumps(ref) == "[1]"  # as a list: what came so far
    ref.event(CHUNK, 2)
    ref.event(STREAM_END)
    reader.join(5)
    assert got == [1, 2]


def test_a_streams_chunks_on_an_event_loop_and_its_failure() -> None:
    async def read(ref: StreamRef) -> list[Any]:
        return [c async for c in ref.achunks()]

    async def go() -> None:
        ref = StreamRef()
        reading = asyncio.ensure_future(read(ref))
        await asyncio.sleep(0.01)
        ref.event(CHUNK, "a")
        ref.event(STREAM_END)
        assert await reading == ["a"]
        broken = StreamRef()
        broken.event(CHUNK, "b")
        broken.event(FAIL, ValueError("the producer broke"))
        with pytest.raises(ValueError, match="the producer broke"):
            await read(broken)

    asyncio.run(go())


@fold(over="tokens")
class _Join:
    """Joins a stream of tokens: the payload's item (if it names one), the text, and
    how many tokens came."""

    def start(self, p: dict) -> str:
        return ""

    def step(self, acc: str, token: str) -> str:
        return acc + token

    def finish(self, acc: str, p: dict) -> dict:
        return {"out": [(p.get("item"), acc, len(p["tokens"]))]}


def _joined(plan: Any) -> StateGraph:
    """``plan`` (a @streaming node) -> ``join``, the fold above."""
    g = StateGraph(Out)
    g.add_node("plan", plan)
    g.add_node("join", _Join)
    g.add_edge(START, "plan")
    g.add_edge("join", END)
    return g


def _token_pipeline(n: int = 4) -> Any:
    def case() -> tuple[StateGraph, Any]:
        def tokens(item: str) -> Any:
            yield from (f"{item}{i}" for i in range(n))

        @streaming
        def plan(state: Out) -> Any:
            for item in "xy":
                yield Send("join", {"item": item, "tokens": tokens(item)})

        return _joined(plan), {"out": []}

    return case


@pytest.mark.parametrize("executor", EXECUTORS)
def test_streams_of_tasks_show_the_collected_payload(executor: str) -> None:
    """``tasks`` and ``debug`` show a fold's task with its input: the whole stream."""
    _, alto = assert_same(
        _token_pipeline(), sync=True, executor=executor, stream_mode=["tasks", "values"]
    )
    inputs = [c[1]["input"] for c in alto.chunks if c[0] == "tasks" and "input" in c[1]]
    joins = [i for i in inputs if isinstance(i, dict) and "tokens" in i]
    assert sorted((i["item"], list(i["tokens"])) for i in joins) == [
        ("x", ["x0", "x1", "x2", "x3"]),
        ("y", ["y0", "y1", "y2", "y3"]),
    ]


def _slow_tokens_to_a_fold() -> StateGraph:
    async def tokens() -> Any:
        for i in range(5):
            await asyncio.sleep(0.02)
            yield f"t{i}"

    @streaming
    async def plan(state: Out) -> Any:
        yield Send("join", {"tokens": tokens()})

    return _joined(plan)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_callbacks_get_the_folds_input_as_it_starts_and_reading_it_never_waits(
    executor: str,
) -> None:
    """A handler of ``astream_events`` that serialises each event's input (as a tracer
    or a server does) on the app's event loop: the fold's input is the stream so far
    (stock LangGraph's is the whole list: its fold starts only then), and reading it
    does not wait for chunks that this loop itself must deliver."""

    async def events() -> tuple[list[Any], Any]:
        with _slow_tokens_to_a_fold().compile(backend="alto", executor=executor) as app:
            seen, final = [], None
            async for ev in app.astream_events({"out": []}, version="v2"):
                data = ev["data"]
                json.dumps(data.get("input"), default=repr)
                if ev["event"] == "on_chain_start" and ev["name"] == "join":
                    seen.append(list(data["input"]["tokens"]))
                if ev["event"] == "on_chain_end" and ev["name"] == "LangGraph":
                    final = data["output"]
            return seen, final

    seen, final = asyncio.run(asyncio.wait_for(events(), 30))
    assert final == {"out": [(None, "t0t1t2t3t4", 5)]}
    assert len(seen) == 1 and len(seen[0]) < 5  # the stream had only begun


# -- the chunks' way --------------------------------------------------------------------


def _stream_to_fold(
    n: int,
    *,
    first_after: float = 0.0,
    busy_fold: float = 0.0,
    crash_at: int | None = None,
    marker: Path | None = None,
    retry: bool = False,
    every: float = 0.0,
) -> Any:
    """A producer sends one stream of ``n`` numbers (each with the time it was made)
    to a fold: the first after ``first_after`` s, then one each ``every`` s. The fold
    blocks its process's event loop for ``busy_fold`` s at the first chunk (it is
    async), or kills its own process at chunk ``crash_at`` once (``marker``)."""

    def case() -> tuple[StateGraph, Any]:
        def numbers() -> Any:
            time.sleep(first_after)
            for i in range(n):
                if every:
                    time.sleep(every)
                yield (i, time.time())

        @streaming
        def produce(state: Out) -> Any:
            yield Send("consume", {"numbers": numbers()})

        @fold(over="numbers")
        class Consume:
            async def start(self, p: dict) -> dict:
                # under alto, "numbers" is the stream so far: how much has arrived
                return {"sum": 0, "woke": None, "arrived": 0, "stream": p["numbers"]}

            async def step(self, acc: dict, chunk: tuple) -> dict:
                i, _made = chunk
                if i == 0 and busy_fold:
                    acc["arrived"] = len(acc["stream"])
                    time.sleep(busy_fold)  # blocks this process's event loop
                    acc["woke"] = time.time()
                if i == crash_at and marker is not None and not marker.exists():
                    marker.touch()
                    os.kill(os.getpid(), signal.SIGKILL)
                acc["sum"] += i
                return acc

            async def finish(self, acc: dict, p: dict) -> dict:
                made = [t for _, t in p["numbers"]]
                return {"out": [(acc["sum"], len(made), acc["woke"], made, acc["arrived"])]}

        g = StateGraph(Out)
        g.add_node("produce", produce)
        g.add_node("consume", Consume, retry_policy=RetryPolicy(max_attempts=3) if retry else None)
        g.add_edge(START, "produce")
        g.add_edge("consume", END)
        return g, {"out": []}

    return case


def test_chunks_go_straight_from_the_producers_instance_to_the_folds() -> None:
    """Once the fold's call runs, the router sends it every chunk itself (and the app
    a copy): the app feeds it none. The same answer as stock LangGraph."""
    n = 300
    case = _stream_to_fold(n, first_after=0.3)
    g, inputs = case()
    stock = asyncio.run(g.compile().ainvoke(inputs))
    g, inputs = case()
    with g.compile(backend="alto", executor="process") as app:
        out = asyncio.run(app.ainvoke(inputs))
        stats = app.deployment.stats()
    assert out["out"][0][:2] == stock["out"][0][:2] == (n * (n - 1) // 2, n)
    assert stats["teed"] == n + 1  # every chunk and the end
    assert stats["tees"] == 0  # nothing left behind once the calls are over


def test_a_producer_runs_at_most_a_window_ahead_of_a_busy_fold() -> None:
    """The fold's process does not read for a second: the producer stops a window of
    chunks ahead, then goes on as the fold catches up; every chunk arrives."""
    n = 8 * flow.WINDOW_CHUNKS
    g, inputs = _stream_to_fold(n, busy_fold=1.0)()
    with g.compile(backend="alto", executor="process") as app:
        out = asyncio.run(app.ainvoke(inputs))
    total, count, woke, made, arrived = out["out"][0]
    assert (total, count) == (n * (n - 1) // 2, n)
    # made while the fold's process could not read: at most a window more than it had
    # (and acknowledged) when it stopped; without flow control, all of them
    ahead = sum(t < woke - 0.1 for t in made)
    assert ahead <= arrived + flow.WINDOW_CHUNKS + 1 < n, (ahead, arrived)


@pytest.mark.parametrize("retry", [True, False], ids=["retried", "not-retried"])
def test_a_fold_that_dies_mid_stream(retry: bool, tmp_path: Path) -> None:
    """Its instance is killed at chunk 20 of 60. Retried, the fold runs again on the
    whole stream (the app kept it); not retried, the request fails with the loss.
    Either way the producer is not left waiting, and the app serves the next one."""
    n = 60
    case = _stream_to_fold(n, every=0.005, crash_at=20, marker=tmp_path / "died", retry=retry)
    g, inputs = case()
    with g.compile(backend="alto", executor="process") as app:
        if retry:
            out = asyncio.run(asyncio.wait_for(app.ainvoke(inputs), 30))
            assert out["out"][0][:2] == (n * (n - 1) // 2, n)
        else:
            with pytest.raises(StageInstanceLost, match="consume"):
                asyncio.run(asyncio.wait_for(app.ainvoke(inputs), 30))
        again = asyncio.run(asyncio.wait_for(app.ainvoke(inputs), 30))
        assert again["out"][0][:2] == (n * (n - 1) // 2, n)
        assert app.deployment.stats()["tees"] == 0


# -- flow.py ----------------------------------------------------------------------------


def _taken_in_background(window: flow.Window, size: int = 1) -> tuple[threading.Thread, list]:
    got: list[Any] = []

    def take() -> None:
        try:
            got.append(window.take(size))
        except flow.StreamClosed as exc:
            got.append(exc)

    thread = threading.Thread(target=take)
    thread.start()
    return thread, got


def test_a_window_holds_a_producer_a_window_ahead_of_acknowledgements() -> None:
    window = flow.Window(asyncio.new_event_loop())
    assert [window.take(1) for _ in range(flow.WINDOW_CHUNKS)] == list(range(flow.WINDOW_CHUNKS))
    thread, got = _taken_in_background(window)
    thread.join(0.1)
    assert got == []  # full
    window.ack(1)
    thread.join(5)
    assert got == [flow.WINDOW_CHUNKS]
    assert window.end() == flow.WINDOW_CHUNKS + 1  # an end never waits


def test_a_window_counts_bytes_and_lets_one_large_chunk_through() -> None:
    window = flow.Window(asyncio.new_event_loop())
    assert window.take(3 * flow.WINDOW_BYTES) == 0  # alone, it goes
    thread, got = _taken_in_background(window)
    thread.join(0.1)
    assert got == []
    window.ack(1)
    thread.join(5)
    assert got == [1]


def test_acknowledgements_that_go_back_or_past_what_was_sent_mean_nothing() -> None:
    window = flow.Window(asyncio.new_event_loop())
    window.take(1)
    window.take(1)
    window.ack(5)
    assert window.acked == 0
    window.ack(2)
    window.ack(1)
    assert window.acked == 2


def test_a_closed_window_stops_a_waiting_producer() -> None:
    window = flow.Window(asyncio.new_event_loop())
    for _ in range(flow.WINDOW_CHUNKS):
        window.take(1)
    thread, got = _taken_in_background(window)
    window.close(RuntimeError("the call ended"))
    thread.join(5)
    assert len(got) == 1 and isinstance(got[0], flow.StreamClosed)
    with pytest.raises(flow.StreamClosed, match="the call ended"):
        window.take(1)


def test_a_window_waits_on_its_event_loop() -> None:
    async def go() -> list[int]:
        window = flow.Window(asyncio.get_running_loop())
        for _ in range(flow.WINDOW_CHUNKS):
            await window.atake(1)
        waiting = asyncio.ensure_future(window.atake(1))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        window.ack(flow.WINDOW_CHUNKS)
        return [await waiting, window.end()]

    assert asyncio.run(go()) == [flow.WINDOW_CHUNKS, flow.WINDOW_CHUNKS + 1]


def test_events_from_two_paths_are_put_back_in_order() -> None:
    order = flow.InOrder()
    assert order.arrive(2, "c") == []
    assert order.arrive(0, "a") == ["a"]
    assert order.arrive(1, "b") == ["b", "c"]
    assert order.arrive(1, "b") == [] and order.arrive(2, "c") == []  # repeats
    assert order.arrive(3, "d") == ["d"]
    assert order.arrive(4, "end", end=True) == ["end"]
    assert order.arrive(4, "e") == [] and order.arrive(4, "end", end=True) == []  # over


def test_an_end_comes_after_the_chunks_before_it_and_never_waits_behind_a_repeat() -> None:
    """The app fails a stream it has 3 chunks of (its producer's call ended) while the
    fold already has chunk 3 from the router: the failure still comes."""
    order = flow.InOrder()
    assert [order.arrive(i, i) for i in (0, 1, 3)] == [[0], [1], []]
    assert order.arrive(3, "fail", end=True) == []  # chunk 2 is still on its way
    assert order.arrive(2, 2) == [2, 3, "fail"]
    ahead = flow.InOrder()
    assert [ahead.arrive(i, i) for i in range(4)] == [[0], [1], [2], [3]]
    assert ahead.arrive(3, "fail", end=True) == ["fail"]


def test_acknowledgements_go_in_batches_of_chunks_or_bytes() -> None:
    acks = flow.Acks()
    due = [acks.due(1) for _ in range(2 * flow.ACK_CHUNKS)]
    assert [i for i, d in enumerate(due) if d] == [flow.ACK_CHUNKS - 1, 2 * flow.ACK_CHUNKS - 1]
    assert acks.due(flow.ACK_BYTES) and acks.count == 2 * flow.ACK_CHUNKS + 1


def test_a_tee_tells_its_producer_the_lesser_acknowledgement() -> None:
    tees = Tees()
    tees.add(b"app", b"p", b"f", b"5eed")
    tees.add(b"app", b"p", b"f", b"bad/sid")  # no stream id has the key separator
    tees.add(b"app", b"p", b"f", b"\xff")  # nor bytes beyond ASCII
    tees.add(b"app", b"x", b"x", b"5eed")  # and no call folds its own stream
    assert len(tees) == 1
    tee = tees.of_stream(b"app", b"p", b"5eed")
    assert tee is not None and tees.into(b"app", b"f", b"5eed") is tee
    assert tees.into(b"app", b"p", b"5eed") is None  # the producer's call is no fold
    assert tee.acknowledged(300, by_fold=False) is None  # the fold has none yet
    assert tee.acknowledged(100, by_fold=True) == 100
    assert tee.acknowledged(50, by_fold=True) is None  # counts never go back
    # the fold's call ends: the producer hears what the caller has
    assert tees.end(b"app", b"f") == [(tee, 300)]
    assert len(tees) == 0 and tees.of_stream(b"app", b"p", b"5eed") is None
    assert tees.end(b"app", b"p") == []


def test_a_tee_whose_producer_ends_first_tells_no_one() -> None:
    tees = Tees()
    tees.add(b"app", b"p", b"f", b"5eed")
    assert tees.end(b"app", b"p") == []
    assert len(tees) == 0 and tees.into(b"app", b"f", b"5eed") is None
