"""The process executor: stage instances in worker processes behind a router.

What these tests watch lives in other processes, so they observe it through what
nodes return (their pid, their CUDA_VISIBLE_DEVICES) and through /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import operator
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from typing import Annotated, Any

import pytest
from langgraph.graph import START, StateGraph, add_messages
from langgraph.types import RetryPolicy, Send
from pydantic import BaseModel
from router_harness import live_router
from typing_extensions import TypedDict

import alto_langgraph
from alto_langgraph.errors import DeploymentError, ShippingError, StageInstanceLost
from alto_langgraph.process import wire
from alto_langgraph.process.deployment import _pid_alive
from alto_langgraph.process.forkserver import fork_server
from alto_langgraph.process.gpus import assign_gpus
from alto_langgraph.process.routing import ConsistentHash, LeastOutstanding, make_policy
from alto_langgraph.process.spec import StageSpec


class Log(TypedDict):
    log: Annotated[list, operator.add]


class Msgs(TypedDict):
    messages: Annotated[list, add_messages]


def _wait_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if _pid_alive(p)]
        time.sleep(0.02)
    return alive


def _fan_out(n: int, target: str) -> Any:
    return lambda s: [Send(target, {"i": i}) for i in range(n)]


# -- routing ----------------------------------------------------------------------------


def test_items_of_one_group_reach_one_instance_of_a_stateful_stage() -> None:
    """Every item of one aggregation group (the Sends of one sender) lands on the same
    instance of a stateful stage; the groups themselves spread over the instances."""
    groups, per_group = 12, 4

    def split(p: dict) -> Any:
        from langgraph.types import Command

        return Command(goto=[Send("agg", {"g": p["i"], "k": k}) for k in range(per_group)])

    def agg(p: dict) -> dict:
        return {"log": [(p["g"], os.getpid())]}

    g = StateGraph(Log)
    g.add_node("a", lambda s: {"log": []})
    g.add_node("split", split)
    g.add_node("agg", agg)
    g.add_edge(START, "a")
    g.add_conditional_edges("a", _fan_out(groups, "split"))
    with g.compile(
        backend="alto", executor="process", replicas={"agg": 3}, stages={"agg": {"stateful": True}}
    ) as app:
        out = app.invoke({"log": []})
        assert app.deployment is not None
        instances = {app.deployment.pids[("agg", i)] for i in range(3)}
    by_group: dict[int, set[int]] = {}
    for group, pid in out["log"]:
        by_group.setdefault(group, set()).add(pid)
    assert len(out["log"]) == groups * per_group
    assert all(len(pids) == 1 for pids in by_group.values()), by_group
    used = set().union(*by_group.values())
    assert used <= instances
    assert len(used) > 1  # 12 groups on one of 3 instances: p = 3 * 3**-12


def test_stateless_items_spread_over_all_instances() -> None:
    def work(p: dict) -> dict:
        time.sleep(0.05)
        return {"log": [os.getpid()]}

    g = StateGraph(Log)
    g.add_node("a", lambda s: {"log": []})
    g.add_node("work", work)
    g.add_edge(START, "a")
    g.add_conditional_edges("a", _fan_out(8, "work"))
    with g.compile(backend="alto", executor="process", replicas={"work": 2}) as app:
        out = asyncio.run(app.ainvoke({"log": []}))
        instances = {app.deployment.pids[("work", i)] for i in range(2)}
    assert len(out["log"]) == 8
    assert set(out["log"]) == instances
    # least outstanding work: 8 equal items, 2 instances, 4 each
    assert sorted(out["log"].count(p) for p in instances) == [4, 4]


def test_consistent_hash_moves_few_groups_when_an_instance_is_added() -> None:
    ring = ConsistentHash()
    keys = [f"group-{i}".encode() for i in range(2000)]
    four = [b"s#0", b"s#1", b"s#2", b"s#3"]
    before = {k: ring.pick(k, four, {}) for k in keys}
    after = {k: ring.pick(k, [*four, b"s#4"], {}) for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert all(after[k] == b"s#4" for k in moved)  # only to the new instance
    assert 0.1 < len(moved) / len(keys) < 0.35  # about 1/5 of the groups
    assert len(set(before.values())) == 4


def test_least_outstanding_picks_the_idle_instance() -> None:
    policy = LeastOutstanding()
    insts = [b"s#0", b"s#1", b"s#2"]
    load = {b"s#0": 3, b"s#1": 0, b"s#2": 2}
    assert {policy.pick(b"", insts, load) for _ in range(5)} == {b"s#1"}


def test_routing_policy_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="unknown routing policy 'random'"):
        make_policy("random", stateful=False)
    with pytest.raises(TypeError, match="no pick"):
        make_policy(object(), stateful=False)


def test_a_custom_routing_policy_runs_in_the_router() -> None:
    class Last:
        def pick(self, key: bytes, instances: Any, outstanding: Any) -> bytes:
            return instances[-1]

    g = StateGraph(Log)
    g.add_node("a", lambda s: {"log": []})
    g.add_node("work", lambda p: {"log": [os.getpid()]})
    g.add_edge(START, "a")
    g.add_conditional_edges("a", _fan_out(6, "work"))
    with g.compile(
        backend="alto",
        executor="process",
        replicas={"work": 3},
        stages={"work": {"policy": Last()}},
    ) as app:
        out = app.invoke({"log": []})
        assert set(out["log"]) == {app.deployment.pids[("work", 2)]}


# -- the router never opens a payload -----------------------------------------------------


class _Boom:
    def __reduce__(self) -> Any:
        return (_explode, ())


def _explode() -> None:
    raise RuntimeError("this payload must never be unpickled")


def test_router_forwards_payloads_it_cannot_unpickle_untouched(tmp_path: Any) -> None:
    """A payload whose unpickling raises (and one that is no pickle at all) passes
    through the router byte for byte, and the router goes on forwarding."""
    inst = wire.instance_id("s", 0)
    with live_router(tmp_path=tmp_path) as router:
        instance = router.instance(inst)
        client = router.app()
        poisoned = pickle.dumps(_Boom())
        with pytest.raises(RuntimeError):
            pickle.loads(poisoned)
        for call_id, payload in ((b"1", poisoned), (b"2", b"\x00not a pickle\xff")):
            client.send_multipart([wire.envelope(wire.TASK, call_id, b"s"), payload])
            assert instance.poll(5000)
            got = instance.recv_multipart()
            assert wire.decode(got[1]) == (wire.TASK, call_id, b"s", b"")
            assert got[2:] == [payload]
            # and back: a result payload is as opaque as a task payload
            instance.send_multipart([got[0], wire.envelope(wire.RESULT, call_id), payload])
            assert client.poll(5000)
            assert client.recv_multipart() == [wire.envelope(wire.RESULT, call_id), payload]
        assert not router.exited.is_set()


# -- shipping -----------------------------------------------------------------------------


def test_closures_and_lambdas_run_in_workers() -> None:
    offset = 100  # captured by value: the worker gets its own copy

    def make(k: int) -> Any:
        return lambda p: {"log": [p["i"] * k + offset]}

    g = StateGraph(Log)
    g.add_node("a", lambda s: {"log": []})
    g.add_node("mul", make(3))
    g.add_edge(START, "a")
    g.add_conditional_edges("a", _fan_out(3, "mul"))
    with g.compile(backend="alto", executor="process") as app:
        assert sorted(app.invoke({"log": []})["log"]) == [100, 103, 106]


def _locked_graph() -> StateGraph:
    lock = threading.Lock()

    def guarded(s: dict) -> dict:
        with lock:
            return {"log": ["x"]}

    g = StateGraph(Log)
    g.add_node("guarded", guarded)
    g.add_edge(START, "guarded")
    return g


def test_a_node_that_cannot_be_shipped_fails_at_compile_naming_it() -> None:
    closure = r"node 'guarded'.*function .*guarded .* refers to closure variable 'lock'"
    with pytest.raises(ShippingError, match=closure + r".*_thread\.lock"):
        _locked_graph().compile(backend="alto", executor="process", start="compile")
    # by default it runs in the app process, as on stock LangGraph: nothing is shipped
    with _locked_graph().compile(backend="alto", start="compile") as app:
        assert app.deployment is None
        assert app.invoke({"log": []}) == {"log": ["x"]}


def test_a_node_that_cannot_be_shipped_fails_the_first_run_naming_it() -> None:
    app = _locked_graph().compile(backend="alto", executor="process")
    with pytest.raises(ShippingError, match="node 'guarded'"):
        app.invoke({"log": []})
    # and inline it runs: the lock never leaves the process
    assert _locked_graph().compile(backend="alto", executor="inline").invoke({"log": []}) == {
        "log": ["x"]
    }


def test_an_input_that_cannot_be_shipped_fails_its_request_naming_node_and_type() -> None:
    class St(TypedDict):
        handle: Any
        log: Annotated[list, operator.add]

    g = StateGraph(St)
    g.add_node("use", lambda s: {"log": ["used"]})
    g.add_edge(START, "use")
    with g.compile(backend="alto", executor="process") as app:
        with pytest.raises(
            ShippingError, match=r"input of node 'use'.*\['handle'\] is a _thread.lock"
        ):
            app.invoke({"handle": threading.Lock(), "log": []})
        assert app.invoke({"handle": 1, "log": []})["log"] == ["used"]  # still serving


def test_a_node_that_raises_fails_its_request_with_that_exception() -> None:
    def maybe(p: dict) -> dict:
        if p["i"] == 1:
            raise KeyError("no such claim")
        return {"log": [p["i"]]}

    g = StateGraph(Log)
    g.add_node("a", lambda s: {"log": []})
    g.add_node("maybe", maybe)
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("maybe", {"i": i}) for i in s["log"] or [0, 1]])
    with g.compile(backend="alto", executor="process") as app:
        with pytest.raises(KeyError, match="no such claim"):
            app.invoke({"log": []})
        assert app.invoke({"log": [0, 2]})["log"] == [0, 2, 0, 2]


# -- lifecycle ----------------------------------------------------------------------------


def _sleeper(seconds: float) -> StateGraph:
    def slow(s: dict) -> dict:
        time.sleep(seconds)
        return {"log": [os.getpid()]}

    g = StateGraph(Log)
    g.add_node("slow", slow)
    g.add_edge(START, "slow")
    return g


def test_processes_start_on_first_run_and_stop_on_close() -> None:
    app = _sleeper(0).compile(backend="alto", executor="process")
    assert app.deployment is not None and not app.deployment.started
    out = app.invoke({"log": []})
    pids = list(app.deployment.pids.values())
    assert out["log"] == [app.deployment.pids[("slow", 0)]]
    assert len(pids) == 2 and all(_pid_alive(p) for p in pids)
    app.close()
    assert _wait_gone(pids) == []
    with pytest.raises(RuntimeError, match="closed"):
        app.invoke({"log": []})


def test_start_at_compile_and_async_with() -> None:
    async def go() -> list[int]:
        async with _sleeper(0).compile(backend="alto", executor="process", start="compile") as app:
            assert app.deployment.started
            pids = list(app.deployment.pids.values())
            await app.ainvoke({"log": []})
        return pids

    assert _wait_gone(asyncio.run(go())) == []


def test_closing_fails_calls_in_flight_instead_of_hanging() -> None:
    app = _sleeper(30).compile(backend="alto", executor="process", start="compile")
    errors: list[BaseException] = []

    def run() -> None:
        try:
            app.invoke({"log": []})
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.3)
    app.close()
    t.join(10)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], StageInstanceLost)


def test_a_killed_worker_fails_its_request_and_is_restarted() -> None:
    with _sleeper(30).compile(backend="alto", executor="process", start="compile") as app:
        victim = app.deployment.pids[("slow", 0)]
        timer = threading.Timer(0.3, os.kill, (victim, signal.SIGKILL))
        timer.start()
        with pytest.raises(
            StageInstanceLost,
            match=r"slow#0 \(pid \d+\) was killed by signal 9 while running node .slow.",
        ):
            app.invoke({"log": []})
        # the instance comes back and serves the next request
        deadline = time.monotonic() + 10
        while (
            app.deployment.pids.get(("slow", 0)) in (victim, None) and time.monotonic() < deadline
        ):
            time.sleep(0.02)
        assert app.deployment.pids.get(("slow", 0)) not in (victim, None)
        assert not _pid_alive(victim)


def test_a_retry_policy_retries_a_call_lost_with_its_worker() -> None:
    marker = "/tmp/alto-test-retry-" + str(os.getpid())

    def once_slow(s: dict) -> dict:
        if not os.path.exists(marker):  # first attempt: hang until killed
            open(marker, "w").close()
            time.sleep(30)
        return {"log": [os.getpid()]}

    g = StateGraph(Log)
    g.add_node("once_slow", once_slow, retry_policy=RetryPolicy(initial_interval=0.05))
    g.add_edge(START, "once_slow")
    try:
        with g.compile(backend="alto", executor="process", start="compile") as app:
            victim = app.deployment.pids[("once_slow", 0)]
            threading.Timer(0.5, os.kill, (victim, signal.SIGKILL)).start()
            out = app.invoke({"log": []})
            assert out["log"] and out["log"][0] != victim
    finally:
        if os.path.exists(marker):
            os.remove(marker)


_APP_SCRIPT = textwrap.dedent(
    """
    import functools, operator, os, sys, time
    from typing import Annotated, TypedDict
    from langgraph.graph import START, StateGraph
    import alto_langgraph

    class Log(TypedDict):
        log: Annotated[list, operator.add]

    @functools.cache  # a script's own cached function: shipped by value
    def table():
        return {"a": os.getpid()}

    g = StateGraph(Log)
    g.add_node("a", lambda s: {"log": [table()["a"]]})
    g.add_edge(START, "a")
    app = g.compile(backend="alto", executor="process", replicas={"a": 2})
    worker = app.invoke({"log": []})["log"][0]
    from alto_langgraph.process.forkserver import fork_server
    pids = [*app.deployment.pids.values(), fork_server().proc.pid]
    assert worker in pids and worker != os.getpid()
    print(" ".join(map(str, pids)), flush=True)
    if sys.argv[1] == "kill":
        time.sleep(60)
    """
)


@pytest.mark.parametrize("how", ["kill", "exit"])
def test_workers_exit_with_the_app(how: str) -> None:
    """At interpreter exit without close(), and at SIGKILL, which leaves the app no
    chance to clean up (the lifeline pipe does it), no process of alto's remains."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _APP_SCRIPT, how], stdout=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        pids = [int(p) for p in line.split()]
        assert len(pids) == 4
        if how == "kill":
            assert all(_pid_alive(p) for p in pids)
            proc.kill()
        assert proc.wait(20) == (-signal.SIGKILL if how == "kill" else 0)
        assert _wait_gone(pids) == []
    finally:
        proc.kill()


