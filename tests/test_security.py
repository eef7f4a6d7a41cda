"""No message from outside the deployment is trusted.

Attacks against a live router on loopback (raw zmq sockets, as a local user who can
reach its address would send them) and against a live app: a forged task, a
connection with no or stolen credentials, an instance's identity claimed by another
connection, malformed frames, forged control messages, results for calls the sender
does not hold. Each asserts what happened: no code ran, no request was disturbed, the
router and the workers went on serving.
"""

from __future__ import annotations

import json
import operator
import os
import pickle
from typing import Annotated, Any

import pytest
import zmq
from langgraph.graph import START, StateGraph
from langgraph.types import Send
from router_harness import LiveRouter, live_router
from typing_extensions import TypedDict

from alto_langgraph.errors import RoutingError
from alto_langgraph.process import security, wire

TRANSPORTS = ["ipc", "tcp"]
S0, S1 = wire.instance_id("s", 0), wire.instance_id("s", 1)


def _call(router: LiveRouter, app: Any, instance: Any, call_id: bytes) -> None:
    """One honest call, end to end: the router still serves."""
    app.send_multipart([wire.envelope(wire.TASK, call_id, b"s"), b"input"])
    assert instance.poll(5000), "the instance did not get the call"
    client, env, payload = instance.recv_multipart()
    assert wire.decode(env).call_id == call_id and payload == b"input"
    instance.send_multipart([client, wire.envelope(wire.RESULT, call_id), b"output"])
    assert app.poll(5000), "the app did not get the result"
    assert app.recv_multipart() == [wire.envelope(wire.RESULT, call_id), b"output"]


def _silent(sock: Any, ms: int = 300) -> bool:
    return not sock.poll(ms)


class _Pwn:
    """A payload that creates a file if anyone unpickles it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (open, (self.path, "w"))


# -- who may connect ------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_connection_without_credentials_reaches_nothing(transport: str, tmp_path: Any) -> None:
    with live_router(transport, tmp_path=tmp_path) as router:
        instance, app = router.instance(S0), router.app()
        _call(router, app, instance, b"1")
        for options in ({}, {"identity": security.APP}, {"identity": S0}):
            stranger = router.socket(router.front, None, **options)
            stranger.send_multipart([wire.envelope(wire.TASK, b"x", b"s"), b"forged"])
            stranger.send_multipart([wire.envelope(wire.CONTROL, b"c", wire.CTL_STATS), b""])
            assert _silent(instance) and _silent(stranger)
            # on the back end, posing as the instance: it never gets the next call
            posing = router.socket(router.back, None, **options)
            posing.send_multipart([b"", wire.envelope(wire.READY), b""])
            _call(router, app, instance, b"2" + options.get("identity", b""))
            assert _silent(posing, 50)
        assert router.stats()["live"] == {"s": ["s#0"]}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_credentials_of_another_deployment_are_refused(transport: str, tmp_path: Any) -> None:
    other = security.Keyring(transport)
    with live_router(transport, tmp_path=tmp_path) as router:
        instance, app = router.instance(S0), router.app()
        forged_app = router.ctx.socket(zmq.DEALER)
        other.peer(security.APP).apply(forged_app)
        if transport == "tcp":  # knowing the router's public key does not help either
            forged_app.curve_serverkey = router.keyring.peer(security.APP).server_public
        forged_app.connect(router.front)
        forged_app.send_multipart([wire.envelope(wire.TASK, b"x", b"s"), b"forged"])
        assert _silent(instance)
        _call(router, app, instance, b"1")
        assert router.stats()["refused"] >= 1  # the router's gatekeeper said no


def test_the_app_cannot_connect_as_an_instance(tmp_path: Any) -> None:
    """The back end admits stage instances only."""
    with live_router(tmp_path=tmp_path) as router:
        app = router.app()
        posing = router.socket(router.back, security.APP)
        posing.send_multipart([b"", wire.envelope(wire.READY), b""])
        app.send_multipart([wire.envelope(wire.TASK, b"1", b"s"), b"input"])
        assert _silent(posing)
        assert router.stats()["live"] == {"s": []}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_instance_identity_cannot_be_claimed(transport: str, tmp_path: Any) -> None:
    """s#1's credentials with s#0's zmq identity: the router knows the connection as
    s#1 (its credentials), so s#0's calls still reach s#0 and no one else."""
    with live_router(transport, [("s", 2, _Always(S0))], tmp_path) as router:
        app, s0 = router.app(), router.instance(S0)
        claimer = router.socket(router.back, S1, identity=S0)
        claimer.send_multipart([b"", wire.envelope(wire.READY), b""])
        router.wait_live(2)
        for i in range(5):
            _call(router, app, s0, str(i).encode())
        assert _silent(claimer, 50)
        assert router.stats()["live"] == {"s": ["s#0", "s#1"]}


