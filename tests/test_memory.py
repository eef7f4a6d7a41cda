"""Apps with memory and a human in the loop: checkpointers (in memory, SQLite, a real
PostgreSQL), interrupt()/Command(resume=...), interrupt_before/after and the state API
run on alto and give what stock LangGraph gives: each call's result, and the thread's
checkpoint history (values, next, metadata, tasks, interrupts). A thread started on one
backend continues on the other."""

from __future__ import annotations

import contextlib
import operator
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from graphs._common import _append
from harness import canonical
from langchain_core.runnables import RunnableConfig
from langgraph.constants import END, START
from langgraph.graph import StateGraph
from langgraph.types import Command, Interrupt, Send, StateUpdate, interrupt
from memory_harness import SAVERS, Scenario, compiled, transcript

import alto_langgraph
from alto_langgraph import fold, streaming


class Log(TypedDict, total=False):
    log: Annotated[list, operator.add]
    items: list
    flag: str


# -- the graphs ------------------------------------------------------------------------


def chat() -> StateGraph:
    """One node replying to the last message: memory across turns."""
    g = StateGraph(Log)
    g.add_node("reply", lambda s: {"log": [f"re:{s['log'][-1]}:{len(s['log'])}"]})
    g.add_edge(START, "reply")
    return g


def fanout_with_approval() -> StateGraph:
    """Send workers; the one for "b" asks a human, the others do not wait for it."""

    def worker(s: dict) -> dict:
        item = s["item"]
        if item == "b":
            return {"log": [f"{item}:{interrupt(f'approve {item}?')}"]}
        return {"log": [item]}

    g = StateGraph(Log)
    g.add_node("plan", lambda s: {"log": ["plan"]})
    g.add_node("worker", worker)
    g.add_node("done", lambda s: {"log": [f"done:{len(s['log'])}"]})
    g.add_edge(START, "plan")
    g.add_conditional_edges(
        "plan", lambda s: [Send("worker", {"item": i}) for i in s["items"]], ["worker"]
    )
    g.add_edge("worker", "done")
    return g


def streamed_fold() -> StateGraph:
    """A streaming node sends token streams to a fold, which reads them as they are
    made; the fold for "b" asks a human, so its Send (the collected stream, as stock
    has it) waits in the checkpoint, and the fold runs again from it on resume."""

    def tokens(item: str) -> Any:
        yield from (f"{item}{i}" for i in range(3))

    @streaming
    def plan(s: dict) -> Any:
        for item in s["items"]:
            yield {"log": [f"plan:{item}"]}
            yield Send("fold", {"item": item, "tokens": tokens(item)})

    @fold(over="tokens")
    class Joined:
        def start(self, p: dict) -> list:
            return []

        def step(self, acc: list, token: str) -> list:
            return [*acc, token]

        def finish(self, acc: list, p: dict) -> dict:
            text = "".join(acc)
            if p["item"] == "b":
                text += ":" + interrupt(f"approve {text} of {p['tokens']}?")
            return {"log": [text]}

    g = StateGraph(Log)
    g.add_node("plan", plan)
    g.add_node("fold", Joined)
    g.add_node("done", lambda s: {"log": [f"done:{len(s['log'])}"]})
    g.add_edge(START, "plan")
    g.add_edge("fold", "done")
    return g


def slow_sibling_then_question() -> StateGraph:
    """a -> ask runs ahead of the slow sibling b; ask interrupts: its run ahead of the
    step is not the interrupt the human answers (that one comes from its step)."""
    asked = threading.Event()

    def slow(s: dict) -> dict:
        asked.wait(0.2)  # ask's run ahead (if any) comes first, or 0.2 s pass
        return {"log": ["b"]}

    def ask(s: dict) -> dict:
        answer = interrupt(f"after {sorted(s['log'])}?")
        asked.set()
        return {"log": [f"ask:{answer}"]}

    g = StateGraph(Log)
    g.add_node("a", _append("a"))
    g.add_node("b", slow)
    g.add_node("ask", ask)
    g.add_node("end", lambda s: {"log": [f"end:{len(s['log'])}"]})
    g.add_edge(START, "a")
    g.add_edge(START, "b")
    g.add_edge("a", "ask")
    g.add_edge(["ask", "b"], "end")
    return g


