"""Stages on Ray: a real two-node Ray cluster on this machine (``tests/services/ray.sh``).

The head has the custom resource ``node_a``, the second node ``node_b``. Stages are
placed on either by resources; what ran where is read from the nodes themselves (each
returns its Ray node id and pid). Tests that kill an actor or a node check that the
calls it held fail (or are retried) as on the process executor, and that the stage
comes back. A local cluster (no ``ray_address``) is tested in subprocesses: Ray allows
one cluster per process, and these must not share this one's.
"""

from __future__ import annotations

import asyncio
import operator
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import pytest
from graphs import CASES
from harness import assert_same
from langgraph.graph import START, StateGraph
from langgraph.types import RetryPolicy, Send
from typing_extensions import TypedDict

import alto_langgraph
from alto_langgraph import fold, streaming
from alto_langgraph.errors import StageInstanceLost
from alto_langgraph.process import ray_actors
from alto_langgraph.process.deployment import _pid_alive

ray = pytest.importorskip("ray")  # the `ray` extra; `make test` installs it

ROOT = Path(__file__).parent
SCRIPT = ROOT / "services" / "ray.sh"
RAY_ROOT = "/tmp/alto-ray-test"
#: per actor: a sliver of a node's resource, so several instances fit on one node
ON_A = {"resources": {"node_a": 0.01}, "num_cpus": 0}
ON_B = {"resources": {"node_b": 0.01}, "num_cpus": 0}