def test_a_stage_whose_code_does_not_load_fails_the_deployment_clearly() -> None:
    g = StateGraph(Log)
    g.add_node("a", _Unloadable())
    g.add_edge(START, "a")
    with pytest.raises(DeploymentError, match="stage 'a'.*could not be loaded.*no luck"):
        g.compile(backend="alto", executor="process", start="compile")


class _Unloadable:
    """Pickles fine, fails to unpickle (as a module missing in the worker would)."""

    def __call__(self, s: dict) -> dict:
        return {"log": ["a"]}

    def __reduce__(self) -> Any:
        return (_explode_load, ())


def _explode_load() -> Any:
    from alto_langgraph.process import worker

    if worker.IN_STAGE_INSTANCE:
        raise ImportError("no luck")
    return _Unloadable.__new__(_Unloadable)


# -- configuration ------------------------------------------------------------------------


def test_unknown_stage_names_and_bad_counts_are_clear_errors() -> None:
    g = _sleeper(0)
    with pytest.raises(ValueError, match="no stage named 'serch'.*'slow'"):
        g.compile(backend="alto", executor="process", replicas={"serch": 2})
    with pytest.raises(ValueError, match="stage 'slow' needs between 1 and 1024 instances"):
        g.compile(backend="alto", executor="process", replicas={"slow": 0})
    with pytest.raises(ValueError, match="unknown setting.*statefull"):
        g.compile(backend="alto", executor="process", stages={"slow": {"statefull": True}})
    with pytest.raises(ValueError, match="executor='inline' runs every node in this process"):
        g.compile(backend="alto", executor="inline", replicas={"slow": 2})