def chain() -> StateGraph:
    g = StateGraph(Log)
    for n in "abc":
        g.add_node(n, _append(n))
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    g.add_edge("b", "c")
    return g


def two_questions() -> StateGraph:
    """Two Send workers interrupt in one step: resumed by interrupt id."""

    def worker(s: dict) -> dict:
        return {"log": [f"{s['item']}:{interrupt(s['item'])}"]}

    g = StateGraph(Log)
    g.add_node("plan", _append("plan"))
    g.add_node("worker", worker)
    g.add_edge(START, "plan")
    g.add_conditional_edges(
        "plan", lambda s: [Send("worker", {"item": i}) for i in s["items"]], ["worker"]
    )
    return g


def with_subgraph() -> StateGraph:
    """A subgraph node that interrupts inside: its state is in the parent's thread."""
    inner = StateGraph(Log)
    inner.add_node("x", _append("x"))
    inner.add_node("y", lambda s: {"log": [f"y:{interrupt('inner?')}"]})
    inner.add_edge(START, "x")
    inner.add_edge("x", "y")
    g = StateGraph(Log)
    g.add_node("pre", _append("pre"))
    g.add_node("sub", inner.compile())
    g.add_node("post", lambda s: {"log": [f"post:{len(s['log'])}"]})
    g.add_edge(START, "pre")
    g.add_edge("pre", "sub")
    g.add_edge("sub", "post")
    return g


_failed: set[str] = set()


def fails_once() -> StateGraph:
    """b fails on its thread's first attempt; a's write is kept as a pending write and
    resuming runs b alone."""

    def b(s: dict, config: RunnableConfig) -> dict:
        thread = config["configurable"]["thread_id"]
        if thread not in _failed:
            _failed.add(thread)
            raise ValueError("b failed")
        return {"log": ["b"]}

    g = StateGraph(Log)
    g.add_node("a", _append("a"))
    g.add_node("b", b)
    g.add_node("c", lambda s: {"log": [f"c:{sorted(s['log'])}"]})
    g.add_edge(START, "a")
    g.add_edge(START, "b")
    g.add_edge(["a", "b"], "c")
    return g


# -- the calls ---------------------------------------------------------------------------


def _invoke(value: Any, **kwargs: Any) -> Any:
    return lambda app, cfg: app.invoke(value, cfg, **kwargs)


def _stream(value: Any, **kwargs: Any) -> Any:
    return lambda app, cfg: list(app.stream(value, cfg, stream_mode="updates", **kwargs))


def _state(subgraphs: bool = False) -> Any:
    return lambda app, cfg: app.get_state(cfg, subgraphs=subgraphs)


def _resume_each(app: Any, cfg: dict) -> Any:
    """Answer every pending interrupt by its id (ids differ per run; values do not)."""
    pending = app.get_state(cfg).interrupts
    return app.invoke(Command(resume={i.id: f"ans-{i.value}" for i in pending}), cfg)


def _checkpoint_before(node: str) -> Any:
    def find(app: Any, cfg: dict) -> dict:
        return next(s.config for s in app.get_state_history(cfg) if s.next == (node,))

    return find


def _replay_from(node: str) -> Any:
    return lambda app, cfg: app.invoke(None, _checkpoint_before(node)(app, cfg))


def _fork_at(node: str, values: dict) -> Any:
    def fork(app: Any, cfg: dict) -> Any:
        forked = app.update_state(_checkpoint_before(node)(app, cfg), values)
        return app.invoke(None, forked)

    return fork


def _update(values: Any, as_node: str | None = None) -> Any:
    def update(app: Any, cfg: dict) -> Any:
        app.update_state(cfg, values, as_node=as_node)
        return app.get_state(cfg)

    return update


def _bulk(*supersteps: list[StateUpdate]) -> Any:
    def bulk(app: Any, cfg: dict) -> Any:
        app.bulk_update_state(cfg, list(supersteps))
        return app.get_state(cfg)

    return bulk


_TIMESTAMP = re.compile(r"'timestamp': '[^']*'")


def _stream_modes(value: Any, *, partial_updates: bool = False, **kwargs: Any) -> Any:
    """Every stream mode that shows the loop's bookkeeping; chunks as a multiset (the
    order of a step's tasks finishing is a race on stock too). With ``partial_updates``
    (a @streaming node's) no "updates": alto streams those as they are applied."""
    modes = ["values", "checkpoints", "tasks", "debug"]
    if not partial_updates:
        modes.append("updates")

    def stream(app: Any, cfg: dict) -> Any:
        chunks = app.stream(value, cfg, stream_mode=modes, **kwargs)
        return sorted(_TIMESTAMP.sub("<t>", canonical(c)) for c in chunks)

    return stream


