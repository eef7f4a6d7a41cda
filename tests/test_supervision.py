"""Supervision that heals: restarts that back off instead of giving a stage up, stuck
instances replaced, workers recycled by calls or memory, and pids and stats that
show live instances only."""

from __future__ import annotations

import asyncio
import operator
import os
import signal
import threading
import time
from typing import Annotated, Any

import pytest
from langgraph.graph import START, StateGraph
from langgraph.types import RetryPolicy, Send
from typing_extensions import TypedDict

from alto_langgraph.errors import StageInstanceLost
from alto_langgraph.process.deployment import _pid_alive
from alto_langgraph.process.supervision import MAX_BACKOFF, backoff
from alto_langgraph.process.worker import resident_mb


class Log(TypedDict):
    log: Annotated[list, operator.add]


def _one_node(fn: Any, **kwargs: Any) -> StateGraph:
    g = StateGraph(Log)
    g.add_node("work", fn, **kwargs)
    g.add_edge(START, "work")
    return g


def _pid_of(app: Any, key: tuple[str, int], timeout: float = 5.0) -> int:
    """The pid of a live instance (waiting for a restart to finish)."""
    deadline = time.monotonic() + timeout
    while (pid := app.deployment.pids.get(key)) is None:
        assert time.monotonic() < deadline, f"{key} did not come back within {timeout} s"
        time.sleep(0.01)
    return pid


def test_backoff_doubles_and_is_capped() -> None:
    waits = [backoff(n) for n in range(1, 10)]
    assert waits[0] == 0.0  # the first restart is immediate
    assert all(b >= a for a, b in zip(waits, waits[1:], strict=False))
    assert waits[-1] == MAX_BACKOFF <= 1.0


def _pid_node(s: dict) -> dict:
    return {"log": [os.getpid()]}


@pytest.mark.parametrize("retry", [True, False])
def test_a_kill_storm_never_takes_the_stage_down(retry: bool) -> None:
    """20 kills, one every 50 ms, while requests run: with a RetryPolicy every request
    is answered; without, requests fail only with the kill's reason, and the stage is
    never without an instance for longer than the backoff's cap plus a start."""
    policy = RetryPolicy(max_attempts=50, initial_interval=0.01, jitter=False) if retry else None
    g = _one_node(_pid_node, retry_policy=policy)
    with g.compile(backend="alto", executor="process", start="compile") as app:
        stop = threading.Event()
        gaps: list[float] = []

        def storm() -> None:
            for _ in range(20):
                t0 = time.monotonic()
                pid = _pid_of(app, ("work", 0), timeout=10)
                gaps.append(time.monotonic() - t0)
                os.kill(pid, signal.SIGKILL)
                time.sleep(0.05)
            stop.set()

        killer = threading.Thread(target=storm)
        killer.start()
        answered, failed = 0, []
        while not stop.is_set():
            try:
                assert app.invoke({"log": []})["log"]
                answered += 1
            except StageInstanceLost as exc:
                failed.append(str(exc))
        killer.join()
        if retry:
            assert not failed
        assert all("was killed by signal 9 while running node 'work'" in f for f in failed)
        assert max(gaps) < MAX_BACKOFF + 1.0, gaps  # never down for longer
        assert app.invoke({"log": []})["log"]  # and it still serves
        assert answered > 0


async def _blocks_the_loop(s: dict) -> dict:
    if not s["log"]:
        time.sleep(60)  # a sync call in async code: the instance's event loop stops
    return {"log": [os.getpid()]}


def test_an_instance_whose_loop_is_blocked_is_replaced() -> None:
    g = _one_node(_blocks_the_loop)
    with g.compile(
        backend="alto", executor="process", start="compile", stages={"work": {"stuck_after": 1.0}}
    ) as app:
        victim = app.deployment.pids[("work", 0)]
        t0 = time.monotonic()
        with pytest.raises(StageInstanceLost, match="was stuck .its event loop did not answer"):
            asyncio.run(app.ainvoke({"log": []}))
        assert time.monotonic() - t0 < 5.0  # replaced within the target
        assert not _pid_alive(victim)
        out = asyncio.run(app.ainvoke({"log": ["go"]}))
        assert out["log"][-1] == _pid_of(app, ("work", 0)) != victim


def _holds_its_thread(s: dict) -> dict:
    if not s["log"]:
        time.sleep(60)  # its caller gives up; the thread cannot be stopped
    return {"log": [os.getpid()]}