class _Always:
    def __init__(self, inst: bytes) -> None:
        self.inst = inst

    def pick(self, key: bytes, instances: Any, outstanding: Any) -> bytes:
        return self.inst


# -- what a connected peer may say ------------------------------------------------------


MALFORMED_FROM_APP = [
    [b"only an envelope"],
    [wire.envelope(wire.TASK, b"m1", b"s")],  # a task without its payload
    [wire.envelope(wire.TASK, b"m2", b"s"), b"a", b"b"],  # too many frames
    [b"no separators", b""],
    [b"Z\0m3\0s\0", b""],  # an unknown kind
    [b"", b""],
    [wire.envelope(wire.CALL_RESULT, b"m4", S0), b"a @task result nobody asked for"],
    [wire.envelope(wire.FEED, b"m5", b"s"), b"a feed for no call"],
    [wire.envelope(wire.CANCEL, b"m6"), b""],
    [wire.envelope(wire.CONTROL, b"m7", b"no-such-command"), b""],
    [b"\xff" * 70000],
]

MALFORMED_FROM_INSTANCE = [
    [b"only one frame"],
    [b"client", b"env"],
    [b"", b"Z\0\0\0", b""],  # an unknown kind
    [b"nobody", wire.envelope(wire.RESULT, b"99"), b"a result of no call"],
    [b"nobody", wire.envelope(wire.CHUNK, b"99"), b"a chunk of no call"],
    [b"", b"", b"", b"", b""],
    [b"", wire.envelope(wire.PULSE), b"not a health report"],
    [b"", wire.envelope(wire.PULSE), b'["a list"]'],
]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_malformed_messages_are_dropped_and_counted(transport: str, tmp_path: Any) -> None:
    with live_router(transport, tmp_path=tmp_path) as router:
        instance, app = router.instance(S0), router.app()
        for frames in MALFORMED_FROM_APP:
            app.send_multipart(frames)
        for frames in MALFORMED_FROM_INSTANCE:
            instance.send_multipart(frames)
        _call(router, app, instance, b"1")
        stats = router.stats()
        assert sum(stats["dropped"].values()) >= 16, stats["dropped"]
        assert not router.exited.is_set()
        assert _silent(instance, 50)  # nothing of it reached the instance


def test_only_the_app_sends_control_messages(tmp_path: Any) -> None:
    """An instance's own front-end client (node code calling LM stages) may call
    stages, but not declare an instance dead or ask for stats."""
    with live_router(tmp_path=tmp_path) as router:
        instance, app = router.instance(S0), router.app()
        app.send_multipart([wire.envelope(wire.TASK, b"held", b"s"), b"input"])
        assert instance.poll(5000)
        held = instance.recv_multipart()
        peer = router.socket(router.front, S0)
        peer.send_multipart([wire.envelope(wire.CONTROL, b"", wire.CTL_DEAD, S0), b"forged"])
        peer.send_multipart([wire.envelope(wire.CONTROL, b"c", wire.CTL_STATS), b""])
        assert _silent(peer) and _silent(app)  # the held call was not failed
        instance.send_multipart([held[0], wire.envelope(wire.RESULT, b"held"), b"done"])
        assert app.poll(5000)
        assert app.recv_multipart() == [wire.envelope(wire.RESULT, b"held"), b"done"]
        assert router.stats()["dropped"] == {"a control message from a peer other than the app": 2}