def _ainvoke(value: Any) -> Any:
    async def call(app: Any, cfg: dict) -> Any:
        return await app.ainvoke(value, cfg)

    return call


async def _astate(app: Any, cfg: dict) -> Any:
    return await app.aget_state(cfg)


SCENARIOS: dict[str, Scenario] = {
    "chat-3-turns": Scenario(
        chat,
        [_invoke({"log": ["hi"]}), _invoke({"log": ["how"]}), _invoke({"log": ["bye"]}), _state()],
    ),
    "send-interrupt-resume": Scenario(
        fanout_with_approval,
        [
            _invoke({"items": ["a", "b", "c"]}),
            _state(),
            _invoke(Command(resume="yes")),
            _state(),
        ],
    ),
    "streamed-fold-interrupt-resume": Scenario(
        streamed_fold,
        [
            _invoke({"items": ["a", "b", "c"]}),
            _state(),
            _invoke(Command(resume="yes")),
            _stream_modes({"items": ["c", "b"]}, partial_updates=True),
            _stream_modes(Command(resume="no"), partial_updates=True),
        ],
    ),
    "run-ahead-task-interrupts": Scenario(
        slow_sibling_then_question,
        [_stream({"log": []}), _state(), _stream(Command(resume="go")), _state()],
    ),
    "interrupt-before-update-as-node": Scenario(
        chain,
        [
            _invoke({"log": []}),
            _state(),
            _update({"log": ["edited"]}, as_node="b"),
            _invoke(None),
            _state(),
        ],
        {"interrupt_before": ["b"]},
    ),
    "interrupt-after-per-call": Scenario(
        chain,
        [_invoke({"log": []}, interrupt_after=["a"]), _state(), _invoke(None), _state()],
    ),
    "resume-by-interrupt-id": Scenario(
        two_questions,
        [_invoke({"items": ["p", "q"]}), _state(), _resume_each, _state()],
    ),
    "time-travel-replay-and-fork": Scenario(
        chain,
        [
            _invoke({"log": []}),
            _replay_from("b"),
            _fork_at("b", {"log": ["forked"]}),
            _state(),
        ],
    ),
    "subgraph-interrupt": Scenario(
        with_subgraph,
        [_invoke({"log": []}), _state(subgraphs=True), _invoke(Command(resume="in")), _state()],
    ),
    "durability-exit-then-sync": Scenario(
        fanout_with_approval,
        [
            _invoke({"items": ["a", "c"]}, durability="exit"),
            _invoke({"items": ["c"]}, durability="sync"),
        ],
    ),
    "bulk-update": Scenario(
        chain,
        [
            _invoke({"log": []}),
            _bulk([StateUpdate({"log": ["u1"]}, "a")], [StateUpdate({"log": ["u2"]}, "b")]),
            _invoke(None),
        ],
    ),
    "failed-task-resumes-alone": Scenario(fails_once, [_invoke({"log": []}), _invoke(None)]),
    "update-state-with-command": Scenario(
        chain,
        [
            _invoke({"log": []}),
            _update(Command(update={"log": ["cmd"]}, goto="c"), as_node="a"),
            _invoke(None),
        ],
        {"interrupt_before": ["b"]},
    ),
    "stream-modes-with-memory": Scenario(
        fanout_with_approval,
        [
            _stream_modes({"items": ["a", "b", "c"]}),
            _stream_modes(Command(resume="fine")),
            _stream_modes({"items": ["c"]}, subgraphs=True),
        ],
    ),
    "async-chat-and-resume": Scenario(
        fanout_with_approval,
        [
            _ainvoke({"items": ["b", "c"]}),
            _astate,
            _ainvoke(Command(resume="ok")),
            _ainvoke({"items": ["a"]}),
        ],
        is_async=True,
    ),
}