def test_config_file_mirrors_the_papers_two_files(tmp_path: Any) -> None:
    path = tmp_path / "pipeline.toml"
    path.write_text(
        textwrap.dedent(
            """
            [stages.agg]          # what each stage needs
            stateful = true
            group_depth = 1

            [instances]           # how many of each
            agg = 3
            a = 1
            """
        )
    )
    g = StateGraph(Log)
    g.add_node("a", lambda s: {"log": []})
    g.add_node("agg", lambda p: {"log": [p]})
    g.add_edge(START, "a")
    app = alto_langgraph.compile(g, config=path, replicas={"agg": 2})  # keywords win
    assert app.plan.stage("agg").replicas == 2
    assert app.plan.stage("agg").routing == "consistent_hash"
    assert app.deployment.specs["agg"] == StageSpec("agg", replicas=2, stateful=True)
    # or as two files, as in the paper: what each stage needs; how many of each
    (tmp_path / "stages.toml").write_text("[stages.agg]\nstateful = true\n")
    (tmp_path / "instances.toml").write_text("[instances]\nagg = 3\n")
    two = alto_langgraph.compile(g, config=[tmp_path / "stages.toml", tmp_path / "instances.toml"])
    assert two.deployment.specs["agg"] == StageSpec("agg", replicas=3, stateful=True)
    bad = tmp_path / "bad.toml"
    bad.write_text("[deploy]\nx = 1\n")
    with pytest.raises(ValueError, match="unknown table.*deploy"):
        alto_langgraph.compile(g, config=bad)