def test_an_instance_whose_threads_are_all_abandoned_is_replaced() -> None:
    g = _one_node(_holds_its_thread)
    with g.compile(
        backend="alto", executor="process", start="compile", stages={"work": {"threads": 2}}
    ) as app:
        victim = app.deployment.pids[("work", 0)]

        async def give_up() -> None:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(app.ainvoke({"log": []}), 0.3)

        for _ in range(2):
            asyncio.run(give_up())
        deadline = time.monotonic() + 5.0
        while _pid_alive(victim):
            assert time.monotonic() < deadline, "the starved instance was not replaced"
            time.sleep(0.05)
        assert app.invoke({"log": ["go"]})["log"][-1] == _pid_of(app, ("work", 0)) != victim


def _fan_out(n: int) -> StateGraph:
    g = StateGraph(Log)
    g.add_node("a", lambda s: {"log": []})
    g.add_node("work", _pid_node)
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("work", {}) for _ in range(n)])
    return g


def test_max_calls_per_instance_recycles_without_failing_a_call() -> None:
    with _fan_out(1).compile(
        backend="alto",
        executor="process",
        start="compile",
        stages={"work": {"max_calls_per_instance": 3}},
    ) as app:
        served = [app.invoke({"log": []})["log"][0] for _ in range(9)]
    # three calls per instance, each instance a new process
    assert [served[i] == served[i - 1] for i in range(1, 9)] == [
        True, True, False, True, True, False, True, True,
    ]  # fmt: skip
    assert len(set(served)) == 3


_hoard: list[bytes] = []


def _grows(s: dict) -> dict:
    _hoard.append(b"x" * (40 << 20))  # a leak: 40 MiB a call, never freed
    return {"log": [os.getpid()]}


def test_a_memory_limit_recycles_a_leaking_worker() -> None:
    # the limit: what an instance of this stage takes at start, plus 100 MiB
    with _one_node(_grows).compile(backend="alto", executor="process", start="compile") as app:
        limit = resident_mb(app.deployment.pids[("work", 0)]) + 100
    g = _one_node(_grows)
    with g.compile(
        backend="alto",
        executor="process",
        start="compile",
        stages={"work": {"max_memory_mb": limit}},
    ) as app:
        served = []
        for _ in range(12):
            served.append(app.invoke({"log": []})["log"][0])
            time.sleep(0.1)  # a pulse reports the memory
    assert len(set(served)) >= 2  # recycled at least once, and no call failed


def test_pids_and_stats_show_live_instances_only() -> None:
    with _one_node(_pid_node).compile(
        backend="alto", executor="process", start="compile", replicas={"work": 2}
    ) as app:
        victim = app.deployment.pids[("work", 1)]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while app.deployment.pids.get(("work", 1)) in (victim, None):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert victim not in app.deployment.pids.values()
        assert all(_pid_alive(p) for p in app.deployment.pids.values())
        deadline = time.monotonic() + 5
        while app.deployment.stats()["live"]["work"] != ["work#0", "work#1"]:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        for _ in range(3):
            app.invoke({"log": []})
        time.sleep(0.6)  # a pulse from each
        instances = app.deployment.stats()["instances"]
        assert {i: r["pid"] for i, r in instances.items() if i.startswith("work")} == {
            "work#0": app.deployment.pids[("work", 0)],
            "work#1": app.deployment.pids[("work", 1)],
        }
        assert sum(r["calls"] for i, r in instances.items() if i.startswith("work")) == 3
        assert all(r["rss_mb"] > 10 and r["abandoned_threads"] == 0 for r in instances.values())


async def _slow(s: dict) -> dict:
    await asyncio.sleep(0.5)
    return {"log": [os.getpid()]}


def test_an_idle_death_is_not_reported_as_running_a_node() -> None:
    """A call that waits for the stage while its only instance restarts is served by
    the next instance; only the calls an instance held hear "while running node"."""
    g = _fan_out(1)
    with g.compile(backend="alto", executor="process", start="compile") as app:
        idle = app.deployment.pids[("work", 0)]
        os.kill(idle, signal.SIGKILL)
        # once the app knows (a call sent before that goes to the dead process, and
        # fails as lost while running it: the router cannot tell it never began)
        while app.deployment.pids.get(("work", 0)) == idle:
            time.sleep(0.001)
        out = app.invoke({"log": []})  # sent while the instance was dead or restarting
        assert out["log"] == [_pid_of(app, ("work", 0))]
        assert out["log"][0] != idle


# -- backpressure ---------------------------------------------------------------------