@pytest.mark.parametrize("kind", SAVERS)
@pytest.mark.parametrize("name", list(SCENARIOS))
def test_same_calls_and_history_as_stock(name: str, kind: str, tmp_path: Any) -> None:
    scenario = SCENARIOS[name]
    n = len(scenario.calls)
    stock = transcript(scenario, ["stock"] * n, kind, tmp_path)
    alto = transcript(scenario, ["alto"] * n, kind, tmp_path)
    assert alto[0] == stock[0]
    assert alto[1] == stock[1]
    assert len(stock[1]) >= 2  # a history to compare


@pytest.mark.parametrize("kind", SAVERS)
@pytest.mark.parametrize(
    "name", [n for n, s in SCENARIOS.items() if len(s.calls) >= 2 and not s.is_async]
)
def test_a_thread_moves_between_backends(name: str, kind: str, tmp_path: Any) -> None:
    """Started on one backend, continued on the other (same saver): the same results
    and history as a thread that stayed on stock LangGraph."""
    scenario = SCENARIOS[name]
    n = len(scenario.calls)
    cut = n // 2
    stock = transcript(scenario, ["stock"] * n, kind, tmp_path)
    assert transcript(scenario, ["alto"] * cut + ["stock"] * (n - cut), kind, tmp_path) == stock
    assert transcript(scenario, ["stock"] * cut + ["alto"] * (n - cut), kind, tmp_path) == stock


@pytest.mark.parametrize(
    "name",
    [
        "send-interrupt-resume",
        "interrupt-before-update-as-node",
        "subgraph-interrupt",
        "streamed-fold-interrupt-resume",
    ],
)
def test_same_on_worker_processes(name: str, tmp_path: Any) -> None:
    """Nodes on worker processes: interrupt() there gets the loop's resume values."""
    scenario = SCENARIOS[name]
    n = len(scenario.calls)
    stock = transcript(scenario, ["stock"] * n, "sqlite", tmp_path)
    assert transcript(scenario, ["alto"] * n, "sqlite", tmp_path, executor="process") == stock


def _asks_beside_a_slow_sibling(reads_log: bool) -> StateGraph:
    """a -> ask, beside the slow b; ask asks about what a wrote (``flag``), or about
    the whole ``log``, which b writes too (then its run ahead misses)."""

    def ask(s: dict) -> dict:
        about = sorted(s["log"]) if reads_log else s["flag"]
        return {"log": [f"ask:{interrupt(f'after {about}?')}"]}

    g = StateGraph(Log)
    g.add_node("a", lambda s: {"log": ["a"], "flag": "A"})
    g.add_node("b", _append("b", 0.1))
    g.add_node("ask", ask)
    g.add_edge(START, "a")
    g.add_edge(START, "b")
    g.add_edge("a", "ask")
    return g


@pytest.mark.parametrize("reads_log", [False, True])
def test_a_task_that_ran_ahead_and_interrupted_interrupts_under_its_steps_id(
    reads_log: bool,
) -> None:
    """ask runs ahead while b sleeps and interrupts there. Adopted (it read nothing b
    wrote), its interrupt is the loop's task's, its id renamed after that task (the id
    stock gives it, which resuming by id looks for): the node ran once before the
    human answered. Missed (it read the log b writes), it asks again at its step."""
    outs = {}
    for backend in ("stock", "alto"):
        builder = _asks_beside_a_slow_sibling(reads_log)
        with compiled(builder, backend, checkpointer=_saver()) as app:
            cfg = {"configurable": {"thread_id": "t"}}
            first = list(app.stream({"log": []}, cfg))
            state = app.get_state(cfg)
            (pending,) = state.interrupts
            assert first[-1]["__interrupt__"][0].id == pending.id
            ask_task = next(t for t in state.tasks if t.name == "ask")
            assert pending.id == Interrupt.from_ns(None, f"ask:{ask_task.id}").id
            outs[backend] = (pending.value, app.invoke(Command(resume={pending.id: "go"}), cfg))
            if backend == "alto":
                stats = app.run_ahead_stats()["ask"]
                assert stats["run_ahead"] == 1
                assert (stats["adopted"], stats["missed"]) == ((0, 1) if reads_log else (1, 0))
    assert outs["alto"] == outs["stock"]
    assert outs["stock"][1]["log"] == ["a", "b", "ask:go"]