def test_an_instance_speaks_only_for_the_calls_it_holds(tmp_path: Any) -> None:
    with live_router(stages=[("s", 2, _Always(S0))], tmp_path=tmp_path) as router:
        app, s0, s1 = router.app(), router.instance(S0), router.instance(S1)
        router.wait_live(2)
        app.send_multipart([wire.envelope(wire.TASK, b"7", b"s"), b"input"])
        assert s0.poll(5000)
        client, _env, _ = s0.recv_multipart()
        # s1 answers s0's call, and makes a @task call in s0's name
        s1.send_multipart([client, wire.envelope(wire.RESULT, b"7"), b"forged"])
        s1.send_multipart([client, wire.envelope(wire.CALL, b"7", S0, b"0"), b"forged"])
        s0.send_multipart([client, wire.envelope(wire.CALL, b"7", S1, b"0"), b"forged"])
        assert _silent(app)
        s0.send_multipart([client, wire.envelope(wire.RESULT, b"7"), b"real"])
        assert app.poll(5000)
        assert app.recv_multipart() == [wire.envelope(wire.RESULT, b"7"), b"real"]
        assert sum(router.stats()["dropped"].values()) == 3


# -- against a live app ---------------------------------------------------------------


class Log(TypedDict):
    log: Annotated[list, operator.add]


def _app_graph() -> StateGraph:
    g = StateGraph(Log)
    g.add_node("a", lambda s: {"log": []})
    g.add_node("work", lambda p: {"log": [p["i"] * 2]})
    g.add_edge(START, "a")
    g.add_conditional_edges("a", lambda s: [Send("work", {"i": i}) for i in range(4)])
    return g


@pytest.mark.parametrize(("transport", "host"), [("ipc", ""), ("tcp", "0.0.0.0")])
def test_a_forged_task_runs_no_code_in_a_live_app(transport: str, host: str, tmp_path: Any) -> None:
    """Even bound to every interface, the deployment runs nothing a stranger sends."""
    marker = tmp_path / "pwned"
    options = {"host": host} if host else {}
    with _app_graph().compile(
        backend="alto", executor="process", transport=transport, start="compile", **options
    ) as app:
        front, back = app.deployment._addresses
        ctx = zmq.Context()
        try:
            for address in (front, back):
                if host:
                    address = address.replace(host, "127.0.0.1")
                for identity in (b"", wire.instance_id("work", 0), security.APP):
                    sock = ctx.socket(zmq.DEALER)
                    sock.setsockopt(zmq.LINGER, 0)
                    if identity:
                        sock.setsockopt(zmq.IDENTITY, identity)
                    sock.connect(address)
                    payload = pickle.dumps(_Pwn(str(marker)))
                    sock.send_multipart([wire.envelope(wire.TASK, b"1", b"work"), payload])
                    sock.send_multipart([b"", wire.envelope(wire.READY), b""])
                    assert _silent(sock, 200)
            for _ in range(3):
                assert sorted(app.invoke({"log": []})["log"]) == [0, 2, 4, 6]
        finally:
            ctx.destroy(linger=0)
        assert not marker.exists()


def test_a_payload_that_does_not_open_fails_its_call_not_the_worker() -> None:
    import concurrent.futures

    with _app_graph().compile(backend="alto", executor="process", start="compile") as app:
        pid = app.deployment.pids[("work", 0)]
        outcome: concurrent.futures.Future[tuple[bytes, bytes]] = concurrent.futures.Future()
        app.deployment.call(
            "work", b"\x80not a pickle", b"", lambda k, e, p: outcome.set_result((k, bytes(p)))
        )
        kind, payload = outcome.result(timeout=10)
        assert kind == wire.ERROR
        assert "pickle" in repr(pickle.loads(payload)).lower()
        assert sorted(app.invoke({"log": []})["log"]) == [0, 2, 4, 6]
        assert app.deployment.pids[("work", 0)] == pid