def _script(*args: str) -> str:
    env = dict(os.environ, RAY=str(Path(sys.executable).parent / "ray"), ALTO_RAY_ROOT=RAY_ROOT)
    done = subprocess.run(
        [str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    return done.stdout.strip()


def _nodes_by_resource() -> dict[str, str]:
    """``node_a``/``node_b`` -> the id of the live node that has it."""
    out = {}
    for node in ray.nodes():
        if node["Alive"]:
            for name in ("node_a", "node_b"):
                if name in node["Resources"]:
                    out[name] = node["NodeID"]
    return out


def _wait_for_nodes(timeout: float = 60.0) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while (nodes := _nodes_by_resource()).keys() != {"node_a", "node_b"}:
        assert time.monotonic() < deadline, f"the test cluster has only {nodes}"
        time.sleep(0.2)
    return nodes


@pytest.fixture(scope="module")
def cluster() -> Any:
    """The two-node cluster's address; connected, both nodes up. Stopped afterwards."""
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=f"{RAY_ROOT}/token")
    from ray._raylet import Config

    Config.initialize("")  # ray, imported above, reads the auth mode again
    address = _script("start")
    try:
        ray.init(address=address, configure_logging=False, log_to_driver=False)
        _wait_for_nodes()
        yield address
    finally:
        ray.shutdown()
        _script("stop")
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class Log(TypedDict):
    log: Annotated[list, operator.add]


def _where(tag: str) -> Any:
    def run(s: dict) -> dict:
        import ray as ray_in_actor

        node = ray_in_actor.get_runtime_context().get_node_id()
        return {"log": [(tag, node, os.getpid())]}

    return run


def _two_stage_graph() -> StateGraph:
    g = StateGraph(Log)
    g.add_node("a", _where("a"))
    g.add_node("b", _where("b"))
    g.add_edge(START, "a")
    g.add_edge("a", "b")
    return g


# -- placement ----------------------------------------------------------------------------


def test_stages_run_on_the_nodes_their_resources_name(cluster: str) -> None:
    """The README's two-node layout: ``retrieve`` pinned to node_b by a resource,
    ``answer`` spread over both nodes; nothing outlives close()."""
    nodes = _wait_for_nodes()
    g = StateGraph(Log)
    g.add_node("retrieve", _where("retrieve"))
    g.add_node("answer", _where("answer"))
    g.add_edge(START, "retrieve")
    g.add_edge("retrieve", "answer")
    with g.compile(
        backend="alto", config=ROOT.parent / "examples" / "ray_two_nodes.toml", ray_address=cluster
    ) as app:
        out = app.invoke({"log": []})
        dep = app.deployment
        assert dep is not None
        placed = dict(dep.ray_nodes)
        pids = [p for key, p in dep.pids.items() if key != "router"]
    assert {placed[("retrieve", i)] for i in range(2)} == {nodes["node_b"]}
    # SPREAD over two nodes with 2 CPUs each: one instance on each
    assert {placed[("answer", i)] for i in range(2)} == {nodes["node_a"], nodes["node_b"]}
    (r_tag, r_node, r_pid), (a_tag, a_node, a_pid) = out["log"]
    assert (r_tag, r_node) == ("retrieve", nodes["node_b"]) and a_tag == "answer"
    assert {r_pid, a_pid} <= set(pids) and os.getpid() not in pids
    # nothing outlives close(): the actors' processes are gone
    deadline = time.monotonic() + 10
    while any(_pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_pid_alive(p) for p in pids)


def test_one_stage_on_ray_the_rest_in_this_process(cluster: str) -> None:
    """executor='auto' with one stage's ``ray`` setting: only that stage is an actor."""
    nodes = _wait_for_nodes()
    g = StateGraph(Log)
    g.add_node("here", lambda s: {"log": [("here", os.getpid())]})
    g.add_node("there", _where("there"))
    g.add_edge(START, "here")
    g.add_edge("here", "there")
    with g.compile(backend="alto", ray_address=cluster, stages={"there": {"ray": ON_B}}) as app:
        assert app.plan.stage("there").ray == ON_B
        assert app.plan.stage("here").placement == "app"
        assert "runs in the Ray actors" in str(app.plan)
        out = app.invoke({"log": []})
        there_pid = app.deployment.pids[("there", 0)]
    assert out["log"] == [("here", os.getpid()), ("there", nodes["node_b"], there_pid)]


def test_node_affinity_and_a_named_placement_group_place_actors(cluster: str) -> None:
    from ray.util.placement_group import placement_group, remove_placement_group

    nodes = _wait_for_nodes()
    group = placement_group([{"node_a": 0.01}], name="alto-test-group")
    ray.get(group.ready(), timeout=30)
    try:
        with _two_stage_graph().compile(
            backend="alto",
            executor="ray",
            ray_address=cluster,
            stages={
                "a": {"ray": {"placement_group": "alto-test-group", "bundle_index": 0}},
                "b": {"ray": {"node_id": nodes["node_b"]}},
            },
        ) as app:
            out = app.invoke({"log": []})
    finally:
        remove_placement_group(group)
    assert [(tag, node) for tag, node, _ in out["log"]] == [
        ("a", nodes["node_a"]),
        ("b", nodes["node_b"]),
    ]


def test_a_stateful_stage_keeps_each_group_on_one_actor(cluster: str) -> None:
    groups, per_group = 8, 3

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
    g.add_conditional_edges("a", lambda s: [Send("split", {"i": i}) for i in range(groups)])
    with g.compile(
        backend="alto",
        ray_address=cluster,
        replicas={"agg": 3},
        stages={"agg": {"stateful": True, "ray": {"num_cpus": 0}}},
    ) as app:
        out = app.invoke({"log": []})
        actors = {app.deployment.pids[("agg", i)] for i in range(3)}
    by_group: dict[int, set[int]] = {}
    for group, pid in out["log"]:
        by_group.setdefault(group, set()).add(pid)
    assert len(out["log"]) == groups * per_group
    assert all(len(pids) == 1 for pids in by_group.values()), by_group
    assert set().union(*by_group.values()) <= actors


@fold(over="numbers")
class _Sum:
    """Sums a stream of numbers; says how many came, and on which node it ran."""

    def start(self, p: dict) -> int:
        return 0

    def step(self, acc: int, n: int) -> int:
        return acc + n

    def finish(self, acc: int, p: dict) -> dict:
        return {"log": [(p["item"], acc, len(p["numbers"]))]}


def _stream_to_fold() -> tuple[StateGraph, Any]:
    def numbers(k: int) -> Any:
        yield from range(k * 1000, k * 1000 + 500)

    @streaming
    def produce(s: dict) -> Any:
        for k in range(2):
            yield Send("sum_up", {"item": k, "numbers": numbers(k)})

    g = StateGraph(Log)
    g.add_node("produce", produce)
    g.add_node("sum_up", _Sum)
    g.add_edge(START, "produce")
    return g, {"log": []}


def test_streams_flow_from_a_producer_on_one_node_to_a_fold_on_the_other(cluster: str) -> None:
    stock, alto = assert_same(
        _stream_to_fold,
        sync=True,
        executor="ray",
        options={
            "ray_address": cluster,
            "stages": {"produce": {"ray": ON_A}, "sum_up": {"ray": ON_B}},
        },
    )
    assert sorted(alto.final["log"]) == [
        (0, sum(range(500)), 500),
        (1, sum(range(1000, 1500)), 500),
    ]


# -- failures -----------------------------------------------------------------------------


def _slow_graph(retry: bool, seconds: float = 1.5) -> StateGraph:
    def slow(s: dict) -> dict:
        time.sleep(seconds)
        return {"log": [os.getpid()]}

    g = StateGraph(Log)
    g.add_node("slow", slow, retry_policy=RetryPolicy(max_attempts=3) if retry else None)
    g.add_edge(START, "slow")
    return g


def _kill_when_busy(app: Any, key: tuple[str, int], sig: int = signal.SIGKILL) -> list[int]:
    """Kill ``key``'s actor process once a call has started on it; the killed pid."""
    killed: list[int] = []

    def kill() -> None:
        time.sleep(0.6)  # the call is running by now
        pid = app.deployment.pids[key]
        os.kill(pid, sig)
        killed.append(pid)

    threading.Thread(target=kill, daemon=True).start()
    return killed


def _wait_replaced(app: Any, key: tuple[str, int], old: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while app.deployment.pids.get(key) in (old, None):
        assert time.monotonic() < deadline, "the stage's actor was not replaced"
        time.sleep(0.05)
    return app.deployment.pids[key]


def test_a_killed_actor_fails_its_call_and_a_new_actor_takes_its_place(cluster: str) -> None:
    with _slow_graph(retry=False).compile(
        backend="alto", executor="ray", ray_address=cluster, stages={"slow": {"ray": ON_B}}
    ) as app:
        app.invoke({"log": []})  # started
        killed = _kill_when_busy(app, ("slow", 0))
        with pytest.raises(StageInstanceLost) as err:
            app.invoke({"log": []})
        assert "slow#0" in str(err.value) and "Ray actor died" in str(err.value)
        new = _wait_replaced(app, ("slow", 0), killed[0])
        assert app.invoke({"log": []}) == {"log": [new]}


def test_a_retry_policy_reruns_the_call_of_a_killed_actor_on_its_successor(cluster: str) -> None:
    with _slow_graph(retry=True).compile(
        backend="alto", executor="ray", ray_address=cluster, stages={"slow": {"ray": ON_A}}
    ) as app:
        app.invoke({"log": []})
        killed = _kill_when_busy(app, ("slow", 0))
        out = app.invoke({"log": []})
        assert out["log"] == [app.deployment.pids[("slow", 0)]]
        assert out["log"] != killed


def test_a_killed_node_fails_its_calls_the_other_node_serves_and_the_stage_returns(
    cluster: str,
) -> None:
    """SIGKILL of node_b's raylet mid-request: node_b's actor dies with it; its call
    fails with StageInstanceLost within seconds, node_a's stage keeps answering, and
    once node_b is back its stage is placed there again."""
    nodes = _wait_for_nodes()
    with _two_stage_graph().compile(
        backend="alto",
        executor="ray",
        ray_address=cluster,
        stages={"a": {"ray": ON_A}, "b": {"ray": ON_B}},
    ) as app:
        app.invoke({"log": []})
        b_pid = app.deployment.pids[("b", 0)]
        raylet = _raylet_pid(nodes["node_b"])
        slow = _slow_graph(retry=False, seconds=10).compile(
            backend="alto", executor="ray", ray_address=cluster, stages={"slow": {"ray": ON_B}}
        )
        with slow:
            slow.deployment.start()
            errors: list[BaseException] = []

            def call() -> None:
                try:
                    slow.invoke({"log": []})
                except BaseException as exc:
                    errors.append(exc)

            caller = threading.Thread(target=call)
            caller.start()
            time.sleep(0.5)
            killed_at = time.monotonic()
            os.kill(raylet, signal.SIGKILL)
            caller.join(30)
            failed_after = time.monotonic() - killed_at
            assert len(errors) == 1 and isinstance(errors[0], StageInstanceLost), errors
            print(f"the call failed {failed_after:.2f} s after node_b's raylet was killed")
            assert failed_after < 8, failed_after  # not the call's own end (10 s)
            assert "slow#0" in str(errors[0])
        deadline = time.monotonic() + 20
        while _pid_alive(b_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _pid_alive(b_pid), "the killed node's actor still runs"
        _script("start-b")
        nodes = _wait_for_nodes()
        out = app.invoke({"log": []})
        assert [(tag, node) for tag, node, _ in out["log"]] == [
            ("a", nodes["node_a"]),
            ("b", nodes["node_b"]),
        ]


def test_an_app_dropped_while_ray_reports_an_event_is_finalized_there(cluster: str) -> None:
    """Ray's events (an actor started or ended) are handled on a thread of alto's; an
    app whose last reference goes there is finalized there: its actors are killed and
    Ray let go of, which on Ray's own callback thread would wait on itself."""
    import gc

    app = _two_stage_graph().compile(backend="alto", executor="ray", ray_address=cluster)
    app.invoke({"log": []})
    events = app.deployment._owned.ray._events
    pids = list(app.deployment.pids.values())
    holder, finished = [app], threading.Event()
    del app

    def drop_the_app() -> None:
        holder.clear()
        gc.collect()
        finished.set()

    events.put((drop_the_app, ()))
    assert finished.wait(30), "finalizing the app on Ray's event thread did not finish"
    deadline = time.monotonic() + 20
    while any(_pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_pid_alive(p) for p in pids)
    assert ray.is_initialized()  # the cluster is the test's: alto leaves it connected


def test_a_stuck_actor_is_replaced_and_a_recycled_one_fails_no_call(cluster: str) -> None:
    """The router's health checks reach actors too: one whose event loop is blocked is
    killed through Ray and replaced (only its call fails); one past
    ``max_calls_per_instance`` is replaced once its calls are done (none fails)."""
    from test_supervision import _blocks_the_loop, _one_node, _pid_node

    with _one_node(_blocks_the_loop).compile(
        backend="alto",
        executor="ray",
        ray_address=cluster,
        start="compile",
        stages={"work": {"stuck_after": 1.0, "ray": ON_B}},
    ) as app:
        victim = app.deployment.pids[("work", 0)]
        t0 = time.monotonic()
        with pytest.raises(StageInstanceLost, match="was stuck .its event loop did not answer"):
            asyncio.run(app.ainvoke({"log": []}))
        assert time.monotonic() - t0 < 5.0
        new = _wait_replaced(app, ("work", 0), victim)
        assert asyncio.run(app.ainvoke({"log": ["go"]}))["log"][-1] == new
        assert not _pid_alive(victim)

    with _one_node(_pid_node).compile(
        backend="alto",
        executor="ray",
        ray_address=cluster,
        start="compile",
        stages={"work": {"max_calls_per_instance": 2, "ray": ON_A}},
    ) as app:
        served = [app.invoke({"log": []})["log"][0] for _ in range(6)]
    assert served[0] == served[1] != served[2] == served[3] != served[4] == served[5]
    assert len(set(served)) == 3


def _raylet_pid(node_id: str) -> int:
    socket = next(n["RayletSocketName"] for n in ray.nodes() if n["NodeID"] == node_id)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if (
                cmdline
                and cmdline[0].endswith(b"raylet")
                and (f"--raylet_socket_name={socket}".encode() in cmdline)
            ):
                return int(entry)
    raise AssertionError(f"no raylet for node {node_id}")


# -- LM stages ----------------------------------------------------------------------------


def test_an_lm_stage_on_ray_answers_and_streams_tokens_as_stock(cluster: str) -> None:
    """The node that asks on node_a, the model's stage (2 actors) on node_b: the answers
    and the token stream are stock's, and the router picks the model's actor by prompt
    (prompt-aware routing), as on the process executor."""
    from test_lm_stages import QUESTIONS, SIM, fan_out_graph, sim_llm

    builder = fan_out_graph(sim_llm(max_tokens=8))

    def tokens(app: Any) -> tuple[Any, list[str]]:
        final, streamed = None, {}
        for mode, chunk in app.stream({"qs": QUESTIONS}, stream_mode=["messages", "values"]):
            if mode == "values":
                final = chunk
            else:
                streamed.setdefault(chunk[0].id, []).append(chunk[0].content)
        return final, sorted("".join(t) for t in streamed.values())

    stock = tokens(builder.compile())
    with builder.compile(
        backend="alto",
        executor="ray",
        ray_address=cluster,
        lm={"sim": {**SIM, "replicas": 2}},
        stages={"ask": {"ray": ON_A}, "lm:sim": {"ray": ON_B}},
    ) as app:
        alto = tokens(app)
        nodes = _wait_for_nodes()
        assert {app.deployment.ray_nodes[("lm:sim", i)] for i in range(2)} == {nodes["node_b"]}
        assert app.deployment.ray_nodes[("ask", 0)] == nodes["node_a"]
        assert app.deployment.stats()["policies"]["lm:sim"] == "PrefixCacheAware"
    assert sorted(alto[0]["answers"]) == sorted(stock[0]["answers"])
    assert alto[1] == stock[1] and len(alto[1]) == len(QUESTIONS)


# -- same answers as stock LangGraph ------------------------------------------------------


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if "sync" in c.styles])
def test_same_as_langgraph_on_ray(cluster: str, name: str) -> None:
    case = CASES[name]
    stock, _ = assert_same(
        case.build,
        sync=True,
        ordered=case.ordered,
        executor="ray",
        options={"ray_address": cluster},
        **case.kwargs,
    )
    assert stock.chunks or stock.error is not None


# -- a local cluster, started and stopped with the app ------------------------------------

_LOCAL_APP = textwrap.dedent(
    """
    import os, sys, time
    from typing import TypedDict
    from langgraph.graph import START, StateGraph
    import alto_langgraph
    from alto_langgraph.process import ray_cluster
    from alto_langgraph.process.forkserver import fork_server

    class S(TypedDict):
        x: int

    g = StateGraph(S)
    g.add_node("double", lambda s: {"x": s["x"] * 2})
    g.add_edge(START, "double")
    app = g.compile(backend="alto", executor="ray")
    print("answer", app.invoke({"x": 21})["x"], flush=True)
    print("group", ray_cluster.cluster._local[1], flush=True)
    print("actor", app.deployment.pids[("double", 0)], flush=True)
    print("forkserver", fork_server().proc.pid, flush=True)
    sys.stdin.readline()  # once the test has seen the cluster run
    if sys.argv[1] == "close":
        app.close()
        print("closed", flush=True)
    elif sys.argv[1] == "exit":
        print("closed", flush=True)  # and exits with app open: finalizers close it
    else:
        time.sleep(600)  # the test SIGKILLs us
    """
)


def _group_alive(pgid: int) -> list[int]:
    """Processes of group ``pgid`` still running (zombies count as gone)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[0] != "Z" and int(fields[2]) == pgid:
                out.append(int(entry))
    return out


@pytest.mark.parametrize("how", ["close", "exit", "sigkill", "forkserver-sigkill"])
def test_a_local_cluster_lives_and_dies_with_its_app(tmp_path: Path, how: str) -> None:
    """Closed, left open at exit, SIGKILLed, or its fork server SIGKILLed (the app
    tears the deployment down): the local cluster (its process group) and its actors
    end with it."""
    script = tmp_path / "app.py"
    script.write_text(_LOCAL_APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    proc = subprocess.Popen(
        [sys.executable, str(script), how],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    seen: dict[str, int] = {}
    assert proc.stdout is not None

    def read_until(last: str) -> None:
        for line in proc.stdout:  # Ray's own lines come too
            word, _, value = line.strip().partition(" ")
            if word in ("answer", "group", "actor", "forkserver", "closed"):
                seen[word] = int(value or 1)
            if word == last:
                return

    read_until("forkserver")
    assert seen["answer"] == 42
    assert _group_alive(seen["group"]), "the local cluster's daemons should run"
    assert _pid_alive(seen["actor"])
    if how == "forkserver-sigkill":
        os.kill(seen["forkserver"], signal.SIGKILL)
        deadline = time.monotonic() + 20
        while _group_alive(seen["group"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert proc.poll() is None and _group_alive(seen["group"]) == []
    if how.endswith("sigkill"):
        proc.kill()
    else:
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.flush()
        read_until("closed")
        assert seen.get("closed") == 1
    # an app leaving Ray open at exit must not wait on actors Ray's exit already ended
    proc.wait(ray_actors.CLOSE_TIMEOUT - 2)
    deadline = time.monotonic() + 20
    while (_group_alive(seen["group"]) or _pid_alive(seen["actor"])) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.1)
    assert _group_alive(seen["group"]) == []
    assert not _pid_alive(seen["actor"])


# -- configuration errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"executor": "ray", "transport": "ipc"}, "transport='ipc' reaches only this machine"),
        ({"ray_address": "127.0.0.1:1"}, "no stage is placed on Ray"),
        ({"stages": {"a": {"ray": {"num_gpu": 1}}}}, "unknown option 'num_gpu'"),
        ({"stages": {"a": {"ray": {"num_cpus": -1}}}}, "num_cpus must be 0 or a number >= 0.0001"),
        ({"stages": {"a": {"ray": {"memory": 1e-5}}}}, "memory must be 0 or a number >= 0.0001"),
        ({"stages": {"a": {"ray": {"resources": {"x": "1"}}}}}, "resources must map"),
        ({"stages": {"a": {"ray": {"resources": {"x": 1e-5}}}}}, "resources must map .* 1e-05"),
        (
            {"stages": {"a": {"ray": {"resources": {"CPU": 2}}}}},
            "may not name 'CPU'; set ray.num_cpus",
        ),
        (
            {"stages": {"a": {"ray": {"resources": {"GPU": 1}}}}},
            "may not name 'GPU'; set the stage's gpus",
        ),
        (
            {"stages": {"a": {"ray": {"placement_group": "pg", "bundle_index": -1}}}},
            "bundle_index must be >= 0",
        ),
        ({"stages": {"a": {"ray": "yes"}}}, "ray must be true, false or a table"),
        ({"stages": {"a": {"ray": {"scheduling_strategy": "PACK"}}}}, "'DEFAULT' or 'SPREAD'"),
        ({"stages": {"a": {"ray": {"bundle_index": 0}}}}, "bundle_index needs a placement_group"),
        ({"stages": {"a": {"ray": True, "process": False}}}, "has process=False"),
        ({"stages": {"a": {"ray": {}, "process": False}}}, "has process=False"),
        ({"executor": "ray", "transport": ""}, "transport='' is not one of ipc, tcp"),
        ({"executor": "ray", "transport": False}, "transport=False is not one of ipc, tcp"),
        ({"stages": {"a": {"ray": {}}}, "transport": "ipc"}, "transport='ipc' reaches only"),
        ({"executor": "inline", "stages": {"a": {"ray": True}}}, "executor='inline'"),
    ],
)
def test_bad_ray_options_are_refused_naming_what_is_wrong(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises((ValueError, TypeError), match=message.replace("(", r"\(")):
        _two_stage_graph().compile(backend="alto", **options)


def test_a_stage_no_node_can_hold_fails_the_start_naming_it(cluster: str) -> None:
    app = _two_stage_graph().compile(
        backend="alto", ray_address=cluster, stages={"b": {"ray": {"resources": {"node_c": 1}}}}
    )
    with app, pytest.raises(ValueError, match=r"stage 'b' asks each Ray actor for node_c=1"):
        app.invoke({"log": []})


@pytest.mark.parametrize("table", [ON_B, {}], ids=["resources", "empty-table"])
def test_the_plan_says_which_stages_are_ray_actors(table: dict[str, Any]) -> None:
    app = _two_stage_graph().compile(backend="alto", stages={"b": {"ray": table}})
    with app:
        text = str(app.plan)
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("b "))
    assert "runs in the Ray actors" in line and ("node_b" in line) == bool(table)
    assert app.plan.transport == "tcp"
    assert alto_langgraph  # the backend is installed by the import


def test_an_lm_stage_on_ray_sizes_itself_by_its_actor_not_this_machine() -> None:
    """On Ray, a transformers LM stage asks for no GPU unless told, and runs as many
    threads as the cores its actors ask for (here, the cores of this machine split)."""
    from alto_langgraph.options import AltoOptions

    lm = {"smollm2-135m": {"engine": "transformers", "replicas": 2}}
    here = AltoOptions(lm=lm).lm_stages[0]
    on_ray = AltoOptions(lm=lm, stages={"lm:smollm2-135m": {"ray": {"num_cpus": 3}}}).lm_stages[0]
    assert here.engine.options["threads"] == max(1, (os.cpu_count() or 1) // 2)
    assert on_ray.engine.options["threads"] == 3 and on_ray.gpus == 0
    told = AltoOptions(lm={"smollm2-135m": {**lm["smollm2-135m"], "gpus": 1}}, executor="ray")
    assert told.lm_stages[0].gpus == 1 and "threads" not in told.lm_stages[0].engine.options


def test_a_ray_address_other_than_the_connected_cluster_is_refused(cluster: str) -> None:
    host, port = cluster.rsplit(":", 1)
    other = f"{host}:{int(port) + 1}"
    app = _two_stage_graph().compile(backend="alto", executor="ray", ray_address=other)
    with app, pytest.raises(ValueError, match=f"ray_address='{other}': this process is already"):
        app.invoke({"log": []})
    # the same cluster by another name for this machine is the same cluster
    same = _two_stage_graph().compile(
        backend="alto", executor="ray", ray_address=f"localhost:{port}"
    )
    with same:
        assert same.invoke({"log": []})["log"]


def test_assertions_on_a_stage_on_ray_are_checked_in_the_app(cluster: str, tmp_path: Path) -> None:
    """The node runs in its actor; its assertions around the call, in this process: the
    flags land in this app's store, a fail ends the request naming it."""
    from alto_langgraph import AssertionViolation, FlagStore, assertion
    from alto_langgraph.assertions import stats

    ran_on_b = assertion("b", name="ran_on_b")(
        lambda i, o: o["log"][-1][0] != "b" or f"b ran on {len(i['log'])} earlier entries"
    )
    path = tmp_path / "flags.sqlite"

    def b_on_ray_with(check: Any) -> Any:
        return _two_stage_graph().compile(
            backend="alto",
            ray_address=cluster,
            stages={"b": {"ray": ON_B}},
            assertions=[check],
            flag_store=path,
        )

    app = b_on_ray_with(ran_on_b)
    with app:
        out = app.invoke({"log": []})
        assert [tag for tag, *_ in out["log"]] == ["a", "b"]
        assert out["log"][1][2] != os.getpid()  # b ran in its actor
        assert stats(app)["b"]["ran_on_b"]["fired"] == 1
    (flag,) = FlagStore(path).flags()
    assert flag["message"] == "b ran on 1 earlier entries"
    strict = assertion("b", severity="fail", name="strict")(lambda i, o: False)
    app = b_on_ray_with(strict)
    with app, pytest.raises(AssertionViolation, match="assertion 'strict' on node 'b'"):
        app.invoke({"log": []})