def _interrupts_on_first_call() -> StateGraph:
    """A Send target that asks only on its first call (LangGraph's own
    test_send_dedupe_on_resume): run ahead beside a slow sibling, it must still run
    once before the interrupt, as on stock."""
    calls: list[Any] = []

    def b(s: Any) -> dict:
        calls.append(s)
        if len(calls) == 1:
            interrupt("first call only")
        return {"log": [f"b{len(calls)}"]}

    g = StateGraph(Log)
    g.add_node("a", _append("a"))
    g.add_node("slow", _append("slow", 0.1))
    g.add_node("b", b)
    g.add_edge(START, "a")
    g.add_edge(START, "slow")
    g.add_conditional_edges("a", lambda s: [Send("b", {"n": 1})], ["b"])
    return g


def test_a_send_target_that_interrupts_once_runs_once_before_the_interrupt() -> None:
    outs = {}
    for backend in ("stock", "alto"):
        with compiled(_interrupts_on_first_call(), backend, checkpointer=_saver()) as app:
            cfg = {"configurable": {"thread_id": "t"}}
            first = app.invoke({"log": []}, cfg)
            outs[backend] = (
                [i.value for i in first["__interrupt__"]],
                app.invoke(Command(resume="ok"), cfg),
            )
            if backend == "alto":
                assert app.run_ahead_stats()["b"]["adopted"] == 1
    assert outs["alto"] == outs["stock"]
    assert outs["stock"] == (["first call only"], {"log": ["a", "slow", "b2"]})


def _saver() -> Any:
    from langgraph.checkpoint.memory import InMemorySaver

    return InMemorySaver()


def test_speculative_work_is_not_saved_before_its_step() -> None:
    """A pull task that ran ahead is saved as a pending write only when its step is
    reached: while the slow sibling still runs, the saver has none of its writes."""
    seen: list[Any] = []
    saver = _saver()

    def slow(s: dict) -> dict:
        time.sleep(0.05)  # c runs ahead meanwhile
        seen.extend(saver.get_tuple({"configurable": {"thread_id": "t"}}).pending_writes)
        return {"log": ["b"]}

    g = StateGraph(Log)
    g.add_node("a", _append("a"))
    g.add_node("b", slow)
    g.add_node("c", _append("c"))
    g.add_edge(START, "a")
    g.add_edge(START, "b")
    g.add_edge("a", "c")
    g.add_edge("c", END)
    g.add_edge("b", END)
    with g.compile(backend="alto", checkpointer=saver) as app:
        out = app.invoke({"log": []}, {"configurable": {"thread_id": "t"}})
        assert app.run_ahead_stats()["c"]["adopted"] == 1
    assert out["log"] == ["a", "b", "c"]
    written = [w[2] for w in seen if w[1] == "log"]
    assert ["a"] in written and ["c"] not in written


def test_a_subgraph_with_memory_does_not_run_ahead() -> None:
    """A subgraph keeps its checkpoints under the loop's task: with a checkpointer it
    runs at its step (without one, it runs ahead)."""
    scenario = SCENARIOS["subgraph-interrupt"]
    g = StateGraph(Log)
    g.add_node("a", _append("a"))
    g.add_node("b", _append("b", 0.05))
    g.add_node("sub", scenario.build().compile())
    g.add_edge(START, "a")
    g.add_edge(START, "b")
    g.add_edge("a", "sub")
    cfg = {"configurable": {"thread_id": "t"}}
    with g.compile(backend="alto", checkpointer=_saver()) as app:
        app.invoke({"log": []}, cfg)
        assert app.run_ahead_stats().get("sub", {}).get("run_ahead", 0) == 0
        out = app.invoke(Command(resume="r"), cfg)
    assert "y:r" in out["log"]


# -- crash and resume --------------------------------------------------------------------