def test_subgraph_nodes_are_stages_named_by_their_path() -> None:
    inner = StateGraph(Log)
    inner.add_node("leaf", lambda s: {"log": [os.getpid()]})
    inner.add_edge(START, "leaf")
    g = StateGraph(Log)
    g.add_node("sub", inner.compile())
    g.add_edge(START, "sub")
    with g.compile(backend="alto", executor="process", replicas={"sub/leaf": 2}) as app:
        assert set(app.deployment.specs) == {"sub/leaf"}
        out = app.invoke({"log": []})
        assert out["log"][0] in {app.deployment.pids[("sub/leaf", i)] for i in range(2)}


def test_gpu_stages_get_their_own_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    specs = {"lm": StageSpec("lm", replicas=2, gpus=1), "cpu": StageSpec("cpu", replicas=1)}
    assert assign_gpus(specs, ["0", "1"]) == {("lm", 0): "0", ("lm", 1): "1", ("cpu", 0): ""}
    with pytest.raises(ValueError, match=r"ask for 2 GPUs in all \('lm' 2 x 1: .*only 1"):
        assign_gpus(specs, ["0"])
    with pytest.warns(RuntimeWarning, match="none are visible"):
        assert assign_gpus(specs, [])[("lm", 0)] == ""

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    g = StateGraph(Log)
    g.add_node("a", lambda s: {"log": []})
    g.add_node("lm", lambda p: {"log": [os.environ["CUDA_VISIBLE_DEVICES"]]})
    g.add_edge(START, "a")
    g.add_conditional_edges("a", _fan_out(4, "lm"))
    with g.compile(
        backend="alto", executor="process", replicas={"lm": 2}, stages={"lm": {"gpus": 1}}
    ) as app:
        assert set(app.invoke({"log": []})["log"]) == {"3", "5"}


def test_tcp_transport_binds_loopback() -> None:
    with _sleeper(0).compile(backend="alto", executor="process", transport="tcp") as app:
        assert app.invoke({"log": []})["log"]
        assert all(a.startswith("tcp://127.0.0.1:") for a in app.deployment._addresses)


def test_an_alto_graph_invoked_inside_a_node_runs_inline_in_the_worker() -> None:
    inner = StateGraph(Log)
    inner.add_node("leaf", lambda s: {"log": [os.getpid()]})
    inner.add_edge(START, "leaf")
    inner_app = inner.compile(
        backend="alto", executor="process"
    )  # process executor, but shipped by value

    g = StateGraph(Log)
    g.add_node("outer", lambda s: {"log": [os.getpid(), *inner_app.invoke({"log": []})["log"]]})
    g.add_edge(START, "outer")
    with g.compile(backend="alto", executor="process") as app:
        outer_pid, inner_pid = app.invoke({"log": []})["log"]
    assert outer_pid == inner_pid == app.deployment.pids[("outer", 0)]
    assert not inner_app.deployment.started  # the app's copy never started a deployment


def test_an_app_dropped_without_close_stops_its_processes() -> None:
    import gc

    app = _sleeper(0).compile(backend="alto", executor="process", start="compile")
    app.invoke({"log": []})
    pids = list(app.deployment.pids.values())
    assert all(_pid_alive(p) for p in pids)
    del app
    gc.collect()
    assert _wait_gone(pids) == []


@pytest.mark.parametrize("style", ["sync", "async"])
def test_interrupt_and_resume_with_a_checkpointer_on_workers(style: str) -> None:
    """interrupt() in a node on a worker process: the instance gets the loop's task's
    resume values, so each resume answers the next interrupt, as on stock."""
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.types import Command, interrupt

    def build() -> StateGraph:
        def ask(s: dict) -> dict:
            first = interrupt("first?")
            second = interrupt("second?")
            return {"log": [first, second, os.getpid()]}

        g = StateGraph(Log)
        g.add_node("ask", ask)
        g.add_edge(START, "ask")
        return g

    def drive(app: Any) -> list[Any]:
        cfg = {"configurable": {"thread_id": "t1"}}
        seen = []
        if style == "sync":
            seen.append(app.invoke({"log": []}, cfg)["__interrupt__"][0].value)
            seen.append(app.invoke(Command(resume="a"), cfg)["__interrupt__"][0].value)
            seen.append(app.invoke(Command(resume="b"), cfg)["log"])
        else:

            async def go() -> None:
                seen.append((await app.ainvoke({"log": []}, cfg))["__interrupt__"][0].value)
                seen.append((await app.ainvoke(Command(resume="a"), cfg))["__interrupt__"][0].value)
                seen.append((await app.ainvoke(Command(resume="b"), cfg))["log"])

            asyncio.run(go())
        return seen

    stock = drive(build().compile(checkpointer=InMemorySaver()))
    assert stock == ["first?", "second?", ["a", "b", os.getpid()]]
    with build().compile(backend="alto", executor="process", checkpointer=InMemorySaver()) as app:
        with warnings.catch_warnings():
            warnings.simplefilter("error", alto_langgraph.AltoFallbackWarning)
            alto = drive(app)
        pid = app.deployment.pids[("ask", 0)]
    assert alto[:2] == stock[:2] and alto[2] == ["a", "b", pid]