# -- user code in the router ------------------------------------------------------------


class _RaisingPolicy:
    def pick(self, key: bytes, instances: Any, outstanding: Any) -> bytes:
        raise KeyError("the policy's own error")


class _NonsensePolicy:
    def pick(self, key: bytes, instances: Any, outstanding: Any) -> bytes:
        return b"work#99"


@pytest.mark.parametrize(
    ("policy", "error", "match"),
    [
        (_RaisingPolicy(), KeyError, "the policy's own error"),
        (_NonsensePolicy(), RoutingError, r"picked b'work#99', which is not one of its live"),
    ],
)
def test_a_routing_policy_that_fails_fails_the_request_not_the_router(
    policy: Any, error: type, match: str
) -> None:
    with _app_graph().compile(
        backend="alto", executor="process", stages={"work": {"policy": policy}}
    ) as app:
        for _ in range(2):  # the router is still there for the next request
            with pytest.raises(error, match=match) as info:
                app.invoke({"log": []})
        if error is KeyError:
            assert any(
                "routing policy _RaisingPolicy of stage 'work'" in n for n in info.value.__notes__
            )
        router = app.deployment.pids["router"]
        assert os.path.exists(f"/proc/{router}")
        assert app.deployment.stats()["live"]["work"] == ["work#0"]


# -- found by review: notices, stale news, counters a sender could grow ----------------


def _pulse(instance: Any, verdict: str = "", **figures: Any) -> None:
    report = {"verdict": verdict, "why": f"test {verdict}", **figures}
    instance.send_multipart([b"", wire.envelope(wire.PULSE), json.dumps(report).encode()])


def _recv_notice(app: Any) -> tuple[bytes, bytes, bytes, bytes]:
    assert app.poll(3000), "no notice came"
    env, why = app.recv_multipart()
    kind, pid, command, inst = wire.decode(env)
    assert kind == wire.CONTROL
    return command, inst, pid, why


def test_a_notice_made_before_the_app_spoke_reaches_it_later(tmp_path: Any) -> None:
    with live_router(tmp_path=tmp_path) as router:
        instance = router.socket(router.back, S0)
        instance.send_multipart([b"", wire.envelope(wire.READY), b"4242"])
        _pulse(instance, "recycle")  # no app has spoken yet: nobody to tell
        app = router.app()
        app.send_multipart([wire.envelope(wire.CONTROL, b"w", wire.CTL_WAIT_READY), b""])
        got = []
        while app.poll(3000):
            got.append(app.recv_multipart())
            if any(wire.decode(env).kind == wire.CONTROL for env, _ in got):
                break
        notices = [wire.decode(env) for env, _ in got if wire.decode(env).kind == wire.CONTROL]
        assert notices == [(wire.CONTROL, b"4242", wire.CTL_RECYCLE, S0)]


def test_a_stuck_instance_is_reported_once_naming_its_process(tmp_path: Any) -> None:
    with live_router(tmp_path=tmp_path) as router:
        app = router.app()
        app.send_multipart([wire.envelope(wire.CONTROL, b"s", wire.CTL_STATS), b""])
        instance = router.socket(router.back, S0)
        instance.send_multipart([b"", wire.envelope(wire.READY), b"777"])
        assert app.poll(3000) and app.recv_multipart()  # the stats reply
        app.send_multipart([wire.envelope(wire.TASK, b"9", b"s"), b"input"])
        assert instance.poll(3000)
        client, _, _ = instance.recv_multipart()
        _pulse(instance, "stuck")
        assert _recv_notice(app) == (wire.CTL_REPLACE, S0, b"777", b"test stuck")
        instance.send_multipart([client, wire.envelope(wire.RESULT, b"9"), b"late"])
        assert app.poll(3000)
        assert app.recv_multipart() == [wire.envelope(wire.RESULT, b"9"), b"late"]
        assert _silent(app, 800)  # no second notice, which could stop a successor