def _crash_and_resume(backend: str, kind: str, folder: Any) -> tuple[Any, list[str], list[Any]]:
    """Start a request in a child process, SIGKILL it while b runs (a's checkpoint and
    c's write saved), resume the thread here on ``backend``: the final state, the
    side-effect log (which node ran how often) and the thread's history."""
    import crash_app
    from memory_harness import history, postgres_url

    log = folder / f"{backend}-{kind}.log"
    thread = uuid.uuid4().hex
    target = str(folder / f"{backend}.db") if kind == "sqlite" else postgres_url()
    child = subprocess.Popen(
        [sys.executable, crash_app.__file__, backend, kind, target, thread, str(log)],
        cwd=Path(crash_app.__file__).parent,
    )
    try:
        deadline = time.monotonic() + 60
        while not (log.exists() and {"b", "c"} <= set(log.read_text().split())):
            assert child.poll() is None, "the app exited before it could be killed"
            assert time.monotonic() < deadline, "b never started"
            time.sleep(0.02)
        time.sleep(0.3)  # c's write reaches the saver (durability="sync" saves steps)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(30)
    assert child.returncode == -signal.SIGKILL
    cfg = {"configurable": {"thread_id": thread}}
    with crash_app.saver(kind, target) as cp:
        app = crash_app.compile_app(backend, cp, log)
        try:
            out = app.invoke(None, cfg)
            return out, log.read_text().split(), history(app, cfg)
        finally:
            if backend == "alto":
                app.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_killed_app_resumes_from_its_last_checkpoint_as_stock_does(
    kind: str, tmp_path: Any
) -> None:
    stock = _crash_and_resume("stock", kind, tmp_path)
    alto = _crash_and_resume("alto", kind, tmp_path)
    # a and c finished before the crash: saved, not run again; b runs again; d once
    assert stock[1] == ["a", "b", "c", "b", "d"] or stock[1] == ["a", "c", "b", "b", "d"]
    assert sorted(alto[1]) == sorted(stock[1])
    assert alto[0] == stock[0] == {"log": ["a:0", "b:1", "c:1", "d:3"]}
    assert alto[2] == stock[2]


# -- stores, node caches, step timeouts ----------------------------------------------------


def _with_store() -> StateGraph:
    """Nodes talk through the store from one step to the next."""
    from langgraph.runtime import Runtime

    def put(s: dict, runtime: Runtime) -> dict:
        runtime.store.put(("notes",), "n", {"text": f"note-{len(s['log'])}"})
        return {"log": ["put"]}

    def get(s: dict, runtime: Runtime) -> dict:
        item = runtime.store.get(("notes",), "n")
        return {"log": [item.value["text"] if item else "none"]}

    g = StateGraph(Log)
    g.add_node("put", put)
    g.add_node("slow", _append("slow", 0.03))
    g.add_node("get", get)
    g.add_edge(START, "put")
    g.add_edge(START, "slow")
    g.add_edge("put", "get")
    return g


@contextlib.contextmanager
def _store(kind: str) -> Any:
    if kind == "memory":
        from langgraph.store.memory import InMemoryStore

        yield InMemoryStore()
    else:
        from langgraph.store.postgres import PostgresStore
        from memory_harness import postgres_url

        with PostgresStore.from_conn_string(postgres_url()) as store:
            store.setup()
            store.delete(("notes",), "n")
            yield store


@pytest.mark.parametrize("executor", ["auto", "process"])
@pytest.mark.parametrize("kind", ["memory", "postgres"])
def test_a_store_runs_on_alto_with_every_task_at_its_step(kind: str, executor: str) -> None:
    """Also from worker processes, whose operations the app's store runs."""
    outs = {}
    for backend in ("stock", "alto"):
        with (
            _store(kind) as store,
            compiled(
                _with_store(),
                backend,
                {"executor": executor},
                store=store,
                checkpointer=_saver(),
            ) as app,
        ):
            cfg = {"configurable": {"thread_id": "t"}}
            outs[backend] = [app.invoke({"log": []}, cfg), app.invoke({"log": []}, cfg)]
            if backend == "alto":
                assert all(s["run_ahead"] == 0 for s in app.run_ahead_stats().values())
    assert outs["alto"] == outs["stock"]
    assert outs["stock"][1]["log"][-1] == "note-3"  # the second turn read the first's note


def test_a_node_cache_runs_on_alto_and_cached_nodes_run_once() -> None:
    from langgraph.cache.memory import InMemoryCache
    from langgraph.types import CachePolicy

    def run(backend: str) -> tuple[list[Any], list[str]]:
        calls: list[str] = []

        def costly(s: dict) -> dict:
            calls.append("costly")
            return {"log": [f"costly:{s['flag']}"]}

        g = StateGraph(Log)
        g.add_node("costly", costly, cache_policy=CachePolicy())
        g.add_node("after", _append("after"))
        g.add_edge(START, "costly")
        g.add_edge("costly", "after")
        with compiled(g, backend, cache=InMemoryCache()) as app:
            chunks = [list(app.stream({"log": [], "flag": flag})) for flag in ("x", "x", "y")]
            if backend == "alto":
                assert "never runs ahead (a cache policy" in str(app.plan)
        return chunks, calls

    stock, alto = run("stock"), run("alto")
    assert alto == stock
    assert stock[1] == ["costly", "costly"]  # the second "x" came from the cache