@pytest.mark.parametrize("style", ["sync", "async"])
def test_runtime_store_on_workers_is_the_apps_store(style: str) -> None:
    """A node on a worker process reads and writes the run's store: each operation is
    run by the store in the app process (sync node: its sync methods; async node: its
    async ones), and an error there is the node's."""
    from langgraph.runtime import Runtime
    from langgraph.store.memory import InMemoryStore

    def remember(s: dict, runtime: Runtime) -> dict:
        runtime.store.put(("users",), "u1", {"name": "Ann"})
        found = runtime.store.search(("users",))
        return {"log": [runtime.store.get(("users",), "u1").value["name"], len(found), os.getpid()]}

    async def aremember(s: dict, runtime: Runtime) -> dict:
        await runtime.store.aput(("users",), "u1", {"name": "Ann"})
        found = await runtime.store.asearch(("users",))
        item = await runtime.store.aget(("users",), "u1")
        return {"log": [item.value["name"], len(found), os.getpid()]}

    g = StateGraph(Log)
    g.add_node("remember", remember if style == "sync" else aremember)
    g.add_edge(START, "remember")
    store = InMemoryStore()
    with g.compile(backend="alto", executor="process", store=store) as app:
        with warnings.catch_warnings():
            warnings.simplefilter("error", alto_langgraph.AltoFallbackWarning)
            if style == "sync":
                out = app.invoke({"log": []})
            else:
                out = asyncio.run(app.ainvoke({"log": []}))
        pid = app.deployment.pids[("remember", 0)]
    assert out == {"log": ["Ann", 1, pid]} and pid != os.getpid()
    assert store.get(("users",), "u1").value == {"name": "Ann"}


def test_a_sync_store_call_in_an_async_node_on_a_worker_is_a_clear_error() -> None:
    from langgraph.runtime import Runtime
    from langgraph.store.memory import InMemoryStore

    async def reads(s: dict, runtime: Runtime) -> dict:
        return {"log": [runtime.store.get(("users",), "u1")]}

    g = StateGraph(Log)
    g.add_node("reads", reads)
    g.add_edge(START, "reads")
    with g.compile(backend="alto", executor="process", store=InMemoryStore()) as app:
        with pytest.raises(RuntimeError, match="async methods"):
            asyncio.run(app.ainvoke({"log": []}))


class Decision(BaseModel):
    approved: bool


def test_an_invalid_resume_on_a_worker_fails_as_on_stock() -> None:
    """A resume value that fails its response_schema in a node on a worker: LangGraph's
    mark on the ValidationError travels back, so the other answered task still
    finishes and only the invalid answer is asked again, as on stock."""
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.errors import is_invalid_resume
    from langgraph.types import Command, interrupt
    from pydantic import ValidationError

    def send(s: dict) -> dict:
        interrupt("send?", response_schema=Decision)
        return {"log": ["sent"]}

    def check(s: dict) -> dict:
        interrupt("check?", response_schema=Decision)
        return {"log": ["checked"]}

    def run(**kwargs: Any) -> tuple[bool, list[str]]:
        g = StateGraph(Log)
        g.add_node("send", send)
        g.add_node("check", check)
        g.add_edge(START, "send")
        g.add_edge(START, "check")
        with contextlib.ExitStack() as stack:
            app = g.compile(checkpointer=InMemorySaver(), **kwargs)
            if kwargs:
                stack.enter_context(app)
            cfg = {"configurable": {"thread_id": "t"}}
            app.invoke({"log": []}, cfg)
            ids = {i.value: i.id for i in app.get_state(cfg).interrupts}
            answers = {ids["send?"]: {"approved": True}, ids["check?"]: {"approved": "nope"}}
            with pytest.raises(ValidationError) as raised:
                app.invoke(Command(resume=answers), cfg)
            return is_invalid_resume(raised.value), [i.value for i in app.get_state(cfg).interrupts]

    assert run(backend="alto", executor="process") == run() == (True, ["check?"])


# -- found by review: failures that must not hang, values that must arrive intact --------


def test_a_stage_that_keeps_crashing_fails_fast_instead_of_hanging() -> None:
    """Each request fails with the crash; restarts back off but never give the stage
    up: the wait for the next instance stays under ``MAX_BACKOFF``."""
    from alto_langgraph.process.supervision import MAX_BACKOFF

    g = StateGraph(Log)
    g.add_node("die", lambda s: os._exit(1))
    g.add_edge(START, "die")
    with g.compile(backend="alto", executor="process", start="compile") as app:
        pids, took = set(), []
        for _ in range(8):
            deadline = time.monotonic() + MAX_BACKOFF + 1.0
            while app.deployment.pids.get(("die", 0)) is None and time.monotonic() < deadline:
                time.sleep(0.01)
            pids.add(app.deployment.pids.get(("die", 0)))
            t0 = time.monotonic()
            with pytest.raises(
                StageInstanceLost, match="died with exit code 1 while running node 'die'"
            ):
                app.invoke({"log": []})
            took.append(time.monotonic() - t0)
    assert None not in pids and len(pids) == 8  # restarted every time
    assert max(took) < MAX_BACKOFF + 1.0, took