def test_news_of_a_process_that_never_said_ready_is_not_ignored(tmp_path: Any) -> None:
    """s#0 (pid 111) dies and is declared dead; its successor (pid 222) dies before
    READY and is declared failed: a call waiting for the stage fails with that news."""
    with live_router(tmp_path=tmp_path) as router:
        app = router.app()
        instance = router.socket(router.back, S0)
        instance.send_multipart([b"", wire.envelope(wire.READY), b"111"])
        router.wait_live(1)
        dead = wire.envelope(wire.CONTROL, b"111", wire.CTL_DEAD, S0)
        app.send_multipart([dead, b"alto: stage instance s#0 (pid 111) was killed"])
        router.wait_live(0)
        app.send_multipart([wire.envelope(wire.TASK, b"5", b"s"), b"input"])
        failed = wire.envelope(wire.CONTROL, b"222", wire.CTL_FAILED, S0)
        app.send_multipart([failed, b"pid 222 died before it was ready; not restarted"])
        assert app.poll(3000)
        env, why = app.recv_multipart()
        assert wire.decode(env)[:2] == (wire.LOST, b"5")
        assert b"pid 222 died before it was ready" in why


def test_a_sender_cannot_grow_the_routers_counters_or_falsify_its_stats(tmp_path: Any) -> None:
    with live_router(tmp_path=tmp_path) as router:
        instance, app = router.instance(S0), router.app()
        router.wait_live(1)
        for i in range(300):
            app.send_multipart([bytes([0x41 + i % 26]) + f"{i}\0\0\0".encode(), b""])
        report = {"pid": 1, "outstanding": -5, "rss_mb": float("nan"), "calls": True}
        _pulse(instance, **report, busy_threads=2)
        _call(router, app, instance, b"1")
        stats = router.stats()
        assert len(stats["dropped"]) == 1 and sum(stats["dropped"].values()) >= 280
        mine = stats["instances"]["s#0"]
        assert mine["pid"] != 1 and mine["outstanding"] == 0 and mine["busy_threads"] == 2
        assert "rss_mb" not in mine and "calls" not in mine  # not finite, a bool