@pytest.mark.parametrize("pause", [0.0, 0.3])
def test_step_timeout_runs_on_alto_and_times_steps_as_stock(pause: float) -> None:
    def run(backend: str) -> Any:
        g = StateGraph(Log)
        g.add_node("a", _append("a"))
        g.add_node("slow", _append("slow", pause))
        g.add_edge(START, "a")
        g.add_edge(START, "slow")
        g.add_edge("a", "slow")
        with compiled(g, backend) as app:
            app.step_timeout = 0.1
            try:
                return app.invoke({"log": []})
            except Exception as exc:
                return type(exc).__name__

    stock = run("stock")
    assert run("alto") == stock
    assert stock == ("TimeoutError" if pause else {"log": ["a", "slow", "slow"]})


def _invokes_a_graph() -> StateGraph:
    """A node that invokes a two-step graph itself (not added as a subgraph): on stock
    the inner graph keeps its own checkpoints in the app's checkpointer, so resuming
    does not run its first node again."""
    inner = StateGraph(Log)

    def x(s: dict) -> dict:
        _runs.append(1)
        return {"log": [f"x{len(_runs)}"]}

    inner.add_node("x", x)
    inner.add_node("y", lambda s: {"log": [f"y:{interrupt('inner?')}"]})
    inner.add_edge(START, "x")
    inner.add_edge("x", "y")
    inner_app = inner.compile()

    g = StateGraph(Log)
    g.add_node("n", lambda s: {"log": inner_app.invoke({"log": []})["log"]})
    g.add_edge(START, "n")
    return g


_runs: list[int] = []


def test_a_graph_invoked_in_a_worker_with_a_checkpointer_falls_back() -> None:
    """Its checkpoints could not reach the app's checkpointer from a worker process:
    the run goes to stock LangGraph, with a warning naming why; the answers are
    stock's (x ran once, before the interrupt)."""
    cfg = {"configurable": {"thread_id": "t"}}
    app = _invokes_a_graph().compile(backend="alto", executor="process", checkpointer=_saver())
    assert app.plan.fallbacks == (
        "a checkpointer with a node in worker processes that invokes a graph",
    )
    _runs.clear()
    with app, pytest.warns(alto_langgraph.AltoFallbackWarning, match="invokes a graph"):
        app.invoke({"log": []}, cfg)
        out = app.invoke(Command(resume="r"), cfg)
    assert out == {"log": ["x1", "y:r"]} and _runs == [1]
    assert _invokes_a_graph().compile(backend="alto", executor="process").plan.fallbacks == ()


def _agents() -> dict[str, Any]:
    inner = StateGraph(Log)
    inner.add_node("x", _append("x"))
    inner.add_edge(START, "x")
    return {"inner": inner.compile()}


_AGENTS = _agents()  # module level: a worker that imports this module has it too


def _calls_an_agent(s: dict) -> dict:
    # reached through a subscript: LangGraph's subgraph detection does not see it
    return {"log": _AGENTS["inner"].invoke({"log": []})["log"]}


def test_a_graph_the_fallback_cannot_see_is_a_clear_error_on_a_worker() -> None:
    """A graph a worker's node invokes that LangGraph does not detect: it would run
    there without the app's checkpointer (no memory, no subgraph state), so its first
    use of the checkpointer is an error naming the node and what to do instead."""
    g = StateGraph(Log)
    g.add_node("n", _calls_an_agent)
    g.add_edge(START, "n")
    cfg = {"configurable": {"thread_id": "t"}}
    stock = g.compile(checkpointer=_saver()).invoke({"log": []}, cfg)
    assert stock == {"log": ["x"]}
    with g.compile(backend="alto", executor="process", checkpointer=_saver()) as app:
        assert app.plan.fallbacks == ()
        with pytest.raises(alto_langgraph.ShippingError, match=r"node 'n' runs in a worker"):
            app.invoke({"log": []}, cfg)
    with g.compile(backend="alto", executor="process") as app:  # no memory: nothing lost
        assert app.invoke({"log": []}) == stock