def test_an_instance_dying_while_it_loads_fails_the_start_clearly() -> None:
    g = StateGraph(Log)
    g.add_node("a", _DiesWhileLoading())
    g.add_edge(START, "a")
    t0 = time.monotonic()
    with pytest.raises(DeploymentError, match="before it was ready.*not restarted"):
        g.compile(backend="alto", executor="process", start="compile")
    assert time.monotonic() - t0 < 30  # restarts, then gives up: not the start timeout


class _DiesWhileLoading:
    def __call__(self, s: dict) -> dict:
        return {"log": ["a"]}

    def __reduce__(self) -> Any:
        return (_die_in_worker, ())


def _die_in_worker() -> Any:
    from alto_langgraph.process import worker

    if worker.IN_STAGE_INSTANCE:
        os._exit(7)  # no FAILED message: as a crash in a C extension would
    return _DiesWhileLoading.__new__(_DiesWhileLoading)


def _delay_graph() -> StateGraph:
    async def wait(s: dict) -> dict:
        await asyncio.sleep(s["log"][0] if s["log"] else 0)
        return {"log": ["done"]}

    g = StateGraph(Log)
    g.add_node("wait", wait)
    g.add_edge(START, "wait")
    return g


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_an_abandoned_event_loop_does_not_break_the_app() -> None:
    with _delay_graph().compile(backend="alto", executor="process", start="compile") as app:
        loop = asyncio.new_event_loop()
        loop.create_task(app.ainvoke({"log": [0.3]}))
        loop.run_until_complete(asyncio.sleep(0.1))  # the call is in flight
        loop.close()  # its caller is gone before the result comes back
        time.sleep(0.4)
        assert asyncio.run(app.ainvoke({"log": []})) == {"log": ["done"]}
        del loop
        import gc

        gc.collect()  # the abandoned task's complaints belong to this test


class _CodedError(Exception):
    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code


def test_an_exception_with_its_own_init_arrives_as_itself() -> None:
    def fail(s: dict) -> dict:
        raise _CodedError(404, "not found")

    g = StateGraph(Log)
    g.add_node("fail", fail)
    g.add_edge(START, "fail")
    with g.compile(backend="alto", executor="process") as app:
        with pytest.raises(_CodedError, match="404: not found") as info:
            app.invoke({"log": []})
    assert info.value.code == 404


def test_module_constants_keep_identity_and_module_state_travels_by_value() -> None:
    from langgraph.pregel._read import DEFAULT_BOUND

    from alto_langgraph.process import shipping

    assert shipping.loads(shipping.dumps_value(DEFAULT_BOUND, "x")) is DEFAULT_BOUND
    import langchain_core.globals as lc_globals

    state = {"cache": [1, 2]}
    lc_globals._alto_test_state = state  # lower case: module state, not a constant
    try:
        copy = shipping.loads(shipping.dumps_value(state, "x"))
        assert copy == state and copy is not state
    finally:
        del lc_globals._alto_test_state


def test_heartbeats_refresh_the_idle_timeout_across_processes() -> None:
    from langgraph.runtime import Runtime
    from langgraph.types import TimeoutPolicy

    async def beating(s: dict, runtime: Runtime) -> dict:
        for _ in range(8):  # 0.8 s in all, never 0.3 s without a heartbeat
            await asyncio.sleep(0.1)
            runtime.heartbeat()
        return {"log": ["finished"]}

    g = StateGraph(Log)
    policy = TimeoutPolicy(idle_timeout=0.3, refresh_on="heartbeat")
    g.add_node("beating", beating, timeout=policy)
    g.add_edge(START, "beating")
    stock = asyncio.run(g.compile().ainvoke({"log": []}))
    with g.compile(backend="alto", executor="process") as app:
        assert asyncio.run(app.ainvoke({"log": []})) == stock == {"log": ["finished"]}