def _slow_fan_out(n: int, **node: Any) -> StateGraph:
    def slow(p: dict) -> dict:
        time.sleep(0.2)
        return {"log": [p["i"]]}

    g = StateGraph(Log)
    g.add_node("a", lambda s: {"log": []})
    g.add_node("work", slow, **node)
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("work", {"i": i}) for i in range(n)])
    return g


def test_max_pending_refuses_at_once_and_a_retry_policy_waits_for_room() -> None:
    from alto_langgraph.errors import StageOverloaded

    limits = {"stages": {"work": {"max_pending": 2}}, "start": "compile"}
    with _slow_fan_out(5).compile(backend="alto", executor="process", **limits) as app:
        t0 = time.monotonic()
        with pytest.raises(StageOverloaded, match=r"stage 'work' is overloaded.*max_pending=2"):
            app.invoke({"log": []})
        assert time.monotonic() - t0 < 1.0  # refused, not queued
        assert app.deployment.stats()["outstanding"]["work#0"] <= 2
    retry = RetryPolicy(max_attempts=100, initial_interval=0.05, jitter=False, backoff_factor=1)
    with _slow_fan_out(5, retry_policy=retry).compile(
        backend="alto", executor="process", **limits
    ) as app:
        assert sorted(app.invoke({"log": []})["log"]) == [0, 1, 2, 3, 4]


def test_a_call_cancelled_as_it_arrives_is_not_held_forever() -> None:
    """A CANCEL read in the same batch as its TASK cancels the call's task before it
    begins; the instance still answers it, so the router stops counting it (a call
    counted forever would hold a ``max_pending`` slot and block a recycle)."""
    with _one_node(_pid_node).compile(backend="alto", executor="process", start="compile") as app:
        dep = app.deployment
        for _ in range(50):
            call_id = dep.call("work", b"never opened", b"", lambda *a: None)
            dep.cancel(call_id)
        deadline = time.monotonic() + 5
        while dep.stats()["outstanding"].get("work#0", 0):
            assert time.monotonic() < deadline, dep.stats()["outstanding"]
            time.sleep(0.02)
        assert app.invoke({"log": []})["log"] == [dep.pids[("work", 0)]]


def test_a_task_for_a_stage_with_no_live_instance_fails_after_a_while(tmp_path: Any) -> None:
    """It waits for an instance (one starting or restarting) for ``unavailable_after``
    seconds (120 in a deployment), then fails saying why, and the stage goes on: a
    task that comes once an instance is up is served."""
    from router_harness import live_router

    from alto_langgraph.process import wire

    with live_router(tmp_path=tmp_path, limits={"unavailable_after": 0.5}) as router:
        app = router.app()
        sent = time.monotonic()
        app.send_multipart([wire.envelope(wire.TASK, b"1", b"s"), b"input"])
        assert app.poll(5000), "the waiting task was never failed"
        env, why = app.recv_multipart()
        waited = time.monotonic() - sent
        assert wire.decode(env)[:2] == (wire.LOST, b"1")
        assert why.decode() == (
            "alto: no instance of stage 's' was available for 0.5 s "
            "(no instance of it has started yet)"
        )
        assert 0.5 <= waited < 2.0, waited
        instance = router.instance(wire.instance_id("s", 0))
        router.wait_live(1)
        app.send_multipart([wire.envelope(wire.TASK, b"2", b"s"), b"input"])
        assert instance.poll(5000)
        client, env, _ = instance.recv_multipart()
        assert wire.decode(env).call_id == b"2"


def test_max_pending_bounds_the_calls_waiting_for_a_stage_to_come_up(tmp_path: Any) -> None:
    """No instance is live: the router holds up to max_pending calls per instance the
    stage should have; one more fails at once with StageOverloaded, and those held are
    served when the instance comes up."""
    from router_harness import live_router

    from alto_langgraph.errors import StageOverloaded
    from alto_langgraph.process import shipping, wire

    with live_router(tmp_path=tmp_path, limits={"max_pending": 2}) as router:
        app = router.app()
        for call in (b"1", b"2", b"3"):
            app.send_multipart([wire.envelope(wire.TASK, call, b"s"), b"input"])
        assert app.poll(5000)
        env, error = app.recv_multipart()
        assert wire.decode(env)[:2] == (wire.ERROR, b"3")
        exc = shipping.loads(error)
        assert isinstance(exc, StageOverloaded) and "2 calls already wait" in str(exc)
        assert not app.poll(200)  # the other two wait
        instance = router.instance(wire.instance_id("s", 0))
        got = []
        while len(got) < 2 and instance.poll(5000):
            got.append(wire.decode(instance.recv_multipart()[1]).call_id)
        assert got == [b"1", b"2"]