def test_a_stream_is_teed_only_between_a_clients_own_calls(tmp_path: Any) -> None:
    """SUBSCRIBE sends a stream straight to its fold only for two calls in flight of
    the client that asks; the producer hears the lesser of the app's and the fold's
    acknowledgements (the fold's for its own call only), and when the fold's call ends,
    the app's alone, and the stream goes back to the app."""
    p0, f0 = wire.instance_id("p", 0), wire.instance_id("f", 0)
    sid = "5eed"
    with live_router(stages=[("p", 1, None), ("f", 1, None)], tmp_path=tmp_path) as router:
        app, prod, fold = router.app(), router.instance(p0), router.instance(f0)
        router.wait_live(2)
        app.send_multipart([wire.envelope(wire.TASK, b"1", b"p"), b"input"])
        app.send_multipart([wire.envelope(wire.TASK, b"2", b"f"), b"input"])
        assert prod.poll(5000) and fold.poll(5000)
        client = prod.recv_multipart()[0]
        fold.recv_multipart()

        def stream(seq: int) -> bytes:
            env = wire.envelope(wire.STREAM, b"1", b"", wire.stream_key(sid, seq))
            prod.send_multipart([client, env, f"chunk {seq}".encode()])
            return env

        # another client (an instance's own front end) names the app's calls: nothing
        other = router.socket(router.front, p0)
        other.send_multipart([wire.envelope(wire.SUBSCRIBE, b"2", b"", sid.encode()), b"1"])
        app.send_multipart([wire.envelope(wire.SUBSCRIBE, b"9", b"", sid.encode()), b"1"])
        assert router.stats()["tees"] == 0
        env = stream(0)
        assert app.poll(5000) and app.recv_multipart() == [env, b"chunk 0"]
        assert _silent(fold, 50)

        app.send_multipart([wire.envelope(wire.SUBSCRIBE, b"2", b"", sid.encode()), b"1"])
        assert router.stats()["tees"] == 1
        stream(1)
        key = wire.stream_key(sid, 1)
        assert fold.poll(5000)
        assert fold.recv_multipart() == [
            client,
            wire.envelope(wire.FEED, b"2", b"", key),
            b"chunk 1",
        ]
        assert app.poll(5000)
        assert app.recv_multipart() == [wire.envelope(wire.TEED, b"1", b"2", key), b"chunk 1"]

        # both acknowledge (the fold's instance for its own call only): the producer
        # hears the lesser count
        def credit(call: bytes, count: int) -> bytes:
            return wire.envelope(wire.CREDIT, call, b"", wire.stream_key(sid, count))

        app.send_multipart([credit(b"1", 2), b""])
        assert _silent(prod, 50)
        fold.send_multipart([client, credit(b"3", 1), b""])
        fold.send_multipart([client, credit(b"2", 1), b""])
        assert prod.poll(5000) and prod.recv_multipart() == [client, credit(b"1", 1), b""]
        assert _silent(prod, 50)

        # the fold's call ends: the producer hears what the app has; the app gets the rest
        fold.send_multipart([client, wire.envelope(wire.RESULT, b"2"), b"folded"])
        assert prod.poll(5000) and prod.recv_multipart() == [client, credit(b"1", 2), b""]
        assert app.poll(5000) and app.recv_multipart() == [
            wire.envelope(wire.RESULT, b"2"),
            b"folded",
        ]
        env = stream(2)
        assert app.poll(5000) and app.recv_multipart() == [env, b"chunk 2"]
        stats = router.stats()
        assert stats["tees"] == 0 and stats["teed"] == 1
        assert stats["dropped"] == {"a message about a call the instance does not run": 1}


@pytest.mark.parametrize(
    "subscribe",
    [
        [[wire.envelope(wire.SUBSCRIBE, b"x", b"", b"5eed"), b"x"]],  # a call its own fold
        [  # a stream id that is no stream id, then an acknowledgement of it
            [wire.envelope(wire.SUBSCRIBE, b"x", b"", b"\xff"), b"y"],
            [wire.envelope(wire.CREDIT, b"y", b"", b"\xff/5"), b""],
        ],
    ],
    ids=["own-fold", "bad-stream-id"],
)
def test_a_bad_subscription_tees_nothing_and_a_death_still_fails_every_call(
    subscribe: list[list[bytes]], tmp_path: Any
) -> None:
    """A front client (an instance's own, as ChatAlto's) subscribes nonsense between
    its own calls: nothing is teed, and when an instance dies every call it held, the
    app's too, fails with LOST."""
    p0, q0 = wire.instance_id("p", 0), wire.instance_id("q", 0)
    with live_router(stages=[("p", 1, None), ("q", 1, None)], tmp_path=tmp_path) as router:
        app, p, q = router.app(), router.instance(p0), router.instance(q0)
        router.wait_live(2)
        other = router.socket(router.front, p0)
        for sock, call, stage, inst in (
            (other, b"x", b"p", p),
            (other, b"y", b"q", q),
            (app, b"a", b"p", p),
        ):
            sock.send_multipart([wire.envelope(wire.TASK, call, stage), b"input"])
            assert inst.poll(5000)
            inst.recv_multipart()
        for frames in subscribe:
            other.send_multipart(frames)
        assert router.stats()["tees"] == 0
        app.send_multipart([wire.envelope(wire.CONTROL, b"", wire.CTL_DEAD, p0), b"killed"])
        for sock, call in ((other, b"x"), (app, b"a")):
            assert sock.poll(5000), f"call {call!r} on the dead instance was never failed"
            env, _why = sock.recv_multipart()
            assert wire.decode(env)[:2] == (wire.LOST, call)
        assert router.stats()["dropped"] == {}