def test_node_output_reaches_a_piped_stdout() -> None:
    script = textwrap.dedent(
        """
        import operator
        from typing import Annotated, TypedDict
        from langgraph.graph import START, StateGraph
        import alto_langgraph

        class Log(TypedDict):
            log: Annotated[list, operator.add]

        def shout(s):
            print("hello from the node")
            return {"log": ["a"]}

        g = StateGraph(Log)
        g.add_node("shout", shout)
        g.add_edge(START, "shout")
        app = g.compile(backend="alto", executor="process")
        app.invoke({"log": []})
        app.close()
        print("app done")
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["hello from the node", "app done"]


def test_losing_the_fork_server_fails_calls_and_close_still_stops_everything() -> None:
    with _delay_graph().compile(backend="alto", executor="process", start="compile") as app:
        pids = list(app.deployment.pids.values())
        server = fork_server()
        threading.Timer(0.3, server.proc.kill).start()
        with pytest.raises(StageInstanceLost, match="no longer supervised"):
            asyncio.run(app.ainvoke({"log": [5]}))  # its node is async
    assert _wait_gone(pids) == []
    # the next deployment gets a new fork server
    with _sleeper(0).compile(backend="alto", executor="process") as app:
        assert app.invoke({"log": []})["log"]


@pytest.mark.parametrize("executor", ["inline", "process"])
def test_push_message_streams_and_writes_the_message_once(executor: str) -> None:
    """push_message() emits through the caller's messages handler and writes to the
    caller's task; the node's output holding the same message is not emitted again."""
    from langchain_core.messages import AIMessage
    from langgraph.graph.message import push_message

    def talk(s: dict) -> dict:
        push_message(AIMessage("pushed", id="p1"))
        return {"messages": [AIMessage("returned", id="r1")]}

    def run(app: Any) -> tuple[list[Any], Any]:
        chunks, final = [], None
        for mode, data in app.stream({"messages": []}, stream_mode=["messages", "values"]):
            if mode == "messages":
                chunks.append((data[0].content, data[1]["langgraph_node"]))
            else:
                final = data
        return chunks, final

    def build() -> StateGraph:
        g = StateGraph(Msgs)
        g.add_node("talk", talk)
        g.add_edge(START, "talk")
        return g

    stock = run(build().compile())
    with build().compile(backend="alto", executor=executor) as app:
        assert run(app) == stock
    assert stock[0] == [("pushed", "talk"), ("returned", "talk")]
    assert [m.content for m in stock[1]["messages"]] == ["pushed", "returned"]


def test_an_exception_in_a_node_input_arrives_as_itself() -> None:
    class Holder(TypedDict):
        err: Any
        log: Annotated[list, operator.add]

    g = StateGraph(Holder)
    g.add_node("read", lambda s: {"log": [type(s["err"]).__name__, s["err"].code, str(s["err"])]})
    g.add_edge(START, "read")
    with g.compile(backend="alto", executor="process") as app:
        out = app.invoke({"err": _CodedError(500, "boom"), "log": []})
    assert out["log"] == ["_CodedError", 500, "500: boom"]


def test_checkpoint_configs_stream_without_alto_keys() -> None:
    from langgraph.checkpoint.memory import InMemorySaver

    def configs(app: Any) -> list[list[str]]:
        cfg = {"configurable": {"thread_id": "t"}}
        return [
            sorted(chunk["config"]["configurable"])
            for chunk in app.stream({"log": []}, cfg, stream_mode="checkpoints")
        ]

    stock = configs(_sleeper(0).compile(checkpointer=InMemorySaver()))
    with _sleeper(0).compile(
        backend="alto", executor="process", checkpointer=InMemorySaver()
    ) as app:
        assert configs(app) == stock
    assert stock and all(keys == ["checkpoint_id", "checkpoint_ns", "thread_id"] for keys in stock)


def test_the_graph_draws_as_on_stock_langgraph() -> None:
    g = StateGraph(Log)
    g.add_node("a", lambda s: {"log": []})
    g.add_node("work", _sleeper(0).compile())
    g.add_edge(START, "a")
    g.add_conditional_edges("a", _fan_out(2, "work"), ["work"])
    stock = g.compile().get_graph(xray=True)
    with g.compile(backend="alto", executor="process") as app:
        drawn = app.get_graph(xray=True)
        assert drawn.draw_mermaid() == stock.draw_mermaid()
        assert drawn.to_json()["nodes"][1] == stock.to_json()["nodes"][1]  # node 'a'
        from alto_langgraph.process.remote import RemoteNode

        assert isinstance(app.nodes["a"].bound, RemoteNode)  # what runs is unchanged


def test_killing_the_router_under_load_fails_calls_then_redeploys() -> None:
    """Every request ends (answered, or StageInstanceLost), and the app redeploys: the
    old deployment's exits must not tear down or confuse the new one."""
    with _sleeper(0.002).compile(
        backend="alto", executor="process", replicas={"slow": 2}, start="compile"
    ) as app:
        stop = time.monotonic() + 3
        outcomes: list[str] = []

        def hammer() -> None:
            while time.monotonic() < stop:
                try:
                    app.invoke({"log": []})
                    outcomes.append("ok")
                except StageInstanceLost as exc:
                    assert "router" in str(exc)
                    outcomes.append("lost")

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        for _ in range(2):
            time.sleep(1)
            os.kill(app.deployment.pids["router"], signal.SIGKILL)
        for t in threads:
            t.join(20)
        assert not any(t.is_alive() for t in threads)
        assert "lost" in outcomes and outcomes.count("ok") > 10
        assert app.invoke({"log": []})["log"]  # a fresh deployment serves


def test_builtin_exceptions_keep_their_fields_and_sys_exit_ends_only_its_call() -> None:
    def fail(s: dict) -> dict:
        if s["log"] == ["exit"]:
            raise SystemExit(3)
        b"caf\xe9".decode("utf-8")
        return {"log": ["unreachable"]}

    g = StateGraph(Log)
    g.add_node("fail", fail)
    g.add_edge(START, "fail")
    with g.compile(backend="alto", executor="process") as app:
        with pytest.raises(UnicodeDecodeError) as info:
            app.invoke({"log": []})
        assert info.value.reason == "unexpected end of data" and info.value.object == b"caf\xe9"
        with pytest.raises(SystemExit) as stop:
            app.invoke({"log": ["exit"]})
        assert stop.value.code == 3
        with pytest.raises(UnicodeDecodeError):  # the instance still serves
            app.invoke({"log": []})


def test_a_forked_child_exiting_leaves_the_parents_deployment_alone() -> None:
    with _sleeper(0).compile(backend="alto", executor="process", start="compile") as app:
        pids = list(app.deployment.pids.values())
        child = os.fork()
        if child == 0:  # what the child's exit would run: the deployment's finalizer
            try:
                app.deployment._finalizer()
            finally:
                os._exit(0)
        os.waitpid(child, 0)
        time.sleep(0.2)
        assert all(_pid_alive(p) for p in pids)
        assert app.invoke({"log": []})["log"] == [app.deployment.pids[("slow", 0)]]


def test_a_scripts_own_sentinel_keeps_its_identity_in_the_worker() -> None:
    script = textwrap.dedent(
        """
        import operator
        from typing import Annotated, TypedDict
        from langgraph.graph import START, StateGraph
        import alto_langgraph

        MISSING = object()

        class S(TypedDict):
            value: object
            log: Annotated[list, operator.add]

        g = StateGraph(S)
        g.add_node("check", lambda s: {"log": [s["value"] is MISSING]})
        g.add_edge(START, "check")
        with g.compile(backend="alto", executor="process") as app:
            print(app.invoke({"value": MISSING, "log": []})["log"])
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[True]"


def test_alto_sleeps_nowhere_an_app_patching_time_sleep_would_see() -> None:
    """Tests patch time.sleep to watch their retries' backoff (LangGraph's own do):
    alto's threads in the app process must not call it while a node runs remotely."""
    from unittest import mock

    def slow(state: dict) -> dict:
        import time as worker_time

        worker_time.sleep(0.3)  # in the worker: the app's patch does not reach it
        return {"log": ["slow"]}

    g = StateGraph(Log)
    g.add_node("slow", slow)
    g.add_edge(START, "slow")
    with g.compile(backend="alto", executor="process", start="compile") as app:
        with mock.patch("time.sleep") as sleep:
            assert app.invoke({"log": []}) == {"log": ["slow"]}
        assert sleep.call_args_list == []


_PEAK: dict[str, Any] = {}


def _count_concurrent(payload: dict) -> dict:
    """How many calls of this node run at once in this process (a sync node)."""
    if not _PEAK:
        _PEAK.update(lock=threading.Lock(), now=0, peak=0)
    with _PEAK["lock"]:
        _PEAK["now"] += 1
        _PEAK["peak"] = max(_PEAK["peak"], _PEAK["now"])
    time.sleep(0.2)
    with _PEAK["lock"]:
        _PEAK["now"] -= 1
        return {"log": [_PEAK["peak"]]}


def test_a_process_stage_runs_as_many_sync_calls_at_once_as_stock_would() -> None:
    """Stock LangGraph gives each request a thread pool of its own; an instance serving
    several requests runs as many sync node calls at once (``threads``, default 64)."""
    import concurrent.futures

    g = StateGraph(Log)
    g.add_node("work", _count_concurrent)
    g.add_conditional_edges(START, lambda s: [Send("work", {}) for _ in range(8)], ["work"])

    def peak(app: Any) -> int:
        app.invoke({"log": []})  # warm: the processes are up
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            return max(max(out["log"]) for out in pool.map(app.invoke, [{"log": []}] * 3))

    _PEAK.clear()
    stock = peak(g.compile())
    with g.compile(backend="alto", executor="process") as app:
        assert peak(app) >= stock > 6  # more than one request's pool
    with g.compile(backend="alto", stages={"work": {"threads": 2}}) as app:
        assert peak(app) == 2


def _sync_impl(state: dict) -> dict:
    return {"log": ["sync"]}


async def _async_impl(state: dict) -> dict:
    return {"log": ["async"]}


@pytest.mark.parametrize("executor", ["auto", "inline", "process"])
def test_a_node_with_both_implementations_runs_the_one_the_caller_asked_for(
    executor: str,
) -> None:
    """invoke/stream run a node's sync code, ainvoke/astream its async code, as on
    stock LangGraph (LangChain's create_agent model node and ToolNode have both)."""
    from langchain_core.runnables import RunnableLambda

    g = StateGraph(Log)
    g.add_node("n", RunnableLambda(_sync_impl, afunc=_async_impl))
    g.add_conditional_edges(START, lambda s: [Send("n", {"log": []})], ["n"])
    g.add_edge(START, "n")
    stock = g.compile()

    async def both(app: Any) -> list[Any]:
        updates = [c async for c in app.astream({"log": []}, stream_mode="updates")]
        return [(await app.ainvoke({"log": []}))["log"], updates]

    def runs(app: Any) -> list[Any]:
        updates = list(app.stream({"log": []}, stream_mode="updates"))
        return [app.invoke({"log": []})["log"], updates, *asyncio.run(both(app))]

    want = runs(stock)
    assert want[0] == ["sync", "sync"] and want[2] == ["async", "async"]
    with g.compile(backend="alto", executor=executor) as app:
        assert runs(app) == want


def test_a_finalizer_that_runs_during_a_spawn_does_not_deadlock(monkeypatch: Any) -> None:
    """The garbage collector may finalize a dropped app's deployment at any allocation,
    e.g. while a spawn message is being pickled for the fork server; the finalizer
    sends kill commands to the same server. Found by LangGraph's suite under the
    process executor, where the two took one lock and the run hung. Here the
    finalizer is made to run at exactly that point."""
    from alto_langgraph.process import forkserver

    server = fork_server()
    dumps = forkserver.pickle.dumps
    fired = []

    def dumps_with_a_finalizer(msg: Any, *args: Any, **kwargs: Any) -> bytes:
        if msg[0] == "spawn" and not fired:
            fired.append(True)
            server.kill(2**22 + 7)  # what a deployment's finalizer does (no such child)
        return dumps(msg, *args, **kwargs)

    monkeypatch.setattr(forkserver.pickle, "dumps", dumps_with_a_finalizer)
    outcome: list[Any] = []

    def start() -> None:
        app = _sleeper(0).compile(backend="alto", executor="process", start="compile")
        outcome.append(app.invoke({"log": []})["log"] == [app.deployment.pids[("slow", 0)]])
        app.close()

    worker = threading.Thread(target=start, daemon=True)
    worker.start()
    worker.join(60)
    assert fired and outcome == [True], "a spawn with a finalizer inside it hung"
